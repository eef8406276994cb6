#!/usr/bin/env python3
"""Benchmark of issue 19 (logs near the data), run by bench/logs.sh: SIZE bytes of logs spread over 4 writer nodes
(each its own identity, granting the reader read on its `logs/`), a fifth node, the reader, holding their trees on
demand, each node in its own network namespace (tests/integration/netns.py) so that the reader's eth0 counters are
exactly its bytes on the wire. 0.1 % of the lines match PATTERN.

Measured, RUNS times each (medians reported):
  * `hypernet grep PATTERN` over the 4 trees from the reader: wall time, bytes on the reader's wire (rx + tx);
    the matching lines' bytes, for the issue's target (wire <= 1.2x matches + 4 KiB per node);
  * pull everything: `rsync` of the same files (plain, from an rsync daemon on each writer) to the reader, then
    GNU grep there: wall time and wire bytes;
  * the slowest writer grepping its own share locally (`hypernet grep` on that node: store, decryption, scan);
  * the serving node's scan rate: share bytes per CPU second of its daemon during that local grep (decryption
    included);
  * `hypernet count --by REGEX` over the 4 trees: wall time and wire bytes;
  * `tail -f --grep` from append to print: a writer appends one matching line per 100 ms (open, write, close: one
    revision each), the reader's `tail -f` prints it; p50 and p99 over SAMPLES lines;
  * every daemon's peak RSS (VmHWM) at the end.

Usage: sudo bench/logs.sh [--quick] [--size MIB] [--runs N] [--samples N]
`--quick`: 32 MiB, 1 run, 20 tail samples (checks the script works; not a result). Binary: $HYPERNET_BIN or
.build/release/hypernet. Prints a table, writes bench/results/logs-<time>.json.
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

import netns  # noqa: E402
from cluster import Cluster, ClusterNode, eventually  # noqa: E402

PATTERN = "disk failure on sd"
COUNT_BY = "(ERROR|WARN|INFO) svc=([a-z]+)"
SERVICES = ["api", "db", "auth", "cache", "web", "queue", "mail", "search"]
WORDS = "request served user session token timeout retry connected closed latency bytes ok upstream".split()
FILE_BYTES = 64 << 20


def log(msg):
    print(f"logs: {msg}", file=sys.stderr, flush=True)


def generate(path, size, rng):
    """Log lines of about 100 bytes up to `size` bytes, one in 1000 matching PATTERN; returns the matches' bytes."""
    matched = 0
    with open(path, "wb") as f:
        written = 0
        n = 0
        while written < size:
            lines = []
            for _ in range(4096):
                n += 1
                stamp = f"2026-12-07T12:{n // 60 % 60:02d}:{n % 60:02d}Z"
                service = rng.choice(SERVICES)
                if rng.random() < 0.001:
                    line = f"{stamp} ERROR svc={service} {PATTERN}{rng.choice('abc')}"
                    matched += len(line) + 1
                else:
                    level = rng.choice(["INFO", "INFO", "INFO", "WARN"])
                    line = f"{stamp} {level} svc={service} " + " ".join(
                        rng.choice(WORDS) for _ in range(rng.randint(8, 14)))
                lines.append(line)
            block = ("\n".join(lines) + "\n").encode()
            f.write(block)
            written += len(block)
    return matched


def wire(host):
    """The host's eth0 bytes received and sent so far."""
    out = host.run("cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth0/statistics/tx_bytes").stdout
    rx, tx = map(int, out.split())
    return rx + tx


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def measured(host, args, **kw):
    """Runs `args` (here, not in a namespace: the CLI talks to its daemon over a Unix socket); wall seconds, wire
    bytes of `host`, and the CompletedProcess."""
    before = wire(host)
    start = time.monotonic()
    proc = subprocess.run(args, capture_output=True, **kw)
    seconds = time.monotonic() - start
    return seconds, wire(host) - before, proc


def tail_latencies(reader, writer, shown, samples):
    """Append-to-print latencies (s) of `tail -f --grep` on the reader over a file the writer appends to."""
    path = writer.p("logs", "tail.log")
    with open(path, "wb") as f:
        f.write(b"start\n")
    eventually(lambda: os.path.exists(shown), 60, "tail.log did not show on the reader")
    tail = subprocess.Popen([reader.bin, "--home", str(reader.home), "tail", "-f", "-n", "0", "--grep", "MARK",
                             shown], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    arrived = {}

    def read():
        for raw in tail.stdout:
            arrived[int(raw.split()[1])] = time.monotonic()

    reader_thread = threading.Thread(target=read, daemon=True)
    reader_thread.start()
    try:
        time.sleep(2)  # tail is following
        sent = {}
        for i in range(samples):
            with open(path, "ab") as f:
                f.write(b"noise line that does not match\n" * 9 + b"MARK %d\n" % i)
                sent[i] = time.monotonic()
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while len(arrived) < samples and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        tail.terminate()
        tail.wait(10)
    lost = samples - len(arrived)
    values = sorted(arrived[i] - sent[i] for i in arrived)
    return values, lost


def percentile(values, p):
    if not values:
        return None
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=1024, help="MiB of logs in all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs, args.samples = 32, 1, 20
    binary = os.environ.get("HYPERNET_BIN", str(REPO / ".build" / "release" / "hypernet"))
    os.environ["HYPERNET_BIN"] = binary
    root = Path(tempfile.mkdtemp(prefix="hypernet-logs-"))
    root.chmod(0o755)
    names = ["w1", "w2", "w3", "w4", "reader"]

    def make_node(start=False, node_class=ClusterNode, label=None, **extra):
        directory = root / label
        directory.mkdir()
        return node_class(directory, binary, **extra)

    lab = netns.Lab("hnlogs", hosts=names)
    lab.__enter__()
    cl = Cluster(make_node, root, lab=lab)
    rsyncd = []
    result = {"size_mib": args.size, "runs": args.runs, "pattern": PATTERN, "binary": binary}
    try:
        writers = [cl.add(name) for name in names[:4]]
        reader = cl.add("reader")
        for w in writers:
            reader.run("contact", "add", w.name, w.token)
        cl.start(timeout=60)
        share = args.size * (1 << 20) // 4
        stage = root / "stage"
        matched = 0
        rng = random.Random(19)
        for w in writers:
            w.run("contact", "add", "reader", reader.token)
            (stage / w.name).mkdir(parents=True)
            os.mkdir(w.p("logs"))
            for k in range(max(1, share // FILE_BYTES)):
                part = stage / w.name / f"app{k}.log"
                matched += generate(part, min(share, FILE_BYTES), rng)
                shutil.copyfile(part, w.p("logs", part.name))
            w.run("grant", w.p("logs"), "reader", "read")
            log(f"{w.name}: {share >> 20} MiB written")
        result["matching_bytes"] = matched
        for w in writers:
            for part in (stage / w.name).iterdir():
                shown = reader.p("@" + w.name, "logs", part.name)
                eventually(lambda: os.path.exists(shown) and os.path.getsize(shown) == part.stat().st_size, 600,
                           f"{shown} did not show in full on the reader")
        operands = [reader.p("@" + w.name, "logs") for w in writers]
        hn = [reader.bin, "--home", str(reader.home)]

        runs = {"grep": [], "count": [], "pull": [], "local": [], "scan_rate": []}
        for run in range(args.runs):
            seconds, wire_bytes, proc = measured(reader.host, [*hn, "grep", PATTERN, *operands])
            assert proc.returncode == 0, proc.stderr
            runs["grep"].append({"seconds": seconds, "wire": wire_bytes, "output": len(proc.stdout)})
            seconds, wire_bytes, proc = measured(reader.host, [*hn, "count", "--by", COUNT_BY, *operands])
            assert proc.returncode == 0, proc.stderr
            runs["count"].append({"seconds": seconds, "wire": wire_bytes})
            # The slowest writer grepping its share on its own node, and its daemon's CPU for it.
            slowest = 0.0
            rates = []
            for w in writers:
                cpu = cpu_seconds(w.pid)
                start = time.monotonic()
                subprocess.run([w.bin, "--home", str(w.home), "grep", "-c", PATTERN, w.p("logs")],
                               capture_output=True, check=True)
                slowest = max(slowest, time.monotonic() - start)
                rates.append(share / 1e6 / max(cpu_seconds(w.pid) - cpu, 1e-3))
            runs["local"].append(slowest)
            runs["scan_rate"].append(statistics.median(rates))
            # Pull everything: rsync from each writer's plain copy, then grep on the reader.
            pulled = root / f"pulled{run}"
            if not rsyncd:
                for w in writers:
                    conf = root / f"rsyncd-{w.name}.conf"
                    conf.write_text(f"use chroot = no\n[logs]\npath = {stage / w.name}\nread only = yes\n")
                    rsyncd.append(w.host.popen(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                                "--port=8730"], stderr=subprocess.DEVNULL))
                time.sleep(1)
            pulled.mkdir()
            before = wire(reader.host)
            start = time.monotonic()
            copies = [reader.host.popen(["rsync", "-a", f"rsync://{w.host.ip}:8730/logs/", str(pulled / w.name)])
                      for w in writers]
            assert all(c.wait() == 0 for c in copies), "rsync failed"
            out = subprocess.run(["grep", "-r", "-F", PATTERN, str(pulled)], capture_output=True, env={"LC_ALL": "C"})
            runs["pull"].append({"seconds": time.monotonic() - start, "wire": wire(reader.host) - before,
                                 "output": len(out.stdout)})
            shutil.rmtree(pulled)
            log(f"run {run + 1}: grep {runs['grep'][-1]['seconds']:.2f} s, pull {runs['pull'][-1]['seconds']:.2f} s")

        values, lost = tail_latencies(reader, writers[0], reader.p("@w1", "logs", "tail.log"), args.samples)
        result["tail"] = {"samples": len(values), "lost": lost, "p50_ms": (percentile(values, 50) or 0) * 1000,
                          "p99_ms": (percentile(values, 99) or 0) * 1000}
        result["rss_mib"] = {n.name: peak_rss_mib(n.pid) for n in cl.nodes}

        def median(kind, key=None):
            return statistics.median(r[key] if key else r for r in runs[kind])

        result["raw"] = runs
        result["median"] = {
            "grep_seconds": median("grep", "seconds"), "grep_wire": median("grep", "wire"),
            "count_seconds": median("count", "seconds"), "count_wire": median("count", "wire"),
            "pull_seconds": median("pull", "seconds"), "pull_wire": median("pull", "wire"),
            "slowest_local_seconds": median("local"), "scan_mb_per_cpu_second": median("scan_rate")}
    finally:
        for p in rsyncd:
            p.terminate()
            p.wait()
        cl.close()
        lab.close()
        shutil.rmtree(root, ignore_errors=True)

    m = result["median"]
    limit = 1.2 * result["matching_bytes"] + 4 * 4096
    rows = [
        ("hypernet grep: wall s", f"{m['grep_seconds']:.2f}",
         f"<= 1.2 x slowest local {m['slowest_local_seconds']:.2f} s"),
        ("hypernet grep: wire bytes", f"{m['grep_wire']:,}", f"<= {limit:,.0f} (1.2 x matches + 4 KiB/node)"),
        ("rsync + grep: wall s", f"{m['pull_seconds']:.2f}", ""),
        ("rsync + grep: wire bytes", f"{m['pull_wire']:,}", ""),
        ("hypernet count: wall s", f"{m['count_seconds']:.2f}", ""),
        ("hypernet count: wire bytes", f"{m['count_wire']:,}", ""),
        ("scan, serving node: MB per CPU s", f"{m['scan_mb_per_cpu_second']:.0f}", ">= 500"),
        ("tail -f --grep p50 / p99 ms", f"{result['tail']['p50_ms']:.0f} / {result['tail']['p99_ms']:.0f}",
         "p99 <= 200"),
        ("tail lines lost", f"{result['tail']['lost']}", "0"),
        ("peak RSS MiB (max of daemons)", f"{max(v or 0 for v in result['rss_mib'].values()):.0f}", "< 200"),
    ]
    print(f"logs: {args.size} MiB over 4 nodes, {result['matching_bytes']:,} bytes of matching lines, "
          f"medians of {args.runs} runs")
    for name, value, target in rows:
        print(f"  {name:<34} {value:>16}  {target}")
    out = REPO / "bench" / "results" / f"logs-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"logs: {out}")


if __name__ == "__main__":
    main()
