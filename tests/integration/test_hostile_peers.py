"""Hostile peers: a node under attack from misbehaving connections survives, drops each one with one log
line, keeps its memory bounded, and keeps relaying between the honest nodes connected to it.

The attacker is `hypernet-peer-double` (Sources/hypernet-peer-double/main.swift), a peer speaking just
enough of the protocol (Noise XX over TCP, NodeAuth, frames) to misbehave in one way per `--mode`; it exits
0 once the node has closed every connection as expected. Its path comes from $HYPERNET_PEER_DOUBLE, else
it is looked for next to $HYPERNET_BIN (`swift build --product hypernet-peer-double` puts it there):

    HYPERNET_BIN=/work/main/.build-fuzz/debug/hypernet \
    HYPERNET_PEER_DOUBLE=/work/main/.build-fuzz/debug/hypernet-peer-double \
        python3 -m pytest tests/integration/test_hostile_peers.py

Each mode runs 100 hostile connections (flood-empty-chunks: 4), 10 at a time (honest-hello: all at once);
t must survive, log one line per dropped connection (and not much more), keep its RSS growth under 50 MiB and
keep relaying files between the honest nodes meanwhile. Problems found and not yet fixed are in KNOWN_ISSUES.

The caps (docs/protocol.md, "Limits") are checked by counting t's drop lines: connections past 16 from one address
or 256 in all are closed as soon as they are accepted, and a frame that would take the unfinished frames of all
connections past 64 MiB closes its connection; t's RSS is checked too, after the hostile connections have ended.

Topology per mode: `t` (mounts, listens) is attacked; `a` and `b` share its identity and dial only `t`
(they do not listen, so peer exchange cannot connect them to each other): every file written on `a` reaches
`b` through `t`. Everything runs on loopback addresses (cluster.py); the double refuses any other address.
"""

import os
import re
from collections import Counter
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from cluster import Cluster, eventually
from helpers import pid_alive, read_file

pytestmark = pytest.mark.replication

CONNECTIONS = 100
RSS_GROWTH_LIMIT = 50 << 20
REPLICATION = 5.0  # seconds for a file written on one honest node to show on the other (through t)
LINES_PER_CONNECTION = 2  # what t may log per hostile connection: "peer connected" (once authenticated), the drop


class Mode:
    def __init__(self, dropped, parallel=10, connections=CONNECTIONS, args=()):
        self.dropped = dropped  # regex: the one line t logs per dropped hostile connection
        self.parallel = parallel  # connections at once
        self.connections = connections
        self.args = list(args)  # more hypernet-peer-double arguments


MODES = {
    "garbage": Mode(r"warning hypernet: peer dropped: Noise message (failed authentication|too short)"),
    "wrong-key": Mode(r"warning hypernet: peer dropped: invalid node signature over the handshake key"),
    "oversized": Mode(r"warning hypernet: peer dropped: invalid frame length 4294967295"),
    "bad-version": Mode(r"warning hypernet: peer dropped: unsupported format version 9"),
    # Our FIN after half a record is an orderly close from the node's point of view.
    "truncated": Mode(r"info hypernet: peer disconnected"),
    "replay": Mode(r"warning hypernet: peer dropped: Noise message failed authentication"),
    # Pushed chunks are checked against their ids as they arrive: the first junk one drops the peer.
    "flood-chunks": Mode(r"warning hypernet: peer dropped: pushed a chunk whose bytes do not match its id"),
    # Empty chunks, up to 20,000 per connection, on 4 connections: an empty chunk matches no id either.
    "flood-empty-chunks": Mode(r"warning hypernet: peer dropped: pushed a chunk whose bytes do not match its id",
                               parallel=4, connections=4, args=["--frames", "20000"]),
    # Idle after a valid hello: dropped at t's silence limit (30 s), so all at once; from 10 addresses, 10 each
    # (one address may hold 16 connections).
    "honest-hello": Mode(r"warning hypernet: peer dropped: peer silent for 30 s", parallel=CONNECTIONS,
                         args=["--sources", "10"]),
}

# Problems of the node under test found by these tests and reported, not fixed here (Sources/HypernetSync/Node
# is not this suite's to change): the test xfails with the reason while the problem is there, and fails once
# it is gone, so that the entry is removed.
KNOWN_ISSUES: dict[str, str] = {}


def peer_double() -> str:
    path = os.environ.get("HYPERNET_PEER_DOUBLE") or str(Path(helpers.hypernet_bin()).parent / "hypernet-peer-double")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # CI must not pass by skipping.
        pytest.fail(f"hypernet-peer-double not found or not executable: {path} (build it with "
                    f"`swift build --product hypernet-peer-double` or set HYPERNET_PEER_DOUBLE)", pytrace=False)
    return path


def rss_bytes(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


@pytest.fixture
def hub(make_node, node_dir):
    """(t, a, b), started; a and b connected to t only, and replicating through it."""
    cl = Cluster(make_node, node_dir)
    t = cl.add("t")
    a = cl.add("a", identity=t)
    b = cl.add("b", identity=t)
    t.peers = []
    t.max_peers = 256  # what is tested here is the connection caps and budgets, not the cap of kept peers
    for n in (a, b):
        n.peers = [t.listen]
        n.listen = None
    try:
        cl.start(connected=False)
        for n in (a, b):
            eventually(lambda n=n: t.listen in n.connected_addresses(), 20,
                       lambda n=n: f"node {n.name} not connected to t:\n{n.status()}\n{n.log_tail(10)}")
        yield t, a, b
    finally:
        cl.close()


def replicate(source, target, name, via=None):
    """Writes a file on `source`, fails unless it shows on `target` (and `via`) within REPLICATION seconds."""
    data = helpers.random_bytes(3000 + len(name)) + name.encode()
    helpers.write_file(source.p(name), data)
    start = time.monotonic()

    def arrived(node):
        try:
            return read_file(node.p(name)) == data
        except OSError:
            return False

    def explain(missing):
        nodes = [source, target] + ([via] if via is not None else [])
        return f"{name} written on {source.name} did not show on {missing.name}\n" + "\n".join(
            f"--- {n.name}: arrived={arrived(n)}, log tail:\n{n.log_tail(8)}" for n in nodes)

    eventually(lambda: arrived(target), REPLICATION, lambda: explain(target))
    if via is not None:
        eventually(lambda: arrived(via), REPLICATION, lambda: explain(via))
    return time.monotonic() - start


def log_lines_since(node, offset, pattern):
    text = node.log_text()[offset:]
    return [line for line in text.splitlines() if re.search(pattern, line)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", list(MODES))
def test_node_survives_hostile_peer(hub, mode):
    try:
        report = attack_and_check(*hub, mode)
    except AssertionError as e:
        if mode in KNOWN_ISSUES:
            pytest.xfail(f"known issue: {KNOWN_ISSUES[mode]}\n{e}")
        raise
    assert mode not in KNOWN_ISSUES, f"--mode {mode} passes now: remove it from KNOWN_ISSUES ({KNOWN_ISSUES.get(mode)})"
    print(report)


def attack_while_replicating(t, a, b, label, command):
    """Runs the double (`command`) to its end while the honest nodes keep replicating through t, both ways;
    returns (the finished process, its output, the files replicated meanwhile)."""
    attack = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rounds = 0
        while attack.poll() is None or rounds < 2:
            source, target = (a, b) if rounds % 2 == 0 else (b, a)
            replicate(source, target, f"during-{label}-{rounds}", via=t)
            rounds += 1
            time.sleep(0.2)
        output, _ = attack.communicate(timeout=120)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    return attack, output, rounds


def attack_and_check(t, a, b, mode):
    m = MODES[mode]
    double = peer_double()

    # Warm up the path a -> t -> b before measuring t's memory.
    replicate(a, b, "warm-up", via=t)
    before = rss_bytes(t.pid)
    log_offset = len(t.log_text())

    attack, output, rounds = attack_while_replicating(
        t, a, b, mode, [double, "--connect", t.listen, "--mode", mode, "--connections", str(m.connections),
                        "--parallel", str(m.parallel), *m.args])

    # t survives: alive, answers status, its mount works (and holds what a wrote).
    assert pid_alive(t.pid), f"node t died under --mode {mode}\n{t.log_tail(20)}"
    status = t.status()
    assert "listen: " + t.listen in status, status
    helpers.write_file(t.p(f"after-{mode}"), b"still here")
    assert read_file(t.p(f"after-{mode}")) == b"still here"
    assert "warm-up" in os.listdir(t.mount)

    assert attack.returncode == 0, f"hypernet-peer-double --mode {mode} exited {attack.returncode}: {output.strip()}"
    assert (f"the node closed all {m.connections} connections" in output) if m.connections > 1 \
        else "node closed" in output, output

    # One line per dropped hostile connection.
    eventually(lambda: len(log_lines_since(t, log_offset, m.dropped)) >= m.connections, 10,
               lambda: f"expected {m.connections} lines matching {m.dropped!r} in t's log, found "
                       f"{len(log_lines_since(t, log_offset, m.dropped))}:\n{t.log_tail(15)}")
    dropped = log_lines_since(t, log_offset, m.dropped)
    assert len(dropped) == m.connections, f"{len(dropped)} lines matching {m.dropped!r} for {m.connections} connections"
    other_drops = [line for line in log_lines_since(t, log_offset, r"peer (dropped|disconnected)")
                   if not re.search(m.dropped, line)]
    assert not other_drops, "t dropped other peers too:\n" + "\n".join(other_drops[:10])

    # Memory stays bounded.
    after = rss_bytes(t.pid)
    assert after - before < RSS_GROWTH_LIMIT, \
        f"t's RSS grew by {(after - before) >> 20} MiB over {m.connections} {mode} connections " \
        f"({before >> 20} -> {after >> 20} MiB)"

    # The honest nodes are still connected and still replicating.
    for n in (a, b):
        assert t.listen in n.connected_addresses(), f"node {n.name} lost t:\n{n.status()}"
    replicate(b, a, f"after-{mode}-b", via=t)

    # And not much else: a hostile peer must not be able to fill the log.
    new_lines = log_lines_since(t, log_offset, r".")
    limit = LINES_PER_CONNECTION * m.connections + 50
    if len(new_lines) > limit:
        kinds = Counter(re.sub(r"[0-9a-f]{16,}|\d+", "N", line.split(" ", 1)[-1])[:150] for line in new_lines)
        raise AssertionError(f"t logged {len(new_lines)} lines for {m.connections} hostile connections "
                             f"(at most {limit} expected); most frequent:\n"
                             + "\n".join(f"{n:8d}  {kind}" for kind, n in kinds.most_common(4)))
    return f"{mode}: {output.strip()}; t RSS {before >> 20} -> {after >> 20} MiB; {rounds} files replicated meanwhile"


# --- caps: connections and unfinished frames (issue 15, item 1) ------------------------------------------------

PER_ADDRESS = 16  # docs/protocol.md, "Limits": connections accepted at once from one IP address
TOTAL = 256  # and in all
FRAME_BUDGET = 64 << 20  # unfinished frames of all connections together
MAXIMUM_FRAME = 17 << 20


class Cap:
    def __init__(self, args, expected, rss_limit=RSS_GROWTH_LIMIT):
        self.args = args  # hypernet-peer-double arguments
        self.expected = expected  # {regex of t's drop line: (least, most) such lines}
        self.rss_limit = rss_limit  # t's RSS growth allowed, measured after every hostile connection has ended


HOLDERS = FRAME_BUDGET // MAXIMUM_FRAME  # 3 frames of 17 MiB fit in 64 MiB, the fourth does not
CAPS = {
    # 40 idle connections from one address: 16 wait for their handshake limit, 24 are closed at once.
    "per-address": Cap(["--mode", "hold", "--connections", "40", "--parallel", "40", "--sources", "1"], {
        r"peer dropped: over the cap of 16 connections from 127\.254\.0\.1": (40 - PER_ADDRESS, 40 - PER_ADDRESS),
        r"peer dropped: handshake not finished in 10 s": (PER_ADDRESS, PER_ADDRESS)}),
    # 30 authenticated connections each declaring the largest frame and sending 4 MiB of it (the issue's case):
    # three hold the budget until they fall silent for 30 s, the others are closed at their frame's header.
    "frame-budget": Cap(["--mode", "partial-frame", "--connections", "30", "--parallel", "30", "--sources", "2",
                         "--frame-bytes", str(4 << 20)], {
        r"peer dropped: peers' unfinished frames would exceed the 64 MiB budget": (30 - HOLDERS, 30 - HOLDERS),
        r"peer dropped: peer silent for 30 s": (HOLDERS, HOLDERS)}, rss_limit=24 << 20),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cap", list(CAPS))
def test_connections_past_the_caps_and_frames_past_the_budget_are_closed(hub, cap):
    t, a, b = hub
    c = CAPS[cap]
    replicate(a, b, "warm-up", via=t)
    before = rss_bytes(t.pid)
    log_offset = len(t.log_text())
    attack, output, _ = attack_while_replicating(t, a, b, cap, [peer_double(), "--connect", t.listen, *c.args])
    assert attack.returncode == 0, f"hypernet-peer-double {' '.join(c.args)} exited {attack.returncode}: {output}"

    counts = {pattern: len(log_lines_since(t, log_offset, pattern)) for pattern in c.expected}
    for pattern, (least, most) in c.expected.items():
        assert least <= counts[pattern] <= most, \
            f"{counts[pattern]} lines matching {pattern!r} (expected {least} to {most}); all counts: {counts}\n" \
            f"{t.log_tail(10)}"
    connections = int(c.args[c.args.index("--connections") + 1])
    assert sum(counts.values()) == connections, f"{connections} hostile connections, but t logged {counts}"
    others = [line for line in log_lines_since(t, log_offset, r"peer (dropped|disconnected)")
              if not any(re.search(p, line) for p in c.expected)]
    assert not others, "t dropped other peers too:\n" + "\n".join(others[:10])

    # The honest peers stayed, and t gave back what the hostile ones made it hold.
    for n in (a, b):
        assert t.listen in n.connected_addresses(), f"node {n.name} lost t:\n{n.status()}"
    replicate(b, a, f"after-{cap}", via=t)
    after = rss_bytes(t.pid)
    assert after - before < c.rss_limit, \
        f"t's RSS grew by {(after - before) >> 20} MiB over {cap} ({before >> 20} -> {after >> 20} MiB)"


@pytest.mark.timeout(240)
def test_connections_past_the_total_cap_are_closed_at_once(hub):
    t, a, b = hub
    double = peer_double()
    log_offset = len(t.log_text())
    # t holds a and b: 254 idle authenticated peers (from 20 addresses, under the per-address cap) fill it up ...
    fill = TOTAL - 2
    idle = subprocess.Popen([double, "--connect", t.listen, "--mode", "honest-hello", "--connections", str(fill),
                             "--parallel", str(fill), "--sources", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(lambda: len(log_lines_since(t, log_offset, r"info hypernet: peer connected")) >= fill, 20,
                   lambda: f"{len(log_lines_since(t, log_offset, 'peer connected'))} of {fill} idle peers connected "
                           f"to t\n{t.log_tail(5)}")
        # ... so that 20 more are closed as soon as they are accepted.
        extra = subprocess.run([double, "--connect", t.listen, "--mode", "hold", "--connections", "20", "--parallel",
                                "20", "--sources", "20", "--timeout", "5"], capture_output=True, text=True, timeout=60)
        assert extra.returncode == 0, f"connections past the cap: {extra.stdout}"
        refused = log_lines_since(t, log_offset, r"peer dropped: over the cap of 256 connections( |$)")
        assert len(refused) == 20, f"{len(refused)} connections refused past the cap, 20 expected\n{t.log_tail(5)}"
        output, _ = idle.communicate(timeout=90)
        assert idle.returncode == 0, f"idle peers: {output}"
    finally:
        if idle.poll() is None:
            idle.kill()
            idle.wait()
    for n in (a, b):
        assert t.listen in n.connected_addresses(), f"node {n.name} lost t:\n{n.status()}"
    replicate(a, b, "after-total-cap", via=t)


# --- requested chunks whose bytes do not match their ids (issue 21, item 2) --------------------------------------

FORGED_MARKER = b"hypernet-peer-double forged chunk\n"  # the double's forged bytes: this, repeated


def assert_no_forged_bytes(node):
    holding = [str(p) for p in (node.home / "store").rglob("*") if p.is_file() and FORGED_MARKER in p.read_bytes()]
    assert not holding, f"{node.name} stored the forged bytes: {holding}"


@pytest.mark.timeout(240)
def test_requested_chunks_that_do_not_match_their_ids_are_refused(make_node, node_dir):
    """The double relays s's genuine revisions of a file to t (which lacks their chunks) and answers t's `want`
    with bytes that do not hash to the ids asked for. t logs it, closes that connection, stores nothing of the
    bytes and never serves them to c (which dials only t); once t meets s, the file arrives on t and c complete
    and byte-exact, and fsck is clean (docs/protocol.md, "chunk")."""
    cl = Cluster(make_node, node_dir)
    s = cl.add("s")
    t = cl.add("t", identity=s)
    c = cl.add("c", identity=s)
    s.peers, t.peers, c.peers, c.listen = [], [], [t.listen], None
    try:
        cl.start(connected=False)
        eventually(lambda: t.listen in c.connected_addresses(), 20, lambda: f"c not connected to t:\n{c.status()}")
        data = helpers.random_bytes(300_000)
        helpers.write_file(s.p("relayed"), data)
        log_offset = len(t.log_text())
        attack = subprocess.run([peer_double(), "--connect", t.listen, "--mode", "wrong-chunk", "--source", s.listen],
                                capture_output=True, text=True, timeout=60)
        assert attack.returncode == 0, f"hypernet-peer-double --mode wrong-chunk exited {attack.returncode}: " \
                                       f"{attack.stdout}{attack.stderr}\n{t.log_tail(10)}"
        assert "node closed the connection after" in attack.stdout, attack.stdout
        dropped = r"peer dropped: sent a chunk whose bytes do not match its id"
        eventually(lambda: log_lines_since(t, log_offset, dropped), 10, lambda: f"no drop logged:\n{t.log_tail(10)}")
        assert log_lines_since(t, log_offset, r"rejected chunk [0-9a-f]{64}: .*bytes do not match"), t.log_tail(10)
        assert "relayed" not in os.listdir(t.mount)
        for n in (t, c):
            assert_no_forged_bytes(n)

        t.run("peer", "add", s.listen)
        for n in (t, c):
            eventually(lambda n=n: os.path.exists(n.p("relayed")) and read_file(n.p("relayed")) == data, 20,
                       lambda n=n: f"the file did not arrive on {n.name} byte-exact:\n{n.log_tail(10)}")
            assert_no_forged_bytes(n)
            fsck = n.fsck()
            assert fsck.returncode == 0, f"node {n.name}: fsck:\n{fsck.stdout}{fsck.stderr}"
    finally:
        cl.close()
