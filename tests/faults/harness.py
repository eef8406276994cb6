"""Fault-injection harness (issue 21): N Hypernet nodes of one identity in network namespaces behind a bridge,
one client per mount writing with ordinary system calls, a nemesis injecting faults at random, and a checker
over the whole recorded history. Every run is driven by one seed: the nemesis schedule and every client's
choices of operation, path and payload come from it, so a failure replays with `--seed` (the interleaving
with the daemons' own timing does not replay exactly; the faults and operations do).

    python3 tests/faults/harness.py --seed 7 --nodes 3 --duration 60      # what CI runs, seed chosen at random
    python3 tests/faults/harness.py --nodes 5 --duration 3600 --concurrent 2

What each part proves, and the pass criteria, are in docs/testing.md ("Fault harness").
"""

import argparse
import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
import cluster as cluster_module  # noqa: E402
import helpers  # noqa: E402
import netns  # noqa: E402
from lazystore import LazyStore, fusepy_missing  # noqa: E402
from loopdisk import LoopDisk, loop_missing  # noqa: E402

FAULTS = ("kill9", "pause", "partition", "loss", "rate", "delay", "skew", "failpoint", "powerloss", "eio", "enospc",
          "enospc-real", "corrupt")
RELAY_PORT = cluster_module.NETNS_PORT + 1  # each node's relay (the `delay` fault), in its namespace
# Faults that need every node's store on lazyfs (tests/faults/lazyfs.py).
DISK_FAULTS = ("powerloss", "eio", "enospc")
# The size of the ext4 each node's store is on with `enospc-real` (a sparse image, mounted with discard).
REAL_DISK = 256 << 20
# The steps a test build can crash, stall or fail at (Sources/HypernetFailpoint, docs/testing.md "Failpoints").
FAILPOINTS = ("vfs.stage", "store.seal", "pack.append", "catalog.commit", "store.sync", "sync.send", "sync.receive",
              "sync.store", "sync.ack", "vfs.show", "catalog.checkpoint", "pack.trim", "rights.change",
              "rights.receive")
QUORUM = 2
FSYNC_TIMEOUT = 5  # seconds: an fsync cut off from its quorum fails with EIO after this
OWN_FILES = 6  # files per client that only that client writes
SHARED_FILES = 2  # files every client writes (forks expected under partitions)
SIZES = (0, 10, 1000, 4096, 70_000, 300_000)
TREE_DIRS = 3  # directories of the `trees` workload
WORKLOADS = ("files", "trees")
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_faults(binary):
    """Every fault: `failpoint` only with a test build, the lazyfs faults only where lazyfs runs, `enospc-real` only
    where a loop device can be attached."""
    left_out = (set() if helpers.has_failpoints(binary) else {"failpoint"}) | \
        (set(DISK_FAULTS) if fusepy_missing() else set()) | ({"enospc-real"} if loop_missing() else set())
    return tuple(f for f in FAULTS if f not in left_out)


def payload(op_id: str, size: int) -> bytes:
    """The bytes operation `op_id` writes: a function of its id, so the checker can regenerate them (to
    recognise a prefix) without the history holding every payload."""
    head = f"{op_id}:".encode()
    return (head + random.Random(op_id).randbytes(size))[:max(size, len(head))]


class History:
    """Every operation as invoked and as completed (ok / fail / unknown), against one monotonic clock,
    appended to a JSON-lines file as it happens so that a crashed harness still leaves its history."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.ops = []
        self.file = open(path, "w", buffering=1)

    def record(self, **fields):
        fields["t"] = round(time.monotonic() - self.start, 4)
        with self.lock:
            self.file.write(json.dumps(fields) + "\n")
            if fields["type"] in ("invoke", "complete"):
                self.ops.append(fields)

    def close(self):
        self.file.close()


class FaultNode(cluster_module.ClusterNode):
    """A cluster node whose daemon can run with its wall clock skewed (libfaketime; monotonic time untouched)
    or a failpoint armed (`HYPERNET_FAILPOINT`, a test build only)."""

    skew = 0
    failpoint = None

    def run(self, *args, env_extra=None, **kw):
        env = dict(env_extra or {})
        if args and args[0] in ("mount", "serve"):
            if self.skew:
                env.update(LD_PRELOAD=LIBFAKETIME, FAKETIME=f"{self.skew:+d}s", FAKETIME_DONT_FAKE_MONOTONIC="1",
                           FAKETIME_NO_CACHE="1")
            if self.failpoint:
                env["HYPERNET_FAILPOINT"] = self.failpoint
        return super().run(*args, env_extra=env, **kw)


class Client(threading.Thread):
    """Writes through one node's mount: whole-file rewrites with fsync, atomic replaces (temp file, fsync,
    rename, fsync of the directory) and deletes of its own files, and rewrites of the shared files. An
    operation is `ok` when every call returned, `fail` when fsync gave EIO (the quorum was not reached in time:
    the data may still replicate), `unknown` on any other error (a killed daemon's mount)."""

    def __init__(self, harness, node, seed, label):
        super().__init__(name=f"client-{label}", daemon=True)
        self.harness = harness
        self.node = node
        self.label = label  # prefix of its operations' ids (unique in the run)
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.count = 0
        self.fsync_seconds = []  # each fsync that returned 0
        self.fsync_faults = []  # for each of those, the fault kinds active at its start or end

    def run(self):
        while not self.stopping.is_set():
            if not self.harness.usable(self.node):
                time.sleep(0.1)
                continue
            self.count += 1
            self.operation(self.count)
            time.sleep(self.rng.uniform(0, 0.2))

    def operation(self, n):
        op_id = f"{self.label}-{n}"
        roll = self.rng.random()
        if "trees" in self.harness.workloads and roll < 0.3:
            self.tree_operation(op_id)
            return
        roll = self.rng.random()
        if roll < 0.25:
            path, kind = f"shared/s{self.rng.randrange(SHARED_FILES)}", "write"
        else:
            path = f"c-{self.node.name}/f{self.rng.randrange(OWN_FILES)}"
            kind = "write" if roll < 0.65 else "replace" if roll < 0.9 else "delete"
        data = None if kind == "delete" else payload(op_id, self.rng.choice(SIZES))

        def act(full):
            if kind == "write":
                self.write(full, data)
            elif kind == "replace":
                self.write(full + ".tmp", data)
                os.rename(full + ".tmp", full)
                self.fsync_directory(os.path.dirname(full))
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)
                self.fsync_directory(os.path.dirname(full))

        self.perform(op_id, kind, path, data, act)

    def tree_operation(self, op_id):
        """The `trees` workload: files in directories that any client may remove with everything in them, so
        that deletes race edits and creates at every depth (a modify must win over a concurrent delete)."""
        top = f"trees/d{self.rng.randrange(TREE_DIRS)}"
        roll = self.rng.random()
        if roll < 0.15:
            def remove(full):
                shutil.rmtree(full)
                self.fsync_directory(os.path.dirname(full))

            self.perform(op_id, "rmtree", top, None, remove)
            return
        path = f"{top}/sub{self.rng.randrange(2)}/{self.node.name}-f{self.rng.randrange(3)}"
        data = payload(op_id, self.rng.choice(SIZES))

        def create(full):
            os.makedirs(os.path.dirname(full), exist_ok=True)
            self.write(full, data)
            self.fsync_directory(os.path.dirname(full))

        self.perform(op_id, "write", path, data, create)

    def perform(self, op_id, kind, path, data, act):
        history = self.harness.history
        history.record(type="invoke", id=op_id, client=self.node.name, op=kind, path=path,
                       value=None if data is None else digest(data), size=None if data is None else len(data))
        result, error = "ok", None
        try:
            act(os.path.join(str(self.node.mount), path))
        except OSError as e:
            error = errno.errorcode.get(e.errno, str(e.errno))
            result = "fail" if getattr(e, "fsync", False) and e.errno == errno.EIO else "unknown"
        history.record(type="complete", id=op_id, result=result, error=error)

    def fsync(self, fd):
        """fsync, timed, its error marked as fsync's: EIO from it means the quorum was not reached (`fail`)."""
        before = self.harness.active_faults()
        start = time.monotonic()
        try:
            os.fsync(fd)
        except OSError as e:
            e.fsync = True
            raise
        self.fsync_seconds.append(time.monotonic() - start)
        self.fsync_faults.append(before | self.harness.active_faults())

    def write(self, path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[: 1 << 17]):]
            self.fsync(fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def fsync_directory(self, path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)


class Harness:
    def __init__(self, binary, workdir: Path, seed, nodes=3, duration=60.0, faults=None, concurrent=1,
                 settle=120.0, workloads=("files",), rounds=1, progress=None):
        self.binary = binary
        self.workdir = workdir
        self.seed = seed
        self.node_count = nodes
        self.duration = duration
        self.faults = default_faults(binary) if faults is None else tuple(faults)
        if "failpoint" in self.faults and not helpers.has_failpoints(binary):
            raise ValueError(f"{binary} has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS, "
                             f"docs/testing.md), so the `failpoint` fault cannot run")
        if set(self.faults) & set(DISK_FAULTS) and fusepy_missing():
            raise ValueError(f"the faults {', '.join(DISK_FAULTS)} need lazyfs: {fusepy_missing()}")
        if "enospc-real" in self.faults and loop_missing():
            raise ValueError(f"the fault enospc-real needs a loop device: {loop_missing()}")
        self.concurrent = concurrent
        self.settle = settle
        self.workloads = tuple(workloads)
        self.rounds = rounds
        self.progress = progress or (lambda line: None)
        self.rng = random.Random(seed)
        self.state_lock = threading.Lock()
        self.down = set()  # names of nodes killed and not restarted yet
        self.paused = set()
        self.busy = set()  # nodes a fault currently holds
        self.active = {}  # fault kind -> how many of it are being held now
        self.injected = {}
        self.history = None
        self.lab = None
        self.cluster = None
        self.lazy = {}  # node name -> LazyStore under its store, with a disk fault among `faults`
        self.disks = {}  # node name -> LoopDisk its store (or lazyfs's backing) is on, with `enospc-real`
        self.relays = {}  # node name -> netns.Relay every connection to it passes, with `delay` among `faults`

    # --- nodes -----------------------------------------------------------------------------------------------
    def make_node(self, start=False, node_class=None, label=None, **extra):
        """cluster.Cluster's node factory: FaultNodes in the work directory (started by the cluster)."""
        directory = self.workdir / label
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        assert not start
        return FaultNode(directory, self.binary, **extra)

    def active_faults(self):
        with self.state_lock:
            return frozenset(kind for kind, count in self.active.items() if count)

    def usable(self, node):
        with self.state_lock:
            return node.name not in self.down and node.name not in self.paused

    def setup(self):
        self.lab = netns.Lab("hnfault", hosts=self.node_count)
        self.lab.__enter__()
        self.cluster = cluster_module.Cluster(self.make_node, self.workdir, lab=self.lab)
        first = None
        for i in range(self.node_count):
            name = chr(ord("a") + i)
            node = self.cluster.add(name, identity=first, quorum=QUORUM, fsync_timeout=FSYNC_TIMEOUT)
            first = first or node
            self.place_store(node)
            if "delay" in self.faults:
                self.relays[name] = self.relay(node)
        self.cluster.start(timeout=60)
        if self.relays and not sum(r.connections for r in self.relays.values()):
            raise AssertionError("no connection passed the relays: the `delay` fault would do nothing")
        a = self.cluster.nodes[0]
        os.makedirs(a.p("shared"), exist_ok=True)
        os.makedirs(a.p("trees"), exist_ok=True)
        # The shared files exist before the clients start: concurrent writes then fork one document. (Files created
        # concurrently under one name are two documents, one shown renamed; the checker accepts that too.)
        for i in range(SHARED_FILES):
            helpers.write_file(a.p(f"shared/s{i}"), b"", fsync=True)
        for n in self.cluster.nodes:
            os.makedirs(a.p(f"c-{n.name}"), exist_ok=True)
        cluster_module.wait_converged(self.cluster.nodes, 60, what="the initial directories")

    def place_store(self, node):
        """Puts `node`'s store (not started yet) where the faults need it: on a loop-mounted ext4 of its own
        (`enospc-real`), under lazyfs (the other disk faults), or both (lazyfs's backing on the ext4)."""
        lazy, real = bool(set(self.faults) & set(DISK_FAULTS)), "enospc-real" in self.faults
        if not lazy and not real:
            return
        store, backing = node.home / "store", node.dir / "store-backing"
        below = backing if lazy else store  # what holds the store's files
        held = node.dir / "store-initial"
        if store.exists():
            shutil.move(store, held)
        below.mkdir(mode=0o700, exist_ok=True)
        if real:
            self.disks[node.name] = LoopDisk(node.dir / "store.img", below, REAL_DISK).mount()
            below.chmod(0o700)
        if held.exists():
            shutil.copytree(held, below, dirs_exist_ok=True)
            shutil.rmtree(held)
        if lazy:
            store.mkdir(mode=0o700, exist_ok=True)
            self.lazy[node.name] = LazyStore(backing, store, node.dir / "lazyfs.log")
            self.lazy[node.name].mount()

    def relay(self, node):
        """A relay in `node`'s namespace that every connection from another node to it passes (an nft DNAT of
        their SYNs to its port), adding no delay until the `delay` fault sets one."""
        ip, port = node.host.ip, cluster_module.NETNS_PORT
        script = (f"table ip hnfaultrelay {{\n  chain prerouting {{ type nat hook prerouting priority dstnat; "
                  f"policy accept;\n    ip saddr {self.lab.subnet}.0/24 ip saddr != {ip} tcp dport {port} "
                  f"dnat to {ip}:{RELAY_PORT}\n  }}\n}}\n")
        self.nft(node, script)
        return self.lab.delay_relay((ip, RELAY_PORT), (ip, port), 0, host=node.host.name)

    def set_delay(self, node, delay, jitter):
        """`delay` ± `jitter` seconds each way on every connection of `node`'s: those to it at its relay, those
        from it at the others'."""
        for name, relay in self.relays.items():
            relay.set_delay(delay, jitter, source=None if name == node.name else node.host.ip)

    def teardown(self):
        if self.cluster is not None:
            for n in self.cluster.nodes:
                if n.pid is not None and helpers.pid_alive(n.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(n.pid, signal.SIGCONT)
            self.cluster.close()
            problems = [f"{n.name}: {p}" for n in self.cluster.nodes for p in n.problems]
            if problems:
                self.progress("teardown: " + "; ".join(problems))
        for lazy in self.lazy.values():
            lazy.close()
        for disk in self.disks.values():
            disk.close()
        if self.lab is not None:
            self.lab.close()

    # --- the nemesis -----------------------------------------------------------------------------------------
    def nemesis(self, stop):
        """Faults at random from the seeded schedule, at most `concurrent` at a time, each held for a few
        seconds and then undone."""
        active = []
        while not stop.is_set():
            active = [t for t in active if t.is_alive()]
            if len(active) < self.concurrent:
                kind = self.rng.choice(self.faults)
                hold = self.rng.uniform(1.0, 6.0)
                with self.state_lock:
                    free = [n for n in self.cluster.nodes if n.name not in self.busy]
                if free:
                    node = self.rng.choice(free)
                    others = [n for n in self.cluster.nodes if n is not node]
                    side = self.rng.sample(others, self.rng.randrange(0, len(others)))
                    args = (kind, node, side, hold, self.rng.randrange(5, 40), self.rng.choice((-1, 1)) *
                            self.rng.randrange(5, 300), self.failpoint_spec())
                    with self.state_lock:
                        self.busy.add(node.name)
                    t = threading.Thread(target=self.fault, args=args, name=f"fault-{kind}", daemon=True)
                    t.start()
                    active.append(t)
            stop.wait(self.rng.uniform(0.5, 3.0))
        for t in active:
            t.join()

    def failpoint_spec(self):
        """A failpoint to arm: a random step, action and share of its hits (so a crash comes at a random point)."""
        action = self.rng.choice(("panic", "error", f"sleep({self.rng.randrange(50, 3000)})"))
        return f"{self.rng.choice(FAILPOINTS)}:{self.rng.choice((5, 25, 100))}%{action}"

    def fault(self, kind, node, side, hold, percent, skew, failpoint):
        history = self.history
        history.record(type="fault", fault=kind, node=node.name, phase="start", hold=round(hold, 2),
                       side=[n.name for n in side], percent=percent, skew=skew,
                       failpoint=failpoint if kind == "failpoint" else None)
        self.injected[kind] = self.injected.get(kind, 0) + 1
        with self.state_lock:
            self.active[kind] = self.active.get(kind, 0) + 1
        try:
            if kind == "kill9":
                self.kill(node)
                time.sleep(hold)
                self.restart(node)
            elif kind == "skew":
                self.kill(node)
                node.skew = skew
                self.restart(node)
                time.sleep(hold)
            elif kind == "failpoint":
                # Restarted with the failpoint armed for the hold (a panic may end it, or its start), then crashed
                # and restarted without it.
                self.kill(node)
                node.failpoint = failpoint
                try:
                    node.start()
                    with self.state_lock:
                        self.down.discard(node.name)
                    time.sleep(hold)
                except AssertionError as e:  # it died while starting: a panic at a step of the start
                    history.record(type="fault", fault=kind, node=node.name, phase="start failed", error=str(e)[:300])
                finally:
                    node.failpoint = None
                self.kill(node)
                self.restart(node)
            elif kind == "powerloss":
                self.power_loss(node)
                time.sleep(hold)
                self.restart(node)
            elif kind in ("eio", "enospc"):
                # A failing disk ends with the machine restarted: writes whose fsync failed are gone then, even
                # if a later fsync of the same file succeeded (lazyfs.py).
                self.lazy[node.name].disk(kind)
                time.sleep(hold)
                self.lazy[node.name].disk("heal")
                if kind == "eio":
                    self.power_loss(node)
                    self.restart(node)
            elif kind == "enospc-real":
                # Another writer fills the file system the store is on, to the last block, then removes its file.
                history.record(type="fault", fault=kind, node=node.name, phase="filled",
                               bytes=self.disks[node.name].fill())
                time.sleep(hold)
                self.disks[node.name].free()
            elif kind == "corrupt":
                self.kill(node)
                history.record(type="fault", fault=kind, node=node.name, phase="damage", damage=self.corrupt(node))
                time.sleep(hold)
                self.restart(node)
            elif kind == "pause":
                with self.state_lock:
                    self.paused.add(node.name)
                os.kill(node.pid, signal.SIGSTOP)
                time.sleep(hold)
                os.kill(node.pid, signal.SIGCONT)
                with self.state_lock:
                    self.paused.discard(node.name)
            elif kind == "partition":
                group = [node, *side]
                rest = [n for n in self.cluster.nodes if n not in group]
                self.lab.partition([n.host for n in group], [n.host for n in rest])
                time.sleep(hold)
                self.lab.heal([n.host for n in group], [n.host for n in rest])
            elif kind == "loss":
                self.set_loss(node, percent)
                time.sleep(hold)
                self.set_loss(node, 0)
            elif kind == "delay":
                delay = percent / 100  # 50-400 ms each way, ± half of it as jitter
                self.set_delay(node, delay, delay / 2)
                time.sleep(hold)
                self.set_delay(node, 0, 0)
            elif kind == "rate":
                self.lab.limit_rate(node.host, "512kbit")
                time.sleep(hold)
                self.lab.clear_rate(node.host)
        finally:
            with self.state_lock:
                self.busy.discard(node.name)
                self.active[kind] -= 1
            history.record(type="fault", fault=kind, node=node.name, phase="end")

    def kill(self, node):
        with self.state_lock:
            self.down.add(node.name)
        if helpers.pid_alive(node.pid):
            node.kill9()
        else:  # a failpoint's panic killed it
            node.reap()

    def power_loss(self, node):
        """The machine stops: the daemon with it, and what its disk had not made durable."""
        self.kill(node)
        lazy = self.lazy[node.name]
        self.history.record(type="fault", fault="powerloss", node=node.name, phase="damage", damage=lazy.power_loss())
        lazy.mount()

    def corrupt(self, node):
        """Damages the stopped node's store as a disk that lies would: bytes flipped in a pack record, or the
        catalog's WAL cut short. Returns what it did."""
        store = node.home / "store"
        packs = sorted(p for p in (store / "packs").glob("*.pack") if p.stat().st_size > 64)
        wal = store / "catalog.sqlite-wal"
        if self.rng.random() < 0.5 and packs:
            pack = self.rng.choice(packs)
            offset = self.rng.randrange(64, pack.stat().st_size)
            with open(pack, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)[0]
                f.seek(offset)
                f.write(bytes([byte ^ 0xFF]))
            return f"flipped byte {offset} of {pack.name}"
        if wal.exists() and wal.stat().st_size > 0:
            size = wal.stat().st_size
            cut = self.rng.randrange(0, size)
            os.truncate(wal, cut)
            return f"cut the catalog's WAL from {size} to {cut} bytes"
        return "nothing to damage"

    def restart(self, node):
        node.start()
        with self.state_lock:
            self.down.discard(node.name)

    @staticmethod
    def nft(node, script):
        """Runs an `nft -f` script in `node`'s network namespace."""
        subprocess.run(["nsenter", f"--net={node.host.netns_path}", "--", "nft", "-f", "-"], input=script,
                       text=True, check=True, capture_output=True, timeout=30)

    def set_loss(self, node, percent):
        """Drops `percent` % of the packets `node` receives from the other hosts (nft, in its namespace)."""
        table = "hnfaultloss"
        script = f"add table inet {table}\ndelete table inet {table}\n"
        if percent:
            script += (f"table inet {table} {{\n  chain input {{ type filter hook input priority -290; "
                       f"policy accept;\n    ip saddr {self.lab.subnet}.0/24 numgen random mod 100 < {percent} drop\n"
                       f"  }}\n}}\n")
        self.nft(node, script)

    # --- a run -----------------------------------------------------------------------------------------------
    def run(self):
        """`rounds` scenarios, each `duration / rounds` seconds of faults while every mount is written, then every
        link healed and every node up until the cluster converges; then the checker over the whole history."""
        self.history = History(self.workdir / "history.jsonl")
        self.history.record(type="run", seed=self.seed, nodes=self.node_count, duration=self.duration,
                            faults=list(self.faults), concurrent=self.concurrent, workloads=list(self.workloads),
                            rounds=self.rounds)
        self.progress(f"seed {self.seed}: {self.node_count} nodes, {self.duration:.0f} s of faults "
                      f"({', '.join(self.faults)}) in {self.rounds} round(s), workloads {', '.join(self.workloads)}, "
                      f"history in {self.history.path}")
        self.setup()
        convergence, fsyncs, fsync_faults, stuck, diverged = [], [], [], [], []
        for round_ in range(self.rounds):
            clients = [Client(self, n, self.rng.randrange(1 << 32), f"{n.name}{round_ or ''}")
                       for n in self.cluster.nodes]
            stuck += self.faulty_round(clients, self.duration / self.rounds)
            fsyncs += [t for c in clients for t in c.fsync_seconds]
            fsync_faults += [kinds for c in clients for kinds in c.fsync_faults]
            # Every node up, every link clean: from here the cluster must converge.
            self.lab.heal()
            for n in self.cluster.nodes:
                self.set_loss(n, 0)
                self.lab.clear_rate(n.host)
                if self.relays:
                    self.set_delay(n, 0, 0)
            quiet = time.monotonic()
            try:
                cluster_module.wait_converged(self.cluster.nodes, self.settle,
                                              what=f"after the faults of round {round_}")
            except AssertionError as e:  # the checker still runs: it names what differs and what was lost
                diverged.append(str(e).splitlines()[0])
                self.history.record(type="diverged", round=round_, error=str(e))
                break
            convergence.append(time.monotonic() - quiet)
            self.history.record(type="converged", round=round_, seconds=round(convergence[-1], 2))
        report = Checker(self.cluster.nodes, self.history.ops).check()
        report["problems"] += diverged
        report.update(seed=self.seed, nodes=self.node_count, duration=self.duration, scenarios=self.rounds,
                      faults=self.injected, convergence_s=[round(c, 2) for c in convergence],
                      convergence_p99_s=round(percentile(convergence, 99), 2) if not diverged else None,
                      fsync_p99_s=round(percentile(fsyncs, 99), 3), fsyncs=len(fsyncs),
                      fsync_by_fault=fsync_by_fault(fsyncs, fsync_faults), stuck_clients=stuck)
        for n in self.cluster.nodes:
            result = n.fsck()
            if result.returncode != 0:
                report["problems"].append(f"{n.name}: fsck: {result.stdout.strip()} {result.stderr.strip()}")
        if stuck:
            report["problems"].append(f"clients still blocked {FSYNC_TIMEOUT * 6} s after the faults ended: {stuck}")
        self.history.record(type="report", **report)
        return report

    def faulty_round(self, clients, duration):
        """The clients and the nemesis for `duration` seconds; returns the clients still blocked after."""
        stop = threading.Event()
        nemesis = threading.Thread(target=self.nemesis, args=(stop,), name="nemesis", daemon=True)
        for c in clients:
            c.start()
        nemesis.start()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            ops = sum(c.count for c in clients)
            self.progress(f"  {duration - max(0.0, deadline - time.monotonic()):.0f} s: {ops} operations, "
                          f"faults {self.injected}")
        stop.set()
        nemesis.join()
        for c in clients:
            c.stopping.set()
        for c in clients:
            c.join(FSYNC_TIMEOUT * 6)
        stuck = [c.name for c in clients if c.is_alive()]
        self.history.record(type="quiet", stuck=stuck)
        return stuck


def percentile(values, p):
    """The p-th percentile (nearest rank) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * p // 100) - 1))]


def fsync_by_fault(seconds, kinds):
    """{fault kind: count, p50 and p99 of the fsyncs during which it was active} (`none`: no fault active). An
    fsync during two faults counts for both."""
    groups = {}
    for t, active in zip(seconds, kinds):
        for kind in active or ("none",):
            groups.setdefault(kind, []).append(t)
    return {kind: {"fsyncs": len(ts), "p50_s": round(percentile(ts, 50), 4), "p99_s": round(percentile(ts, 99), 4)}
            for kind, ts in sorted(groups.items())}


def summary(report):
    """The report in one line, as CI prints it (docs/testing.md, "Report")."""
    return (f"seed {report['seed']}: {report['scenarios']} scenario(s), {report['operations']} operations checked "
            f"{report['results']}, faults {report['faults']}, acknowledged writes lost {report['acknowledged_lost']}, "
            f"convergence p99 {report['convergence_p99_s']} s, fsync p99 {report['fsync_p99_s']} s "
            f"({report['fsyncs']} fsyncs)")


class Checker:
    """Checks the converged cluster against the history.

    Every path must read the same on every node. A path written by one client must hold what the last `ok`
    operation on it left, or what a later operation may have left: a `fail` or `unknown` write its whole value
    or, cut short by a crash, a prefix of it (as on a native file system); a delete, nothing; with no `ok`
    operation, also its absence. A shared path: every value an `ok` write acknowledged must be the content of a
    revision in its history (forks are kept, never dropped), and its content must be one that some operation
    may have left. Anything else (an older acknowledged value, a torn mix, bytes nobody wrote) is a problem; an
    acknowledged value that is gone counts as an acknowledged write lost."""

    def __init__(self, nodes, ops):
        self.nodes = [n for n in nodes if n.mount_enabled]
        completed = {o["id"]: o for o in ops if o["type"] == "complete"}
        self.ops = []  # invoke records with their outcome, in invocation order
        for inv in (o for o in ops if o["type"] == "invoke"):
            done = completed.get(inv["id"], {"result": "unknown", "error": "never completed", "t": float("inf")})
            self.ops.append(dict(inv, result=done["result"], error=done.get("error"), done=done["t"]))

    def content(self, node, rel):
        """The bytes at `rel` on `node`, None if absent, or the error that reading it gave (a str)."""
        try:
            return helpers.read_file(os.path.join(str(node.mount), rel))
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"unreadable ({errno.errorcode.get(e.errno, e.errno)})"

    @staticmethod
    def may_have_left(op, content):
        if op["op"] == "delete":
            return content is None
        if not isinstance(content, bytes):
            return False
        if len(content) == op["size"] and digest(content) == op["value"]:
            return True
        return op["op"] == "write" and op["result"] != "ok" and payload(op["id"], op["size"]).startswith(content)

    def check(self):
        problems, lost = [], 0
        by_path, removals = {}, {}
        for op in self.ops:
            if op["op"] == "rmtree":
                removals.setdefault(op["path"], []).append(op)
            else:
                by_path.setdefault(op["path"], []).append(op)
        results = {}
        for op in self.ops:
            results[op["result"]] = results.get(op["result"], 0) + 1
        for path, ops in sorted(by_path.items()):
            contents = [self.content(n, path) for n in self.nodes]
            if any(c != contents[0] for c in contents[1:]):
                problems.append(f"{path}: the nodes read different contents")
                continue
            final = contents[0]
            shown = "absent" if final is None else final if isinstance(final, str) else \
                f"{len(final)} bytes {digest(final)[:12]}"
            if path.startswith("shared/"):
                if final is not None and not any(self.may_have_left(op, final) for op in ops):
                    problems.append(f"{path}: holds {shown}, which no operation wrote")
                kept, unread = self.history_values(path)
                for op in ops:
                    if op["result"] == "ok" and op["value"] not in kept:
                        lost += 1
                        problems.append(f"{path}: acknowledged write {op['id']} is in no revision of its history "
                                        f"({len(kept)} contents read, {unread} revisions unreadable)")
                continue
            last_ok = max((i for i, op in enumerate(ops) if op["result"] == "ok"), default=None)
            candidates = ops if last_ok is None else ops[last_ok:]
            # A removal of a directory above that ended after the acknowledged write began may have seen it
            # (one that ended before cannot have: the write then wins as a concurrent modify).
            since = float("-inf") if last_ok is None else ops[last_ok]["t"]
            removed = any(r["done"] > since for top, rs in removals.items() if path.startswith(top + "/") for r in rs)
            if not (any(self.may_have_left(op, final) for op in candidates)
                    or (final is None and (last_ok is None or removed))):
                lost += last_ok is not None
                anchor = "none" if last_ok is None else ops[last_ok]["id"]
                problems.append(f"{path}: holds {shown}, not what the last acknowledged operation ({anchor}) "
                                f"or a later one may have left")
        return {"operations": len(self.ops), "results": results, "acknowledged_lost": lost, "problems": problems}

    def history_values(self, rel):
        """Digests of every revision's content in the history of `rel` and of its renamed copies (`NAME (conflict
        …)`: a document created concurrently under the same name), read on the first node, and how many revisions
        `hypernet cat --rev` could not read."""
        node = self.nodes[0]
        directory, name = os.path.split(os.path.join(str(node.mount), rel))
        values, unread = set(), 0
        for other in sorted(os.listdir(directory)):
            if other != name and not other.startswith(name + " (conflict"):
                continue
            path = os.path.join(directory, other)
            try:
                lines = os.getxattr(path, "user.hypernet.history").decode().splitlines()
            except OSError:
                continue
            for line in lines:
                # A revision whose chunk is damaged here fails to read (EIO) and is fetched again from a peer: read
                # again for a few seconds (store-format.md, "Repair").
                for _ in range(10):
                    proc = node.run("cat", path, "--rev", line.split()[0], check=False, text=False)
                    if proc.returncode == 0:
                        break
                    time.sleep(0.5)
                if proc.returncode == 0:
                    values.add(digest(proc.stdout))
                else:
                    unread += 1
        return values, unread


def main(argv=None):
    parser = argparse.ArgumentParser(description="Inject faults into a Hypernet cluster and check its history.")
    parser.add_argument("--seed", type=int, default=None, help="replay this seed (default: a random one)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes (default 3; --long: 5)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of faults (default 60; --long: 3600)")
    parser.add_argument("--concurrent", type=int, default=None, help="faults held at once (default 1; --long: 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="scenarios: faults, then convergence, each duration/rounds long (default 1; --long: 12)")
    parser.add_argument("--long", action="store_true", help="the long mode: 5 nodes, an hour, 2 faults at once, "
                        "12 rounds (each default only; an explicit option wins)")
    parser.add_argument("--faults", default=None, help=f"comma-separated subset of {','.join(FAULTS)} (default: all; "
                        f"failpoint only with a test build)")
    parser.add_argument("--workloads", default="files", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds allowed to converge afterwards")
    parser.add_argument("--bin", default=os.environ.get("HYPERNET_BIN"), help="the hypernet binary")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (homes, logs, history)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as one JSON object to PATH (- : stdout)")
    args = parser.parse_args(argv)
    for name, default, long in (("nodes", 3, 5), ("duration", 60.0, 3600.0), ("concurrent", 1, 2), ("rounds", 1, 12)):
        if getattr(args, name) is None:
            setattr(args, name, long if args.long else default)
    if not args.bin:
        parser.error("--bin or HYPERNET_BIN is required")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    faults = list(default_faults(args.bin)) if args.faults is None else [f for f in args.faults.split(",") if f]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(faults) - set(FAULTS) | set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown faults or workloads: {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix=f"hypernet-faults-{seed}-"))
    workdir.chmod(0o755)
    harness = Harness(os.path.abspath(args.bin), workdir, seed, nodes=args.nodes, duration=args.duration,
                      faults=faults, concurrent=args.concurrent, settle=args.settle, workloads=workloads,
                      rounds=args.rounds, progress=lambda line: print(line, file=sys.stderr, flush=True))
    report = None
    try:
        report = harness.run()
    finally:
        harness.teardown()
        if harness.history is not None:
            harness.history.close()
        if report is not None and not report["problems"] and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json == "-":
        print(json.dumps(report))
    elif args.json:
        Path(args.json).write_text(json.dumps(report) + "\n")
    if args.json != "-":
        print(summary(report))
        print("fsync by fault active (p50 / p99 s, count): " + ", ".join(
            f"{kind} {f['p50_s']} / {f['p99_s']} ({f['fsyncs']})" for kind, f in report["fsync_by_fault"].items()))
        for p in report["problems"]:
            print(f"  problem: {p}")
        if report["problems"]:
            print(f"replay: python3 tests/faults/harness.py --seed {seed} --nodes {args.nodes} "
                  f"--duration {args.duration:g} --faults {','.join(faults)} --workloads {','.join(workloads)} "
                  f"--concurrent {args.concurrent} --rounds {args.rounds}; work directory {workdir}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
