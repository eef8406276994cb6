"""Partial replicas (issue 17, item 1): a node holding alice's tree on demand (bob, alice's contact, or pinning
her with `--content on-demand`) stores every record and directory listing at once and fetches a file's content
only when it is read; offline, content it holds still reads and content it lacks fails with EIO after
`--fetch-timeout`; it never acks a file revision it may lack the content of, so it counts toward no quorum for it.
`hypernet keep` fetches a subtree now and keeps it out of the cache's evictions, and what it could not fetch when a
peer (re)connects; `user.hypernet.local` and
`hypernet status` show what is held and what the cache did; `--max-store-size` evicts cached content before it
refuses a write.

Nodes run on their own loopback addresses (cluster.py). No traffic leaves the machine.
"""

import json
import os
import time

import pytest

from cluster import eventually
from helpers import doc_id, errno_of, random_bytes, read_file, read_or_none, write_file

pytestmark = pytest.mark.replication

FILES = 8
SIZE = 1 << 20


def shared_tree(cluster, bob_pins_on_demand=False, bob_arguments=(), alice_quorum=None, bob_quorum=None):
    """alice, and bob, who holds her tree on demand: as her contact, or also by `pin --content on-demand`. alice
    shares the folder `shared` (FILES files of SIZE random bytes) with bob. Returns (alice, bob, contents)."""
    alice = cluster.add("alice", quorum=alice_quorum, fsync_timeout=3)
    bob = cluster.add("bob", quorum=bob_quorum)
    bob.arguments += list(bob_arguments)
    if bob_pins_on_demand:
        bob.run("pin", alice.token, "--content", "on-demand")
    bob.run("contact", "add", "alice", alice.token)
    cluster.start()
    alice.run("contact", "add", "bob", bob.token)
    os.mkdir(alice.p("shared"))
    contents = {f"f{i}.bin": random_bytes(SIZE, seed=i) for i in range(FILES)}
    for name, data in contents.items():
        write_file(alice.p("shared", name), data)
    alice.run("grant", alice.p("shared"), "bob", "read")
    listed = lambda: sorted(os.listdir(bob.p("@alice", "shared"))) if os.path.isdir(bob.p("@alice", "shared")) else []
    eventually(lambda: listed() == sorted(contents), 20, lambda: f"bob's /@alice/shared lists {listed()}")
    for name in contents:
        path = bob.p("@alice", "shared", name)
        eventually(lambda: os.stat(path).st_size == SIZE, 10, lambda: f"bob sees {name} of size {os.stat(path).st_size}")
    return alice, bob, contents


def settled(read, what, quiet=1.0, timeout=15):
    """`read()` once it gave the same value for `quiet` seconds (replication and fetches record in the background);
    fails the test if `what` kept changing for `timeout` seconds."""
    last, since = read(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"{what} kept changing for {timeout} s")


def settled_pack_bytes(node, quiet=1.0, timeout=15):
    """The node's pack bytes once they stopped changing for `quiet` seconds."""
    return settled(node.pack_bytes, f"{node.name}'s packs", quiet, timeout)


@pytest.mark.timeout(180)
def test_a_contacts_tree_lists_at_once_and_a_read_fetches_only_that_files_chunks(cluster):
    alice, bob, contents = shared_tree(cluster)
    before = settled_pack_bytes(bob)
    # The listing came with the records; none of the 8 MiB of content did.
    assert before < SIZE, f"bob stored {before} bytes of packs before reading anything: the content came with the tree"
    held = lambda: bob.query("SELECT COUNT(*), COALESCE(SUM(c.length), 0) FROM chunks c JOIN revisions r "
                             "ON c.revision = r.id WHERE r.kind = 1 AND r.tree = (SELECT tree FROM revisions "
                             "WHERE tree != (SELECT tree FROM revisions GROUP BY tree ORDER BY MIN(seq) LIMIT 1) "
                             "LIMIT 1)")[0]
    assert held()[0] == 0, f"bob holds {held()} (chunks, bytes) of alice's files before reading any"
    assert read_file(bob.p("@alice", "shared", "f3.bin")) == contents["f3.bin"], "bob read other bytes than alice wrote"
    grown = settled_pack_bytes(bob) - before
    assert SIZE * 0.9 <= held()[1] <= SIZE * 1.1, f"bob holds {held()} (chunks, bytes) of alice's files after one"
    assert SIZE * 0.9 <= grown < 1.5 * SIZE, f"reading one {SIZE}-byte file grew bob's packs by {grown} bytes"
    # Read again: held now, nothing fetched.
    assert read_file(bob.p("@alice", "shared", "f3.bin")) == contents["f3.bin"]
    assert settled_pack_bytes(bob) - before == grown, "a second read of held content fetched it again"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


@pytest.mark.timeout(180)
def test_offline_held_content_reads_and_content_not_held_fails_with_eio_after_the_timeout(cluster):
    alice, bob, contents = shared_tree(cluster, bob_pins_on_demand=True, bob_arguments=["--fetch-timeout", "2"])
    assert read_file(bob.p("@alice", "shared", "f1.bin")) == contents["f1.bin"]
    missing = bob.p("@alice", "shared", "f2.bin")
    document = doc_id(missing).lower()
    alice.stop()
    eventually(lambda: alice.listen not in bob.connected_addresses(), 10, "bob still shows alice connected")
    # Held content and every listing read without a peer.
    assert sorted(os.listdir(bob.p("@alice", "shared"))) == sorted(contents)
    assert read_file(bob.p("@alice", "shared", "f1.bin")) == contents["f1.bin"]
    bob.allow_log_errors(document)
    start = time.monotonic()
    code = errno_of(read_file, missing)
    waited = time.monotonic() - start
    assert code == "EIO", f"reading content no peer can send gave {code}, not EIO"
    assert waited >= 2, f"EIO after {waited:.1f} s, before the 2 s fetch timeout"
    assert document in bob.log_text().lower(), "no log line names the document that could not be fetched"
    # The peer back: the same read completes, byte-exact.
    alice.start()
    eventually(lambda: read_or_none(missing) == contents["f2.bin"], 30, "bob cannot read f2.bin once alice is back")


@pytest.mark.timeout(180)
def test_an_on_demand_node_does_not_count_toward_a_files_quorum_and_a_full_copy_does(cluster):
    alice, bob, contents = shared_tree(cluster, alice_quorum=2)
    # bob stores the revision (it lists the file at once) but never acks it: fsync with quorum 2 fails.
    path = alice.p("shared", "quorum.txt")
    with open(path, "wb") as f:
        f.write(b"needs two copies\n")
        f.flush()
        code = errno_of(os.fsync, f.fileno())
    assert code == "EIO", f"fsync with quorum 2 and only an on-demand peer gave {code}, not EIO"
    eventually(lambda: os.path.exists(bob.p("@alice", "shared", "quorum.txt")), 10, "bob never got quorum.txt")
    assert read_file(bob.p("@alice", "shared", "quorum.txt")) == b"needs two copies\n"
    # bob keeps a full copy from now on: he fetches what he lacks, and then a new write reaches its quorum on him.
    bob.run("pin", "alice", "--content", "all")
    absent = lambda: bob.query("SELECT COUNT(*) FROM absent")[0][0]
    eventually(lambda: absent() == 0, 30, lambda: f"bob still lacks {absent()} chunks of the tree he now pins in full")
    assert read_file(bob.p("@alice", "shared", "f5.bin")) == contents["f5.bin"]
    path = alice.p("full.txt")
    with open(path, "wb") as f:
        f.write(b"two copies\n")
        f.flush()
        os.fsync(f.fileno())
    alice.allow_log_errors()


@pytest.mark.timeout(240)
def test_reading_four_times_the_cache_keeps_it_within_its_bound_and_keeps_what_was_read_twice(cluster):
    bound = 2 << 20
    alice, bob, contents = shared_tree(cluster, bob_arguments=["--cache-size", "2M"])
    cached = lambda: bob.query("SELECT COALESCE(SUM(c.length), 0) FROM cached k JOIN chunks c ON c.id = k.id")[0][0]
    document = bytes.fromhex(doc_id(bob.p("@alice", "shared", "f0.bin")))
    absent_of_f0 = lambda: bob.query("SELECT COUNT(*) FROM absent a JOIN revisions r ON r.id = a.revision "
                                     "WHERE r.document = ?", (document,))[0][0]
    for _ in range(2):  # read twice (more than the cache's 1 s correlation period apart): protected from a scan
        assert read_file(bob.p("@alice", "shared", "f0.bin")) == contents["f0.bin"]
        time.sleep(1.5)
    for name in sorted(contents)[1:]:  # 7 MiB read once
        assert read_file(bob.p("@alice", "shared", name)) == contents[name], f"bob read other bytes of {name}"
        assert cached() <= bound, f"bob caches {cached()} bytes, past its {bound}-byte bound"
    assert absent_of_f0() == 0, f"one scan evicted {absent_of_f0()} chunks of the file read twice"
    # Evicted content is fetched again, byte-exact.
    assert read_file(bob.p("@alice", "shared", "f1.bin")) == contents["f1.bin"]
    assert cached() <= bound
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


def local(path):
    return os.getxattr(path, "user.hypernet.local").decode()


def kept_flag(path):
    return os.getxattr(path, "user.hypernet.keep").decode()


def held_chunks(node, path):
    """How many chunks the revisions of the file at `path` list that `node` holds, and how many they list (each chunk
    counts with the first revision that lists it: a file written once has its content listed by one of them)."""
    document = bytes.fromhex(doc_id(path))
    count = lambda table: node.query(f"SELECT COUNT(*) FROM {table} t JOIN revisions r ON r.id = t.revision "
                                     "WHERE r.document = ?", (document,))[0][0]
    held = count("chunks")
    listed = held + count("absent")
    assert listed > 0, f"no revision of {path} lists a chunk"
    return held, listed


@pytest.mark.timeout(240)
def test_a_kept_folder_reads_offline_with_the_files_added_to_it_later_and_local_shows_what_is_held(cluster):
    alice, bob, contents = shared_tree(cluster, bob_arguments=["--fetch-timeout", "2"])
    kept = {f"k{i}.bin": random_bytes(SIZE, seed=100 + i) for i in range(2)}
    os.mkdir(alice.p("shared", "kept"))
    for name, data in kept.items():
        write_file(alice.p("shared", "kept", name), data)
    folder = bob.p("@alice", "shared", "kept")
    listed = lambda: sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    eventually(lambda: listed() == sorted(kept), 20, lambda: f"bob's kept folder lists {listed()}")
    for name in kept:
        path = os.path.join(folder, name)
        eventually(lambda: os.stat(path).st_size == SIZE, 10, lambda: f"bob sees {name} of size {os.stat(path).st_size}")

    # user.hypernet.local: nothing held before a read, all of it after; a directory sums its files.
    f0 = bob.p("@alice", "shared", "f0.bin")
    assert local(f0) == f"0 {SIZE}"
    assert local(folder) == f"0 {2 * SIZE}"
    assert read_file(f0) == contents["f0.bin"]
    assert local(f0) == f"{SIZE} {SIZE}"
    assert local(alice.p("shared", "f0.bin")) == f"{SIZE} {SIZE}", "alice's own tree is held in full"

    assert kept_flag(folder) == "0"
    summary = json.loads(bob.run("keep", folder, "--json").stdout)
    assert summary["files"] == 2 and summary["bytes"] == 2 * SIZE and summary["incomplete"] == 0, summary
    assert summary["fetched"] >= 2 * SIZE, summary
    assert local(folder) == f"{2 * SIZE} {2 * SIZE}"
    assert kept_flag(folder) == "1" and kept_flag(os.path.join(folder, "k0.bin")) == "1"
    assert kept_flag(f0) == "0"
    assert bob.status_json()["cache"]["keptBytes"] >= 2 * SIZE

    # A file alice adds to the kept folder later is fetched as it arrives.
    later = random_bytes(SIZE, seed=200)
    write_file(alice.p("shared", "kept", "later.bin"), later)
    kept["later.bin"] = later
    path = os.path.join(folder, "later.bin")
    eventually(lambda: os.path.exists(path) and local(path) == f"{SIZE} {SIZE}", 30,
               lambda: f"bob holds {local(path) if os.path.exists(path) else 'no'} bytes of later.bin")

    missing = bob.p("@alice", "shared", "f2.bin")
    document = doc_id(missing).lower()
    alice.stop()
    eventually(lambda: alice.listen not in bob.connected_addresses(), 10, "bob still shows alice connected")
    for name, data in kept.items():
        assert read_file(os.path.join(folder, name)) == data, f"bob read other bytes of kept {name} offline"
    bob.allow_log_errors(document)
    start = time.monotonic()
    assert errno_of(read_file, missing) == "EIO", "content neither kept nor read did not give EIO offline"
    assert time.monotonic() - start >= 2, "EIO before the 2 s fetch timeout"
    # unkeep of a file kept only through its folder is refused; of the folder, it keeps the content (evictable).
    assert errno_of(os.setxattr, os.path.join(folder, "k0.bin"), "user.hypernet.keep", b"0") == "EINVAL"
    bob.run("unkeep", folder)
    assert kept_flag(folder) == "0"
    assert local(folder) == f"{3 * SIZE} {3 * SIZE}", "unkeep deleted content"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


@pytest.mark.timeout(180)
def test_a_folder_kept_while_its_only_holder_is_down_is_fetched_when_it_comes_back(cluster):
    alice, bob, contents = shared_tree(cluster, bob_arguments=["--fetch-timeout", "2"])
    folder = bob.p("@alice", "shared")
    alice.stop()
    eventually(lambda: alice.listen not in bob.connected_addresses(), 10, "bob still shows alice connected")
    proc = bob.run("keep", folder, "--json", check=False)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1 and summary["incomplete"] == FILES and summary["fetched"] == 0, (summary, proc.stderr)
    assert local(folder) == f"0 {FILES * SIZE}"
    # No command: the keep pass runs again when alice connects (a new revision of her tree would wake it too, but
    # none comes). alice dials bob as she starts: 30 s is for the connection and the 8 MiB transfer.
    alice.start()
    eventually(lambda: local(folder) == f"{FILES * SIZE} {FILES * SIZE}", 30,
               lambda: f"bob holds {local(folder)} bytes of the kept folder after alice came back:\n{bob.log_tail(8)}")
    alice.stop()
    eventually(lambda: alice.listen not in bob.connected_addresses(), 10, "bob still shows alice connected")
    for name, data in contents.items():
        assert read_file(os.path.join(folder, name)) == data, f"bob read other bytes of kept {name} offline"


@pytest.mark.timeout(300)
def test_reading_three_times_the_cache_evicts_nothing_kept_and_after_unkeep_a_scan_evicts_it(cluster):
    bound = 2 << 20
    alice, bob, contents = shared_tree(cluster, bob_arguments=["--cache-size", "2M"])
    names = sorted(contents)
    kept, scanned = names[:2], names[2:]  # 6 MiB read once: 3 times the cache
    path = lambda name: bob.p("@alice", "shared", name)
    cached = lambda: bob.query("SELECT COALESCE(SUM(c.length), 0) FROM cached k JOIN chunks c ON c.id = k.id")[0][0]
    for name in kept:
        os.setxattr(path(name), "user.hypernet.keep", b"1")  # fetched in the background
    settled = lambda: (lambda c: c["keptBytes"] == c["fetchedBytes"] >= 2 * SIZE)(bob.status_json()["cache"])
    eventually(settled, 30, lambda: f"bob's cache after keeping two files: {bob.status_json()['cache']}")
    for name in kept:
        held, listed = held_chunks(bob, path(name))
        assert held == listed, f"bob holds {held} of the {listed} chunks of kept {name}"
    before = bob.status_json()["cache"]
    assert before["bytes"] == 0 and before["hits"] == 0 and before["misses"] == 0, before

    for name in scanned:
        assert read_file(path(name)) == contents[name], f"bob read other bytes of {name}"
        assert cached() <= bound, f"bob caches {cached()} bytes, past its {bound}-byte bound"
    for name in kept:
        held, listed = held_chunks(bob, path(name))
        assert held == listed, f"reading 3 times the cache evicted {listed - held} chunks of kept {name}"
    after = bob.status_json()["cache"]
    listed = sum(held_chunks(bob, path(name))[1] for name in scanned)
    assert after["misses"] == listed, f"{after['misses']} misses for the {listed} chunks of the files read once"
    assert after["fetchedBytes"] - before["fetchedBytes"] == after["bytes"] + after["evictedBytes"], after
    assert after["evictions"] > 0 and after["bytes"] <= bound and after["keptBytes"] == before["keptBytes"], after
    # alice sent at least what bob stored (a request repeated while the first answer was on its way is sent twice).
    assert alice.status_json()["cache"]["servedBytes"] >= after["fetchedBytes"], "alice served less than bob got"

    for name in kept:
        bob.run("unkeep", path(name))
    for name in scanned:
        assert read_file(path(name)) == contents[name]
    for name in kept:
        held, listed = held_chunks(bob, path(name))
        assert held == 0, f"after unkeep, a scan of 3 times the cache left {held} of {listed} chunks of {name}"
        assert read_file(path(name)) == contents[name], f"{name} does not read again after its eviction"
    assert bob.status_json()["cache"]["keptBytes"] == 0
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


@pytest.mark.timeout(300)
def test_a_write_past_max_store_size_evicts_cached_content_first_and_keeps_what_is_kept(cluster):
    limit = 8 << 20
    alice, bob, contents = shared_tree(cluster, bob_arguments=["--max-store-size", "8M"], bob_quorum=1)
    names = sorted(contents)
    path = lambda name: bob.p("@alice", "shared", name)
    bob.run("keep", path(names[0]))
    for name in names[1:]:  # 7 MiB more: the fetches evict what was fetched before to fit
        assert read_file(path(name)) == contents[name], f"bob read other bytes of {name}"
    mine = random_bytes(3 * SIZE, seed=300)  # fits only once cached content is evicted
    write_file(bob.p("mine.bin"), mine, fsync=True)
    assert read_file(bob.p("mine.bin")) == mine
    held, listed = held_chunks(bob, path(names[0]))
    assert held == listed, f"making room evicted {listed - held} chunks of the kept {names[0]}"
    status = bob.status_json()
    assert status["cache"]["evictions"] > 0, status["cache"]
    used = status["statistics"]["packBytes"] + os.path.getsize(bob.home / "store" / "catalog.sqlite")
    assert used <= limit, f"bob's store takes {used} bytes, past its {limit}-byte limit"
    assert "the store reached its size limit" not in bob.log_text(), "a write was refused while the cache had room"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"
