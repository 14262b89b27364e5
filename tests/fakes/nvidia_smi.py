"""A stand-in ``nvidia-smi``: this machine's GPUs as a test says, through the one door the product asks.

``detect_gpus`` runs the ``nvidia-smi`` it finds on PATH with its CSV query; ``install`` puts a script of that name
first on PATH that prints the GPUs given (or, given none, what nvidia-smi says on a machine without a GPU), so a
test sets the machine up rather than patching the product, and the real parsing runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NO_DEVICES = "echo 'No devices were found'\nexit 6\n"  # nvidia-smi on a machine whose driver sees no GPU


def csv_lines(*gpus: Any) -> str:
    """The answer to ``--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`` (MiB)."""
    return "".join(f"{i}, GPU-{i:08x}-fake, {gpu.name}, {round(gpu.memory_gib * 1024)}\n"
                   for i, gpu in enumerate(gpus))


def install(monkeypatch: Any, folder: Path, *gpus: Any, output: str | None = None) -> Path:
    """An ``nvidia-smi`` in ``folder``, first on PATH, that reports ``gpus`` (``Gpu``s) or prints ``output`` as it
    is; every GPU it reports is visible (CUDA_VISIBLE_DEVICES unset)."""
    output = csv_lines(*gpus) if output is None else output
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + (f"cat <<'END'\n{output}END\n" if output else NO_DEVICES))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return script
