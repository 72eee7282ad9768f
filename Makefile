# Two commands matter: `make demo` and `make test`. Each does all set-up first (idempotent, cached under
# $(KFR_CACHE_DIR)), so they work on a fresh clone with nothing installed by hand.
SHELL := /bin/bash
export KFR_CACHE_DIR ?= $(HOME)/.cache/kfr-spark
PY := .venv/bin/python
KFR := .venv/bin/kfr
DEMO_COMMENTS ?= 300000

.PHONY: setup demo test test-all test-resilience cluster bench lock clean clean-data help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## create .venv, build/cache horovod, fetch Delta jars (fast when done before)
	@bash scripts/bootstrap.sh

demo: setup  ## generate a dataset and run the pipeline end to end on embedded local Spark
	@bash scripts/demo.sh

test: setup  ## run the test suite (real Spark, Delta, fixtures); no slow benchmarks
	$(PY) -m pytest -q -m "not slow" --durations=12

test-all: setup  ## the test suite including slow tests
	$(PY) -m pytest -q

TRIALS ?= 1
test-resilience: setup  ## fault injection: killed workers, drivers and training processes, corrupt files (~7 min a trial; TRIALS=3)
	KFR_RESILIENCE_TRIALS=$(TRIALS) $(PY) -m pytest -q -s -m resilience tests/resilience

cluster: setup  ## start a standalone cluster on loopback, run the nightly on it and in local mode, compare tables
	cd benchmarks && ../$(PY) cluster.py

bench: setup  ## run every benchmark (slow; prints figures)
	@for b in benchmarks/[a-z]*.py; do [[ $$b == benchmarks/common.py ]] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

lock:  ## recompile requirements/lock.txt from requirements/runtime.in
	$(KFR_CACHE_DIR)/tools/bin/uv pip compile -q -p 3.11 --no-header requirements/runtime.in -o requirements/lock.txt

clean-data:  ## remove the demo lakehouse and generated data
	rm -rf data/

clean: clean-data  ## remove the venv too (the cache outside the clone stays)
	rm -rf .venv
