"""Multi-source fetch (issue 17, item 2): a node that lacks many chunks of a file asks every connected peer
that may hold them at once (docs/protocol.md, "Multi-source fetch"). Readers of alice's 64 MiB file (her
contacts, holding her tree on demand) get it from alice and from the readers that read it before them, each copy
byte-exact; a source killed mid-read: the read completes from the others; a peer that answers with wrong bytes
(hypernet-peer-double) is dropped, nothing it sent is stored, and the read completes from the honest one. With
super-seeding (issue 17, item 3), four readers starting together on a 32 MiB file serve each other and alice
uploads about one copy. Storage nodes pinning a writer's tree in full fetch a large run's chunks from every
connected holder, not only from the connection that sent the run.

Per-peer bytes come from `hypernet status --json` (`bytesReceived`). Nodes run on their own loopback addresses
(cluster.py). No timing assertions.
"""

import os
import subprocess
import threading

import pytest

from cluster import eventually
from helpers import random_bytes, read_file, write_file
from test_hostile_peers import assert_no_forged_bytes, peer_double

pytestmark = pytest.mark.replication

SIZE = 64 << 20


def swarm(cluster, readers, size=SIZE):
    """alice shares `shared/big.bin` (`size` random bytes) with `readers` contacts, who hold her tree on demand.
    Returns (alice, [readers], data)."""
    alice = cluster.add("alice")
    names = [f"r{i}" for i in range(readers)]
    nodes = [cluster.add(name) for name in names]
    for n in nodes:
        n.run("contact", "add", "alice", alice.token)
    cluster.start()
    for name, n in zip(names, nodes):
        alice.run("contact", "add", name, n.token)
    os.mkdir(alice.p("shared"))
    data = random_bytes(size, seed=17)
    write_file(alice.p("shared", "big.bin"), data)
    for name in names:
        alice.run("grant", alice.p("shared"), name, "read")
    for n in nodes:
        path = n.p("@alice", "shared", "big.bin")
        eventually(lambda: os.path.exists(path) and os.stat(path).st_size == size, 60,
                   lambda: f"{n.name} does not list alice's big.bin:\n{n.log_tail(10)}")
    return alice, nodes, data


def node_key(node):
    return node.status_json()["node"]


def sources(node):
    """The peers (node keys) `node` received chunk bytes from, with the bytes."""
    return {p["node"]: p["bytesReceived"] for p in node.status_json()["peers"] if p.get("bytesReceived")}


def read_all(readers):
    """Reads big.bin on each of `readers` at once; returns {name: bytes}."""
    results = {}

    def read(n):
        results[n.name] = read_file(n.p("@alice", "shared", "big.bin"))

    threads = [threading.Thread(target=read, args=(n,)) for n in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.timeout(600)
def test_readers_fetch_from_several_peers_and_every_copy_is_byte_exact(cluster):
    alice, readers, data = swarm(cluster, 4)
    first, rest = readers[0], readers[1:]
    # The first reader has only alice to fetch from.
    assert read_file(first.p("@alice", "shared", "big.bin")) == data, "the first reader read other bytes"
    for name, got in read_all(rest).items():
        assert got == data, f"{name} read other bytes than alice wrote"
    for n in rest:
        got = sources(n)
        # Directory listings may come from any relay: only a share of the file counts as a source.
        large = {node: size for node, size in got.items() if size >= 1 << 20}
        assert len(large) >= 2, f"{n.name} received a MiB or more from {len(large)} peer(s) only: {got}"
        assert sum(got.values()) >= SIZE, f"{n.name} received {sum(got.values())} bytes in all, less than the file"
    served = {p["node"]: p.get("bytesServed", 0) for p in first.status_json()["peers"]}
    assert sum(served.values()) > 0, f"r0 served nobody: {served}"
    for n in cluster.nodes:
        assert not n.log_findings(), f"node {n.name} logged problems: {n.log_findings()}"


@pytest.mark.timeout(600)
def test_a_source_killed_mid_read_the_read_completes_from_the_others(cluster):
    alice, (held, reader), data = swarm(cluster, 2)
    assert read_file(held.p("@alice", "shared", "big.bin")) == data
    progress, result = [0], {}
    held_key, alice_key = node_key(held), node_key(alice)

    def read():
        out = bytearray()
        with open(reader.p("@alice", "shared", "big.bin"), "rb") as f:
            while piece := f.read(1 << 20):
                out += piece
                progress[0] = len(out)
        result["data"] = bytes(out)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        eventually(lambda: held_key in sources(reader) or "data" in result, 120,
                   lambda: f"the reader never fetched from {held.name}: {sources(reader)}")
        # Killed with requests in flight, most likely: they go to alice.
        held.kill9()
    finally:
        thread.join()
    assert result["data"] == data, f"the read after a source died gave other bytes ({progress[0]} read)"
    assert alice_key in sources(reader)
    for n in (alice, reader):
        n.allow_log_errors()


@pytest.mark.timeout(600)
def test_a_peer_sending_wrong_bytes_is_dropped_and_the_read_completes_from_the_others(cluster):
    alice, (reader,), data = swarm(cluster, 1)
    before = reader.status_json()["connections"]
    # Offers alice's tree (read from alice) and answers every `want` with forged bytes.
    double = subprocess.Popen([peer_double(), "--connect", reader.listen, "--mode", "wrong-chunk", "--source",
                               alice.listen, "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        eventually(lambda: reader.status_json()["connections"] > before, 30,
                   lambda: f"the double never connected to the reader:\n{reader.log_tail(10)}")
        assert read_file(reader.p("@alice", "shared", "big.bin")) == data, "the reader read other bytes"
        out, _ = double.communicate(timeout=120)
    finally:
        if double.poll() is None:
            double.kill()
            double.wait()
    assert double.returncode == 0 and "node closed the connection after" in out, out
    log = reader.log_text()
    assert "peer dropped: sent a chunk whose bytes do not match its id" in log, reader.log_tail(10)
    assert_no_forged_bytes(reader)
    reader.allow_log_errors("rejected chunk", "peer dropped")


def served_by(node):
    """Bytes of chunks `node` sent its peers answering their `want`s, in all."""
    return sum(p.get("bytesServed") or 0 for p in node.status_json()["peers"])


SWARM_SIZE = 32 << 20


@pytest.mark.timeout(600)
def test_super_seeding_readers_starting_together_serve_each_other(cluster):
    """1 seeder + 4 readers of a 32 MiB file, all reading at once (docs/protocol.md, "Super-seeding"): alice tells
    each chunk of her own to one reader first, the readers tell each other what they got (have-sets), so alice sends
    about one copy (this test allows 1.5) and every reader receives a share from other readers."""
    alice, readers, data = swarm(cluster, 4, size=SWARM_SIZE)
    before = served_by(alice)
    for name, got in read_all(readers).items():
        assert got == data, f"{name} read other bytes than alice wrote"
    alice_key = node_key(alice)
    copies = (served_by(alice) - before) / SWARM_SIZE
    for n in readers:
        got = sources(n)
        from_readers = sum(size for node, size in got.items() if node != alice_key)
        assert from_readers >= 1 << 20, f"{n.name} received {from_readers} bytes from the other readers: {got}"
    print(f"alice uploaded {copies:.2f} copies of the file")
    assert copies <= 1.5, f"alice uploaded {copies:.2f} copies of the file"


def tree_chunks(node, tree):
    """{chunk id: length} of the chunks `node` holds listed by revisions of `tree` (hex), and how many it lacks."""
    held = node.query("SELECT lower(hex(c.id)), c.length FROM chunks c JOIN revisions r ON c.revision = r.id "
                      "WHERE lower(hex(r.tree)) = ?", (tree,))
    absent = node.query("SELECT COUNT(*) FROM absent a JOIN revisions r ON a.revision = r.id "
                        "WHERE lower(hex(r.tree)) = ?", (tree,))[0][0]
    return dict(held), absent


@pytest.mark.timeout(600)
def test_storage_nodes_pinning_in_full_fetch_a_large_run_from_every_holder(cluster):
    size = 32 << 20
    writer = cluster.add("w")
    stores = [cluster.add(f"s{i}", serve=True, pins=[writer]) for i in range(3)]
    cluster.start()
    data = random_bytes(size, seed=43)
    write_file(writer.p("big.bin"), data)
    rev = os.getxattr(writer.p("big.bin"), "user.hypernet.revision").decode().strip()
    tree = writer.tree_of(rev)
    # The writer's own listing is read each time: its directory revision may follow the file's (within a second).
    for s in stores:
        eventually(lambda: s.has_revision(rev) and tree_chunks(s, tree) == (tree_chunks(writer, tree)[0], 0), 240,
                   lambda: f"{s.name} holds {len(tree_chunks(s, tree)[0])} of the {len(tree_chunks(writer, tree)[0])} "
                           f"chunks of the tree:\n{s.log_tail(10)}")
    keys = {node_key(n): n.name for n in cluster.nodes}
    received = {s.name: {keys.get(k, k): b for k, b in sources(s).items()} for s in stores}
    print(f"chunk bytes each storage node received, by source: {received}")
    # The chunks listed arrived, checked against their ids (fsck reads them again), each stored once.
    for s in stores:
        assert "consistent" in s.fsck().stdout, f"{s.name}: {s.fsck().stdout}"
        assert s.pack_bytes() <= writer.pack_bytes() * 1.05, \
            f"{s.name} stored {s.pack_bytes()} bytes of packs for the writer's {writer.pack_bytes()}: {received}"
    # A run's chunks come from every holder: storage nodes from each other, and a node from more than one peer.
    large = {name: {peer for peer, b in got.items() if b >= 1 << 20} for name, got in received.items()}
    assert any(peers - {"w"} for peers in large.values()), f"no storage node fetched from another one: {received}"
    assert any(len(peers) >= 2 for peers in large.values()), f"every storage node fetched from one peer: {received}"
    for n in cluster.nodes:
        assert not n.log_findings(), f"node {n.name} logged problems: {n.log_findings()}"
