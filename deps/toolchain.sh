#!/usr/bin/env bash
# Makes sure the Rust toolchain that `make` will use is at least the `rust-version` of
# Cargo.toml. The Makefile puts ~/.cargo/bin first on PATH for every recipe, so a toolchain this
# script installs is the one the same `make run` or `make test` goes on to build with.
#
#   - a rustc new enough on PATH: nothing to do;
#   - rustup there but its toolchain too old: `rustup update`;
#   - no Rust, or only an older one (Debian's own cargo is older than the 2024 edition needs):
#     rustup-init from static.rust-lang.org (checked against its published SHA-256), stable
#     toolchain, minimal profile, into ~/.cargo and ~/.rustup. Nothing outside $HOME changes
#     and shell profiles are left alone (--no-modify-path).
set -euo pipefail
cd "$(dirname "$0")/.."

need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$need" ] || { echo "toolchain.sh: no rust-version in Cargo.toml" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

# The version of the rustc on PATH ("1.95.0"), or nothing.
have() { rustc --version 2>/dev/null | awk '{print $2}' | sed 's/-.*//'; }
# Whether version $1 is at least $2 (by version sort).
at_least() { [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

current=$(have)
if at_least "$current" "$need"; then
  exit 0
fi
if [ -n "$current" ]; then
  echo "make toolchain: rustc $current ($(command -v rustc)) is older than $need, which Cargo.toml needs"
else
  echo "make toolchain: no Rust found; Cargo.toml needs $need or newer"
fi

if command -v rustup >/dev/null 2>&1; then
  echo "make toolchain: updating rustup's toolchains"
  rustup update --no-self-update
else
  arch=$(uname -m)
  case "$arch" in
    x86_64|aarch64) triple="$arch-unknown-linux-gnu" ;;
    *) echo "make toolchain: no rustup-init for $arch here; install Rust $need or newer by hand" >&2; exit 1 ;;
  esac
  url="${RUSTUP_INIT_URL:-https://static.rust-lang.org/rustup/dist/$triple/rustup-init}"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "make toolchain: installing Rust (stable) with rustup into $HOME/.cargo"
  curl --proto '=https' --tlsv1.2 -sSf -o "$tmp/rustup-init" "$url"
  curl --proto '=https' --tlsv1.2 -sSf -o "$tmp/rustup-init.sha256" "$url.sha256"
  (cd "$tmp" && echo "$(awk '{print $1}' rustup-init.sha256)  rustup-init" | sha256sum -c --quiet)
  chmod +x "$tmp/rustup-init"
  "$tmp/rustup-init" -y --profile minimal --default-toolchain stable --no-modify-path
fi

current=$(have)
if ! at_least "$current" "$need"; then
  echo "make toolchain: rustc is still ${current:-missing} ($(command -v rustc || echo 'not on PATH')), older than $need;" >&2
  echo "  with rustup: rustup default stable" >&2
  exit 1
fi
echo "make toolchain: using rustc $current from $(dirname "$(command -v rustc)") (add it to your PATH to use it outside make)"
