# pkcs11proxyd — the two entry points a newcomer needs (Debian 12, as root):
#   make run    install everything, build, run the daemon on the embedded default
#   make test   install everything, build, run lint, typecheck and every test suite
.PHONY: all deps build run test client clean

APT_PACKAGES := softhsm2 opensc p11-kit gnutls-bin libengine-pkcs11-openssl \
  caml-crush-server caml-crush-clients libtirpc-dev rpcsvc-proto valgrind \
  libp11-kit-dev libssl-dev gcc make pkg-config openssl iproute2

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

run: build
	node dist/src/cli.js -fg

test: build
	bash scripts/run-tests.sh

clean:
	rm -rf dist client/build client/build-san client/generated .tmp
