# The contract's two commands: `make demo` and `make test`. Both create .venv themselves. `make test` lints first
# (`make lint`); `make test-fast` runs the fast tests alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench clean rocketmq rocketmq4

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each stamp records what was installed, so a second `make` installs nothing.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[emulator,rocketmq]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo

# mypy cannot follow the editable install's import hook: it reads the packages through links laid out as they
# install (wanhook/service -> service, ...), which [tool.mypy] in pyproject.toml names as its mypy_path.
$(VENV)/typecheck/wanhook: | $(BIN)/python
	mkdir -p $@
	for package in service consumers emulator; do ln -sfn "$(CURDIR)/$$package" "$@/$$package"; done

demo: $(VENV)/.demo
	$(BIN)/wanhook demo

# Lint first, then every test: the fast in-process ones and the system tests.
test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Only the in-process tests of tests/fast: seconds, not minutes (without the property-testing plugins, which they
# do not use and which take seconds to load).
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:hypothesispytest -p no:schemathesis tests/fast $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python -m bench.run

# A real Apache RocketMQ 5.x (NameServer + local-mode Proxy) in the foreground, for trying `wanhook consume`
# by hand: TOPICS and GROUPS (e.g. GROUPS=wanhook:16) are created; Ctrl-C stops it.
TOPICS ?= dashscope-events
GROUPS ?= wanhook:16
rocketmq: $(VENV)/.test
	$(BIN)/python -m tests.rocketmq_broker $(foreach t,$(TOPICS),--topic $(t)) $(foreach g,$(GROUPS),--group $(g))

lint: $(VENV)/.test $(VENV)/typecheck/wanhook
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) wanhook-data .pytest_cache .mypy_cache

# The RocketMQ 4.x client (rocketmq-client-python 2.0.0 + librocketmq.so from PyPI sdists) into ~/.cache/wanhook.
rocketmq4: $(VENV)/.test
	$(BIN)/python -m tests.rocketmq4_client
