# interwork: two commands do everything on a fresh Debian machine.
#   make run   installs what the build needs, builds in release mode, starts the daemon
#   make test  installs what the tests need and runs the whole suite

CARGO ?= cargo
PACKAGES := $(shell grep -v '^\s*\#' deps/debian-packages.txt | grep -v '^\s*$$')

.PHONY: all deps toolchain build run test bench fuzz check-config pcaps clean

all: build

# Installs the Debian packages of deps/debian-packages.txt that are missing (root or sudo).
deps:
	@missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q -o DPkg::Lock::Timeout=600 $$missing; \
	fi

# A Rust toolchain: the machine's own, or rustup's stable when there is none.
toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
	  echo "make toolchain: no cargo found; installing Rust with rustup"; \
	  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal; }

build: deps toolchain
	$(CARGO) build --release --bin interwork

# Runs on the embedded default: HTTP 127.0.0.1:8080, SIP 127.0.0.1:5060, state in ./interwork-state.
run: build
	./target/release/interwork run

test: deps toolchain
	$(CARGO) test --workspace --no-fail-fast

bench: deps toolchain
	$(CARGO) bench -p codecs
	$(CARGO) bench -p interwork --bench forwarding --bench bridge_legs

# Bounded fuzzing of every parser that reads peer input (fuzz/) and of every codecs
# depacketizer and decoder entry point (codecs/fuzz/): FUZZ_SECONDS per target, 60 by default
# (CI runs 4). Fails on a crash; the input is left in fuzz/artifacts/ or codecs/fuzz/artifacts/.
FUZZ_SECONDS ?= 60
fuzz: deps toolchain
	bash codecs/fuzz/run.sh $(FUZZ_SECONDS)
	bash fuzz/run.sh $(FUZZ_SECONDS)

# Rewrites the synthetic captures of pcaps/ (deterministic; see pcaps/README.md).
pcaps: toolchain
	$(CARGO) run --example pcapgen -- pcaps/

check-config: build
	./target/release/interwork check-config systemd/interwork.toml

clean:
	$(CARGO) clean
