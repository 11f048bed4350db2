#!/usr/bin/env python3
"""Prints the comparison table of one scripts/bench-compare.sh run: each server's figures,
the ratios ours/theirs, and the issue's targets with PASS/FAIL.

    python3 bench/compare/table.py target/bench-compare/results/<run>
"""
import json
import os
import sys

SERVERS = ("rust", "js", "python")


def load(results, server, label):
    path = os.path.join(results, "%s.%s.json" % (server, label))
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        report = json.load(f)
    return report.get("events") or report.get("instances")


def main(results):
    data = {s: {l: load(results, s, l) for l in ("peak", "half", "instances", "rss")} for s in SERVERS}
    present = [s for s in SERVERS if data[s]["peak"]]

    def get(server, label, *path):
        v = data[server][label]
        for key in path:
            if v is None:
                return None
            v = v.get(key)
        return v

    rows = [
        ("events/s, %s concurrent events" % (get(present[0], "peak", "concurrency") if present else "?"), "peak", ("events_per_s",), "%.0f"),
        ("PDK round trips/s", "peak", ("round_trips_per_s",), "%.0f"),
        ("server CPU per event, us", "peak", ("server", "cpu_us_per_event"), "%.2f"),
        ("server CPU per round trip, us", "peak", ("server", "cpu_us_per_round_trip"), "%.2f"),
        ("server CPU used, cores", "peak", ("server", "cpu_cores"), "%.2f"),
        ("latency/event p50 at peak, us", "peak", ("latency_us", "p50"), "%.0f"),
        ("latency/event p99 at peak, us", "peak", ("latency_us", "p99"), "%.0f"),
        ("latency/event p99.9 at peak, us", "peak", ("latency_us", "p999"), "%.0f"),
        ("half-peak rate, events/s", "half", ("events_per_s",), "%.0f"),
        ("latency/event p50 at half peak, us", "half", ("latency_us", "p50"), "%.0f"),
        ("latency/event p99 at half peak, us", "half", ("latency_us", "p99"), "%.0f"),
        ("latency/event p99.9 at half peak, us", "half", ("latency_us", "p999"), "%.0f"),
        ("events skipped by the pacer at half peak", "half", ("skipped",), "%.0f"),
        ("server CPU per event at half peak, us", "half", ("server", "cpu_us_per_event"), "%.2f"),
        ("server peak RSS (peak run), KiB", "peak", ("server", "peak_rss_kib"), "%.0f"),
        ("RSS per idle instance, bytes", "instances", ("bytes_per_instance",), "%.0f"),
        ("loadgen (Kong side) CPU per event, us", "peak", ("loadgen_cpu_us_per_event",), "%.2f"),
    ]
    others = [s for s in present if s != "rust"]
    header = ["figure"] + present + ["rust/%s" % o for o in others if "rust" in present]
    table = [header]
    for title, label, path, fmt in rows:
        line = [title]
        for s in present:
            v = get(s, label, *path)
            line.append(fmt % v if v is not None else "-")
        if "rust" in present:
            ours = get("rust", label, *path)
            for o in others:
                theirs = get(o, label, *path)
                line.append("%.3f" % (ours / theirs) if ours is not None and theirs else "-")
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))

    errors = {s: sum((get(s, l, "error_replies") or 0) for l in ("peak", "half", "rss")) for s in present}
    print("\nerrors answered by the servers: " + ", ".join("%s %d" % kv for kv in errors.items()))

    if "rust" not in present:
        return
    print("\ntargets (issue 6):")

    def check(name, ok, figure):
        print("  %-4s %s: %s" % ("PASS" if ok else "FAIL", name, figure))

    cpu = get("rust", "peak", "server", "cpu_us_per_event")
    for other, limit in (("js", 0.35), ("python", 0.05)):
        theirs = get(other, "peak", "server", "cpu_us_per_event") if other in present else None
        if theirs:
            check("CPU per event <= %.2fx %s" % (limit, other), cpu / theirs <= limit, "%.3fx (%.2f vs %.2f us)" % (cpu / theirs, cpu, theirs))
    if "js" in present:
        ours, theirs = get("rust", "peak", "events_per_s"), get("js", "peak", "events_per_s")
        check("events/s >= 3x js at 32 concurrent events", ours >= 3 * theirs, "%.2fx (%.0f vs %.0f)" % (ours / theirs, ours, theirs))
    p99 = get("rust", "half", "latency_us", "p99")
    if p99 is not None:
        check("p99 per event <= 1 ms at half of peak", p99 <= 1000, "%.0f us at %.0f events/s" % (p99, get("rust", "half", "events_per_s")))
    per = get("rust", "instances", "bytes_per_instance")
    if per is not None:
        check("<= 2 KiB per idle instance", per <= 2048, "%.0f bytes (%d instances)" % (per, get("rust", "instances", "instances")))
    rss = get("rust", "rss", "server", "rss_at") or []
    if len(rss) >= 2:
        lo, hi = rss[0], rss[-1]
        change = (hi["rss_kib"] - lo["rss_kib"]) / lo["rss_kib"]
        check("RSS flat (+-5%%) from %d to %d events" % (lo["events"], hi["events"]), abs(change) <= 0.05,
              "%d -> %d KiB (%+.1f%%)" % (lo["rss_kib"], hi["rss_kib"], 100 * change))


if __name__ == "__main__":
    main(sys.argv[1])
