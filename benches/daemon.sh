# Sourced by the shell benchmarks: builds the release binary and starts it on HTTP=$HTTP and
# SIP on 127.0.0.1:$SIP_PORT (WebRTC on the port after) with the bench account, in a fresh
# state directory under $work, killed when the script exits. Extra settings come as arguments
# (NAME=value, e.g. INTERWORK_SIP_INVITE_RATE=1000000). Sets $work and $daemon (its pid);
# returns once /healthz answers. DAEMON_CPUS (a taskset CPU list, e.g. 0) pins the daemon, so
# that a load generator pinned elsewhere does not share its cores. DAEMON_WRAP runs it under a
# tool (e.g. DAEMON_WRAP="heaptrack -o /tmp/interwork"); $daemon is then the tool's pid.
cargo build --release --bin interwork >&2
work=$(mktemp -d)
daemon=""
cleanup() { [ -n "$daemon" ] && kill "$daemon" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_daemon() {
    env INTERWORK_STATE_DIR="$work/state" INTERWORK_HTTP_LISTEN="$HTTP" INTERWORK_SIP_LISTEN="127.0.0.1:$SIP_PORT" \
        INTERWORK_MEDIA_WEBRTC_LISTEN="127.0.0.1:$((SIP_PORT + 1))" \
        INTERWORK_ACCOUNTS_DEFAULT_USERNAME=bench INTERWORK_ACCOUNTS_DEFAULT_PASSWORD=bench \
        "$@" ${DAEMON_CPUS:+taskset -c "$DAEMON_CPUS"} ${DAEMON_WRAP:-} "${CARGO_TARGET_DIR:-./target}/release/interwork" run >"$work/daemon.out" 2>"$work/daemon.err" &
    daemon=$!
    for _ in $(seq 1 200); do curl -sf "http://$HTTP/healthz" >/dev/null && return 0; sleep 0.05; done
    echo "the daemon did not start: $(cat "$work/daemon.err")" >&2
    return 1
}
