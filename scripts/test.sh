#!/usr/bin/env bash
# The one test command of gridwatch (CI: .ci/run; Debian 12, root, no stdin, CI=true).
#
#   ./scripts/test.sh                  fmt, clippy, build, all tests
#   ./scripts/test.sh -- FILTER [ARGS] same, passing FILTER/ARGS to the test binaries
#   GRIDWATCH_TEST_FILTER=FILTER ./scripts/test.sh
#   GRIDWATCH_SKIP_LINT=1 ...          skip fmt and clippy (local iterations only)
#   GRIDWATCH_KEEP_SERVICES_ROOT=1 ... keep the services' temp dir (logs, data) afterwards
#
# Installs missing Debian packages, starts the test services on free 127.0.0.1 ports
# (scripts/services.sh), runs the checks, always stops the services, and exits with the
# status of the first failing step. Service log tails are printed on failure.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

TEST_ARGS=()
if [[ "${1:-}" == "--" ]]; then
    shift
    TEST_ARGS=("$@")
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [-- FILTER [TEST ARGS]]" >&2
    exit 64
elif [[ -n "${GRIDWATCH_TEST_FILTER:-}" ]]; then
    TEST_ARGS=("$GRIDWATCH_TEST_FILTER")
fi

step() { echo "=== $* ($(date -u +%H:%M:%S))" >&2; }

# ------------------------------------------------------------------ packages
# shellcheck source=scripts/packages.sh
source "$REPO/scripts/packages.sh"

# ------------------------------------------------------------------ run
# shellcheck source=scripts/services.sh
source "$REPO/scripts/services.sh"

STATUS=0
SERVICES_UP=0
cleanup() {
    local rc=$?
    set +e # clean up as much as possible, whatever fails here
    if [[ $STATUS -eq 0 ]]; then STATUS=$rc; fi
    if [[ $SERVICES_UP == 1 ]]; then
        if [[ $STATUS -ne 0 ]]; then
            echo "=== service logs (tests failed with status $STATUS)" >&2
            gw_logs "$GW_ROOT"
        fi
        gw_down "$GW_ROOT"
    fi
    exit "$STATUS"
}
trap cleanup EXIT
trap 'STATUS=130; exit 130' INT
trap 'STATUS=143; exit 143' TERM

run() {
    step "$*"
    "$@" || {
        STATUS=$?
        echo "=== FAILED ($STATUS): $*" >&2
        exit "$STATUS"
    }
}

T0=$SECONDS
step "checking Debian packages"
install_packages
install_rust_components

if [[ -z "${GRIDWATCH_SKIP_LINT:-}" ]]; then
    run cargo fmt --all --check
    run cargo clippy --workspace --all-targets -- -D warnings
fi
run cargo build --workspace --all-targets

step "starting services"
SERVICES_UP=1
T_SVC=$SECONDS
gw_up || {
    STATUS=$?
    SERVICES_UP=0 # gw_up stopped what it started
    exit "$STATUS"
}
step "services ready in $((SECONDS - T_SVC))s"

run cargo test --workspace --no-fail-fast -- "${TEST_ARGS[@]}"

if [[ -f "$REPO/scripts/fuzz-smoke.sh" ]]; then
    run bash "$REPO/scripts/fuzz-smoke.sh"
fi

step "all passed in $((SECONDS - T0))s"
