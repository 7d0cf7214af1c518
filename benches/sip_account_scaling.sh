#!/usr/bin/env bash
# Does a SIP call cost more when the account's sessions are big? The same PARTICIPANTS (5000 by
# default) are put in sessions of 2, then all in one session, and benches/sip_load.sh places
# calls at RATE calls/s for DURATION s against each; ROUNDS alternations (2 by default) so that a
# change in what else the machine does falls on both shapes. Prints each run's daemon CPU per
# call and RSS, the median of each shape and their ratio (the target: within 1.2).
#
#   bash benches/sip_account_scaling.sh
#   ROUNDS=3 PARTICIPANTS=10000 bash benches/sip_account_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PARTICIPANTS=${PARTICIPANTS:-5000} RATE=${RATE:-1000} DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for size in 2 "$PARTICIPANTS"; do
        figures=$(AFTER= SESSION_SIZE=$size bash benches/sip_load.sh 2>/dev/null)
        per_call=$(sed -n 's/^daemon CPU: .*, \([0-9.]*\) ms per call$/\1/p' <<<"$figures")
        calls=$(sed -n 's/^calls requested .*, successful \([0-9]*\),.*, \([0-9]*\) calls\/s$/\1 calls, \2 calls\/s/p' <<<"$figures")
        rss=$(sed -n 's/^RSS: \(.*\)$/\1/p' <<<"$figures")
        [ -n "$per_call" ] || { echo "round $round, sessions of $size: no figures" >&2; echo "$figures" >&2; exit 1; }
        echo "round $round, sessions of $size: $per_call ms of daemon CPU per call ($calls; RSS $rss)"
        echo "$size $per_call" >>"$out"
    done
done
python3 - "$out" "$PARTICIPANTS" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
big = sys.argv[2]
small_runs = [float(c) for s, c in rows if s == "2"]
big_runs = [float(c) for s, c in rows if s == big]
small, large = statistics.median(small_runs), statistics.median(big_runs)
print(f"median daemon CPU per call: sessions of 2 {small:.3f} ms, one session of {big} {large:.3f} ms, "
      f"ratio {large / small:.2f}")
PY
