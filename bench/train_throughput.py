"""Training throughput and padding: padded vs padding-free vs packed batches on the same data.

    python bench/train_throughput.py [--model DIR] [--examples 200] [--micro-batch 8] [--max-seq-length 512]

Runs the local trainer's own recipe (tokenization and masking, SFTConfig, model loading, SFTTrainer) for one
epoch per batching mode and prints, per mode: the batches, the token positions computed, the real (non-padding)
tokens, the share of padding, the training time and real tokens/s. The data are synthetic chats with log-normal
lengths (what makes padding expensive); the model, unless --model is given, is a small random Llama built here.
It runs unchanged on CUDA (device and precision are chosen as the trainer chooses them) and prints the device.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"padded": {}, "padding-free": {"padding_free": True}, "packed": {"packing": True}}
WORDS = ["the", "code", "of", "peru", "is", "four", "letters", "long", "and", "the", "answer", "depends", "on", "what", "the", "user", "asked", "before", "we", "look", "it", "up", "in", "the", "table", "which", "lists", "every", "country", "with", "its", "name", "size", "and", "region"]


def synthetic_chats(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(mean_words: float) -> str:
        count = max(1, min(400, round(rng.lognormvariate(math.log(mean_words), 0.9))))
        return " ".join(rng.choice(WORDS) for _ in range(count))

    return [{"messages": [{"role": "system", "content": "You answer briefly."},
                          {"role": "user", "content": text(30)},
                          {"role": "assistant", "content": text(40)}]} for _ in range(n)]


def words_tokenizer():
    """The test suite's ChatML tokenizer (no generation markers), trained on WORDS: one token per word."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tinymodels import CHATML_TEMPLATE, build_tokenizer

    return build_tokenizer(CHATML_TEMPLATE, extra_texts=[" ".join(WORDS)] * 20, vocab_size=1024)


def build_model(folder: Path) -> Path:
    """A random 4-layer Llama (hidden 256) with ``words_tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = words_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure(mode: str, base: dict, workdir: Path) -> dict:
    import torch
    from ftbroker.backends.local import loading, train_data
    from ftbroker.backends.local import train as recipe
    from ftbroker.backends.local.config import TrainConfig
    from transformers import PrinterCallback

    config = TrainConfig.model_validate(base | MODES[mode])
    device, precision = loading.device_and_precision(config, torch)
    tokenizer = loading.load_tokenizer(config)
    data = train_data.prepare_data(config, tokenizer)
    trainer = recipe.build_trainer(config, tokenizer, data, workdir / mode, device, precision)
    trainer.remove_callback(PrinterCallback)
    # The batches exactly as the trainer builds them (same sampler seed, same collator).
    batches = list(trainer.get_train_dataloader())
    positions = sum(batch["input_ids"].numel() for batch in batches)
    real = sum(len(example.input_ids) for example in data.train)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"mode": mode, "device": device, "precision": precision, "batches": len(batches),
            "positions": positions, "real": real, "padding": 1 - real / positions, "seconds": seconds,
            "tokens_per_s": real / seconds, "positions_per_s": positions / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model folder (default: a small random Llama built here)")
    parser.add_argument("--method", default="lora", choices=["full", "lora", "qlora"])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=512)
    args = parser.parse_args()

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    sys.path.insert(0, str(ROOT / "tests"))
    from tinymodels import write_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = args.model or str(build_model(workdir / "model"))
        base = {"model": model, "dataset": str(write_jsonl(workdir / "data.jsonl", synthetic_chats(args.examples))),
                "method": args.method, "epochs": 1, "eval_fraction": 0, "micro_batch_size": args.micro_batch,
                "max_seq_len": args.max_seq_length, "save_steps": 100000, "logging_steps": 1000,
                "learning_rate": 1e-4, "seed": 0}
        gpu = f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""
        print(f"model: {model if args.model else 'random Llama, 4 layers, hidden 256'}; method {args.method}; "
              f"{args.examples} chats, micro-batch {args.micro_batch}, max_seq_length {args.max_seq_length}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu}")
        rows = [measure(mode, base, workdir) for mode in MODES]
    print(f"device: {rows[0]['device']}{gpu}, precision {rows[0]['precision']}")
    print(f"{'batching':<14}{'batches':>8}{'positions':>11}{'real tok':>10}{'padding':>9}{'seconds':>9}"
          f"{'real tok/s':>12}{'pos/s':>10}")
    for r in rows:
        print(f"{r['mode']:<14}{r['batches']:>8}{r['positions']:>11}{r['real']:>10}{r['padding']:>9.1%}"
              f"{r['seconds']:>9.2f}{r['tokens_per_s']:>12.0f}{r['positions_per_s']:>10.0f}")
    padded = rows[0]["tokens_per_s"]
    for r in rows[1:]:
        print(f"{r['mode']}: {r['tokens_per_s'] / padded:.2f}x the real tokens/s of padded batches")


if __name__ == "__main__":
    main()
