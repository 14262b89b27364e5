"""The local route's estimate beside its measurement, through the real command line.

    python bench/local_preflight.py [--methods lora qlora full] [--hidden 1024] [--layers 24] [--vocab 32000]
                                    [--micro-batch 8] [--seq-len 512] [--examples 3000] [--gpu NAME]

Builds a random Llama of the given shape (the test suite's ChatML tokenizer; no download), then runs
``ftbroker run DATA --backend local --model FOLDER --method M --packing --yes`` for each method, so every micro-batch
is ``--seq-len`` tokens, and prints what the ledger keeps for each job: the pre-flight's estimate (peak VRAM with
the CUDA context and the allocator's slack, the allocated peak, tokens/s, hours) beside what the trainer measured
(``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``, or the peak RSS on a CPU; non-padding tokens/s).
On a machine without a GPU pass ``--gpu NAME`` to see the estimate for that GPU next to the CPU's measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

KEYS = ("estimated_peak_vram_gib", "estimated_allocated_gib", "measured_peak_vram_allocated_gib",
        "measured_peak_vram_reserved_gib", "measured_peak_rss_gib", "estimated_tokens_per_s", "measured_tokens_per_s",
        "estimated_hours", "measured_train_seconds")


def build_model(folder: Path, hidden: int, layers: int, vocab: int) -> Path:
    import torch
    from tinymodels import CHATML_TEMPLATE, build_tokenizer
    from train_throughput import WORDS
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(CHATML_TEMPLATE, extra_texts=[" ".join(WORDS)] * 20, vocab_size=1024)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora", "full"])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--gpu", help="plan for this GPU (catalog name) instead of the GPUs found")
    args = parser.parse_args()

    from train_throughput import synthetic_chats

    work = Path(tempfile.mkdtemp(prefix="ftbroker-bench-"))
    model = build_model(work / "model", args.hidden, args.layers, args.vocab)
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in synthetic_chats(args.examples)))
    env = {**os.environ, "FTBROKER_HOME": str(work / "home")}
    print(f"model: random Llama, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
          f"micro-batch {args.micro_batch} x {args.seq_len} tokens (packed), 1 epoch of {args.examples} chats")
    for method in args.methods:
        command = [sys.executable, "-m", "ftbroker.cli", "run", str(data), "--backend", "local", "--model",
                   str(model), "--method", method, "--epochs", "1", "--micro-batch", str(args.micro_batch),
                   "--max-seq-len", str(args.seq_len), "--packing", "--yes", "--json",
                   *(["--gpu", args.gpu] if args.gpu else [])]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            continue
        out = json.loads(done.stdout)
        resources, measured = out["job"]["resources"], out["result"]["raw"].get("measured", {})
        print(f"\n{method}: {measured.get('device')} {measured.get('gpu', '')} {measured.get('precision')}, "
              f"{out['result']['raw'].get('global_step')} steps, final eval loss "
              f"{out['result']['raw'].get('final_eval_loss')}")
        for key in KEYS:
            if key in resources:
                print(f"  {key:36} {resources[key]:12.4g}")


if __name__ == "__main__":
    main()
