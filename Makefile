# The README's two commands: `make demo` and `make test`. Both install what
# they need on a fresh Debian machine (as root): system tools, then npm ci.
SHELL := /bin/bash
NODE_TEST := node --import tsx --test --test-reporter=spec
# perl-base runs the probe child (Essential on Debian, listed so it is never assumed).
SYSTEM_TOOLS := nftables iptables iproute2 util-linux e2fsprogs coreutils procps systemd perl-base
# For the tests and the bench only: promtool (package prometheus) checks
# metrics.prom; the MariaDB end-to-end test starts its own mariadbd; python3
# runs test/helpers/failfs.py, the FUSE server that fails I/O on command.
# The package's install test: debootstrap makes a clean Debian root from the mirror,
# systemd-nspawn (systemd-container) boots it with its own init and network.
# strace shows the socket cutter execs nothing and opens no file once it is ready.
# The Patroni rig (test/helpers/patroni.ts) starts its own etcd, Patroni and PostgreSQL 15
# in namespaces; its application and observer are /usr/bin/python3 with psycopg2; curl asks
# Patroni's REST API and etcd; the bench unpacks a newer Patroni with dpkg-deb (dpkg).
# The Galera rig (test/helpers/galera.ts) starts three mariadbd with galera-4 in namespaces;
# joiners get their state by rsync SST (rsync); its application is /usr/bin/python3 with pymysql.
TEST_TOOLS := prometheus mariadb-server mariadb-client bindfs fuse3 python3 debootstrap systemd-container \
	patroni etcd-server postgresql-15 postgresql-client-15 python3-psycopg2 python3-etcd curl strace \
	galera-4 rsync python3-pymysql
# make release: strip (binutils) takes the debug symbols out of the node binary the
# standalone executable is made from (99 -> 86 MB).
RELEASE_TOOLS := binutils
# make deb: dpkg-shlibdeps (dpkg-dev) writes the Depends line for node's shared
# libraries; lintian checks the package.
DEB_TOOLS := dpkg-dev lintian
VERSION := $(shell node -p "require('./package.json').version" 2>/dev/null)
DEB := dist/ebsmon_$(VERSION)_amd64.deb
# lintian: every tag left, and why it stays.
# - embedded-library (zlib), hardening-no-pie, hardening-no-fortify-functions: the
#   executable is the node binary itself (NodeSource's nodejs package, which links
#   its own zlib, OpenSSL and ICU statically and is built without PIE); changing
#   any of them means building node, which this project does not do.
# - spelling-error-in-binary: strings of node and of the bundled libraries, not ebsmon's.
# - package-supports-alternative-init-but-no-init.d-script: systemd units only; the
#   monitor relies on RuntimeDirectoryPreserve=, MemoryMin= and a 200 ms Restart=.
LINTIAN_SUPPRESS := embedded-library,hardening-no-pie,hardening-no-fortify-functions,spelling-error-in-binary,package-supports-alternative-init-but-no-init.d-script
UNIT := $(wildcard test/unit/*.test.ts)
COMMANDS := $(wildcard test/commands/*.test.ts)
E2E := $(wildcard test/e2e/*.test.ts)
# Every test file has a time bound: node --test --test-timeout bounds each file's whole
# run, hooks included, and ends a file that overruns (Node 20), so a hang fails the run
# instead of stalling it. Files are grouped by the bound they need, several times their
# usual time on a busy 2-core machine; a new file gets its group's bound (e2e: E2E_TIMEOUT)
# until it is listed in another.
UNIT_TIMEOUT := 120000
E2E_TIMEOUT := 300000
# Several suites each, of frozen volumes, hung disks and monitors; patroni.test.ts starts
# three Patroni clusters (about 4 minutes on a busy 2-core machine, too near the e2e bound).
E2E_LONG := test/e2e/fencing.test.ts test/e2e/deadlines.test.ts test/e2e/hung-root.test.ts test/e2e/stop.test.ts test/e2e/patroni.test.ts
E2E_LONG_TIMEOUT := 900000
# debootstrap fetches a Debian root from the mirror (the test bounds that step at 20 minutes).
E2E_DEB := test/e2e/deb.test.ts
E2E_DEB_TIMEOUT := 1800000
E2E_SHORT := $(filter-out $(E2E_LONG) $(E2E_DEB),$(E2E))

.PHONY: all build deps system-deps test-deps release-deps deb-deps release deb typecheck lint test test-unit test-e2e bench soak demo clean

all: build

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.package-lock.json

# Installs the Debian packages of $(1) that are missing. A policy-rc.d (only for
# the install, only if none exists) keeps apt from starting Debian's MariaDB,
# Prometheus, PostgreSQL, etcd and Patroni as system services: the tests start
# their own, in their own namespaces.
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

test-deps: system-deps release-deps deb-deps
	$(call apt_install,$(TEST_TOOLS))

release-deps:
	$(call apt_install,$(RELEASE_TOOLS))

deb-deps:
	$(call apt_install,$(DEB_TOOLS))

build: deps
	node esbuild.config.mjs

# dist/ebsmon-linux-x64: Node's single executable application, no Node needed on the host.
release: deps release-deps
	node packaging/sea.mjs

# dist/ebsmon_VERSION_amd64.deb: the standalone executable, units, logrotate, config, man page.
deb: release deb-deps
	node packaging/deb.mjs
	lintian --fail-on error,warning --display-info --suppress-tags $(LINTIAN_SUPPRESS) $(DEB)

typecheck: deps
	npx tsc --noEmit

lint: deps
	node test/helpers/lint.mjs

# Each group runs even when an earlier one failed; make test fails if any did.
test: test-deps build release deb typecheck lint
	rc=0; \
	$(NODE_TEST) --test-concurrency=1 --test-timeout=$(UNIT_TIMEOUT) $(UNIT) $(COMMANDS) || rc=1; \
	$(NODE_TEST) --test-concurrency=1 --test-timeout=$(E2E_TIMEOUT) $(E2E_SHORT) || rc=1; \
	$(NODE_TEST) --test-concurrency=1 --test-timeout=$(E2E_LONG_TIMEOUT) $(E2E_LONG) || rc=1; \
	$(NODE_TEST) --test-concurrency=1 --test-timeout=$(E2E_DEB_TIMEOUT) $(E2E_DEB) || rc=1; \
	exit $$rc

test-unit: build
	$(NODE_TEST) --test-timeout=$(UNIT_TIMEOUT) $(UNIT) $(COMMANDS)

bench: test-deps build release
	node --import tsx bench/run.ts

# False fences under load (a bench, not CI): reporters at --probe-timeout=0.6
# against --timeout=2 on a volume (capped as an EBS gp3 volume is) that fsync
# writers saturate. SOAK_SECONDS=3600 for the hour the README quotes; also
# SOAK_WRITERS, SOAK_CHECKPOINTERS, SOAK_REPORTERS, SOAK_INTERVAL, SOAK_TIMEOUT,
# SOAK_PROBE_TIMEOUT, SOAK_LIMIT (gp3, none, or IOPS:BYTES_PER_SECOND).
soak: test-deps build
	BENCH_ONLY=soak node --import tsx bench/run.ts

demo: system-deps build
	bash test/demo.sh

clean:
	rm -rf dist *.tgz bench/results.json
