"""The catalog: every shipped row validated, merging of overrides, precise errors, model and GPU lookups."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftbroker.cli import cli
from ftbroker.errors import CatalogError, InputError, UnknownNameError
from ftbroker.pricing.catalog import AutoEpochs, load_catalog, user_override_path
from ftbroker.pricing.catalog.load import CATALOG_DIR_ENV
from ftbroker.tokens.estimate import FAMILIES

INVENTED = Path(__file__).parent / "fixtures" / "catalog"


@pytest.fixture(scope="module")
def shipped():
    return load_catalog()


# ---------------------------------------------------------------------------------------------- shipped rows

def test_shipped_catalog_loads_with_enough_rows_of_each_kind(shipped):
    assert len(shipped.gpus) >= 15
    assert len({i.cloud for i in shipped.instances}) >= 8
    assert len(shipped.models) >= 30
    providers = {o.provider for o in shipped.managed}
    assert {"openai", "together", "bedrock", "fireworks", "vertex"} <= providers


def test_every_shipped_row_has_provenance_and_sane_units(shipped):
    read_by = date.today()  # the real calendar's, not the product clock's: no source is dated after it was read
    for row in shipped.rows():
        assert row.source.strip(), row
        assert date(2020, 1, 1) <= row.as_of <= read_by, row
        assert getattr(row, "verified", None) is None or row.as_of <= row.verified <= read_by, row
    for gpu in shipped.gpus.values():
        assert 8 <= gpu.memory_gib <= 256
        assert gpu.bf16_tflops is None or gpu.supports_bf16
    for inst in shipped.instances:
        assert inst.gpu in shipped.gpus
        for price in (inst.on_demand_usd_per_hour, inst.spot_usd_per_hour):
            assert price is None or isinstance(price, Decimal) and Decimal("0.01") <= price / inst.gpu_count <= 30
        if inst.on_demand_usd_per_hour and inst.spot_usd_per_hour:
            assert inst.spot_usd_per_hour < inst.on_demand_usd_per_hour
    for offer in shipped.managed:
        assert offer.usd_per_m_tokens is None or isinstance(offer.usd_per_m_tokens, Decimal)
        assert offer.formats or offer.objective == "rft"


def test_shipped_keys_are_unique(shipped):
    for rows, key in ((shipped.instances, lambda i: (i.cloud, i.instance_type)),
                      (shipped.managed, lambda o: o.key)):
        keys = [key(r) for r in rows]
        assert len(keys) == len(set(keys))


def test_research_caveats_are_carried(shipped):
    instances = {(i.cloud, i.instance_type): i for i in shipped.instances}
    # GCP: the catalog prices host VM and GPUs apart; an instance is their sum, and its row says so
    a2 = instances[("gcp", "a2-highgpu-1g")]
    assert "host a2-highgpu-1g + accelerator A100 x1" in a2.source and "GCP price = host VM + GPUs" in a2.note
    # Azure/RunPod list spot == on-demand: unknown, not a discount
    assert instances[("runpod", "1x_H100-SXM_SECURE")].spot_usd_per_hour is None
    assert instances[("azure", "Standard_NC40ads_H100_v5")].spot_usd_per_hour is None
    assert instances[("azure", "Standard_ND96isr_H100_v5")].gpu_count == 8  # catalog quirk said 12
    assert not any(i.instance_type.startswith("g6f") for i in shipped.instances)  # fractional L4 dropped
    bedrock = [o for o in shipped.managed if o.provider == "bedrock"]
    assert bedrock and all(not o.price_known for o in bedrock)  # NOT FOUND in research: no invented price
    assert any(o.provider == "vertex" and o.secondary for o in shipped.managed)


def test_parameter_counts_match_the_research_within_half_a_percent(shipped):
    published = {"Llama-3.1-8B": 8_030_261_248, "Qwen2.5-7B": 7_615_616_512, "Gemma-2-2B": 2_614_341_888,
                 "Mixtral-8x7B-v0.1": 46_702_792_704, "Qwen3-30B-A3B": 30_532_122_624,
                 "gpt-oss-20b": 20_914_757_184, "Qwen3-8B": 8_190_735_360}
    for name, count in published.items():
        assert shipped.models[name].params == pytest.approx(count, rel=0.005), name
    assert shipped.models["Llama-3.1-8B"].params == 8_030_261_248  # exact for a plain Llama block


def test_staleness_marks_what_the_last_check_left_behind(shipped):
    """The rows read from SkyPilot's current (v9) catalogs carry the day a check verified them, so they are fresh
    then whatever their as_of; every priced row is fresh on the day of its last check (`verified`, else `as_of`)
    and stale 91 days on. Whatever days a refresh writes (the rule itself: test_catalog_rules.py)."""
    current = [i for i in shipped.instances if "catalogs/v9/" in i.source]
    assert current and all(i.verified for i in current)
    for row in (*shipped.instances, *shipped.managed):
        checked = row.verified or row.as_of
        assert row not in shipped.stale_rows(checked) and row in shipped.stale_rows(checked + timedelta(days=91))


def test_the_cards_users_own_and_rent_have_hours(shipped):
    """Every GPU a user owns or rents has dense bf16 TFLOPS (so its routes get hours and cost) and a link."""
    for name in ("RTX-3060", "RTX-3090", "RTX-4060-Ti", "RTX-4080", "RTX-4090", "RTX-5090", "A10G", "L4",
                 "RTX-A6000", "RTX-6000-Ada", "L40", "L40S", "MI300X"):
        gpu = shipped.gpu(name)
        assert gpu.bf16_tflops and gpu.interconnect_gbps and gpu.memory_gib, name
    assert shipped.gpu("NVIDIA GeForce RTX 5090").name == "RTX-5090"


def test_self_contradicting_upstream_prices_are_flagged_in_the_shipped_catalog(shipped):
    doubted = {(i.cloud, i.gpu) for i in shipped.doubted()}
    assert ("gcp", "A100-SXM-80GB") in doubted  # cheaper than the 40 GB A100 on GCP: a catalog artefact
    assert all(i.spot_usd_per_hour is None or i.spot_usd_per_hour <= i.on_demand_usd_per_hour
               for i in shipped.instances if i.on_demand_usd_per_hour)


def test_openai_auto_epochs_rule():
    rule = AutoEpochs(target=3, min_example_passes=100, max_example_passes=25000, max_epochs=25, min_epochs=1)
    assert rule.epochs_for(1000) == 3
    assert rule.epochs_for(20) == 5
    assert rule.epochs_for(3) == 25  # 100 // 3 = 33, capped
    assert rule.epochs_for(10_000) == 2
    assert rule.epochs_for(100_000) == 1


# ---------------------------------------------------------------------------------------------- lookups

@pytest.mark.parametrize("name, expected", [
    ("Llama-3.1-8B", "Llama-3.1-8B"), ("llama-3.1-8b-instruct", "Llama-3.1-8B"),
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"), ("Qwen/Qwen2.5-7B", "Qwen2.5-7B"),
    ("qwen2.5-7b-instruct", "Qwen2.5-7B"), ("google/gemma-3-4b-it", "Gemma-3-4B-it"),
])
def test_model_by_name_alias_or_repo(shipped, name, expected):
    assert shipped.model(name).name == expected


def test_unknown_model_says_did_you_mean(shipped):
    with pytest.raises(UnknownNameError, match="did you mean 'Llama-3.1-8B'") as info:
        shipped.model("Llama-3.1-8")
    assert info.value.exit_code == 2


def _write_config(folder, **overrides):
    config = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
              "max_position_embeddings": 131072, "tie_word_embeddings": False}
    config.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_model_from_local_folder_and_config_path(shipped, tmp_path):
    folder = _write_config(tmp_path / "my-llama")
    arch = shipped.model(str(folder))
    assert arch.name == "my-llama" and arch.head_dim == 128 and arch.tokenizer_family == "llama3"
    assert arch.params == shipped.models["Llama-3.1-8B"].params
    assert arch.local_tokenizer is None  # no tokenizer.json there: the llama3 estimate will count
    assert shipped.model(str(folder / "config.json")).hidden_size == 4096
    (folder / "tokenizer.json").write_text("{}")
    assert shipped.model(str(folder)).local_tokenizer == str(folder.resolve())


def test_config_variants_text_config_moe_and_defaults(shipped, tmp_path):
    gemma = tmp_path / "gemma3"
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps({
        "model_type": "gemma3", "text_config": {
            "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
            "max_position_embeddings": 131072}}))
    arch = shipped.model(str(gemma))
    assert (arch.hidden_size, arch.head_dim, arch.num_layers) == (2560, 256, 34)
    assert arch.tie_word_embeddings and arch.qk_norm and arch.norms_per_layer == 4  # gemma defaults
    assert arch.tokenizer_family == "gemma"

    mixtral = _write_config(tmp_path / "mixtral", model_type="mixtral", num_local_experts=8,
                            num_experts_per_tok=2, vocab_size=32000, max_position_embeddings=32768)
    arch = shipped.model(str(mixtral))
    assert (arch.num_experts, arch.experts_per_token, arch.moe_intermediate_size) == (8, 2, 14336)
    assert arch.params == pytest.approx(shipped.models["Mixtral-8x7B-v0.1"].params, rel=1e-6)

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
                                                  "vocab_size": 50257, "n_positions": 1024}))
    arch = shipped.model(str(gpt2))
    assert (arch.intermediate_size, arch.head_dim, arch.num_kv_heads) == (3072, 64, 12)

    qwen2 = _write_config(tmp_path / "qwen", model_type="qwen2", head_dim=None)
    assert shipped.model(str(qwen2)).qkv_bias  # Qwen2 always has q/k/v biases


def test_bad_configs_are_input_errors(shipped, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without a config.json"):
        shipped.model(str(tmp_path / "empty"))
    bad = tmp_path / "bad" / "config.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a valid config.json"):
        shipped.model(str(bad))
    _write_config(tmp_path / "nohidden", hidden_size=None)
    with pytest.raises(InputError, match="no hidden size"):
        shipped.model(str(tmp_path / "nohidden"))


@pytest.mark.parametrize("name, expected", [
    ("RTX-4090", "RTX-4090"), ("4090", "RTX-4090"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("H100-SXM", "H100-SXM"), ("h100", "H100-SXM"), ("NVIDIA H100 80GB HBM3", "H100-SXM"),
    ("A100-80GB", "A100-SXM-80GB"), ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"), ("Tesla T4", "T4"),
    ("nvidia h100 pcie", "H100-PCIe"),
])
def test_gpu_by_name_or_alias(shipped, name, expected):
    assert shipped.gpu(name).name == expected


def test_unknown_gpu(shipped):
    with pytest.raises(UnknownNameError, match="did you mean"):
        shipped.gpu("RTX-4070")


# ---------------------------------------------------------------------------------------------- merging

def test_user_override_file_replaces_given_fields_and_adds_rows(tmp_path, monkeypatch, shipped):
    monkeypatch.setenv("FTBROKER_HOME", str(tmp_path))
    assert user_override_path() == tmp_path / "catalog.toml"
    (tmp_path / "catalog.toml").write_text('''
[[offer]]
provider = "openai"
model = "gpt-4o-mini-2024-07-18"
method = "sft"
objective = "sft"
usd_per_m_tokens = 2.50
source = "our contract"
as_of = 2026-11-20

[[gpu]]
name = "RTX-5090"
aliases = ["5090"]
memory_gib = 32
bandwidth_gbps = 1792
supports_bf16 = true
source = "vendor page"
as_of = 2026-11-01
''')
    cat = load_catalog()
    offer = next(o for o in cat.managed if o.model == "gpt-4o-mini-2024-07-18")
    assert offer.usd_per_m_tokens == Decimal("2.50") and offer.source == "our contract"
    assert offer.max_tokens_per_example == 65536  # untouched fields stay
    assert cat.gpu("5090").memory_gib == 32
    assert cat.version != shipped.version
    assert str(tmp_path / "catalog.toml") in cat.files


def test_catalog_file_csv_adds_instances(tmp_path, shipped):
    extra = tmp_path / "mine.csv"
    extra.write_text("cloud,instance_type,gpu,gpu_count,on_demand_usd_per_hour,spot_usd_per_hour,region,source,as_of\n"
                     "homelab,box1,RTX-4090,2,0.60,,basement,electricity bill,2026-11-01\n"
                     "aws,g5.xlarge,A10G,1,0.95,0.30,us-east-1,my quote,2026-11-20\n")
    cat = load_catalog([extra])
    rows = {(i.cloud, i.instance_type): i for i in cat.instances}
    assert rows[("homelab", "box1")].on_demand_usd_per_hour == Decimal("0.60")
    assert rows[("aws", "g5.xlarge")].on_demand_usd_per_hour == Decimal("0.95")
    assert len(cat.instances) == len(shipped.instances) + 1


def test_ftbroker_catalog_dir_replaces_the_shipped_files_for_the_cli_and_the_processes_it_starts(tmp_path,
                                                                                                   monkeypatch):
    shipped = CliRunner().invoke(cli, ["catalog", "validate"])
    assert shipped.exit_code == 0 and shipped.stdout.startswith("ok: shipped catalog: ")
    assert "instances.csv (shipped)" in load_catalog().files

    monkeypatch.setenv(CATALOG_DIR_ENV, str(INVENTED))  # a small catalog of invented clouds and prices
    cat = load_catalog()
    assert {i.cloud for i in cat.instances} == {"alpha", "beta", "gamma"}
    assert str(INVENTED / "instances.csv") in cat.files  # named by its path: not the shipped file
    checked = CliRunner().invoke(cli, ["catalog", "validate"])
    assert checked.exit_code == 0 and checked.stdout.startswith(f"ok: catalog folder {INVENTED} ({CATALOG_DIR_ENV}): ")
    shown = subprocess.run([sys.executable, "-m", "ftbroker.cli", "catalog", "show", "--kind", "instances", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert {row["cloud"] for row in json.loads(shown.stdout)["instances"]} == {"alpha", "beta", "gamma"}

    for folder, message in ((tmp_path / "missing", f"{CATALOG_DIR_ENV}={tmp_path / 'missing'}: not a folder"),
                            (tmp_path, f"{tmp_path / 'gpus.csv'}: cannot read catalog file")):
        monkeypatch.setenv(CATALOG_DIR_ENV, str(folder))
        refused = CliRunner().invoke(cli, ["catalog", "show"])
        assert refused.exit_code == 2 and message in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("text, expected", [
    ('[[gpu]]\nname = "X1"\nmemory_gib = "lots"\nbandwidth_gbps = 100\nsupports_bf16 = true\nsource = "s"\n'
     'as_of = 2026-01-01\n', r"bad\.toml:3: memory_gib: expected a number"),
    ('[[gpu]]\nname = "X1"\nmemory_gib = 4000\nbandwidth_gbps = 100\nsupports_bf16 = true\nsource = "s"\n'
     'as_of = 2026-01-01\n', r"bad\.toml:3: memory_gib: 4000 is outside the plausible range 4\.\.1024"),
    ('[[offer]]\nprovider = "acme"\nmodel = "m"\nmethod = "lora"\nobjective = "sft"\n'
     'formats = ["chat"]\ntokenizer = "cl100k_base"\nsource = "s"\nas_of = 2026-01-01\n',
     r"bad\.toml:1: usd_per_m_tokens: no price"),
    ('[[offer]]\nprovider = "acme"\nmodel = "m"\nmethod = "qlora"\nobjective = "sft"\n'
     'usd_per_m_tokens = 1\nsource = "s"\nas_of = 2026-01-01\n', r"bad\.toml:4: method: 'qlora' is not one of"),
    ('[[offer]]\nprovider = "openai"\nmodel = "gpt-4o-mini-2024-07-18"\nmethod = "sft"\nobjective = "sft"\n'
     'usd_per_m_tokens = 2\n', r"bad\.toml:1: source: an override row must give its own source and as_of"),
    ('[[instance]]\ncloud = "x"\ninstance_type = "y"\ngpu = "NoSuchGPU"\ngpu_count = 1\n'
     'on_demand_usd_per_hour = 1\nregion = "r"\nsource = "s"\nas_of = 2026-01-01\n',
     r"bad\.toml:1: gpu: unknown GPU 'NoSuchGPU'"),
    ('[[model]]\nname = "a"\nsource = "s"\nas_of = 2026-13-01\n', r"bad\.toml: not valid TOML"),
    ('[[gpu]]\nname = "X1"\nmemory_gib = 8\nbandwidth_gbps = 100\nsupports_bf16 = true\nsource = "s"\n'
     'as_of = 2026-01-01\nspeed = 3\n', r"bad\.toml:8: speed: unknown field"),
    ('[[gpu]]\nname = "X1"\nmemory_gib = 8\nbandwidth_gbps = 100\nsupports_bf16 = true\nsource = "s"\n'
     'as_of = 2026-01-01\n[[gpu]]\nname = "x1"\nmemory_gib = 8\nbandwidth_gbps = 100\nsupports_bf16 = true\n'
     'source = "s"\nas_of = 2026-01-01\n', r"bad\.toml:8: duplicate gpu 'x1' \(first at line 1\)"),
    ('[weird]\n', r"unknown table\(s\) weird"),
])
def test_bad_catalog_file_names_file_line_and_field(tmp_path, text, expected):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(CatalogError, match=expected) as info:
        load_catalog([bad])
    assert info.value.exit_code == 2


def test_bad_csv_row_names_its_line(tmp_path):
    bad = tmp_path / "gpus.csv"
    bad.write_text("name,aliases,memory_gib,bf16_tflops,fp16_tflops,bandwidth_gbps,tdp_w,supports_bf16,source,as_of,note\n"
                   "Z1,,16,,,300,,maybe,src,2026-01-01,\n")
    with pytest.raises(CatalogError, match=r"gpus\.csv:2: supports_bf16: expected true or false"):
        load_catalog([bad])


def test_tokenizer_families_are_ones_the_token_counters_know(shipped):
    used = {m.tokenizer_family for m in shipped.models.values()} | {o.tokenizer_family for o in shipped.managed}
    assert used - {""} <= set(FAMILIES)
