"""A small multi-node harness for the replication tests: N Hypernet nodes on this machine, each with its own
home, either on its own loopback address (127.X.Y.Z, X.Y derived from the pid so parallel runs do not meet)
or in a host of a network-namespace `Lab` (netns.py), wired as a full mesh (`--peer` to every other node).

    cl = Cluster(make_node)                         # or Cluster(make_node, lab=lab) for namespaces
    a = cl.add("a", fsync_timeout=3)                # a mounting node with a fresh identity
    b = cl.add("b", identity=a)                     # the same identity (id export / id import)
    c = cl.add("c", serve=True, pins=[a])           # a storage node: `serve --pin TOKEN`
    cl.start()                                      # every node, then waits until all are connected
    ...
    cl.close()                                      # stops every node (the `cluster` fixtures call it)

Nodes are made by conftest's `make_node` factory, so they get its cleanup (stop, unmount, SIGKILL by pid,
also when the test fails), its daemon-log checks and the session's leak check. `ClusterNode` adds the peer
options, `serve` nodes, launching inside a namespace (`nsenter --net`: only the network namespace, so the
FUSE mount stays visible here), `status`/backlog parsing and read-only catalog queries.
"""

import contextlib
import errno
import itertools
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

import helpers
import netns
from helpers import Node, pid_alive, sha256, wait_until  # noqa: F401  (wait_until re-exported)

PASSPHRASE = "replication tests only"
NETNS_PORT = 7400
_cluster_seq = itertools.count()


# --- waiting ---------------------------------------------------------------------------------------------

def eventually(predicate, timeout, message, interval=0.1):
    """Polls `predicate` until truthy (returns its value) or fails the test after `timeout` seconds with
    `message` (a string, or a callable giving one, evaluated at failure time to show the state then)."""
    value = wait_until(predicate, timeout, interval)
    if not value:
        text = message() if callable(message) else message
        raise AssertionError(f"after {timeout:.1f} s: {text}")
    return value


# --- trees -------------------------------------------------------------------------------------------------

def snapshot(root):
    """{relative path: description} of everything under a mount (the virtual /.hypernet left out):
    ('dir', mode), ('file', mode, size, sha256) or ('link', target). Raises OSError if the tree changes
    under the walk."""
    root = str(root)
    result = {}

    def fail(e):
        raise e

    for directory, dirs, files in os.walk(root, onerror=fail):
        if directory == root:
            dirs[:] = [d for d in dirs if d != ".hypernet"]
            files = [f for f in files if f != ".hypernet"]
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                result[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[rel] = ("dir", oct(stat.S_IMODE(info.st_mode)))
            else:
                data = helpers.read_file(path)
                result[rel] = ("file", oct(stat.S_IMODE(info.st_mode)), len(data), sha256(data))
    return result


def try_snapshot(root):
    try:
        return snapshot(root)
    except OSError as e:
        return e


def describe_difference(name_a, snap_a, name_b, snap_b, limit=12):
    """A few lines saying how two snapshots differ (or why one could not be taken)."""
    if isinstance(snap_a, Exception) or isinstance(snap_b, Exception):
        return f"{name_a}: {snap_a if isinstance(snap_a, Exception) else 'ok'}; " \
               f"{name_b}: {snap_b if isinstance(snap_b, Exception) else 'ok'}"
    lines = []
    for path in sorted(set(snap_a) | set(snap_b)):
        x, y = snap_a.get(path), snap_b.get(path)
        if x != y:
            lines.append(f"  {path}: {name_a} has {x}, {name_b} has {y}")
    shown = lines[:limit] + ([f"  ... and {len(lines) - limit} more"] if len(lines) > limit else [])
    return f"{len(lines)} paths differ between {name_a} and {name_b}:\n" + "\n".join(shown)


def wait_converged(nodes, timeout, expected=None, what="trees"):
    """Waits until every (mounting) node in `nodes` shows the same tree, equal to `expected` (a snapshot)
    when given; returns the snapshot and the seconds it took. Fails naming the nodes and paths that differ."""
    nodes = [n for n in nodes if n.mount_enabled]
    start = time.monotonic()
    last = {}

    def same():
        for n in nodes:
            last[n.name] = try_snapshot(n.mount)
        values = list(last.values())
        if any(isinstance(v, Exception) for v in values):
            return False
        if expected is not None and values[0] != expected:
            return False
        return all(v == values[0] for v in values[1:])

    def explain():
        parts = []
        ref_name, ref = ("expected", expected) if expected is not None else (nodes[0].name, last[nodes[0].name])
        for n in nodes:
            if n.name != ref_name and last[n.name] != ref:
                parts.append(describe_difference(ref_name, ref, n.name, last[n.name]))
        if not any(isinstance(v, Exception) for v in last.values()):
            differing = sorted(p for p in set().union(*last.values())
                               if len({str(v.get(p)) for v in last.values()}) > 1)
            parts += [explain_path(nodes, p) for p in differing[:4]]
        return f"{what} did not converge on {', '.join(n.name for n in nodes)}:\n" + "\n".join(parts)

    eventually(same, timeout, explain, interval=0.1)
    return last[nodes[0].name], time.monotonic() - start


def explain_path(nodes, rel):
    """For one path that differs: the revision each node's mount shows and the heads its catalog holds, which
    tells "never received" from "received but not shown"."""
    lines = [f"  {rel}:"]
    for n in nodes:
        path = os.path.join(str(n.mount), rel)
        try:
            shown = os.getxattr(path, "user.hypernet.revision", follow_symlinks=False).decode().strip()
            document = os.getxattr(path, "user.hypernet.id", follow_symlinks=False).decode().strip().lower()
        except OSError as e:
            lines.append(f"    {n.name}: {e.strerror}")
            continue
        try:
            heads = sorted(n.heads(document))
        except sqlite3.Error as e:
            heads = [f"catalog unreadable: {e}"]
        note = "" if heads == [shown] else "  <- the mount does not show the catalog's head"
        lines.append(f"    {n.name}: mount shows {shown[:16]}, catalog heads {[h[:16] for h in heads]}{note}")
    return "\n".join(lines)


# --- addresses -----------------------------------------------------------------------------------------------

def loopback_address(index: int, seq: int) -> str:
    """127.X.Y.Z for node `index` of cluster `seq` of this process: X.Y from the pid, so that parallel runs
    use different addresses; Z from the cluster and node numbers."""
    pid = os.getpid()
    x = 100 + pid % 100
    y = (pid // 100) % 256
    z = 10 + (seq * 8 + index) % 240
    return f"127.{x}.{y}.{z}"


def free_port(host: str) -> int:
    """A TCP port free on `host` right now (the node binds it with SO_REUSEADDR, also across restarts)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- nodes ---------------------------------------------------------------------------------------------------

class ClusterNode(Node):
    """A Node with a name, a listen address, peers and pins; `serve` nodes run without a mount; `host`
    (a netns.Host) makes the daemon run in that network namespace."""

    def __init__(self, directory, bin_path, options=(), quorum=None, fsync_timeout=None, name="n", listen=None,
                 serve=False, host=None):
        super().__init__(directory, bin_path, options=options, quorum=quorum, fsync_timeout=fsync_timeout)
        self.name = name
        self.listen = listen
        self.serve = serve
        self.host = host
        self.peers = []  # HOST:PORT of the other nodes
        self.pins = []  # identity tokens
        self.arguments = []  # further options of `mount`/`serve` (e.g. --fetch-timeout)
        self.token = None  # this node's identity token, once known
        self.max_peers = None  # --max-peers, when given

    def __repr__(self):
        return f"<node {self.name} {self.listen}{' serve' if self.serve else ''}>"

    @property
    def mount_enabled(self):
        return not self.serve

    # the CLI -------------------------------------------------------------------------------------------------
    def run(self, *args, check=True, timeout=60, env_extra=None, prefix=(), text=True):
        env = {k: v for k, v in os.environ.items() if k not in ("HYPERNET_HOME", "HYPERNET_PASSPHRASE")}
        env.update(env_extra or {})
        proc = subprocess.run([*prefix, self.bin, "--home", str(self.home), *map(str, args)], capture_output=True,
                              text=text, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"node {self.name}: `hypernet {' '.join(map(str, args))}` exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}")
        return proc

    def launch_arguments(self):
        args = ["serve"] if self.serve else ["mount", str(self.mount)]
        if self.listen:
            args += ["--listen", self.listen]
        for p in self.peers:
            args += ["--peer", p]
        for p in self.pins:
            args += ["--pin", p]
        if self.max_peers is not None:
            args += ["--max-peers", str(self.max_peers)]
        if not self.serve:
            for option in self.options:
                args += ["-o", option]
            if self.quorum is not None:
                args += ["--quorum", str(self.quorum)]
            if self.fsync_timeout is not None:
                args += ["--fsync-timeout", str(self.fsync_timeout)]
        return args + self.arguments

    def start(self):
        prefix = ["nsenter", f"--net={self.host.netns_path}", "--"] if self.host is not None else []
        self.running = True  # set first: a half-started daemon must still be cleaned up
        proc = self.run(*self.launch_arguments(), check=False, timeout=90, prefix=prefix)
        self.read_pid()
        if proc.returncode != 0:
            raise AssertionError(f"node {self.name}: `hypernet {' '.join(self.launch_arguments()[:1])}` exited "
                                 f"{proc.returncode}: {proc.stderr.strip()}\nlog tail:\n{self.log_tail()}")
        if not self.serve:
            assert self.is_mounted(), f"node {self.name}: `hypernet mount` returned 0 but {self.mount} is not mounted"
        assert self.pid is not None, f"node {self.name}: no pid in {self.home / 'daemon.pid'} after start"
        return self

    def log_tail(self, lines=25):
        return "\n".join(self.log_text().splitlines()[-lines:])

    # identity ------------------------------------------------------------------------------------------------
    def init(self):
        self.token = self.run("init").stdout.strip()
        return self.token

    def export_identity(self, path, passphrase_file):
        self.run("id", "export", path, "--passphrase-file", passphrase_file, env_extra={"HYPERNET_PWHASH": "interactive"})

    def import_identity(self, path, passphrase_file):
        self.token = self.run("id", "import", path, "--passphrase-file", passphrase_file,
                              env_extra={"HYPERNET_PWHASH": "interactive"}).stdout.strip()
        return self.token

    # status --------------------------------------------------------------------------------------------------
    def status(self):
        return self.run("status", timeout=30).stdout

    def backlog(self):
        """(revisions, bytes) from `hypernet status`'s `replication backlog:` line."""
        for line in self.status().splitlines():
            if line.startswith("replication backlog:"):
                fields = line.split()
                return int(fields[2]), int(fields[4])
        raise AssertionError(f"node {self.name}: no `replication backlog:` line in `hypernet status`")

    def status_json(self):
        return json.loads(self.run("status", "--json", timeout=30).stdout)

    def connected_addresses(self):
        """Addresses `hypernet status` shows as connected."""
        result = set()
        for line in self.status().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "connected":
                result.add(fields[0])
        return result

    def fsck(self):
        return self.run("fsck", check=False, timeout=300)

    # the catalog (read-only, also while the daemon runs) -------------------------------------------------
    def query(self, sql, args=()):
        path = self.home / "store" / "catalog.sqlite"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def revisions(self, tree=None):
        """Lowercase hex ids of the revisions in this node's catalog (of `tree`, a hex key, when given)."""
        if tree is None:
            rows = self.query("SELECT lower(hex(id)) FROM revisions")
        else:
            rows = self.query("SELECT lower(hex(id)) FROM revisions WHERE lower(hex(tree)) = ?", (tree,))
        return {r[0] for r in rows}

    def has_revision(self, rev):
        return bool(self.query("SELECT 1 FROM revisions WHERE id = ?", (bytes.fromhex(rev),)))

    def tree_of(self, rev):
        rows = self.query("SELECT lower(hex(tree)) FROM revisions WHERE id = ?", (bytes.fromhex(rev),))
        assert rows and rows[0][0], f"node {self.name}: revision {rev} not in the catalog (or has no tree)"
        return rows[0][0]

    def progress(self):
        """[(peer node key prefix, seq)]: how far into each peer's log this node has stored."""
        return [(r[0][:16], r[1]) for r in self.query("SELECT lower(hex(peer)), seq FROM progress ORDER BY 1")]

    def last_seq(self):
        return self.query("SELECT MAX(seq) FROM revisions")[0][0]

    def heads(self, document_hex):
        rows = self.query("SELECT lower(hex(revision)) FROM heads WHERE lower(hex(document)) = ?", (document_hex,))
        return {r[0] for r in rows}


class Cluster:
    """Nodes made with conftest's make_node, wired as a full mesh. `lab`: a netns.Lab whose hosts the nodes
    run in, in order of `add` (else each node gets its own loopback address)."""

    def __init__(self, make_node, workdir, lab=None):
        self.make_node = make_node
        self.workdir = Path(workdir)
        self.lab = lab
        self.seq = next(_cluster_seq)
        self.nodes = []
        self.passphrase_file = self.workdir / "passphrase.txt"
        helpers.write_file(self.passphrase_file, (PASSPHRASE + "\n").encode(), mode=0o600)

    def __getitem__(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def add(self, name, serve=False, identity=None, pins=(), quorum=None, fsync_timeout=None, options=()):
        """A node (not started). `identity`: a node whose identity this one imports; otherwise a fresh one
        (`hypernet init`). `pins`: nodes whose identities (or tokens) this node pins."""
        index = len(self.nodes)
        host = None
        if self.lab is not None:
            host = self.lab.hosts[index]
            listen = f"{host.ip}:{NETNS_PORT}"
        else:
            ip = loopback_address(index, self.seq)
            listen = f"{ip}:{free_port(ip)}"
        node = self.make_node(start=False, node_class=ClusterNode, label=name, name=name, listen=listen,
                              serve=serve, host=host, quorum=quorum, fsync_timeout=fsync_timeout, options=options)
        if identity is not None:
            export = self.workdir / f"{identity.name}.hnid"
            if not export.exists():
                identity.export_identity(export, self.passphrase_file)
            node.import_identity(export, self.passphrase_file)
            assert node.token == identity.token, \
                f"node {name}: imported identity {node.token} differs from {identity.name}'s {identity.token}"
        else:
            node.init()
        for p in pins:
            node.pins.append(p.token if isinstance(p, Node) else p)
        self.nodes.append(node)
        for other in self.nodes:
            other.peers = [n.listen for n in self.nodes if n is not other]
        return node

    def start(self, nodes=None, connected=True, timeout=20):
        nodes = self.nodes if nodes is None else nodes
        for n in nodes:
            n.start()
        if connected:
            self.wait_connected(timeout=timeout)

    def running(self):
        return [n for n in self.nodes if n.running and n.pid is not None and pid_alive(n.pid)]

    def wait_connected(self, nodes=None, timeout=20):
        """Until every running node shows every other running node connected in `hypernet status`."""
        nodes = self.running() if nodes is None else nodes
        state = {}

        def all_connected():
            ok = True
            for n in nodes:
                state[n.name] = n.connected_addresses()
                ok = ok and all(o.listen in state[n.name] for o in nodes if o is not n)
            return ok

        def explain():
            return "peers not all connected: " + "; ".join(
                f"{n.name} ({n.listen}) sees {sorted(state.get(n.name, ()))}" for n in nodes) + \
                "\n" + "\n".join(f"--- {n.name} log tail:\n{n.log_tail(8)}" for n in nodes)

        eventually(all_connected, timeout, explain, interval=0.2)

    def close(self):
        """Stops every node (stop, then the fixture's cleanup kills what is left). Never raises. With
        $HYPERNET_IT_ARTIFACTS set, each node's log and catalog are copied to a directory there."""
        for n in self.nodes:
            if n.running and n.pid is not None and pid_alive(n.pid):
                try:
                    n.stop()
                except (AssertionError, subprocess.TimeoutExpired) as e:
                    n.problems.append(f"stop at the end of the test failed: {e}")
        for n in self.nodes:
            n.cleanup()
        keep = os.environ.get("HYPERNET_IT_ARTIFACTS")
        if keep:
            for n in self.nodes:
                target = Path(keep) / n.dir.name
                target.mkdir(parents=True, exist_ok=True)
                for source in [n.home / "hypernet.log", *(n.home / "store").glob("catalog.sqlite*")]:
                    if source.exists():
                        shutil.copy2(source, target / source.name)


_LAB_CHECK = None  # netns.available(), asked once per session


@contextlib.contextmanager
def lab_cluster(make_node, workdir, prefix, hosts=3):
    """A Cluster whose nodes run in the hosts of a fresh netns.Lab (partitions with nft). Skips the test where
    namespaces or nft are unavailable; at the end stops the daemons before their namespaces go."""
    global _LAB_CHECK
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not shutil.which("nft"):
        pytest.skip("partitions need nftables (nft)")
    if _LAB_CHECK is None:
        _LAB_CHECK = netns.available()
    if not _LAB_CHECK[0]:
        pytest.skip(f"network namespaces unavailable: {_LAB_CHECK[1]}")
    lab = netns.Lab(prefix, hosts=hosts)
    lab.__enter__()
    cl = Cluster(make_node, workdir, lab=lab)
    try:
        yield cl
    finally:
        cl.close()
        lab.close()


def sharing_pair(cluster, folder, *roles):
    """Starts nodes a (alice) and b (bob, pinning alice's tree), each the other's contact, and has alice grant bob
    `roles` on her new directory `folder`; returns (a, b)."""
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])
    cluster.start()
    os.makedirs(a.p(folder))
    a.run("contact", "add", "bob", b.token)
    b.run("contact", "add", "alice", a.token)
    a.run("grant", a.p(folder), "bob", *roles)
    return a, b


@contextlib.contextmanager
def capture_loopback(path, hosts):
    """tcpdump of every packet from or to `hosts` on the loopback interface into `path`, for the block's time
    (started before the block runs)."""
    expression = " or ".join(f"host {h}" for h in hosts)
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(path), *expression.split()],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        eventually(lambda: path.exists() and path.stat().st_size > 0, 10, "tcpdump did not start capturing")
        yield
    finally:
        tcpdump.terminate()
        try:
            tcpdump.wait(10)
        except subprocess.TimeoutExpired:
            tcpdump.kill()
            tcpdump.wait()


def write(path, data: bytes, fsync=False, append=False):
    """Writes `data` to `path` (O_TRUNC, or O_APPEND), optionally fsyncs (an fsync error propagates)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_errno(fd):
    try:
        os.fsync(fd)
        return None
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
