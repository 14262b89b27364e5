"""What the checks of a dataset found, as they go: errors line by line, and one tally per kind of remark."""

from __future__ import annotations

MAX_ERRORS = 1000  # kept in memory; the rest are counted


class Issues:
    """Errors line by line (up to MAX_ERRORS), and tallies: one entry per kind of remark with its first line
    and how many lines share it, in buckets "error", "warning" or a provider name."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, str]] = []
        self.dropped = 0
        self.tallies: dict[tuple[str, str], list] = {}  # (bucket, kind) -> [first line, message, count]
        self._last: dict[tuple[str, str], int] = {}  # (bucket, kind) -> the last line counted

    def error(self, line: int, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((line, message))
        else:
            self.dropped += 1

    def tally(self, bucket: str, kind: str, line: int, message: str, count: int = 1) -> None:
        """Counts ``line`` under a kind of remark once, however many times the line makes it."""
        key = (bucket, kind)
        entry = self.tallies.get(key)
        if entry is None:
            self.tallies[key] = [line, message, count]
        elif self._last[key] != line:
            entry[2] += count
        self._last[key] = line

    def merge(self, other: Issues) -> None:
        """Adds the issues of the lines after ours."""
        for line, message in other.errors:
            self.error(line, message)
        self.dropped += other.dropped
        for (bucket, kind), (line, message, count) in other.tallies.items():
            self.tally(bucket, kind, line, message, count)
            self._last[(bucket, kind)] = other._last[(bucket, kind)]
