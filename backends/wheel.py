"""This very ftbroker as a wheel, for a remote machine (an EC2 instance, a SkyPilot cluster) to install: the version
on PyPI (if any) may not be the one that planned and launched the job, and the trainer there must be the one the
quote was made for.

The wheel (https://packaging.python.org/en/latest/specifications/binary-distribution-format/) is assembled from
what is installed here: the files the installation recorded (a regular install), or, for an editable install of a
checkout (PEP 610 ``direct_url.json``), the packages and package data its ``pyproject.toml`` declares (setuptools'
``package-dir`` mapping). Its METADATA is the installed one, so ``ftbroker-X-py3-none-any.whl[local]`` resolves
the same extras. Its entries carry a fixed time, so the same code makes the same bytes (EC2 uploads it once).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from ftbroker.errors import FtBrokerError

DIST = "ftbroker"
_WHEEL = "Wheel-Version: 1.0\nGenerator: ftbroker\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def build_wheel(dest: Path) -> Path:
    """Write the wheel of the installed ftbroker into ``dest``; its path."""
    dist = _installed()
    info = f"{DIST}-{dist.version}.dist-info"
    path = dest / f"{DIST}-{dist.version}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        def add(name: str, data: bytes) -> None:
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # no build time: same code, same bytes
            entry.external_attr = 0o644 << 16
            whl.writestr(entry, data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append((name, f"sha256={digest}", str(len(data))))

        for name, source in sorted(_package_files(dist)):
            add(name, source.read_bytes())
        add(f"{info}/METADATA", (dist.read_text("METADATA") or "").encode())
        add(f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode())
        add(f"{info}/WHEEL", _WHEEL.encode())
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([*records, (f"{info}/RECORD", "", "")])
        add(f"{info}/RECORD", out.getvalue().encode())
    return path


def _installed() -> importlib.metadata.Distribution:
    """The installed distribution (a checkout's ``*.egg-info`` build folder, found first from its root, is not)."""
    for dist in importlib.metadata.distributions(name=DIST):
        if dist.read_text("RECORD") is not None:
            return dist
    raise FtBrokerError(f"{DIST} is not installed (pip install ftbroker, or pip install -e . in a checkout), so "
                        "there is no ftbroker to send to the cluster")


def _package_files(dist: importlib.metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file here) of every module and data file of the installed packages."""
    checkout = _editable_checkout(dist)
    if checkout is None:
        for file in dist.files or ():
            if file.parts[0] == DIST and file.suffix != ".pyc":
                yield file.as_posix(), Path(dist.locate_file(file))
        return
    setup = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setup["packages"]:
        folder = checkout / setup["package-dir"][package]
        prefix = package.replace(".", "/")
        for pattern in ("*.py", *setup.get("package-data", {}).get(package, [])):  # subpackages come on their own
            for file in sorted(folder.glob(pattern)):
                if file.is_file():
                    yield f"{prefix}/{file.relative_to(folder).as_posix()}", file


def _editable_checkout(dist: importlib.metadata.Distribution) -> Path | None:
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    direct = json.loads(raw)
    if not direct.get("dir_info", {}).get("editable"):
        return None
    return Path(unquote(urlparse(direct["url"]).path))
