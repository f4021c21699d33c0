#!/usr/bin/env bash
# Long fuzz runs (not CI): every target in fuzz/ for SECONDS each (default 600).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`cargo +nightly install cargo-fuzz`).
# Corpora live in fuzz/corpus/TARGET, crashes in fuzz/artifacts/TARGET.
# Without nightly, the same target bodies run as property tests:
#   PROPTEST_CASES=100000 cargo test -p gridwatch --test fuzz_props
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(modbus_response lineproto spool_segment spool_journal config mqtt_message)
cd fuzz
for t in "${TARGETS[@]}"; do
    echo "=== fuzz $t for ${SECS}s" >&2
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 |
        tee "/tmp/gridwatch-fuzz-$t.log" | grep -E "^(Done|#[0-9]+ *DONE)|SUMMARY|panicked" || true
    grep -E "Done [0-9]+ runs" "/tmp/gridwatch-fuzz-$t.log" || { echo "fuzz $t failed" >&2; exit 1; }
done
