#!/usr/bin/env bash
# The bench on a CUDA machine, in one command, installing nothing from the network.
#
#   bench/gpu.sh [extra args for the timing run, e.g. --repeats 5]
#
# Two runs of `python -m bench`:
#   1. correctness: the tiny test model (alignlab.tiny.build_tiny_model), training section, fp32:
#      AlignLab's (TRL's) losses and log-probs against the bare PyTorch loop, step by step;
#   2. timings: a GPT-2-size model built from GPT-2's config (alignlab.tiny.build_gpt2_sized_model,
#      random weights, no hub), every default section.
# JSON goes to $OUT (when set, as on a lent device machine) or bench/results/, as gpu-*.json.
#
# What the machine needs: a Python whose torch sees CUDA, plus transformers, trl, datasets, peft
# and accelerate. No model hub and no package index are used. Where the Python lacks some of them,
# carry wheels in $WHEELS (default .whl/ in the repo root): this script installs them with
# `pip --no-index --no-deps --target` into a scratch folder. Fetch them on a networked machine
# with the same versions as the local venv:
#
#   bench/gpu.sh --fetch-wheels          # writes .whl/ (add `.whl/` to .git/info/exclude)
#
# On this workplace's device tool: run("bench/gpu.sh", carry=[".whl"]). The repo is copied
# there as a working tree; the machine's python3 (CUDA torch, transformers 5.17, no trl/datasets)
# then gets the carried wheels. Test the CPU path anywhere: DEVICE=cpu PYTHON=.venv/bin/python
# bench/gpu.sh --repeats 1 --timed-steps 2.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda}
RESULTS=${OUT:-bench/results}
# Same versions as the lab's own venv (requirements*.txt); tokenizers/hub follow transformers 5.24.
PINNED="trl==1.16.0 datasets==5.2.0 peft==0.21.2 accelerate==1.15.0 transformers==5.24.0 \
huggingface_hub==2.4.0 tokenizers==0.23.3 dill==0.4.1 multiprocess==0.70.19 typer==0.29.2"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # Run where PyPI is reachable; fetches CPython 3.12 x86-64 wheels (the device image's Python).
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" $PINNED
    ls -la "$WHEELS"
    exit 0
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if ! "$PY" -c "import trl, datasets, peft, accelerate, transformers" 2>/dev/null \
    || [[ "$("$PY" -c 'import trl; print(trl.__version__)' 2>/dev/null)" != "1.16.0" ]]; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        site=$(mktemp -d /tmp/alignlab-site.XXXXXX)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "This Python lacks trl 1.16 / datasets / peft: run 'bench/gpu.sh --fetch-wheels' on a networked" \
             "machine and bring $WHEELS/ along (or set PYTHON to a venv that has them)." >&2
        exit 2
    fi
fi

"$PY" - <<EOF
import torch, transformers, trl
print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
if "$DEVICE" == "cuda":
    assert torch.cuda.is_available(), "DEVICE=cuda but torch sees no GPU (DEVICE=cpu runs the CPU path)"
    print("GPU:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
EOF

mkdir -p "$RESULTS"
echo "== 1/2 correctness: tiny model, fp32, AlignLab (TRL) vs bare loop =="
"$PY" -m bench --model tiny --device "$DEVICE" --only training --precision fp32 --repeats 1 --timed-steps 5 \
    --out "$RESULTS/gpu-tiny-correctness.json"
echo "== 2/2 timings: GPT-2-size model (random weights) =="
"$PY" -m bench --model gpt2-sized --device "$DEVICE" --out "$RESULTS/gpu-gpt2-sized.json" "$@"
