#!/bin/sh
# Bounded fuzzing of every interwork fuzz target (the parsers that read peer input; see the
# README's "Fuzzing" section): ./run.sh [SECONDS_PER_TARGET] (default 30);
# ./run.sh merge to fold new finds into the committed corpus, minimized by edge coverage;
# ./run.sh seeds to rewrite the seed inputs (corpus/<target>/seed-*) from pcaps/ and the
# crate's own writers. TARGETS="rtp srtp" ./run.sh 60 runs only those.
#
# Builds the targets with plain cargo on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flag cargo-fuzz would pass on nightly), so cargo-fuzz itself is not needed; with it
# installed, `cargo fuzz run <target> -- -max_total_time=N` from the repo root does the same.
# The committed corpus/<target> seeds each run (read only); what a run finds goes to
# target/corpus/<target>. A crash, a timeout (10 s on one input) or running out of memory
# leaves its input in artifacts/<target>/ and makes this script fail.
set -eu
seconds=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
. ./build-env.sh
fuzz_build
if [ "$seconds" = seeds ]; then
    exec "$bin/seeds"
fi
targets=${TARGETS:-"sip_udp sip_tcp sdp_offer uui_header rtp rtcp srtp device_message token_verify capture"}
for target in $targets; do
    mkdir -p "corpus/$target" "target/corpus/$target" "artifacts/$target"
    if [ "$seconds" = merge ]; then
        # The fewest inputs that keep every edge covered so far (counters and comparisons
        # aside, to keep the committed corpus small), into a fresh directory that replaces
        # corpus/. target/corpus keeps everything for local runs.
        rm -rf "target/merged/$target" && mkdir -p "target/merged/$target"
        "$bin/$target" -set_cover_merge=1 -use_counters=0 -use_cmp=0 \
            "target/merged/$target" "corpus/$target" "target/corpus/$target"
        rm -rf "corpus/$target" && mv "target/merged/$target" "corpus/$target"
        continue
    fi
    echo "== $target: ${seconds}s"
    "$bin/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$target/" "target/corpus/$target" "corpus/$target"
done
[ "$seconds" = merge ] && exit 0
count=$(echo $targets | wc -w)
echo "fuzzed $count targets for ${seconds}s each: no crash"
echo "fuzz: $count passed, 0 failed"
