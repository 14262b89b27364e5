"""Where the commands write: consoles for people (fitted to a terminal, whole lines into a pipe) and JSON for
programs on stdout."""

from __future__ import annotations

import json
import os
from typing import Any

import click

_WHOLE_LINES = 1_000_000  # "columns" of a pipe or a file: nothing is ever cut to fit


def console(*, stderr: bool = False):
    """A console for people: fitted to the terminal's width; into a pipe or a file (grep, scripts, a log), whole
    lines, with no name cut and no column left out, unless COLUMNS asks for a width (rich's rule)."""
    from rich.console import Console

    made = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not made.is_terminal and not os.environ.get("COLUMNS"):
        made.width = _WHOLE_LINES
    return made


def stderr_console():
    return console(stderr=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def json_text(document: Any) -> str:
    """A document as JSON with its text as written (a plan's notes, a catalog's sources)."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def show(json_mode: bool, data: Any, view: Any) -> None:
    """``data`` as JSON on stdout with --json, else ``view`` (a rich renderable) for people."""
    if json_mode:
        print_json(data)
    else:
        console().print(view)
