"""The import layers of docs/ARCHITECTURE.md, checked on the source: every ``import`` of every module, those inside
functions and under TYPE_CHECKING included, read with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI_LAYER = ("ftbroker.cli", "ftbroker.render", "ftbroker.render_jobs", "ftbroker.route_jobs", "ftbroker.chart",
             "ftbroker.reporting", "ftbroker.report_html", "ftbroker.svg", "ftbroker.progress_view")
PLANNING = ("ftbroker.planner", "ftbroker.planning")
LEDGER = ("ftbroker.ledger", "ftbroker.your_runs")  # the shell that reads the user's runs

# (modules, what they may not import, why)
RULES = [
    (("ftbroker.planner",), ("ftbroker.backends", *LEDGER),
     "the planner core composes, ranks and numbers routes; the backends contribute them, the shell reads the runs"),
    (("ftbroker.routes",), ("ftbroker.backends", *PLANNING, *CLI_LAYER, *LEDGER),
     "routes are the neutral types both the planning layer and the backends import"),
    (("ftbroker.backends",), (*PLANNING, *CLI_LAYER, "ftbroker.broker", "ftbroker.your_runs"),
     "a backend contributes its routes and runs jobs; it never calls up into planning or the CLI"),
    (("ftbroker.estimate", "ftbroker.pricing"), ("ftbroker.backends", "ftbroker.routes", *PLANNING, *CLI_LAYER,
                                                 "ftbroker.broker", *LEDGER),
     "the estimator and pricing are the pure bottom layer: the user's runs come in as data"),
    (("ftbroker.data", "ftbroker.tokens", "ftbroker.redact", "ftbroker.declared"),
     ("ftbroker.backends", "ftbroker.routes", *PLANNING, *CLI_LAYER, "ftbroker.broker", *LEDGER),
     "the data layer and the basics collect what the backends declare (ftbroker.declared), never import them"),
    (("ftbroker.progress", "ftbroker.data", "ftbroker.tokens", "ftbroker.planning", "ftbroker.broker",
      "ftbroker.ledger", "ftbroker.backends"), ("rich", *CLI_LAYER),
     "the core reports progress through ftbroker.progress; only the CLI layer draws it (rich)"),
]


def modules() -> dict[str, Path]:
    """Every module of the package, by its import name, from pyproject's package-dir (the folders it maps)."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in package_dir.items():
        for path in sorted((REPO / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file: ``from a import b`` gives both ``a`` and ``a.b``."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer, forbidden, why", RULES, ids=[", ".join(r[0]) for r in RULES])
def test_layers(layer, forbidden, why):
    broken = [f"{path.relative_to(REPO)}:{line}: {name} imports {module}"
              for name, path in modules().items() if _within(name, layer)
              for line, module in imported(name, path) if _within(module, forbidden)]
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_the_walk_sees_every_kind_of_import():
    found = modules()
    assert {"ftbroker.planner", "ftbroker.routes", "ftbroker.backends.gpu_routes", "ftbroker.estimate.memory",
            "ftbroker.pricing.catalog", "ftbroker.backends.local.preflight", "ftbroker.data.analysis",
            "ftbroker.tokens.resolve"} <= set(found)
    planning = {m for _, m in imported("ftbroker.planning", found["ftbroker.planning"])}
    assert {"ftbroker.planner", "ftbroker.backends.base", "ftbroker.backends.gpu_routes",
            "ftbroker.data.analysis"} <= planning
    assert "ftbroker.backends._managed" in {m for _, m in imported("ftbroker.backends.openai",
                                                                      found["ftbroker.backends.openai"])}  # relative
    assert _within("ftbroker.backends.local.backend", ("ftbroker.backends",))
    assert not _within("ftbroker.broker", ("ftbroker.backends",)) and not _within("ftbroker.plannerx", PLANNING)
