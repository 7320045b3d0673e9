# Two entry points for a fresh Debian with python3: `make run` starts a node, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := build-essential libgmp-dev python3-dev python3-venv
# npm (for the Helia interop peer) from Debian only where no npm is installed already
TEST_SYSTEM_PACKAGES := chromium fuse iproute2 libfuse2 nftables postgresql $(if $(shell command -v npm),,nodejs npm)
INTEROP := tests/interop
DATA ?= ./edgefiles-data
# Test files run in parallel, one more process than cores (most tests wait on nodes they
# started), at most 8: each file keeps to one process, as its shared node is per file.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -lt 8 ] && echo $$((n + 1)) || echo 8)

.PHONY: run test lint bench system-deps test-system-deps setup clean

run: setup
	$(BIN)/edgefiles serve --data $(DATA)

test: setup test-system-deps $(INTEROP)/node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/small_writes.py
	$(BIN)/python benchmarks/replication.py
	$(BIN)/python benchmarks/flowfuse.py
	$(BIN)/python benchmarks/filestore.py
	$(BIN)/python benchmarks/storage_api.py
	$(BIN)/python benchmarks/interop.py
	$(BIN)/python benchmarks/soak.py --minutes 10 --kill-every 60
	$(BIN)/python benchmarks/faults.py

setup: $(VENV)/.installed

# Installs the Debian packages in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
endef

# libp2p pulls fastecdsa, which compiles against libgmp and the Python headers.
system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))

# The uploader page is tested in Debian's Chromium (Playwright's own browser download is not used).
test-system-deps:
	$(call apt_install,$(TEST_SYSTEM_PACKAGES))

# A real Helia peer for the IPFS interop tests, with its own Node.js 22 (from the npm registry).
$(INTEROP)/node_modules/.installed: $(INTEROP)/package-lock.json | test-system-deps
	cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache $(INTEROP)/node_modules
