"""``analyze``: a dataset read once, in constant memory, every line checked and every counter run on the way.

Constant memory whatever the file's size: lines are read in bounded blocks (``ftbroker.data.reader``), length
distributions are bounded histograms, duplicates a fixed-size hash table (``Seen``). A large file's blocks are
scanned by forked worker processes. ``analyze`` never raises for what is in the file: problems go into the
report's ``errors`` (``FILE:LINE: message``), ``warnings``, and ``provider_issues`` (a rule of one provider only,
so the planner can rule that provider out without failing the plan); ``report.raise_for_errors()`` turns errors
into a ``DatasetError``.
"""

from __future__ import annotations

import functools
import gc
import mmap
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ftbroker import progress
from ftbroker.data import providers, reader, report
from ftbroker.data.providers import LineRules
from ftbroker.data.report import DatasetReport
from ftbroker.data.scan import Context, Partial, TokenTally, count, scan
from ftbroker.errors import DataIssue
from ftbroker.tokens.counters import CounterGroup, TokenCounter

PARALLEL_BYTES = 32 << 20  # from this size on, blocks are scanned by worker processes


class Seen:
    """Fixed-size open-addressing set: 8-byte example digest -> first line (16 MiB whatever the file size)."""

    SLOTS = 1 << 20

    @property
    def capacity(self) -> int:
        """How many distinct digests it remembers (it stays three quarters empty, for short probes)."""
        return self.SLOTS * 3 // 4

    def __init__(self) -> None:
        # anonymous maps: zero pages that take memory only once written (and only here, not in forked workers)
        self._keys = memoryview(mmap.mmap(-1, 8 * self.SLOTS)).cast("Q")
        self._lines = memoryview(mmap.mmap(-1, 8 * self.SLOTS)).cast("Q")
        self.size = 0
        self.full = False

    def duplicates(self, hashes: Sequence[tuple[int, bytes]]) -> list[tuple[int, int]]:
        """(line, the line first seen with the same digest) of each (line, digest) seen before; the others are
        remembered, while there is room. One call per block: the probing runs on local names."""
        keys, lines, mask, room = self._keys, self._lines, self.SLOTS - 1, self.capacity
        found = []
        for line, digest in hashes:
            key = int.from_bytes(digest, "little") | 1  # 0 marks an empty slot
            slot = key & mask
            while (at := keys[slot]) and at != key:
                slot = (slot + 1) & mask
            if at:
                found.append((line, lines[slot]))
            elif self.size < room:
                keys[slot], lines[slot] = key, line
                self.size += 1
            else:
                self.full = True
        return found


def _work(offset: int, size: int, line_no: int) -> Partial:
    """A worker's block, read here from the file the worker inherited (not pickled through a pipe)."""
    ctx, fd = _WORKER_STATE
    return count(*scan(os.pread(fd, size, offset), line_no, offset, ctx), ctx)


_WORKER_STATE: tuple[Context, int]  # the counters and the open file: set before the fork, inherited


def _refused(span: reader.Span, ctx: Context) -> Partial:
    """The partial result of a line over MAX_LINE_BYTES: its error."""
    part = Partial(tokens={c.key: TokenTally() for c in ctx.counters}, non_blank=1)
    part.issues.error(span.line_no, reader.long_line(span.size))
    return part


def _done(part: Partial):
    """``part`` as a finished future, to keep its place among the workers' results."""
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(part)
    return future


def _partials(path: Path, ctx: Context) -> Iterator[tuple[Partial, int]]:
    """The partial result of every block, in file order, with the offset the block ends at: in this process for
    small files, else in forked worker processes (parsing and validation are Python, so threads would not share
    out)."""
    workers = min(os.cpu_count() or 1, 8)
    # only counters that say they work in a forked child (HF tokenizers' own threads do not)
    forkable = all(getattr(c, "forkable", False) for c in ctx.counters)
    if workers < 2 or not forkable or path.stat().st_size < PARALLEL_BYTES or os.name != "posix":
        for block, span in reader.blocks(path):
            yield (_refused(span, ctx) if block is None else count(*scan(block, span.line_no, span.offset, ctx), ctx),
                   span.offset + span.size)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    global _WORKER_STATE
    fd = os.open(path, os.O_RDONLY)
    _WORKER_STATE = (ctx, fd)
    gc.freeze()  # the workers' collector then leaves the inherited objects alone: their pages stay shared
    # a worker's objects are a block's trees (no cycles) that live until the block is done: rarer collections
    start = functools.partial(gc.set_threshold, 50_000, 10, 10)
    try:
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=fork, initializer=start) as pool:
            window: deque = deque()
            for span in reader.spans(path):
                window.append((_done(_refused(span, ctx)) if span.too_long
                               else pool.submit(_work, span.offset, span.size, span.line_no), span.offset + span.size))
                if len(window) > workers + 1:  # bounded read-ahead: memory stays flat
                    future, end = window.popleft()
                    yield future.result(), end
            while window:
                future, end = window.popleft()
                yield future.result(), end
    finally:
        gc.unfreeze()
        os.close(fd)


def analyze(path: str | os.PathLike, *, counters: Sequence[TokenCounter] = (), limits: Mapping[str, int] = {},
            rules: Sequence[LineRules] | None = None) -> DatasetReport:
    """Reads the dataset once, in constant memory, validating every line and running every counter.

    Never raises for what is in the file: see ``DatasetReport.errors``, ``warnings`` and ``provider_issues``.
    ``limits`` maps a counter key to the per-example token limit to check (over it: a truncation warning).
    ``rules``: the providers' line rules to check; None: every registered backend's (``providers.registered``).
    """
    label, p = str(path), Path(path)
    rules = providers.registered() if rules is None else tuple(rules)
    asked = {"counters": counters, "limits": limits, "rules": rules}
    total = Partial(tokens={c.key: TokenTally() for c in counters})
    problem = reader.file_problem(p)
    if problem:
        return report.build(label, p, "chat", total, fatal=[DataIssue(label, 0, problem)], **asked)
    seen = Seen()
    try:
        fmt, fmt_line, fatal = reader.first_format(p)
        if fatal:
            return report.build(label, p, "chat", total, fatal=[DataIssue(label, fmt_line, fatal)], **asked)
        group = CounterGroup(counters, json_examples=True)
        ctx = Context(fmt or "chat", fmt_line, tuple(counters), dict(limits), group, rules)
        with progress.task(f"reading {p.name}", total=p.stat().st_size) as reading:
            for part, end in _partials(p, ctx):
                for n, first in seen.duplicates(part.hashes):
                    part.issues.tally("warning", "duplicate", n, f"duplicate of line {first}")
                total.merge(part)
                reading.update(completed=end, examples=total.examples)
    except OSError as exc:  # the file vanished or the disk failed while it was read
        problem = f"cannot read the file: {exc.strerror or exc}"
        return report.build(label, p, "chat", Partial(), fatal=[DataIssue(label, 0, problem)], **asked)
    return report.build(label, p, ctx.fmt, total, fatal=[], **asked,
                        duplicates_covered=seen.capacity if seen.full else None)

