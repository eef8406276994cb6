#!/usr/bin/env python3
"""Benchmark of issue 17 (popular content scales itself), run by bench/swarm.sh. In one invocation:

  * swarm: one seeder and N readers (N = 2, 4, 6, 8), each in its own network namespace on one bridge
    (tests/integration/netns.py), every node's upload capped at 50 Mbit/s with `tbf` (no download cap). The
    seeder holds a 128 MiB public file; the readers start reading it at the same moment. Figures: the
    completion time (the slowest reader), against the lower bound D = max(F/u_s, F/d_min, N·F/(u_s + Σu_i))
    computed in the run from the caps (d_min is unbounded: no download cap), against a real BitTorrent swarm on
    the same namespaces and caps (aria2c, opentracker, mktorrent; DHT and LPD off, PEX on, every peer seeding
    until all finished), and against the same readers fetching from the seeder alone (nft partitions between
    the readers). Also the copies the seeder sent (bytes out of its interface ÷ F) and each daemon's peak RSS.
    Hypernet: the seeder mounts and writes the file in a folder granted `read` to `*`; each reader has the
    seeder as a contact (its tree held on demand) and reads `/@seed/pub/big.bin` with sha256sum, checked.
  * first byte and streaming, on loopback: a writer and a storage node pinning its tree in full hold a public
    1 GiB file and a 1 MiB one; a fresh reader (a contact, on demand) times open + the first 4 KiB read of
    each (cold), then reads the 1 GiB file to its end: cold streaming MB/s from the two peers.

Every case runs `--runs` times with fresh homes (figures are medians). Table on stdout, JSON in
bench/results/swarm-<time>.json. `--quick`: N = 2, an 8 MiB swarm file, a 64 MiB "large" file, one run: for
checking the benchmark itself, not for the record. Needs root (FUSE, namespaces, tc, nft), aria2c, opentracker,
mktorrent (mount-helpers/deps.sh, HYPERNET_BENCH_PACKAGES). Binary: $HYPERNET_BIN or .build/release/hypernet.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
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
from cluster import Cluster, ClusterNode  # noqa: E402

MIB = 1 << 20
UPLOAD = "50mbit"
TRACKER_PORT = 6969


def log(msg):
    print(f"swarm: {msg}", file=sys.stderr, flush=True)


def wait(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def generated(size, seed):
    """`size` pseudo-random bytes, made 8 MiB at a time (incompressible, no chunk repeats)."""
    rng = random.Random(seed)
    left = size
    while left:
        piece = min(left, 8 * MIB)
        yield rng.randbytes(piece)
        left -= piece


def write_generated(path, size, seed):
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for piece in generated(size, seed):
            f.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak RSS (KiB) of each pid, sampled every 0.2 s by a thread while the block runs."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def tx_bytes(host):
    """Bytes sent so far on `host`'s lab interface (frames: headers included)."""
    return int(host.run(["cat", f"/sys/class/net/{host.ifname}/statistics/tx_bytes"]).stdout)


def lower_bound(size, readers, upload_bps):
    """D = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)) in seconds, every upload `upload_bps` bit/s, d_min unbounded."""
    u = upload_bps / 8
    return max(size / u, 0.0, readers * size / (u + readers * u))


# --- one swarm run ---------------------------------------------------------------------------------------------

class Run:
    """A lab of one seeder host, `readers` reader hosts and a tracker host; uploads capped; cleaned up at exit."""

    def __init__(self, workdir, readers, label):
        self.root = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=workdir))
        self.root.chmod(0o755)
        # Host names h0...: the default a, b, c... would name a bridge port "vf", which `ip link` refuses.
        self.lab = netns.Lab("hnswarm", hosts=[f"h{i}" for i in range(readers + 1)] + ["tr"])
        self.lab.__enter__()
        self.hosts = self.lab.hosts[: readers + 1]
        for h in self.hosts:
            self.lab.limit_rate(h.name, UPLOAD, direction="egress")
        self.procs = []

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.lab.close()
        shutil.rmtree(self.root, ignore_errors=True)


def hypernet_swarm(binary, workdir, readers, size, alone):
    """Completion of `readers` reading the seeder's file at once: Hypernet, the readers partitioned from each
    other when `alone`."""
    run = Run(workdir, readers, "alone" if alone else "hypernet")

    def make_node(start=False, node_class=ClusterNode, label=None, **extra):
        directory = run.root / label
        directory.mkdir()
        return node_class(directory, binary, **extra)

    cl = Cluster(make_node, run.root, lab=run.lab)
    try:
        seed = cl.add("seed")
        nodes = [cl.add(f"r{i}") for i in range(readers)]
        for n in nodes:
            n.run("contact", "add", "seed", seed.token)
            # A read waits for its chunks as long as the slowest swarm needs (the default 10 s is for offline).
            n.arguments += ["--fetch-timeout", "120"]
        if alone:
            for i, a in enumerate(nodes):
                for b in nodes[i + 1:]:
                    run.lab.partition([a.host.name], [b.host.name])
        cl.start(connected=False)
        wait(lambda: all(seed.listen in n.connected_addresses() for n in nodes), 60, "the readers to connect")
        os.mkdir(seed.p("pub"))
        seed.run("grant", seed.p("pub"), "*", "read")
        expected = write_generated(seed.p("pub", "big.bin"), size, seed=17)
        paths = [n.p("@seed", "pub", "big.bin") for n in nodes]
        wait(lambda: all(os.path.exists(p) and os.stat(p).st_size == size for p in paths), 120,
             "every reader to list the file")
        seeder_host = seed.host
        before = tx_bytes(seeder_host)
        pids = {n.name: n.pid for n in cl.nodes}
        with RssSampler(pids) as rss:
            start = time.monotonic()
            procs = [subprocess.Popen(["sha256sum", p], stdout=subprocess.PIPE, text=True) for p in paths]
            done = []
            for p in procs:
                out, _ = p.communicate()
                done.append(time.monotonic() - start)
                if p.returncode != 0 or out.split()[0] != expected:
                    raise RuntimeError(f"a reader read other bytes ({p.returncode}): {out.strip()}")
            # communicate() returns in order: the slowest is the latest return.
        sent = tx_bytes(seeder_host) - before
        served = seed.status_json()["cache"].get("servedBytes")
        return {"completion_s": max(done), "reader_s": sorted(done), "seeder_copies": sent / size,
                "seeder_served_bytes": served, "rss_peak_kib": rss.peak}
    finally:
        cl.close()
        run.close()


# --- aria2 ----------------------------------------------------------------------------------------------------

def bdecode(data, i=0):
    """(value, end) of the bencoded value at `data[i:]`; dictionaries keep each value's (start, end) span too."""
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            start = i
            value, i = bdecode(data, i)
            items.append((value, (start, i)))
        if c == b"l":
            return [v for v, _ in items], i + 1
        return {items[k][0]: (items[k + 1][0], items[k + 1][1]) for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1:colon + 1 + length], colon + 1 + length


def info_hash(torrent):
    data = Path(torrent).read_bytes()
    top, _ = bdecode(data)
    start, end = top[b"info"][1]
    return hashlib.sha1(data[start:end]).hexdigest()


ARIA2_COMMON = ["--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=true",
                "--seed-ratio=0.0", "--file-allocation=none", "--summary-interval=0", "--console-log-level=warn",
                "--bt-tracker-interval=5", "--quiet=true"]


def aria2_swarm(workdir, readers, size):
    """The same swarm with aria2c: opentracker on its own host, the seeder and the readers each in theirs."""
    run = Run(workdir, readers, "aria2")
    try:
        seeder, tracker = run.hosts[0], run.lab.host("tr")
        data = run.root / "seed"
        data.mkdir()
        expected = write_generated(data / "big.bin", size, seed=17)
        torrent = run.root / "big.torrent"
        announce = f"http://{tracker.ip}:{TRACKER_PORT}/announce"
        subprocess.run(["mktorrent", "-a", announce, "-o", str(torrent), str(data / "big.bin")], check=True,
                       capture_output=True)
        # Debian's opentracker tracks only whitelisted torrents; it chroots to -d, where the relative path holds.
        (run.root / "whitelist.txt").write_text(info_hash(torrent) + "\n")
        run.procs.append(tracker.popen(["opentracker", "-i", tracker.ip, "-p", str(TRACKER_PORT), "-P",
                                        str(TRACKER_PORT), "-w", "whitelist.txt", "-d", str(run.root)],
                                       cwd=run.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait(lambda: tracker.run(["ss", "-ltn"]).stdout.count(f":{TRACKER_PORT}") > 0, 10, "opentracker")
        run.procs.append(seeder.popen(["aria2c", *ARIA2_COMMON, "--check-integrity=true", f"--dir={data}",
                                       str(torrent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2)  # the seeder has announced
        marks = run.root / "done"
        marks.mkdir()
        hook = run.root / "done.sh"
        hook.write_text(f"#!/bin/sh\ndate +%s.%N > {marks}/$1\n")
        hook.chmod(0o755)
        before = tx_bytes(seeder)
        start = time.time()
        dirs = []
        for i, host in enumerate(run.hosts[1:]):
            d = run.root / f"r{i}"
            d.mkdir()
            dirs.append(d)
            run.procs.append(host.popen(["aria2c", *ARIA2_COMMON, f"--dir={d}", f"--on-bt-download-complete={hook}",
                                         str(torrent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        pids = {f"r{i}": p.pid for i, p in enumerate(run.procs[2:])}
        pids["seed"] = run.procs[1].pid
        with RssSampler(pids) as rss:
            wait(lambda: len(list(marks.iterdir())) == readers, 1800, "every aria2 reader", interval=0.2)
        done = sorted(float(m.read_text()) - start for m in marks.iterdir())
        sent = tx_bytes(seeder) - before
        for d in dirs:
            if hashlib.sha256((d / "big.bin").read_bytes()).hexdigest() != expected:
                raise RuntimeError(f"aria2 in {d} wrote other bytes")
        return {"completion_s": done[-1], "reader_s": done, "seeder_copies": sent / size, "rss_peak_kib": rss.peak}
    finally:
        run.close()


# --- first byte and streaming (loopback) --------------------------------------------------------------------------

def first_byte(path):
    start = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        f.read(4096)
    return time.monotonic() - start


def stream(path, size):
    start = time.monotonic()
    got = 0
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(MIB):
            got += len(piece)
    if got != size:
        raise RuntimeError(f"streamed {got} bytes of {size}")
    return size / (time.monotonic() - start) / 1e6


def first_byte_and_streaming(binary, workdir, large, runs):
    root = Path(tempfile.mkdtemp(prefix="loopback-", dir=workdir))
    root.chmod(0o755)

    def make_node(start=False, node_class=ClusterNode, label=None, **extra):
        directory = root / label
        directory.mkdir()
        return node_class(directory, binary, **extra)

    cl = Cluster(make_node, root)
    try:
        writer = cl.add("w")
        holder = cl.add("s", serve=True, pins=[writer])
        cl.start([writer, holder])
        os.mkdir(writer.p("pub"))
        writer.run("grant", writer.p("pub"), "*", "read")
        write_generated(writer.p("pub", "small.bin"), MIB, seed=1)
        write_generated(writer.p("pub", "large.bin"), large, seed=2)
        def held():
            absent = holder.query("SELECT COUNT(*) FROM absent")[0][0]
            return absent == 0 and holder.query("SELECT COALESCE(SUM(length), 0) FROM chunks")[0][0] >= large

        wait(held, 600, "the storage node to hold the large file")
        samples = []
        for i in range(runs):
            reader = cl.add(f"r{i}")
            reader.peers = [writer.listen, holder.listen]
            reader.run("contact", "add", "w", writer.token)
            reader.start()
            try:
                small, big = reader.p("@w", "pub", "small.bin"), reader.p("@w", "pub", "large.bin")
                wait(lambda: os.path.exists(big) and os.stat(big).st_size == large, 60, "the reader to list the files")
                wait(lambda: {writer.listen, holder.listen} <= reader.connected_addresses(), 30, "both peers")
                samples.append({"ttfb_small_ms": first_byte(small) * 1e3, "ttfb_large_ms": first_byte(big) * 1e3,
                                "stream_mb_s": stream(big, large), "rss_peak_kib": rss_kib(reader.pid)})
            finally:
                reader.stop()
                shutil.rmtree(reader.home, ignore_errors=True)
        return samples
    finally:
        cl.close()
        shutil.rmtree(root, ignore_errors=True)


# --- report --------------------------------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(result):
    lines = [f"swarm: F = {result['size'] // MIB} MiB, upload {UPLOAD} per node, no download cap; medians of "
             f"{result['runs']} run(s); x = ÷ the bound D",
             f"{'N':>3} {'D s':>7} {'hypernet s':>11} {'x':>5} {'aria2 s':>8} {'x':>5} {'alone s':>8} {'x':>5}  "
             f"{'seeder copies h/a2/alone':>24}  {'peak RSS MiB':>12}"]
    for n, row in result["swarm"].items():
        d = row["bound_s"]
        med = {k: median([r["completion_s"] for r in row[k]]) for k in ("hypernet", "aria2", "alone")}
        copies = {k: median([r["seeder_copies"] for r in row[k]]) for k in ("hypernet", "aria2", "alone")}
        rss = max((max(r["rss_peak_kib"].values()) for r in row["hypernet"] + row["alone"]), default=0) / 1024

        def cell(v, width):
            return f"{v:>{width}.1f} {v / d:>5.2f}" if v is not None else f"{'-':>{width}} {'-':>5}"

        lines.append(f"{n:>3} {d:>7.1f} {cell(med['hypernet'], 11)} {cell(med['aria2'], 8)} {cell(med['alone'], 8)}  "
                     f"{'/'.join('-' if c is None else f'{c:.2f}' for c in copies.values()):>24}  {rss:>12.0f}")
    lb = result["loopback"]
    lines.append(f"loopback, {result['large'] // MIB} MiB vs 1 MiB, from 2 peers, medians of {len(lb)}: first byte "
                 f"{median([s['ttfb_large_ms'] for s in lb]):.1f} ms vs {median([s['ttfb_small_ms'] for s in lb]):.1f}"
                 f" ms; cold streaming {median([s['stream_mb_s'] for s in lb]):.0f} MB/s; reader RSS "
                 f"{max(s['rss_peak_kib'] for s in lb) / 1024:.0f} MiB")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--readers", default="2,4,6,8", help="values of N")
    ap.add_argument("--size-mib", type=int, default=128, help="the swarm file")
    ap.add_argument("--large-mib", type=int, default=1024, help="the large file of the first-byte case")
    ap.add_argument("--no-aria2", action="store_true")
    ap.add_argument("--quick", action="store_true", help="N=2, 8 MiB, a 64 MiB large file, one run")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.readers, args.size_mib, args.large_mib = 1, "2", 8, 64
    binary = os.environ.get("HYPERNET_BIN", str(REPO / ".build" / "release" / "hypernet"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"swarm: no hypernet binary at {binary} (set HYPERNET_BIN)")
    if os.geteuid() != 0:
        sys.exit("swarm: needs root (FUSE, network namespaces, tc, nft)")
    tools = ["sha256sum"] + ([] if args.no_aria2 else ["aria2c", "opentracker", "mktorrent"])
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        sys.exit(f"swarm: missing {', '.join(missing)}: bash -c '. mount-helpers/deps.sh && install_packages "
                 "$HYPERNET_BENCH_PACKAGES'")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    os.environ["HYPERNET_BIN"] = binary
    size, large = args.size_mib * MIB, args.large_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="hn-bench-swarm-"))
    workdir.chmod(0o755)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {"date": started, "binary": binary, "size": size, "large": large, "runs": args.runs,
              "upload": UPLOAD, "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release}, "swarm": {}}
    try:
        for n in [int(x) for x in args.readers.split(",")]:
            row = {"bound_s": lower_bound(size, n, netns.parse_rate(UPLOAD)), "hypernet": [], "aria2": [],
                   "alone": []}
            result["swarm"][n] = row
            for r in range(args.runs):
                log(f"N={n} run {r + 1}: hypernet")
                row["hypernet"].append(hypernet_swarm(binary, workdir, n, size, alone=False))
                log(f"N={n} run {r + 1}: readers from the seeder alone")
                row["alone"].append(hypernet_swarm(binary, workdir, n, size, alone=True))
                if not args.no_aria2:
                    log(f"N={n} run {r + 1}: aria2")
                    row["aria2"].append(aria2_swarm(workdir, n, size))
        log(f"first byte and streaming on loopback ({args.large_mib} MiB)")
        result["loopback"] = first_byte_and_streaming(binary, workdir, large, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"swarm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(report(result))
    log(f"JSON: {path}")


if __name__ == "__main__":
    main()
