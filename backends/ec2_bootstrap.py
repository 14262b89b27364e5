"""What goes to an EC2 instance for a job: a wheel of the running ftbroker (``build_wheel``: the instance runs the
very code that launched it, released or not) and the user data that installs it and starts the agent
(``user_data``: ``ec2_bootstrap.sh`` for one attempt, every value shell-quoted).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import shlex
import zipfile
from pathlib import Path

from ftbroker import __version__
from ftbroker.errors import FtBrokerError

USER_DATA_LIMIT = 16 * 1024  # bytes, before base64 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html)
WHEEL_URL_TTL_S = 6 * 3600  # the bootstrap downloads the wheel within minutes of the launch
# The folders the ftbroker package is assembled from (pyproject's package-dir); a wheel of the running ftbroker
# is built from them, so the instance runs the very code that launched it, released or not.
PACKAGE_ROOTS = ("ftbroker", "ftbroker.backends", "ftbroker.pricing")


def build_wheel(folder: Path) -> Path:
    """A wheel of the running ftbroker (whatever installed it: a release, a checkout in editable mode) in ``folder``,
    built from its package files and its installed metadata; byte for byte the same for the same code (fixed file
    times), so it is uploaded once."""
    dist = importlib.metadata.distribution("ftbroker")
    files: dict[str, bytes] = {}
    for root in PACKAGE_ROOTS:
        for base in map(Path, importlib.import_module(root).__path__):
            for path in sorted(base.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    files.setdefault(f"{root.replace('.', '/')}/{path.relative_to(base).as_posix()}",
                                     path.read_bytes())
    info = f"ftbroker-{dist.version}.dist-info"
    # a wheel's METADATA is its installed one; from a source checkout, the egg-info's PKG-INFO (the same fields)
    files[f"{info}/METADATA"] = (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").encode()
    files[f"{info}/entry_points.txt"] = (dist.read_text("entry_points.txt") or "").encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: ftbroker\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in sorted(files.items())]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"ftbroker-{dist.version}-py3-none-any.whl"  # the wheel file name spec (PEP 427)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in sorted(files.items()):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def user_data(*, job_id: str, attempt: int, cap_minutes: int, python: str, wheel_name: str, wheel_url: str,
              s3: str, region: str, heartbeat_s: float, sync_s: float) -> str:
    """The instance's bootstrap (ec2_bootstrap.sh) for one attempt, every value shell-quoted."""
    text = (Path(__file__).with_name("ec2_bootstrap.sh")).read_text()
    values = {"VERSION": __version__, "JOB": job_id, "ATTEMPT": str(attempt), "CAP_MINUTES": str(int(cap_minutes)),
              "PYTHON": python, "WHEEL_NAME": wheel_name, "WHEEL_URL": wheel_url, "S3": s3, "REGION": region,
              "HEARTBEAT_S": f"{heartbeat_s:g}", "SYNC_S": f"{sync_s:g}"}
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value if key in ("VERSION", "JOB", "CAP_MINUTES") else shlex.quote(value))
    if len(text.encode()) > USER_DATA_LIMIT:
        raise FtBrokerError(f"ec2: the bootstrap is {len(text.encode()):,} bytes, over EC2's 16 KB user-data limit")
    return text
