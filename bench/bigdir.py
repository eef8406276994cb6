#!/usr/bin/env python3
"""Benchmark of issue 14, item 7 (big directories): N empty files created in one directory, on a Hypernet mount and
on the native disk (the anchor), one `open(O_CREAT | O_EXCL)` + `close` each, in name order.

For each target: the seconds taken by each tenth of the creates (creating the n-th entry must not cost more as n
grows: the tenths should stay flat) and the ratio of the last tenth to the first; `ls -l` of the directory
(readdir plus a stat per entry). For Hypernet also: the daemon's peak RSS (VmHWM), the catalog's size (SQLite file
with its WAL) and the packs' size once the daemon stopped, and `hypernet fsck` (run without the daemon).

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/bigdir.py [--count 100000] [--dir DIR] [--json]
Prints a table (or with --json the figures as JSON on stdout) and writes JSON to bench/results/bigdir-<time>.json.
Needs root (FUSE). Everything it mounts or starts is undone on exit.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replication import Node  # noqa: E402

TENTHS = 10


def log(msg):
    print(f"bigdir: {msg}", file=sys.stderr, flush=True)


def create(directory, count):
    """Seconds per tenth of `count` creates of empty files in `directory`."""
    tenth = max(1, count // TENTHS)
    seconds = []
    n = 0
    while n < count:
        start = time.perf_counter()
        for i in range(n, min(n + tenth, count)):
            os.close(os.open(os.path.join(directory, f"f{i:07d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        seconds.append(time.perf_counter() - start)
        n += tenth
        log(f"  {n} files: {seconds[-1]:.2f} s for the last {tenth}")
    return seconds


def ls_l(directory, count):
    start = time.perf_counter()
    out = subprocess.run(["ls", "-l", "--", directory], check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    listed = len(out.splitlines()) - 1  # the "total" line
    if listed != count:
        raise RuntimeError(f"ls -l listed {listed} entries in {directory}, expected {count}")
    return seconds


def figures(seconds, ls_seconds):
    return {"tenths_s": [round(s, 3) for s in seconds], "total_s": round(sum(seconds), 3),
            "last_over_first": round(seconds[-1] / seconds[0], 3) if seconds[0] > 0 else None,
            "ls_l_s": round(ls_seconds, 3)}


def native(base, count):
    directory = Path(tempfile.mkdtemp(prefix="bigdir-native-", dir=base))
    try:
        log(f"native: {count} files in {directory}")
        seconds = create(str(directory), count)
        return figures(seconds, ls_l(str(directory), count))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def peak_rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def size_of(paths):
    return sum(p.stat().st_size for p in paths if p.exists())


def hypernet(binary, base, count):
    root = Path(tempfile.mkdtemp(prefix="bigdir-hypernet-", dir=base))
    node = Node(binary, root, "a", f"127.0.{100 + os.getpid() % 100}.1:7410")
    try:
        node.cli("init")
        node.start()
        directory = node.mount / "big"
        directory.mkdir()
        log(f"hypernet: {count} files in {directory}")
        seconds = create(str(directory), count)
        ls_seconds = ls_l(str(directory), count)
        rss = peak_rss(node.pid)
        node.stop()
        store = node.home / "store"
        catalog = size_of([store / "catalog.sqlite", store / "catalog.sqlite-wal"])
        packs = size_of(list((store / "packs").iterdir()))
        start = time.perf_counter()
        fsck = node.cli("fsck", check=False)
        fsck_seconds = time.perf_counter() - start
        if fsck.returncode != 0:
            raise RuntimeError(f"fsck failed ({fsck.returncode}): {fsck.stdout}{fsck.stderr}")
        return dict(figures(seconds, ls_seconds), peak_rss_bytes=rss, catalog_bytes=catalog, pack_bytes=packs,
                    fsck_s=round(fsck_seconds, 3))
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


def table(results, count):
    lines = [f"{count} empty files in one directory, seconds per tenth ({count // TENTHS} creates each)",
             f"{'target':<10}" + "".join(f"{i + 1:>7}" for i in range(TENTHS)) + f"{'last/1st':>10}{'total':>9}"
             + f"{'ls -l':>8}"]
    for target, r in results.items():
        lines.append(f"{target:<10}" + "".join(f"{s:>7.2f}" for s in r["tenths_s"])
                     + f"{r['last_over_first'] or 0:>10.2f}{r['total_s']:>9.1f}{r['ls_l_s']:>8.2f}")
    h = results.get("hypernet")
    if h:
        lines.append(f"hypernet: peak RSS {h['peak_rss_bytes'] / 2**20:.0f} MiB, catalog "
                     f"{h['catalog_bytes'] / 2**20:.1f} MiB, packs {h['pack_bytes'] / 2**20:.1f} MiB, "
                     f"fsck {h['fsck_s']:.1f} s")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000, help="files to create (default 100000)")
    p.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"),
                   help="where the native directory, the home and the mount go (default $TMPDIR or /tmp)")
    p.add_argument("--only", choices=("native", "hypernet"), help="measure one target")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = p.parse_args()
    if args.count < TENTHS:
        p.error(f"--count must be at least {TENTHS}")
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build" / "release" / "hypernet"))
    if args.only != "native" and not os.access(binary, os.X_OK):
        p.error(f"no hypernet executable at {binary} (swift build -c release --product hypernet, or set HYPERNET_BIN)")
    results = {}
    if args.only != "hypernet":
        results["native"] = native(args.dir, args.count)
    if args.only != "native":
        results["hypernet"] = hypernet(binary, args.dir, args.count)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "count": args.count,
              "hypernet_bin": binary if "hypernet" in results else None, "results": results}
    out = HERE / "results" / f"bigdir-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else table(results, args.count))
    log(f"figures in {out}")


if __name__ == "__main__":
    main()
