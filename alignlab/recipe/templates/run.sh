#!/usr/bin/env bash
# Launch this recipe: {{ what }} under accelerate (DDP, DeepSpeed or FSDP),
# or, with --cpu, under torchrun over gloo on CPU processes (the same recipe, tried small).
#
#   ./run.sh [--processes N] [--cpu] [--model SPEC] [--max-steps K] [--engine E] [--dry-run] [-- ARGS]
#
#   --processes N   processes (GPUs) to launch; default {{ gpus }}. The global batch stays {{ batches }} per
#                   step: per-process batch and gradient accumulation are recomputed for N.
#   --cpu           run on CPU processes over gloo (fp32, no 4-bit), whatever engine the recipe targets
#   --model SPEC    train this model instead of the config's model (a Hub id or a local directory)
#   --max-steps K   stop after K optimizer steps (a trial run){{ each }}
#   --engine E      launch with accelerate/E.yaml instead of accelerate/{{ engine }}.yaml
#   --dry-run       print the launch command{{ s }} and stop
#   -- ARGS         anything after -- goes to {{ scripts }} (e.g. -- --learning_rate 1e-6)
#
{{ stage_lines }}# PYTHON picks the interpreter (default: python3). The run writes to output/ (checkpoints with
# trainer_state.json, the final model) and its log to output/train.log.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PYTHON="${PYTHON:-python3}"

GPUS={{ gpus }}
ENGINE={{ engine }}
PROCESSES=$GPUS
CPU=0
DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --processes) PROCESSES="$2"; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --model) EXTRA+=(--model_name_or_path "$2"); shift 2 ;;
        --max-steps) EXTRA+=(--max_steps "$2"); shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --) shift; EXTRA+=("$@"); break ;;
        -h|--help) sed -n '2,{{ help_end }}p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option '$1' (see ./run.sh --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --processes needs a whole number of at least 1 (got '$PROCESSES')" >&2; exit 2
fi
if [[ ! -f "accelerate/$ENGINE.yaml" ]]; then
    echo "run.sh: no launcher config accelerate/$ENGINE.yaml (choose ddp, zero2, zero3 or fsdp)" >&2; exit 2
fi

export TOKENIZERS_PARALLELISM=false
{{ offline }}# --cpu: gloo on CPU, fp32 weights, no bf16 autocast{{ qlora_note }}. TRL's script runs as `python -m` runs
# it, and each process ends at once when the script ends its run (Trainer.end, called after the model is
# saved), or else when the script returns: releasing the DDP model can deadlock with gloo's worker threads
# once the other process has gone (seen: a process stuck in ~ProcessGroupGloo as the script's main()
# returned, and at interpreter teardown under load).
RUN_THEN_EXIT='import os, runpy, sys
import accelerate
module = sys.argv.pop(1)
sys.argv[0] = module
def exit_now():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
end_training = accelerate.Accelerator.end_training
def end_training_then_exit(self):
    end_training(self)
    exit_now()
accelerate.Accelerator.end_training = end_training_then_exit
runpy.run_module(module, run_name="__main__", alter_sys=True)
exit_now()'

# launch SCRIPT CONFIG UNIT GLOBAL_BATCH PER_DEVICE MULTIPLE EVAL_BATCH [ARGS...]: one TRL script on $PROCESSES
# processes, keeping GLOBAL_BATCH rows (UNIT) per optimizer step: the largest per-process batch (up to
# PER_DEVICE) that divides the share of each process, the rest as gradient accumulation. A global batch that
# does not split over the processes grows to one that does, a multiple of MULTIPLE (RLOO: whole groups of
# answers). EVAL_BATCH: the per-process eval batch (0: the training batch). ARGS go to the script.
launch() {
    local script="$1" config="$2" unit="$3" global_batch="$4" per_device="$5" multiple="$6"
    local eval_batch="$7"
    shift 7
    local batch accum share
    if (( global_batch % PROCESSES == 0 )); then
        share=$(( global_batch / PROCESSES ))
        batch=$(( per_device < share ? per_device : share ))
        while (( share % batch != 0 )); do batch=$(( batch - 1 )); done
        accum=$(( share / batch ))
    else
        batch=$per_device
        accum=$(( (global_batch + batch * PROCESSES - 1) / (batch * PROCESSES) ))
        while (( batch * PROCESSES * accum % multiple != 0 )); do accum=$(( accum + 1 )); done
        echo "run.sh: $global_batch $unit do not split over $PROCESSES processes;" \
             "the global batch becomes $(( batch * PROCESSES * accum ))" >&2
    fi
    (( eval_batch > 0 )) || eval_batch=$batch
    local args=(--config "$config" "$@" --per_device_train_batch_size "$batch"
                --per_device_eval_batch_size "$eval_batch" --gradient_accumulation_steps "$accum")
    local cmd
    if (( CPU )); then
        cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node "$PROCESSES" --no-python "$PYTHON" -u
             -c "$RUN_THEN_EXIT" "$script" "${args[@]}" --use_cpu true --bf16 false --dtype float32
             {{ cpu_extra }}${EXTRA[@]+"${EXTRA[@]}"})
    else
        cmd=("$PYTHON" -m accelerate.commands.launch --config_file "accelerate/$ENGINE.yaml"
             --num_processes "$PROCESSES" -m "$script" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"})
    fi
    if (( DRY_RUN )); then echo "${cmd[*]}"; return 0; fi
    echo "+ ${cmd[*]}" | tee -a output/train.log
    "${cmd[@]}" 2>&1 | tee -a output/train.log
}

if (( ! DRY_RUN )); then mkdir -p output; : > output/train.log; fi
{{ launches }}