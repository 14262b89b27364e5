"""The estimator tests' models and GPUs: rows of the shipped catalog, plus two shapes the catalog does not hold."""

from __future__ import annotations

from datetime import date

from ftbroker.pricing.catalog import GpuSpec, ModelArch, load_catalog

CATALOG = load_catalog()  # conftest points FTBROKER_HOME at an empty folder: no user override file is read

LLAMA31_8B = CATALOG.model("Llama-3.1-8B")
LLAMA32_1B = CATALOG.model("Llama-3.2-1B")
QWEN25_7B = CATALOG.model("Qwen2.5-7B")
MIXTRAL = CATALOG.model("Mixtral-8x7B-v0.1")

RTX4090 = CATALOG.gpu("RTX-4090")
A100_80 = CATALOG.gpu("A100-SXM-80GB")
# a card whose maker publishes neither tensor TFLOPS nor power: throughput and electricity unknown (made up)
UNTIMED = GpuSpec(name="Untimed-24GB", memory_gib=24, bf16_tflops=None, fp16_tflops=None, bandwidth_gbps=600,
                  tdp_w=None, supports_bf16=True, source="made up for the tests", as_of=date(2026, 11, 28))

# Llama 2 7B, for the LoRA paper's parameter count (bench/data/models.csv row, from litgpt's Llama-2-7b-hf config).
LLAMA2_7B = ModelArch(name="Llama-2-7B", hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                      num_kv_heads=32, head_dim=128, vocab_size=32000, max_position_embeddings=4096,
                      tie_word_embeddings=False, source="bench/data/models.csv", as_of=date(2026, 11, 28))

# A two-layer GQA model small enough to run forward and backward on the CPU (the autograd tests).
TINY = ModelArch(name="tiny", hidden_size=256, intermediate_size=704, num_layers=2, num_heads=8, num_kv_heads=2,
                 head_dim=32, vocab_size=1000, max_position_embeddings=4096, tie_word_embeddings=False,
                 source="made up for the tests", as_of=date(2026, 11, 28))
