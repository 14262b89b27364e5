"""The local trainer's process: its command line, started detached holding its run folder, found again, signalled.

The trainer (``python -m ftbroker.backends.local.train RUN_DIR [--resume]``, under ``accelerate launch`` on several
GPUs: ``run_command``) runs detached, in its own session, so closing the terminal, Ctrl-C or a crash of the CLI does
not stop it (``detach``). A trainer is known by its pid with the process's start time (``alive``), so a pid reused by
another program is never mistaken for it; ``trainer.pid`` in the run folder names the trainer holding the folder's
lock (``runlock``), so one the ledger does not know of is still found (``trainer_noted``). POSIX only (sessions and
process groups). ``--backend local`` and the EC2 instance's agent start the same command; SkyPilot's nodes too
(``trainer_command``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftbroker.backends.local import runlock
from ftbroker.backends.local.config import CONFIG_NAME, TrainConfig, launch_strategy
from ftbroker.backends.local.outputs import read_json, write_atomic
from ftbroker.errors import ExtraNotInstalledError, FtBrokerError

TRAINER_MODULE = "ftbroker.backends.local.train"


# The detacher: takes the run folder's lock (``runlock``; "busy" when a trainer holds it), starts the trainer in a new
# session holding it, with its output in trainer.log, notes the trainer's pid in trainer.pid (found again if the CLI
# dies before the ledger has it), prints the pid and exits, so the trainer is nobody's child here (no zombie, no
# wait) and outlives the CLI.
_DETACH = (
    "import os, subprocess, sys\n"
    "from ftbroker.backends.local import runlock\n"
    "os.umask(0o077)\n"  # private by default: the trainer's files are 0600, its folders 0700 (ftbroker.private)
    "lock = runlock.take('.')\n"
    "if lock is None:\n"
    "    print('busy')\n"
    "    sys.exit()\n"
    "log = open('trainer.log', 'ab')\n"
    "os.fchmod(log.fileno(), 0o600)\n"  # a log an earlier version left readable
    "proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,"
    " start_new_session=True, pass_fds=(lock,), env=runlock.handed_down(lock))\n"
    "runlock.note(lock, proc.pid)\n"
    "print(proc.pid)\n"
)


def run_command(python: str, config: TrainConfig, run_dir: Path, *, resume: bool, gpu_count: int,
                distributed: str = "auto", script: str | None = None) -> list[str]:
    """The command that trains ``run_dir`` (its config.json is ``config``) on this machine: plain Python on one
    device, ``accelerate launch`` with a config written to the run folder on several GPUs. ``--backend local`` and
    the EC2 instance's agent start the same command."""
    tail = [str(run_dir), *(["--resume"] if resume else [])]
    if gpu_count <= 1:
        return trainer_command(python, tail, script=script)
    path = run_dir / "accelerate.yaml"
    import yaml

    write_atomic(path, yaml.safe_dump(accelerate_config(config, gpu_count, distributed), sort_keys=False))
    return trainer_command(python, tail, script=script, launch=["--config_file", str(path)])


def trainer_command(python: str, tail: Sequence[str], *, script: str | None = None,
                    launch: Sequence[str] = ()) -> list[str]:
    """The trainer's command line: ``python -m TRAINER`` (or a recipe script speaking its contract) with ``tail``
    (the run folder, ``--resume``); with ``launch`` (``accelerate launch``'s own arguments: its config file, and on
    several machines their count, this one's rank and the head's address) under ``accelerate launch``."""
    target = [script] if script else ["-m", TRAINER_MODULE]
    if not launch:
        return [python, *target, *tail]
    return [python, "-m", "accelerate.commands.launch", *launch, *target, *tail]


def accelerate_config(config: TrainConfig, gpu_count: int, distributed: str = "auto", *,
                      machines: int = 1) -> dict[str, Any]:
    """An ``accelerate launch`` config for training ``config`` on ``gpu_count`` GPUs of each of ``machines``
    machines (this one alone by default; on several, each launch adds its rank and the head's address).

    LoRA and QLoRA replicate the (small, or 4-bit) base model on every GPU: DDP. Full fine-tuning shards
    weights, gradients and optimizer states: FSDP2 by default, DeepSpeed ZeRO-3 when asked for.
    """
    processes = gpu_count * machines
    strategy = launch_strategy(config.method, processes, distributed)
    launch: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[strategy],
        "num_machines": machines,
        "machine_rank": 0,
        "num_processes": processes,
        "gpu_ids": "all",
        "mixed_precision": "no",  # the trainer sets its own precision (bf16 where the GPU has it)
        "rdzv_backend": "static",
        "same_network": True,  # one machine, or the nodes of one cluster: a master address and port
        "use_cpu": False,
    }
    if strategy == "fsdp":
        launch["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # the output folder must load as a plain HF model
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            # FSDP2 checkpoints activations itself; the model's own gradient checkpointing must then be off.
            "fsdp_activation_checkpointing": config.gradient_checkpointing,
        }
    elif strategy == "deepspeed":
        launch["deepspeed_config"] = {
            "zero_stage": 3,
            "zero3_init_flag": True,
            "zero3_save_16bit_model": True,
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        }
    return launch


def _psutil():
    try:
        import psutil
    except ImportError as exc:
        raise ExtraNotInstalledError("psutil", "local", "tracking the local trainer process") from exc
    return psutil


def start_time(pid: int) -> str:
    """The process's start time (what tells it apart from a later process given the same pid); '' if gone."""
    psutil = _psutil()
    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return ""


def alive(remote: Mapping[str, str]) -> bool:
    """Whether the trainer recorded in ``remote`` is still running (same pid *and* same start time)."""
    pid, started = remote.get("pid"), remote.get("pid_started")
    if not pid or not started:
        return False
    psutil = _psutil()
    try:
        proc = psutil.Process(int(pid))
        return (abs(proc.create_time() - float(started)) < 0.01
                and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD))
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or another user's process under a reused pid
        return False


def trainer_noted(run_dir: Path, *, ended_too: bool = False) -> dict[str, str] | None:
    """The trainer ``trainer.pid`` names (the one holding the run folder), as ``job.remote`` keeps it, if that process
    is alive and is the one noted: started before the note was written (a second's slack for the clock), so not a
    later program given its pid. With ``ended_too``, also the last trainer of the folder once it has ended (its pid
    without a start time)."""
    noted = runlock.noted(run_dir)
    if noted is None:
        return None
    pid, noted_at = noted
    handles = {"pid": str(pid), "pid_started": "", **run_handles(run_dir), "cancel_requested": ""}
    psutil = _psutil()
    try:
        proc = psutil.Process(pid)
        if proc.create_time() <= noted_at + 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
            return {**handles, "pid_started": repr(proc.create_time())}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return handles if ended_too else None


def detach(command: list[str], run_dir: Path) -> int | None:
    """Start ``command`` detached in ``run_dir`` holding the folder's lock (``_DETACH``): its pid, None when the
    folder is held."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        out = subprocess.run([sys.executable, "-c", _DETACH, *command], cwd=run_dir, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        return None if out == "busy" else int(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise FtBrokerError(f"could not start the trainer ({' '.join(command)}): {exc}") from exc


def run_handles(run_dir: Path) -> dict[str, str]:
    """The run folder, and the model its trainer loads (config.json's: a catalog name's Hugging Face repo)."""
    return {"run_dir": str(run_dir), "base_model": str((read_json(run_dir / CONFIG_NAME) or {}).get("model", ""))}


def signal_trainer(pid: int, sig: signal.Signals) -> None:
    """To the trainer's process group when it leads one (started detached: accelerate's workers too), else to the
    process alone (a trainer started by hand shares its shell's group)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
