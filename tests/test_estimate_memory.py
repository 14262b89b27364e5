"""Peak-memory model: hand-checked terms, monotonicity, sharding and the fit search."""

from __future__ import annotations

import pytest
from estimate_fixtures import A100_80, LLAMA2_7B, LLAMA31_8B, LLAMA32_1B, MIXTRAL, QWEN25_7B, RTX4090, TINY
from ftbroker.errors import InputError, UnknownNameError
from ftbroker.estimate.calibration import Calibration
from ftbroker.estimate.memory import (
    GIB,
    NF4_DQ_BYTES,
    _Layer,
    estimate_memory,
    fits,
    max_micro_batch,
    max_seq_len,
)
from ftbroker.estimate.setup import Implementation, ModelShape, TrainingSetup, resolve_targets
from ftbroker.vocabulary import METHODS

RAW = Calibration(mfu={"full": {"datacenter": 0.5}, "lora": {"datacenter": 0.5}, "qlora": {"datacenter": 0.5}})


def test_parameter_counts_match_the_catalog_research():
    # computed_total_params in the research models.csv (torchtune / litgpt builders)
    assert ModelShape(LLAMA31_8B).total_params == 8_030_261_248
    assert ModelShape(LLAMA32_1B).total_params == 1_235_814_400
    assert ModelShape(QWEN25_7B).total_params == 7_615_616_512
    assert ModelShape(MIXTRAL).total_params == 46_702_792_704


def test_lora_parameter_count_llama2_7b_qv_r8():
    # LoRA paper sec. 4.2 / litgpt: 32 layers x 2 matrices x 8 x (4096 + 4096)
    assert ModelShape(LLAMA2_7B).lora_params(resolve_targets(["q_proj,v_proj"]), 8) == 4_194_304


def test_lora_shapes_are_gqa_aware_and_count_every_expert():
    shape = ModelShape(LLAMA31_8B)
    # k_proj is 4096 -> 1024 (8 KV heads x 128): r x (4096 + 1024) per layer
    assert shape.lora_params(frozenset({"k_proj"}), 16) == 32 * 16 * (4096 + 1024)
    moe = ModelShape(MIXTRAL)
    assert moe.lora_params(frozenset({"down_proj"}), 8) == 32 * 8 * 8 * (14336 + 4096)


def test_full_finetune_with_mixed_precision_adamw_is_16_bytes_per_parameter():
    # ZeRO paper Fig. 1: 2 (fp16 params) + 2 (grads) + 12 (fp32 master, momentum, variance)
    m = estimate_memory(LLAMA31_8B, TrainingSetup("full", precision="mixed", seq_len=8), RAW)
    static = m.weights + m.master_weights + m.optimizer + ModelShape(LLAMA31_8B).total_params * 2 / GIB
    assert static * GIB / ModelShape(LLAMA31_8B).total_params == pytest.approx(16, abs=1e-9)
    assert m.phase == "optimizer step"  # at 8 tokens the gradients outweigh the activations


def test_pure_bf16_adamw_is_8_bytes_per_parameter():
    m = estimate_memory(LLAMA31_8B, TrainingSetup("full", precision="bf16", seq_len=8), RAW)
    per_param = (m.weights + m.optimizer + m.gradients) * GIB / ModelShape(LLAMA31_8B).total_params
    assert per_param == pytest.approx(8, abs=1e-9)


def test_qlora_weights_of_an_8b_model_are_5_to_6_gb():
    m = estimate_memory(LLAMA31_8B, TrainingSetup("qlora"), RAW)
    assert 5e9 < m.weights * GIB < 6e9
    # NF4 + double quantization: 4 + 8/64 + 32/(64*256) bits (QLoRA paper sec. 3)
    assert NF4_DQ_BYTES * 8 == pytest.approx(4.127, abs=1e-3)


def test_per_layer_saved_bytes_hand_checked_small_case():
    """h=256, q=8x32, kv=2x32, I=704, SDPA, HF eager, full fine-tuning, per token per layer:
    2 norms x (4h fp32 + 2h normalised + 2h output + 4 rstd) + q 2q + k,v 4kv + out 2q + lse 4x8 + MLP 8I."""
    layer = _Layer(ModelShape(TINY), TrainingSetup("full", seq_len=64))
    h, q, kv, inter = 256, 256, 64, 704
    assert layer.total() == 2 * (8 * h + 4) + 4 * q + 4 * kv + 4 * 8 + 8 * inter == 11048
    lora = _Layer(ModelShape(TINY), TrainingSetup("lora", targets=("q_proj,v_proj",), lora_r=8, seq_len=64))
    # frozen norms keep only the fp32 upcast; each adapted module its own 16-bit input copy + A's output;
    # the MLP keeps gate, act(gate), up (its frozen down_proj needs no input)
    assert lora.total() == 2 * (4 * h + 4) + 2 * (2 * h + 2 * 8) + 4 * q + 4 * kv + 4 * 8 + 6 * inter


def test_the_local_trainers_lora_layer_hand_checked():
    """PEFT LoRA r=16 on all linear layers with dropout 0.05 (the trainer's defaults), per token per layer, on
    h=256, q=8x32, kv=2x32, I=704: each adapted module saves its own 16-bit copy of its input (2 d_in: PEFT's fp32
    cast cast back by autocast, or the dropout output), the bool dropout mask CUDA's fused kernel keeps (d_in) and
    A's output (2r); so the frozen norms keep only their fp32 upcast and 1/rms, and the shared inputs are not kept."""
    h, q, kv, inter, r = 256, 256, 64, 704, 16
    norms = 2 * (4 * h + 4)
    attention = 2 * q + 4 * kv + 2 * q + 4 * 8
    adapters = 6 * (3 * h + 2 * r) + (3 * inter + 2 * r)  # q, k, v, o, gate, up read h (o: q = h) wide; down I
    for method in ("lora", "qlora"):  # TRL's bf16 QLoRA adapters: the dropout output is the copy
        layer = _Layer(ModelShape(TINY), TrainingSetup(method, lora_dropout=0.05))
        assert layer.total() == norms + attention + 6 * inter + adapters == 14536
    # QLoRA without dropout: A reads the shared inputs, saved once (the norms' outputs, down's input)
    plain = _Layer(ModelShape(TINY), TrainingSetup("qlora", lora_dropout=0.0))
    assert plain.total() == 2 * (4 * h + 4 + 2 * h) + attention + 8 * inter + 7 * 2 * r == 10248


def test_backward_transients_and_the_recomputed_layer():
    """Beyond what is stored, one layer's backward holds the 16-bit gradient of the MLP width (2I), and with
    PEFT's fp32 adapters the fp32 gradients of the widest adapted input's cast and dropout (4 + 4 bytes x I)."""
    inter = 14336
    lora = _Layer(ModelShape(LLAMA31_8B), TrainingSetup("lora", lora_dropout=0.05))
    qlora = _Layer(ModelShape(LLAMA31_8B), TrainingSetup("qlora", lora_dropout=0.05))
    assert (lora.backward_transient(), qlora.backward_transient()) == (10 * inter, 2 * inter)
    setup = TrainingSetup("qlora", micro_batch=4, seq_len=2048, lora_dropout=0.05)
    m = estimate_memory(LLAMA31_8B, setup, RAW)
    # checkpointing: the layer being recomputed, its transients, and one dequantized 4096 x 14336 matrix (the
    # loss buffers are freed by then)
    recomputed = _Layer(ModelShape(LLAMA31_8B), setup).total()
    assert m.workspace * GIB == pytest.approx((recomputed + 2 * inter) * 8192 * RAW.activation_scale
                                              + 4096 * 14336 * 2 - m.loss * GIB)


def test_the_measured_h200_peaks_stay_within_a_few_percent():
    """The 20 cases bench/gpu_calibrate.py measured on an H200 through the trainer's own code."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import gpu_calibrate as gc

    results = json.loads((Path(gc.__file__).parent / "results" / "gpu_calibrate.json").read_text())
    archs = gc.architectures()
    for record in gc.cuda_records(results, "gpu_calibrate.json"):
        m = estimate_memory(archs[record["case"]["model"]], gc.setup_from_json(record["setup"]))
        measured = record["measured"]
        assert m.allocated * GIB / measured["max_allocated"] == pytest.approx(1, abs=0.05), record["id"]
        reserved = (m.allocated + m.allocator_overhead) * GIB
        assert reserved / measured["max_reserved"] == pytest.approx(1, abs=0.08), record["id"]


def test_checkpointing_stores_2h_per_layer_and_lowers_activation_memory():
    base = TrainingSetup("lora", micro_batch=4, seq_len=1024)
    with_gc = estimate_memory(LLAMA31_8B, base, RAW)
    without = estimate_memory(LLAMA31_8B, base.with_(grad_checkpointing=False), RAW)
    assert with_gc.activations < without.activations / 5
    final_norm = 4 * 4096 + 4  # fp32 upcast + rstd; the frozen head needs no input
    # + autocast's 16-bit copies of PEFT's fp32 adapter weights, for the one layer being recomputed:
    # r x (d_in + d_out) over q, k, v, o, gate, up, down, 2 bytes each
    adapter_copies = 2 * 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14336))
    assert with_gc.activations * GIB == pytest.approx((32 * 2 * 4096 + final_norm) * 4096 + adapter_copies)


@pytest.mark.parametrize("method", METHODS)
def test_memory_grows_with_batch_sequence_and_rank(method):
    base = TrainingSetup(method, micro_batch=2, seq_len=1024, lora_r=16)
    m = estimate_memory(LLAMA31_8B, base, RAW).allocated
    for bigger in (base.with_(micro_batch=3), base.with_(seq_len=2048), base.with_(lora_r=64)):
        assert estimate_memory(LLAMA31_8B, bigger, RAW).allocated >= m
    if method == "full":  # the optimizer step (all gradients at once) is the peak until activations overtake it
        assert estimate_memory(LLAMA31_8B, base, RAW).phase == "optimizer step"
        assert estimate_memory(LLAMA31_8B, base.with_(micro_batch=16, grad_checkpointing=False), RAW).allocated > m
    else:
        assert estimate_memory(LLAMA31_8B, base.with_(micro_batch=3), RAW).allocated > m
        assert estimate_memory(LLAMA31_8B, base.with_(lora_r=64), RAW).allocated > m


def test_large_vocabulary_logits_dominate_at_long_sequence_unless_fused():
    hf = TrainingSetup("qlora", micro_batch=4, seq_len=4096, impl=Implementation(loss="hf"))
    m = estimate_memory(LLAMA31_8B, hf, RAW)
    # transformers ForCausalLMLoss: fp32 upcast; saved log-softmax + its gradient + the input gradient
    assert m.loss == pytest.approx(4 * 4096 * 128256 * 12 / GIB)
    assert m.loss > m.weights
    liger = estimate_memory(LLAMA31_8B, hf.with_(impl=Implementation(loss="fused")), RAW)
    assert liger.loss == 0
    # the local trainer (TRL SFTTrainer) projects through its chunked log-prob head instead
    trl = estimate_memory(LLAMA31_8B, hf.with_(impl=Implementation()), RAW)
    assert trl.loss * GIB == pytest.approx(4 * 4096 * (8 * 4096 + 16) + 4096 * 32768 * 2)
    # a trained 16-bit head: its fp32 gradient accumulates beside the 16-bit .grad it is cast to (counted with the
    # gradients); an fp32 head ("amp", the trainer's full fine-tuning) accumulates straight into its .grad
    full = TrainingSetup("full", seq_len=512, grad_checkpointing=False)
    def loss_term(setup):  # the term, whichever phase the peak falls in
        return next(t.gib for t in estimate_memory(LLAMA32_1B, setup, RAW).terms if t.name == "loss") * GIB

    assert loss_term(full) == pytest.approx(512 * (8 * 2048 + 16) + 512 * 32768 * 2 + 4 * 128256 * 2048)
    assert loss_term(full.with_(precision="amp")) == pytest.approx(512 * (8 * 2048 + 16) + 512 * 32768 * 2)


def test_optimizers_paged_states_are_outside_allocated():
    full = TrainingSetup("full", seq_len=256)
    adamw = estimate_memory(LLAMA32_1B, full, RAW)
    eight = estimate_memory(LLAMA32_1B, full.with_(optimizer="adamw_8bit"), RAW)
    paged = estimate_memory(LLAMA32_1B, full.with_(optimizer="paged_adamw_8bit"), RAW)
    assert eight.optimizer == pytest.approx(adamw.optimizer / 2 * (1 + 4 / 256))
    assert paged.optimizer == 0 and paged.optimizer_paged == pytest.approx(eight.optimizer)
    assert paged.allocated < eight.allocated


def test_amp_keeps_fp32_weights_and_16bit_autocast_copies():
    bf16 = estimate_memory(LLAMA31_8B, TrainingSetup("lora", seq_len=512), RAW)
    amp = estimate_memory(LLAMA31_8B, TrainingSetup("lora", seq_len=512, precision="amp"), RAW)
    assert amp.weights == pytest.approx(2 * bf16.weights)
    assert amp.activations > bf16.activations  # one layer's 16-bit weight copies kept for backward


def test_sharding_divides_model_states():
    full = TrainingSetup("full", seq_len=512, n_gpus=8, sharding="zero3", precision="mixed")
    one = estimate_memory(LLAMA31_8B, TrainingSetup("full", seq_len=512, precision="mixed"), RAW)
    z3 = estimate_memory(LLAMA31_8B, full, RAW)
    assert z3.weights == pytest.approx(one.weights / 8)
    assert z3.optimizer == pytest.approx(one.optimizer / 8)
    z2 = estimate_memory(LLAMA31_8B, full.with_(sharding="zero2"), RAW)
    assert z2.weights == pytest.approx(one.weights) and z2.optimizer == pytest.approx(one.optimizer / 8)
    offload = estimate_memory(LLAMA31_8B, full.with_(cpu_offload="optimizer"), RAW)
    assert offload.optimizer == 0 and offload.master_weights == 0


def test_gradient_accumulation_keeps_gradients_during_backward():
    base = TrainingSetup("full", seq_len=4096, micro_batch=2, grad_checkpointing=False)
    one = estimate_memory(LLAMA32_1B, base, RAW)
    accum = estimate_memory(LLAMA32_1B, base.with_(grad_accumulation=8), RAW)
    assert accum.allocated > one.allocated


def test_moe_stores_all_experts_but_activates_top_k():
    dense_like = estimate_memory(MIXTRAL, TrainingSetup("qlora", seq_len=1024, grad_checkpointing=False), RAW)
    assert dense_like.weights * GIB > 46e9 * NF4_DQ_BYTES * 0.95
    per_layer = _Layer(ModelShape(MIXTRAL), TrainingSetup("lora", seq_len=1024)).moe()
    assert per_layer == 2 * (6 * 14336 + 2 * 4096) + 8 * 8  # 2 experts: MLP acts + input copy; router


def test_total_adds_allocator_overhead_and_context():
    cal = Calibration(allocator_overhead=0.1, cuda_context_gib=0.5)
    m = estimate_memory(LLAMA31_8B, TrainingSetup("lora"), cal)
    assert m.total == pytest.approx(m.allocated * 1.1 + 0.5)
    assert sum(m.components().values()) == pytest.approx(m.total)


def test_fit_search_finds_the_boundary():
    setup = TrainingSetup("qlora", seq_len=2048)
    b = max_micro_batch(LLAMA31_8B, RTX4090, setup, calibration=RAW)
    assert b >= 1
    assert fits(LLAMA31_8B, RTX4090, setup.with_(micro_batch=b), RAW)
    assert not fits(LLAMA31_8B, RTX4090, setup.with_(micro_batch=b + 1), RAW)
    s = max_seq_len(LLAMA31_8B, RTX4090, setup.with_(micro_batch=2), calibration=RAW)
    assert s % 64 == 0 and fits(LLAMA31_8B, RTX4090, setup.with_(micro_batch=2, seq_len=s), RAW)
    assert not fits(LLAMA31_8B, RTX4090, setup.with_(micro_batch=2, seq_len=s + 64), RAW)
    # full fine-tuning of 8B in bf16 needs 8 B/param: nothing fits a 24 GiB card
    assert max_micro_batch(LLAMA31_8B, RTX4090, TrainingSetup("full"), calibration=RAW) == 0
    assert max_micro_batch(LLAMA32_1B, A100_80, TrainingSetup("full", seq_len=512), calibration=RAW) > 8


def test_bad_setups_are_input_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'q_proj'"):
        TrainingSetup("lora", targets=("q_prj",))
    with pytest.raises(UnknownNameError):
        TrainingSetup("dora")
    with pytest.raises(UnknownNameError, match="optimizer"):
        TrainingSetup("lora", optimizer="adamw9000")
    with pytest.raises(InputError, match="micro-batch 0: must be at least 1"):
        TrainingSetup("lora", micro_batch=0)
    with pytest.raises(InputError, match="needs more than one GPU"):
        TrainingSetup("full", sharding="zero3")


def test_litgpt_keeps_its_own_head_for_a_tied_checkpoint():
    # Llama 3.2 1B ties its head to the embedding; litgpt's converter copies it into a separate lm_head
    setup = TrainingSetup("lora", seq_len=512, grad_checkpointing=False, impl=Implementation(name="litgpt"))
    tied = estimate_memory(LLAMA32_1B, setup, RAW)
    untied = estimate_memory(LLAMA32_1B, setup.with_(impl=Implementation(name="litgpt", untied_head=True)), RAW)
    head = LLAMA32_1B.vocab_size * LLAMA32_1B.hidden_size
    assert untied.weights - tied.weights == pytest.approx(head * 2 / GIB)


def test_old_bitsandbytes_inputs_of_the_previous_step_live_through_the_next_forward():
    impl = Implementation(name="litgpt", bnb_saves_inputs=True, quantize_lm_head=True)
    setup = TrainingSetup("qlora", seq_len=512, micro_batch=2, grad_checkpointing=False, impl=impl)
    kept = setup.with_(impl=Implementation(name="litgpt", bnb_saves_inputs=True, quantize_lm_head=True,
                                           bnb_inputs_outlive_step=True))
    extra = estimate_memory(LLAMA2_7B, kept, RAW).activations - estimate_memory(LLAMA2_7B, setup, RAW).activations
    h, w = LLAMA2_7B.hidden_size, LLAMA2_7B.intermediate_size
    assert extra == pytest.approx(32 * (4 * h + 2 * w) * 1024 / GIB)  # q/k/v and gate/up inputs, down's, per layer
    # a reentrant checkpoint's forward has no graph to keep
    assert estimate_memory(LLAMA2_7B, kept.with_(grad_checkpointing=True), RAW).activations == pytest.approx(
        estimate_memory(LLAMA2_7B, setup.with_(grad_checkpointing=True), RAW).activations)


def test_a_loop_holding_the_previous_logits_meets_the_dequantized_head():
    impl = Implementation(name="litgpt", loss="bf16_chunked", quantize_lm_head=True, untied_head=True)
    setup = TrainingSetup("qlora", seq_len=512, micro_batch=2, grad_checkpointing=False, impl=impl)
    held = setup.with_(impl=Implementation(name="litgpt", loss="bf16_chunked", quantize_lm_head=True,
                                           untied_head=True, holds_previous_logits=True))
    before, after = estimate_memory(LLAMA32_1B, setup, RAW), estimate_memory(LLAMA32_1B, held, RAW)
    head = LLAMA32_1B.vocab_size * LLAMA32_1B.hidden_size * 2
    logits = 2 * 1024 * LLAMA32_1B.vocab_size * 2  # both steps' bf16 logits: the loss's 4 B a logit
    assert after.workspace == pytest.approx((head + logits) / GIB - after.loss)
    assert after.allocated > before.allocated
    # LoRA: no quantized head, and two sets of 16-bit logits are what the bf16 loss holds anyway
    lora = setup.with_(method="lora")
    assert estimate_memory(LLAMA32_1B, lora.with_(impl=held.impl), RAW).allocated == pytest.approx(
        estimate_memory(LLAMA32_1B, lora, RAW).allocated)
