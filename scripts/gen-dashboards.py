#!/usr/bin/env python3
"""Generates gridwatch's Grafana dashboards in three query languages.

dashboards/grafana/influxql/  InfluxDB 1.x (InfluxQL)
dashboards/grafana/flux/      InfluxDB 2.x / 3.x (Flux)
dashboards/grafana/promql/    VictoriaMetrics (PromQL / MetricsQL: metric = measurement_field)

Run it after changing a panel; tests/dashboards.rs checks that every measurement and field a
panel queries is one gridwatch writes.
"""
import json
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "dashboards", "grafana")

# EN 50160 band around 230 V (±10 %); a variable so GB/T 12325 (198.0-235.4 V) can be chosen.
BANDS = {"lo": "207", "hi": "253"}


def influxql(measurement, fields, where="", group="", agg="mean"):
    sel = ", ".join(f'{agg}("{f}") AS "{f}"' for f in fields)
    cond = f"$timeFilter{(' AND ' + where) if where else ''}"
    g = f"GROUP BY time($__interval){(', ' + group) if group else ''} fill(none)"
    return f'SELECT {sel} FROM "{measurement}" WHERE {cond} {g}'


def flux(measurement, fields, extra="", agg="mean"):
    flt = " or ".join(f'r._field == "{f}"' for f in fields)
    return (
        'from(bucket: v.bucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
        f'  |> filter(fn: (r) => r._measurement == "{measurement}")\n'
        f"  |> filter(fn: (r) => {flt})\n{extra}"
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {agg}, createEmpty: false)"
    )


def prom(measurement, field, sel=""):
    return f"{measurement}_{field}{{{sel}}}"


def target(lang, q, ref="A", legend=""):
    t = {"refId": ref, "datasource": {"uid": "${datasource}"}}
    if lang == "influxql":
        t.update({"query": q, "rawQuery": True, "resultFormat": "time_series", "alias": legend or "$tag_device $col"})
    elif lang == "flux":
        t.update({"query": q})
    else:
        t.update({"expr": q, "legendFormat": legend or "{{device}}"})
    return t


def panel(pid, title, targets, x, y, w=12, h=8, kind="timeseries", unit=None, thresholds=None):
    p = {
        "id": pid, "type": kind, "title": title, "datasource": {"uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
        p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return p


def datasource_var(lang):
    plugin = {"influxql": "influxdb", "flux": "influxdb", "promql": "prometheus"}[lang]
    return {"name": "datasource", "type": "datasource", "query": plugin, "label": "Data source"}


def device_var(lang, measurement):
    if lang == "influxql":
        q = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device"'
    elif lang == "flux":
        q = f'import "influxdata/influxdb/schema"\nschema.measurementTagValues(bucket: v.bucket, measurement: "{measurement}", tag: "device")'
    else:
        q = f"label_values({measurement}_voltage_a, device)"
    return {"name": "device", "type": "query", "datasource": {"uid": "${datasource}"}, "query": q,
            "multi": True, "includeAll": True, "refresh": 2}


def extra_vars(lang):
    v = [{"name": "rated_kva", "type": "constant", "query": "630", "label": "Rated kVA"},
         {"name": "v_lo", "type": "constant", "query": BANDS["lo"]},
         {"name": "v_hi", "type": "constant", "query": BANDS["hi"]}]
    if lang == "flux":
        v.append({"name": "bucket", "type": "constant", "query": "telemetry"})
    return v


def alarm_annotation(lang):
    if lang == "influxql":
        q = 'SELECT "value", "limit", "event" FROM "alarm" WHERE $timeFilter AND "device" =~ /^$device$/'
        a = {"query": q, "textColumn": "event", "tagsColumn": "rule,severity"}
    elif lang == "flux":
        q = flux("alarm", ["active"], '  |> filter(fn: (r) => r.device =~ /^${device:regex}$/)\n', agg="last")
        a = {"target": {"query": q}}
    else:
        a = {"expr": 'alarm_active{device=~"$device"} > 0', "titleFormat": "{{rule}} {{severity}}"}
    a.update({"name": "Alarms", "datasource": {"uid": "${datasource}"}, "enable": True, "iconColor": "red"})
    return a


def dashboard(uid, title, lang, panels, variables, annotations=()):
    return {
        "uid": f"gridwatch-{uid}-{lang}", "title": f"gridwatch: {title} ({lang})", "schemaVersion": 39,
        "tags": ["gridwatch", lang], "time": {"from": "now-24h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [datasource_var(lang)] + variables + extra_vars(lang)},
        "annotations": {"list": list(annotations)}, "panels": panels,
    }


def fleet(lang):
    if lang == "influxql":
        t1 = [target(lang, influxql("transformer", ["oil_temp"], group='"device"', agg="max"))]
        t2 = [target(lang, influxql("transformer", ["active_power"], group='"device"'))]
        t3 = [target(lang, influxql("meter", ["voltage_a", "voltage_b", "voltage_c"], agg="min")),
              target(lang, influxql("meter", ["voltage_a", "voltage_b", "voltage_c"], agg="max"), "B")]
        t4 = [target(lang, 'SELECT count("active") FROM "alarm" WHERE $timeFilter AND "event" = \'raised\' GROUP BY "severity"')]
    elif lang == "flux":
        t1 = [target(lang, flux("transformer", ["oil_temp"], agg="max"))]
        t2 = [target(lang, flux("transformer", ["active_power"]))]
        t3 = [target(lang, flux("meter", ["voltage_a", "voltage_b", "voltage_c"], agg="min")),
              target(lang, flux("meter", ["voltage_a", "voltage_b", "voltage_c"], agg="max"), "B")]
        t4 = [target(lang, flux("alarm", ["active"], agg="count"))]
    else:
        t1 = [target(lang, f"max by (device) ({prom('transformer', 'oil_temp')})")]
        t2 = [target(lang, prom("transformer", "active_power"))]
        t3 = [target(lang, f"min({prom('meter', 'voltage_a')})", legend="min A"),
              target(lang, f"max({prom('meter', 'voltage_a')})", "B", "max A")]
        raised = prom("alarm", "active", 'event="raised"')
        t4 = [target(lang, f"sum by (severity) (count_over_time({raised}[$__range]))")]
    panels = [
        panel(1, "Top-oil temperature per transformer", t1, 0, 0, unit="celsius",
              thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 85}, {"color": "red", "value": 95}]),
        panel(2, "Transformer active power", t2, 12, 0, unit="kwatt"),
        panel(3, "Meter voltage envelope (min / max)", t3, 0, 8, unit="volt",
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 207}, {"color": "red", "value": 253}]),
        panel(4, "Alarms raised by severity", t4, 12, 8, kind="barchart"),
    ]
    return dashboard("fleet", "Fleet overview", lang, panels, [], [alarm_annotation(lang)])


def transformer(lang):
    sel = '"device" =~ /^$device$/'
    if lang == "influxql":
        temps = [target(lang, influxql("transformer", ["oil_temp", "winding_temp", "ambient_temp"], sel, '"device"'))]
        load = [target(lang, 'SELECT (mean("voltage_a")*mean("current_a") + mean("voltage_b")*mean("current_b") + '
                             'mean("voltage_c")*mean("current_c")) / 1000 / $rated_kva * 100 AS "load_pct" FROM "transformer" '
                             f'WHERE $timeFilter AND {sel} GROUP BY time($__interval), "device" fill(none)')]
        cur = [target(lang, influxql("transformer", ["current_a", "current_b", "current_c", "current_n"], sel, '"device"'))]
        # InfluxQL has no max() across fields: max - min = (|a-b| + |b-c| + |c-a|) / 2, over the
        # phase average (the NEMA-style denominator).
        unb = [target(lang, 'SELECT (ABS(mean("current_a") - mean("current_b")) + ABS(mean("current_b") - mean("current_c")) + '
                            'ABS(mean("current_c") - mean("current_a"))) / 2 / ((mean("current_a") + mean("current_b") + mean("current_c")) / 3) '
                            '* 100 AS "unbalance_pct" FROM "transformer" '
                            f'WHERE $timeFilter AND {sel} GROUP BY time($__interval), "device" fill(none)')]
        volt = [target(lang, influxql("transformer", ["voltage_a", "voltage_b", "voltage_c"], sel, '"device"'))]
    elif lang == "flux":
        f = '  |> filter(fn: (r) => r.device =~ /^${device:regex}$/)\n'
        temps = [target(lang, flux("transformer", ["oil_temp", "winding_temp", "ambient_temp"], f))]
        piv = ('  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n')
        load = [target(lang, flux("transformer", ["voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c"], f)
                       + "\n" + piv + '  |> map(fn: (r) => ({_time: r._time, device: r.device, load_pct: '
                       '(r.voltage_a*r.current_a + r.voltage_b*r.current_b + r.voltage_c*r.current_c) / 1000.0 / ${rated_kva}.0 * 100.0}))')]
        cur = [target(lang, flux("transformer", ["current_a", "current_b", "current_c", "current_n"], f))]
        unb = [target(lang, flux("transformer", ["current_a", "current_b", "current_c"], f) + "\n" + piv
                      + '  |> map(fn: (r) => {\n'
                      '      mx = if r.current_a > r.current_b then (if r.current_a > r.current_c then r.current_a else r.current_c) '
                      'else (if r.current_b > r.current_c then r.current_b else r.current_c)\n'
                      '      mn = if r.current_a < r.current_b then (if r.current_a < r.current_c then r.current_a else r.current_c) '
                      'else (if r.current_b < r.current_c then r.current_b else r.current_c)\n'
                      '      return {_time: r._time, device: r.device, unbalance_pct: (mx - mn) / mx * 100.0}\n'
                      '  })')]
        volt = [target(lang, flux("transformer", ["voltage_a", "voltage_b", "voltage_c"], f))]
    else:
        s = 'device=~"$device"'
        temps = [target(lang, prom("transformer", fld, s), r, "{{device}} " + fld)
                 for r, fld in zip("ABC", ["oil_temp", "winding_temp", "ambient_temp"])]
        load = [target(lang, f"({prom('transformer', 'voltage_a', s)} * {prom('transformer', 'current_a', s)} + "
                             f"{prom('transformer', 'voltage_b', s)} * {prom('transformer', 'current_b', s)} + "
                             f"{prom('transformer', 'voltage_c', s)} * {prom('transformer', 'current_c', s)}) / 1000 / $rated_kva * 100")]
        cur = [target(lang, prom("transformer", fld, s), r, "{{device}} " + fld)
               for r, fld in zip("ABCD", ["current_a", "current_b", "current_c", "current_n"])]
        three = f'{{__name__=~"transformer_current_(a|b|c)",{s}}}'
        unb = [target(lang, f"(max by (device) ({three}) - min by (device) ({three})) / max by (device) ({three}) * 100")]
        volt = [target(lang, prom("transformer", fld, s), r, "{{device}} " + fld)
                for r, fld in zip("ABC", ["voltage_a", "voltage_b", "voltage_c"])]
    panels = [
        panel(1, "Temperatures", temps, 0, 0, unit="celsius",
              thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 85}, {"color": "red", "value": 95}]),
        panel(2, "Load (% of rated kVA)", load, 12, 0, unit="percent",
              thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 100}, {"color": "red", "value": 130}]),
        panel(3, "Phase and neutral currents", cur, 0, 8, unit="amp"),
        panel(4, "Current unbalance (%)", unb, 12, 8, unit="percent",
              thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 15}]),
        panel(5, "LV phase voltages", volt, 0, 16, w=24, unit="volt"),
    ]
    return dashboard("transformer", "Transformer detail", lang, panels, [device_var(lang, "transformer")], [alarm_annotation(lang)])


def voltage(lang):
    sel = '"device" =~ /^$device$/'
    if lang == "influxql":
        v = [target(lang, influxql("meter", ["voltage_a", "voltage_b", "voltage_c"], sel, '"device"'))]
        comp = [target(lang, 'SELECT count("voltage_a") FROM "meter" WHERE $timeFilter AND "voltage_a" >= $v_lo AND "voltage_a" <= $v_hi '
                             f'AND {sel} GROUP BY "device"', legend="$tag_device in band"),
                target(lang, f'SELECT count("voltage_a") FROM "meter" WHERE $timeFilter AND {sel} GROUP BY "device"', "B",
                       legend="$tag_device all")]
    elif lang == "flux":
        f = '  |> filter(fn: (r) => r.device =~ /^${device:regex}$/)\n'
        v = [target(lang, flux("meter", ["voltage_a", "voltage_b", "voltage_c"], f))]
        comp = [target(lang, flux("meter", ["voltage_a"], f + '  |> map(fn: (r) => ({r with _value: if r._value >= ${v_lo}.0 and r._value <= ${v_hi}.0 then 100.0 else 0.0}))\n'))]
    else:
        s = 'device=~"$device"'
        v = [target(lang, prom("meter", fld, s), r, "{{device}} " + fld) for r, fld in zip("ABC", ["voltage_a", "voltage_b", "voltage_c"])]
        x = prom("meter", "voltage_a", s)
        comp = [target(lang, f"avg_over_time((({x} >= bool $v_lo) * ({x} <= bool $v_hi))[$__range:]) * 100")]
    panels = [
        panel(1, "Meter voltages against the band", v, 0, 0, w=24, unit="volt",
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 207}, {"color": "red", "value": 253}]),
        panel(2, "Voltage compliance (% of samples in band)", comp, 0, 8, w=24, kind="bargauge", unit="percent"),
    ]
    return dashboard("voltage", "Voltage quality", lang, panels, [device_var(lang, "meter")])


def main():
    for lang in ("influxql", "flux", "promql"):
        d = os.path.join(ROOT, lang)
        os.makedirs(d, exist_ok=True)
        for make, name in ((fleet, "fleet-overview"), (transformer, "transformer-detail"), (voltage, "voltage-quality")):
            with open(os.path.join(d, name + ".json"), "w") as f:
                json.dump(make(lang), f, indent=2)
                f.write("\n")


if __name__ == "__main__":
    main()
