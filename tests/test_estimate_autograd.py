"""The per-layer activation accounting against what PyTorch autograd really saves, for the HF stack the local
trainer runs, on CPU: a tiny randomly initialised LlamaForCausalLM (SDPA attention), trained

* in full: bf16 weights, and fp32 weights under bf16 autocast ("amp", what the trainer does for full fine-tuning);
* with PEFT LoRA on all linear layers of a frozen bf16 base under bf16 autocast: fp32 adapters (PEFT's default);
* with QLoRA as the trainer builds it: bitsandbytes NF4 Linear4bit layers, adapters cast to bf16 (as TRL does).

LoRA dropout runs as it does on CUDA: the fused kernel (``torch.native_dropout``), which keeps a bool mask. On a
CPU, ``F.dropout`` takes an unfused path that keeps the scaled noise in the input's dtype instead (4 bytes an
element for PEFT's fp32 path): measuring with it overstates the GPU's memory.

Saved bytes: every tensor autograd saves for backward (``saved_tensors_hooks``), parameters excluded, storages
counted once. Two layers minus one is one decoder layer; two token counts split it into bytes per token and a
per-layer constant (autocast's 16-bit copies of fp32 weights).
"""

from __future__ import annotations

import contextlib

import pytest
from estimate_fixtures import TINY
from ftbroker.estimate.memory import _Layer
from ftbroker.estimate.setup import ModelShape, TrainingSetup

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOKENS = (32, 64)


def _cuda_dropout(module, x):
    """nn.Dropout.forward as CUDA runs it: at::dropout dispatches to the fused native_dropout there."""
    return torch.native_dropout(x, module.p, module.training)[0] if module.training and module.p else x


def _quantize_linears(model) -> None:
    """What from_pretrained(quantization_config=BitsAndBytesConfig(NF4, double quantization, bf16 compute)) makes
    of the decoder's Linear layers (the head stays 16-bit)."""
    bnb = pytest.importorskip("bitsandbytes")
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in list(parent.named_children()):
                if isinstance(linear, torch.nn.Linear):
                    quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                                  compute_dtype=torch.bfloat16, quant_type="nf4",
                                                  compress_statistics=True)
                    quantized.weight = bnb.nn.Params4bit(linear.weight.data.float(), requires_grad=False,
                                                         quant_type="nf4", compress_statistics=True).to("cpu")
                    setattr(parent, name, quantized)


def _model(layers: int, method: str, precision: str, dropout: float, checkpointing: bool):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size, intermediate_size=TINY.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=TINY.num_heads, num_key_value_heads=TINY.num_kv_heads,
        max_position_embeddings=256, attn_implementation="sdpa", use_cache=False)
    model = transformers.LlamaForCausalLM(config).to(torch.float32 if precision == "amp" else torch.bfloat16)
    if method == "qlora":
        _quantize_linears(model)
    if method != "full":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout,
                                                           target_modules="all-linear", task_type="CAUSAL_LM"))
        if method == "qlora":  # TRL: "the PEFT adapter weights are converted to bf16" for quantized models
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if method != "full":
            model.enable_input_require_grads()  # what TRL does for PEFT with checkpointing
    return model


def _saved_bytes(model, tokens: int, autocast: bool) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    decoder = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    ids = torch.randint(0, TINY.vocab_size, (1, tokens))
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        decoder(input_ids=ids)  # the decoder layers; the loss head is accounted for separately
    return sum(seen.values())


def _per_layer(method: str, precision: str, dropout: float, checkpointing: bool) -> tuple[float, float]:
    """(bytes per token, bytes per layer independent of the tokens) that one decoder layer saves."""
    autocast = precision == "amp" or method != "full"  # the trainer's bf16 mixed precision
    one_layer = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Dropout, "forward", _cuda_dropout)
        for layers in (1, 2):
            model = _model(layers, method, precision, dropout, checkpointing)
            one_layer.append([_saved_bytes(model, t, autocast) for t in TOKENS])
    small, large = (two - one for one, two in zip(*one_layer))
    per_token = (large - small) / (TOKENS[1] - TOKENS[0])
    return per_token, small - per_token * TOKENS[0]


@pytest.mark.parametrize(("method", "precision", "dropout"), [
    ("full", "bf16", 0.0), ("full", "amp", 0.0),
    ("lora", "bf16", 0.05), ("lora", "bf16", 0.0),
    ("qlora", "bf16", 0.05), ("qlora", "bf16", 0.0),
])
def test_saved_bytes_per_layer_match_autograd(method, precision, dropout):
    per_token, per_layer = _per_layer(method, precision, dropout, checkpointing=False)
    layer = _Layer(ModelShape(TINY), TrainingSetup(method, precision=precision, lora_dropout=dropout,
                                                   seq_len=TOKENS[0], grad_checkpointing=False))
    assert per_token == layer.total()
    assert per_layer == layer.autocast_weight_copies()


@pytest.mark.parametrize(("method", "precision"), [("lora", "bf16"), ("full", "amp")])
def test_checkpointing_keeps_each_layers_input(method, precision):
    """Only the residual stream entering each layer: 16-bit, or fp32 when fp32 weights carry it (amp)."""
    per_token, per_layer = _per_layer(method, precision, 0.05 if method == "lora" else 0.0, checkpointing=True)
    layer = _Layer(ModelShape(TINY), TrainingSetup(method, precision=precision, seq_len=TOKENS[0]))
    assert (per_token, per_layer) == (layer.checkpointed_input(), 0)
    assert per_token == (4 if precision == "amp" else 2) * TINY.hidden_size
