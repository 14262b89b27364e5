"""Calibration constants of the estimator: data, fitted by ``bench/estimator_accuracy.py --write`` on published
runs and by ``bench/gpu_calibrate.py --fit --write`` on the local trainer measured on a GPU.

The constants live in ``calibration.toml`` beside this module (shipped as package data) with the date of the
fit and the reference points it used. Reading that shipped file is the only I/O in the estimation package;
every estimate function takes a ``Calibration`` so tests and the bench can pass their own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ftbroker.errors import CatalogError

GPU_CLASSES = ("datacenter", "workstation")
# A measured efficiency carries over to GPUs whose dense peak is this close to the measured one's: the same chip
# generation (H100 SXM and H200 share their 989 TFLOPS), where eager kernels reach the same share of the peak.
SAME_PEAK = 0.10


@dataclass(frozen=True)
class Calibration:
    """Constants the physics does not give. Defaults are the uncalibrated model (scale 1, no overhead)."""

    activation_scale: float = 1.0      # multiplies the per-tensor activation accounting
    allocator_overhead: float = 0.0    # reserved-but-unallocated share of the allocated peak
    cuda_context_gib: float = 0.0      # CUDA context, cuBLAS/cuDNN workspaces: outside the allocator
    # achieved fraction of the GPU's dense bf16 peak, by method then GPU class, for compiled training code
    mfu: dict[str, dict[str, float]] = field(default_factory=dict)
    eager_slowdown: float = 1.0        # eager PyTorch (the local trainer) vs torch.compile
    dequant_bytes_per_param: float = 0.0  # HBM traffic of one bitsandbytes NF4 dequantization, per weight
    multi_gpu_efficiency: float = 1.0  # per-GPU throughput of a sharded run relative to one GPU
    spread: float = 0.25               # relative half-width of the throughput range
    fitted_on: str = ""
    points: tuple[str, ...] = ()
    source: str = "defaults"
    # Measured on a GPU (bench/gpu_calibrate.py --fit): one implementation's achieved fraction of the dense peak by
    # method, used instead of mfu / eager_slowdown for that implementation on GPUs with the same peak. When set,
    # allocator_overhead and cuda_context_gib are that run's readings too.
    measured_on: str = ""              # what was measured, where and when; "" when nothing was
    measured_impl: str = ""            # the Implementation.name measured
    measured_peak_tflops: float = 0.0  # dense bf16 peak of the GPU measured
    measured_mfu: dict[str, float] = field(default_factory=dict)

    def efficiency(self, method: str, gpu_class: str) -> float:
        by_class = self.mfu.get(method) or {}
        if gpu_class in by_class:
            return by_class[gpu_class]
        if by_class:
            return sum(by_class.values()) / len(by_class)
        raise CatalogError(f"calibration has no throughput efficiency for method {method!r}")

    def measured_efficiency(self, impl: str, method: str, peak_tflops: float) -> float | None:
        """The measured efficiency of ``impl`` for ``method`` on a GPU with this dense peak, if there is one."""
        if impl != self.measured_impl or not self.measured_peak_tflops:
            return None
        if abs(peak_tflops / self.measured_peak_tflops - 1) > SAME_PEAK:
            return None
        return self.measured_mfu.get(method)


def parse_calibration(text: str, source: str) -> Calibration:
    try:
        data = tomllib.loads(text)
        mem, thr, fit = data.get("memory", {}), data.get("throughput", {}), data.get("fit", {})
        measured = data.get("measured", {})
        return Calibration(
            activation_scale=float(mem["activation_scale"]),
            allocator_overhead=float(mem["allocator_overhead"]),
            cuda_context_gib=float(mem["cuda_context_gib"]),
            mfu={m: {c: float(v) for c, v in by.items()} for m, by in thr["mfu"].items()},
            eager_slowdown=float(thr["eager_slowdown"]),
            dequant_bytes_per_param=float(thr["dequant_bytes_per_param"]),
            multi_gpu_efficiency=float(thr["multi_gpu_efficiency"]),
            spread=float(thr["spread"]),
            fitted_on=str(fit.get("date", "")),
            points=tuple(str(p) for p in fit.get("points", ())),
            source=source,
            measured_on=str(measured.get("on", "")),
            measured_impl=str(measured.get("implementation", "")),
            measured_peak_tflops=float(measured.get("peak_tflops", 0.0)),
            measured_mfu={m: float(v) for m, v in measured.get("mfu", {}).items()},
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{source}: invalid estimator calibration: {exc}") from exc


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The shipped calibration (read once)."""
    path = resources.files("ftbroker.estimate").joinpath("calibration.toml")
    return parse_calibration(path.read_text(encoding="utf-8"), "ftbroker/estimate/calibration.toml")
