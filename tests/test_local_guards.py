"""The silent wrong-gradient trap of 4-bit training on CPUs with AVX512-BF16, and the guards that catch it."""

from __future__ import annotations

import pytest
from ftbroker.backends.local import guards

bitsandbytes = pytest.importorskip("bitsandbytes")
torch = pytest.importorskip("torch")

HAS_AVX512_BF16 = bool(bitsandbytes.functional.has_avx512bf16())


def load_4bit(model_dir):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, dtype=torch.float32)


def evaluate_once(model):
    """What trainer.evaluate() or generate() does to the layers: an eval-mode forward without gradients."""
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[3, 4, 5, 6, 7]]))
    model.train()


def packed_for_inference(model) -> bool:
    return any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
               for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit))


@pytest.mark.skipif(not HAS_AVX512_BF16, reason="this CPU has no AVX512-BF16: bitsandbytes never repacks 4-bit "
                                                "weights for inference here, so the trap cannot be reproduced")
def test_guard_catches_the_trap_when_the_workaround_is_off(tiny_model_dir):
    model = load_4bit(tiny_model_dir)
    guards.check_4bit_input_gradients(model)  # fine before any evaluation
    evaluate_once(model)
    assert packed_for_inference(model)  # the trap really went off
    with pytest.raises(guards.WrongGradientError, match=r"wrong input gradients: model\.layers\.0\..*"
                                                        r"support_avx512bf16_for_cpu=False"):
        guards.check_4bit_input_gradients(model)


def test_workaround_keeps_gradients_right_after_an_evaluation(tiny_model_dir):
    model = load_4bit(tiny_model_dir)
    assert guards.disable_cpu_weight_repacking(model) == 14  # 2 layers x (4 attention + 3 MLP projections)
    evaluate_once(model)
    assert not packed_for_inference(model)
    guards.check_4bit_input_gradients(model)


def test_adapter_gradient_check(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    batch = torch.tensor([[3, 4, 5, 6, 7]])
    model(input_ids=batch, labels=batch).loss.backward()
    guards.check_adapter_gradients(model)
    # A layer cut off from the graph (what a frozen input does under checkpointing): its B gets no gradient.
    for name, param in model.named_parameters():
        if "layers.1.self_attn.v_proj.lora_B" in name:
            param.grad = None
    with pytest.raises(guards.WrongGradientError, match="no gradient for 1 trainable tensors"):
        guards.check_adapter_gradients(model)
