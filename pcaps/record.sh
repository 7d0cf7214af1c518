#!/usr/bin/env bash
# Records the third-party captures of pcaps/recorded/ (issue 7): sipp (Debian sip-tester) calls
# a freshly started interwork daemon on loopback while dumpcap records, as an operator would with
# tcpdump. Two calls in one session: alice over UDP and bob over TCP, each playing sipp's own
# A-law recording (/usr/share/sip-tester/g711a.pcap) as RTP for 4 seconds.
#
#   cargo build --bin interwork && sudo pcaps/record.sh            # writes pcaps/recorded/*.pcapng
#
# Needs root (dumpcap on lo, sipp's play_pcap_audio), sip-tester, tshark (dumpcap), curl.
# The daemon, dumpcap and sipp are stopped by their own pids whatever happens.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${RECORD_BIN:-$here/../target/debug/interwork}"
out="${1:-$here/recorded}"
[ -x "$bin" ] || { echo "record.sh: no interwork binary at $bin (cargo build --bin interwork, or set RECORD_BIN)" >&2; exit 1; }
for tool in sipp dumpcap curl; do
  command -v "$tool" >/dev/null || { echo "record.sh: $tool is missing (make test-deps)" >&2; exit 1; }
done
audio=/usr/share/sip-tester/g711a.pcap
[ -r "$audio" ] || { echo "record.sh: $audio is missing (sip-tester)" >&2; exit 1; }

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

http=127.0.0.1:18790
sip_port=15790
export INTERWORK_HTTP_LISTEN=$http INTERWORK_SIP_LISTEN=127.0.0.1:$sip_port \
  INTERWORK_MEDIA_WEBRTC_LISTEN=127.0.0.1:19790 INTERWORK_STATE_DIR="$tmp/state" \
  INTERWORK_ACCOUNTS_DEFAULT_USERNAME=recorder INTERWORK_ACCOUNTS_DEFAULT_PASSWORD=recorder-password
RUST_LOG=warn "$bin" run >"$tmp/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do
  curl -sf "http://$http/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$http/healthz" >/dev/null || { cat "$tmp/daemon.log" >&2; echo "record.sh: the daemon did not start" >&2; exit 1; }

api() { curl -sf -u recorder:recorder-password -H 'content-type: application/json' "$@"; }
json() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
sid=$(api -X POST "http://$http/v1/accounts/default/sessions" -d '{"tag":"recording"}' | json id)
token() {
  local p pid
  p=$(api -X POST "http://$http/v1/accounts/default/participants" -d '{"publishPermissions":["AUDIO"]}')
  pid=$(echo "$p" | sed -n 's/.*"participant":{"id":"\([^"]*\)".*/\1/p')
  api -X PUT "http://$http/v1/accounts/default/sessions/$sid/participants/$pid" -d "{\"sessionId\":\"$sid\"}" >/dev/null
  echo "$p" | json token
}
alice=$(token)
bob=$(token)

scenario() { # $1 token, $2 file
  cat >"$2" <<EOF
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="recorded call">
  <send retrans="500">
    <![CDATA[
      INVITE sip:gw@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-to-User: $1;encoding=jwt
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="$audio"/></action></nop>
  <pause milliseconds="4000"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:gw@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
EOF
}
scenario "$alice" "$tmp/alice.xml"
scenario "$bob" "$tmp/bob.xml"

mkdir -p "$out"
capture="$tmp/capture.pcapng"
# The API's HTTP stays out of the capture; SIP, RTP and RTCP on lo go in.
dumpcap -q -i lo -f "(udp or tcp) and not port ${http##*:}" -w "$capture" 2>"$tmp/dumpcap.log" &
dumpcap_pid=$!
pids+=($dumpcap_pid)
for _ in $(seq 1 100); do grep -q "Capturing on" "$tmp/dumpcap.log" 2>/dev/null && break; [ -s "$capture" ] && break; sleep 0.1; done
sleep 0.5

run_sipp() { # $1 scenario, $2 transport (u1|t1), $3 sip port, $4 media port
  (cd "$tmp" && sipp "127.0.0.1:$sip_port" -sf "$1" -t "$2" -i 127.0.0.1 -p "$3" -mp "$4" \
      -m 1 -timeout 30s -timeout_error -nostdin -trace_err >/dev/null 2>"$1.err") || {
    echo "record.sh: sipp $1 failed:" >&2; cat "$1.err" "$tmp"/*errors.log >&2 2>/dev/null || true; exit 1; }
}
run_sipp "$tmp/alice.xml" u1 15791 16790 &
a=$!
sleep 0.3
run_sipp "$tmp/bob.xml" t1 15792 16794 &
b=$!
wait $a
wait $b
sleep 0.5
kill -INT $dumpcap_pid
wait $dumpcap_pid 2>/dev/null || true

# One file with both calls, and one with bob's TCP call alone.
cp "$capture" "$out/sipp_udp_and_tcp.pcapng"
tshark -r "$capture" -Y "tcp.port == 15792 or udp.port == 16794 or udp.port == 16795" -w "$out/sipp_tcp_alone.pcapng" 2>/dev/null
chmod 644 "$out"/*.pcapng
echo "record.sh: wrote $out/sipp_udp_and_tcp.pcapng and $out/sipp_tcp_alone.pcapng"
