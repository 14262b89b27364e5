"""The static checks CI runs beside the tests: the import layers (import-linter) and the types of the pure core (mypy).

Both tools find modules by their import names, but the folders map onto ``ftbroker`` through pyproject's
``package-dir`` (``broker/`` is ``ftbroker``, ``backends/`` ``ftbroker.backends``, ...), which only the editable
install's import hook knows. So each check runs on a view: a temporary ``ftbroker/`` tree of links to the source
files, laid out as the package is installed. Their settings (``[tool.importlinter]``, ``[tool.mypy]``) are in
pyproject.toml.

    python .ci/static.py [imports] [types]      (both when none is named; exit 1 when a check fails)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_files(repo: Path = REPO) -> dict[Path, Path]:
    """Each source file of the package, by its path in the installed layout (``ftbroker/estimate/memory.py``)."""
    package_dir = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    files = {}
    for package, folder in package_dir.items():
        for path in (repo / folder).glob("*.py"):
            files[Path(*package.split("."), path.name)] = path
    return files


def build_view(root: Path, repo: Path = REPO) -> Path:
    """The installed layout under ``root``, made of links to the source files; ``root`` goes on the import path."""
    for rel, source in package_files(repo).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(source)
    return root


def command(check: str, view: Path, repo: Path = REPO) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one check (``imports`` or ``types``) on a view, run from the view."""
    config = str(repo / "pyproject.toml")
    if check == "imports":  # lint-imports, without its script (whose first line may name another interpreter)
        argv = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
                                      "sys.argv[0] = 'lint-imports'; sys.exit(c())", "--config", config, "--no-cache"]
    else:
        argv = [sys.executable, "-m", "mypy", "--config-file", config, "--cache-dir", os.devnull]
    return argv, {**os.environ, "PYTHONPATH": str(view), "MYPYPATH": str(view)}


def main(argv: list[str]) -> int:
    checks = argv or ["imports", "types"]
    unknown = set(checks) - {"imports", "types"}
    if unknown:
        print(f"unknown check(s): {', '.join(sorted(unknown))} (imports, types)", file=sys.stderr)
        return 2
    failed = []
    with tempfile.TemporaryDirectory(prefix="ftbroker-view-") as tmp:
        view = build_view(Path(tmp))
        for check in checks:
            argv_, env = command(check, view)
            if subprocess.run(argv_, env=env, cwd=view).returncode != 0:
                failed.append(check)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
