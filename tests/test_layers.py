"""The import layers of docs/ARCHITECTURE.md: the contracts in pyproject's ``[tool.importlinter]``, checked by
import-linter through ``.ci/static.py`` (which CI also runs), and proof that each contract catches a break."""

from __future__ import annotations

import runpy
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATIC = runpy.run_path(str(REPO / ".ci" / "static.py"))


def lint(view: Path) -> subprocess.CompletedProcess[str]:
    argv, env = STATIC["command"]("imports", view)
    return subprocess.run(argv, env=env, cwd=view, capture_output=True, text=True)


def test_the_layers_hold(tmp_path):
    done = lint(STATIC["build_view"](tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_contract_catches_a_break(tmp_path):
    """One module breaks each contract, each with another kind of import: a plain one, one inside a function, one under
    TYPE_CHECKING, one through a chain of two modules, an external package's (twice: click anywhere, pydantic in the
    light modules `ftbroker validate` loads), and one added to an existing module."""
    view = STATIC["build_view"](tmp_path)
    probes = {
        "ftbroker/estimate/_probe.py": "from ftbroker.backends import base\n",
        "ftbroker/backends/_probe.py": "def later():\n    from ftbroker import plan_io\n",
        "ftbroker/pricing/_probe.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ftbroker.ledger\n",
        "ftbroker/_chain.py": "import ftbroker.ledger\n",  # the routes reach the ledger through this one
        "ftbroker/_uses_click.py": "import click\n",
        "ftbroker/data/_probe.py": "import ftbroker.backends.base\n",
        "ftbroker/backends/declared/_probe.py": "import pydantic\n",
    }
    for rel, text in probes.items():
        (view / rel).write_text(text)
    for module, line in (("routes", "import ftbroker._chain"), ("planner", "import ftbroker.backends.base")):
        path = view / "ftbroker" / f"{module}.py"
        text = path.read_text()
        path.unlink()  # a link to the source: write a copy in its place, never through the link
        path.write_text(f"{text}\n{line}\n")
    done = lint(view)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 kept, 7 broken" in done.stdout, done.stdout
    for shown in ("ftbroker.estimate._probe -> ftbroker.backends.base", "ftbroker.backends._probe -> ftbroker.plan_io",
                  "ftbroker.pricing._probe -> ftbroker.ledger", "ftbroker.routes -> ftbroker._chain",
                  "ftbroker._uses_click -> click", "ftbroker.planner -> ftbroker.backends.base",
                  "ftbroker.backends.declared._probe -> pydantic"):
        assert shown in done.stdout, done.stdout
