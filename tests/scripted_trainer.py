"""A stand-in for the trainer that speaks its contract (train.py's docstring) in milliseconds, for tests of the
broker's process and ledger handling where what is trained does not matter (two CLI processes at once, an EC2
instance's agent, a spot reclaim, a stall, a cancel).

    python scripted_trainer.py RUN_DIR [--resume]

Reads RUN_DIR/config.json (a TrainConfig), appends the trainer's event kinds to RUN_DIR/events.jsonl (started,
running, progress, checkpoint, then done / error / cancelled), keeps checkpoint-STEP folders (each with the
trainer_state.json the real trainer writes last) and writes result.json as the trainer does (a Result with
``raw.measured``). With ``--resume`` it continues from the newest checkpoint. Set by the environment:
FTB_SCRIPT_STEPS (default 2) steps of FTB_SCRIPT_STEP_S seconds (default 0.02), a checkpoint every
FTB_SCRIPT_SAVE_STEPS steps (default: at the end only); FTB_SCRIPT_FAIL=MESSAGE fails at once with that message.
It trains nothing: the real trainer runs in test_local_e2e.py, test_backend_ec2.py, test_skypilot_real_runs.py and
the contract suite.
"""

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

run_dir = Path(sys.argv[1])
steps = int(os.environ.get("FTB_SCRIPT_STEPS", "2"))
step_s = float(os.environ.get("FTB_SCRIPT_STEP_S", "0.02"))
save_steps = int(os.environ.get("FTB_SCRIPT_SAVE_STEPS", "0"))
config = json.loads((run_dir / "config.json").read_text())
checkpoints = run_dir / "checkpoints"
checkpoints.mkdir(exist_ok=True)
saved = [int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/trainer_state.json")]
step = max(saved) if "--resume" in sys.argv[2:] and saved else 0


def now():
    return datetime.now(UTC).isoformat()


def emit(kind, message="", **fields):
    line = json.dumps({"time": now(), "kind": kind, "message": message, "total_steps": steps, **fields})
    with (run_dir / "events.jsonl").open("a") as fh:
        fh.write(line + "\n")
    if os.environ.get("FTBROKER_EVENTS_TO_STDOUT"):  # as the trainer's EventLog does
        print("ftbroker-event " + line, flush=True)


def checkpoint():
    folder = checkpoints / f"checkpoint-{step}"
    folder.mkdir(exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # last, as the trainer does
    return folder


def finish(status, kind, message, **extra):
    result = {"id": config["job_id"], "backend": "local", "status": status, "model": config["model"],
              "started_at": now(), "finished_at": now(), "raw": {"measured": {"device": "cpu", "tokens_per_s": 1e3,
                                                                               "peak_memory_bytes": 2**29}}, **extra}
    (run_dir / "result.json").write_text(json.dumps(result))
    emit(kind, message, step=step)


def on_sigterm(signum, frame):
    checkpoint()
    finish("cancelled", "cancelled", f"stopped by SIGTERM at step {step}")
    sys.exit(143)


signal.signal(signal.SIGTERM, on_sigterm)
emit("started", "starting")
if os.environ.get("FTB_SCRIPT_FAIL"):  # fails as the trainer does: an error event, result.json, exit 1
    finish("failed", "error", os.environ["FTB_SCRIPT_FAIL"], error=os.environ["FTB_SCRIPT_FAIL"])
    sys.exit(1)
emit("running", "training", step=step)
while step < steps:
    time.sleep(step_s)
    step += 1
    emit("progress", step=step, epoch=step / steps, loss=round(2.0 / step, 4), tokens_per_s=1000.0)
    if save_steps and step % save_steps == 0 and step < steps:
        emit("checkpoint", str(checkpoint()), step=step)
emit("checkpoint", str(checkpoint()), step=step)
output = run_dir / "output" / "adapter"
output.mkdir(parents=True, exist_ok=True)
(output / "adapter_config.json").write_text("{}")
finish("succeeded", "done", f"trained {step} steps", output_model=str(output), trained_tokens=100 * steps,
       metrics=[{"step": s, "name": "train_loss", "value": round(2.0 / s, 4)} for s in range(1, steps + 1)])
