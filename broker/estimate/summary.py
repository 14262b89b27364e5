"""One setup on one GPU type, summed up: memory, fit, the largest batch and sequence, throughput. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ftbroker.estimate.calibration import Calibration, StackCheck, default_calibration
from ftbroker.estimate.compute import Throughput, peak_tflops, throughput
from ftbroker.estimate.memory import MemoryBreakdown, estimate_memory, max_micro_batch, max_seq_len
from ftbroker.estimate.setup import ModelShape, TrainingSetup
from ftbroker.pricing.catalog import GpuSpec, ModelArch


@dataclass(frozen=True)
class Estimate:
    arch: ModelArch
    setup: TrainingSetup
    gpu: GpuSpec | None
    memory: MemoryBreakdown
    fits: bool | None              # None without a GPU
    max_micro_batch: int | None    # at setup.seq_len; 0 when even 1 does not fit
    max_seq_len: int | None        # at setup.micro_batch; 0 when even 64 tokens do not fit
    throughput: Throughput | None
    calibration: Calibration

    @property
    def check(self) -> StackCheck | None:
        """How far this trainer's estimates were from measured runs held out of the fit (None: never checked)."""
        return self.calibration.checks.get(self.setup.impl.name)

    def to_json(self) -> dict[str, Any]:
        s = self.setup
        tput = self.throughput
        return {
            "model": self.arch.name,
            "method": s.method,
            "setup": {
                "seq_len": s.seq_len, "micro_batch": s.micro_batch, "grad_accumulation": s.grad_accumulation,
                "grad_checkpointing": s.grad_checkpointing, "optimizer": s.optimizer_kind.name,
                "precision": s.precision, "packing": s.packing, "n_gpus": s.n_gpus, "sharding": s.sharding,
                "implementation": s.impl.name,
                **({"lora_r": s.lora_r, "lora_dropout": s.lora_dropout, "targets": sorted(s.lora_modules)}
                   if s.method != "full" else {}),
            },
            "gpu": None if self.gpu is None else {"name": self.gpu.name, "count": s.n_gpus,
                                                  "memory_gib": self.gpu.memory_gib},
            "vram_gib": round(self.memory.total, 3),
            "breakdown": self.memory.to_json(),
            "fits": self.fits,
            "max_micro_batch": self.max_micro_batch,
            "max_seq_len": self.max_seq_len,
            "tokens_per_s": tput.tokens_per_s.to_json(1) if tput and tput.tokens_per_s else None,
            "tokens_per_s_per_gpu": (tput.tokens_per_s_per_gpu.to_json(1) if tput and tput.tokens_per_s_per_gpu
                                     else None),
            "flops_per_token": round(tput.flops.total) if tput else None,
            "params": ModelShape(self.arch).total_params,
            "assumptions": [*self.memory.assumptions, *(tput.assumptions if tput else ())]
            + ([tput.reason] if tput and tput.reason else []),
            "calibration": {"fitted_on": self.calibration.fitted_on, "source": self.calibration.source,
                            "your_runs": self.calibration.your_runs or None},
            "checked": None if self.check is None else {**asdict(self.check), "mostly_under": self.check.mostly_under},
        }

    def explain(self) -> str:
        """A readable derivation: every term with its formula and numbers."""
        m, s = self.memory, self.setup
        on = f" on {s.n_gpus} x {self.gpu.name}" if self.gpu else ""
        lines = [f"{self.arch.name}, {s.method}, micro-batch {s.micro_batch} x {s.seq_len} tokens{on}", "",
                 "Memory terms (per GPU):"]
        lines += [f"  {t.name:22} {t.gib:9.3f} GiB   {t.formula}" for t in m.terms]
        lines += ["", f"Peak during the {m.phase} phase:"]
        lines += [f"  {name:22} {gib:9.3f} GiB" for name, gib in m.components().items() if gib]
        lines.append(f"  {'total':22} {m.total:9.3f} GiB  (allocated {m.allocated:.3f} + "
                     f"{m.allocator_overhead:.3f} allocator overhead + {m.cuda_context:.2f} GiB CUDA context)")
        if m.optimizer_paged:
            lines.append(f"  (+ {m.optimizer_paged:.3f} GiB paged optimizer states in unified memory)")
        if self.gpu is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines += ["", (f"{verdict} in {self.gpu.memory_gib:g} GiB; largest micro-batch at {s.seq_len} tokens:"
                           f" {self.max_micro_batch}; longest sequence at micro-batch {s.micro_batch}: "
                           f"{self.max_seq_len}")]
        tput = self.throughput
        if tput is not None and self.gpu is not None:  # a throughput is only ever worked out for a GPU
            lines += ["", f"Compute: {tput.flops.total / 1e9:.2f} GFLOP per token"]
            lines += [f"  {t}" for t in tput.flops.terms]
            if tput.tokens_per_s is not None:
                r = tput.tokens_per_s
                lines.append(f"Throughput: {r.low:,.0f} / {r.expected:,.0f} / {r.high:,.0f} tokens/s "
                             f"(low/expected/high) = {peak_tflops(self.gpu):g} TFLOPS x {tput.efficiency:.1%} "
                             "achieved / FLOPs per token")
                lines += [f"  {a}" for a in tput.assumptions]
            else:
                lines.append(f"Throughput unknown: {tput.reason}")
        if m.assumptions:
            lines += ["", "Assumptions:"] + [f"  - {a}" for a in m.assumptions]
        cal = self.calibration
        lines += ["", f"Calibration: {cal.source}, fitted {cal.fitted_on or 'never'} on {len(cal.points)} "
                      "published runs" + (f"; {cal.your_runs} (x {cal.your_memory:.3f} memory, x {cal.your_time:.3f} "
                                          "time)" if cal.your_runs else "")]
        lines.append(check_text(self.check, s.impl.name))
        return "\n".join(lines)


def check_text(check: StackCheck | None, stack: str) -> str:
    """One sentence on how much to trust a stack's memory figures."""
    if check is None:
        return f"Not checked against measured {stack} runs: the memory figure is the model's alone."
    text = (f"Checked against {check.runs} {check.measured_on}: peak memory off by {check.median:.0%} (median), "
            f"{check.p90:.0%} (p90)")
    if check.mostly_under:
        return text + f"; {check.under} of the {check.misses} runs off by over 10% needed more: leave headroom."
    return text + "."


def summarize(arch: ModelArch, setup: TrainingSetup, gpu: GpuSpec | None = None,
              calibration: Calibration | None = None) -> Estimate:
    cal = calibration or default_calibration()
    memory = estimate_memory(arch, setup, cal)
    if gpu is None:
        return Estimate(arch, setup, None, memory, None, None, None, None, cal)
    return Estimate(arch, setup, gpu, memory, fits=memory.total <= gpu.memory_gib,
                    max_micro_batch=max_micro_batch(arch, gpu, setup, calibration=cal),
                    max_seq_len=max_seq_len(arch, gpu, setup, calibration=cal),
                    throughput=throughput(arch, gpu, setup, cal), calibration=cal)
