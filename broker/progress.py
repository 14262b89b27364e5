"""Progress of long work, as the core reports it: a small protocol, no display.

The core (reading a dataset, uploading it, merging a model) says what it is doing and how far it got through a
``Reporter``; only the CLI draws it (``ftbroker.cli.progress_view``, on stderr, only on a terminal). The reporter is
ambient, like a logger, rather than a parameter of every function on the way: an upload happens inside a backend's
``submit``, several layers (and plug-ins) below the command that knows whether a terminal is watching. The default
reports nothing, so the SDK and every pipe stay silent; ``reporting(reporter)`` installs one for a block.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import IO, Any, Protocol


class Task(Protocol):
    """One piece of long work: how much of ``total`` is done (bytes, steps); ``fields`` are shown beside it."""

    def advance(self, amount: float) -> None: ...

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **fields: Any) -> None: ...


class Reporter(Protocol):
    """Whoever shows progress. ``unit``: ``bytes`` (sizes and MB/s), or anything counted (``steps``)."""

    def task(self, description: str, *, total: float | None = None,
             unit: str = "bytes") -> contextlib.AbstractContextManager[Task]: ...


class _Silent:
    """The default: nothing is shown, nothing is kept."""

    def advance(self, amount: float) -> None:
        pass

    def update(self, **_: Any) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, *, total: float | None = None, unit: str = "bytes") -> Iterator[Task]:
        yield self


SILENT: Reporter = _Silent()
_current: contextvars.ContextVar[Reporter] = contextvars.ContextVar("ftbroker_progress", default=SILENT)


def current() -> Reporter:
    return _current.get()


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Report the progress of the work done inside the block to ``reporter``."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def task(description: str, *, total: float | None = None, unit: str = "bytes"):
    """A task of the current reporter (a context manager yielding a ``Task``)."""
    return current().task(description, total=total, unit=unit)


class _Counted:
    """A binary file that advances a task by what is read from it: an SDK or httpx streams the file in chunks
    (``read(n)``, or iteration), so the upload's progress is the bytes the HTTP client has taken."""

    def __init__(self, fh: IO[bytes], progress: Task):
        self._fh, self._task = fh, progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._task.advance(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:  # httpx takes an iterable body; chunked, not line by line
        while chunk := self.read(64 * 1024):
            yield chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._fh.seek(offset, whence)
        self._task.update(completed=position)  # a client that rewinds to retry starts its count again
        return position

    def __getattr__(self, name: str) -> Any:  # fileno, tell, name, close ...: the file's own
        return getattr(self._fh, name)


@contextlib.contextmanager
def sending(path: str | os.PathLike, description: str) -> Iterator[IO[bytes]]:
    """``path`` open for reading, its bytes counted as they are read (an upload's progress)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh, task(description, total=size) as progress:
        yield _Counted(fh, progress)  # type: ignore[misc]
