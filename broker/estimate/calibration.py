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


@dataclass(frozen=True)
class TrainerTiming:
    """How one implementation's training step was measured to take its time on a GPU (bench/gpu_calibrate.py --fit).

    step = (host^k + device^k)^(1/k): eager PyTorch launches every kernel from the host, ahead of the GPU, so a
    step takes the longer of the two with partial overlap (k = ``overlap``; k -> infinity is a pure maximum).
    host = ``host_ms[method]`` per decoder layer per pass (forward, backward, and the recompute under
    checkpointing): Python, dispatch and kernel launches, independent of the tokens and of the GPU. device = FLOPs /
    (dense peak x efficiency) + the HBM traffic FLOPs miss / bandwidth (compute.step_traffic_bytes).
    """

    on: str                          # what was measured, where and when
    implementation: str              # the Implementation.name measured
    gpu_class: str                   # of the GPU measured ("datacenter" for an H200)
    peak_tflops: float               # its dense bf16 peak
    device_efficiency: float         # fraction of that peak the FLOP count reaches when the GPU is the bound
    host_ms: dict[str, float]        # by method: host milliseconds per decoder layer per pass
    overlap: float                   # k of the smooth maximum
    dequant_bytes_per_param: float   # HBM bytes one NF4 dequantization moves per weight and pass
    allocator_overhead: dict[str, float]  # by method: max_memory_reserved / max_memory_allocated - 1
    cuda_context_gib: float          # device memory in use outside the allocator

    def host_seconds(self, method: str, layers: int, passes: int) -> float:
        return self.host_ms[method] * 1e-3 * layers * passes


@dataclass(frozen=True)
class StackCheck:
    """How far one stack's estimates were from measured runs held out of the fit (bench/estimator_accuracy.py):
    what a user of ``--stack`` is told about how much to trust the figures."""

    runs: int            # runs whose peak memory was compared
    median: float        # |error| of peak memory, median (0.05: 5%)
    p90: float           # ... 90th percentile
    misses: int          # runs off by more than 10%
    under: int           # of those, the ones the estimate under-states (an out-of-memory it did not predict)
    measured_on: str     # what the runs were ("published axolotl runs", "the trainer on an H200")

    @property
    def mostly_under(self) -> bool:
        """More than a third of the misses are under-estimates: the figure is no safe upper bound."""
        return self.misses > 0 and 3 * self.under > self.misses


@dataclass(frozen=True)
class Calibration:
    """Constants the physics does not give. Defaults are the uncalibrated model (scale 1, no overhead).

    The published-run constants (activation_scale to spread) describe the frameworks of bench/data's reference
    points; ``trainer``, when set, is what the local trainer was measured to do and replaces them for that
    implementation (its allocator overhead, CUDA context and step time)."""

    activation_scale: float = 1.0      # multiplies the per-tensor activation accounting
    allocator_overhead: float = 0.0    # reserved-but-unallocated share of the allocated peak
    # the same, fitted per stack (by Implementation.name) where its published runs report reserved memory
    allocator_overhead_by: dict[str, float] = field(default_factory=dict)
    cuda_context_gib: float = 0.0      # CUDA context, cuBLAS/cuDNN workspaces: outside the allocator
    # achieved fraction of the GPU's dense bf16 peak, by method then GPU class, for compiled training code
    mfu: dict[str, dict[str, float]] = field(default_factory=dict)
    eager_slowdown: float = 1.0        # eager PyTorch vs torch.compile, from the published runs
    eager_slowdown_by: dict[str, float] = field(default_factory=dict)  # the same per stack (Implementation.name)
    dequant_bytes_per_param: float = 0.0  # HBM traffic of one bitsandbytes NF4 dequantization, per weight
    multi_gpu_efficiency: float = 1.0  # per-GPU throughput of a sharded run relative to one GPU
    comm_overlap: float = 2.0          # k of the smooth maximum of compute and communication (1: no overlap)
    spread: float = 0.25               # relative half-width of the throughput range
    fitted_on: str = ""
    points: tuple[str, ...] = ()
    source: str = "defaults"
    trainer: TrainerTiming | None = None
    checks: dict[str, StackCheck] = field(default_factory=dict)  # by stack name; none for a stack never checked
    # the user's own measured runs of this (GPU, method, stack) (``ftbroker.estimate.measured``): the allocated
    # peak and the step time multiplied by these; 1.0 without runs
    your_memory: float = 1.0
    your_time: float = 1.0
    your_runs: str = ""  # what they are, said beside the figures ("calibrated on 3 of your runs: ...")

    def efficiency(self, method: str, gpu_class: str) -> float:
        by_class = self.mfu.get(method) or {}
        if gpu_class in by_class:
            return by_class[gpu_class]
        if by_class:
            return sum(by_class.values()) / len(by_class)
        raise CatalogError(f"calibration has no throughput efficiency for method {method!r}")

    def eager(self, impl: str) -> float:
        """How much slower than compiled code this implementation's eager code runs (its stack's, else the mean)."""
        return self.eager_slowdown_by.get(impl, self.eager_slowdown)

    def measured(self, impl: str) -> TrainerTiming | None:
        """The GPU measurement of ``impl``, if it is the implementation measured."""
        return self.trainer if self.trainer is not None and self.trainer.implementation == impl else None

    def memory_constants(self, impl: str, method: str) -> tuple[float, float, float]:
        """(activation scale, allocator overhead share, CUDA context GiB) for this implementation and method. The
        measured implementation's activations are counted tensor by tensor as its autograd saves them (checked on
        CPU in tests/test_estimate_autograd.py): no scale."""
        measured = self.measured(impl)
        if measured is not None and method in measured.allocator_overhead:
            return 1.0, measured.allocator_overhead[method], measured.cuda_context_gib
        return (self.activation_scale, self.allocator_overhead_by.get(impl, self.allocator_overhead),
                self.cuda_context_gib)

    def device_efficiency(self, impl: str, method: str, gpu_class: str) -> float:
        """Fraction of the dense peak the FLOP count reaches when the GPU bounds the step.

        The measured implementation: its measured efficiency, carried to other GPU classes in proportion to the
        published compiled efficiencies (so an H100 SXM, of the H200's class and die, gets the measured one).
        Other implementations: the published compiled efficiency (the caller divides eager code by the slowdown).
        """
        measured = self.measured(impl)
        if measured is None:
            return self.efficiency(method, gpu_class)
        if gpu_class == measured.gpu_class:
            return measured.device_efficiency
        ratio = self.efficiency(method, gpu_class) / self.efficiency(method, measured.gpu_class)
        return measured.device_efficiency * ratio


def parse_calibration(text: str, source: str) -> Calibration:
    try:
        data = tomllib.loads(text)
        mem, thr, fit = data.get("memory", {}), data.get("throughput", {}), data.get("fit", {})
        trainer = None
        if "trainer" in data:
            t = data["trainer"]
            trainer = TrainerTiming(
                on=str(t["on"]), implementation=str(t["implementation"]), gpu_class=str(t["gpu_class"]),
                peak_tflops=float(t["peak_tflops"]), device_efficiency=float(t["device_efficiency"]),
                host_ms={m: float(v) for m, v in t["host_ms"].items()}, overlap=float(t["overlap"]),
                dequant_bytes_per_param=float(t["dequant_bytes_per_param"]),
                allocator_overhead={m: float(v) for m, v in t["allocator_overhead"].items()},
                cuda_context_gib=float(t["cuda_context_gib"]))
            if trainer.gpu_class not in GPU_CLASSES or not 0 < trainer.device_efficiency <= 1 or trainer.overlap < 1:
                raise ValueError("[trainer]: gpu_class, device_efficiency in (0, 1] and overlap >= 1 expected")
        return Calibration(
            activation_scale=float(mem["activation_scale"]),
            allocator_overhead=float(mem["allocator_overhead"]),
            allocator_overhead_by={k: float(v) for k, v in mem.get("allocator_overhead_by_stack", {}).items()},
            cuda_context_gib=float(mem["cuda_context_gib"]),
            mfu={m: {c: float(v) for c, v in by.items()} for m, by in thr["mfu"].items()},
            eager_slowdown=float(thr["eager_slowdown"]),
            eager_slowdown_by={k: float(v) for k, v in thr.get("eager_slowdown_by_stack", {}).items()},
            dequant_bytes_per_param=float(thr["dequant_bytes_per_param"]),
            multi_gpu_efficiency=float(thr["multi_gpu_efficiency"]),
            comm_overlap=float(thr.get("comm_overlap", 2.0)),
            spread=float(thr["spread"]),
            fitted_on=str(fit.get("date", "")),
            points=tuple(str(p) for p in fit.get("points", ())),
            source=source,
            trainer=trainer,
            checks={name: StackCheck(runs=int(c["runs"]), median=float(c["median"]), p90=float(c["p90"]),
                                     misses=int(c["misses"]), under=int(c["under"]),
                                     measured_on=str(c["measured_on"]))
                    for name, c in data.get("checks", {}).items()},
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{source}: invalid estimator calibration: {exc}") from exc


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The shipped calibration (read once)."""
    path = resources.files("ftbroker.estimate").joinpath("calibration.toml")
    return parse_calibration(path.read_text(encoding="utf-8"), "ftbroker/estimate/calibration.toml")
