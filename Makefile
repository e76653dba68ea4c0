# Two commands on a fresh machine:
#   make run    set up, then serve the graph locally on the embedded default (serve_config.local.yaml)
#   make test   set up, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast lint train-default bench-quality bench-serving

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0   # CPU build first, pinned: an unpinned torch pulls a CUDA build
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# serve.env: Ray Serve settings of the Ray that `serve run` starts (HAProxy, throughput-optimized, Ray's token auth:
# the new local Ray uses RAY_AUTH_TOKEN or ~/.ray/auth_token, generated there if missing); stale_haproxy first
# stops an HAProxy that a crashed Ray left holding the ports (README, Run it locally). `make run SERVE_CONFIG=...`
# serves another config.
SERVE_CONFIG ?= serve_config.local.yaml
run: setup
	set -a && . ./serve.env && set +a && $(PY) -m operations.stale_haproxy && $(VENV)/bin/serve run $(SERVE_CONFIG)

# The tests' own local Rays (127.0.0.1, no dashboard) run without Ray's token auth, so that they never write a token
# into ~/.ray; the tests of token auth (tests/cluster, tests/graph/test_serve_run.py) turn it on with their own token.
test test-fast: export RAY_AUTH_MODE := disabled

test: setup   # every tier of tests/, slow ones included (what CI runs; README, Tests and benchmarks)
	$(PY) -m pytest -ra

lint: setup   # what .ci/run checks before the tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: setup   # every tier but the tests marked slow
	$(PY) -m pytest -ra -m "not slow"

train-default: setup
	$(VENV)/bin/multitask train --config configs/default.yaml --overwrite   # rebuilds the tracked checkpoints/default

bench-quality: setup
	$(PY) bench/quality.py

INFINITY_VENV := .bench/infinity-venv
$(INFINITY_VENV)/.installed: bench/setup_peers.sh   # the peer the serving benchmark measures against
	bash bench/setup_peers.sh $(INFINITY_VENV)
	touch $@

bench-serving: setup $(INFINITY_VENV)/.installed   # bare model vs the Serve graph (HTTP, handles) vs Infinity (torch and ONNX engines); ~20 min -> bench/results/serving_bench.*
	$(PY) bench/serving_bench.py --docs
