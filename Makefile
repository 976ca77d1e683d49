# Two commands do everything: `make book` (build the site) and `make test` (run the tests).
# Both are idempotent: the virtual environment, the embedded benchmark and trained runs are reused.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
# The embedded benchmark: the smoke profile gets its own, much smaller copy.
DATA_DIR := data/synthetic
SMOKE_DATA_DIR := data/synthetic-smoke

.PHONY: book test venv data data-smoke notebooks test-unit test-notebooks clean-book

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

data: venv
	$(PY) -m wsolkit.data generate --out $(DATA_DIR) --profile default

data-smoke: venv
	$(PY) -m wsolkit.data generate --out $(SMOKE_DATA_DIR) --profile smoke

notebooks: venv data
	$(PY) tools/book.py execute --profile $(PROFILE)

book: venv data
	$(PY) tools/book.py all --profile $(PROFILE)

test-unit: venv
	$(PY) -m pytest -q -m "not notebooks and not browser"

test-notebooks: venv data-smoke
	$(PY) -m pytest -q -m "notebooks or browser"

test: venv data-smoke
	$(PY) -m pytest -q

clean-book:
	rm -rf _build book/executed notebooks/*.ipynb
