# scripts/bench-alarm.sh — sourced by scripts/bench.sh; defines bench_alarm, which prints ONE
# JSON object on stdout (progress on stderr):
#   {"alarm_latency_ms": {"p50": .., "p99": .., "max": .., "samples": .., "target_p99_ms": 50,
#    "met": ..}, ...}
#
# Alarm latency = published_ts_ns - reading_ts_ns of every `raised` alert gridwatch publishes
# on MQTT: from the moment the Modbus response carrying the raising sample arrived (the
# sample's timestamp, i.e. when it entered the pipeline) to the moment the alert was handed
# to the MQTT client. Both clocks are gridwatch's own (same host), so no clock skew.
#
# Setup: gridwatch-sim modbus with BENCH_ALARM_TRANSFORMERS transformers (no meters), and a
# scenario that switches over_temperature on and off on every transformer (staggered), so
# oil_temp_high and winding_temp_high raise and clear again and again. gridwatch polls every
# BENCH_ALARM_INTERVAL and publishes alerts to a mosquitto started for the run.
#
# The rule delays are overridden to 0 s ([[rules]] delay_on/delay_off = "0s") and flapping
# detection is pushed out of reach: a configured delay_on (10 s default) would otherwise be
# the whole figure. The number therefore measures gridwatch's processing (decode, rules,
# alarm state, notify, MQTT publish), NOT the configured delay and NOT the poll interval
# (the time a fault waits for the next poll is before the reading and is not counted).
#
# Environment: BENCH_ALARM_DURATION=40 (seconds of fault cycling), BENCH_ALARM_TRANSFORMERS=15,
# BENCH_ALARM_INTERVAL=200ms, BENCH_ALARM_CYCLE=4 (seconds per on+off cycle).

bench_alarm() {
    local dir="$WORK/alarm" dur=${BENCH_ALARM_DURATION:-40} tx=${BENCH_ALARM_TRANSFORMERS:-15}
    local interval=${BENCH_ALARM_INTERVAL:-200ms} cycle=${BENCH_ALARM_CYCLE:-4}
    local sim_port http_port sim gw sub u
    mkdir -p "$dir"

    if [[ -z "${GW_MQTT_PORT:-}" ]]; then
        gw_start_service mosquitto gw_up_mosquitto >&2
    fi
    local broker="127.0.0.1:$GW_MQTT_PORT"

    # Scenario: unit u is faulted for cycle/2 s every cycle s, starting at 3 s + a stagger so
    # the raises of different transformers do not all land on the same poll.
    python3 - "$tx" "$dur" "$cycle" >"$dir/scenario.toml" <<'PY'
import sys
tx, dur, cycle = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
for u in range(1, tx + 1):
    t = 3.0 + (u - 1) * cycle / tx
    while t + cycle <= 3.0 + dur:
        print(f'[[faults]]\nunit = {u}\nkind = "over_temperature"\nat = "{int(t * 1000)}ms"\nfor = "{int(cycle * 500)}ms"\n')
        t += cycle
PY

    sim_port=$(free_port)
    http_port=$(free_port)
    {
        cat <<EOF
[api]
auth = "off"

[daemon]
data_dir = "$dir/data"
http_listen = "127.0.0.1:$http_port"
profile_dirs = ["$REPO/config/profiles"]

[alarms]
flapping_transitions = 1000000

[notify.mqtt]
broker = "$broker"
topic_prefix = "gridwatch/alerts"
client_id = "gridwatch-bench-alarm"

# Benchmark only: no delays, so the figure is gridwatch's processing, not the configured wait.
[[rules]]
id = "oil_temp_high"
delay_on = "0s"
delay_off = "0s"

[[rules]]
id = "winding_temp_high"
delay_on = "0s"
delay_off = "0s"

[[modbus.endpoints]]
name = "sim"
address = "127.0.0.1:$sim_port"
max_in_flight = 4
timeout = "300ms"
EOF
        for u in $(seq 1 "$tx"); do
            printf '\n[[devices]]\nid = "TX-%04d"\nkind = "transformer"\nsite = "Bench"\nfeeder = "F1"\nendpoint = "sim"\nunit_id = %d\nprofile = "transformer-monitor"\ninterval = "%s"\nrated_kva = 630.0\nnominal_voltage = 230.0\n' "$u" "$u" "$interval"
        done
    } >"$dir/gridwatch.toml"

    # Subscriber first (fresh broker: nothing retained), one line per message: topic payload.
    # Without it every figure would be an empty "no alerts": say what is missing instead.
    if ! command -v mosquitto_sub >/dev/null; then
        log "alarms: mosquitto_sub not found (Debian package mosquitto-clients)"
        return 1
    fi
    mosquitto_sub -h 127.0.0.1 -p "$GW_MQTT_PORT" -v -t 'gridwatch/alerts/#' >"$dir/alerts.txt" 2>"$dir/sub.log" &
    sub=$!
    PIDS+=("$sub")

    RUST_LOG=${BENCH_RUST_LOG:-warn} "$GRIDWATCH" run --config "$dir/gridwatch.toml" >"$dir/daemon.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    # The simulator starts after the daemon is up, so the scenario clock starts with polling.
    wait_http "http://127.0.0.1:$http_port/metrics" || return 1
    "$BIN/gridwatch-sim" modbus --listen "127.0.0.1:$sim_port" --transformers "$tx" --meters 0 \
        --scenario "$dir/scenario.toml" >"$dir/sim.out" 2>"$dir/sim.log" &
    sim=$!
    PIDS+=("$sim")
    log "alarms: $tx transformers, poll $interval, over_temperature cycling every ${cycle}s for ${dur}s"
    sleep $((dur + 5))
    stop_pid "$sim"
    stop_pid "$gw"
    stop_pid "$sub"

    python3 - "$dir/alerts.txt" "$interval" "$tx" "$dur" <<'PY'
import json, sys
path, interval, tx, dur = sys.argv[1:]
lat, events = [], {}
for line in open(path, errors="replace"):
    topic, _, payload = line.rstrip("\n").partition(" ")
    if not payload.strip():
        continue  # cleared: empty retained message
    try:
        m = json.loads(payload)
    except ValueError:
        continue
    ev = m.get("event")
    events[ev] = events.get(ev, 0) + 1
    if ev == "raised" and m.get("reading_ts_ns") and m.get("published_ts_ns"):
        lat.append((m["published_ts_ns"] - m["reading_ts_ns"]) / 1e6)
lat.sort()
def q(p):
    if not lat:
        return None
    # nearest rank
    i = max(0, min(len(lat) - 1, int(-(-p * len(lat) // 1)) - 1))
    return round(lat[i], 3)
p99 = q(0.99)
print(json.dumps({
    "alarm_latency_ms": {
        "p50": q(0.50),
        "p99": p99,
        "max": round(lat[-1], 3) if lat else None,
        "samples": len(lat),
        "target_p99_ms": 50,
        "met": None if p99 is None else p99 <= 50,
    },
    "measured": "published_ts_ns - reading_ts_ns of MQTT `raised` alerts (rule delays overridden to 0 s)",
    "transformers": int(tx),
    "poll_interval": interval,
    "seconds": float(dur),
    "alert_events": events,
}))
PY
}
