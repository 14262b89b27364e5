"""`ftbroker validate`: exit codes, FILE:LINE errors on stderr, JSON only on stdout, no heavy imports."""

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ftbroker.cli import cli

EXAMPLE = Path(__file__).parent.parent / "examples" / "data" / "support_chats.jsonl"
CORPUS = Path(__file__).parent / "corpus"


def test_valid_file_exits_0_with_a_summary():
    result = CliRunner().invoke(cli, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert f"{EXAMPLE}: chat, 300 valid examples" in result.stdout
    assert "tokens (cl100k_base, exact):" in result.stdout and "bedrock rules" in result.stdout


def test_errors_exit_2_with_file_and_line():
    path = CORPUS / "weights.jsonl"
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"error: {path}:2: message 2: 'weight' must be 0 or 1, got 2"
    assert "Traceback" not in result.output


def test_json_is_the_only_output_on_stdout():
    result = CliRunner().invoke(cli, ["validate", str(EXAMPLE), "--json", "--max-seq-len", "500"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["examples"] == 300 and doc["tokenizer"] == {"name": "cl100k_base", "exact": True}
    assert doc["tokens"]["limit"] == 500 and doc["tokens"]["over_limit"] > 0
    bad = CliRunner().invoke(cli, ["validate", str(CORPUS / "json_array.jsonl"), "--json"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["errors"][0]["line"] == 0


def test_unreadable_files_exit_2():
    for args in (
        ["/no/such/file.jsonl"],
        [str(CORPUS / "a_directory.jsonl")],
        [str(EXAMPLE), "--tokenizer", "x"],
    ):
        result = CliRunner().invoke(cli, ["validate", *args])
        assert result.exit_code == 2 and result.stdout == "", (args, result.output)


def test_validate_imports_no_heavy_module():
    heavy = ("torch", "transformers", "openai", "together", "boto3", "httpx")
    code = (
        f"import sys; from ftbroker.cli import main; sys.argv = ['ftbroker', 'validate', {str(EXAMPLE)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY []")


def _provider_lines(stdout: str, path: Path) -> list[str]:
    """The provider sections of validate's text as the corpus writes them (``PROVIDER FILE:LINE: message``)."""
    found, provider = [], None
    for row in stdout.splitlines():
        heading = re.fullmatch(r"(\w+) rules \(they rule \1 out\):", row)
        if heading or not row.startswith("  "):
            provider = heading and heading.group(1)
        elif provider:
            found.append(f"{provider} {row.strip()}".replace(str(path), "FILE"))
    return found


def test_validate_checks_every_providers_rules_without_a_backend_module():
    """`ftbroker validate` as a user runs it (a fresh process): every provider's line rules give the lines the corpus
    expects (its .expected files were written before the rules left the backend modules), a file with errors is
    refused (its message scrubbed of every provider's key shapes, which the declared modules hold too), and of
    ftbroker.backends only the registry and the declared modules were imported: no backend module, SDK or pydantic."""
    files = [p for p in sorted(CORPUS.glob("*.jsonl")) if re.search(r"^(openai|together|bedrock|fireworks|vertex) ",
                                                                   p.with_suffix(".expected").read_text(), re.M)]
    code = ("import sys\nfrom ftbroker.cli import main\n"
            f"for path in {[str(p) for p in files]!r}:\n"
            "    print('@@', path)\n    sys.argv = ['ftbroker', 'validate', path]\n"
            "    try:\n        main()\n    except SystemExit as done:\n        print('@@ exit', done.code)\n"
            "print('@@ modules', *sorted(m for m in sys.modules if m.startswith(('ftbroker.backends', 'pydantic'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outputs = re.findall(r"^@@ (\S+)\n(.*?)^@@ exit (\d)$", run.stdout, re.M | re.S)
    assert [Path(path) for path, _, _ in outputs] == files and len(files) >= 10
    for path, output, _ in outputs:
        expected = [line for line in Path(path).with_suffix(".expected").read_text().splitlines()
                    if not line.startswith(("error ", "warning "))]
        assert _provider_lines(output, Path(path)) == expected, path
    assert ("weights.jsonl", "2") in [(Path(path).name, status) for path, _, status in outputs]
    assert "weights.jsonl:2: message 2: 'weight' must be 0 or 1" in run.stderr
    assert re.search(r"^@@ modules(.*)$", run.stdout, re.M).group(1).split() == [
        "ftbroker.backends", "ftbroker.backends.declared", *(f"ftbroker.backends.declared.{p}" for p in
                                                            ("bedrock", "fireworks", "openai", "together", "vertex")),
        "ftbroker.backends.registry"]


GOOD_LINE = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                     {"role": "assistant", "content": "4"}]})
BAD_LINES = ["not json", "42", '{"messages": []}', '{"messages": [{"role": "user"}]}',
             '{"messages": [{"role": "user", "content": "hi"}]}', '{"messages": "hello"}', '"a string"',
             '{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}']


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.none() | st.sampled_from(BAD_LINES), min_size=1, max_size=8))
def test_every_bad_line_is_named_by_file_and_line_and_nothing_else_fails(tmp_path, lines):
    """Property: whatever bad lines sit among good ones, `validate` exits 2 naming exactly those lines as
    FILE:LINE (each bad line at least once, no good line), with no traceback; a file of good lines exits 0.
    A file of another shape (a JSON array, pretty-printed JSON) is one error about the file: tests/corpus."""
    assume(None in lines)  # a file with a valid example: its format is known
    path = tmp_path / "data.jsonl"
    path.write_text("".join(f"{GOOD_LINE if line is None else line}\n" for line in lines))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    bad = {n for n, line in enumerate(lines, 1) if line is not None}
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    if not bad:
        assert result.exit_code == 0 and result.stderr == ""
        return
    assert result.exit_code == 2
    named = [re.fullmatch(rf"(?:error: )?{re.escape(str(path))}:(\d+): \S.*", row) for row in
             result.stderr.splitlines()]
    assert all(named), result.stderr
    assert {int(m.group(1)) for m in named} == bad
