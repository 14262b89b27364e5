"""The scripts of a text, which the estimates scale the cl100k_base count by: accented Latin, CJK, Cyrillic, Arabic
and other non-ASCII characters, per text (``features``) or for a whole batch with numpy (``script_counts``)."""

from __future__ import annotations

import re
from typing import Any

# The scripts of the estimate's features, as code point ranges: accented Latin, CJK, Cyrillic, Arabic.
SCRIPTS = (
    ((0x00C0, 0x024F),),
    ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
     (0xFF00, 0xFFEF)),
    ((0x0400, 0x04FF),),
    ((0x0600, 0x06FF), (0x0750, 0x077F)),
)
_SCRIPT_RES = tuple(re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in r) + "]") for r in SCRIPTS)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def features(text: str, cl100k_tokens: int) -> tuple[float, ...]:
    """What the estimate is a linear function of: the cl100k_base count, the digits (families group them
    differently), and the cl100k count scaled by the share of accented Latin, CJK, Cyrillic, Arabic and other
    non-ASCII characters in the text (how much of each script a family's vocabulary holds)."""
    digits = sum(map(text.count, "0123456789"))
    if text.isascii():
        return cl100k_tokens, digits, 0, 0, 0, 0, 0
    scripts = [rx.subn("", text)[1] for rx in _SCRIPT_RES]
    scripts.append(_NON_ASCII.subn("", text)[1] - sum(scripts))
    per_char = cl100k_tokens / len(text)
    return cl100k_tokens, digits, *(n * per_char for n in scripts)


def numpy_module() -> Any | None:
    """numpy, if installed (the 'fast' extra brings it): the estimates' script scan of a batch at once."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


_CLASS_TABLE = None  # code point (clipped to U+FFFF, of none of the scripts) -> its column in script_counts
SCAN_CHARS = 1 << 18  # characters per step of the batch scan: its transient arrays stay a few MB


def script_counts(texts: list[str]) -> Any:
    """Per text, as columns of an integer array: length, digits, the characters of each of ``SCRIPTS``, other
    non-ASCII characters (and other ASCII ones): exactly the counts ``features`` finds with its regular
    expressions, for a whole batch in a few array operations. None without numpy."""
    global _CLASS_TABLE
    np = numpy_module()
    if np is None:
        return None
    if _CLASS_TABLE is None:
        table = np.full(0x10000, 2 + len(SCRIPTS), np.uint8)  # other non-ASCII
        table[:0x80] = 3 + len(SCRIPTS)  # other ASCII
        table[ord("0") : ord("9") + 1] = 1
        for column, ranges in enumerate(SCRIPTS, 2):
            for first, last in ranges:
                table[first : last + 1] = column
        _CLASS_TABLE = table
    columns = 4 + len(SCRIPTS)
    lengths = [len(text) for text in texts]
    out = np.zeros((len(texts), columns), np.int64)
    out[:, 0] = lengths
    start = 0
    while start < len(texts):
        stop, size = start + 1, lengths[start]
        while stop < len(texts) and size < SCAN_CHARS:
            size += lengths[stop]
            stop += 1
        codes = np.frombuffer("".join(texts[start:stop]).encode("utf-32-le", "surrogatepass"), np.uint32)
        rows = np.repeat(np.arange(stop - start) * columns, lengths[start:stop])
        classes = _CLASS_TABLE[np.minimum(codes, 0xFFFF)]
        counts = np.bincount(rows + classes, minlength=(stop - start) * columns).reshape(-1, columns)
        out[start:stop, 1:] = counts[:, 1:]
        start = stop
    return out
