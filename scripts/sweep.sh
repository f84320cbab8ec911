#!/usr/bin/env bash
# Run a sweep preset (conf/experiment/sweep_*.yaml), then write its comparison report.
#   scripts/sweep.sh sweep_mnist_objectives                     # 4 objectives × 3 seeds, full MNIST
#   scripts/sweep.sh sweep_hybrid_alpha trainer.max_epochs=5 seed=0
#   N_JOBS=1 LAUNCHER=basic scripts/sweep.sh sweep_mp_mask data=mnist5k
# Env: PY (python, default .venv/bin/python), LAUNCHER (joblib | basic), N_JOBS (joblib workers, 2),
# SWEEP_DIR (default logs/train/multiruns/<preset>/<time>). The joblib launcher suits single-process
# jobs only (no trainer=ddp). Exit status: the sweep's; the report is written even when jobs failed
# (they are listed as skipped).
set -uo pipefail
preset=${1:?usage: scripts/sweep.sh <experiment preset> [hydra overrides ...]}
shift
PY=${PY:-.venv/bin/python}
LAUNCHER=${LAUNCHER:-joblib}
N_JOBS=${N_JOBS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_SILENT=${WANDB_SILENT:-true}
dir=${SWEEP_DIR:-logs/train/multiruns/$preset/$(date +%Y-%m-%d_%H-%M-%S)}
launch=()
if [ "$LAUNCHER" = joblib ]; then launch=(hydra/launcher=joblib "hydra.launcher.n_jobs=$N_JOBS"); fi
"$PY" -m mmvi.train "experiment=$preset" "${launch[@]}" "hydra.sweep.dir=$dir" "$@"
status=$?
"$PY" -m mmvi.compare "$dir" || echo "comparison: no completed runs in $dir" >&2
exit $status
