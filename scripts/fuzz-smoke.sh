#!/usr/bin/env bash
# Short fuzz smoke for scripts/test.sh (well under 60 s): with nightly + cargo-fuzz, each
# target runs 10 s under libFuzzer; otherwise the same target bodies run as property tests
# with more cases (tests/fuzz_props.rs). Long runs: scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if rustup toolchain list 2>/dev/null | grep -q nightly && cargo +nightly fuzz --version >/dev/null 2>&1; then
    exec bash scripts/fuzz.sh 10
fi
echo "fuzz-smoke: no nightly cargo-fuzz; running the targets as property tests" >&2
PROPTEST_CASES=2000 timeout 120 cargo test -p gridwatch --test fuzz_props
