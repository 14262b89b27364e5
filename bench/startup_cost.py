"""What `ftbroker validate` and `ftbroker plan` cost as a user types them, and how much of it is imports: wall
time, CPU, `python -X importtime`'s largest entries, and which backend modules each command imported. Prints its
figures.

    python bench/startup_cost.py [ROUNDS] [--top N] [--against REV]

Each run is a fresh process (the `ftbroker` script's own two lines, `from ftbroker.cli import main; main()`).
Wall time is the best of ROUNDS (default 5; what a quiet machine gives), CPU the child's user + system time, the
median. Commands: `validate` on the bundled examples/data/support_chats.jsonl and on a 20,000-example chat file
made here, and `plan` on the bundled example (one model and a named GPU, so no `nvidia-smi` is asked).

`--against REV` measures the package of git revision REV too (`main`, a commit), laid out as installed in a
temporary folder and put first on PYTHONPATH, its rounds taken in turn with this checkout's so that a change in the
machine's load weighs on both alike.

The import figures come from one more run with `-X importtime`: the sum of every module's own time, then the N
(default 8) first-level entries by their cumulative time. `importlib.import_module` (how the backend registry loads
a backend module) is not logged by `-X importtime`: what such a module imports shows as first-level entries of its
own, and the backend modules are named from `sys.modules` at exit instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "data" / "support_chats.jsonl"
# the ftbroker script's body, and the modules loaded by the end written to MODULES (stdout and stderr are taken)
RUN = ("import atexit, os, sys\n"
       "atexit.register(lambda: open(os.environ['MODULES'], 'w').write('\\n'.join(sorted(sys.modules))))\n"
       "from ftbroker.cli import main\n"
       "sys.argv = ['ftbroker', *sys.argv[1:]]\n"
       "main()\n")
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def run(args: list[str], env: dict[str, str], *flags: str) -> tuple[float, float, str]:
    """One fresh `ftbroker ARGS`: wall seconds, CPU seconds, its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *flags, "-c", RUN, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 2):  # 2: the dataset has errors, which validate reports and exits with
        raise SystemExit(f"ftbroker {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stderr


def import_lines(stderr: str, top: int) -> list[str]:
    rows = [(int(m[1]), int(m[2]), len(m[3]), m[4]) for m in map(_IMPORT_LINE.match, stderr.splitlines()) if m]
    lines = [f"    imports: {sum(r[0] for r in rows) / 1e3:.0f} ms in {len(rows)} modules (-X importtime, own "
             "times summed); the largest first-level entries:"]
    first = sorted((r for r in rows if r[2] == 1), key=lambda r: -r[1])[:top]
    lines += [f"      {cumulative / 1e3:7.1f} ms  {name}" for _, cumulative, _, name in first]
    return lines


def backend_modules(path: Path) -> list[str]:
    names = path.read_text().split()
    return [n.removeprefix("ftbroker.backends.") for n in names if n.startswith("ftbroker.backends.")]


def measure(label: str, args: list[str], trees: dict[str, dict[str, str]], rounds: int, top: int) -> None:
    runs: dict[str, list[tuple[float, float, str]]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree, env in trees.items():
            runs[tree].append(run(args, env))
    print(label)
    for tree, env in trees.items():
        walls, cpus = [w for w, _, _ in runs[tree]], [c for _, c, _ in runs[tree]]
        _, _, stderr = run(args, env, "-X", "importtime")
        backends = backend_modules(Path(env["MODULES"]))
        print(f"  {tree}: wall best {min(walls):.2f} s (median {statistics.median(walls):.2f}), "
              f"CPU median {statistics.median(cpus):.2f} s")
        print(f"    ftbroker.backends modules imported: {len(backends)}"
              + (f" ({', '.join(backends)})" if backends else ""))
        print("\n".join(import_lines(stderr, top)))


def installed_layout(rev: str, folder: Path) -> Path:
    """The package of git revision ``rev`` laid out as installed (pyproject's package-dir: ``broker/`` is
    ``ftbroker``, ...), made of links to an export of that revision, data files included; a PYTHONPATH entry."""
    source, layout = folder / "source", folder / "layout"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package_dir = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    packages = {source / folder for folder in package_dir.values()}
    for package, folder in package_dir.items():
        target = layout.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (source / folder).iterdir():
            if entry not in packages:  # a subpackage gets its own folder in the layout
                (target / entry.name).symlink_to(entry)
    return layout


def chats(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [
                {"role": "system", "content": "You answer questions about orders."},
                {"role": "user", "content": f"Where is order {i}? It was due on day {i % 28 + 1}."},
                {"role": "assistant", "content": f"Order {i} left the warehouse and arrives in {i % 5 + 1} days."}]})
                     + "\n")
    return path


def main(rounds: int, top: int, against: str | None) -> None:
    print(f"cpus: {os.cpu_count()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"  # the user's ledger, last plan and catalog override stay out of it
        home.mkdir()
        env = {**os.environ, "FTBROKER_HOME": str(home), "MODULES": str(Path(tmp) / "modules.txt")}
        trees = {"this checkout": env}
        if against:
            layout = installed_layout(against, Path(tmp) / "against")
            python_path = os.pathsep.join(filter(None, [str(layout), os.environ.get("PYTHONPATH")]))
            trees = {against: {**env, "PYTHONPATH": python_path}, **trees}
        big = chats(Path(tmp) / "chats.jsonl", 20_000)
        measure("validate examples/data/support_chats.jsonl", ["validate", str(EXAMPLE)], trees, rounds, top)
        measure("validate 20,000 chat examples", ["validate", str(big)], trees, rounds, top)
        measure("plan examples/data/support_chats.jsonl --model Llama-3.1-8B --gpu RTX-4090",
                ["plan", str(EXAMPLE), "--model", "Llama-3.1-8B", "--gpu", "RTX-4090"], trees, rounds, top)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="first-level -X importtime entries shown")
    parser.add_argument("--against", metavar="REV", help="a git revision to measure too (main, a commit)")
    options = parser.parse_args()
    main(options.rounds, options.top, options.against)
