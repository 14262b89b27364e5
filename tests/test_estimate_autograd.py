"""The per-layer activation accounting against what PyTorch autograd really saves for an HF Llama layer.

Runs a tiny randomly initialised LlamaForCausalLM on CPU and sums the bytes of every tensor autograd saves
for backward (``saved_tensors_hooks``, parameters excluded, storages counted once). The difference between a
2-layer and a 1-layer model is one decoder layer; dividing by the tokens gives bytes per token per layer.
"""

from __future__ import annotations

import pytest
from estimate_fixtures import TINY
from ftbroker.estimate.memory import _Layer
from ftbroker.estimate.setup import ModelShape, TrainingSetup

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _saved_bytes(layers: int, tokens: int, checkpointing: bool) -> int:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size, intermediate_size=TINY.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=TINY.num_heads, num_key_value_heads=TINY.num_kv_heads,
        max_position_embeddings=256, attn_implementation="sdpa", use_cache=False)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    ids = torch.randint(0, TINY.vocab_size, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_saved_bytes_per_layer_match_autograd(checkpointing):
    tokens = 64
    measured = (_saved_bytes(2, tokens, checkpointing) - _saved_bytes(1, tokens, checkpointing)) / tokens
    setup = TrainingSetup("full", seq_len=tokens, grad_checkpointing=checkpointing)
    layer = _Layer(ModelShape(TINY), setup)
    expected = 2 * TINY.hidden_size if checkpointing else layer.total()
    assert measured == expected
