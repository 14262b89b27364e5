"""Estimate from Python, without a dataset: which method fits a model on a GPU, how much memory, how fast.

    python examples/sdk_estimate.py                       # Llama-3.1-8B on an RTX 4090, the trainer's defaults
    python examples/sdk_estimate.py Qwen2.5-7B H100:2 --seq-len 4096 --batch 8
    python examples/sdk_estimate.py Llama-3.1-8B RTX-4090 --stack unsloth   # as Unsloth would train it

``ftbroker.estimate()`` is the calculator behind ``ftbroker estimate``: the model and the GPU are catalog names
(the model may also be a local model folder or a config.json). Settings left out are the stack's (by default
ftbroker's own trainer: micro-batch 4, sequences of 2048, gradient checkpointing), so the figures are those
``ftbroker plan`` and ``ftbroker run`` show for the same settings. The result holds the peak VRAM per GPU as a
breakdown, whether it fits, the largest micro-batch and sequence that would, and the tokens/s range.
"""

from __future__ import annotations

import argparse

import ftbroker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="Llama-3.1-8B", help="a catalog model (default Llama-3.1-8B)")
    parser.add_argument("gpu", nargs="?", default="RTX-4090", help="a catalog GPU, NAME[:COUNT] (default RTX-4090)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: the stack's, 2048)")
    parser.add_argument("--batch", type=int, help="micro-batch per GPU (default: the stack's)")
    parser.add_argument("--stack", default="ftbroker", choices=sorted(ftbroker.estimate.STACKS),
                        help="the trainer that runs it (default: ftbroker's own)")
    args = parser.parse_args(argv)

    for method in ("full", "lora", "qlora"):
        e = ftbroker.estimate(args.model, method=method, gpu=args.gpu, stack=args.stack, seq_len=args.seq_len,
                              micro_batch=args.batch)
        biggest = max(e.memory.components().items(), key=lambda item: item[1])
        tokens = e.throughput.tokens_per_s if e.throughput else None
        speed = f"{tokens.expected:,.0f} tokens/s" if tokens else "tokens/s unknown"
        verdict = ("fits" if e.fits else f"does not fit (micro-batch {e.max_micro_batch} would)" if e.max_micro_batch
                   else f"does not fit at micro-batch {e.setup.micro_batch} or any smaller")
        print(f"{e.arch.name} {method:5}: {e.memory.total:6.1f} GiB per GPU at micro-batch {e.setup.micro_batch} x "
              f"{e.setup.seq_len} (most of it {biggest[0]}: "
              f"{biggest[1]:.1f}), {verdict} on {e.setup.n_gpus}x{e.gpu.name}, {speed}")
    print("e.to_json() has every figure; e.explain() the derivation (ftbroker estimate ... --explain)")


if __name__ == "__main__":
    main()
