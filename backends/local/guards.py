"""Guards against silently wrong gradients.

The 4-bit CPU trap (bitsandbytes >= 0.48 on CPUs with AVX512-BF16): an eval-mode, no-grad forward of a
``Linear4bit`` (any evaluation or ``generate()``) repacks its weight, once and for good, into a CPU inference
layout. Later training forwards then run through ``gemv_4bit``, which has no autograd kernel, so the
gradient through every frozen 4-bit base layer is dropped without an error. Measured: layer-0 LoRA gradients
off by 85-100% and a run ending at eval loss 2.6 instead of 0.96.

``disable_cpu_weight_repacking`` is the workaround; ``check_4bit_input_gradients`` detects the trap (or any
other broken 4-bit backward) by comparing, for every 4-bit layer, the input gradient autograd returns with
the one the layer's own forward implies; ``check_adapter_gradients`` checks after a real step that every
trainable tensor received a gradient and every LoRA B matrix a non-zero one.
"""

from __future__ import annotations

import warnings

from ftbroker.errors import FtBrokerError

# A correct backward in bf16 agrees to about 1e-2; the trap gives a relative error of 1 (no gradient).
_TOLERANCE = 0.1
_PROBE_ROWS = 4


class WrongGradientError(FtBrokerError):
    """Training would run with wrong gradients; stopped before it wastes the run."""


def disable_cpu_weight_repacking(model) -> int:
    """Keep every ``Linear4bit`` in its trainable layout; returns how many layers were set."""
    import bitsandbytes

    layers = [m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def check_4bit_input_gradients(model) -> None:
    """Raise ``WrongGradientError`` if any 4-bit layer's backward disagrees with its forward.

    For a linear layer y = W x + b and probe directions d, choosing the output gradient g = W d makes the
    directional derivative <dL/dx, d> equal ||W d||^2, which the forward alone gives. Inputs require grad
    throughout, so the probe itself never triggers the repacking it looks for.
    """
    import bitsandbytes
    import torch

    generator = torch.Generator().manual_seed(0)
    broken, notes = [], set()
    for name, layer in model.named_modules():
        if not isinstance(layer, bitsandbytes.nn.Linear4bit):
            continue
        dtype = layer.compute_dtype or torch.float32
        device = layer.weight.device

        def probe(rows):
            return rows.to(device=device, dtype=dtype).requires_grad_()  # noqa: B023 - used at once

        directions = torch.randn(_PROBE_ROWS, layer.in_features, generator=generator)
        point = torch.randn(_PROBE_ROWS, layer.in_features, generator=generator)
        with torch.enable_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bias = layer(probe(torch.zeros(1, layer.in_features))).detach().float()
            image = layer(probe(directions)).detach().float() - bias  # W d
            x = probe(point)
            output = layer(x)
            try:
                (grad,) = torch.autograd.grad(output, x, image.to(output.dtype))
            except RuntimeError as exc:  # the output does not even depend on x in autograd's eyes
                broken.append((name, 1.0))
                notes.add(str(exc).splitlines()[0].rstrip("."))
                continue
        notes.update(str(w.message).splitlines()[0].rstrip(".") for w in caught if "autograd" in str(w.message))
        expected = (image * image).sum(dim=1)
        actual = (grad.float() * directions.to(device)).sum(dim=1)
        error = ((actual - expected).abs() / expected.clamp_min(1e-12)).max().item()
        if error > _TOLERANCE:
            broken.append((name, error))
    if broken:
        listed = ", ".join(f"{name} (relative error {error:.2f})" for name, error in broken[:5])
        more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        detail = f"; torch said: {'; '.join(sorted(notes))}" if notes else ""
        raise WrongGradientError(
            f"4-bit layers return wrong input gradients: {listed}{more}{detail}. On CPUs with AVX512-BF16, "
            "bitsandbytes repacks 4-bit weights for inference after an eval or generate() and drops their "
            "gradients from then on; training stopped instead of producing a silently bad model. "
            "Set support_avx512bf16_for_cpu=False on every Linear4bit before evaluating, or train on a GPU."
        )


def check_adapter_gradients(model) -> None:
    """After a backward pass: every trainable tensor has a gradient, and LoRA B matrices non-zero ones."""
    missing, zero = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:
            missing.append(name)
        elif "lora_B" in name and not param.grad.abs().sum().item() > 0:
            zero.append(name)
    if missing or zero:
        parts = []
        if missing:
            parts.append(f"no gradient for {len(missing)} trainable tensors (first: {missing[0]})")
        if zero:
            parts.append(f"all-zero gradient for {len(zero)} LoRA B matrices (first: {zero[0]})")
        raise WrongGradientError(
            "after the first step, " + " and ".join(parts) + "; the adapter would not learn. A frequent cause is "
            "gradient checkpointing without input gradients, or layers frozen by the model's loading code."
        )
