#!/bin/bash
# ftbroker @@VERSION@@: job @@JOB@@, attempt @@ATTEMPT@@ (user data; cloud-init runs it once, as root, at first boot).
# 1. The hard runtime cap, before anything that can fail: the OS powers off in @@CAP_MINUTES@@ minutes whatever
#    happens, and the instance was launched with InstanceInitiatedShutdownBehavior=terminate, so powering off
#    terminates it and the bill stops, even if the machine that started it is gone for good.
shutdown -h +@@CAP_MINUTES@@
# 2. However this script ends (success, a failed step, a bug), the machine powers off then.
trap 'shutdown -h now' EXIT
set -euo pipefail
WORK="${FTB_WORK:-/opt/ftbroker}"
mkdir -p "$WORK/dist"
PY=@@PYTHON@@
WHEEL="$WORK/dist/"@@WHEEL_NAME@@
# 3. This very ftbroker (PyPI may not have this version), from the wheel staged on S3 (a presigned URL: no AWS CLI
#    needed), with the trainer's packages (local) and boto3 (aws).
"$PY" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' @@WHEEL_URL@@ "$WHEEL"
"$PY" -m pip install --quiet --disable-pip-version-check "$WHEEL[local,aws]"
# 4. The agent: inputs and checkpoints from S3, the same trainer as --backend local, heartbeat and sync to S3, a
#    cancel request or a spot notice turned into SIGTERM (the trainer checkpoints); it returns when the trainer ends.
"$PY" -m ftbroker.backends.ec2_agent run --s3 @@S3@@ --attempt @@ATTEMPT@@ --region @@REGION@@ --work "$WORK" \
    --heartbeat-s @@HEARTBEAT_S@@ --sync-s @@SYNC_S@@
