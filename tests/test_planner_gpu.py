"""GPU routes (``ftbroker.backends.gpu_routes``): local (the local backend's) and cloud (a cloud backend's, or the
stand-in for clouds none rents yet), priced by the estimator with the dataset's real lengths."""

from __future__ import annotations

import dataclasses

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from ftbroker import planner
from ftbroker.backends import gpu_routes
from ftbroker.backends.gpu_routes import UnclaimedClouds
from ftbroker.backends.local.backend import LocalBackend, LocalOptions
from ftbroker.backends.local.prepare import train_config
from ftbroker.backends.local.config import TrainConfig
from ftbroker.estimate.calibration import default_calibration
from ftbroker.estimate.compute import Overheads, Range, training_time
from ftbroker.estimate.cost import cloud_cost
from ftbroker.estimate.memory import estimate_memory, max_seq_len
from ftbroker.estimate.setup import TrainingSetup
from ftbroker.pricing.catalog import Catalog
from ftbroker.routes import PLAN_EPOCHS, Hardware, ModelRequest, PlanOptions, RouteContext, model_tokenizer
from ftbroker.spec import JobSpec
from ftbroker.vocabulary import METHODS
from plan_reports import report, stats

TODAY = date(2026, 11, 28)
pytestmark = pytest.mark.usefixtures("frozen_catalog")  # the backends' own catalog reads too


@pytest.fixture(scope="module")
def cat(frozen_catalog):
    """The frozen catalog (tests/fixtures/frozen_catalog): the prices these rules are checked on are its rows'."""
    return frozen_catalog


@pytest.fixture(scope="module")
def few(cat):
    """The frozen catalog with a handful of instances (a test of one rule need not price 160)."""
    keep = {("aws", "g6e.xlarge"), ("aws", "g6e.4xlarge"), ("aws", "p5.48xlarge"), ("gcp", "a3-highgpu-1g"),
            ("cudo", "intel-ice-lake-a100-pci_1x2v4gb"), ("lambda", "gpu_1x_a10")}
    untimed = dataclasses.replace(cat.gpus["RTX-3090"], name="Untimed-24GB", aliases=(), bf16_tflops=None,
                                  fp16_tflops=None)  # a card whose maker publishes no tensor TFLOPS
    return Catalog(models=cat.models, gpus={**cat.gpus, untimed.name: untimed},
                   instances=[i for i in cat.instances if (i.cloud, i.instance_type) in keep],
                   managed=cat.managed, files=cat.files, version=cat.version)


def gpu_sources(cat):
    """The GPU route sources: the local backend, and the stand-in for every cloud (no backend rents one yet)."""
    return [LocalBackend, UnclaimedClouds(tuple(dict.fromkeys(i.cloud for i in cat.instances)))]


def gpu_context(cat, lengths, *, models=("Llama-3.1-8B",), fmt="chat", validation_lengths=None, sources=None,
                **options):
    if isinstance(options.get("gpu"), str):
        options["gpu"] = cat.gpus[options["gpu"]]
    opts = PlanOptions(models=tuple(ModelRequest(n, cat.models[n]) for n in models), **options)
    needs = planner.token_needs(sources or gpu_sources(cat), cat, opts)
    keys = {need.spec: f"k{i}" for i, need in enumerate(needs)}
    counted = {k: stats(lengths, "llama3 estimate", exact=False) for k in keys.values()}
    validation = ({k: stats(validation_lengths, "llama3 estimate", exact=False) for k in keys.values()}
                  if validation_lengths else None)
    return RouteContext(report(counted, fmt=fmt), validation and report(validation), cat, opts, keys, TODAY)


def gpu_plan(cat, lengths, **kw):
    return planner.build_plan(gpu_context(cat, lengths, **kw), gpu_sources(cat))


def only(plan, **attrs):
    found = [r for r in plan.routes if all(getattr(r, k) == v for k, v in attrs.items())]
    assert len(found) == 1, [r.id for r in found]
    return found[0]


# ---------------------------------------------------------------------------------------------- local

def test_local_qlora_on_a_4090_hand_checked(few):
    arch, gpu, cal = few.models["Llama-3.1-8B"], few.gpus["RTX-4090"], default_calibration()
    plan = gpu_plan(few, {500: 1000}, method="qlora", gpu="RTX-4090", gpu_source="--gpu")
    r = only(plan, kind="local")
    assert r.id == "local:Llama-3.1-8B:qlora:RTX-4090x1" and r.feasible and r.epochs == 3
    # the local trainer's defaults: micro-batch 4, gradient checkpointing, LoRA r 16 and dropout 0.05, the base in bf16
    setup = TrainingSetup("qlora", micro_batch=4, seq_len=500, lora_r=16, lora_dropout=0.05, precision="bf16",
                          grad_checkpointing=True)
    assert r.breakdown["setup"]["micro_batch"] == 4 and r.breakdown["setup"]["grad_checkpointing"]
    assert r.vram_gib == round(estimate_memory(arch, setup, cal).total, 2) <= gpu.memory_gib
    # 1,000 examples of 500 tokens: 10% held out, so 450,000 trained and 50,000 evaluated per pass (no padding:
    # every example has the same length); 3 epochs and 4 evaluations (one before training)
    tokens = r.breakdown["tokens"]
    assert (tokens["real_per_epoch"], tokens["processed_per_epoch"], tokens["eval_processed_per_pass"]) == (
        450_000, 450_000, 50_000)
    expected = training_time(arch, gpu, setup, real_tokens=450_000, processed_tokens=450_000, epochs=3,
                             context=500, overheads=Overheads(checkpoints=3, eval_fraction=50_000 * 4 / 1_350_000),
                             calibration=cal)
    assert r.hours == round(expected.hours.expected, 3)
    # electricity: hours x 450 W TDP x 85% x $0.1545/kWh
    assert float(r.cost_usd) == pytest.approx(expected.hours.expected * 0.450 * 0.85 * 0.1545, abs=5e-5)
    assert r.breakdown["cost_usd"]["low"] < float(r.cost_usd) < r.breakdown["cost_usd"]["high"]
    assert r.price_as_of == date(2024, 1, 31) and r.stale and "EIA" in r.price_source


def test_a_micro_batch_the_card_cannot_hold_is_lowered_keeping_the_effective_batch(few):
    arch, cal = few.models["Llama-3.1-8B"], default_calibration()
    at = {b: TrainingSetup("lora", micro_batch=b, grad_accumulation=-(-4 // b), seq_len=1024, lora_dropout=0.05)
          for b in (1, 2, 3, 4)}
    peak = {b: estimate_memory(arch, setup, cal).total for b, setup in at.items()}
    card = replace(few.gpus["RTX-4090"], memory_gib=(peak[1] + peak[4]) / 2)  # holds micro-batch 1, not 4
    r = only(gpu_plan(few, {1024: 300}, method="lora", gpu=card), kind="local")
    chosen = max(b for b in at if peak[b] <= card.memory_gib)
    s = r.breakdown["setup"]
    assert r.feasible and (s["micro_batch"], s["grad_accumulation"]) == (chosen, at[chosen].grad_accumulation)
    assert r.vram_gib == round(peak[chosen], 2)
    assert (f"micro-batch 4 does not fit: run with --micro-batch {chosen} --grad-accum "
            f"{at[chosen].grad_accumulation} (the same effective batch)") in r.notes


def test_full_fine_tuning_of_8b_does_not_fit_a_24gb_card(few):
    r = only(gpu_plan(few, {500: 100}, method="full", gpu="RTX-4090"), kind="local")
    assert not r.feasible and r.hours is None and r.cost_usd is None
    assert r.reason.startswith("does not fit at micro-batch 4 or any smaller with checkpointing and 500 tokens: needs about ")
    needed = float(re.search(r"([0-9.]+) GiB per GPU", r.reason)[1])
    assert needed == pytest.approx(r.vram_gib, abs=0.06) and "RTX-4090 has 24 GiB" in r.reason
    assert "alone do not fit" in r.reason  # fp32 weights + AdamW states of 8B parameters: ~120 GiB
    assert r.breakdown["setup"]["precision"] == "amp"  # the local trainer loads fp32 weights for full training


def test_a_sequence_too_long_for_the_card_names_the_longest_that_fits(few):
    arch, gpu = few.models["Llama-3.1-8B"], few.gpus["L4"]
    r = only(gpu_plan(few, {100_000: 1, 500: 50}, method="qlora", gpu="L4", max_seq_len=131_072), kind="local")
    # micro-batch 1 keeps the trainer's effective batch (4) by accumulating
    longest = max_seq_len(arch, gpu, TrainingSetup("qlora", seq_len=100_000, lora_dropout=0.05, grad_accumulation=4),
                          calibration=default_calibration())
    assert 0 < longest < 100_000
    assert not r.feasible and r.reason.endswith(f"the longest sequence that fits at micro-batch 1 is {longest:,} tokens")


def test_examples_over_the_context_rule_the_model_out_unless_cut(few):
    plan = gpu_plan(few, {40_000: 2, 500: 100}, models=("Qwen2.5-7B",), method="qlora", gpu="H100-SXM",
                    max_seq_len=65_536)
    r = only(plan, kind="local")
    assert not r.feasible
    assert r.reason == ("2 example(s) exceed the 32,768-token context of Qwen2.5-7B (longest 40,000): "
                        "cut them with --max-seq-len")
    assert all(not x.feasible for x in plan.routes)
    cut = only(gpu_plan(few, {40_000: 2, 500: 100}, models=("Qwen2.5-7B",), method="qlora", gpu="H100-SXM"),
               kind="local")
    assert cut.feasible and cut.breakdown["setup"]["seq_len"] == 2048
    assert "2 example(s) longer than 2,048 tokens are cut to it (the local trainer's default); " \
           "longest 40,000" in cut.notes
    assert cut.breakdown["tokens"]["real_per_epoch"] == round((2 * 2048 + 100 * 500) * 0.9)


def test_a_gpu_without_tflops_has_unknown_time_and_cost(few):
    r = only(gpu_plan(few, {500: 100}, method="qlora", gpu="Untimed-24GB"), kind="local")
    assert r.feasible and r.vram_gib and r.hours is None and r.cost_usd is None
    assert "time and cost unknown: the catalog has no TFLOPS figure for Untimed-24GB" in r.notes


def test_a_gpu_without_tdp_has_unknown_electricity(few):
    r = only(gpu_plan(few, {500: 100}, method="qlora", gpu="A10"), kind="local")
    assert r.feasible and r.hours and r.cost_usd is None
    assert "electricity cost unknown: the catalog has no TDP for A10" in r.notes


def test_several_local_gpus_shard_full_fine_tuning(few):
    r = only(gpu_plan(few, {500: 100}, method="full", gpu="H100-SXM", gpu_count=8), kind="local")
    assert r.feasible and r.hardware == Hardware("H100-SXM", 8)
    assert r.breakdown["setup"]["sharding"] == "fsdp" and r.vram_gib < 80


# ---------------------------------------------------------------------------------------------- cloud

def test_cloud_on_demand_and_spot_costs(few):
    plan = gpu_plan(few, {2000: 20_000}, method="qlora")  # a few hours, so that reclaims show
    on_demand = only(plan, instance_type="g6e.xlarge", market="on-demand")
    spot = only(plan, instance_type="g6e.xlarge", market="spot")
    assert on_demand.id == "aws:Llama-3.1-8B:qlora:g6e.xlarge:on-demand:L40Sx1"
    row = next(i for i in few.instances if i.instance_type == "g6e.xlarge")  # its prices: a refresh changes them
    hours = on_demand.breakdown["hours"]
    # the on-demand price x the hours (rounded to 3.6 s in the JSON)
    assert float(on_demand.cost_usd) == pytest.approx(hours["expected"] * float(row.on_demand_usd_per_hour), rel=0.01)
    assert {"start-up", "model download"} <= set(on_demand.breakdown["hours_by_part"])
    # spot: the same work at the spot price plus the preemption allowance (restarts and lost work)
    assert spot.hours > on_demand.hours
    restart = sum(on_demand.breakdown["hours_by_part"][p] for p in ("start-up", "model download", "model load"))
    checkpoint = on_demand.breakdown["hours_by_part"]["checkpoints"] / 3
    expected = cloud_cost(Range(**hours), row.spot_usd_per_hour, spot=True, restart_hours=Range(restart, restart, restart),
                          checkpoint_hours=checkpoint)
    assert float(spot.cost_usd) == pytest.approx(float(expected.usd.expected), rel=0.02)
    assert spot.breakdown["hours_with_reclaims"]["expected"] == spot.hours
    assert spot.region == spot.breakdown["region"] == (row.spot_region or row.region)
    assert on_demand.region == row.region
    assert on_demand.price_as_of == row.as_of and on_demand.price_source == row.source


def test_cheapest_instance_per_gpu_type_and_cloud_unless_all(few):
    every = gpu_plan(few, {500: 200}, method="lora", all_instances=True).routes
    cheapest = gpu_plan(few, {500: 200}, method="lora").routes
    assert len(cheapest) < len(every)
    groups = {}
    for r in every:
        groups.setdefault((r.cloud, r.hardware.gpu, r.market), []).append(r)
    assert {(r.cloud, r.hardware.gpu, r.market) for r in cheapest} == set(groups)
    for r in cheapest:
        group = groups[(r.cloud, r.hardware.gpu, r.market)]
        priced = [g.cost_usd for g in group if g.feasible and g.cost_usd is not None]
        assert r.cost_usd == (min(priced) if priced else r.cost_usd)
    l40s = [r for r in cheapest if r.hardware.gpu == "L40S" and r.market == "on-demand"]
    assert [r.instance_type for r in l40s] == ["g6e.xlarge"]  # not the dearer g6e.4xlarge


def test_a_host_too_small_to_load_the_model_is_out(few):
    plan = gpu_plan(few, {500: 100}, method="qlora", all_instances=True)
    r = only(plan, instance_type="intel-ice-lake-a100-pci_1x2v4gb")
    assert not r.feasible and r.reason.startswith("4 GiB of host RAM is less than the model's 15 GiB")


def test_gcp_prices_are_host_plus_gpu_as_the_catalog_sums_them(few):
    r = only(gpu_plan(few, {500: 100}, method="qlora"), instance_type="a3-highgpu-1g", market="on-demand")
    assert r.breakdown["usd_per_hour"] == Decimal("5.38327")
    assert "GCP price = host VM + GPUs" in " ".join(r.notes)


# ---------------------------------------------------------------------------------------------- inputs, notes

def test_validation_file_replaces_the_held_out_share(few):
    r = only(gpu_plan(few, {500: 1000}, validation_lengths={400: 50}, method="qlora", gpu="H100-SXM"), kind="local")
    assert r.breakdown["tokens"]["real_per_epoch"] == 500_000
    assert r.breakdown["tokens"]["eval_processed_per_pass"] == 20_000
    assert "evaluation on the validation file" in r.breakdown["assumptions"]


def test_epochs_are_the_plans_and_the_flag_wins(few):
    plan = gpu_plan(few, {500: 100}, method="qlora", gpu="H100-SXM")
    local = only(plan, kind="local")
    assert local.epochs == plan.options.epochs == TrainConfig.model_fields["epochs"].default == PLAN_EPOCHS.target
    assert local.job["hyperparameters"]["epochs"] == 3  # run --route trains what the plan priced
    assert local.breakdown["epochs_rule"].startswith("OpenAI's auto rule for 100 examples")
    assert only(gpu_plan(few, {500: 100}, method="qlora", gpu="H100-SXM", epochs=1), kind="local").epochs == 1
    small = only(gpu_plan(few, {500: 20}, method="qlora", gpu="H100-SXM"), kind="local")
    assert small.epochs == 5  # 100 example passes over 20 examples, as OpenAI's rule has it


def test_methods_and_default_models(few):
    plan = gpu_plan(few, {500: 100}, models=(), gpu="H100-SXM")
    assert {(r.model, r.method) for r in plan.routes if r.kind == "local"} == {
        (m, method) for m in gpu_routes.DEFAULT_GPU_MODELS for method in METHODS}
    assert plan.notes[0].startswith("GPU routes: Llama-3.1-8B, Qwen2.5-7B (the default models)")
    specs = [n.spec for n in gpu_routes.token_needs(few, PlanOptions(models=(ModelRequest("gpt-4o-mini"),)))]
    qwen = model_tokenizer(few.models["Qwen2.5-7B"], PlanOptions())
    assert qwen in [n.spec for n in gpu_routes.token_needs(few, PlanOptions())]
    assert qwen not in specs  # a closed model only


def test_notes_say_where_there_is_no_local_gpu_and_no_gpu_route(few):
    plan = gpu_plan(few, {500: 100}, method="qlora", gpu_note="local GPU: none detected")
    assert "local GPU: none detected" in plan.notes and not [r for r in plan.routes if r.kind == "local"]
    dpo = gpu_plan(few, {500: 100}, method="qlora", gpu="H100-SXM", fmt="preference")
    assert dpo.routes == ()
    assert dpo.notes == ("no GPU routes: the local trainer does supervised fine-tuning only (no DPO yet)",)
    closed = gpu_plan(few, {500: 100}, models=())
    assert closed.routes  # the default models
    opts = PlanOptions(models=(ModelRequest("gpt-4o-mini"),))
    assert gpu_routes.gpu_models(few, opts) == []


def test_routes_run_the_local_trainers_own_defaults(few):
    """The planner keeps no copy of the trainer's defaults: a route runs TrainConfig's, through its one mapping."""
    r = only(gpu_plan(few, {500: 1000}, method="lora", gpu="H100-SXM"), kind="local")
    trainer = TrainConfig(model="m", dataset="d")
    setup = trainer.training_setup(seq_len=500)
    assert r.breakdown["setup"] == {
        "micro_batch": setup.micro_batch, "grad_accumulation": setup.grad_accumulation, "seq_len": 500,
        "grad_checkpointing": trainer.gradient_checkpointing, "precision": setup.precision, "optimizer": "adamw",
        "n_gpus": 1, "sharding": "none", "lora_r": trainer.lora.r, "lora_dropout": trainer.lora.dropout,
        "targets": sorted(setup.lora_modules)}
    assert r.epochs == trainer.epochs
    assert r.breakdown["tokens"]["real_per_epoch"] == round(500_000 * (1 - trainer.eval_fraction))
    assert r.breakdown["tokens"]["eval_passes"] == trainer.epochs + trainer.eval_at_start


# ---------------------------------------------------------------------------------------------- who runs a route

def test_a_cloud_no_backend_rents_is_priced_and_marked_not_runnable(few):
    r = only(gpu_plan(few, {500: 100}, method="qlora"), instance_type="g6e.xlarge", market="spot")
    assert (r.backend, r.job, r.runnable, r.cloud) == (None, None, False, "aws")
    assert r.not_runnable == ("no ftbroker backend rents aws instances yet: on the instance, ftbroker's local "
                              "backend runs it")
    assert r.feasible and r.cost_usd  # priced all the same
    assert "cloud GPUs: the cheapest instance per GPU type and cloud, on-demand and spot" in \
        gpu_plan(few, {500: 100}, method="qlora").notes


class Rents:
    """A cloud backend as it contributes its routes: its clouds' catalog rows, through ``cloud_gpu_routes``."""

    name = "rentals"

    @classmethod
    def token_needs(cls, catalog, options):
        return gpu_routes.token_needs(catalog, options)

    @classmethod
    def routes(cls, context):
        mine = [i for i in context.catalog.instances if i.cloud == "aws"]
        return gpu_routes.cloud_gpu_routes(context, mine, backend=cls.name)

    @classmethod
    def plan_notes(cls, context):
        return gpu_routes.gpu_notes(context, cloud=True)


def test_a_cloud_backend_contributes_its_instances_priced_as_any_and_runnable(few):
    sources = [LocalBackend, Rents, UnclaimedClouds(("gcp", "cudo", "lambda"))]
    context = gpu_context(few, {2000: 500}, method="lora", max_seq_len=4096, lora_r=8, sources=sources)
    plan = planner.build_plan(context, sources)
    unclaimed = gpu_plan(few, {2000: 500}, method="lora", max_seq_len=4096, lora_r=8)
    for r in plan.routes:
        assert r.backend == ("rentals" if r.cloud == "aws" else None)
        same = next(u for u in unclaimed.routes if u.id == r.id)
        assert (r.vram_gib, r.hours, r.cost_usd, r.reason) == (same.vram_gib, same.hours, same.cost_usd, same.reason)
    spot = only(plan, instance_type="g6e.xlarge", market="spot")
    setup = spot.breakdown["setup"]
    assert spot.runnable and not spot.not_runnable and spot.job == {
        "backend": "rentals", "model": "Llama-3.1-8B", "method": "lora",
        "hyperparameters": {"epochs": 3, "max_seq_len": 4096, "micro_batch_size": setup["micro_batch"],
                            "gradient_accumulation_steps": setup["grad_accumulation"]},
        "lora": {"r": 8}, "backend_options": {"instance_type": "g6e.xlarge", "region": spot.region, "spot": True}}


def test_a_cloud_backends_quote_of_one_job_is_its_routes(few):
    """``instance_quote``: what a cloud backend's ``quote`` gives for the job a route's ``job`` describes."""
    sources = [Rents]
    context = gpu_context(few, {2000: 500, 900: 300}, method="qlora", sources=sources)
    stats_ = next(iter(context.report.tokens.values()))
    for r in planner.build_plan(context, sources).routes:
        inst = next(i for i in few.instances if (i.cloud, i.instance_type) == (r.cloud, r.instance_type))
        spec = JobSpec(dataset="d.jsonl", model=r.job["model"], method=r.job["method"],
                       hyperparameters=r.job["hyperparameters"])
        quote = gpu_routes.instance_quote(train_config(spec, LocalOptions()), ModelRequest(r.job["model"],
                                          few.models["Llama-3.1-8B"]), stats_, None, inst, r.market,
                                          few.gpus[inst.gpu], backend="rentals", today=TODAY)
        assert (quote.verdict.value == "ok") is r.feasible, r.id
        assert (quote.peak_vram_gib, quote.hours, quote.cost_usd) == (r.vram_gib, r.hours, r.cost_usd), r.id
        assert quote.hardware == f"{inst.gpu_count}x {inst.gpu}" and quote.cost_high_usd >= quote.cost_usd


def test_a_local_route_names_the_job_that_runs_it(few):
    plan = gpu_plan(few, {500: 100}, method="qlora", gpu="L4", gpu_count=2, gpu_source="--gpu", epochs=2)
    r = only(plan, kind="local")
    assert r.backend == "local" and r.runnable and r.job == {
        "backend": "local", "model": "Llama-3.1-8B", "method": "qlora",
        "hyperparameters": {"epochs": 2, "micro_batch_size": 4, "gradient_accumulation_steps": 1},
        "backend_options": {"gpu": "L4:2"}}
    found = gpu_plan(few, {500: 100}, method="qlora", gpu="L4", gpu_source="detected")
    assert "backend_options" not in only(found, kind="local").job  # found again by the run on this machine


# ---------------------------------------------------------------------------------------------- --stack

def test_a_stack_prices_the_gpu_routes_as_that_trainer_runs_them_and_ftbroker_does_not_run_them(few):
    ours = gpu_plan(few, {800: 400}, method="qlora", gpu="RTX-4090")
    theirs = gpu_plan(few, {800: 400}, method="qlora", gpu="RTX-4090", stack="unsloth")
    mine, other = only(ours, kind="local"), only(theirs, kind="local")
    assert mine.breakdown["stack"] == "ftbroker" and mine.runnable and mine.job
    assert other.breakdown["stack"] == "unsloth" and other.job is None and not other.runnable
    assert other.not_runnable.startswith("priced for the unsloth stack: train it with Unsloth")
    # its defaults (micro-batch 2, 8-bit AdamW) and its kernels (fused loss, offloaded checkpoints): less memory
    assert other.breakdown["setup"]["micro_batch"] == 2 and other.breakdown["setup"]["optimizer"] != \
        mine.breakdown["setup"]["optimizer"]
    assert other.vram_gib < mine.vram_gib and other.epochs == mine.epochs == 3
    assert "figures for the unsloth stack" in theirs.notes[0]
    cloud = [r for r in theirs.routes if r.kind == "cloud"]
    assert cloud and all(r.breakdown["stack"] == "unsloth" for r in cloud)


def test_the_user_runs_correct_the_routes_of_their_gpu_method_and_stack_only(few):
    from ftbroker.estimate.measured import Corrections, MeasuredRun

    runs = Corrections.from_runs([MeasuredRun("j", "RTX-4090", "qlora", "ftbroker", 1.3, 2.0)])
    plain = gpu_plan(few, {800: 400}, gpu="RTX-4090")
    fixed = gpu_plan(few, {800: 400}, gpu="RTX-4090", corrections=runs)
    before, after = only(plain, kind="local", method="qlora"), only(fixed, kind="local", method="qlora")
    said = runs.get("RTX-4090", "qlora", "ftbroker").describe()
    assert said in after.notes and after.breakdown["your_runs"]["said"] == said
    assert after.breakdown["vram_gib"]["allocated"] == pytest.approx(
        before.breakdown["vram_gib"]["allocated"] * 1.3 ** (1 / 3), rel=1e-3)
    assert after.breakdown["tokens_per_s"] == pytest.approx(before.breakdown["tokens_per_s"] / 2 ** (1 / 3), rel=1e-3)
    assert after.hours > before.hours and after.cost_usd >= before.cost_usd
    lora = (only(plain, kind="local", method="lora"), only(fixed, kind="local", method="lora"))
    assert lora[0].vram_gib == lora[1].vram_gib and lora[0].hours == lora[1].hours  # another method: untouched
    unsloth = gpu_plan(few, {800: 400}, gpu="RTX-4090", stack="unsloth", corrections=runs)
    assert "your_runs" not in only(unsloth, kind="local", method="qlora").breakdown  # another stack: untouched
