#!/usr/bin/env python3
"""Benchmark of issue 3 (replication), all on loopback, in one run:

  * quorum-1/2/3 fsync latency of a 4 KiB change (p50, p99 over N fsyncs) with three nodes: A and B share an
    identity and mount it, C is a storage node pinning it;
  * replication throughput of a 256 MiB file to 2 replicas: written on A into a directory with quorum 3,
    fsync returns once B and C hold it (MB/s, and the ratio to `cp` + fsync of the same bytes to a local
    directory, measured in the same run); and the catch-up rate of a fresh storage node fetching it;
  * the time an offline node takes to catch up 1,000 small revisions;
  * propagation of a 4 KiB change and of the 256 MiB file from A to B (until B's mount shows the bytes), first
    with the storage node stopped (two nodes, like for like with Syncthing's two), then with it running, and
    the same two measured between two Syncthing instances (bench/syncthing_pair.py) in the same run.

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/replication.py [--fsyncs 200] [--big-mib 256]
       [--runs 3] [--small-runs 10] [--no-syncthing]
Prints a table, writes JSON to bench/results/replication-<time>.json. Needs root (FUSE), syncthing.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

POLL_S = 0.002


def log(msg):
    print(f"replication: {msg}", file=sys.stderr, flush=True)


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


class Node:
    def __init__(self, binary, root, name, address):
        self.binary, self.name, self.address = binary, name, address
        self.home = root / f"home-{name}"
        self.mount = root / f"mnt-{name}"
        self.mount.mkdir(parents=True, exist_ok=True)
        self.pid = None

    def cli(self, *args, check=True, env=None):
        e = dict(os.environ, HYPERNET_PWHASH="interactive", **(env or {}))
        return subprocess.run([self.binary, "--home", str(self.home), *args], check=check, capture_output=True,
                              text=True, env=e, stdin=subprocess.DEVNULL)

    def start(self, *args, serve=False):
        cmd = ["serve"] if serve else ["mount", str(self.mount)]
        self.cli(*cmd, "--listen", self.address, *args)
        self.pid = int((self.home / "daemon.pid").read_text().strip())
        self.serving = serve

    def stop(self):
        if self.pid is None:
            return
        r = self.cli("stop", check=False)
        if r.returncode != 0:
            self.kill()
        self.pid = None

    def kill(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            subprocess.run(["fusermount3", "-uz", str(self.mount)], capture_output=True)
            self.pid = None

    def revision_count(self):
        db = sqlite3.connect(f"file:{self.home}/store/catalog.sqlite?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM revisions").fetchone()[0]
        finally:
            db.close()


def bytes_sent_by(pid):
    """TCP bytes sent so far on the live connections of process `pid` (ss's tcp_info)."""
    out = subprocess.run(["ss", "-tinp"], capture_output=True, text=True).stdout.splitlines()
    total = 0
    for head, info in zip(out, out[1:]):
        if f"pid={pid}," in head:
            total += sum(int(tok.split(":")[1]) for tok in info.split() if tok.startswith("bytes_sent:"))
    return total


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 20])
        view = view[n:]


def fsync_latencies(path, count):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(64 << 10))
        os.fsync(fd)
        out = []
        for i in range(count):
            os.pwrite(fd, os.urandom(4096), 4096 * (i % 16))
            t = time.perf_counter()
            os.fsync(fd)
            out.append(time.perf_counter() - t)
        return out
    finally:
        os.close(fd)


def write_file(path, data):
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def same_content(path, size, digest):
    try:
        if os.stat(path).st_size != size:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest() == digest
    except FileNotFoundError:
        return False


def propagate_small(a, b, f):
    """Seconds from a 4 KiB overwrite of `f` on A (write + fsync + close) until B's mount reads the new bytes."""
    offset = random.randrange(256) * 4096
    new = os.urandom(4096)
    t = time.perf_counter()
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, new, offset)
    os.fsync(fd)
    os.close(fd)

    def arrived():
        try:
            with open(b.mount / f.name, "rb") as g:
                return os.pread(g.fileno(), 4096, offset) == new
        except FileNotFoundError:
            return False
    elapsed = wait(arrived, 30, "the change on B") - t
    time.sleep(random.uniform(0.05, 0.3))
    return elapsed


def propagate_big(a, b, name, size):
    """Seconds from the first write of a new file of fresh random bytes on A until B's mount has it complete
    (checked byte-exact after the clock stops)."""
    big = os.urandom(size)
    digest = hashlib.sha256(big).hexdigest()
    t = time.perf_counter()
    write_file(a.mount / name, big)
    end = wait(lambda: os.path.exists(b.mount / name) and os.stat(b.mount / name).st_size == size, 600, f"{name} on B")
    assert same_content(b.mount / name, size, digest), f"{name} differs on B"
    return end - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fsyncs", type=int, default=200)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small-runs", type=int, default=10)
    ap.add_argument("--catch-up", type=int, default=1000)
    ap.add_argument("--no-syncthing", action="store_true")
    args = ap.parse_args()
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet"))
    root = Path(tempfile.mkdtemp(prefix="hn-bench-repl-"))
    base = 100 + os.getpid() % 100
    addr = lambda i: f"127.0.{base}.{i}:7400"
    a, b, c = Node(binary, root, "a", addr(1)), Node(binary, root, "b", addr(2)), Node(binary, root, "c", addr(3))
    nodes = [a, b, c]
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": os.uname().nodename, "cores": os.cpu_count()}
    size = args.big_mib << 20
    try:
        token = a.cli("init").stdout.strip()
        pw = root / "pw"
        pw.write_text("bench\n")
        a.cli("id", "export", str(root / "id.hnid"), "--passphrase-file", str(pw))
        b.cli("id", "import", str(root / "id.hnid"), "--passphrase-file", str(pw))
        c.cli("init")
        a.start("--peer", b.address, "--peer", c.address, "--fsync-timeout", "120")
        b.start("--peer", a.address, "--fsync-timeout", "120")
        c.start("--peer", a.address, "--pin", token, serve=True)
        time.sleep(1.5)

        log("quorum fsync latency")
        for q in (1, 2, 3):
            d = a.mount / f"q{q}"
            d.mkdir()
            os.setxattr(d, "user.hypernet.quorum", str(q).encode())
            lat = fsync_latencies(d / "f", args.fsyncs)
            results[f"fsync_q{q}_ms"] = {"p50": percentile(lat, 0.5) * 1e3, "p99": percentile(lat, 0.99) * 1e3}

        log("256 MiB to 2 replicas")
        q3 = a.mount / "q3"
        local = root / "local"
        local.mkdir()
        rates, local_rates, uploads = [], [], []
        for run in range(args.runs):
            # New bytes every time: chunks are deduplicated, so a repeated file would cost no transfer.
            big = os.urandom(size)
            local_rates.append(size / write_file(local / f"big{run}", big) / 1e6)
            sent = bytes_sent_by(a.pid)
            rates.append(size / write_file(q3 / f"big{run}", big) / 1e6)
            uploads.append((bytes_sent_by(a.pid) - sent) / size)
            (local / f"big{run}").unlink()
        results["replicate_2_MBps"] = statistics.median(rates)
        results["writer_upload_per_byte"] = statistics.median(uploads)
        results["writer_upload_runs"] = uploads
        results["local_cp_MBps"] = statistics.median(local_rates)

        log("catch-up of a fresh storage node")
        d = Node(binary, root, "d", addr(4))
        nodes.append(d)
        d.cli("init")
        want = a.revision_count()
        t = time.perf_counter()
        d.start("--peer", a.address, "--pin", token, serve=True)
        wait(lambda: d.revision_count() >= want, 600, "the fresh node's catch-up")
        elapsed = time.perf_counter() - t
        packs = sum(f.stat().st_size for f in (d.home / "store" / "packs").iterdir())
        results["fresh_catch_up_MBps"] = packs / elapsed / 1e6
        d.stop()

        log("offline catch-up of small revisions")
        b.stop()
        small = a.mount / "small"
        small.mkdir()
        for i in range(args.catch_up):
            (small / f"f{i}").write_bytes(os.urandom(100))
        a.cli("status")  # the directory's revision is made by the once-a-second pass
        time.sleep(1.2)
        t = time.perf_counter()
        b.start("--peer", a.address, "--fsync-timeout", "120")
        last = b.mount / "small" / f"f{args.catch_up - 1}"
        wait(lambda: len(os.listdir(b.mount / "small")) == args.catch_up if (b.mount / "small").exists() else False, 600,
             "B's catch-up")
        results["catch_up_1000_s"] = time.perf_counter() - t
        assert last.exists()

        # Propagation A -> B twice: with the storage node stopped (two nodes, as the two Syncthing instances it is
        # compared with), then with it running too (it replicates the same bytes on the same 2 cores meanwhile).
        f = a.mount / "prop.bin"
        f.write_bytes(os.urandom(1 << 20))
        wait(lambda: (b.mount / "prop.bin").exists() and (b.mount / "prop.bin").stat().st_size == 1 << 20, 30, "prop.bin on B")
        for label, storage_running in (("2 nodes", False), ("3 nodes", True)):
            if storage_running:
                c.start("--peer", a.address, "--pin", token, serve=True)
                wait(lambda: c.revision_count() >= a.revision_count(), 120, "the storage node's catch-up")
            else:
                c.stop()
            log(f"propagation A -> B, {label}")
            key = "" if storage_running else "_2nodes"
            results[f"propagate_4k{key}_runs"] = [propagate_small(a, b, f) for _ in range(args.small_runs)]
            results[f"propagate_big{key}_runs"] = [propagate_big(a, b, f"bigprop{run}{key}.bin", size) for run in range(args.runs)]
            log(f"  256 MiB runs: {', '.join(f'{t:.2f} s' for t in results[f'propagate_big{key}_runs'])}")
            results[f"propagate_4k{key}_s"] = statistics.median(results[f"propagate_4k{key}_runs"])
            results[f"propagate_big{key}_s"] = statistics.median(results[f"propagate_big{key}_runs"])
    finally:
        for n in nodes:
            n.stop()
    if not os.environ.get("HYPERNET_BENCH_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    else:
        log(f"kept {root}")

    if not args.no_syncthing:
        from syncthing_pair import SyncthingPair
        log("syncthing")
        with SyncthingPair() as pair:
            results["syncthing_version"] = pair.version
            results["syncthing_propagate_4k_s"] = statistics.median(pair.propagate_small_change() for _ in range(args.small_runs))
            results["syncthing_propagate_big_s"] = statistics.median(pair.propagate_file(size) for _ in range(args.runs))

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"replication-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    r = results
    print(f"quorum fsync of a 4 KiB change (p50 / p99 ms): q1 {r['fsync_q1_ms']['p50']:.2f} / {r['fsync_q1_ms']['p99']:.2f}, "
          f"q2 {r['fsync_q2_ms']['p50']:.2f} / {r['fsync_q2_ms']['p99']:.2f}, q3 {r['fsync_q3_ms']['p50']:.2f} / {r['fsync_q3_ms']['p99']:.2f}")
    print(f"{args.big_mib} MiB to 2 replicas: {r['replicate_2_MBps']:.0f} MB/s (local cp+fsync {r['local_cp_MBps']:.0f} MB/s, "
          f"ratio {r['replicate_2_MBps'] / r['local_cp_MBps']:.2f}), the writer uploading {r['writer_upload_per_byte']:.2f} bytes per byte; "
          f"fresh storage node catch-up {r['fresh_catch_up_MBps']:.0f} MB/s")
    print(f"offline node catching up {args.catch_up} small revisions: {r['catch_up_1000_s']:.2f} s")
    for label, key in (("2 nodes", "_2nodes"), ("3 nodes", "")):
        line = (f"propagation A->B, {label}: 4 KiB change {r[f'propagate_4k{key}_s'] * 1e3:.0f} ms, "
                f"{args.big_mib} MiB file {r[f'propagate_big{key}_s']:.2f} s")
        if "syncthing_propagate_4k_s" in r:
            line += (f" (Syncthing's {r['syncthing_propagate_4k_s'] / r[f'propagate_4k{key}_s']:.1f}x and "
                     f"{r['syncthing_propagate_big_s'] / r[f'propagate_big{key}_s']:.2f}x the time)")
        print(line)
    if "syncthing_propagate_4k_s" in r:
        print(f"Syncthing {r['syncthing_version']}, two instances: 4 KiB change {r['syncthing_propagate_4k_s'] * 1e3:.0f} ms, "
              f"{args.big_mib} MiB file {r['syncthing_propagate_big_s']:.2f} s")


if __name__ == "__main__":
    main()
