#!/usr/bin/env python3
"""Benchmark of issue 6, part 4 (binary deltas), all on loopback, in one run: three small edits of a 100 MiB file
of random bytes, and what each costs on the wire and in the store

  * a 1-byte in-place edit in the middle, a 100-byte append, 1 KiB inserted at the start (the file rewritten in
    place, as an editor saving without a temporary file would);
  * Hypernet: two mounting nodes sharing an identity (A writes, fsync returns once B holds the revision, quorum 2);
    wire = TCP payload bytes both nodes sent (ss's tcp_info `bytes_sent`, as bench/replication.py), store = bytes
    added to each node's packs;
  * rsync (`--no-whole-file --stats`, to an rsync daemon on 127.0.0.1; `--ignore-times` since a same-size edit
    within the second would pass its quick check): "Total bytes sent" + "received";
  * Syncthing (bench/syncthing_pair.py, two instances): /rest/system/connections in+out totals of both, from the
    edit until both are idle with B's copy identical.

Targets (issue 6): each edit at most 16 KiB on the wire and 32 KiB in the store, below rsync and Syncthing.

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/deltas.py [--mib 100] [--runs 3] [--no-syncthing]
Prints a table (medians of the runs), writes JSON to bench/results/deltas-<time>.json. Needs root (FUSE),
rsync and syncthing. Everything it starts is stopped on exit.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replication import Node, bytes_sent_by, wait, write_all  # noqa: E402

EDITS = ("edit_1_byte", "append_100", "insert_1k")
LABELS = {"edit_1_byte": "1-byte in-place edit in the middle", "append_100": "100-byte append",
          "insert_1k": "1 KiB inserted at the start"}
WIRE_TARGET = 16 << 10
STORE_TARGET = 32 << 10
SETTLE_S = 2.0  # after arrival: acks, progress and echoes of the revision finish (a relay holds echoes up to 1 s)


def log(msg):
    print(f"deltas: {msg}", file=sys.stderr, flush=True)


def edited(data: bytes, edit: str, rng) -> tuple[bytes, int, bytes]:
    """The new content, and (offset, bytes) to write in place to get it from `data` (offset -1: append)."""
    if edit == "edit_1_byte":
        middle = len(data) // 2
        byte = bytes([data[middle] ^ 0x5A])
        return data[:middle] + byte + data[middle + 1:], middle, byte
    if edit == "append_100":
        tail = rng(100)
        return data + tail, -1, tail
    inserted = rng(1024) + data
    return inserted, 0, inserted


def apply(path, offset, payload):
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if offset < 0 else 0))
    try:
        if offset < 0:
            write_all(fd, payload)
        else:
            view, pos = memoryview(payload), offset
            while view:
                n = os.pwrite(fd, view[:1 << 20], pos)
                view, pos = view[n:], pos + n
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def holds(path, data, want):
    try:
        return os.path.getsize(path) == len(data) and digest(path) == want
    except FileNotFoundError:
        return False


def pack_bytes(node):
    return sum(f.stat().st_size for f in (node.home / "store" / "packs").iterdir())


# --- Hypernet ---------------------------------------------------------------------------------------------

def hypernet_runs(binary, size, runs):
    root = Path(tempfile.mkdtemp(prefix="hn-bench-deltas-"))
    base = 100 + os.getpid() % 100
    a = Node(binary, root, "a", f"127.0.{base}.1:7410")
    b = Node(binary, root, "b", f"127.0.{base}.2:7410")
    results = {e: [] for e in EDITS}
    try:
        a.cli("init")
        pw = root / "pw"
        pw.write_text("bench\n")
        a.cli("id", "export", str(root / "id.hnid"), "--passphrase-file", str(pw))
        b.cli("id", "import", str(root / "id.hnid"), "--passphrase-file", str(pw))
        a.start("--peer", b.address, "--fsync-timeout", "120")
        b.start("--peer", a.address, "--fsync-timeout", "120")
        time.sleep(1.5)
        for run in range(runs):
            name = f"big{run}.bin"
            data = os.urandom(size)
            log(f"hypernet run {run + 1}: writing {size >> 20} MiB")
            fd = os.open(a.mount / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            want = hashlib.sha256(data).hexdigest()
            wait(lambda: holds(b.mount / name, data, want), 600, f"{name} on B")
            time.sleep(SETTLE_S)
            for edit in EDITS:
                data, offset, payload = edited(data, edit, os.urandom)
                want = hashlib.sha256(data).hexdigest()
                before = (bytes_sent_by(a.pid) + bytes_sent_by(b.pid), pack_bytes(a), pack_bytes(b))
                start = time.perf_counter()
                apply(a.mount / name, offset, payload)
                wait(lambda: holds(b.mount / name, data, want), 120, f"the {edit} on B")
                seconds = time.perf_counter() - start
                time.sleep(SETTLE_S)
                after = (bytes_sent_by(a.pid) + bytes_sent_by(b.pid), pack_bytes(a), pack_bytes(b))
                figures = {"wire": after[0] - before[0], "store_a": after[1] - before[1],
                           "store_b": after[2] - before[2], "seconds": seconds}
                log(f"  {edit}: {figures}")
                results[edit].append(figures)
    finally:
        for n in (a, b):
            n.stop()
        shutil.rmtree(root, ignore_errors=True)
    return results


# --- rsync ------------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rsync_runs(size, runs):
    root = Path(tempfile.mkdtemp(prefix="rsync-bench-deltas-"))
    src, dst = root / "src", root / "dst"
    src.mkdir()
    dst.mkdir()
    port = free_port()
    (root / "rsyncd.conf").write_text(
        f"pid file = {root}/rsyncd.pid\nuse chroot = no\n[dst]\n  path = {dst}\n  read only = false\n  uid = root\n  gid = root\n")
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={root}/rsyncd.conf", f"--port={port}",
                               "--address=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {e: [] for e in EDITS}

    def sync(name):
        out = subprocess.run(["rsync", "--no-whole-file", "--ignore-times", "--stats", str(src / name), f"rsync://127.0.0.1:{port}/dst/"],
                             check=True, capture_output=True, text=True).stdout
        sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))
        received = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))
        return sent + received

    try:
        wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "the rsync daemon")
        for run in range(runs):
            name = f"big{run}.bin"
            data = os.urandom(size)
            (src / name).write_bytes(data)
            sync(name)
            for edit in EDITS:
                data, offset, payload = edited(data, edit, os.urandom)
                apply(src / name, offset, payload)
                before = (dst / name).stat().st_size
                wire = sync(name)
                assert (dst / name).read_bytes() == data, f"rsync: {edit} did not arrive"
                results[edit].append({"wire": wire, "store_b": (dst / name).stat().st_size - before})
                log(f"  rsync {edit}: {results[edit][-1]}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return results


# --- Syncthing --------------------------------------------------------------------------------------------

def syncthing_runs(size, runs):
    from syncthing_pair import SyncthingPair
    results = {e: [] for e in EDITS}
    with SyncthingPair() as pair:
        results["version"] = pair.version
        for run in range(runs):
            data = os.urandom(size)
            pair.propagate_file(size, data=data)
            name = max(pair.a.folder.glob("big-*.bin"), key=lambda p: p.stat().st_mtime).name
            pair.wait_idle()
            for edit in EDITS:
                data, offset, payload = edited(data, edit, os.urandom)
                want = hashlib.sha256(data).hexdigest()
                before = pair.bytes_transferred()
                apply(pair.a.folder / name, offset, payload)
                wait(lambda: holds(pair.b.folder / name, data, want), 300, f"syncthing: the {edit} on b")
                pair.wait_idle()
                time.sleep(SETTLE_S)
                delta = pair.wire_delta(before, pair.bytes_transferred())
                results[edit].append({"wire": delta["a"]["out"] + delta["b"]["out"]})
                log(f"  syncthing {edit}: {results[edit][-1]}")
    return results


def median(runs, key):
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-rsync", action="store_true")
    ap.add_argument("--no-syncthing", action="store_true")
    args = ap.parse_args()
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet"))
    size = args.mib << 20
    raw = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": os.uname().nodename, "cores": os.cpu_count(),
           "mib": args.mib, "runs": args.runs}
    raw["hypernet"] = hypernet_runs(binary, size, args.runs)
    if not args.no_rsync:
        log("rsync")
        raw["rsync"] = rsync_runs(size, args.runs)
    if not args.no_syncthing:
        log("syncthing")
        raw["syncthing"] = syncthing_runs(size, args.runs)

    summary = {}
    for edit in EDITS:
        h = raw["hypernet"][edit]
        row = {"hypernet_wire": median(h, "wire"), "hypernet_store_a": median(h, "store_a"),
               "hypernet_store_b": median(h, "store_b"), "hypernet_seconds": median(h, "seconds")}
        for other in ("rsync", "syncthing"):
            if other in raw:
                row[f"{other}_wire"] = median(raw[other][edit], "wire")
        row["meets_target"] = (row["hypernet_wire"] <= WIRE_TARGET
                               and max(row["hypernet_store_a"], row["hypernet_store_b"]) <= STORE_TARGET
                               and all(row["hypernet_wire"] < row[f"{o}_wire"] for o in ("rsync", "syncthing")
                                       if f"{o}_wire" in row))
        summary[edit] = row
    raw["summary"] = summary
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"deltas-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(raw, indent=2))

    print(f"{args.mib} MiB file of random bytes, medians of {args.runs} runs (bytes)")
    print(f"{'edit':36} {'HN wire':>9} {'HN store A':>10} {'HN store B':>10} {'rsync wire':>10} {'ST wire':>9} "
          f"{'rsync/HN':>8} {'ST/HN':>7}  target")
    for edit, r in summary.items():
        rs, st = r.get("rsync_wire"), r.get("syncthing_wire")
        ratio = lambda other: f"{other / r['hypernet_wire']:.1f}" if other else "-"
        print(f"{LABELS[edit]:36} {r['hypernet_wire']:>9.0f} {r['hypernet_store_a']:>10.0f} {r['hypernet_store_b']:>10.0f} "
              f"{rs if rs is not None else '-':>10} {st if st is not None else '-':>9} {ratio(rs):>8} {ratio(st):>7}  "
              f"{'met' if r['meets_target'] else 'NOT met'}")


if __name__ == "__main__":
    main()
