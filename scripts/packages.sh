# scripts/packages.sh — sourced by scripts/test.sh and scripts/bench.sh: installs the Debian
# packages the tests and the benchmarks run (a fresh Debian 12 machine has only the Rust
# toolchain), so both work from a clean checkout with one command.

pkg_step() { echo "=== $* ($(date -u +%H:%M:%S))" >&2; }

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

# install_packages [PKG...]: installs those of PKG (default: every package above) that are
# missing, with apt-get (as root, or through sudo -n).
install_packages() {
    local missing=() p wanted=("$@")
    [[ ${#wanted[@]} -gt 0 ]] || wanted=("${!PKG_FILE[@]}")
    for p in "${wanted[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    # A C compiler for the bundled SQLite and ring (rust images have one; be sure).
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    [[ ${#missing[@]} -eq 0 ]] && return 0

    pkg_step "installing Debian packages: ${missing[*]}"
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
    pkg_step "installing rust components: ${missing[*]}"
    rustup component add "${missing[@]}"
}
