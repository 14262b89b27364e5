import pytest

from ftbroker.backends import base
from ftbroker.errors import FtBrokerError, SpecError, UnknownNameError


def test_builtins_are_listed_and_loaded():
    assert "local" in base.backend_names()
    cls = base.backend_class("local")
    assert cls.name == "local" and "qlora" in cls.capabilities.methods


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        base.backend_class("lokal")
    assert info.value.exit_code == 2
    assert "did you mean 'local'" in str(info.value)
    assert f"valid: {', '.join(base.backend_names())}" in str(info.value)


def test_a_plug_in_through_an_entry_point(plugin_backends, tmp_path):
    plugin_backends(scripted="jobsupport:ScriptedBackend")
    assert base.backend_names() == sorted([*base.BUILTIN_BACKENDS, "scripted"])
    backend = base.create_backend("scripted", {"cost_usd": "2"}, home=tmp_path)
    assert backend.name == "scripted" and str(backend.options.cost_usd) == "2"
    with pytest.raises(SpecError, match="backend_options.colour: scripted has no such option"):
        base.create_backend("scripted", {"colour": "red"}, home=tmp_path)


def test_a_broken_plug_in_is_reported_not_crashed(plugin_backends):
    plugin_backends(broken="no_such_module_xyz:Backend", half="jobsupport:write_chat")
    with pytest.raises(FtBrokerError, match="backend 'broken' failed to load"):
        base.backend_class("broken")
    with pytest.raises(FtBrokerError, match="does not implement name, capabilities"):
        base.backend_class("half")


def test_a_plug_in_cannot_shadow_a_builtin(plugin_backends):
    plugin_backends(local="jobsupport:ScriptedBackend")
    assert base.backend_class("local").__name__ == "LocalBackend"


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
