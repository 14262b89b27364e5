"""The user data of an EC2 instance for a job: ``ec2_bootstrap.sh`` for one attempt, every value shell-quoted. It
installs the wheel of the running ftbroker (``ftbroker.backends.wheel``: the instance runs the very code that
launched it, released or not) and starts the agent.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ftbroker import __version__
from ftbroker.errors import FtBrokerError

USER_DATA_LIMIT = 16 * 1024  # bytes, before base64 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html)
WHEEL_URL_TTL_S = 6 * 3600  # the bootstrap downloads the wheel within minutes of the launch


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
