"""The peer table (issue 15, items 7 and 10): a node keeps dialing the addresses it knows, with the back-off
docs/protocol.md ("Dialing") bounds, until they answer; `hypernet peer remove` forgets an address for good;
learned addresses that stay unreachable are forgotten after a documented time. The peer set (issue 17, item 5):
with `--max-peers`, a node keeps that many peers at most and still gets every revision of the trees it follows.

Nodes run on their own loopback addresses (cluster.py). Only the node under test dials: its peers know no
address of it, so a connection proves that it dialed them.
"""

import os
import re
import sqlite3
import time

import pytest

from cluster import eventually, free_port
from helpers import read_file, write_file

pytestmark = pytest.mark.replication

MAXIMUM_BACKOFF = 30  # docs/protocol.md, "Dialing": the delay between dials of an address is capped at 30 s
CONNECT = MAXIMUM_BACKOFF + 8  # the bound, plus a connect and a handshake under load


def dialer_and_listeners(cluster):
    """`a` mounts with --peer to `b` (mounting, same identity) and `c` (a storage node); b and c only listen."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    b.peers = []
    c.peers = []
    return a, b, c


def peer_line(node, address):
    """The `hypernet peer list` line of `address`, or None."""
    for line in node.run("peer", "list").stdout.splitlines():
        if line.split()[:1] == [address]:
            return line
    return None


def wait_connected(node, others, timeout):
    eventually(lambda: all(o.listen in node.connected_addresses() for o in others), timeout,
               lambda: f"node {node.name} did not reach {[o.name for o in others]} within {timeout} s:\n"
                       f"{node.run('peer', 'list').stdout}\n{node.log_tail(10)}")


def replicated(source, target, name):
    data = f"{name} from {source.name}\n".encode()
    write_file(source.p(name), data)

    def arrived():
        try:
            return read_file(target.p(name)) == data
        except OSError:
            return False

    eventually(arrived, 10, lambda: f"{name} written on {source.name} did not show on {target.name}")


@pytest.mark.timeout(240)
def test_a_node_reaches_peers_that_start_after_it_and_peers_that_restart(cluster):
    a, b, c = dialer_and_listeners(cluster)
    a.start()
    # Both refused a few times: the back-off has grown past its first steps.
    eventually(lambda: all("Connection refused" in (peer_line(a, n.listen) or "") for n in (b, c)), 15,
               lambda: f"a does not report the refused dials:\n{a.run('peer', 'list').stdout}")
    time.sleep(5)
    b.start()
    c.start()
    wait_connected(a, (b, c), CONNECT)
    replicated(a, b, "after-start.txt")

    # A peer that goes away and comes back, after a's dials to it failed for a while.
    b.stop()
    eventually(lambda: b.listen not in a.connected_addresses(), 40, "a still shows b connected after b stopped")
    eventually(lambda: "Connection refused" in (peer_line(a, b.listen) or ""), 15,
               lambda: f"a does not report the refused redial of b:\n{a.run('peer', 'list').stdout}")
    time.sleep(5)
    b.start()
    wait_connected(a, (b, c), CONNECT)
    replicated(a, b, "after-restart.txt")

    # One killed: the same.
    c.kill9()
    eventually(lambda: c.listen not in a.connected_addresses(), 40, "a still shows c connected after c died")
    time.sleep(3)
    c.start()
    wait_connected(a, (b, c), CONNECT)


@pytest.mark.timeout(240)
def test_peer_remove_disconnects_stops_dialing_refuses_the_node_and_persists(cluster):
    a, b, c = dialer_and_listeners(cluster)
    b.peers = [a.listen]  # b dials a too: a must refuse it once removed
    cluster.start(connected=False)
    wait_connected(a, (b, c), 20)
    assert peer_line(a, b.listen) is not None

    a.run("peer", "remove", b.listen)
    eventually(lambda: b.listen not in a.connected_addresses() and a.listen not in b.connected_addresses(), 10,
               lambda: f"a and b still connected after `peer remove`:\n{a.status()}\n{b.status()}")
    assert peer_line(a, b.listen) is None, a.run("peer", "list").stdout
    # b keeps dialing a (configured there) and c tells a about b (peer exchange): a stays apart from b.
    time.sleep(6)
    assert b.listen not in a.connected_addresses() and a.listen not in b.connected_addresses(), \
        f"b reconnected to a after `peer remove`:\n{a.status()}\n{a.log_tail(10)}"
    assert peer_line(a, b.listen) is None, a.run("peer", "list").stdout
    assert c.listen in a.connected_addresses()
    assert "removed with `peer remove`" in a.log_text()

    # Across a restart of a (started without --peer b: the user no longer configures it).
    a.stop()
    a.peers = [c.listen]
    a.start()
    wait_connected(a, (c,), 20)
    time.sleep(4)
    assert b.listen not in a.connected_addresses() and a.listen not in b.connected_addresses(), \
        f"b reconnected to a after a restart:\n{a.status()}"
    assert peer_line(a, b.listen) is None

    # An address not in the table: one line, exit 1, through the daemon and without one.
    unknown = a.run("peer", "remove", "127.0.0.1:9", check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip().endswith("not in the peer table: 127.0.0.1:9"), unknown

    # `peer add` brings it back.
    a.run("peer", "add", b.listen)
    wait_connected(a, (b, c), CONNECT)

    # Without a daemon: removed in the store, not dialed at the next start.
    a.stop()
    a.run("peer", "remove", c.listen)
    unknown = a.run("peer", "remove", "127.0.0.1:9", check=False)
    assert unknown.returncode == 1 and "not in the peer table: 127.0.0.1:9" in unknown.stderr, unknown
    a.peers = []
    a.start()
    wait_connected(a, (b,), CONNECT)
    time.sleep(3)
    assert c.listen not in a.connected_addresses() and peer_line(a, c.listen) is None, a.run("peer", "list").stdout


def set_peer_rows(node, rows):
    """Writes peer-table rows into a stopped node's catalog: (address, configured, last_seen, added)."""
    assert not node.running
    db = sqlite3.connect(str(node.home / "store" / "catalog.sqlite"), timeout=10)
    try:
        for address, configured, last_seen, added in rows:
            db.execute("INSERT INTO peers (address, configured, last_seen, added) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(address) DO UPDATE SET configured = excluded.configured, "
                       "last_seen = excluded.last_seen, added = excluded.added",
                       (address, configured, last_seen, added))
        db.commit()
    finally:
        db.close()


@pytest.mark.timeout(180)
def test_learned_addresses_unreachable_for_seven_days_are_forgotten(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", identity=a)
    a.peers = []  # a learns b's and c's addresses from their hellos
    b.peers = [a.listen]
    c.peers = [a.listen]
    cluster.start(connected=False)
    eventually(lambda: all((peer_line(a, n.listen) or " - ").split()[1] != "-" for n in (b, c)), 20,
               lambda: f"a did not learn b and c:\n{a.run('peer', 'list').stdout}")
    assert a.query("SELECT configured FROM peers WHERE address IN (?, ?)", (b.listen, c.listen)) == [(0,), (0,)]
    for n in (a, b, c):
        n.stop()

    # Time passes: b was last seen 8 days ago, c yesterday; two addresses nobody answers at, both 8 days old,
    # one learned and never seen, one configured.
    day = 24 * 3600
    now = int(time.time())
    never_seen, configured = f"127.0.0.1:{free_port('127.0.0.1')}", f"127.0.0.1:{free_port('127.0.0.1')}"
    set_peer_rows(a, [(b.listen, 0, now - 8 * day, now - 9 * day), (c.listen, 0, now - day, now - 9 * day),
                      (never_seen, 0, None, now - 8 * day), (configured, 1, None, now - 8 * day)])
    a.start()
    eventually(lambda: peer_line(a, b.listen) is None and peer_line(a, never_seen) is None, 15,
               lambda: f"a still lists the learned addresses unreachable for 8 days:\n{a.run('peer', 'list').stdout}")
    assert len(re.findall("forgot a learned peer address", a.log_text())) == 2, a.log_tail(10)
    # Failed dials of the others go on; they stay.
    eventually(lambda: all("Connection refused" in (peer_line(a, x) or "") for x in (c.listen, configured)), 15,
               lambda: a.run("peer", "list").stdout)
    assert peer_line(a, b.listen) is None and peer_line(a, never_seen) is None

    # b, back, teaches a its address again (it dials a).
    b.start()
    wait_connected(a, (b,), CONNECT)
    assert peer_line(a, b.listen) is not None


@pytest.mark.timeout(420)
def test_twelve_nodes_with_max_peers_four_each_receive_every_revision(cluster):
    """A writer and 11 storage nodes of its identity, each started with one or two peers (a tree rooted at the
    writer, every third node also given its neighbour) and --max-peers 4: peer exchange teaches every node every
    address, but no node keeps more than 4 peers, and relays carry every revision to every node."""
    nodes = [cluster.add("w", quorum=1)]
    nodes += [cluster.add(f"s{i}", serve=True, identity=nodes[0]) for i in range(1, 12)]
    for i, n in enumerate(nodes):
        n.peers = [] if i == 0 else [nodes[(i - 1) // 2].listen] + ([nodes[i - 1].listen] if i % 3 == 0 else [])
        n.max_peers = 4
    cluster.start(connected=False)
    writer = nodes[0]

    def every_node_holds(revisions, what):
        missing = {}

        def holds():
            missing.clear()
            for n in nodes[1:]:
                lacking = revisions - n.revisions()
                if lacking:
                    missing[n.name] = len(lacking)
            return not missing

        eventually(holds, 120, lambda: f"{what}: revisions missing per node {missing}\n" + "\n".join(
            f"--- {n.name}: {n.status_json()['connections']} connections\n{n.log_tail(6)}" for n in nodes))

    def at_most_four_peers():
        counts = {n.name: n.status_json()["connections"] for n in nodes}
        assert all(c <= 4 for c in counts.values()), f"connections over --max-peers 4: {counts}"
        return counts

    for i in range(3):
        write_file(writer.p(f"early-{i}.txt"), f"early {i}\n".encode())
    every_node_holds(writer.revisions(), "written at start")
    at_most_four_peers()
    # Peer exchange teaches addresses past the cap; they are not all dialed.
    eventually(lambda: any(len(n.run("peer", "list").stdout.splitlines()) > 4 for n in nodes), 60,
               "no node learned more than 4 addresses")
    os.mkdir(writer.p("later"))
    for i in range(3):
        write_file(writer.p(f"later/{i}.txt"), f"later {i}\n".encode())
    every_node_holds(writer.revisions(), "written after peer exchange")
    counts = at_most_four_peers()
    assert all(c >= 1 for c in counts.values()), f"a node has no peer: {counts}"
