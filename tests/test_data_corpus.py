"""The bad-file corpus: every file in tests/corpus/ with the exact issues it must produce.

Each ``NAME.expected`` lists, in order, the errors, then the warnings, then each provider's issues of
``NAME.jsonl``, one per line as ``KIND FILE:LINE: message`` (KIND: error, warning, or a provider whose backend declares line rules;
FILE stands for the path; a line-0 issue is about the whole file and shows as ``FILE: message``).
"""

from pathlib import Path

import pytest
from ftbroker.data.analysis import analyze
from ftbroker.data.providers import registered

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.jsonl"))


def _issues(path: Path) -> list[str]:
    report = analyze(str(path))
    lines = [f"error {e}" for e in report.errors] + [f"warning {w}" for w in report.warnings]
    for provider in [rules.provider for rules in registered()]:
        lines += [f"{provider} {i}" for i in report.provider_issues.get(provider, ())]
    return [line.replace(str(path), "FILE") for line in lines]


def test_corpus_is_large_enough():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file(path: Path):
    expected = path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert _issues(path) == expected
