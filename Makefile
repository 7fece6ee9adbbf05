# Warren: `make test` and `make demo` install whatever is missing, then run.
# Safe to run as root with no standard input (CI does); a second run installs nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
ANVIL := tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
PY_STAMP := $(VENV)/.installed
DEB_STAMP := $(VENV)/.debs
# Debian packages the netns lab and the benchmarks use (iproute2 for `ip netns`, nftables/iptables
# for NAT, wireguard-go + wireguard-tools as the reference WireGuard, iperf3 for throughput;
# chromium + chromium-driver for the dashboard's browser test, systemd for `systemd-analyze verify`).
DEB_PKGS := iproute2 iptables nftables iputils-ping iperf3 wireguard-go wireguard-tools procps chromium chromium-driver systemd

export PATH := $(BIN):$(PATH)

.PHONY: install test demo bench clean-env vendor-chartist

install: $(PY_STAMP) $(BIN)/anvil $(DEB_STAMP)

$(PY_STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

# anvil comes from the npm package @foundry-rs/anvil, whose optional dependency carries the binary.
$(ANVIL): tools/package.json
	npm install --prefix tools --no-audit --no-fund --loglevel=error
	@test -x $@ && touch $@

$(BIN)/anvil: $(ANVIL) $(PY_STAMP)
	ln -sf $(CURDIR)/$(ANVIL) $@

$(DEB_STAMP): Makefile | $(PY_STAMP)
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

test: install
	$(BIN)/ape test

demo: install
	$(BIN)/warren demo

bench: install
	@for b in scripts/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

# The dashboard's chart library (committed; run only to re-fetch it): exactly the pinned npm version,
# its files' SHA-256 checked against agents/node/dashboard/vendor.py before anything is replaced.
vendor-chartist: $(PY_STAMP)
	$(BIN)/python -m agents.node.dashboard.vendor
