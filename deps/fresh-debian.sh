#!/usr/bin/env bash
# Proves the README's first command on a bare Debian: a minbase debootstrap root (no Rust, no
# compiler, no -dev packages), plus what a newcomer types first (`apt-get install git make`)
# and Debian's own cargo, older than Cargo.toml's rust-version (the trap: it must not be
# accepted). Then a bare `git clone` of this repo and `make run`, which must install the build
# packages, install Rust with rustup, build with it in the same run, and start the daemon:
# passes when the daemon prints "interwork: ready" and answers /healthz, within TIMEOUT.
#
#   sudo bash deps/fresh-debian.sh [ROOT]      # ROOT: a folder to build the root in
#
# Root, debootstrap, and the network to Debian's mirror, crates.io and static.rust-lang.org.
# Not part of `make test` (it downloads a Debian and a toolchain and builds from nothing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/var/tmp/interwork-fresh-debian}
suite=${SUITE:-bookworm}
timeout=${TIMEOUT:-3600}

[ "$(id -u)" = 0 ] || { echo "fresh-debian.sh: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-debian.sh: apt-get install debootstrap" >&2; exit 1; }

# The debootstrap result is kept beside ROOT ($root.base) and copied afresh for every run, so
# each run starts from the bare system, never from what an earlier run installed.
if [ ! -x "$root.base/usr/bin/apt-get" ]; then
  rm -rf "$root.base"
  debootstrap --variant=minbase "$suite" "$root.base" http://deb.debian.org/debian
fi
rm -rf "$root"
cp -a "$root.base" "$root"
cleanup() {
  # Every process whose root is the new root (make, cargo, the daemon).
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill "${p#/proc/}" 2>/dev/null
  done
  sleep 1
  for m in proc dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A network that inspects TLS with its own CA (as this project's machines do) needs that CA in
# the new root too, and SSL_CERT_FILE for the tools that read no system store by themselves.
ca_env=""
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  ca_env="SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
fi
in_root() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb $ca_env bash -c "$1"; }

in_root "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q git make cargo ca-certificates && update-ca-certificates"
in_root "rm -rf /root/interwork /root/.cargo /root/.rustup; cargo --version; rustc --version"

# A bare clone of what is committed here.
git clone -q "$repo" "$root/root/interwork"

started=$(date +%s)
log="$root/root/make-run.log"
in_root "cd /root/interwork && make run" >"$log" 2>&1 &
make_pid=$!
while ! grep -q "interwork: ready" "$log"; do
  if ! kill -0 "$make_pid" 2>/dev/null; then
    tail -n 40 "$log"; echo "fresh-debian.sh: make run ended before the daemon was ready" >&2; exit 1
  fi
  if [ $(( $(date +%s) - started )) -gt "$timeout" ]; then
    tail -n 40 "$log"; echo "fresh-debian.sh: not ready within ${timeout}s" >&2; exit 1
  fi
  sleep 5
done
# The daemon in the root listens on the host's loopback (same network namespace).
health=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz || true)
grep -E "make toolchain|make: installing|Finished|interwork: ready|  (API|demo|SIP) " "$log" || true
echo "fresh-debian.sh: ready after $(( $(date +%s) - started )) s; /healthz answered $health"
[ "$health" = 200 ]
