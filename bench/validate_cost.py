"""What `ftbroker validate` costs in CPU, and how much of it is collecting the backends' declarations (their
providers' line rules and key shapes, ``ftbroker.declared``), which today imports every backend module. Prints its
figures.

    python bench/validate_cost.py [ROUNDS]

Each run is a fresh process (``ftbroker validate FILE``, as a user types it); CPU is the child's user + system
time, the median of ROUNDS. Files: the bundled examples/data/support_chats.jsonl and a 20,000-example chat file
made here. "without the declarations" runs the same command with the collector answering nothing, so no backend
module is imported and no provider's line rules run: on the small file the difference is the imports (what a
collection that imports no backend would save), on the large one the imports plus running every provider's rules
on each line (work validate must do). Not a mode ftbroker offers.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "data" / "support_chats.jsonl"
RUN = ("import sys; from ftbroker import declared{off}; from ftbroker.cli import main; "
       "sys.argv = ['ftbroker', 'validate', sys.argv[1]]; main()")
OFF = "; declared.collect_with(lambda name: ())"


def cpu_seconds(path: Path, *, declarations: bool) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", RUN.format(off="" if declarations else OFF), str(path)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def chats(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [
                {"role": "system", "content": "You answer questions about orders."},
                {"role": "user", "content": f"Where is order {i}? It was due on day {i % 28 + 1}."},
                {"role": "assistant", "content": f"Order {i} left the warehouse and arrives in {i % 5 + 1} days."}]})
                     + "\n")
    return path


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FTBROKER_HOME"] = tmp  # the user's ledger and catalog override stay out of it
        for label, path in (("examples/data/support_chats.jsonl", EXAMPLE),
                            ("20,000 chat examples", chats(Path(tmp) / "chats.jsonl", 20_000))):
            with_ = statistics.median(cpu_seconds(path, declarations=True) for _ in range(rounds))
            without = statistics.median(cpu_seconds(path, declarations=False) for _ in range(rounds))
            print(f"validate {label}: {with_:.2f} s CPU; without the declarations {without:.2f} s "
                  f"(they cost {with_ - without:.2f} s, {100 * (with_ - without) / with_:.0f}%)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
