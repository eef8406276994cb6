"""The peer table (issue 15, items 7 and 10): a node keeps dialing the addresses it knows, with the back-off
docs/protocol.md ("Dialing") bounds, until they answer; `hypernet peer remove` forgets an address for good;
learned addresses that stay unreachable are forgotten after a documented time.

Nodes run on their own loopback addresses (cluster.py). Only the node under test dials: its peers know no
address of it, so a connection proves that it dialed them.
"""

import time

import pytest

from cluster import Cluster, eventually
from helpers import read_file, write_file

pytestmark = pytest.mark.replication

MAXIMUM_BACKOFF = 30  # docs/protocol.md, "Dialing": the delay between dials of an address is capped at 30 s
CONNECT = MAXIMUM_BACKOFF + 8  # the bound, plus a connect and a handshake under load


@pytest.fixture
def cluster(make_node, node_dir):
    cl = Cluster(make_node, node_dir)
    yield cl
    cl.close()


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
