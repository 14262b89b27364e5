# ftbroker: the setup of a SkyPilot node (the task's `setup`; it runs again on a recovered node).
# Installs the very ftbroker that launched the job (its wheel, staged in $FTBROKER_STAGE) with the trainer's
# packages (the `local` extra) into a venv of its own. uv is on every SkyPilot node
# (sky/skylet/constants.py SKY_UV_INSTALL_DIR); plain venv + pip otherwise.
set -euo pipefail
VENV="$HOME/.ftbroker/venv"
UV="$HOME/.local/bin/uv"
cap() { timeout --signal=TERM --kill-after=60 "$FTBROKER_SETUP_MAX_SECONDS" "$@"; }
if [ -x "$UV" ]; then
  [ -x "$VENV/bin/python" ] || cap "$UV" venv --python '>=3.11' "$VENV"
  VIRTUAL_ENV="$VENV" cap "$UV" pip install "$FTBROKER_STAGE/$FTBROKER_WHEEL[local]"
else
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  cap "$VENV/bin/python" -m pip install --quiet "$FTBROKER_STAGE/$FTBROKER_WHEEL[local]"
fi
"$VENV/bin/python" -c 'import ftbroker.backends.local.train'
