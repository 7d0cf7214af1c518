#!/bin/sh
# Bounded fuzzing of every codecs fuzz target: ./run.sh [SECONDS_PER_TARGET] (default 30),
# or ./run.sh merge to fold new finds into the committed corpus.
#
# Builds the targets with plain cargo on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flag cargo-fuzz would pass on nightly), so cargo-fuzz itself is not needed; with it
# installed, `cargo fuzz run <target> -- -max_total_time=N` from codecs/ does the same.
# The committed corpus/<target> seeds each run (read only); what a run finds goes to
# target/corpus/<target> (`./run.sh merge` folds that back into corpus/, minimized). A crash
# leaves its input in artifacts/<target>/ and makes this script fail.
set -eu
seconds=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
. ../../fuzz/build-env.sh
fuzz_build
targets="depacketize_octet_aligned depacketize_bandwidth_efficient amrwb_decode opus_decode telephone_event_receive g711_decode"
for target in $targets; do
    mkdir -p "corpus/$target" "target/corpus/$target" "artifacts/$target"
    if [ "$seconds" = merge ]; then
        "target/$triple/release/$target" -merge=1 "corpus/$target" "target/corpus/$target"
        continue
    fi
    echo "== $target: ${seconds}s"
    "target/$triple/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" "target/corpus/$target" "corpus/$target"
done
[ "$seconds" = merge ] && exit 0
echo "fuzzed $(echo $targets | wc -w) targets for ${seconds}s each: no crash"
