# ftbroker: the run of a SkyPilot node (the task's `run`; a recovered managed job runs it again on a new node).
# The trainer's run folder is $FTBROKER_RUN, the job's folder in the bucket (MOUNT_CACHED), the same on every node
# and every attempt: an attempt after a preemption finds the checkpoints of the last one and resumes.
set -uo pipefail
PY="${FTBROKER_PYTHON:-$HOME/.ftbroker/venv/bin/python}"
RUN="$FTBROKER_RUN"
mkdir -p "$RUN"
# The job's inputs (config.json, data, a local model folder), put in place once: each entry is copied under a
# temporary name and renamed, so a node never reads one that another node is still writing.
for SRC in "$FTBROKER_STAGE"/inputs/*; do
  NAME=$(basename "$SRC")
  if [ ! -e "$RUN/$NAME" ]; then
    cp -r "$SRC" "$RUN/.$NAME.$$" && { mv -n "$RUN/.$NAME.$$" "$RUN/$NAME" 2>/dev/null || true; }
    rm -rf "$RUN/.$NAME.$$"
  fi
done
RESUME=""
if compgen -G "$RUN/checkpoints/checkpoint-*" >/dev/null; then
  RESUME=1
  echo "ftbroker: resuming from the last checkpoint in $RUN/checkpoints"
fi
# The hard runtime cap holds across attempts: runtime_s, in the bucket, keeps what earlier attempts used.
USED=$(cat "$RUN/runtime_s" 2>/dev/null || echo 0)
LEFT=$(( FTBROKER_MAX_SECONDS - USED ))
if [ "$LEFT" -le 0 ]; then
  echo "ftbroker: runtime cap reached: ${FTBROKER_MAX_SECONDS} s used"
  exit 124
fi
if [ "${SKYPILOT_NODE_RANK:-0}" = 0 ]; then
  ( while sleep 60; do
      echo $(( USED + SECONDS )) > "$RUN/runtime_s.tmp" && mv -f "$RUN/runtime_s.tmp" "$RUN/runtime_s"
    done ) &
  TICKER=$!
fi
HEAD_IP=$(printf '%s\n' "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)
export HEAD_IP
# At the cap, SIGTERM first, so the trainer saves a checkpoint; SIGKILL after the grace period.
timeout --signal=TERM --kill-after="$FTBROKER_GRACE_SECONDS" "$LEFT" @TRAINER@ &
CHILD=$!
# A cancel's SIGTERM reaches this script's process group, not the trainer's (timeout gives it a group of its
# own): pass it on (timeout signals the trainer, SIGKILL after the grace period) and wait for the trainer to
# finish its checkpoint, so that what runs after this script (SkyPilot's upload flush) sees it complete.
trap 'kill -TERM "$CHILD" 2>/dev/null' TERM
wait "$CHILD"
STATUS=$?
while kill -0 "$CHILD" 2>/dev/null; do
  wait "$CHILD"
  STATUS=$?
done
if [ -n "${TICKER:-}" ]; then
  kill "$TICKER" 2>/dev/null
  echo $(( USED + SECONDS )) > "$RUN/runtime_s"
fi
if [ "$STATUS" = 124 ]; then
  echo "ftbroker: runtime cap reached: the trainer was stopped after ${FTBROKER_MAX_SECONDS} s in all"
fi
exit "$STATUS"
