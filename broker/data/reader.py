"""Reading a dataset file: whole lines in bounded blocks, one pass, in constant memory whatever its size.

``spans`` cuts the file into blocks of whole lines (about ``BLOCK_BYTES`` each) without holding more than one
window; a line over ``MAX_LINE_BYTES`` is measured, never read. ``file_problem`` says what makes a whole file
unreadable as JSON Lines (a directory, compressed data, UTF-16, a JSON array), ``unparsable`` why one line is not
JSON, and ``first_format`` which format a file is in (that of its first line of a known format).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import orjson

from ftbroker.data.rules import format_of

BLOCK_BYTES = 1 << 20  # a block of lines read at once
# One line (example) is read whole into memory, and parsing takes about 5 times its size: a longer line is refused
# unread. The largest example a provider takes: 10 images of up to 10 MB each, in base64 (OpenAI's fine-tuning
# guide, vision; Together's data-preparation page), about 134 MB. Must stay above BLOCK_BYTES (see spans).
MAX_LINE_BYTES = 256 << 20
_LARGEST_EXAMPLE_MB = 134

_MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file: decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive: extract the .jsonl file from it first"),
    (b"(\xb5/\xfd", "a zstd-compressed file: decompress it first (zstd -d)"),
    (b"BZh", "a bzip2-compressed file: decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file: decompress it first (unxz)"),
    (b"PAR1", "a Parquet file: ftbroker reads JSON Lines (one JSON object per line)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text: save it as UTF-8"),
    (b"\xff\xfe\x00\x00", "UTF-32 text: save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)
_BOM = b"\xef\xbb\xbf"
SPREAD = (
    "the line ends inside a JSON value: is an example spread over several lines (pretty-printed JSON)? JSONL "
    "needs one example per line (convert it with: jq -c . FILE)"
)


def name_problem(path: str | os.PathLike) -> str | None:
    """Why a file's name cannot be kept in the job ledger or a JSON report (both UTF-8 text), if it cannot."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return f"{shown}: the file name is not valid UTF-8 (the ledger and JSON reports hold UTF-8 text): rename it"
    return None


def file_problem(path: Path) -> str | None:
    """What makes the whole file unreadable as JSONL, if anything."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return "is a directory, not a JSONL file: name the .jsonl file in it"
        if not stat.S_ISREG(mode):
            return "is not a regular file"
        with path.open("rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links, not a file"
        return f"cannot read the file: {exc.strerror or exc}"
    if not head:
        return "the file is empty"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"this is {what}"
    sample = head[:1024]
    if len(sample) >= 4 and (
        sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4
    ):
        return "this looks like UTF-16 text (every other byte is NUL): save it as UTF-8"
    if head.removeprefix(_BOM).lstrip()[:1] == b"[":
        return (
            "the file is a JSON array; JSONL needs one JSON object per line (convert it with: "
            "jq -c '.[]' FILE > FILE.jsonl)"
        )
    return None


class Span(NamedTuple):
    """Whole lines of a file: ``size`` bytes from byte ``offset``, the first being line ``line_no``.
    ``too_long``: one line over MAX_LINE_BYTES (``size``: its length without the newline), never read into memory,
    only reported."""

    offset: int
    size: int
    line_no: int
    too_long: bool = False


def spans(path: Path) -> Iterator[Span]:
    """Blocks of whole lines, about BLOCK_BYTES each (longer where a line is, up to MAX_LINE_BYTES), and each line
    over MAX_LINE_BYTES on its own, measured in bounded reads. A UTF-8 byte-order mark before the first line is
    left out. Only a block's first line can be long: the others start and end inside one window."""
    limit = MAX_LINE_BYTES
    with path.open("rb") as fh:
        start = len(_BOM) if fh.read(len(_BOM)) == _BOM else 0
        fh.seek(start)
        window = bytearray(BLOCK_BYTES)
        line_no, read = 1, start
        while True:
            n = fh.readinto(window)
            if not n:
                if read > start:  # the last line, without a newline
                    yield Span(start, read - start, line_no)
                return
            read += n
            first = window.find(b"\n", 0, n)  # the first line's end, if it is in this window
            if first < 0 and read - start <= limit:  # a line longer than a block: read on
                continue
            if first < 0 or read - n + first - start > limit:  # the first line is over the limit: measure it
                length = _line_length(fh, window, read - start) if first < 0 else read - n + first - start
                yield Span(start, length, line_no, True)
                end = fh.tell() if first < 0 else start + length + 1
                line_no += 1
            else:
                cut = window.rfind(b"\n", 0, n) + 1
                end = read - n + cut
                yield Span(start, end - start, line_no)
                line_no += window.count(b"\n", 0, cut)  # earlier windows of this block had none
            start = read = end
            fh.seek(end)


def _line_length(fh, window: bytearray, length: int) -> int:
    """The length of the line being read, ``length`` bytes of it read so far, reading on one window at a time;
    the file is left after its newline."""
    while True:
        n = fh.readinto(window)
        newline = window.find(b"\n", 0, n)
        if newline >= 0:
            fh.seek(newline + 1 - n, os.SEEK_CUR)
            return length + newline
        if not n:
            return length
        length += n


def long_line(size: int) -> str:
    return (f"the line is {size:,} bytes, over the limit of {MAX_LINE_BYTES:,} bytes for one example "
            f"({MAX_LINE_BYTES >> 20} MiB; the largest a provider takes is about {_LARGEST_EXAMPLE_MB} MB: 10 "
            "images of 10 MB in base64): it was not read")


def blocks(path: Path) -> Iterator[tuple[bytes | None, Span]]:
    """Blocks of whole lines with their span; the block is None for a line over MAX_LINE_BYTES (``analyze``
    reports it)."""
    with path.open("rb") as fh:
        for span in spans(path):
            if span.too_long:
                yield None, span
                continue
            fh.seek(span.offset)
            yield fh.read(span.size), span


def read_examples(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, example) for every JSON object line of a dataset, streaming, in file order.

    For converting a file that ``analyze`` has already checked: lines that are not JSON objects (which
    ``analyze`` reports) are skipped here, not reported again.
    """
    for block, span in blocks(Path(path)):
        if block is None:
            continue
        for number, line in enumerate(block.split(b"\n"), span.line_no):
            if not line.strip():
                continue
            try:
                example = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(example, dict):
                yield number, example


def file_format(path: str | os.PathLike) -> str | None:
    """The format ``analyze`` takes a file to be in (that of its first example of a known format), read from
    the head of the file only; None when no line has a known format."""
    return first_format(Path(path))[0]


def unparsable(line: bytes, offset: int, orjson_message: str, last: bool = False) -> str:
    """A precise message for a line orjson refused (``last``: the file's final line, without a newline)."""
    nul = line.find(b"\x00")
    if nul >= 0:
        return f"NUL byte at byte offset {offset + nul}: binary data, or UTF-16 text (save the file as UTF-8)"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"invalid UTF-8 at byte offset {offset + exc.start} (byte 0x{line[exc.start]:02x}): save the "
            "file "
            "as UTF-8 (is it Latin-1 or Windows-1252?)"
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if last and (exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")):
            return "the file ends inside a JSON value: its last line is cut short (an incomplete copy?)"
        if exc.pos >= len(text.rstrip()) and text.lstrip()[:1] in ("{", "["):
            return SPREAD
        return f"invalid JSON at column {exc.colno}: {exc.msg}"
    except RecursionError:
        pass
    if "surrogate" in orjson_message:
        return (
            "a \\ud800-\\udfff escape without its pair (a lone UTF-16 surrogate) is not a character: "
            f"{orjson_message}"
        )
    return f"unreadable JSON: {orjson_message}"


def first_format(path: Path) -> tuple[str | None, int, str | None]:
    """(the file's format, the line that set it, a fatal message) from the first line with a known format.
    Fatal: the first line of the file is the start of a JSON object that goes on over the next lines."""
    first = True
    for block, span in blocks(path):
        if block is None:
            first = False
            continue
        line_no, offset = span.line_no, span.offset
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped:
                try:
                    obj = orjson.loads(stripped)
                except orjson.JSONDecodeError as exc:
                    last = i == len(lines) - 1 and not block.endswith(b"\n")
                    if first and unparsable(stripped, offset, str(exc), last) == SPREAD:
                        return None, line_no, SPREAD
                    obj = None
                first = False
                if isinstance(obj, dict):
                    fmt, _ = format_of(obj)
                    if fmt:
                        return fmt, line_no, None
            line_no += 1
            offset += len(line) + 1
    return None, 0, None

