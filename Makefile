# interwork: two commands do everything on a fresh Debian machine.
#   make run   installs what the build needs (Debian packages, a Rust toolchain at least
#              Cargo.toml's rust-version), builds in release mode, starts the daemon
#   make test  installs what the tests need too and runs the whole suite

# A toolchain that deps/toolchain.sh installs with rustup lands in ~/.cargo/bin: first on PATH
# for every recipe, so the same make uses it.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
BIN ?= target/release/interwork

.PHONY: all deps test-deps toolchain build run test bench fuzz check-config pcaps install install-files clean

all: build

# Installs the Debian packages listed in $(1) that are missing (root or sudo).
define apt_install
	@missing=""; \
	for p in $$(grep -v '^\s*#' $(1) | grep -v '^\s*$$'); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q -o DPkg::Lock::Timeout=600 $$missing; \
	fi
endef

# What building and running need.
deps:
	$(call apt_install,deps/build-packages.txt)

# What the tests need beyond that: sipp, tshark, GStreamer, sox, Chromium, systemd-analyze.
test-deps: deps
	$(call apt_install,deps/test-packages.txt)

# A Rust toolchain at least Cargo.toml's rust-version: the machine's own, else rustup's stable.
toolchain: deps
	@bash deps/toolchain.sh

build: deps toolchain
	$(CARGO) build --release --bin interwork

# Runs on the embedded default: HTTP 127.0.0.1:8080, SIP 127.0.0.1:5060, state in ./interwork-state.
run: build
	./target/release/interwork run

test: test-deps toolchain
	$(CARGO) test --workspace --no-fail-fast

bench: test-deps toolchain
	$(CARGO) bench -p codecs
	$(CARGO) bench -p interwork --bench forwarding --bench bridge_legs --bench subscriptions --bench rooms
	bash benches/media_load.sh

# Bounded fuzzing of every parser that reads peer input (fuzz/) and of every codecs
# depacketizer and decoder entry point (codecs/fuzz/): FUZZ_SECONDS per target, 60 by default
# (CI runs 4). Fails on a crash; the input is left in fuzz/artifacts/ or codecs/fuzz/artifacts/.
FUZZ_SECONDS ?= 60
fuzz: test-deps toolchain
	bash codecs/fuzz/run.sh $(FUZZ_SECONDS)
	bash fuzz/run.sh $(FUZZ_SECONDS)

# Rewrites the synthetic captures of pcaps/ (deterministic; see pcaps/README.md).
pcaps: toolchain
	$(CARGO) run --example pcapgen -- pcaps/

check-config: build
	./target/release/interwork check-config systemd/interwork.toml

# Installs the daemon for systemd: the binary in $(PREFIX)/bin, the unit in $(UNITDIR), the
# example config in $(SYSCONFDIR)/interwork/ (an existing one is kept), and the system user
# `interwork` (the unit's User=). Then: systemctl enable --now interwork.
# DESTDIR stages into a folder (packaging): no user is made and systemd is not told.
install: build install-files

install-files:
	@test -x $(BIN) || { echo "make install: $(BIN) is missing; run make build first" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/interwork
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's#/usr/local/bin/interwork#$(PREFIX)/bin/interwork#' systemd/interwork.service > $(DESTDIR)$(UNITDIR)/interwork.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/interwork.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/interwork
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/interwork/interwork.toml ]; then \
	  echo "make install: keeping $(DESTDIR)$(SYSCONFDIR)/interwork/interwork.toml; the example is interwork.toml.example beside it"; \
	  install -m 0644 systemd/interwork.toml $(DESTDIR)$(SYSCONFDIR)/interwork/interwork.toml.example; \
	else \
	  install -m 0644 systemd/interwork.toml $(DESTDIR)$(SYSCONFDIR)/interwork/interwork.toml; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
	  id -u interwork >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/interwork --shell /usr/sbin/nologin interwork; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	  echo "make install: done; start it with: systemctl enable --now interwork"; \
	fi

clean:
	$(CARGO) clean
