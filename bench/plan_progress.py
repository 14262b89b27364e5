"""What drawing progress costs `ftbroker plan`: the same plan with stderr a terminal (bars drawn) and a pipe (none).

    python bench/plan_progress.py                    # ~200 MB generated chat data, 3 rounds
    python bench/plan_progress.py --size-mb 1000 --rounds 2

The dataset is bench/plan_throughput.py's generated chat data (cached under bench/out/). Each round runs
``ftbroker plan FILE --json`` twice, in turn: once with stderr a pseudo-terminal (``pty.openpty``; rich then
draws the reading bar, as a user at a terminal sees it; a thread here reads what it draws, as a terminal would)
and once with stderr a file (no reporter is installed at all). Stdout goes to a file in both. The order within a
round alternates so that a change in the machine's load favours neither side.

Printed: per run, wall-clock seconds, MB/s and the CPU seconds of the command and its workers; then the overhead
of progress as the best (least disturbed) run of each side compared, wall clock and CPU, and the median of the
per-round differences. Goal (issue 15): under 2% of plan throughput. The machine is shared: the load average is
printed before and after; a difference smaller than the spread between rounds of one side is noise.
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_throughput import OUT, generate  # noqa: E402  (the one generator of the benches' chat data)


def _drain(fd: int, seen: list[int]) -> None:
    """Read the terminal's side until the command closes it, counting the bytes drawn."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the command closed its side
            return
        if not chunk:
            return
        seen[0] += len(chunk)


def run(data: Path, terminal: bool) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, bytes drawn on stderr) of one plan."""
    cmd = [sys.executable, "-m", "ftbroker.cli", "plan", str(data), "--json"]
    env = {**os.environ, "COLUMNS": "120"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    drawn = [0]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr_file:
        master = reader = None
        if terminal:
            master, slave = pty.openpty()
            reader = threading.Thread(target=_drain, args=(master, drawn), daemon=True)
            reader.start()
            stderr = slave
        else:
            stderr = stderr_file
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=stdout, stderr=stderr, env=env)
        seconds = time.perf_counter() - start
        if terminal:
            os.close(slave)
            reader.join(5)
            os.close(master)
        else:
            stderr_file.seek(0)
            drawn[0] = len(stderr_file.read())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 2):
        sys.exit(f"plan failed (exit {proc.returncode})")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, drawn[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    data = OUT / f"chat_{args.size_mb:g}MB.jsonl"
    if not data.exists():
        generate(data, args.size_mb)
    mb = data.stat().st_size / 1e6
    print(f"dataset: {data.name}, {mb:,.0f} MB; cpus: {os.cpu_count()}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for round_no in range(args.rounds):
        for terminal in ((True, False) if round_no % 2 == 0 else (False, True)):
            seconds, cpu, drawn = run(data, terminal)
            runs[terminal].append((seconds, cpu))
            side = "progress (pty)" if terminal else "no progress (pipe)"
            print(f"round {round_no + 1} {side:<19} {seconds:7.1f} s  {mb / seconds:6.1f} MB/s  CPU {cpu:6.1f} s  "
                  f"stderr {drawn:,} bytes")
    best_on, best_off = (min(s for s, _ in runs[t]) for t in (True, False))
    cpu_on, cpu_off = (min(c for _, c in runs[t]) for t in (True, False))
    rounds = statistics.median(on[0] / off[0] - 1 for on, off in zip(runs[True], runs[False]))
    print(f"overhead of progress, best run of each: wall clock {100 * (best_on / best_off - 1):+.1f}% "
          f"({mb / best_on:.1f} vs {mb / best_off:.1f} MB/s), CPU {100 * (cpu_on / cpu_off - 1):+.1f}%; "
          f"median of the rounds' differences {100 * rounds:+.1f}% (goal: under 2%)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
