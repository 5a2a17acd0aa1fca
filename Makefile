# The contract's two commands: `make demo` and `make test`. Both create .venv themselves. `make test` lints first
# (`make lint`); `make test-fast` runs the fast tests alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-integration test-system lint docs docs-serve bench clean rocketmq rocketmq4

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

# Lint first, then every tier (tests/unit, tests/integration, tests/system) on TEST_WORKERS workers
# (pytest-xdist): most of a test's time is spent waiting on the processes it started, so more workers than cores
# pay. --dist loadgroup keeps the real broker's tests on one worker; the slowest tests are listed at the end.
TEST_WORKERS ?= 4
test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=20 $(PYTEST_ARGS)

# One tier: `make test-integration`, `make test-system` (tests/unit alone: `make test-fast`).
test-integration test-system: test-%: $(VENV)/.test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests/$* $(PYTEST_ARGS)

# Only the in-process tests of tests/unit: seconds, not minutes (without the property-testing plugins, which they
# do not use and which take seconds to load).
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -q -p no:hypothesispytest -p no:schemathesis tests/unit $(PYTEST_ARGS)

# The documentation site, into site/, in strict mode: a warning (a broken link or anchor, a setting the code reads
# with no description in service/config.py) fails the build. The reference pages are generated as it builds.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The same site served at http://127.0.0.1:8001/, rebuilt on every change.
docs-serve: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

bench: $(VENV)/.test
	$(BIN)/python -m bench.run

# A real Apache RocketMQ 5.x (NameServer + local-mode Proxy) in the foreground, for trying `wanhook consume`
# by hand: TOPICS and GROUPS (e.g. GROUPS=wanhook:16) are created; Ctrl-C stops it.
TOPICS ?= dashscope-events
GROUPS ?= wanhook:16
rocketmq: $(VENV)/.test
	$(BIN)/python -m tests.rocketmq_broker $(foreach t,$(TOPICS),--topic $(t)) $(foreach g,$(GROUPS),--group $(g))

# luacheck (Debian's lua-check; .ci/run installs it) reads the Lua scripts with .luacheckrc. It is not a Python
# package, so a machine without it (no root to install it) lints the rest and says that luacheck was skipped.
LUACHECK ?= luacheck
lint: $(VENV)/.test $(VENV)/typecheck/wanhook
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	@if command -v $(LUACHECK) >/dev/null; then \
		echo "$(LUACHECK) service/persistence/lua"; $(LUACHECK) --quiet service/persistence/lua; \
	else \
		echo "make lint: luacheck is not installed; the Lua scripts were NOT checked" \
			"(apt-get install lua-check, or LUACHECK=/path/to/luacheck)" >&2; \
	fi

clean:
	rm -rf $(VENV) wanhook-data site .pytest_cache .mypy_cache

# The RocketMQ 4.x client (rocketmq-client-python 2.0.0 + librocketmq.so from PyPI sdists) into ~/.cache/wanhook.
rocketmq4: $(VENV)/.test
	$(BIN)/python -m tests.rocketmq4_client
