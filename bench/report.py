#!/usr/bin/env python3
"""Turns the raw measurements of bench/run.sh into medians, ratios and the issue's goals.

Input: a JSON-lines file, one {"run", "target", "metrics": {name: value}} per line, and a meta JSON
(date, machine, configuration). Output: a table on stdout and one JSON document (--out).
"""

import argparse
import json
import statistics
from collections import defaultdict

TARGETS = ["native", "passthrough_ll", "gocryptfs", "hypernet"]
ANCHORS = ["gocryptfs", "passthrough_ll"]
SUBJECT = "hypernet"


def size_label(mib):
    return "%d GiB" % (mib // 1024) if mib >= 1024 and mib % 1024 == 0 else "%d MiB" % mib


def metric_table(config):
    """(name, label, unit, higher_is_better) for every figure of the table, in order."""
    return [
        ("seq_write", "seq write %s bs=1M, end_fsync" % size_label(config["seq_mib"]), "MiB/s", True),
        ("seq_read_cold", "seq read %s, cold" % size_label(config["seq_mib"]), "MiB/s", True),
        ("rand_read_4k", "rand read 4 KiB, %s file, %d s" % (size_label(config["rand_mib"]), config["rand_secs"]),
         "IOPS", True),
        ("small_files", "%d files: create+write+fsync, stat, unlink" % config["small_count"], "s", False),
        ("untar", "untar %d entries, %.0f MB" % (config["tar_entries"], config["tar_bytes"] / 1e6), "s", False),
        ("rm_rf", "rm -rf of the untarred tree", "s", False),
        ("append_big", "append 100 B+fsync, %s file (median)" % size_label(config["append_big_mib"]), "ms", False),
        ("append_small", "append 100 B+fsync, %s file (median)" % size_label(config["append_small_mib"]),
         "ms", False),
        ("peak_rss", "daemon peak RSS (VmHWM, max of all runs)", "MiB", False),
    ]


def aggregate(raw_lines):
    """Per target and metric: the list of per-run values. peak_rss is a maximum within a run already."""
    per_run = defaultdict(lambda: defaultdict(dict))
    for line in raw_lines:
        record = json.loads(line)
        bucket = per_run[record["target"]][record["run"]]
        for name, value in record["metrics"].items():
            # A daemon is started several times per run (remounts for cold reads): keep its highest peak.
            bucket[name] = max(bucket.get(name, value), value) if name == "peak_rss" else value
    values = {target: defaultdict(list) for target in per_run}
    for target, runs in per_run.items():
        for run in sorted(runs):
            for name, value in runs[run].items():
                values[target][name].append(value)
    return values


def ratio(subject, anchor, higher_is_better):
    """> 1 means the subject is better: subject/anchor for throughput, anchor/subject for times."""
    if subject is None or anchor is None or subject == 0 or anchor == 0:
        return None
    return subject / anchor if higher_is_better else anchor / subject


def goals(medians, ratios):
    """The targets issue 2 sets for the benchmark, each met, not met, or not measured (None)."""
    hn = medians.get(SUBJECT, {})
    vs_gc = ratios.get("gocryptfs", {})
    result = []
    for name, label in (("seq_write", "sequential write"), ("seq_read_cold", "sequential read (cold)")):
        r = vs_gc.get(name)
        result.append({
            "goal": "%s >= 0.5x gocryptfs" % label,
            "met": None if r is None else r >= 0.5,
            "detail": "not measured" if r is None else "%.2fx" % r,
        })
    big, small = hn.get("append_big"), hn.get("append_small")
    growth = None if big is None or not small else big / small
    # Proportional cost would make the big file's append tens of times slower; 1.5x allows for noise.
    result.append({
        "goal": "append cost independent of file size (big/small median <= 1.5)",
        "met": None if growth is None else growth <= 1.5,
        "detail": "not measured" if growth is None else "%.3f ms vs %.3f ms = %.2fx" % (big, small, growth),
    })
    rss = hn.get("peak_rss")
    result.append({
        "goal": "daemon peak RSS < 200 MiB",
        "met": None if rss is None else rss < 200,
        "detail": "not measured" if rss is None else "%.1f MiB" % rss,
    })
    return result


def fmt(value, unit=None):
    if value is None:
        return "-"
    if unit == "IOPS" or abs(value) >= 100:
        return "%.0f" % value
    if abs(value) >= 10:
        return "%.1f" % value
    return "%.2f" % value if abs(value) >= 0.1 or value == 0 else "%.3f" % value


def render(meta, table, medians, ratios, goal_list):
    config = meta["config"]
    m = meta["machine"]
    targets = [t for t in TARGETS if t in medians]
    out = []
    out.append("Hypernet benchmark %s: median of %d run(s)%s" % (
        meta["date"], config["runs"], ", QUICK sizes" if config["quick"] else ""))
    out.append("machine: %d cores (%s), %.1f GiB RAM, kernel %s, %s %s on %s; %s, %s, libfuse %s" % (
        m["nproc"], m["cpu"], m["memory_gib"], m["kernel"], m["disk"]["fstype"], m["disk"]["size"],
        m["disk"]["device"], m["fio"], m["gocryptfs"], m["libfuse"]))
    out.append("load average (1, 5, 15 min) at start %s, at end %s" % (
        " ".join("%.2f" % x for x in m["loadavg_at_start"]), " ".join("%.2f" % x for x in m["loadavg_at_end"])))
    headers = ["metric", "unit"] + targets + ["hn/" + a for a in ANCHORS]
    rows = []
    for name, label, unit, higher in table:
        if not any(name in medians[t] for t in targets):
            continue
        row = [label, unit + (" (+)" if higher else " (-)")]
        row += [fmt(medians[t].get(name), unit) for t in targets]
        row += [fmt(ratios[a].get(name)) for a in ANCHORS]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out.append("")
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in rows)
    out.append("")
    out.append("(+) higher is better, (-) lower is better. hn/X ratios: throughput hypernet/X, times X/hypernet,")
    out.append("so > 1 always means Hypernet is better than X.")
    out.append("")
    out.append("Goals of issue 2:")
    for g in goal_list:
        state = {True: "MET", False: "NOT MET", None: "not measured"}[g["met"]]
        out.append(("  %-62s %-12s %s" % (g["goal"], state, g["detail"] if g["met"] is not None else "")).rstrip())
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", help="JSON lines written by run.sh")
    parser.add_argument("--meta", required=True)
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    args = parser.parse_args()

    with open(args.meta) as f:
        meta = json.load(f)
    with open(args.raw) as f:
        values = aggregate([line for line in f if line.strip()])
    table = metric_table(meta["config"])
    # A peak is a maximum: the highest of all runs, not the median, is held against the goal.
    medians = {t: {name: max(v) if name == "peak_rss" else statistics.median(v) for name, v in values[t].items()}
               for t in values}
    ratios = {}
    for anchor in ANCHORS:
        ratios[anchor] = {}
        for name, _, _, higher in table:
            r = ratio(medians.get(SUBJECT, {}).get(name), medians.get(anchor, {}).get(name), higher)
            if r is not None:
                ratios[anchor][name] = r
    goal_list = goals(medians, ratios)

    with open("/proc/loadavg") as f:
        meta["machine"]["loadavg_at_end"] = [float(x) for x in f.read().split()[:3]]
    document = dict(meta)
    document["metrics"] = [
        {"name": n, "label": l, "unit": u, "higher_is_better": h} for n, l, u, h in table]
    document["ratio_definition"] = (
        "hypernet/anchor for higher-is-better metrics, anchor/hypernet for lower-is-better; > 1 favours hypernet")
    document["runs"] = {t: {name: v for name, v in values[t].items()} for t in values}
    document["median"] = medians
    document["ratios_vs"] = ratios
    document["goals"] = goal_list
    with open(args.out, "w") as f:
        json.dump(document, f, indent=2, sort_keys=False)
        f.write("\n")

    print(render(meta, table, medians, ratios, goal_list))
    print("\nJSON: %s" % args.out)


if __name__ == "__main__":
    main()
