import importlib
import json

import pytest
from click.testing import CliRunner

from ftbroker import declared
from ftbroker.backends import base, registry
from ftbroker.cli import cli
from ftbroker.errors import FtBrokerError, SpecError, UnknownNameError
from ftbroker.redact import scrub


def test_builtins_are_listed_and_loaded():
    assert "local" in registry.backend_names()
    cls = registry.backend_class("local")
    assert cls.name == "local" and "qlora" in cls.capabilities.methods


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        registry.backend_class("lokal")
    assert info.value.exit_code == 2
    assert "did you mean 'local'" in str(info.value)
    assert f"valid: {', '.join(registry.backend_names())}" in str(info.value)


def test_a_plug_in_through_an_entry_point(plugin_backends, tmp_path):
    plugin_backends(scripted="jobsupport:ScriptedBackend")
    assert registry.backend_names() == sorted([*registry.BUILTIN_BACKENDS, "scripted"])
    backend = base.create_backend("scripted", {"cost_usd": "2"}, home=tmp_path)
    assert backend.name == "scripted" and str(backend.options.cost_usd) == "2"
    with pytest.raises(SpecError, match="backend_options.colour: scripted has no such option"):
        base.create_backend("scripted", {"colour": "red"}, home=tmp_path)


def test_a_broken_plug_in_is_reported_not_crashed(plugin_backends):
    plugin_backends(broken="no_such_module_xyz:Backend", half="jobsupport:write_chat")
    with pytest.raises(FtBrokerError, match="backend 'broken' failed to load"):
        registry.backend_class("broken")
    with pytest.raises(FtBrokerError, match="does not implement name, capabilities"):
        registry.backend_class("half")


def test_a_plug_in_cannot_shadow_a_builtin(plugin_backends):
    plugin_backends(local="jobsupport:ScriptedBackend")
    assert registry.backend_class("local").__name__ == "LocalBackend"


def test_a_builtin_declares_in_its_light_module_the_very_objects_its_class_sets():
    """One source of truth per provider: what ``ftbroker validate`` reads from ``backends/declared`` (without the
    backend module) is what the backend class checks a job's file with and masks keys by."""
    for name, builtin in registry.BUILTIN_BACKENDS.items():
        cls = registry.backend_class(name)
        module = importlib.import_module(builtin.declared) if builtin.declared else None
        for what in ("line_rules", "key_shapes"):
            assert (getattr(cls, what, None) or None) is getattr(module, what, None), (name, what)
    assert [rules.provider for rules in registry.declarations("line_rules")] == [
        "openai", "together", "bedrock", "fireworks", "vertex"]


def test_a_plug_in_declares_on_its_class_and_validate_checks_it(plugin_backends, monkeypatch, tmp_path):
    """A plug-in's line rules and key shapes come from its class (its entry point loads it), after the built-ins'."""
    from jobsupport import DeclaringBackend

    plugin_backends(acme="jobsupport:DeclaringBackend", broken="no_such_module_xyz:Backend")
    monkeypatch.setattr(declared, "_found", {})  # collected again, with the plug-ins installed
    assert registry.declarations("line_rules")[-1] is DeclaringBackend.line_rules
    assert registry.declarations("key_shapes")[-1] is DeclaringBackend.key_shapes
    path = tmp_path / "d.jsonl"
    turn = [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "On its way."}]
    path.write_text("".join(json.dumps({"messages": turn * turns}) + "\n" for turns in (1, 2, 2)))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"acme rules (they rule acme out):\n  {path}:2: more than one turn: Acme takes one question and its "
            "answer (and 1 more line)") in result.stdout
    assert scrub("key acme_" + "x" * 24) == "key ***"


def test_capabilities_reasons_cover_sections():
    caps = base.Capabilities(methods=frozenset({"lora"}), data_formats=frozenset({"chat"}),
                             unsupported={"lora": "adapter shape is fixed", "cancel": "no cancel endpoint"})
    assert caps.reason("lora.r") == "adapter shape is fixed"
    assert not caps.supports("cancel") and caps.supports("resume")


def test_nvidia_smi_parsing_honours_visible_devices():
    out = ("0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559\n"
           "1, GPU-bbb, NVIDIA RTX 4090, 24564\n"
           "garbage line\n")
    gpus = base.parse_nvidia_smi(out, None)
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX 4090"]
    assert gpus[1].memory_gib == 23.99
    assert [g.name for g in base.parse_nvidia_smi(out, "1")] == ["NVIDIA RTX 4090"]
    assert [g.name for g in base.parse_nvidia_smi(out, "GPU-bbb,0")] == ["NVIDIA RTX 4090", "NVIDIA H100 80GB HBM3"]
    assert base.parse_nvidia_smi(out, "") == ()
