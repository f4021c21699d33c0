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

# ------------------------------------------------------------------ Debian packages
# package name -> a file it provides (checked before asking dpkg, so a machine where the
# tools exist by other means does not need apt at all).
declare -A PKG_FILE=(
    [mosquitto]=/usr/sbin/mosquitto
    [mosquitto-clients]=/usr/bin/mosquitto_sub
    [victoria-metrics]=/usr/bin/victoria-metrics
    [influxdb]=/usr/bin/influxd
    [socat]=/usr/bin/socat
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
    [sqlite3]=/usr/bin/sqlite3
    [curl]=/usr/bin/curl
    [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
)

pkg_installed() {
    [[ -e "${PKG_FILE[$1]}" ]] && return 0
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_packages() {
    local missing=() p
    for p in "${!PKG_FILE[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    # A C compiler for the bundled SQLite and ring (rust images have one; be sure).
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    [[ ${#missing[@]} -eq 0 ]] && return 0

    step "installing Debian packages: ${missing[*]}"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || {
            echo "missing packages (${missing[*]}) and not root, no sudo" >&2
            return 1
        }
        sudo=(sudo -n)
    fi
    # Keep the packages' own services from starting (we run private instances on other
    # ports; a system influxdb failing to start would also fail the install). Only if
    # the machine has no policy of its own (Debian container images ship one).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        added_policy=1
    fi
    local rc=0
    {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                "${missing[@]}"
    } </dev/null || rc=$?
    if [[ $added_policy == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
    if [[ $rc -ne 0 ]]; then
        echo "apt-get failed ($rc) installing: ${missing[*]}" >&2
        return "$rc"
    fi
}

install_rust_components() {
    local c missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    step "installing rust components: ${missing[*]}"
    rustup component add "${missing[@]}"
}

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
