#!/usr/bin/env python3
"""Benchmark of issue 21: fsync latency under each network fault, held steady, against its bound.

Three nodes of one identity in network namespaces behind a bridge, quorum 2, built by the fault harness
(tests/faults/harness.py: its cluster, relays and fault primitives). The writer is node a. For each fault held
steady for the whole measurement, in this order:

  none       a clean cluster
  loss       nft drops 5 % of the packets every node receives
  rate       tbf limits a's link to 20 mbit/s both ways
  delay      every connection of a's passes a relay holding each chunk 20 ms ± 5 ms each way
  partition  replica c cut off from a and b
  pause      replica c SIGSTOPped

it measures the fsync latency (p50, p99) of a 4 KiB and of a 1 MiB pwrite of fresh bytes through a's mount, and
the terms of its bound max(local fsync, RTT to the (quorum - 1)-th peer + size/bandwidth + remote fsync), each
measured in the same run under the same fault:

  * local and remote fsync: native `fdatasync` of the same pwrite on the same disk (every node's store is on it);
  * RTT: a 1-byte request and reply over TCP from a's namespace to a sink in b's, through a relay with the same
    delay as the daemons' (so every fault that touches a-b touches it the same way);
  * size/bandwidth: the same probe sending `size` bytes, less the RTT; under `rate`, at least size / 20 mbit/s.

With quorum 2 the (quorum - 1)-th peer is the nearest one, b: `partition` and `pause` hit c only, so their bound
is the clean one. Figures are medians over the runs of each run's p50 and p99.

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/fsync_faults.py [--runs 3] [--small 100] [--large 20]
       [--quick]
Prints a table, writes JSON to bench/results/fsync_faults-<time>.json. Needs root (namespaces, FUSE, nft, tc).
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "faults"))
import harness as harness_module  # noqa: E402

FAULTS = ("none", "loss", "rate", "delay", "partition", "pause")
SIZES = (4096, 1 << 20)
LOSS_PERCENT = 5
RATE = "20mbit"
DELAY_S, JITTER_S = 0.020, 0.005
SINK_PORT = harness_module.RELAY_PORT + 1  # in b's namespace: the probe's far end
PROBE_RELAY_PORT = harness_module.RELAY_PORT + 2  # in b's namespace: the relay the probe passes


def log(msg):
    print(f"fsync_faults: {msg}", file=sys.stderr, flush=True)


def percentile(values, p):
    return harness_module.percentile(values, p)


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def fsync_latencies(path, size, count, sync):
    """Seconds of `sync(fd)` after each of `count` pwrites of `size` fresh bytes (chunks are deduplicated, so a
    repeated payload would cost no transfer) into `path`, a file of 64 KiB or one block."""
    blocks = max(1, (64 << 10) // size)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        pwrite_all(fd, os.urandom(blocks * size), 0)
        sync(fd)
        out = []
        for i in range(count):
            pwrite_all(fd, random.randbytes(size), size * (i % blocks))
            start = time.perf_counter()
            sync(fd)
            out.append(time.perf_counter() - start)
        return out
    finally:
        os.close(fd)


class Sink:
    """A TCP server in a host's namespace: each request is a 4-byte length and that many bytes; the reply is one
    byte once all arrived. Timing a request from another host gives RTT + size/bandwidth over that path."""

    def __init__(self, host, port):
        self.listener = host.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host.ip, port))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self.accept, name="sink", daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), name="sink-conn", daemon=True).start()

    @staticmethod
    def serve(conn):
        with conn:
            try:
                while True:
                    head = recv_exactly(conn, 4)
                    left = struct.unpack("!I", head)[0]
                    while left:
                        left -= len(recv_exactly(conn, min(left, 1 << 16), partial=True))
                    conn.sendall(b"k")
            except (OSError, EOFError):
                return

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def recv_exactly(conn, n, partial=False):
    """`n` bytes from `conn` (with `partial`, whatever the first recv gives, at most `n`); EOFError at EOF."""
    out = b""
    while len(out) < n:
        data = conn.recv(n - len(out))
        if not data:
            raise EOFError
        out += data
        if partial:
            break
    return out


class Probe:
    """A connection from `source`'s namespace to the sink, timing requests of a given size."""

    def __init__(self, source, address):
        self.sock = source.socket()
        self.sock.settimeout(60)
        self.sock.connect(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def time(self, size):
        payload = struct.pack("!I", size) + random.randbytes(size)
        start = time.perf_counter()
        self.sock.sendall(payload)
        recv_exactly(self.sock, 1)
        return time.perf_counter() - start

    def close(self):
        self.sock.close()


class Bench:
    def __init__(self, binary, workdir, runs, counts, probes):
        self.harness = harness_module.Harness(binary, workdir, seed=0, nodes=3, faults=("delay",))
        self.workdir = workdir
        self.runs = runs
        self.counts = counts  # size -> fsyncs per fault and run
        self.probes = probes
        self.sink = self.probe_relay = None
        self.paused = None

    def setup(self):
        log("starting 3 nodes in network namespaces (quorum 2)")
        self.harness.setup()
        self.a, self.b, self.c = self.harness.cluster.nodes
        self.sink = Sink(self.b.host, SINK_PORT)
        lab = self.harness.lab
        self.probe_relay = lab.delay_relay((self.b.host.ip, PROBE_RELAY_PORT), (self.b.host.ip, SINK_PORT), 0,
                                           host=self.b.host.name)
        self.directory = Path(self.a.p("fsync-bench"))
        self.directory.mkdir()
        self.native = self.workdir / "native"
        self.native.mkdir()

    @contextlib.contextmanager
    def fault(self, kind):
        h, lab = self.harness, self.harness.lab
        nodes = h.cluster.nodes
        if kind == "loss":
            for n in nodes:
                h.set_loss(n, LOSS_PERCENT)
        elif kind == "rate":
            lab.limit_rate(self.a.host, RATE)
        elif kind == "delay":
            h.set_delay(self.a, DELAY_S, JITTER_S)
            self.probe_relay.set_delay(DELAY_S, JITTER_S)
        elif kind == "partition":
            lab.isolate(self.c.host)
        elif kind == "pause":
            os.kill(self.c.pid, signal.SIGSTOP)
            self.paused = self.c.pid
        try:
            yield
        finally:
            if kind == "loss":
                for n in nodes:
                    h.set_loss(n, 0)
            elif kind == "rate":
                lab.clear_rate(self.a.host)
            elif kind == "delay":
                h.set_delay(self.a, 0, 0)
                self.probe_relay.set_delay(0, 0)
            elif kind == "partition":
                lab.heal()
            elif kind == "pause":
                self.resume()

    def resume(self):
        if self.paused is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.paused, signal.SIGCONT)
            self.paused = None

    def caught_up(self, timeout=120):
        """Waits until a's replication backlog is empty, so that one fault's queue does not slow the next."""
        deadline = time.monotonic() + timeout
        while self.a.backlog()[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.a.backlog()[0]

    def measure(self, kind, run):
        """One run of one fault: probes, native fdatasync and fsyncs through the mount, per size."""
        out = {}
        with self.fault(kind):
            probe = Probe(self.a.host, self.probe_relay.address)
            try:
                rtts = [probe.time(0) for _ in range(self.probes)]
                sends = {size: [probe.time(size) for _ in range(max(2, self.probes // 4))] for size in SIZES}
            finally:
                probe.close()
            for size in SIZES:
                count = self.counts[size]
                native = fsync_latencies(self.native / f"{kind}-{run}-{size}", size, count, os.fdatasync)
                mount = fsync_latencies(self.directory / f"{kind}-{run}-{size}", size, count, os.fsync)
                out[size] = {"fsync": mount, "native": native, "rtt": rtts, "send": sends[size]}
        for size in SIZES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.native / f"{kind}-{run}-{size}")
        if not self.caught_up():
            log(f"{kind}: a's backlog still not empty 120 s after the fault")
        return out

    def run(self):
        raw = {kind: {size: [] for size in SIZES} for kind in FAULTS}
        for run in range(self.runs):
            for kind in FAULTS:
                log(f"run {run + 1}/{self.runs}: {kind}")
                for size, samples in self.measure(kind, run).items():
                    raw[kind][size].append(samples)
        return raw

    def close(self):
        self.resume()
        if self.sink is not None:
            self.sink.close()
        self.harness.teardown()


def summarise(raw):
    """Per fault and size: the median over runs of each run's p50 and p99 of every series, the terms of the
    bound and the bound itself (milliseconds)."""
    rate_bits = harness_module.netns.parse_rate(RATE)
    table = {}
    for kind, by_size in raw.items():
        for size, runs in by_size.items():
            row = {}
            for series in ("fsync", "native", "rtt", "send"):
                for p in (50, 99):
                    row[f"{series}_p{p}_ms"] = statistics.median(percentile(r[series], p) for r in runs) * 1e3
            transfer = max(0.0, row["send_p50_ms"] - row["rtt_p50_ms"])
            if kind == "rate":
                transfer = max(transfer, size * 8 / rate_bits * 1e3)
            row["transfer_ms"] = transfer
            for p in (50, 99):
                native = row[f"native_p{p}_ms"]
                row[f"bound_p{p}_ms"] = max(native, row[f"rtt_p{p}_ms"] + transfer + native)
            row["fsyncs"] = sum(len(r["fsync"]) for r in runs)
            table[f"{kind}/{size}"] = row
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of every fault; figures are medians (default 3)")
    ap.add_argument("--small", type=int, default=100, help="4 KiB fsyncs per fault and run (default 100)")
    ap.add_argument("--large", type=int, default=20, help="1 MiB fsyncs per fault and run (default 20)")
    ap.add_argument("--probes", type=int, default=40, help="RTT probes per fault and run (default 40)")
    ap.add_argument("--quick", action="store_true", help="one run of a few fsyncs: checks the benchmark works")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.small, args.large, args.probes = 1, 8, 2, 8
    binary = os.path.abspath(os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet")))
    if os.geteuid() != 0:
        sys.exit("fsync_faults: must run as root (network namespaces, FUSE, nft, tc)")
    workdir = Path(tempfile.mkdtemp(prefix="hn-bench-fsync-faults-"))
    workdir.chmod(0o755)
    bench = Bench(binary, workdir, args.runs, {4096: args.small, 1 << 20: args.large}, args.probes)
    try:
        bench.setup()
        raw = bench.run()
    finally:
        bench.close()
    table = summarise(raw)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": os.uname().nodename, "cores": os.cpu_count(),
               "binary": binary, "runs": args.runs, "quorum": harness_module.QUORUM, "loss_percent": LOSS_PERCENT,
               "rate": RATE, "delay_s": DELAY_S, "jitter_s": JITTER_S, "quick": args.quick, "figures": table}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"fsync_faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"fsync through the mount, 3 nodes, quorum 2, medians of {args.runs} run(s), ms "
          f"(bound = max(native, RTT + size/bandwidth + native))")
    print(f"{'fault':<10} {'size':>5} {'p50':>8} {'p99':>8} {'bound50':>8} {'bound99':>8} {'p99/b99':>7} "
          f"{'native50':>8} {'native99':>8} {'rtt50':>7} {'rtt99':>7} {'xfer':>7}")
    for key, r in table.items():
        kind, size = key.split("/")
        label = "4K" if int(size) == 4096 else "1M"
        print(f"{kind:<10} {label:>5} {r['fsync_p50_ms']:8.2f} {r['fsync_p99_ms']:8.2f} {r['bound_p50_ms']:8.2f} "
              f"{r['bound_p99_ms']:8.2f} {r['fsync_p99_ms'] / r['bound_p99_ms']:7.1f} {r['native_p50_ms']:8.2f} "
              f"{r['native_p99_ms']:8.2f} {r['rtt_p50_ms']:7.2f} {r['rtt_p99_ms']:7.2f} {r['transfer_ms']:7.2f}")
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
