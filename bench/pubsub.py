#!/usr/bin/env python3
"""Benchmark of issue 5 (push latency): how long after a writer's `close` (or its `fsync` return) a subscriber
node reports the revision as an event (`hypernet watch`) and shows the new content in its mount; the same between
two Syncthing instances on loopback in the same run, as the anchor.

Workload (the same for every topology and for Syncthing): an open-loop schedule of RATE writes/s for DURATION s.
Write i is due at t0 + i/RATE; it overwrites the first SIZE bytes of file i mod FILES (files made beforehand,
so these are updates; `pwrite` at offset 0, no truncation) with a header carrying the sequence number i. Even
writes are write + close, odd writes are write + fsync + close (the two variants interleaved in one schedule,
so the offered rate is RATE revisions/s in total and each variant gets DURATION*RATE/2 samples). Latencies are
taken from the write's *scheduled* time (the coordinated-omission-free figure: a write that starts late because
the previous fsync blocked is charged for it) and from the actual return of `close` (plain writes) or of `fsync`
(fsync writes).

  * event: the moment the line for that revision arrives on the stdout of `hypernet --home H watch MOUNT` on the
    subscriber (read by a thread, timestamped on arrival). Revisions are matched by id: the writer reads
    `user.hypernet.revision` right after each write (outside the timed part). A watch also runs on every other
    node (the writer included: its own event marks the local commit) so per-node figures are in the JSON.
  * readable: the first moment `open`/`read`/`close` of the file on the subscriber's mount returns a sequence
    number >= i (each file with an outstanding write is polled every POLL_S; an event on the subscriber triggers
    an immediate check).

Topologies, each in a netns.Lab (one network namespace per node, all nodes mounting one identity, imported as in
tests/integration/cluster.py), enforced with nft partitions between every pair that must not talk, checked with
`hypernet status` before measuring: `pair` (2 nodes: chain and star of 2 are the same), `chainN` (writer at one
end, subscriber at the other) and `starN` (writer at the centre, subscriber = the last leaf; every leaf is
watched). Syncthing (bench/syncthing_pair.py): writer = instance a's folder, event = b's `ItemFinished` from
`/rest/events` (b has pulled the item and put it in place), readable = b's file holds the sequence number.

Percentiles are exact (nearest rank on the sorted samples): p99.9 of 600 samples is the worst one, of 1200 the
second-worst. A write whose event or content never arrives within `--drain` s after the schedule is counted as
lost (reported) and left out of the percentiles.

Usage: sudo python3 bench/pubsub.py [--runs 3] [--duration 60] [--other-duration 20] [--other-runs 1]
       [--topologies pair,chain4,star4,chain8,star8] [--no-syncthing]
`--runs` repeats the 4-node topologies and Syncthing (medians of the runs are printed); the others run
`--other-runs` times for `--other-duration` s. Binary: $HYPERNET_BIN or .build/release/hypernet.
Prints a table (ratios against Syncthing's p50 of the same run), writes bench/results/pubsub-<time>.json.
"""

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import netns  # noqa: E402
from cluster import Cluster, ClusterNode  # noqa: E402

POLL_S = 0.002
HEADER = 16  # b"seq 000000000012\n" is 17 bytes; the sequence number is bytes 4..16


def log(msg):
    print(f"pubsub: {msg}", file=sys.stderr, flush=True)


def pct(values, p):
    """Exact nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(values_s):
    ms = [v * 1e3 for v in values_s]
    return {"n": len(ms), "p50": pct(ms, 50), "p99": pct(ms, 99), "p99.9": pct(ms, 99.9),
            "max": max(ms) if ms else None, "mean": statistics.fmean(ms) if ms else None}


def content(seq, size):
    head = b"seq %012d\n" % seq
    return head + bytes((seq + k) % 251 for k in range(size - len(head)))


def read_seq(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return -1
    try:
        head = os.pread(fd, 17, 0)
    except OSError:
        return -1
    finally:
        os.close(fd)
    try:
        return int(head[4:16])
    except ValueError:
        return -1


# --- the subscriber side ------------------------------------------------------------------------------------

class Lines:
    """A process printing lines, read by a thread: [(perf_counter on arrival, line)]. `on_line` is called in the
    reader thread. Killed by pid at close."""

    def __init__(self, args, on_line=None):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines = []
        self.on_line = on_line
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            t = time.perf_counter()
            self.lines.append((t, raw.decode(errors="replace").rstrip("\n")))
            if self.on_line is not None:
                self.on_line(t)

    def close(self):
        if self.proc.poll() is None:
            with_suppress(lambda: os.kill(self.proc.pid, signal.SIGKILL))
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        return self.proc.stderr.read().decode(errors="replace")


def with_suppress(fn):
    try:
        fn()
    except (ProcessLookupError, OSError):
        pass


class Poller:
    """Polls the subscriber's copies of the files that have an outstanding write; records, per sequence number,
    the first time the file showed that number or a later one."""

    def __init__(self, paths):
        self.paths = paths  # file index -> path on the subscriber
        self.pending = {i: [] for i in range(len(paths))}  # file index -> seqs written, not yet seen
        self.seen = {}  # seq -> perf_counter
        self.lock = threading.Lock()
        self.kick = threading.Event()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def expect(self, file_index, seq):
        with self.lock:
            self.pending[file_index].append(seq)

    def _run(self):
        while not self.stop:
            with self.lock:
                todo = [i for i, p in self.pending.items() if p]
            for i in todo:
                value = read_seq(self.paths[i])
                t = time.perf_counter()
                with self.lock:
                    keep = []
                    for s in self.pending[i]:
                        if value >= s:
                            self.seen[s] = t
                        else:
                            keep.append(s)
                    self.pending[i] = keep
            self.kick.wait(POLL_S)
            self.kick.clear()

    def close(self):
        self.stop = True
        self.kick.set()
        self.thread.join(timeout=10)


# --- the writer ---------------------------------------------------------------------------------------------

def run_schedule(paths, poller, rate, duration, size, revision_of=None):
    """The open-loop writer. Returns [{seq, file, fsync, sched, start, fsync_ret, close_ret, rev}]."""
    count = int(round(rate * duration))
    records = []
    t0 = time.perf_counter() + 0.2
    for i in range(count):
        sched = t0 + i / rate
        delay = sched - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        f = i % len(paths)
        use_fsync = i % 2 == 1
        data = content(i, size)
        poller.expect(f, i)
        start = time.perf_counter()
        fd = os.open(paths[f], os.O_WRONLY)
        fsync_ret = None
        try:
            os.pwrite(fd, data, 0)
            if use_fsync:
                os.fsync(fd)
                fsync_ret = time.perf_counter()
        finally:
            os.close(fd)
        close_ret = time.perf_counter()
        rec = {"seq": i, "file": f, "fsync": use_fsync, "sched": sched, "start": start, "fsync_ret": fsync_ret,
               "close_ret": close_ret, "rev": None}
        if revision_of is not None:
            try:
                rec["rev"] = revision_of(paths[f])
            except OSError as e:
                rec["rev_error"] = str(e)
        records.append(rec)
    return records


def latencies(records, arrival):
    """`arrival`: seq -> perf_counter (or None). Figures for plain and fsync writes, from the schedule and from
    the close / fsync return; plus how many never arrived."""
    out = {}
    for variant, want in (("close", False), ("fsync", True)):
        rs = [r for r in records if r["fsync"] == want]
        got = [(r, arrival.get(r["seq"])) for r in rs]
        ok = [(r, t) for r, t in got if t is not None]
        ref = "fsync_ret" if want else "close_ret"
        out[variant] = {
            "from_return": summary([t - r[ref] for r, t in ok]),
            "from_schedule": summary([t - r["sched"] for r, t in ok]),
            "lost": len(rs) - len(ok),
        }
    return out


def writer_costs(records):
    plain = [r for r in records if not r["fsync"]]
    synced = [r for r in records if r["fsync"]]
    return {"close_write_ms": summary([r["close_ret"] - r["start"] for r in plain]),
            "fsync_call_ms": summary([r["fsync_ret"] - r["start"] for r in synced]),
            "start_lag_ms": summary([r["start"] - r["sched"] for r in records])}


# --- Hypernet topologies -------------------------------------------------------------------------------------

def topology(name):
    """(node count, set of frozenset edges, writer index, subscriber index)."""
    if name == "pair":
        return 2, {frozenset((0, 1))}, 0, 1
    kind, n = name[:-1], int(name[-1])
    if kind == "chain":
        return n, {frozenset((i, i + 1)) for i in range(n - 1)}, 0, n - 1
    if kind == "star":
        return n, {frozenset((0, i)) for i in range(1, n)}, 0, n - 1
    raise ValueError(f"unknown topology {name!r} (pair, chainN, starN)")


def run_hypernet(name, binary, workdir, args):
    n, edges, writer_i, sub_i = topology(name)
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    root.chmod(0o755)

    def make_node(start=False, node_class=ClusterNode, label=None, **extra):
        directory = root / label
        directory.mkdir()
        return node_class(directory, binary, **extra)

    os.environ["HYPERNET_BIN"] = binary
    streams = []
    poller = None
    # Host names h0, h1, ...: the lab's default a, b, c, ... gives host f the bridge port "vf", which `ip link
    # add vf type veth` takes for its "vf" keyword (fails with 6 hosts or more).
    lab = netns.Lab("hnpubsub", hosts=[f"h{i}" for i in range(n)])
    lab.__enter__()
    cl = Cluster(make_node, root, lab=lab)
    try:
        first = cl.add("n0")
        for i in range(1, n):
            cl.add(f"n{i}", identity=first)
        nodes = cl.nodes
        for i, node in enumerate(nodes):
            node.peers = [nodes[j].listen for j in range(n) if frozenset((i, j)) in edges]
        for i in range(n):
            for j in range(i + 1, n):
                if frozenset((i, j)) not in edges:
                    lab.partition([nodes[i].host.name], [nodes[j].host.name])
        cl.start(connected=False)
        want = {i: {nodes[j].listen for j in range(n) if frozenset((i, j)) in edges} for i in range(n)}
        deadline = time.monotonic() + 60
        while True:
            seen = {i: nodes[i].connected_addresses() for i in range(n)}
            if all(seen[i] == want[i] for i in range(n)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: topology not as intended after 60 s: "
                                   + "; ".join(f"n{i} connected to {sorted(seen[i])}, want {sorted(want[i])}"
                                               for i in range(n)))
            time.sleep(0.3)
        log(f"{name}: {n} nodes up, links as intended ({len(edges)} edges)")

        writer, sub = nodes[writer_i], nodes[sub_i]
        files = [f"f{k}.txt" for k in range(args.files)]
        for k, f in enumerate(files):
            with open(os.path.join(writer.mount, f), "wb") as fh:
                fh.write(content(0, args.size))
        deadline = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(node.mount, f)) and read_seq(os.path.join(node.mount, f)) == 0
                      for node in nodes for f in files):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the initial files did not reach every node in 60 s")
            time.sleep(0.1)

        poller = Poller([os.path.join(sub.mount, f) for f in files])
        watches = {}
        for i, node in enumerate(nodes):
            on_line = (lambda t: poller.kick.set()) if i == sub_i else None
            watches[i] = Lines([binary, "--home", str(node.home), "watch", str(node.mount)], on_line=on_line)
            streams.append(watches[i])
        time.sleep(1.5)  # the watchers are registered: their streams start at the present
        for w in watches.values():
            w.lines.clear()
        poller.start()

        duration = args.duration if name.endswith("4") else args.other_duration
        log(f"{name}: {args.rate}/s for {duration} s, writer n{writer_i}, subscriber n{sub_i}")
        paths = [os.path.join(writer.mount, f) for f in files]
        records = run_schedule(paths, poller, args.rate, duration, args.size,
                               revision_of=lambda p: os.getxattr(p, "user.hypernet.revision").decode().strip())
        rev_seq = {r["rev"]: r["seq"] for r in records if r["rev"]}
        revs_needed = set(rev_seq)

        def arrivals(w):
            out = {}
            for t, line in list(w.lines):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event") == "revision" and e.get("rev") in rev_seq:
                    out.setdefault(rev_seq[e["rev"]], t)
            return out

        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            if all(len(arrivals(watches[i])) >= len(revs_needed) for i in range(n)) and \
                    len(poller.seen) >= len(records):
                break
            time.sleep(0.2)
        poller.close()
        for w in streams:
            w.close()

        per_node = {}
        for i in range(n):
            per_node[f"n{i}"] = latencies(records, arrivals(watches[i]))
        result = {
            "topology": name, "nodes": n, "edges": sorted(sorted(e) for e in edges), "writer": f"n{writer_i}",
            "subscriber": f"n{sub_i}", "duration_s": duration, "rate": args.rate, "writes": len(records),
            "revisions_matched": len(revs_needed), "rev_errors": sum(1 for r in records if "rev_error" in r),
            "event": per_node[f"n{sub_i}"], "readable": latencies(records, poller.seen),
            "event_per_node": per_node, "writer_costs": writer_costs(records),
            "extra_events_on_subscriber": sum(1 for _, line in watches[sub_i].lines if '"revision"' in line)
            - len(arrivals(watches[sub_i])),
        }
        if args.keep_records:
            result["records"] = records
        return result
    finally:
        if poller is not None:
            poller.close()
        for w in streams:
            with_suppress(w.close)
        if args.keep_logs:
            for node in cl.nodes:
                with_suppress(lambda: shutil.copy2(node.home / "hypernet.log",
                                                   Path(args.keep_logs) / f"{name}-{node.name}.log"))
        cl.close()
        lab.close()
        problems = [p for node in cl.nodes for p in node.problems]
        if problems:
            log(f"{name}: cleanup problems: {problems}")
        shutil.rmtree(root, ignore_errors=True)


# --- Syncthing ------------------------------------------------------------------------------------------------

def run_syncthing(workdir, args):
    from syncthing_pair import FOLDER_ID, SyncthingPair
    with SyncthingPair(workdir) as pair:
        files = [f"f{k}.txt" for k in range(args.files)]
        for f in files:
            with open(pair.a.folder / f, "wb") as fh:
                fh.write(content(0, args.size))
        deadline = time.monotonic() + 120
        while not all(read_seq(pair.b.folder / f) == 0 for f in files):
            if time.monotonic() > deadline:
                raise RuntimeError("syncthing: the initial files did not reach b in 120 s")
            time.sleep(0.1)
        pair.wait_idle()
        poller = Poller([str(pair.b.folder / f) for f in files])
        events = {}  # seq -> arrival of the first ItemFinished after which b's file holds seq or later
        pending = {k: [] for k in range(len(files))}
        lock = threading.Lock()
        stop = threading.Event()
        # A filtered subscription numbers its own events (ids from 1): start at 0; what arrived before the
        # schedule matches no pending write.
        last = 0

        def listen():
            since = last
            while not stop.is_set():
                try:
                    batch = pair.b.api("GET", f"/rest/events?events=ItemFinished&since={since}&timeout=1",
                                       timeout=10)
                except (urllib.error.URLError, OSError):
                    continue
                t = time.perf_counter()
                for e in batch or []:
                    since = max(since, e["id"])
                    data = e.get("data") or {}
                    if data.get("folder") != FOLDER_ID or data.get("item") not in files or data.get("error"):
                        continue
                    k = files.index(data["item"])
                    value = read_seq(pair.b.folder / data["item"])
                    with lock:
                        keep = []
                        for s in pending[k]:
                            if value >= s:
                                events.setdefault(s, t)
                            else:
                                keep.append(s)
                        pending[k] = keep
                    poller.kick.set()

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        poller.start()

        class Tap:
            def expect(self, k, s):
                with lock:
                    pending[k].append(s)
                poller.expect(k, s)

        log(f"syncthing {pair.version}: {args.rate}/s for {args.duration} s")
        records = run_schedule([str(pair.a.folder / f) for f in files], Tap(), args.rate, args.duration, args.size)
        deadline = time.monotonic() + max(args.drain, 30)
        while time.monotonic() < deadline and (len(events) < len(records) or len(poller.seen) < len(records)):
            time.sleep(0.2)
        stop.set()
        poller.close()
        thread.join(timeout=15)
        return {"topology": "syncthing", "version": pair.version, "settings": pair.settings,
                "event_kind": "ItemFinished on b", "duration_s": args.duration, "rate": args.rate,
                "writes": len(records), "event": latencies(records, events),
                "readable": latencies(records, poller.seen), "writer_costs": writer_costs(records)}


# --- report ---------------------------------------------------------------------------------------------------

FIELDS = [("event", "close", "from_return", "close→event"), ("event", "fsync", "from_return", "fsync→event"),
          ("event", "close", "from_schedule", "sched→event (close)"),
          ("event", "fsync", "from_schedule", "sched→event (fsync)"),
          ("readable", "close", "from_return", "close→readable"), ("readable", "fsync", "from_return", "fsync→readable"),
          ("readable", "close", "from_schedule", "sched→readable (close)"),
          ("readable", "fsync", "from_schedule", "sched→readable (fsync)")]


def median_of(results, kind, variant, ref, stat):
    vals = [r[kind][variant][ref][stat] for r in results if r[kind][variant][ref][stat] is not None]
    return statistics.median(vals) if vals else None


def fmt(v):
    return "-" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")


def report(by_topology):
    anchor = None
    if "syncthing" in by_topology:
        anchor = median_of(by_topology["syncthing"], "event", "close", "from_return", "p50")
    lines = []
    for label_kind, variant, ref, label in FIELDS:
        lines.append(f"\n{label} (ms; p50 / p99 / p99.9, median of runs; x = Syncthing close→event p50 ÷ this p50)")
        for topo, results in by_topology.items():
            p = [median_of(results, label_kind, variant, ref, s) for s in ("p50", "p99", "p99.9")]
            lost = sum(r[label_kind][variant]["lost"] for r in results)
            ratio = f"  {anchor / p[0]:.0f}x" if anchor and p[0] else ""
            lines.append(f"  {topo:10s} {fmt(p[0]):>7} / {fmt(p[1]):>7} / {fmt(p[2]):>7}  "
                         f"runs {len(results)}{f', lost {lost}' if lost else ''}{ratio}")
    return "\n".join(lines)


def targets(by_topology):
    out = {}
    st = by_topology.get("syncthing")
    st_p50 = median_of(st, "event", "close", "from_return", "p50") if st else None
    for topo in ("chain4", "star4"):
        if topo not in by_topology:
            continue
        rs = by_topology[topo]
        ev50 = median_of(rs, "event", "close", "from_return", "p50")
        ev99 = median_of(rs, "event", "close", "from_return", "p99")
        rd99 = median_of(rs, "readable", "close", "from_return", "p99")
        out[topo] = {"event_p50_le_20ms": ev50 <= 20, "event_p99_le_100ms": ev99 <= 100,
                     "readable_p99_le_200ms": rd99 <= 200,
                     "ten_x_syncthing_p50": (st_p50 / ev50 >= 10) if st_p50 else None,
                     "values_ms": {"event_p50": ev50, "event_p99": ev99, "readable_p99": rd99, "syncthing_p50": st_p50}}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of the 4-node topologies and Syncthing")
    ap.add_argument("--other-runs", type=int, default=1, help="runs of the other topologies")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of writing (4-node cases, Syncthing)")
    ap.add_argument("--other-duration", type=float, default=None, help="seconds for pair and 8-node cases")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024, help="bytes written per revision (at offset 0)")
    ap.add_argument("--drain", type=float, default=15.0, help="seconds to wait for stragglers after the schedule")
    ap.add_argument("--topologies", default="pair,chain4,star4,chain8,star8")
    ap.add_argument("--no-syncthing", action="store_true")
    ap.add_argument("--keep-records", action="store_true", help="every write's timestamps in the JSON")
    ap.add_argument("--keep-logs", default=None, help="copy each node's hypernet.log into this directory")
    args = ap.parse_args()
    if args.other_duration is None:
        args.other_duration = args.duration
    binary = os.environ.get("HYPERNET_BIN", str(REPO / ".build" / "release" / "hypernet"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"pubsub: no hypernet binary at {binary} (set HYPERNET_BIN)")
    if os.geteuid() != 0:
        sys.exit("pubsub: needs root (FUSE, network namespaces, nft)")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    topos = [t.strip() for t in args.topologies.split(",") if t.strip()]
    for t in topos:
        topology(t)
    workdir = Path(tempfile.mkdtemp(prefix="hn-bench-pubsub-"))
    workdir.chmod(0o755)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    by_topology = {}
    load_before = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"pubsub-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save():
        result = {"date": started, "machine": {"nodename": os.uname().nodename, "nproc": os.cpu_count(), "cpu": cpu,
                                               "kernel": os.uname().release, "load_before": load_before,
                                               "load_after": os.getloadavg()},
                  "binary": binary, "args": vars(args), "results": by_topology, "targets": targets(by_topology)}
        path.write_text(json.dumps(result, indent=1))
        return result

    try:
        for run in range(max(args.runs, args.other_runs)):
            for t in topos:
                main_case = t.endswith("4")
                if run >= (args.runs if main_case else args.other_runs):
                    continue
                log(f"run {run + 1}: {t}")
                by_topology.setdefault(t, []).append(run_hypernet(t, binary, workdir, args))
                save()
            if not args.no_syncthing and run < args.runs:
                log(f"run {run + 1}: syncthing")
                by_topology.setdefault("syncthing", []).append(run_syncthing(workdir, args))
                save()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = save()
    print(report(by_topology))
    print("\ntargets (4 nodes, close→event; medians of runs):")
    for topo, t in result["targets"].items():
        print(f"  {topo}: {json.dumps(t)}")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
