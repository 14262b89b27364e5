"""A scripted stand-in for the trainer, speaking the same contract, for testing the local backend's process handling.

    python scripted_trainer.py RUN_DIR [--resume]

Reads RUN_DIR/config.json, appends events to RUN_DIR/events.jsonl, keeps a checkpoint per step under
RUN_DIR/checkpoints/, writes RUN_DIR/result.json at the end. On SIGTERM it checkpoints, writes a ``cancelled``
event and exits 143, as the real trainer must. What it does is set by the environment (inherited through the
launch): FTB_SCRIPT_MODE = succeed | fail | hang, FTB_SCRIPT_STEPS (default 4), FTB_SCRIPT_STEP_S (default 0.05).
It trains nothing: the real trainer's own tests cover training.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

run_dir = Path(sys.argv[1])
resume = "--resume" in sys.argv[2:]
mode = os.environ.get("FTB_SCRIPT_MODE", "succeed")
steps = int(os.environ.get("FTB_SCRIPT_STEPS", "4"))
step_s = float(os.environ.get("FTB_SCRIPT_STEP_S", "0.05"))
config = json.loads((run_dir / "config.json").read_text())
checkpoints = run_dir / "checkpoints"
checkpoints.mkdir(exist_ok=True)


def emit(kind, **fields):
    with (run_dir / "events.jsonl").open("a") as fh:
        fh.write(json.dumps({"time": time.time(), "kind": kind, **fields}) + "\n")


def last_checkpoint():
    done = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
    return done[-1] if done else 0


step = last_checkpoint() if resume else 0


def on_sigterm(signum, frame):
    (checkpoints / f"step-{step}").mkdir(exist_ok=True)
    emit("cancelled", step=step, message=f"stopped at step {step}; checkpoint saved")
    sys.exit(143)


signal.signal(signal.SIGTERM, on_sigterm)
emit("start", total_steps=steps, message=f"job {config['job_id']}" + (f", resumed at step {step}" if resume else ""))
while step < steps:
    time.sleep(3600 if mode == "hang" and step >= 1 else step_s)
    step += 1
    (checkpoints / f"step-{step}").mkdir(exist_ok=True)
    emit("step", step=step, total_steps=steps, epoch=step / steps, loss=round(2.0 / step, 4),
         tokens_per_s=1000.0, eta_s=(steps - step) * step_s)
    if mode == "fail" and step == 2:
        emit("error", step=step, message="CUDA out of memory. Tried to allocate 2.00 GiB (scripted failure)")
        sys.exit(1)
output = run_dir / "output"
output.mkdir(exist_ok=True)
(output / "adapter_config.json").write_text("{}")
(run_dir / "metrics.jsonl").write_text("")
(run_dir / "result.json").write_text(json.dumps({
    "status": "succeeded", "output_model": str(output), "trained_tokens": 100 * steps,
    "resources": {"peak_memory_gib": 0.5, "tokens_per_s": 1000.0},
}))
emit("done", step=step, total_steps=steps, message="training finished")
