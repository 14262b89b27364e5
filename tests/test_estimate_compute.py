"""FLOPs, padding waste, throughput and wall-clock."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from estimate_fixtures import A100_80, LLAMA31_8B, LLAMA32_1B, MIXTRAL, RTX4090, UNTIMED
from ftbroker.errors import UnknownNameError
from ftbroker.estimate.calibration import Calibration
from ftbroker.estimate.compute import (
    Overheads,
    Range,
    communication,
    flops_per_token,
    gpu_class,
    padded_tokens,
    throughput,
    training_time,
)
from ftbroker.estimate.setup import NF4_DQ_BYTES, Implementation, ModelShape, TrainingSetup

CAL = Calibration(mfu={"full": {"datacenter": 0.5, "workstation": 0.4}, "lora": {"datacenter": 0.4},
                       "qlora": {"datacenter": 0.4}}, eager_slowdown=1.25, dequant_bytes_per_param=10.0,
                  multi_gpu_efficiency=0.9, spread=0.2)


HF_LOSS = Implementation(loss="hf")  # logits materialised: the head is projected once
TRL_HEAD = 2 * 128256 * 4096  # TRL's chunked loss head projects the head again in backward


def test_full_finetune_is_six_flops_per_weight_plus_causal_attention():
    setup = TrainingSetup("full", seq_len=2048, grad_checkpointing=False, impl=HF_LOSS)
    f = flops_per_token(LLAMA31_8B, setup)
    p = ModelShape(LLAMA31_8B).active_matmul_params
    attention = 2 * 32 * 4096 * 2048  # 2 * L * q_dim * s: causal, half the 4*L*h*s non-causal count
    assert f.attention_forward == attention
    assert f.total == 6 * p + 3 * attention
    # the local trainer (TRL SFTTrainer) recomputes the V x h projection once more in backward
    assert flops_per_token(LLAMA31_8B, setup.with_(impl=Implementation())).total == f.total + TRL_HEAD


def test_lora_counts_frozen_weights_twice_and_adapters_three_times():
    setup = TrainingSetup("lora", seq_len=1024, grad_checkpointing=False, targets=("q_proj,v_proj",), lora_r=8,
                          impl=HF_LOSS)
    f = flops_per_token(LLAMA31_8B, setup)
    p = ModelShape(LLAMA31_8B).active_matmul_params
    adapter = 32 * 8 * ((4096 + 4096) + (4096 + 1024))
    assert f.total == 4 * p + 6 * adapter + 3 * f.attention_forward


def test_step_traffic_hand_checked():
    """HBM bytes a step moves that the FLOPs miss (compute.step_traffic_bytes)."""
    from ftbroker.estimate.compute import step_traffic_bytes

    shape = ModelShape(LLAMA32_1B)
    lora = TrainingSetup("lora", seq_len=2048, grad_checkpointing=False, lora_dropout=0.05)
    # per adapted input element: fp32 cast up and back (6 + 6) and fp32 dropout (4 + 4 + 1), forward and
    # backward, + the gradient sum (6); inputs per layer: q, k, v, o, gate, up 2048 wide, down 8192
    side = 2048 * 16 * (6 * 2048 + 8192) * (21 * 2 + 6)
    adamw = shape.lora_params(lora.lora_modules, 16) * (2 * 4 + 2 * 4 + 2 * 2 * 4)  # p r/w, g + clip, 2 states r/w
    assert step_traffic_bytes(LLAMA32_1B, lora, 2048, 0.0) == side + adamw
    # QLoRA: bf16 adapters (dropout only: 2 + 2 + 1), and each pass dequantizes every decoder matrix
    qlora = lora.with_(method="qlora")
    side = 2048 * 16 * (6 * 2048 + 8192) * (5 * 2 + 6)
    adamw = shape.lora_params(lora.lora_modules, 16) * (2 * 2 + 2 * 2 + 2 * 2 * 2)
    dequant = 2 * 16 * shape.layer_linear_params * 2.5
    assert step_traffic_bytes(LLAMA32_1B, qlora, 2048, 2.5) == pytest.approx(side + adamw + dequant)
    # full fine-tuning under autocast: every weight cast per forward pass (6 B), the fp32 .grad accumulation (8 B)
    full = TrainingSetup("full", seq_len=2048, precision="amp", grad_checkpointing=True)
    p = shape.total_params
    expected = 6 * shape.active_matmul_params * 2 + p * (2 * 4 + 2 * 4 + 2 * 2 * 4) + 8 * p
    assert step_traffic_bytes(LLAMA32_1B, full, 2048, 0.0) == expected


def test_checkpointing_adds_one_forward_of_the_layers():
    base = TrainingSetup("lora", seq_len=1024, grad_checkpointing=False)
    gc = flops_per_token(LLAMA31_8B, base.with_(grad_checkpointing=True))
    plain = flops_per_token(LLAMA31_8B, base)
    head = 2 * 128256 * 4096  # the head is not recomputed
    assert gc.total - plain.total == pytest.approx(plain.forward - head)


def test_moe_flops_use_the_active_experts():
    dense_equivalent = ModelShape(MIXTRAL).active_matmul_params
    assert dense_equivalent < ModelShape(MIXTRAL).total_params * 0.3


def test_expected_padding_matches_enumeration():
    counts = {3: 2, 5: 1, 9: 1}
    lengths = [3, 3, 5, 9]
    b = 3
    exact = sum(Fraction(max(c), 1) for c in itertools.product(lengths, repeat=b)) / len(lengths) ** b
    pad = padded_tokens(counts, b, max_len=100)
    assert pad.mean_batch_len == pytest.approx(float(exact))
    assert pad.real_tokens == 20 and pad.processed_tokens == pytest.approx(4 * float(exact))
    assert 0 < pad.waste < 1


def test_sorted_and_packed_batching():
    counts = {10: 3, 20: 2, 100: 1}
    sorted_pad = padded_tokens(counts, 2, max_len=64, batching="sorted")
    assert sorted_pad.processed_tokens == 10 * 2 + 20 * 2 + 64 * 2  # (10,10) (10,20) (20,64)
    assert sorted_pad.truncated == 1 and sorted_pad.real_tokens == 10 * 3 + 20 * 2 + 64
    packed = padded_tokens(counts, 2, max_len=64, batching="packed")
    assert packed.waste == 0 and packed.steps == 2  # 134 tokens -> 3 rows of 64 -> 2 micro-batches of 2
    with pytest.raises(UnknownNameError):
        padded_tokens(counts, 2, max_len=64, batching="shuffled")


def test_more_batch_means_more_padding():
    counts = {length: 10 for length in range(50, 1000, 50)}
    wastes = [padded_tokens(counts, b, max_len=2048).waste for b in (1, 2, 8, 32)]
    assert wastes[0] == pytest.approx(0, abs=1e-12) and wastes[1:] == sorted(wastes[1:]) and wastes[1] > 0


def test_throughput_from_peak_and_calibrated_efficiency():
    setup = TrainingSetup("full", seq_len=2048, grad_checkpointing=False, impl=Implementation(compiled=True))
    t = throughput(LLAMA31_8B, A100_80, setup, CAL)
    assert t.tokens_per_s.expected == pytest.approx(312e12 * 0.5 / t.flops.total)
    assert t.tokens_per_s.low == pytest.approx(0.8 * t.tokens_per_s.expected)
    eager = throughput(LLAMA31_8B, A100_80, setup.with_(impl=Implementation()), CAL)
    assert eager.tokens_per_s.expected == pytest.approx(t.tokens_per_s.expected / 1.25)
    two = throughput(LLAMA31_8B, A100_80, setup.with_(n_gpus=2, sharding="fsdp"), CAL)
    compute = t.step_seconds / 0.9  # the per-GPU scaling, then the FSDP collectives over NVLink
    moved = 0.5 * (2 * LLAMA31_8B.params * 2 + LLAMA31_8B.params * 2)  # 2 bf16 weight gathers + bf16 grads
    step = (compute**2 + (moved / 300e9) ** 2) ** 0.5
    assert two.tokens_per_s.expected == pytest.approx(2 * setup.tokens / step)
    assert any("communication: fsdp over 2 GPUs" in note for note in two.assumptions)


def test_multi_gpu_communication_by_strategy_and_link():
    """Ring collectives move (n-1)/n of the data through each GPU's link: FSDP gathers the (NF4, for QLoRA) weights
    twice per micro-batch; DDP all-reduces the adapters' gradients once per optimizer step."""
    qlora = TrainingSetup("qlora", seq_len=2048, n_gpus=4, sharding="fsdp")
    fsdp = communication(LLAMA31_8B, A100_80, qlora)
    quantized = LLAMA31_8B.num_layers * sum(lin.params for lin in LLAMA31_8B.linears)
    weights = quantized * NF4_DQ_BYTES + (LLAMA31_8B.params - quantized) * 2
    assert fsdp.gpu_bytes == pytest.approx(0.75 * (2 * weights + fsdp_grads(qlora)))
    assert fsdp.seconds == pytest.approx(fsdp.gpu_bytes / 300e9)
    ddp = communication(LLAMA31_8B, RTX4090, TrainingSetup("lora", n_gpus=2, sharding="ddp", grad_accumulation=4))
    assert ddp.gpu_bytes == pytest.approx(2 * 0.5 * fsdp_grads(TrainingSetup("lora")) / 4)
    assert ddp.seconds == pytest.approx(ddp.gpu_bytes / 32e9)  # PCIe 4.0 x16, one direction
    offload = communication(LLAMA31_8B, A100_80, qlora.with_(cpu_offload="params"))
    assert offload.host_bytes == pytest.approx(2 * weights / 4) and offload.seconds > fsdp.seconds
    assert communication(LLAMA31_8B, A100_80, TrainingSetup("lora")).seconds == 0  # one GPU
    assert communication(LLAMA31_8B, UNTIMED, TrainingSetup("lora", n_gpus=2, sharding="ddp")) is None  # no link


def fsdp_grads(setup):
    """Bytes of the trainable gradients: PEFT's fp32 LoRA adapters, TRL's bf16 QLoRA ones."""
    r = setup.lora_r
    per_layer = sum(r * (lin.d_in + lin.d_out) for lin in LLAMA31_8B.linears)
    return LLAMA31_8B.num_layers * per_layer * (4 if setup.method == "lora" else 2)


def test_qlora_pays_for_dequantization_most_at_small_batches():
    lora = TrainingSetup("lora", seq_len=512)
    ratio_small = (throughput(LLAMA31_8B, A100_80, lora.with_(method="qlora"), CAL).tokens_per_s.expected
                   / throughput(LLAMA31_8B, A100_80, lora, CAL).tokens_per_s.expected)
    big = lora.with_(micro_batch=16)
    ratio_big = (throughput(LLAMA31_8B, A100_80, big.with_(method="qlora"), CAL).tokens_per_s.expected
                 / throughput(LLAMA31_8B, A100_80, big, CAL).tokens_per_s.expected)
    assert ratio_small < ratio_big < 1


def test_gpu_class_and_unknown_peak():
    assert gpu_class(A100_80) == "datacenter" and gpu_class(RTX4090) == "workstation"
    t = throughput(LLAMA31_8B, UNTIMED, TrainingSetup("lora"), CAL)
    assert t.tokens_per_s is None and "TFLOPS" in t.reason
    # a method/class without its own efficiency falls back to the class average
    assert throughput(LLAMA31_8B, RTX4090, TrainingSetup("lora"), CAL).efficiency == pytest.approx(
        0.4 / 1.25, rel=1e-6)


def test_training_time_adds_overheads_and_scales_with_epochs():
    setup = TrainingSetup("lora", seq_len=1024, micro_batch=4)
    one = training_time(LLAMA31_8B, A100_80, setup, real_tokens=10_000_000, processed_tokens=12e6, epochs=1,
                        calibration=CAL)
    two = training_time(LLAMA31_8B, A100_80, setup, real_tokens=10_000_000, processed_tokens=12e6, epochs=2,
                        calibration=CAL)
    assert two.train_hours.expected == pytest.approx(2 * one.train_hours.expected)
    assert one.hours.low <= one.hours.expected <= one.hours.high
    cloud = training_time(LLAMA31_8B, A100_80, setup, real_tokens=10_000_000, processed_tokens=12e6, epochs=1,
                          calibration=CAL, overheads=Overheads(startup_s=Range(60, 300, 600),
                                                               download_gbps=Range(0.05, 0.2, 1.0),
                                                               eval_fraction=0.1))
    assert {"start-up", "model download", "evaluation", "checkpoints", "model load"} <= set(cloud.breakdown)
    assert cloud.hours.expected > one.hours.expected
    assert training_time(LLAMA31_8B, UNTIMED, setup, real_tokens=1, processed_tokens=1.0, epochs=1,
                         calibration=CAL) is None
