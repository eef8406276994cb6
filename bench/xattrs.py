#!/usr/bin/env python3
"""Benchmark of issue 14, item 3: what the n-th user xattr set costs as a file's list grows.

On one file, sets `user.nNNNNN` = `x` for n = 0, 1, 2 … up to --count (default 10,000), and reports for each
thousand the time it took and what the store gained:

  * hypernet: a mounting node; what its packs, catalog.sqlite and catalog.sqlite-wal grew by, each (the WAL
    takes every committed page until a checkpoint at 16 MiB empties it, and its file never shrinks, so its
    figure is the pages written until it first reaches that size, then mostly 0: the packs and the database
    file are what the store keeps);
  * native: the same sets on a file in a directory of --dir (ext4 or whatever holds it) and in /dev/shm (tmpfs),
    as anchors; their store growth is not measured.

A target stops at its first error (ENOSPC once a file's xattrs fill their space: at 5,021 of these 13-byte
attributes on Hypernet, whose limit is 65,280 bytes of names with their NUL and values; at 148 on ext4's one
block here); the figures stop there
and `stopped` says why. Flat per-thousand times and store growth mean one set does not cost more as the list
grows.

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/xattrs.py [--count 10000] [--dir DIR] [--json]
Prints a table, or with --json one JSON object on stdout. Needs root (FUSE). Everything it starts is stopped.
"""

import argparse
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replication import Node  # noqa: E402

STEP = 1000


def log(msg):
    print(f"xattrs: {msg}", file=sys.stderr, flush=True)


def store_bytes(home: Path) -> dict:
    """Sizes of the packs, the catalog's database file and its WAL (which a checkpoint empties but never shrinks)."""
    store = home / "store"
    size = lambda name: (store / name).stat().st_size if (store / name).exists() else 0
    return {"packs": sum(f.stat().st_size for f in (store / "packs").iterdir()),
            "catalog": size("catalog.sqlite"), "wal": size("catalog.sqlite-wal")}


def run_sets(path: Path, count: int, measure=None) -> dict:
    """Sets count xattrs on `path`, a row per thousand: seconds, and store bytes gained when `measure` is given."""
    rows, stopped = [], None
    last = measure() if measure else None
    start = time.perf_counter()
    for i in range(count):
        try:
            os.setxattr(path, f"user.n{i:05d}", b"x")
        except OSError as e:
            stopped = f"{errno.errorcode.get(e.errno, e.errno)} at attribute {i}"
            break
        if (i + 1) % STEP == 0:
            now = time.perf_counter()
            row = {"set": i + 1, "seconds": now - start}
            if measure:
                current = measure()
                row.update({f"{k}_bytes": current[k] - last[k] for k in current})
                last = current
            rows.append(row)
            start = time.perf_counter()
    return {"per_thousand": rows, "stopped": stopped}


def native(directory: Path, count: int) -> dict:
    d = Path(tempfile.mkdtemp(prefix="hn-bench-xattrs-", dir=directory))
    try:
        f = d / "f"
        f.write_bytes(b"x\n")
        return run_sets(f, count)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the native anchor's file goes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet"))
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": os.uname().nodename, "count": args.count}
    log(f"native ({args.dir}) and tmpfs")
    results["native"] = native(Path(args.dir), args.count)
    results["tmpfs"] = native(Path("/dev/shm"), args.count)
    root = Path(tempfile.mkdtemp(prefix="hn-bench-xattrs-", dir=args.dir))
    node = Node(binary, root, "a", f"127.0.{100 + os.getpid() % 100}.1:7400")
    try:
        node.cli("init")
        node.start()
        f = node.mount / "f"
        f.write_bytes(b"x\n")
        log("hypernet")
        results["hypernet"] = run_sets(f, args.count, measure=lambda: store_bytes(node.home))
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'sets':>8} {'hypernet s':>11} {'packs KiB':>10} {'db KiB':>8} {'wal KiB':>8} {'native s':>9} "
          f"{'tmpfs s':>8}")
    for k in range(args.count // STEP):
        cells = []
        for target in ("hypernet", "native", "tmpfs"):
            rows = results[target]["per_thousand"]
            cells.append(rows[k] if k < len(rows) else None)
        h, n, t = cells
        kib = lambda key: h[key] / 1024 if h else float("nan")
        print(f"{(k + 1) * STEP:>8} {h['seconds'] if h else float('nan'):>11.2f} {kib('packs_bytes'):>10.0f} "
              f"{kib('catalog_bytes'):>8.0f} {kib('wal_bytes'):>8.0f} "
              f"{n['seconds'] if n else float('nan'):>9.3f} {t['seconds'] if t else float('nan'):>8.3f}")
    for target in ("hypernet", "native", "tmpfs"):
        if results[target]["stopped"]:
            print(f"{target}: stopped, {results[target]['stopped']}")


if __name__ == "__main__":
    main()
