#!/usr/bin/env python3
"""The markdown section of tools/bench-vm.sh from the bench-qemu JSON files of one run.

usage: bench-vm-report.py WHEN HOST RUNS METHODS WORKDIR SMALL "NAME RATE DELAY DISK FILL HEAVY [OPTS]"...

Every figure is a median over the runs whose destination disk verified. Method names carry the
memory setting after "@" (qemu-copy-storage@defaults, blockmigrate-memplain@zstd, ...); a is the
baseline (qemu-copy-storage), b BlockMigrate.
"""
import json
import os
import statistics
import sys

when, host, runs, methods, work, small = sys.argv[1:7]
configs = [c.split() for c in sys.argv[7:]]
BASELINE = "qemu-copy-storage"
SCENARIO = {
    "light100": "100 Mbit/s, light writer",
    "light20": "20 Mbit/s + 50 ms RTT, light writer",
    "heavy20": "20 Mbit/s + 50 ms RTT, heavy writer",
}


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def f(x, fmt):
    return "n/a" if x is None else fmt % x


def ratio(b, a):
    return None if a in (None, 0) or b is None else b / a


per_run, sides, ratios, heavy = [], [], [], []
for name, rate, delay, disk, fill, heavy_mib, *opts in configs:
    path = os.path.join(work, name + ".json")
    results = json.load(open(path)) if os.path.exists(path) else []
    label = SCENARIO.get(name, name)
    for r in results:
        good = r["disk_ok"]
        limit = r.get("limit_s")
        per_run.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            name, r["method"], r["run"],
            f(r["total_s"], "%.2f") if good else "", f(r["guest_downtime_ms"], "%.0f") if good else "",
            f(r["wire_bytes"] / 1e6, "%.1f") if good else "", f(limit, "%.1f"),
            f(r["total_s"] / limit, "%.2f") if good and limit else "", "OK" if good else "BAD",
            r["detail"].replace("|", "/")))
    for memory in dict.fromkeys(m.split("@")[1] for m in methods.split(",")):
        by_side = {}
        for side in ("a", "b"):
            rs = [r for r in results if r["disk_ok"] and r["memory_mode"] == memory
                  and (r["method"].startswith(BASELINE)) == (side == "a")]
            tried = [r for r in results if r["memory_mode"] == memory and (r["method"].startswith(BASELINE)) == (side == "a")]
            who = "a: QEMU copy-storage" if side == "a" else "b: " + (tried[0]["method"].split("@")[0] if tried else "BlockMigrate")
            m = {k: med(rs, k) for k in ("total_s", "wire_bytes", "guest_downtime_ms", "limit_s", "throttled_seconds", "writes_delayed_seconds",
                                        "throttle_floor_mib_per_s")}
            limit_all = med(tried, "limit_s")
            by_side[side] = m
            tl = statistics.median([r["total_s"] / r["limit_s"] for r in rs if r.get("limit_s")]) if rs and all(r.get("limit_s") for r in rs) else None
            sides.append("| %s | %s | %s | %d of %d | %s | %s | %s | %s | %s |" % (
                label, memory, who, len(rs), len(tried), f(m["total_s"], "%.2f"),
                f(m["wire_bytes"] and m["wire_bytes"] / 1e6, "%.1f"), f(m["guest_downtime_ms"], "%.0f"),
                f(limit_all, "%.1f"), f(tl, "%.2f")))
            if heavy_mib != "0":
                heavy.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    memory, who, f(med(tried, "heavy_mib_per_s_before"), "%.1f"), f(med(tried, "heavy_mib_per_s_during"), "%.1f"),
                    "%d of %d" % (len(rs), len(tried)),
                    f(m["throttled_seconds"], "%.1f") if side == "b" else "no disk throttle",
                    f(m["writes_delayed_seconds"], "%.1f") if side == "b" else "-",
                    f(m["throttle_floor_mib_per_s"], "%.1f") if side == "b" else "-"))
        a, b = by_side["a"], by_side["b"]
        ratios.append("| %s | %s | %s | %s | %s |" % (
            label, memory, f(ratio(b["total_s"], a["total_s"]), "%.2f"),
            f(ratio(b["wire_bytes"], a["wire_bytes"]), "%.2f"),
            f(ratio(b["guest_downtime_ms"], a["guest_downtime_ms"]), "%.2f")))

scen = "\n".join("- `%s`: %s; disk %s with %s of OS files%s%s" % (
    c[0], SCENARIO.get(c[0], c[0]), c[3], c[4],
    "; heavy writer over %s MiB" % c[5] if c[5] != "0" else "", "; " + " ".join(c[6:]) if c[6:] else "")
    for c in configs)
print(f"""## Whole-VM migration, fair: same memory settings

Measured {when} on {host}.
Command: `tools/bench-vm.sh {runs}`{" with BENCH_VM_SMALL=1 (a smoke run: small disks)" if small else ""} (part 3 of `./build.sh bench`), methods `{methods}`, interleaved in that order, {runs} run(s).

{scen}

How it runs, what the limit is: the section "How the fair whole-VM benchmark runs". Medians over the
runs whose destination disk verified ("runs ok"); the limit is the median over all runs.

| scenario | memory | side | runs ok | total s | wire MB | guest pause ms | limit s | total/limit |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(sides) + """

Ratios b/a (medians):

| scenario | memory | total | wire bytes | guest pause |
|---|---|---|---|---|
""" + "\n".join(ratios) + ("""

Heavy writer: its rate at the source (from the guest's console: from boot to the migration's start,
unthrottled, and during the migration), and how long and how hard
BlockMigrate's disk throttle held the guest (the report's `throttled_seconds` and
`writes_delayed_seconds`; the lowest cap from migrate's log lines "throttle: guest writes capped at
X/s"; the report has no field for the cap). QEMU's own auto-converge CPU throttle is in neither
method's report.

| memory | side | writer MiB/s before | writer MiB/s during | runs ok | throttled s | writes delayed s | lowest cap MiB/s |
|---|---|---|---|---|---|---|---|
""" + "\n".join(heavy) if heavy else "") + """

Every run:

| scenario | method@memory | run | total s | guest pause ms | wire MB | limit s | total/limit | disk | detail |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(per_run) + "\n")
