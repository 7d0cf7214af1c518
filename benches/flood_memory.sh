#!/usr/bin/env bash
# Memory after an INVITE flood (issue 11, item 4): starts a release build of interwork, reads its
# RSS, floods it with never-ACKed INVITEs (bad tokens: each is refused, and its transaction
# lives for 64*T1 unless shed) at RATE/s for DURATION s from benches/sip_flood.py, then prints
# the RSS at the flood's end and 10, 30, 60 and 90 s later, and the requests shed with 503.
#
#   bash benches/flood_memory.sh                 # 5000 INVITEs/s for 20 s
#   RATE=10000 DURATION=10 bash benches/flood_memory.sh
#   MODE=garbage bash benches/flood_memory.sh    # mutated SIP (benches/sip_garbage.py) instead
#
# The target: RSS back within 2 × its baseline a minute after the flood.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-5000}
DURATION=${DURATION:-20}
HTTP=127.0.0.1:${HTTP_PORT:-28180}
SIP_PORT=${SIP_PORT:-25160}

. benches/daemon.sh
start_daemon INTERWORK_LOG_LEVEL=error

rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$daemon/status"; }
sleep 1
base=$(rss)
echo "baseline RSS: $base MB"
flooder=benches/sip_flood.py
[ "${MODE:-invite}" = garbage ] && flooder=benches/sip_garbage.py
python3 "$flooder" 127.0.0.1 "$SIP_PORT" "$RATE" "$DURATION"
echo "flood end:    $(rss) MB"
sleep 10; echo "+10 s:        $(rss) MB"
sleep 20; echo "+30 s:        $(rss) MB"
sleep 30; after=$(rss); echo "+60 s:        $after MB"
sleep 30; echo "+90 s:        $(rss) MB"
echo "shed with 503: $(curl -s "http://$HTTP/metrics" | awk '/^interwork_sip_shed_total/{print $2}')"
python3 -c "import sys; b,a=float(sys.argv[1]),float(sys.argv[2]); print(f'after a minute / baseline: {a/b:.2f} (target <= 2)')" "$base" "$after"
