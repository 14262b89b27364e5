"""Catalog rows for the estimator tests, copied from the research catalog (estimator models.csv, gpus.csv)
until the pricing area's loader lands; sources as in those files."""

from __future__ import annotations

from datetime import date

from ftbroker.pricing.catalog import GpuSpec, ModelArch

AS_OF = date(2026, 11, 28)


def arch(name, h, inter, layers, heads, kv, head_dim, vocab, tied, **kw) -> ModelArch:
    return ModelArch(name=name, hidden_size=h, intermediate_size=inter, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv, head_dim=head_dim, vocab_size=vocab, max_position_embeddings=kw.pop("ctx", 131072),
                     tie_word_embeddings=tied, source="test copy of research models.csv", as_of=AS_OF, **kw)


LLAMA31_8B = arch("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128, 128256, False)
LLAMA2_7B = arch("Llama-2-7B", 4096, 11008, 32, 32, 32, 128, 32000, False, ctx=4096)
LLAMA32_1B = arch("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 64, 128256, True)
QWEN25_7B = arch("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 128, 152064, False, qkv_bias=True)
MIXTRAL = arch("Mixtral-8x7B-v0.1", 4096, 14336, 32, 32, 8, 128, 32000, False, ctx=32768, num_experts=8,
               experts_per_token=2, moe_intermediate_size=14336)
TINY = arch("tiny", 256, 704, 2, 8, 2, 32, 1000, False, ctx=4096)

RTX4090 = GpuSpec("RTX 4090", 24, 165.2, 165.2, 1008, 450, True, "hmc-tech.com; waredb.com", AS_OF)
A100_80 = GpuSpec("A100-SXM4-80GB", 80, 312, 312, 2039, 400, True, "thundercompute.com A100 guide", AS_OF)
A10G = GpuSpec("A10G", 24, None, None, 600, None, True, "baseten.co", AS_OF)
