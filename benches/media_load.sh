#!/usr/bin/env bash
# Media load on the real daemon (issue 13, item 4): builds the release daemon and the
# `media_load` example, and for each CODEC:N in RUNS starts a fresh daemon (benches/daemon.sh)
# and drives N conference legs (sessions of 4; PCMU over RTP, or AMR-WB over SRTP-SDES) over
# real UDP on loopback for SECONDS_EACH after a WARMUP, then prints one table: the daemon's CPU per leg-second from /proc, legs per core, the
# ratio to the matched ceiling timed in the same run, RSS per leg, packets, and the phone →
# phone latency through the conference and phone → browser to BROWSERS listening browsers per
# session (str0m peers over real UDP, default 1).
#
#   bash benches/media_load.sh                  # PCMU 20, 50, 100 legs, AMR-WB 20, 20 s each
#   RUNS="pcmu:50 amrwb:50" SECONDS_EACH=10 bash benches/media_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-"pcmu:20 pcmu:50 pcmu:100 amrwb:20"}
SECONDS_EACH=${SECONDS_EACH:-20}
WARMUP=${WARMUP:-3}
HTTP=127.0.0.1:${HTTP_PORT:-28180}
SIP_PORT=${SIP_PORT:-25160}

cargo build --release --example media_load >&2
. benches/daemon.sh
generator="${CARGO_TARGET_DIR:-./target}/release/examples/media_load"

rows=()
ceilings=()
header=""
for run in $RUNS; do
    codec=${run%%:*}
    n=${run##*:}
    start_daemon INTERWORK_SIP_INVITE_RATE=1000000 INTERWORK_SIP_MAX_CALLS=10000 \
        INTERWORK_MEDIA_RTP_PORT_MIN=30000 INTERWORK_MEDIA_RTP_PORT_MAX=39999 \
        INTERWORK_LOG_LEVEL=warn
    sleep 1 # let the start-up settle before the RSS baseline
    out=$(INTERWORK_ACCOUNTS_DEFAULT_PASSWORD=bench "$generator" --legs "$n" --codec "$codec" \
        --seconds "$SECONDS_EACH" --warmup "$WARMUP" --http "$HTTP" --sip "127.0.0.1:$SIP_PORT" \
        --pid "$daemon" --user bench --browsers "${BROWSERS:-1}")
    echo "$out" >&2
    header=$(echo "$out" | grep '^| legs' -A1)
    rows+=("$(echo "$out" | grep '^| [0-9]')")
    ceilings+=("$codec: $(echo "$out" | grep '^matched ceiling')")
    kill "$daemon"
    wait "$daemon" 2>/dev/null || true
    daemon=""
done

echo
echo "$header"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${ceilings[@]}"
