#!/usr/bin/env bash
# Short fuzz smoke for scripts/test.sh (about 20 s once built): the fuzz target bodies
# (gridwatch::fuzzing) on random inputs via proptest, tests/fuzz_props.rs. libFuzzer runs
# need an instrumented nightly build of the whole tree (minutes), so they live in
# scripts/fuzz.sh, not here.
set -euo pipefail
cd "$(dirname "$0")/.."
PROPTEST_CASES="${PROPTEST_CASES:-2000}" timeout 300 cargo test -p gridwatch --test fuzz_props
