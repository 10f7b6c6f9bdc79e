# xvit: two commands on a fresh machine.
#   make demo   set up .venv and explain the bundled sample images with the bundled model
#   make test   set up .venv with the test tools and run the test suite
#   make serve  set up .venv with the web app's extra and start it on http://127.0.0.1:8000/
# Every install goes through constraints.txt, which pins torch to the CPU build these machines use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
OUT ?= out/demo

.PHONY: demo test bench lint serve clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e .
	touch $@

$(VENV)/.app: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[app]"
	touch $@ $(VENV)/.core

$(VENV)/.dev: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[dev]"
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(VENV)/bin/xvit demo --out $(OUT)

test: $(VENV)/.dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 $(PY) -m pytest tests

bench: $(VENV)/.dev
	$(VENV)/bin/xvit bench --model timm-random:vit_small_patch16_224 --batch-size 8

serve: $(VENV)/.app
	$(VENV)/bin/xvit serve

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) out
