# pkcs11proxyd — the two entry points a newcomer needs (Debian 12, as root):
#   make run    install everything, build, run the daemon on the embedded default
#   make test   install everything, build, run lint, typecheck and every test suite
.PHONY: all deps build run test client clean install

APT_PACKAGES := softhsm2 opensc p11-kit gnutls-bin libengine-pkcs11-openssl \
  caml-crush-server caml-crush-clients libtirpc-dev rpcsvc-proto valgrind \
  libp11-kit-dev libssl-dev gcc make pkg-config openssl iproute2 systemd python3 passwd haproxy \
  protobuf-compiler librust-parsec-interface-dev libmbedcrypto7 libsqlite3-0

all: build

# Installs only what is missing, so a second run costs a dpkg query.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi

build: deps
	npm run build
	$(MAKE) -C client

client:
	$(MAKE) -C client

# The primary only accepts and routes connections: a small young generation keeps the garbage of a
# burst of them from growing its RSS (about 25 MB at 10,000 connections). Workers get Node's default
# (daemon.ts drops the flag from their execArgv). bin/pkcs11proxyd passes the same flag.
PRIMARY_NODE_FLAGS = --max-semi-space-size=2

run: build
	node $(PRIMARY_NODE_FLAGS) dist/src/cli.js -fg

test: build
	bash scripts/run-tests.sh

clean:
	rm -rf dist client/build client/build-san client/generated .tmp

# ---- make install (DESTDIR, PREFIX): daemon, client, /etc examples, systemd units, p11-kit registration ----
# Paths written into the installed files are without DESTDIR (staged installs).
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
LIBDIR ?= $(PREFIX)/lib
SBINDIR ?= $(PREFIX)/sbin
APPDIR ?= $(LIBDIR)/pkcs11proxyd
SYSTEMDUNITDIR ?= $(LIBDIR)/systemd/system
SYSUSERSDIR ?= $(LIBDIR)/sysusers.d
P11KIT_MODULEDIR ?= $(PREFIX)/share/p11-kit/modules
NODE ?= $(shell command -v node)
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g'

# Installs what `make build` made; it builds nothing itself (run it as root after `make build`).
install:
	@test -f dist/src/cli.js -a -f client/build/libp11client.so || { echo "run 'make build' first"; exit 1; }
	install -d $(DESTDIR)$(APPDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR)/pkcs11 $(DESTDIR)$(SYSTEMDUNITDIR) \
	  $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(P11KIT_MODULEDIR) $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd
	rm -rf $(DESTDIR)$(APPDIR)/dist $(DESTDIR)$(APPDIR)/node_modules $(DESTDIR)$(APPDIR)/native
	cp -a dist $(DESTDIR)$(APPDIR)/dist
	rm -rf $(DESTDIR)$(APPDIR)/dist/tools $(DESTDIR)$(APPDIR)/dist/tests $(DESTDIR)$(APPDIR)/dist/bench
	install -m 644 package.json package-lock.json filter.conf.example $(DESTDIR)$(APPDIR)/
	for a in native/*/build/Release/*.node; do install -D -m 755 $$a $(DESTDIR)$(APPDIR)/$$a; done
	# Runtime dependencies only: a copy of node_modules pruned offline.
	cp -a node_modules $(DESTDIR)$(APPDIR)/node_modules
	cd $(DESTDIR)$(APPDIR) && npm prune --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null && find node_modules -depth -type d -empty -delete
	printf '#!/bin/sh\n# pkcs11proxyd launcher (make install)\nexec %s %s %s/dist/src/cli.js "$$@"\n' "$(NODE)" "$(PRIMARY_NODE_FLAGS)" "$(APPDIR)" > $(DESTDIR)$(SBINDIR)/pkcs11proxyd
	chmod 755 $(DESTDIR)$(SBINDIR)/pkcs11proxyd
	install -m 755 client/build/libp11client.so $(DESTDIR)$(LIBDIR)/pkcs11/libp11client.so
	$(SUBST) packaging/systemd/pkcs11proxyd.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/pkcs11proxyd.service
	install -m 644 packaging/systemd/pkcs11proxyd.socket $(DESTDIR)$(SYSTEMDUNITDIR)/
	install -m 644 packaging/sysusers.d/pkcs11proxyd.conf $(DESTDIR)$(SYSUSERSDIR)/pkcs11proxyd.conf
	$(SUBST) packaging/p11-kit/pkcs11proxyd.module.in > $(DESTDIR)$(P11KIT_MODULEDIR)/pkcs11proxyd.module
	install -m 644 pkcs11proxyd.conf.example filter.conf.example $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd/
	# Configuration files already there are kept.
	for f in pkcs11proxyd.conf client.conf; do [ -e $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd/$$f ] || install -m 644 packaging/etc/$$f $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd/$$f; done
	[ -e $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd/filter.conf ] || install -m 600 filter.conf.example $(DESTDIR)$(SYSCONFDIR)/pkcs11proxyd/filter.conf
