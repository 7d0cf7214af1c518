# Sourced by fuzz/run.sh and codecs/fuzz/run.sh: the libFuzzer build on the stable toolchain
# (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flag cargo-fuzz would pass on nightly), and
# fuzz_build, which builds the current directory's targets (holding FUZZ_BUILD_LOCK, a flock
# file, for the build only when it is set). Sets $triple and $bin.
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="target/$triple/release"
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Zsanitizer=address"
fuzz_build() {
    if [ -n "${FUZZ_BUILD_LOCK:-}" ]; then
        flock "$FUZZ_BUILD_LOCK" cargo build --release --target "$triple" --bins
    else
        cargo build --release --target "$triple" --bins
    fi
}
