#!/usr/bin/env bash
# The bench on a CUDA machine, in one command and one table, installing nothing from the network.
#
#   bench/gpu.sh [extra args for python -m bench, e.g. --repeats 5]
#   bench/gpu.sh --fetch-wheels          # where PyPI is reachable: the wheels to carry, into .whl/
#
# One run of `python -m bench` on a GPT-2-size model built from GPT-2's config (random weights, no
# hub), with these sections:
#   correctness  the tiny test model in fp32: AlignLab's (TRL's) losses and log-probs against a bare
#                PyTorch DPO loop, step by step;
#   lab          the whole lab in fresh processes: the first call with an empty Triton cache (a
#                new machine), the first call with the cache an earlier process filled (a restart),
#                the first call after the start-up warm-up, and warm calls in the same process;
#   generation   batched vs one prompt at a time, each answer forced to its full length;
#   training     seconds per DPO step: AlignLab vs a plain DPOTrainer script vs the bare loop;
#   shift        steps until held-out accuracy reaches 0.75;
#   scale        a 1.1B Llama-shaped model (random, bf16 autocast): full fine-tuning, LoRA and QLoRA
#                (4-bit base, bitsandbytes) through train_policy, seconds and peak memory against the
#                computed estimate.
# JSON goes to $OUT (when set, as on a lent device machine) or bench/results/, as gpu.json.
#
# What the machine needs: a Python whose torch sees CUDA, with accelerate, huggingface_hub (>=1.31),
# tokenizers (0.23.x), safetensors, pandas, pyarrow (>=24), numpy, pyyaml, typer and packaging
# (a stock CUDA PyTorch image with the HF stack, like this workplace's device image). Carried as
# wheels in $WHEELS (default .whl/): trl, datasets, transformers and peft at the lab's versions,
# always installed; bitsandbytes where missing; dill, multiprocess, fsspec and regex, installed only
# where the machine's own version is missing or fails a requirement (bench/wheels.py decides and says
# why). huggingface_hub
# is not carried: 2.x needs httpx2, and the machine's 1.x meets transformers 5.24 and datasets 5.2.
#
# On this workplace's device tool: run("bench/gpu.sh", carry=[".whl"]).
# Test the CPU path anywhere: DEVICE=cpu PYTHON=.venv/bin/python bench/gpu.sh --repeats 1 --timed-steps 2
# (the 1.1B row is skipped off a GPU, with the reason printed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda}
RESULTS=${OUT:-bench/results}
# The lab's versions (requirements.txt) of what the device image lacks or has older, and the
# support packages the image may lack (dill, multiprocess) or have at a version datasets 5.2 or
# transformers 5.24 refuse (fsspec <= 2026.9.0, regex >= 2025.10.22); bitsandbytes for the QLoRA row
# (43 MB of CUDA 11.8-13.2 builds; installed where the machine has none). About 60 MB in all.
PINNED="trl==1.16.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 \
dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 regex==2026.11.19 bitsandbytes==0.50.2"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # Run where PyPI is reachable; fetches CPython 3.12 x86-64 wheels (the device image's Python).
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" $PINNED
    ls -la "$WHEELS"
    du -sh "$WHEELS"
    exit 0
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [[ "$("$PY" -c 'import trl; print(trl.__version__)' 2>/dev/null || true)" != "1.16.0" ]]; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        site=$(mktemp -d /tmp/alignlab-site.XXXXXX)
        mapfile -t chosen < <("$PY" -m bench.wheels plan "$WHEELS")
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${chosen[@]}"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "This Python lacks trl 1.16: run 'bench/gpu.sh --fetch-wheels' on a networked machine and bring" \
             "$WHEELS/ along (or set PYTHON to a venv that has the lab's requirements)." >&2
        exit 2
    fi
fi
# Every requirement of trl, datasets, transformers, peft and accelerate, met or not (an unmet one is
# printed and the bench goes on: it fails on its own where the mismatch matters).
"$PY" -m bench.wheels check || true

"$PY" - <<EOF
import torch, transformers, trl
print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
if "$DEVICE" == "cuda":
    assert torch.cuda.is_available(), "DEVICE=cuda but torch sees no GPU (DEVICE=cpu runs the CPU path)"
    print("GPU:", torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
EOF

mkdir -p "$RESULTS"
SMOKE=()
if [[ "$DEVICE" == cpu ]]; then
    # Off a GPU this only proves the path: a GPT-2-size model decodes slowly on a CPU, so keep it short.
    SMOKE=(--generation-repeats 1 --max-new-tokens 16)
fi
"$PY" -m bench --model gpt2-sized --device "$DEVICE" --only correctness,lab,generation,training,shift,scale \
    --out "$RESULTS/gpu.json" ${SMOKE[@]+"${SMOKE[@]}"} "$@"
