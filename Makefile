# The README's two commands: `make demo` and `make test`. Both install what
# they need on a fresh Debian machine (as root): system tools, then npm ci.
SHELL := /bin/bash
NODE_TEST := node --import tsx --test --test-reporter=spec
# perl-base runs the probe child (Essential on Debian, listed so it is never assumed).
SYSTEM_TOOLS := nftables iptables iproute2 util-linux e2fsprogs coreutils procps systemd perl-base
# For the tests and the bench only: promtool (package prometheus) checks
# metrics.prom; the MariaDB end-to-end test starts its own mariadbd.
TEST_TOOLS := prometheus mariadb-server mariadb-client bindfs fuse3
# make release: strip (binutils) takes the debug symbols out of the node binary the
# standalone executable is made from (99 -> 86 MB).
RELEASE_TOOLS := binutils
UNIT := $(wildcard test/unit/*.test.ts)
COMMANDS := $(wildcard test/commands/*.test.ts)
E2E := $(wildcard test/e2e/*.test.ts)

.PHONY: all build deps system-deps test-deps release-deps release typecheck lint test test-unit test-e2e bench demo clean

all: build

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.package-lock.json

# Installs the Debian packages of $(1) that are missing. A policy-rc.d (only for
# the install, only if none exists) keeps apt from starting Debian's MariaDB and
# Prometheus as system services: the tests start their own, in their own namespaces.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    guard=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$guard; chmod 755 $$guard; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  rc=$$?; [ -z "$$guard" ] || rm -f $$guard; exit $$rc; \
	fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_TOOLS))

test-deps: system-deps release-deps
	$(call apt_install,$(TEST_TOOLS))

release-deps:
	$(call apt_install,$(RELEASE_TOOLS))

build: deps
	node esbuild.config.mjs

# dist/ebsmon-linux-x64: Node's single executable application, no Node needed on the host.
release: deps release-deps
	node packaging/sea.mjs

typecheck: deps
	npx tsc --noEmit

lint: deps
	node test/helpers/lint.mjs

test: test-deps build release typecheck lint
	$(NODE_TEST) --test-concurrency=1 $(UNIT) $(COMMANDS) $(E2E)

test-unit: build
	$(NODE_TEST) $(UNIT) $(COMMANDS)

bench: test-deps build
	node --import tsx bench/run.ts

demo: system-deps build
	bash test/demo.sh

clean:
	rm -rf dist *.tgz bench/results.json
