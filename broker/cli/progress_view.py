"""The one progress style of every command: rich progress bars on stderr, only when stderr is a terminal.

Reading a dataset, an upload, a merge, waiting on a job: each is a line with a spinner, what it is, a bar when
the total is known, the amount (MB or steps), the rate, the time left, and the task's own fields (examples read,
loss, cost so far). The core reports through ``ftbroker.progress``; this module draws. Into a pipe or a file,
nothing is drawn (``showing`` installs no reporter), so ``--json``/``--csv`` output and logs stay clean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, SpinnerColumn, TaskID,
                           TextColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.text import Text

from ftbroker import progress

REFRESHES_PER_S = 4  # enough to look alive; each refresh costs the main process a little (bench/plan_progress.py)


class _Amount(ProgressColumn):
    """``12.3/200.0 MB`` for bytes, ``40/120 steps`` for anything counted."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return DownloadColumn().render(task)
        total = f"/{task.total:,.0f}" if task.total is not None else ""
        return Text(f"{task.completed:,.0f}{total} {unit}", style="progress.download")


class _Rate(ProgressColumn):
    """MB/s for bytes; nothing for steps (a remote job's own ETA says more than a rate seen from here)."""

    def render(self, task) -> Text:
        return TransferSpeedColumn().render(task) if task.fields.get("unit", "bytes") == "bytes" else Text("")


class _Remaining(ProgressColumn):
    """The time left: rich's estimate from the rate seen, or the one the task was given (``eta``)."""

    def render(self, task) -> Text:
        given = task.fields.get("eta")
        return Text(f"ETA {given}", style="progress.remaining") if given else TimeRemainingColumn().render(task)


def _fields(task) -> str:
    return " · ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in task.fields.items()
                      if k not in ("unit", "eta", "info") and v not in (None, ""))


class ProgressView:
    """A ``progress.Reporter`` drawing on ``console``. The bars are live only while a task runs, so that a prompt
    or another live display (there can be one at a time) fits between two tasks."""

    def __init__(self, console: Console):
        self.console = console
        self._bars: Progress | None = None
        self._running = 0

    def _start(self) -> Progress:
        if self._bars is None:
            self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                  _Amount(), _Rate(), _Remaining(), TextColumn("{task.fields[info]}"),
                                  console=self.console, transient=True, refresh_per_second=REFRESHES_PER_S)
            self._bars.start()
        self._running += 1
        return self._bars

    def _stop(self, task_id: TaskID) -> None:
        assert self._bars is not None
        self._bars.refresh()  # the task's last state, once, however short it was
        self._bars.remove_task(task_id)
        self._running -= 1
        if not self._running:
            self._bars.stop()
            self._bars = None

    @contextlib.contextmanager
    def task(self, description: str, *, total: float | None = None, unit: str = "bytes") -> Iterator[progress.Task]:
        bars = self._start()
        task_id = bars.add_task(description, total=total, unit=unit, info="")
        try:
            yield _Task(bars, task_id)
        finally:
            self._stop(task_id)


class _Task:
    def __init__(self, bars: Progress, task_id: TaskID):
        self._bars, self._id = bars, task_id

    def advance(self, amount: float) -> None:
        self._bars.advance(self._id, amount)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **fields: Any) -> None:
        task = self._bars.tasks[self._bars.task_ids.index(self._id)]
        task.fields.update(fields)
        self._bars.update(self._id, completed=completed, total=total, description=description,
                          info=_fields(task))


@contextlib.contextmanager
def showing(console: Console) -> Iterator[None]:
    """Progress of the work inside the block drawn on ``console`` when it is a terminal; else none at all."""
    if not console.is_terminal:
        yield
        return
    with progress.reporting(ProgressView(console)):
        yield
