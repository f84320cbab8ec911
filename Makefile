# mmvi — make help lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.DEFAULT_GOAL := help
.PHONY: help install test test-readme test-full train lint format bench bench-eval bench-train bench-growth sweep-mnist sweep-alpha sweep-mask reference-run image-sets compare compare-watch sync clean clean-logs cluster-up cluster-down cluster-status test-cluster gpu-check

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

install: ## create .venv and install everything (CPU torch from local wheels first)
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: pinning the CPU build keeps later requirements from pulling CUDA wheels
	if ! command -v nvidia-smi >/dev/null; then $(BIN)/pip install -q "torch==2.13.0"; fi
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -c "import torch, lightning, hydra, wandb, torchmetrics; print('torch', torch.__version__, '| lightning', lightning.__version__)"
	@bash scripts/ensure_chromium.sh || echo "chromium not installed: the report screenshot test will be skipped"

test: ## the test suite without slow tests, on every core (about 4 min on 2 cores); prints the 10 slowest
	$(BIN)/pytest -m "not slow and not readme and not cluster" -q -n auto --dist worksteal --durations=10

test-readme: ## every command the README shows, run as written with small overrides appended
	$(BIN)/pytest -m readme -q -n 0 --durations=10  # in order: later commands read what earlier ones made

test-cluster: ## the tests on a local SLURM cluster (they start and stop it; root, apt-get for slurm-wlm)
	$(BIN)/pytest -m cluster -q

test-full: ## every test, slow ones included
	$(BIN)/pytest -q

train: ## main job on the embedded default data (mnist5k, MinVI-MP), offline; ARGS="key=value ..." appended
	$(BIN)/python -m mmvi.train $(ARGS)

lint: ## ruff lint + format check + the import contract (layers, no circles)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports

format: ## ruff format + autofix
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench: bench-train bench-eval bench-growth ## all benchmarks

bench-train: ## training throughput vs the machine's matmul limit
	$(BIN)/python scripts/bench_train.py

bench-eval: ## retrieval mAP vs torchmetrics; likelihoods (default settings) on 10,000 items vs 5 min; paper-size evaluation by part vs training
	$(BIN)/python scripts/bench_eval.py

bench-growth: ## seconds per epoch and per evaluation as hidden units, modalities, batch and threads grow; exponents vs FLOPs
	$(BIN)/python scripts/bench_growth.py

sweep-mnist: ## Table 1 sweep: 4 objectives x 3 seeds, MNIST halves, joblib (2 workers), then the report; ARGS="trainer.max_epochs=5"
	PY=$(BIN)/python bash scripts/sweep.sh sweep_mnist_objectives $(ARGS)

sweep-alpha: ## hybrid alpha in {0,0.25,0.5,0.75,1} x 3 seeds, MNIST halves, joblib (2 workers), then the report
	PY=$(BIN)/python bash scripts/sweep.sh sweep_hybrid_alpha $(ARGS)

sweep-mask: ## MP mask rate x mean-field steps, MNIST halves, joblib (2 workers), then the report
	PY=$(BIN)/python bash scripts/sweep.sh sweep_mp_mask $(ARGS)

reference-run: ## the authors' MATLAB MRBM under Octave, scored by mmvi: REF=<clone> DATA=<IDX folder> PRESET=pcd OUT=runs/reference/<name> ARGS="--epochs 2 --hidden 100 --n-train 5000 --mmvi"
	@test -n "$(REF)" -a -n "$(DATA)" || { echo "give REF=<clone of kihyuks/nips2014_multimodal_learning> DATA=<IDX folder>"; exit 2; }
	nice -n 15 $(BIN)/python scripts/reference_run.py --ref $(REF) --data-dir $(DATA) --preset $(or $(PRESET),pcd) \
		--out $(or $(OUT),runs/reference/$(or $(PRESET),pcd)) $(ARGS)

image-sets: ## Fashion-MNIST's folder (Debian dataset-fashion-mnist) and the font-glyph IDX set built into DATA_OUT (default data/glyphs)
	$(BIN)/python scripts/image_sets.py fashion
	nice -n 15 $(BIN)/python scripts/image_sets.py glyphs --out $(or $(DATA_OUT),data/glyphs)

compare: ## comparison report: make compare SWEEP=logs/train/multiruns/<name>/<time> (default: the latest sweep)
	$(BIN)/python -m mmvi.compare $(or $(SWEEP),$$(ls -dt logs/train/multiruns/*/*/ | head -1))

compare-watch: ## report that follows a running sweep (rewritten on every change, page reloads): SWEEP=..., EVERY=30 (s); default: the latest sweep
	$(BIN)/python -m mmvi.compare --watch $(or $(EVERY),30) $(or $(SWEEP),$$(ls -dt logs/*/multiruns/*/*/ | head -1))

cluster-up: ## start a one-node SLURM cluster on this machine (installs slurm-wlm + munge; root); clients: SLURM_CONF=/tmp/mmvi-slurm/slurm.conf
	bash scripts/slurm_cluster.sh up

cluster-down: ## stop the local SLURM cluster
	bash scripts/slurm_cluster.sh down

cluster-status: ## the local SLURM cluster's daemons and sinfo
	bash scripts/slurm_cluster.sh status

gpu-check: ## on a CUDA machine (<= 8 min): epoch times per paper preset (fp32, bf16), GPU bench rows, DDP, CPU agreement
	$(BIN)/python scripts/gpu_check.py

sync: ## upload offline wandb runs (needs network and `wandb login`)
	find logs -type d -name 'offline-run-*' -print0 | xargs -0 -r $(BIN)/wandb sync

clean: ## remove caches
	rm -rf .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-logs: ## remove run folders
	rm -rf logs/*
