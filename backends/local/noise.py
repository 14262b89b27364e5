"""The libraries' noise kept off the user's terminal: warnings, log records and progress bars of transformers,
peft, trl, datasets, accelerate, bitsandbytes, torch and huggingface_hub go to a log, each line marked DEBUG
(with the library's own level beside it), and progress bars are not drawn (ftbroker reports progress itself).

``to_log(stream)`` for the trainer, whose stderr is its trainer.log; ``kept_in(path)`` around an export in the CLI.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import IO

LIBRARIES = ("transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "torch", "huggingface_hub",
             "py.warnings")  # py.warnings: what the warnings module says, once captured
# tqdm reads its defaults from TQDM_* variables (tqdm 4.66); the hub and datasets have their own switch
_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
_FORMAT = "%(asctime)s DEBUG [%(name)s %(levelname)s] %(message)s"


class _OneLine(logging.Formatter):
    """A record on one line (a warning's message is followed by its source line), so that the log reads and
    greps one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(part.strip() for part in super().format(record).splitlines() if part.strip())


def to_log(stream: IO[str]) -> logging.Handler:
    """From now on, for good: the libraries' records and Python warnings to ``stream``, as DEBUG lines; no
    progress bars. Returns the handler."""
    os.environ.update(_QUIET_ENV)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLine(_FORMAT))
    _route(handler)
    return handler


@contextmanager
def kept_in(path: Path) -> Iterator[None]:
    """While the block runs: the libraries' records and Python warnings go to the file ``path`` (appended) as
    DEBUG lines, progress bars are off, and whatever else is written to stderr (a bar drawn by a bare tqdm, a
    compiled library's own print) goes to the file too. The loggers, stderr and the environment are put back
    after; the libraries' progress bars stay off."""
    saved_env = {name: os.environ.get(name) for name in _QUIET_ENV}
    saved = {name: (lg.handlers[:], lg.level, lg.propagate) for name in LIBRARIES
             for lg in [logging.getLogger(name)]}
    os.environ.update(_QUIET_ENV)
    with path.open("a", encoding="utf-8") as stream, _stderr_to(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_OneLine(_FORMAT))
        _route(handler)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            for name, (handlers, level, propagate) in saved.items():
                lg = logging.getLogger(name)
                lg.handlers, lg.propagate = handlers, propagate
                lg.setLevel(level)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def _stderr_to(stream: IO[str]) -> Iterator[None]:
    """stderr, Python's and the process's file descriptor 2, into ``stream`` while the block runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        with redirect_stderr(stream):
            yield
    finally:
        stream.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _route(handler: logging.Handler) -> None:
    logging.captureWarnings(True)
    for name in LIBRARIES:
        lg = logging.getLogger(name)
        lg.handlers = [handler]  # transformers' own stderr handler included
        lg.propagate = False
        lg.setLevel(logging.WARNING)  # the libraries' default: their warnings, not their chatter
    _progress_bars_off()


def _progress_bars_off() -> None:
    """The libraries' own switches, for those already imported (the variables cover the others)."""
    for module, switch in (("transformers.utils.logging", "disable_progress_bar"),
                           ("huggingface_hub.utils", "disable_progress_bars"), ("datasets", "disable_progress_bars")):
        if module in sys.modules:
            getattr(sys.modules[module], switch)()
