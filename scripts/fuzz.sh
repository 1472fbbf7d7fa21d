#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets for SECONDS each (default
# 300), one after the other, one process each (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS]
#
# Each target reads its committed seeds (fuzz/seeds/TARGET) and writes what it
# finds to a scratch corpus (fuzz/corpus/TARGET, or $FUZZ_CORPUS/TARGET), so
# the seeds never grow. Logs go to fuzz/logs/TARGET.log. Exits 1 when a target
# crashes (after running the others) and prints the reproducer's path; exits 0
# without running anything when the nightly toolchain is missing, since
# libFuzzer's instrumentation needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
case $seconds in '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: nightly toolchain not found; skipping fuzz smoke"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked </dev/null
fi

# The fuzz crate builds in its own target dir (instrumented, with ASan): a
# CARGO_TARGET_DIR meant for the main crate must not receive it.
unset CARGO_TARGET_DIR
corpus_root=${FUZZ_CORPUS:-fuzz/corpus}
mkdir -p fuzz/logs

start=$(date +%s)
# Debug assertions on: overflow checks and debug_assert! hold while fuzzing,
# as they do in the debug test build.
cargo +nightly fuzz build --debug-assertions </dev/null
echo "fuzz: built the targets in $(($(date +%s) - start))s"

failed=()
for src in fuzz/fuzz_targets/*.rs; do
    t=$(basename "$src" .rs)
    corpus=$corpus_root/$t
    log=fuzz/logs/$t.log
    mkdir -p "$corpus"
    if cargo +nightly fuzz run --debug-assertions "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
        </dev/null >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
        cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
        corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
        echo "fuzz: $t: ${runs:-?} runs in ${seconds}s, cov ${cov:-?}, corpus ${corp:-?}: no crash"
    else
        failed+=("$t")
        echo "fuzz: $t: FAILED (log: $log)" >&2
        grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY' "$log" | head -n 5 >&2 || true
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            echo "fuzz: $t: reproducer: $artifact" >&2
            echo "fuzz: $t: replay: cargo +nightly fuzz run --debug-assertions $t $artifact" >&2
        else
            tail -n 20 "$log" >&2
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash ($(($(date +%s) - start))s in all)"
