#!/usr/bin/env bash
# SIP load on loopback (issue 4, item 10): sipp places calls at RATE calls/s for DURATION s
# against a release build of interwork, and this prints calls/s achieved, failed calls, the
# INVITE→200 latency percentiles measured by sipp, the daemon's CPU per call (utime + stime
# from /proc over the run) and its RSS before, at the end, 60 s and 100 s after.
#
#   bash benches/sip_load.sh            # 1000 calls/s for 30 s
#   RATE=200 DURATION=10 bash benches/sip_load.sh
#   DAEMON_CPUS=0 SIPP_CPUS=1 RATE=4000 bash benches/sip_load.sh   # one core each
#
# Each call: INVITE (PCMU offer, participant token), 200, ACK, BYE, 200, in bridge mode so the
# participants stay in their session. PARTICIPANTS tokens (in sessions of SESSION_SIZE) are
# used round robin so that no participant has two live legs at once.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000}
DURATION=${DURATION:-30}
PARTICIPANTS=${PARTICIPANTS:-2000}
SESSION_SIZE=${SESSION_SIZE:-20}
HTTP=127.0.0.1:${HTTP_PORT:-28080}
SIP_PORT=${SIP_PORT:-25060}
CALLS=$((RATE * DURATION))

. benches/daemon.sh
start_daemon INTERWORK_SIP_INVITE_RATE=1000000 INTERWORK_SIP_DEFAULT_MODE=bridge \
    INTERWORK_SESSIONS_MAX_PARTICIPANTS=100000 INTERWORK_SESSIONS_MAX_PARTICIPANTS_PER_SESSION=100000 \
    INTERWORK_LOG_LEVEL=warn

API="http://$HTTP/v1/accounts/default"
python3 - "$API" "$PARTICIPANTS" "$SESSION_SIZE" "$work/tokens.csv" <<'PY'
import base64, json, sys, urllib.request
api, n, size, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
auth = "Basic " + base64.b64encode(b"bench:bench").decode()
def call(method, url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
with open(out, "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(n):
        if i % size == 0:
            sid = call("POST", f"{api}/sessions", {})["id"]
        p = call("POST", f"{api}/participants", {"publishPermissions": ["AUDIO"]})
        call("PUT", f"{api}/sessions/{sid}/participants/{p['participant']['id']}", {"sessionId": sid})
        f.write(p["token"] + "\n")
PY

cat >"$work/call.xml" <<'XML'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="load">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:gw@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-to-User: [field0];encoding=jwt
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="1" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100"/>
</scenario>
XML

cpu() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$daemon/status"; }
cd "$work"
# Datagrams the kernel dropped for a full receive buffer: on the daemon's SIP socket
# (/proc/net/udp's last column) and in all (RcvbufErrors; sipp's sockets are gone by the end).
udp_drops() {
    awk -v port="$(printf ':%04X' "$1")" 'NR > 1 && index($2, port) == length($2) - 4 { own += $NF } END { printf "%d ", own }' /proc/net/udp
    awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}
drops_before=$(udp_drops "$SIP_PORT")
rss_before=$(rss)
cpu_before=$(cpu)
# PERF=1: profile the daemon during the run (perf.data into $PERF_OUT, default /tmp/sip_load.perf).
if [ -n "${PERF:-}" ]; then
    perf record ${PERF_CALLGRAPH:--g} -p "$daemon" -o "${PERF_OUT:-/tmp/sip_load.perf}" -- sleep "$DURATION" >/dev/null 2>&1 &
fi
start=$(date +%s.%N)
TIMEFORMAT="%U %S"
{ time ${SIPP_CPUS:+taskset -c "$SIPP_CPUS"} sipp "127.0.0.1:$SIP_PORT" -sf call.xml -inf tokens.csv -i 127.0.0.1 -p $((SIP_PORT + 2)) -mp $((SIP_PORT + 10)) \
  -r "$RATE" -m "$CALLS" -l $((RATE * 2)) -buff_size 4194304 -nostdin -trace_rtt -rtt_freq 1 -trace_stat -fd 1 \
  -timeout $((DURATION + 60))s -max_socket 64 >/dev/null 2>sipp.err || true; } 2>sipp.time
end=$(date +%s.%N)
cpu_after=$(cpu)
rss_end=$(rss)
drops_after=$(udp_drops "$SIP_PORT")
stat=$(ls call_*_.csv | head -1)
cp call_*_rtt.csv "${RTT_OUT:-/tmp/sip_load_rtt.csv}" 2>/dev/null || true
cp sipp.err /tmp/sip_load_sipp.err 2>/dev/null || true
cat "$work/daemon.out" "$work/daemon.err" > /tmp/sip_load_daemon.err 2>/dev/null || true
python3 - "$stat" call_*_rtt.csv "$start" "$end" "$CALLS" <<'PY'
import csv, sys
stat, rtt, start, end, calls = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rows = list(csv.reader(open(stat), delimiter=";"))
head, last = rows[0], rows[-1]
col = lambda name: last[head.index(name)]
ok, failed = int(col("SuccessfulCall(C)")), int(col("FailedCall(C)"))
times = []
for r in csv.reader(open(rtt), delimiter=";"):
    try:
        times.append(float(r[1]))   # Date_ms;response_time_ms;rtd_no
    except (ValueError, IndexError):
        pass
times.sort()
pct = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))] if times else float("nan")
print(f"calls requested {calls}, successful {ok}, failed {failed}, wall {end - start:.1f} s, "
      f"{ok / (end - start):.0f} calls/s")
# Why calls failed, as sipp counts it (a shed call is an unexpected 503: FailedUnexpectedMessage).
why = {h[len("Failed"):-3]: int(last[i]) for i, h in enumerate(head)
       if h.startswith("Failed") and h.endswith("(C)") and h != "FailedCall(C)" and last[i].isdigit() and int(last[i])}
if why:
    print("failed calls by cause: " + ", ".join(f"{k} {v}" for k, v in sorted(why.items())))
print(f"INVITE->200 latency ms: p50 {pct(50):.2f}  p90 {pct(90):.2f}  p99 {pct(99):.2f}  max {times[-1] if times else float('nan'):.2f}")
PY
ticks=$(getconf CLK_TCK)
python3 -c "import sys; c=(float(sys.argv[2])-float(sys.argv[1]))/float(sys.argv[3]); n=int(sys.argv[4]); print(f'daemon CPU: {c:.2f} s in all, {c*1000/n:.3f} ms per call')" "$cpu_before" "$cpu_after" "$ticks" "$CALLS"
# The load generator's own CPU: a saturated sipp reads responses late and inflates latency.
awk -v w="$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$end")" \
    '{printf "sipp CPU: %.1f s (%.0f %% of one core)\n", $1 + $2, 100 * ($1 + $2) / w}' sipp.time
echo "RSS: $rss_before MB before, $rss_end MB at the end"
read -r own_before all_before <<<"$drops_before"
read -r own_after all_after <<<"$drops_after"
echo "UDP datagrams dropped by the kernel (full receive buffer): daemon $((own_after - own_before)), others (sipp) $((all_after - all_before - own_after + own_before))"
curl -s "http://$HTTP/metrics" >metrics.txt
echo "shed with 503: $(awk '/^interwork_sip_shed_total/{print $2}' metrics.txt), of which after waiting over 30 ms for the endpoint: $(awk '/^interwork_sip_shed_late_total/{print $2}' metrics.txt)"
# The daemon's own view: how long messages waited for the SIP endpoint, and INVITE → 200.
python3 - metrics.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for name, label in (("sip_queue_seconds", "SIP queue wait"), ("sip_setup_seconds", "INVITE->200 in the daemon")):
    buckets = [(float(le), float(v)) for le, v in re.findall(rf'interwork_{name}_bucket{{le="([0-9.e+-]+)"}} (\S+)', text)]
    total = next((float(v) for v in re.findall(rf'interwork_{name}_count (\S+)', text)), 0)
    if total:
        print(f"{label}: " + ", ".join(f"<= {le * 1000:g} ms {100 * v / total:.1f} %" for le, v in buckets if le in (0.005, 0.02, 0.05, 0.1)))
PY
# After the run: at +60 s, and at +100 s (past 64·T1 + 32 s, when every transaction and
# dialog of a call the caller gave up on is gone).
if [ -n "${AFTER:-1}" ]; then
    sleep 60; echo "RSS 60 s after: $(rss) MB"
    sleep 40; echo "RSS 100 s after: $(rss) MB"
fi
