# xvit: two commands on a fresh machine.
#   make demo   set up .venv and explain the bundled sample images with the bundled model
#   make test   set up .venv with the test tools, run the test suite and build the documentation site
#   make docs   set up .venv with the docs extra and build the documentation site into site/ (offline, strict)
#   make serve  set up .venv with the web app's extra and start it on http://127.0.0.1:8000/
# Every install goes through constraints.txt, which pins torch to the CPU build these machines use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
OUT ?= out/demo

SITE ?= site
# mkdocs build --strict fails on any warning (broken links, pages missing from the nav, docstrings it cannot parse).
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(SITE)

.PHONY: demo test docs bench lint serve clean

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
	touch $@ $(VENV)/.core $(VENV)/.docs

$(VENV)/.docs: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[docs]"
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(VENV)/bin/xvit demo --out $(OUT)

test: $(VENV)/.dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 $(PY) -m pytest tests
	$(MKDOCS)

docs: $(VENV)/.docs
	$(MKDOCS)
	@echo "documentation site: $(SITE)/index.html"

bench: $(VENV)/.dev
	$(VENV)/bin/xvit bench --model timm-random:vit_small_patch16_224 --batch-size 8

serve: $(VENV)/.app
	$(VENV)/bin/xvit serve

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests tools examples

clean:
	rm -rf $(VENV) out $(SITE)
