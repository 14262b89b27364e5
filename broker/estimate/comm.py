"""Communication time of data-parallel training across nodes. Pure.

One function, so that it can be merged with (or replaced by) a fuller multi-GPU model: the seconds one
synchronisation takes, from the bytes it moves and the bandwidth of the slowest link it crosses.

The volumes are those of ring collectives (NCCL's algorithm bandwidth: an all-reduce of S bytes over n ranks moves
2 (n - 1) / n x S through each rank's link, an all-gather or a reduce-scatter (n - 1) / n x S; NCCL tests,
https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md):

* DDP (LoRA, QLoRA): one all-reduce of the trainable gradients per optimizer step (gradient accumulation skips the
  synchronisation of the other micro-batches);
* FSDP / ZeRO-3 (full fine-tuning): the parameters are all-gathered for the forward and again for the backward,
  and the gradients reduce-scattered, on every micro-batch: 3 (n - 1) / n x the model's bytes, 1.5x DDP's volume
  (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", 2020, section 7).

Across nodes the bottleneck is the network between them: ``link_gb_per_s`` is one node's inter-node bandwidth
(its NICs together, the figure NCCL's bus bandwidth approaches on multi-node runs). No overlap with compute is
assumed, which makes the figure an upper bound: DDP overlaps its all-reduce with the backward pass and FSDP
prefetches the next layer's parameters.
"""

from __future__ import annotations

from ftbroker.errors import InputError


def comm_seconds_per_step(*, param_bytes: float, grad_bytes: float, ranks: int, sharded: bool,
                          link_gb_per_s: float) -> float:
    """Seconds of one synchronisation: an optimizer step under DDP (``sharded`` False: the gradients,
    ``grad_bytes``, all-reduced), a micro-batch under FSDP (``sharded`` True: ``param_bytes`` all-gathered twice,
    ``grad_bytes`` reduce-scattered). ``ranks``: processes taking part (nodes x GPUs per node); 0 with one."""
    if ranks <= 1:
        return 0.0
    if link_gb_per_s <= 0:
        raise InputError(f"link bandwidth must be positive, got {link_gb_per_s} GB/s")
    share = (ranks - 1) / ranks
    moved = share * (2 * param_bytes + grad_bytes) if sharded else share * 2 * grad_bytes
    return moved / (link_gb_per_s * 1e9)
