# The contract's two commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean rocketmq

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

demo: $(VENV)/.demo
	$(BIN)/wanhook demo

test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python -m bench.run

# A real Apache RocketMQ 5.x (NameServer + local-mode Proxy) in the foreground, for trying `wanhook consume`
# by hand: TOPICS and GROUPS (e.g. GROUPS=wanhook:16) are created; Ctrl-C stops it.
TOPICS ?= dashscope-events
GROUPS ?= wanhook:16
rocketmq: $(VENV)/.test
	$(BIN)/python -m tests.rocketmq_broker $(foreach t,$(TOPICS),--topic $(t)) $(foreach g,$(GROUPS),--group $(g))

lint: $(VENV)/.test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) wanhook-data .pytest_cache
