"""The local backend's pre-flight: the JobSpec -> trainer config mapping, the estimate of that very config, the fit
check and its suggestions, the GPU planned for (declared or found, else the CPU), the electricity budget, and the
measured figures recorded beside the estimate. Pure, except the CLI refusals at the end."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from click.testing import CliRunner
from jobsupport import write_chat

from ftbroker.backends.base import Environment, Gpu, Verdict
from ftbroker.backends.local.backend import LocalBackend, LocalOptions
from ftbroker.backends.local.prepare import train_config
from ftbroker.backends.local.results import measured_resources
from ftbroker.backends.local.config import TrainConfig
from ftbroker.backends.local.preflight import CPU_NOTE, LocalGpus, local_gpus, local_quote
from ftbroker.broker import check_guards
from ftbroker.cli import cli
from ftbroker.data.report import Summary, TokenStats
from ftbroker.errors import BudgetExceededError, UnknownNameError
from ftbroker.estimate import summarize
from ftbroker.ledger import Ledger
from ftbroker.pricing.catalog import load_catalog
from ftbroker.spec import JobSpec

# 1,000 chat examples of 512 to 2,048 tokens
STATS = TokenStats(tokenizer="test", exact=True, total=1_126_400, trained=300_000,
                   per_example=Summary(512, 1126.4, 1024, 2048, 2048), length_counts={512: 300, 1024: 400, 2048: 300},
                   limit=2048, over_limit=0)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def config(model="Llama-3.1-8B", method="lora", **hyperparameters) -> TrainConfig:
    return train_config(JobSpec(dataset="d.jsonl", model=model, method=method, hyperparameters=hyperparameters),
                        LocalOptions())


def on(gpu, count=1) -> LocalGpus:
    return LocalGpus(gpu, count, "--gpu")


def test_unset_settings_are_the_trainers_defaults_and_set_ones_map_to_its_fields():
    bare = train_config(JobSpec(dataset="/d.jsonl", model="/m"), LocalOptions())
    assert bare == TrainConfig(model="/m", dataset="/d.jsonl")
    spec = JobSpec(dataset="/d.jsonl", validation="/v.jsonl", model="/m", method="qlora",
                   hyperparameters={"epochs": 2, "learning_rate": 1e-4, "micro_batch_size": 2,
                                    "gradient_accumulation_steps": 8, "max_seq_len": 1024, "packing": True,
                                    "gradient_checkpointing": False, "seed": 7, "early_stopping_patience": 3},
                   lora={"r": 64, "alpha": 128, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    mapped = train_config(spec, LocalOptions(merge=True, gpus=0)).model_copy(update={"job_id": "ftb-x"})
    assert mapped.model_dump(exclude_defaults=True) == {
        "job_id": "ftb-x", "model": "/m", "dataset": "/d.jsonl", "validation_dataset": "/v.jsonl", "method": "qlora",
        "epochs": 2, "learning_rate": 1e-4, "micro_batch_size": 2, "gradient_accumulation_steps": 8,
        "max_seq_len": 1024, "packing": True, "gradient_checkpointing": False, "seed": 7,
        "early_stopping_patience": 3, "merge": True, "device": "cpu",
        "lora": {"r": 64, "alpha": 128, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}


@pytest.mark.parametrize("method, precision", [("full", "amp"), ("lora", "bf16"), ("qlora", "bf16")])
def test_the_estimate_describes_what_the_trainer_runs(method, precision):
    cfg = config(method=method, micro_batch_size=2, gradient_accumulation_steps=4, max_seq_len=4096)
    setup = cfg.training_setup(n_gpus=1, seq_len=2048)
    assert (setup.method, setup.precision, setup.optimizer) == (method, precision, "adamw")
    assert (setup.micro_batch, setup.seq_len, setup.grad_accumulation) == (2, 2048, 4)
    assert setup.grad_checkpointing is cfg.gradient_checkpointing is True  # the trainer's default
    assert (setup.lora_r, setup.targets, setup.lora_dropout) == (16, ("all-linear",), 0.05)
    assert cfg.training_setup(n_gpus=4, seq_len=2048).sharding == ("fsdp" if method == "full" else "ddp")
    assert cfg.training_setup(n_gpus=4, seq_len=2048, distributed="deepspeed").sharding == "zero3"
    assert cfg.training_setup(n_gpus=1, seq_len=2048, distributed="fsdp").sharding == "none"  # no accelerate


def test_a_job_that_fits_is_priced_with_its_resources(catalog):
    gpu = catalog.gpu("H100")
    cfg = config(micro_batch_size=2)
    quote = local_quote(cfg, catalog.model("Llama-3.1-8B"), on(gpu), STATS)
    assert quote.verdict is Verdict.OK and quote.reason is None and quote.hardware == f"1x {gpu.name}"
    # the very setup the trainer runs: unpacked, so a micro-batch is as long as the longest example (2,048)
    expected = summarize(catalog.model("Llama-3.1-8B"), cfg.training_setup(n_gpus=1, seq_len=2048), gpu)
    assert quote.peak_vram_gib == expected.memory.total
    assert quote.resources["estimated_peak_vram_gib"] == round(expected.memory.total, 3)
    assert quote.resources["estimated_allocated_gib"] == round(expected.memory.allocated, 3)
    # the trainer measures non-padding tokens/s, so the estimate is of the same: below the processed rate
    assert 0 < quote.resources["estimated_tokens_per_s"] < expected.throughput.tokens_per_s.expected
    assert quote.hours == quote.resources["estimated_hours"] > 0
    assert Decimal("0") < quote.cost_usd <= quote.cost_high_usd and quote.budget_cost_usd == quote.cost_high_usd
    assert quote.breakdown["electricity"]["power"].startswith("1 x 700 W TDP")
    assert set(quote.breakdown["time_s"]) >= {"training", "model load", "checkpoints", "evaluation"}


def _flags(tip: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+)(?: (\w+))?", tip))


@pytest.mark.parametrize("model, method, gpu, hp", [
    ("Llama-3.1-8B", "lora", "RTX 4090", {"micro_batch_size": 8}),
    ("Llama-3.1-8B", "lora", "RTX 4090", {"micro_batch_size": 8, "gradient_checkpointing": False}),
    ("Qwen2.5-7B", "full", "A100 80GB", {"gradient_checkpointing": False}),
    ("Llama-3.1-8B", "full", "L4", {"micro_batch_size": 1}),
])
def test_what_does_not_fit_is_refused_with_changes_that_do(catalog, model, method, gpu, hp):
    gpu, arch = catalog.gpu(gpu), catalog.model(model)
    cfg = config(model, method, **hp)
    quote = local_quote(cfg, arch, on(gpu), STATS)
    assert quote.verdict is Verdict.DOES_NOT_FIT
    assert quote.reason.startswith(f"needs about {quote.peak_vram_gib:.1f} GiB per GPU")
    assert quote.reason.endswith("or --force to run anyway")
    tips = quote.reason.split("; try ")[1].split("; or ")[:-1]
    assert tips
    for tip in tips:  # each suggestion, applied, is estimated to fit
        flags = _flags(tip)
        changed = JobSpec(dataset="d.jsonl", model=model, method=flags.get("method", method), hyperparameters={
            **hp, **({"gradient_checkpointing": True} if "grad-checkpointing" in flags else {}),
            **({"micro_batch_size": int(flags["micro-batch"]), "gradient_accumulation_steps": int(flags["grad-accum"])}
               if "micro-batch" in flags else {}),
            **({"max_seq_len": int(flags["max-seq-len"])} if "max-seq-len" in flags else {})})
        again = local_quote(train_config(changed, LocalOptions()), arch, on(gpu), STATS)
        assert again.verdict is Verdict.OK, (tip, again.reason)
        assert f"{again.peak_vram_gib:.1f} GiB" in tip
        if "grad-accum" in flags:  # the effective batch is kept
            assert int(flags["micro-batch"]) * int(flags["grad-accum"]) >= hp.get("micro_batch_size", 4)


def test_when_nothing_fits_it_says_so(catalog):
    quote = local_quote(config("Llama-3.1-405B"), catalog.model("Llama-3.1-405B"), on(catalog.gpu("T4")), STATS)
    assert "a GPU with more memory or more GPUs (even QLoRA with gradient checkpointing at micro-batch 1 needs" \
        in quote.reason


def test_without_a_gpu_the_cpu_trains_and_no_budget_can_be_checked():
    quote = local_quote(config(), None, None, STATS)
    assert quote.verdict is Verdict.OK and quote.hardware == "CPU" and CPU_NOTE in quote.warnings
    assert quote.hours is None and quote.cost_usd is None and quote.peak_vram_gib is None
    with pytest.raises(BudgetExceededError, match="cannot be estimated"):
        check_guards(quote, JobSpec(dataset="d", model="m", budget={"max_cost_usd": 5}))


def test_over_budget_compares_the_high_end_of_the_electricity(catalog):
    quote = local_quote(config(micro_batch_size=1), catalog.model("Llama-3.1-8B"), on(catalog.gpu("RTX 4090")),
                        STATS)
    assert quote.cost_usd < quote.cost_high_usd
    check_guards(quote, JobSpec(dataset="d", model="m", budget={"max_cost_usd": quote.cost_high_usd}))
    with pytest.raises(BudgetExceededError, match=rf"\${quote.cost_usd}-\${quote.cost_high_usd} is over"):
        check_guards(quote, JobSpec(dataset="d", model="m", budget={"max_cost_usd": quote.cost_usd}))


def test_unknown_lengths_assume_max_seq_len_and_give_no_time(catalog):
    quote = local_quote(config(max_seq_len=1024), catalog.model("Llama-3.1-8B"), on(catalog.gpu("H100")), None)
    assert quote.breakdown["estimate"]["setup"]["seq_len"] == 1024
    assert quote.hours is None and "token lengths are unknown" in quote.warnings[0]
    cut = local_quote(config(max_seq_len=1024), catalog.model("Llama-3.1-8B"), on(catalog.gpu("H100")),
                      replace(STATS, limit=1024, over_limit=300))
    assert ("300 example(s) longer than 1,024 tokens are cut to it (max_seq_len 1024; --max-seq-len); "
            "longest 2,048") in cut.warnings


def _env(**kw):
    return Environment(today=date(2026, 12, 1), load_catalog=load_catalog, **kw)


def test_the_gpus_planned_for_declared_found_or_none(tmp_path):
    spec = JobSpec(dataset="d", model="Qwen2.5-0.5B")
    report = type("Report", (), {"tokens": {"hf:x": STATS}})()
    backend = LocalBackend(LocalOptions(), home=tmp_path)
    assert backend.quote(spec, report, _env()).hardware == "CPU"
    assert backend.quote(spec, report, _env(declared_gpu="A100 80GB:2")).hardware == "2x A100-SXM-80GB"
    declared = LocalBackend(LocalOptions(gpu="L4"), home=tmp_path)  # the job's option wins over FTBROKER_GPU
    assert declared.quote(spec, report, _env(declared_gpu="H100")).hardware == "1x L4"
    found = _env(gpus=(Gpu("NVIDIA H100 80GB HBM3", 79.65),) * 4)
    quote = LocalBackend(LocalOptions(gpus=2), home=tmp_path).quote(spec, report, found)
    assert quote.hardware == "2x H100-SXM" and quote.hours  # the catalog's row, with the card's real memory
    assert quote.breakdown["estimate"]["gpu"] == {"name": "H100-SXM", "count": 2, "memory_gib": 79.65}
    odd = backend.quote(spec, report, _env(gpus=(Gpu("NVIDIA Mystery 12GB", 12.0),)))
    assert odd.hardware == "1x NVIDIA Mystery 12GB" and odd.peak_vram_gib and odd.hours is None
    assert "no TFLOPS figure for NVIDIA Mystery 12GB" in " ".join(odd.warnings)
    with pytest.raises(UnknownNameError, match="GPU"):
        backend.quote(spec, report, _env(declared_gpu="RTX 9999"))
    hub = backend.quote(JobSpec(dataset="d", model="someone/unknown-7b"), report, _env(declared_gpu="H100"))
    assert hub.verdict is Verdict.OK and hub.peak_vram_gib is None
    assert hub.warnings[0].startswith("no memory, time or cost estimate: unknown model 'someone/unknown-7b'")


def test_one_rule_resolves_the_gpus_plan_and_run_plan_for(catalog):
    today = date(2026, 12, 1)
    assert local_gpus(catalog, (), None, today=today) is None  # the CPU
    mixed = (Gpu("NVIDIA H100 80GB HBM3", 79.65), Gpu("NVIDIA L4", 22.5))
    found = local_gpus(catalog, mixed, today=today)  # every card, planned as the smallest, with its real memory
    assert (found.gpu.name, found.gpu.memory_gib, found.count, found.source, found.hardware) == (
        "L4", 22.5, 2, "detected", "2x L4")
    declared = local_gpus(catalog, mixed, "h100:8", declared_by="FTBROKER_GPU", use=2, today=today)
    assert declared == LocalGpus(catalog.gpu("H100"), 2, "FTBROKER_GPU")  # the gpus option caps a declaration too
    assert local_gpus(catalog, mixed, use=0, today=today) is None


def test_measured_figures_are_named_by_what_was_measured():
    cuda = {"raw": {"measured": {"device": "cuda", "peak_memory_bytes": 3 * 2**30, "cuda_max_reserved_bytes": 2**32,
                                 "tokens_per_s": 1234.5, "train_seconds": 60.0, "gpu": "NVIDIA H200"}}}
    assert measured_resources(cuda) == {"measured_peak_vram_allocated_gib": 3.0, "measured_peak_vram_reserved_gib": 4.0,
                                        "measured_tokens_per_s": 1234.5, "measured_train_seconds": 60.0,
                                        "measured_gpu": "NVIDIA H200"}
    cpu = {"raw": {"measured": {"device": "cpu", "peak_memory_bytes": 2**29, "tokens_per_s": None}}}
    assert measured_resources(cpu) == {"measured_peak_rss_gib": 0.5}
    assert measured_resources({}) == {}


# --- through the CLI: refusals before anything is recorded ------------------------------------------------------

@pytest.fixture
def data(tmp_path, monkeypatch):
    return write_chat(tmp_path / "data.jsonl")


def ftb(*args, ok):
    done = CliRunner().invoke(cli, [str(a) for a in args])
    assert done.exit_code == ok, (done.exit_code, done.output, done.exception)
    assert "Traceback" not in done.output
    return done


def test_a_spec_that_does_not_fit_is_exit_3_with_what_to_change(data, monkeypatch):
    out = ftb("run", data, "--model", "Llama-3.1-70B", "--method", "full", "--gpu", "RTX 4090", "--yes", ok=3)
    assert "does not fit: needs about" in out.stderr and "RTX-4090 has 24 GiB" in out.stderr
    assert "--force" in out.stderr
    monkeypatch.setenv("FTBROKER_GPU", "T4")
    out = ftb("run", data, "--model", "Llama-3.1-8B", "--micro-batch", "1", "--yes", ok=3)
    assert "T4 has 16 GiB; try --method qlora (" in out.stderr
    assert Ledger().list() == []


def test_bad_gpu_declarations_and_an_uncheckable_budget(data, monkeypatch):
    assert "unknown GPU 'RTX 9999'" in ftb("run", data, "--model", "Llama-3.1-8B", "--gpu", "RTX 9999", "--yes",
                                          ok=2).stderr
    for bad in ("T4:0", "H100:x"):  # the one NAME[:COUNT] parser of every --gpu (ftbroker.estimate.parse_gpu_count)
        assert f"backend_options.gpu: GPU '{bad}': COUNT must be a positive integer (NAME[:COUNT])" in ftb(
            "run", data, "--model", "m", "--gpu", bad, "--yes", ok=2).stderr
    out = ftb("run", data, "--model", "Llama-3.1-8B", "--max-cost", "5", "--yes", ok=3)  # no GPU here
    assert "cannot be estimated (no GPU found: the trainer runs on the CPU" in out.stderr
    assert "so it cannot be held to --max-cost $5" in out.stderr
    assert Ledger().list() == []
