#!/usr/bin/env bash
# scripts/bench.sh — gridwatch's load and speed figures, printed as ONE JSON object on stdout
# (progress goes to stderr). The same steps every time:
#
#   1. the Debian packages it runs (victoria-metrics, mosquitto, mosquitto-clients for the
#      alarm scenario's subscriber, curl; scripts/packages.sh),
#      then cargo build --release (gridwatch, gridwatch-sim, bare-poller)
#   2. VictoriaMetrics on a free loopback port (scripts/services.sh, its own temp dir)
#   3. for each device count N (default 1000 5000 10000):
#        gridwatch-sim load: N/100 gateway ports × 100 unit ids, bench-50 map (60 registers,
#        50 values), writing the matching daemon config
#        gridwatch polls every device every 1 s into VictoriaMetrics; after a warm-up, the
#        counters of /metrics, /proc/PID/stat (utime+stime) and VmHWM are read at the start
#        and end of the measured window
#        bare-poller runs the same poll loop against the same harness (no decoding, no
#        pipeline), measuring its own CPU: gridwatch's CPU per poll / bare CPU per poll is
#        the overhead ratio, with the bare client's CPU the mean of a window just before the
#        daemon and one just after it (a drift of the machine's speed cancels)
#   4. criterion micro-benchmarks (benches/hot_path.rs): decoding values/s/core and
#      line-protocol points/s/core
#   5. MQTT ingest: run only when gridwatch-sim has the `mqtt-load` subcommand (being
#      written); otherwise reported as not run.
#   6. alarm latency (scripts/bench-alarm.sh, about 70 s): over_temperature cycled on the
#      simulator, p50/p99 of published_ts_ns - reading_ts_ns of the MQTT `raised` alerts.
#
# Environment (all optional):
#   BENCH_DEVICES="1000 5000 10000"  device counts      BENCH_UNITS=100   unit ids per port
#   BENCH_DURATION=60   measured seconds per scenario   BENCH_WARMUP=6    seconds before it
#   BENCH_BARE_DURATION=10  measured seconds of each bare-poller window (two per scenario)
#   BENCH_COLLECTION_DEVICES="10000"  device counts of the collection-only scenario (alarms
#       and KPIs off; " " = none), BENCH_COLLECTION_DURATION=20, BENCH_COLLECTION_BARE_DURATION=8
#   BENCH_SWEEP_VALUES="10 40 120"  register sweep: maps of V 16-bit values (one read each) on
#       BENCH_SWEEP_DEVICES=2000 devices for BENCH_SWEEP_DURATION=10 s each (" " = none)
#   BENCH_INTERVAL=1s   poll interval                    BENCH_SKIP_BUILD=1  reuse target/release
#   BENCH_SKIP_CRITERION=1  skip the micro-benchmarks   BENCH_KEEP=1  keep the work dir
#   BENCH_GRIDWATCH=PATH  measure another gridwatch binary (before/after comparisons)
#   BENCH_BIN=DIR  take gridwatch, gridwatch-sim and bare-poller from DIR (a saved build)
#   BENCH_SKIP_MQTT=1 / BENCH_SKIP_ALARM=1  leave out those scenarios
#   BENCH_SIM_PREFIX="chrt -b 0"  run the Modbus harness under that command (default: none)
# Default run: about 14.5 minutes including the build on a 2-core machine (run_seconds in the JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DEVICES=${BENCH_DEVICES:-"1000 5000 10000"}
UNITS=${BENCH_UNITS:-100}
DURATION=${BENCH_DURATION:-60}
WARMUP=${BENCH_WARMUP:-6}
BARE_DURATION=${BENCH_BARE_DURATION:-10}
COLLECTION_DEVICES=${BENCH_COLLECTION_DEVICES:-10000}
COLLECTION_DURATION=${BENCH_COLLECTION_DURATION:-20}
COLLECTION_BARE_DURATION=${BENCH_COLLECTION_BARE_DURATION:-8}
SWEEP_VALUES=${BENCH_SWEEP_VALUES:-"10 40 120"}
SWEEP_DEVICES=${BENCH_SWEEP_DEVICES:-2000}
SWEEP_DURATION=${BENCH_SWEEP_DURATION:-10}
INTERVAL=${BENCH_INTERVAL:-1s}
# A command the Modbus harness runs under, e.g. "chrt -b 0" (docs/performance.md, item 59).
read -r -a SIM_PREFIX <<<"${BENCH_SIM_PREFIX:-}"
# The binaries measured (BENCH_BIN=dir: a saved build, e.g. a baseline for before/after).
BIN=${BENCH_BIN:-$REPO/target/release}
# The daemon binary measured (BENCH_GRIDWATCH=path compares another build, e.g. a baseline).
GRIDWATCH=${BENCH_GRIDWATCH:-$BIN/gridwatch}
CLK_TCK=$(getconf CLK_TCK)

log() { echo "bench: $*" >&2; }
now_s() { date +%s.%N; }
elapsed_s() { awk -v a="$2" -v b="$1" 'BEGIN {printf "%.1f", a - b}'; } # elapsed_s FROM TO
# Wall-clock seconds of the run and of each phase, reported in the JSON (`run_seconds`): the
# whole run, build included, must stay under 15 minutes.
BENCH_T0=$(now_s)
PHASE_T0=$BENCH_T0
PHASES=""
phase_done() { # phase_done NAME: time since the previous phase ended
    local t; t=$(now_s)
    PHASES+="$1=$(elapsed_s "$PHASE_T0" "$t") "
    PHASE_T0=$t
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gridwatch-bench.XXXXXX")
# Generated register maps (the register sweep); every daemon config lists this directory.
mkdir -p "$WORK/profiles"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true
    done
    [[ -n "${GW_ROOT:-}" ]] && gw_down "$GW_ROOT" >/dev/null 2>&1 || true
    [[ -n "${BENCH_KEEP:-}" ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------ packages
# The store and the broker come from Debian, as for the tests: a fresh machine has only the
# Rust toolchain.
# shellcheck source=scripts/packages.sh
source "$REPO/scripts/packages.sh"
install_packages victoria-metrics mosquitto mosquitto-clients curl >&2

# ------------------------------------------------------------------ build
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
    log "building release binaries"
    # --benches too: the same dependency features as `cargo bench`, so one build serves both.
    cargo build --release --workspace --bins --benches >&2
fi
for b in gridwatch gridwatch-sim bare-poller; do
    [[ -x "$BIN/$b" ]] || { log "missing $BIN/$b"; exit 1; }
done
phase_done build

# ------------------------------------------------------------------ helpers
# CPU seconds (utime + stime, all threads) of PID. Field 2 (comm) may hold spaces: cut it.
cpu_s() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.3f", ($12 + $13) / t}'; }
hwm_mb() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
# steal_s — CPU seconds the hypervisor gave to other guests (all CPUs; /proc/stat field 8
# of the "cpu" line). On a shared host this is what makes two runs of the same build differ.
steal_s() { awk -v t="$CLK_TCK" '/^cpu / {printf "%.3f", $9 / t}' /proc/stat; }
scrape() { curl -fsS --max-time 10 "$1/metrics"; }
wait_http() {
    local url=$1 i
    for i in $(seq 1 600); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    log "$url did not answer"
    return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ------------------------------------------------------------------ services
# shellcheck source=scripts/services.sh
source "$REPO/scripts/services.sh"
GW_ROOT="$WORK/services"
mkdir -p "$GW_ROOT"
gw_start_service victoria-metrics gw_up_vm >&2
VM_URL="http://127.0.0.1:$GW_VM_PORT"
VM_PID=$(cat "$GW_ROOT/vm/victoria-metrics.pid")
log "VictoriaMetrics at $VM_URL"

# One bare-poller window on the harness of scenario DIR: DIR/NAME.json ("{}" when SECONDS is
# 0), with steal, time and the store's CPU marks before and after it appended to DIR/MARKS
# (the store merges in the background after a daemon window, competing with the client).
run_bare() {
    local dir=$1 name=$2 marks=$3 seconds=$4 when=$5
    if ((seconds == 0)); then
        echo '{}' >"$dir/$name.json"
        return
    fi
    log "modbus: bare-poller on the harness $when, ${seconds}s"
    echo "$(steal_s) $(now_s) $(cpu_s "$VM_PID")" >>"$dir/$marks"
    "$BIN/bare-poller" --addrs-file "$dir/addrs" --units "$UNITS" --interval "$INTERVAL" \
        --warmup 3s --duration "${seconds}s" >"$dir/$name.json" 2>"$dir/$name.log"
    echo "$(steal_s) $(now_s) $(cpu_s "$VM_PID")" >>"$dir/$marks"
}

# ------------------------------------------------------------------ Modbus scenarios
# run_modbus N [MODE] — writes $WORK/modbus-N[-MODE]/result.json. MODE "collection": the
# daemon with [alarms] and [kpi] switched off (poll, decode, encode, spool, store, history):
# the path the bare client is compared with, without the analysis built on top of it.
run_modbus() {
    local n=$1 mode=${2:-full} gateways=$(($1 / UNITS)) port sim gw
    local dir="$WORK/modbus-$1" duration=$DURATION bare_duration=$BARE_DURATION
    local values=50 registers=60 profile_args=()
    if [[ $mode == collection ]]; then
        dir="$WORK/modbus-$1-$mode" duration=$COLLECTION_DURATION bare_duration=$COLLECTION_BARE_DURATION
    elif [[ $mode == sweep-* ]]; then
        # The register sweep: a map of V decimal-scaled 16-bit values read in one request.
        values=${mode#sweep-} registers=${mode#sweep-}
        dir="$WORK/modbus-$1-$mode" duration=$SWEEP_DURATION bare_duration=0
        mkdir -p "$WORK/profiles"
        python3 - "$values" "$WORK/profiles/$mode.toml" <<'PY'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
text = [f'description = "Synthetic {n}-value map (scripts/bench.sh register sweep)"', "max_gap = 16", ""]
for i in range(n):
    text += ["[[registers]]", f'name = "value_{i:03}"', 'table = "holding"', f"address = {i}",
             'type = "u16"', "scale = 0.1", 'unit = "V"', ""]
open(out, "w").write("\n".join(text))
PY
        profile_args=(--profile-file "$WORK/profiles/$mode.toml")
    fi
    mkdir -p "$dir"
    log "modbus ($mode): $n devices = $gateways gateways x $UNITS units, $INTERVAL, ${duration}s"
    "${SIM_PREFIX[@]}" "$BIN/gridwatch-sim" load --gateways "$gateways" --units "$UNITS" --interval "$INTERVAL" \
        "${profile_args[@]}" \
        --daemon-config "$dir/devices.toml" --addrs-file "$dir/addrs" >"$dir/sim.out" 2>"$dir/sim.log" &
    sim=$!
    PIDS+=("$sim")
    for _ in $(seq 1 100); do [[ -s "$dir/addrs" ]] && break; sleep 0.1; done
    # The bare client runs before and after the daemon: the mean of the two windows is the
    # ratio's denominator, so a drift of the machine's speed over the scenario cancels.
    run_bare "$dir" bare0 steal0.txt "$bare_duration" "before the daemon"
    port=$(free_port)
    cat >"$dir/gridwatch.toml" <<EOF
[api]
auth = "off"

[daemon]
data_dir = "$dir/data"
http_listen = "127.0.0.1:$port"
profile_dirs = ["$REPO/config/profiles", "$WORK/profiles"]

[storage.influx]
url = "$VM_URL"
api = "v2"
org = "bench"
bucket = "bench"

EOF
    if [[ $mode == collection ]]; then
        printf '[alarms]\nenabled = false\n\n[kpi]\nenabled = false\n\n' >>"$dir/gridwatch.toml"
    fi
    cat "$dir/devices.toml" >>"$dir/gridwatch.toml"
    RUST_LOG=${BENCH_RUST_LOG:-warn} "$GRIDWATCH" run --config "$dir/gridwatch.toml" >"$dir/daemon.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    wait_http "http://127.0.0.1:$port/metrics"
    sleep "$WARMUP"

    local t0 t1 d0 d1 s0 s1 v0 v1
    scrape "http://127.0.0.1:$port" >"$dir/m0.txt"
    curl -fsS "$VM_URL/metrics" >"$dir/vm0.txt"
    t0=$(now_s) d0=$(cpu_s "$gw") s0=$(cpu_s "$sim") v0=$(cpu_s "$VM_PID")
    echo "$(steal_s) $t0" >"$dir/steal.txt"
    sleep "$duration"
    scrape "http://127.0.0.1:$port" >"$dir/m1.txt"
    curl -fsS "$VM_URL/metrics" >"$dir/vm1.txt"
    t1=$(now_s) d1=$(cpu_s "$gw") s1=$(cpu_s "$sim") v1=$(cpu_s "$VM_PID")
    echo "$(steal_s) $t1" >>"$dir/steal.txt"
    local rss
    rss=$(hwm_mb "$gw")
    # SIGTERM to exit: the daemon promises to drain and flush within 10 s.
    local q0 q1
    q0=$(now_s)
    stop_pid "$gw"
    q1=$(now_s)

    run_bare "$dir" bare steal.txt "$bare_duration" "after the daemon"
    stop_pid "$sim"

    python3 - "$dir" "$n" "$t0" "$t1" "$d0" "$d1" "$s0" "$s1" "$v0" "$v1" "$rss" "$INTERVAL" "$mode" "$values" "$registers" "$q0" "$q1" >"$dir/result.json" <<'PY'
import json, re, sys
d, n, t0, t1, d0, d1, s0, s1, v0, v1, rss, interval, mode, values, registers, q0, q1 = sys.argv[1:]
values, registers = int(values), int(registers)
n = int(n); secs = float(t1) - float(t0)
iv = float(interval[:-2]) / 1000 if interval.endswith("ms") else float(interval[:-1])

def parse(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out

def total(m, name, **labels):
    s = 0.0
    for k, v in m.items():
        base, _, rest = k.partition("{")
        if base != name:
            continue
        if all(f'{lk}="{lv}"' in rest for lk, lv in labels.items()):
            s += v
    return s

m0, m1 = parse(f"{d}/m0.txt"), parse(f"{d}/m1.txt")
delta = lambda name, **l: total(m1, name, **l) - total(m0, name, **l)

# Latency quantiles from the histogram deltas, interpolated inside a bucket like
# Prometheus' histogram_quantile.
h = "gridwatch_modbus_request_duration_seconds_bucket"
bounds = {}
for k in m1:
    if k.startswith(h + "{"):
        le = re.search(r'le="([^"]+)"', k).group(1)
        b = float("inf") if le == "+Inf" else float(le)
        bounds[b] = bounds.get(b, 0) + m1[k] - m0.get(k, 0)
les = sorted(bounds)
def quantile(q):
    count = bounds[les[-1]] if les else 0
    if count <= 0:
        return None
    want, prev_le, prev_c = q * count, 0.0, 0.0
    for le in les:
        c = bounds[le]
        if c >= want:
            if le == float("inf"):
                return prev_le * 1000
            return 1000 * (prev_le + (le - prev_le) * (want - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return None

ok = delta("gridwatch_modbus_polls_total", result="ok")
partial = delta("gridwatch_modbus_polls_total", result="partial")
failed = delta("gridwatch_modbus_polls_total", result="failed")
scheduled = n * secs / iv
written = delta("gridwatch_points_written_total")
gw_cpu = float(d1) - float(d0)
vm0, vm1 = parse(f"{d}/vm0.txt"), parse(f"{d}/vm1.txt")
vm_rows = total(vm1, "vm_rows_inserted_total") - total(vm0, "vm_rows_inserted_total")
bare = json.load(open(f"{d}/bare.json"))
bare_before = json.load(open(f"{d}/bare0.json"))
bare_runs = [b["cpu_us_per_poll"] for b in (bare_before, bare) if b.get("cpu_us_per_poll")]
bare_per_poll = sum(bare_runs) / len(bare_runs) if bare_runs else None
gw_per_poll = gw_cpu * 1e6 / ok if ok else None
r = lambda x, k=2: None if x is None else round(x, k)
# Hypervisor steal over the daemon's window and over the bare client's run, in % of the
# machine (all CPUs): above a few % the figures of that scenario are not comparable.
import os
ncpu = os.cpu_count() or 1
def mark_rate(a, b, name, col, per):
    # Growth of column COL of the marks file NAME between lines A and B, per second of
    # wall clock (column 1), in % of PER CPUs: steal (column 0, all CPUs) or the store's
    # CPU over a bare-client window (column 2, one core).
    try:
        marks = [tuple(map(float, l.split())) for l in open(f"{d}/{name}")]
    except FileNotFoundError:
        return None
    if len(marks) <= b or len(marks[a]) <= col or len(marks[b]) <= col:
        return None
    return r(100 * (marks[b][col] - marks[a][col]) / max(marks[b][1] - marks[a][1], 1e-9) / per, 1)
def steal_pct(a, b, name="steal.txt"):
    return mark_rate(a, b, name, 0, ncpu)
def store_pct(a, b, name):
    return mark_rate(a, b, name, 2, 1)
print(json.dumps({
    "devices": n,
    "mode": mode,
    "registers_per_device": registers,
    "values_per_device": values,
    "interval_s": iv,
    "seconds": r(secs, 1),
    "scheduled_polls": round(scheduled),
    "completed_polls": int(ok),
    "partial_polls": int(partial),
    "failed_polls": int(failed),
    "missed_polls": int(delta("gridwatch_modbus_missed_polls_total")),
    "completeness_pct": r(100 * ok / scheduled, 3),
    "latency_p50_ms": r(quantile(0.50), 3),
    "latency_p99_ms": r(quantile(0.99), 3),
    "daemon_cpu_pct_of_core": r(100 * gw_cpu / secs, 1),
    "daemon_peak_rss_mb": float(rss),
    "history_bytes": int(total(m1, "gridwatch_history_bytes")),
    "shutdown_s": r(float(q1) - float(q0), 2),
    "points_per_s": r(written / secs, 1),
    "values_per_s": r(written * values / secs, 0),
    "vm_rows_inserted_per_s": r(vm_rows / secs, 0),
    "points_dropped": int(delta("gridwatch_points_dropped_total")),
    "simulator_cpu_pct_of_core": r(100 * (float(s1) - float(s0)) / secs, 1),
    "victoriametrics_cpu_pct_of_core": r(100 * (float(v1) - float(v0)) / secs, 1),
    "daemon_cpu_us_per_poll": r(gw_per_poll, 2),
    "daemon_cpu_ns_per_value": r(gw_per_poll * 1000 / values, 1) if gw_per_poll else None,
    "steal_pct": steal_pct(0, 1),
    "bare_steal_pct": steal_pct(2, 3),
    "bare_before_steal_pct": steal_pct(0, 1, "steal0.txt"),
    "bare_store_cpu_pct_of_core": store_pct(2, 3, "steal.txt"),
    "bare_before_store_cpu_pct_of_core": store_pct(0, 1, "steal0.txt"),
    "bare_before": {k: r(v, 3) if isinstance(v, float) else v for k, v in bare_before.items()},
    "bare": {k: r(v, 3) if isinstance(v, float) else v for k, v in bare.items()},
    "bare_cpu_us_per_poll_mean": r(bare_per_poll, 3),
    "overhead_ratio": r(gw_per_poll / bare_per_poll, 2) if gw_per_poll and bare_per_poll else None,
}))
PY
}

for n in $DEVICES; do
    run_modbus "$n"
done
phase_done modbus
for n in $COLLECTION_DEVICES; do
    run_modbus "$n" collection
done
phase_done collection
for v in $SWEEP_VALUES; do
    run_modbus "$SWEEP_DEVICES" "sweep-$v"
done
phase_done sweep

# ------------------------------------------------------------------ micro-benchmarks
if [[ -z "${BENCH_SKIP_CRITERION:-}" ]]; then
    log "criterion: benches/hot_path.rs"
    rm -rf "$REPO/target/criterion/decode" "$REPO/target/criterion/lineproto"
    cargo bench --bench hot_path >&2
fi
phase_done criterion
python3 - "$REPO/target/criterion" >"$WORK/criterion.json" <<'PY'
import json, os, sys
root = sys.argv[1]
def rate(group, name):
    base = os.path.join(root, group, name, "new")
    try:
        est = json.load(open(os.path.join(base, "estimates.json")))
        meta = json.load(open(os.path.join(base, "benchmark.json")))
    except OSError:
        return None
    ns = est["mean"]["point_estimate"]
    elements = (meta.get("throughput") or {}).get("Elements", 1)
    return elements / (ns * 1e-9)
r = lambda x: None if x is None else round(x)
dec = rate("decode", "bench50_poll")
l50 = rate("lineproto", "lines_50_fields")
l5 = rate("lineproto", "lines_5_fields")
print(json.dumps({
    "decode_values_per_s_per_core": r(dec),
    "decode_polls_per_s_per_core": r(dec / 50) if dec else None,
    "encode_points_per_s_per_core_50_fields": r(l50),
    "encode_field_values_per_s_per_core_50_fields": r(l50 * 50) if l50 else None,
    "encode_points_per_s_per_core_5_fields": r(l5),
}))
PY

# ------------------------------------------------------------------ hooks: MQTT, alarms
# The hook: when the scenario file scripts/bench-mqtt.sh / scripts/bench-alarm.sh exists
# (for MQTT also gridwatch-sim's `mqtt-load` subcommand), that file is sourced and its function
# (bench_mqtt / bench_alarm) is called with $WORK, $BIN, $VM_URL, the helpers above (cpu_s,
# hwm_mb, scrape, wait_http, free_port, stop_pid) and gw_up_mosquitto from services.sh
# available; it must print one JSON object (for MQTT: max sustained msg/s with 10,000
# meters, daemon CPU % and peak RSS; for alarms: p50/p99 ms from sample in to alert out).
has_sub() { "$BIN/gridwatch-sim" --help 2>/dev/null | grep -qE "^  $1( |$)"; }
run_hook() { # run_hook NAME SUBCOMMAND FILE FUNCTION OUT
    local name=$1 sub=$2 file=$3 fn=$4 out=$5
    # An empty SUBCOMMAND: the scenario file alone is enough (bench-alarm.sh drives
    # `gridwatch-sim modbus --scenario`, no dedicated subcommand).
    if { [[ -z "$sub" ]] || has_sub "$sub"; } && [[ -f "$file" ]]; then
        log "$name: $file"
        # shellcheck disable=SC1090
        source "$file"
        "$fn" >"$out" || echo "{\"status\":\"failed\",\"see\":\"$file\"}" >"$out"
    else
        echo "{\"status\":\"not_run\",\"reason\":\"needs ${sub:+gridwatch-sim $sub and }${file#"$REPO"/} (being built)\"}" >"$out"
    fi
}
skipped() { echo '{"status":"skipped","reason":"'"$1"' set"}' >"$2"; }
# fresh_vm — restarts VictoriaMetrics on an empty data dir. The Modbus scenarios leave it
# merging tens of millions of rows in the background, which took a core from the next
# scenario on this 2-core box (MQTT measured 50,000 msg/s after them, 100,000 on its own).
fresh_vm() {
    gw_stop_pidfile "$GW_ROOT/vm/victoria-metrics.pid"
    rm -rf "$GW_ROOT/vm/data"
    gw_start_service victoria-metrics gw_up_vm >&2
    VM_URL="http://127.0.0.1:$GW_VM_PORT"
    VM_PID=$(cat "$GW_ROOT/vm/victoria-metrics.pid")
    log "VictoriaMetrics restarted empty at $VM_URL"
}
if [[ -n "${BENCH_SKIP_MQTT:-}" ]]; then skipped BENCH_SKIP_MQTT "$WORK/mqtt.json"; else
    # Deprioritised: the MQTT scenario measures the daemon's ingest, and the store's own
    # ingestion of 1.3 M values/s would otherwise take the CPU from it (docs/performance.md).
    GW_VM_NICE=${BENCH_MQTT_STORE_NICE:-19} fresh_vm
    run_hook mqtt mqtt-load "$REPO/scripts/bench-mqtt.sh" bench_mqtt "$WORK/mqtt.json"
fi
phase_done mqtt
if [[ -n "${BENCH_SKIP_ALARM:-}" ]]; then skipped BENCH_SKIP_ALARM "$WORK/alarm.json"; else
    run_hook alarms "" "$REPO/scripts/bench-alarm.sh" bench_alarm "$WORK/alarm.json"
fi

phase_done alarms

# ------------------------------------------------------------------ the report
python3 - "$WORK" "$DEVICES" "$COLLECTION_DEVICES" "$SWEEP_VALUES" "$SWEEP_DEVICES" \
    "$(elapsed_s "$BENCH_T0" "$(now_s)")" "$PHASES" <<'PY'
import json, os, platform, subprocess, sys
work, devices, collection = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
sweep_values, sweep_devices = sys.argv[4].split(), sys.argv[5]
run_seconds = round(float(sys.argv[6]), 1)
phases = {k: round(float(v), 1) for k, v in (p.split("=", 1) for p in sys.argv[7].split())}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
load = open("/proc/loadavg").read().split()[:3]
modbus = [json.load(open(f"{work}/modbus-{n}/result.json")) for n in devices]
modbus += [json.load(open(f"{work}/modbus-{n}-collection/result.json")) for n in collection]
sweep = [json.load(open(f"{work}/modbus-{sweep_devices}-sweep-{v}/result.json")) for v in sweep_values]
micro = json.load(open(f"{work}/criterion.json"))
big = next((m for m in modbus if m["devices"] == 10000 and m["mode"] == "full"), None)
core = next((m for m in modbus if m["devices"] == 10000 and m["mode"] == "collection"), None)
def ok(v, op, target):
    if v is None:
        return None
    return v >= target if op == ">=" else v <= target
targets = {}
if big:
    targets.update({
        "modbus_10000_completeness_ge_99.9": ok(big["completeness_pct"], ">=", 99.9),
        "modbus_10000_cpu_le_100pct": ok(big["daemon_cpu_pct_of_core"], "<=", 100),
        "modbus_10000_rss_le_200mb": ok(big["daemon_peak_rss_mb"], "<=", 200),
        "modbus_10000_overhead_ratio_le_1.5": ok(big["overhead_ratio"], "<=", 1.5),
    })
if core:
    targets["modbus_10000_collection_only_overhead_ratio_le_1.5"] = ok(core["overhead_ratio"], "<=", 1.5)
targets["encode_ge_2M_points_per_s_per_core_5_fields"] = ok(micro["encode_points_per_s_per_core_5_fields"], ">=", 2e6)
targets["encode_ge_2M_points_per_s_per_core_50_fields"] = ok(micro["encode_points_per_s_per_core_50_fields"], ">=", 2e6)
mqtt = json.load(open(f"{work}/mqtt.json"))
targets["mqtt_ge_100k_msg_per_s"] = mqtt.get("met")
alarm = json.load(open(f"{work}/alarm.json"))
targets["alarm_p99_le_50ms"] = (alarm.get("alarm_latency_ms") or {}).get("met")
print(json.dumps({
    "machine": {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "rustc": sh("rustc", "--version"), "loadavg_at_end": load,
    },
    "modbus": modbus,
    "register_sweep": sweep,
    "micro": micro,
    "mqtt": mqtt,
    "alarm_latency": alarm,
    "targets_met": targets,
    "run_seconds": run_seconds,
    "run_le_15_minutes": run_seconds <= 900,
    "phase_seconds": phases,
}, indent=2))
PY
