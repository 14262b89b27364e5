#!/usr/bin/env bash
# The GPU check: ONE script for the lent GPU machine (one H200, no network), run once from the repository root.
#
#   bash bench/gpu_check.sh                    # on the GPU machine; results in $OUT (default: a new temp folder)
#   bash bench/gpu_check.sh --cpu [--python PY] [--wheels DIR]
#                                              # a dry run without a GPU: the same steps, --tiny calibration
#   bash bench/gpu_check.sh --validate [--cpu]  # only install + the validation cases (gpu_calibrate.py --cases
#                                              # validate, ~2.5 min on an H200; ends within 200 s): the shipped
#                                              # calibration against cases it was not fitted on
#
# Before: `bash bench/gpu_wheels.sh` in the checkout that travels (it fills .whl/, git-ignored), and the device
# tool's `carry` names .whl. The steps, each time-boxed (`timeout`); a failed step is reported and the next one
# runs, and the whole script ends within about 8 minutes even if one step hangs:
#   1. install  .whl/*.whl into /tmp/gpu_check-site (--target, no index); ftbroker made importable through a
#               folder of symlinks (broker/ -> ftbroker, backends/ and pricing/ inside it: the package-dir
#               mapping of pyproject.toml, with no build step), checked by importing the trainer
#   2. env      nvidia-smi, Python and package versions (each imported), the device, a bitsandbytes NF4 layer on it
#   3. calibrate  bench/gpu_calibrate.py: estimate vs measured peak memory and tokens/s (at most 4.5 min)
#   4. pytest   pytest -m gpu tests/test_local_e2e.py: `ftbroker run` on CUDA (LoRA, QLoRA, full): the quote for
#               the GPU found, the trainer, the measured VRAM beside the estimate in the ledger
#   5. throughput bench/train_throughput.py: padded vs padding-free vs packed batches on CUDA
#   6. fit      bench/gpu_calibrate.py --fit: the constants calibration.toml would get (not written there)
# In $OUT (7 files): gpu_check.log (everything), env.txt, pytest_gpu.txt, gpu_calibrate.json, gpu_calibrate.txt,
# train_throughput.txt, fit.txt. bench/results/README.md says how to commit them and apply the fit.
# --validate: gpu_check.log, gpu_validate.json and gpu_validate.txt (gpu_validate-tiny.* with --cpu).
set -uo pipefail

cpu=0
validate=0
python=python3
wheels=.whl
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu=1; shift ;;
        --validate) validate=1; shift ;;
        --python) python="$2"; shift 2 ;;
        --wheels) wheels="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
TOTAL_S=470      # the whole script; each step gets at most what is left of it
[ "$validate" = 1 ] && TOTAL_S=200
site=/tmp/gpu_check-site
shim=/tmp/gpu_check-shim

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONPATH="$site:$shim${PYTHONPATH:+:$PYTHONPATH}"

export root python wheels site shim

summary=()
step() {  # step NAME LIMIT_S OUTPUT_FILE|- COMMAND...: run COMMAND time-boxed, its output also in $OUT/OUTPUT_FILE
    local name=$1 limit=$2 file=$3 rc
    shift 3
    local left=$((TOTAL_S - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "=== $name: skipped, the script's ${TOTAL_S} s are spent"
        summary+=("$name: skipped (time)")
        return
    fi
    echo "=== [$(date -u +%H:%M:%S), ${SECONDS} s] $name (at most ${limit} s)"
    local start=$SECONDS
    # through bash -c so that a step can be one of the functions below (exported); timeout ends the whole group
    if [ "$file" = - ]; then
        timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@"
        rc=$?
    else
        timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$OUT/$file"
        rc=${PIPESTATUS[0]}
    fi
    local note=""
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (TIMED OUT)"
    echo "=== $name: exit $rc$note after $((SECONDS - start)) s"
    summary+=("$name: exit $rc$note, $((SECONDS - start)) s")
}

install() {
    local found=("$wheels"/*.whl)
    if [ -e "${found[0]}" ]; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${found[@]}" || return 1
        echo "installed ${#found[@]} wheels from $wheels into $site"
    else
        echo "no wheels in $wheels: using the packages already installed (run bench/gpu_wheels.sh for the GPU machine)"
    fi
    rm -rf "$shim" && mkdir -p "$shim/ftbroker" || return 1
    ln -s "$root"/broker/* "$shim/ftbroker/" && ln -s "$root/backends" "$root/pricing" "$shim/ftbroker/" || return 1
    "$python" -c "import ftbroker.backends.local.train, ftbroker.estimate; print('ftbroker from', ftbroker.__path__[0])"
}

environment() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    "$python" - <<'EOF'
import importlib, importlib.metadata, os, platform, sys
print("python", platform.python_version(), sys.executable)
print("PYTORCH_CUDA_ALLOC_CONF =", os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "(unset)"))
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "tokenizers",
             "safetensors", "huggingface_hub", "pydantic", "regex", "numpy", "pyarrow", "fsspec", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name:16} {importlib.metadata.version(name.replace('_', '-')):14} {os.path.dirname(module.__file__)}")
    except Exception as exc:  # report every package, whatever breaks
        print(f"{name:16} FAILED: {type(exc).__name__}: {exc}")
import torch
print("cuda available:", torch.cuda.is_available(), "| torch.version.cuda:", torch.version.cuda)
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, capability {props.major}.{props.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
    import bitsandbytes
    w = bitsandbytes.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4").cuda()
    print("bitsandbytes NF4 on CUDA:", tuple(w(torch.ones(2, 64, device="cuda", dtype=torch.bfloat16)).shape))
EOF
}

export -f install environment

validation() {
    local tiny=()
    [ "$cpu" = 1 ] && tiny=(--tiny)
    step calibrate 185 - "$python" bench/gpu_calibrate.py --cases validate "${tiny[@]}" --out "$OUT" --budget 150
}

main() {
    echo "gpu_check: $(date -u +%FT%TZ), repo $root ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')), OUT=$OUT, cpu=$cpu, validate=$validate"
    step install 90 - install
    if [ "$validate" = 1 ]; then
        validation
        summary_and_files
        return
    fi
    step env 60 env.txt environment
    if [ "$cpu" = 1 ]; then
        step calibrate 120 - "$python" bench/gpu_calibrate.py --tiny --out "$OUT"
    else
        step calibrate 310 - "$python" bench/gpu_calibrate.py --out "$OUT" --budget 270
    fi
    step pytest 150 pytest_gpu.txt "$python" -m pytest -o addopts="-ra --strict-markers" -m gpu -v -p no:cacheprovider tests/test_local_e2e.py
    if [ "$cpu" = 1 ]; then
        step throughput 90 train_throughput.txt "$python" bench/train_throughput.py --examples 40 --micro-batch 4
        step fit 30 fit.txt "$python" bench/gpu_calibrate.py --fit "$OUT/gpu_calibrate-tiny.json"
    else
        step throughput 60 train_throughput.txt "$python" bench/train_throughput.py
        step fit 30 fit.txt "$python" bench/gpu_calibrate.py --fit "$OUT/gpu_calibrate.json"
    fi
    summary_and_files
}

summary_and_files() {
    echo
    echo "=== summary after ${SECONDS} s"
    printf '  %s\n' "${summary[@]}"
    echo "=== files in $OUT:"
    ls -l "$OUT"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
