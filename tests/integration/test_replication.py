"""Replication (issue 3): nodes exchange their logs per tree; every node pinning a tree stores it; fsync waits
for `quorum` nodes; remote changes show in a mount within ~2 s; partitions heal into kept conflicts and
merged directories. Nothing acknowledged is ever lost.

Nodes run on their own loopback addresses (cluster.py), or, for the partition test, in the hosts of a
network-namespace lab (netns.py; skipped when namespaces cannot be made here). No traffic leaves the machine.
"""

import errno
import os
import random
import re
import shutil
import subprocess
import threading
import time

import pytest

import cluster as cluster_module
from cluster import eventually, snapshot, wait_converged, write
from helpers import current_revision, doc_id, hx, read_file

pytestmark = pytest.mark.replication

REMOTE = 2.0  # contract: remote changes show in a mount within ~2 s
FSYNC_TIMEOUT = 3  # --fsync-timeout of the writers whose fsyncs are expected to fail


@pytest.fixture
def lab_cluster(make_node, node_dir):
    with cluster_module.lab_cluster(make_node, node_dir, "hnrepl") as cl:
        yield cl



def replicas(path):
    return int(hx(path, "replicas").decode().strip())


def conflict_lines(path):
    return [line for line in hx(path, "conflicts").decode().splitlines() if line.strip()]


# --- 1. quorum fsync against a storage node, which dies and comes back --------------------------------------

@pytest.mark.timeout(150)
def test_quorum3_fsync_needs_the_storage_node_and_its_backlog_drains_after_a_crash(cluster):
    a = cluster.add("a", fsync_timeout=FSYNC_TIMEOUT)
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()

    directory = a.p("q3")
    os.mkdir(directory)
    os.setxattr(directory, "user.hypernet.quorum", b"3")
    assert hx(directory, "quorum") == b"3", "node a: user.hypernet.quorum set to 3 on q3 does not read back"
    path = os.path.join(directory, "f.txt")
    marker = os.urandom(24).hex().encode()  # incompressible: must never appear in C's packs
    first = b"first version " + marker + b"\n"

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, first)
        assert hx(path, "quorum") == b"3", "node a: q3/f.txt does not inherit quorum 3 from its directory"
        started = time.monotonic()
        os.fsync(fd)
        took = time.monotonic() - started
        # The moment fsync returns: the revision is durable on B and C (catalog rows are written before acks).
        rev = current_revision(path)
        dir_rev = current_revision(directory)
        on_c, on_b, dir_on_c = c.has_revision(rev), b.has_revision(rev), c.has_revision(dir_rev)
    finally:
        os.close(fd)
    print(f"quorum-3 fsync took {took:.2f} s")
    assert on_c, f"quorum-3 fsync on a returned but storage node c's catalog lacks a's revision {rev} of q3/f.txt"
    assert on_b, f"quorum-3 fsync on a returned but node b's catalog lacks a's revision {rev} of q3/f.txt"
    assert dir_on_c, f"quorum-3 fsync on a returned but c lacks the revision {dir_rev} of the directory q3"
    assert replicas(path) >= 3, f"node a: user.hypernet.replicas of q3/f.txt is {replicas(path)} after a quorum-3 fsync"
    packs = c.home / "store" / "packs"
    leaked = [p.name for p in packs.rglob("*") if p.is_file() and marker in p.read_bytes()]
    assert not leaked, f"storage node c holds plaintext of q3/f.txt in {leaked}"

    # C crashes: a quorum-3 fsync fails with EIO after the timeout; the data stays, on A and on B.
    c.kill9()
    second = b"second version, written while c is down\n" * 50
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, second)
        started = time.monotonic()
        try:
            os.fsync(fd)
            failure = None
        except OSError as e:
            failure = errno.errorcode.get(e.errno, str(e.errno))
        took = time.monotonic() - started
        rev2 = current_revision(path)
    finally:
        os.close(fd)
    assert failure == "EIO", f"node a: quorum-3 fsync with c dead gave {failure or 'success'} after {took:.1f} s, " \
                             f"expected EIO after the {FSYNC_TIMEOUT} s timeout"
    assert FSYNC_TIMEOUT - 0.5 <= took <= FSYNC_TIMEOUT + 5, \
        f"node a: quorum-3 fsync failed after {took:.1f} s, expected about {FSYNC_TIMEOUT} s (--fsync-timeout)"
    assert read_file(path) == second, "node a: q3/f.txt lost its content after the failed fsync"
    assert rev2 != rev, "node a: the write after c's crash made no new revision"
    eventually(lambda: os.path.exists(b.p("q3", "f.txt")) and read_file(b.p("q3", "f.txt")) == second, REMOTE,
               "node b does not show the content written on a while c was down")
    assert replicas(path) == 2, f"node a: replicas of q3/f.txt is {replicas(path)} with c down, expected 2 (a and b)"

    # C restarts with the same home: the backlog drains, C holds every revision A has of the tree.
    c.start()
    cluster.wait_connected(timeout=30)
    eventually(lambda: replicas(path) >= 3, 30,
               lambda: f"node a: replicas of q3/f.txt stays {replicas(path)} after c restarted; "
                       f"status:\n{a.status()}\n--- c log:\n{c.log_tail()}")
    tree = a.tree_of(rev2)
    eventually(lambda: a.revisions(tree) <= c.revisions(tree), 30,
               lambda: f"storage node c lacks {len(a.revisions(tree) - c.revisions(tree))} of a's "
                       f"{len(a.revisions(tree))} revisions of the tree after restarting: "
                       f"{sorted(a.revisions(tree) - c.revisions(tree))[:5]}")
    assert c.has_revision(rev) and c.has_revision(rev2), "c lost a revision it held before the crash"
    assert a.backlog()[0] == 0, f"node a: backlog not empty once c holds everything:\n{a.status()}"
    assert read_file(path) == second and read_file(b.p("q3", "f.txt")) == second, "q3/f.txt changed on a or b"
    # And quorum 3 works again.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"third\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert c.has_revision(current_revision(path)), "quorum-3 fsync after c's restart returned before c held it"



@pytest.mark.timeout(120)
def test_a_replica_that_got_a_revision_while_its_writer_was_away_acks_it_when_they_meet(cluster):
    """C stores a's revision from b while a is down, so a never sees C's ack. When a comes back, a's log sends
    the revision to C again and C acks it again (protocol.md, step 8: a revision acked before the connection
    to its sender was made is acked anew), so a counts C among its replicas."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start(nodes=[a, b])
    path = a.p("away.txt")
    write(path, b"written while c is not there\n", fsync=True)
    rev = current_revision(path)
    eventually(lambda: b.has_revision(rev), REMOTE, "node b did not get a's revision")
    eventually(lambda: replicas(path) == 2, REMOTE, lambda: f"node a: replicas of away.txt is {replicas(path)}, expected 2")

    a.stop()
    c.start()
    eventually(lambda: c.has_revision(rev), 20, "storage node c did not get a's revision from b")
    on_b = b.p("away.txt")
    eventually(lambda: replicas(on_b) == 3, REMOTE, lambda: f"node b: replicas of away.txt is {replicas(on_b)}, expected 3")

    a.start()
    cluster.wait_connected(timeout=30)
    eventually(lambda: replicas(path) == 3, 15,
               lambda: f"node a never learned that c holds its revision (replicas {replicas(path)}): c did not ack it again")

# --- 2. every kind of change, both ways -----------------------------------------------------------------------

def _operations(rng):
    """(label, function(root)) pairs: every kind of change, applied under a node's base directory."""
    big = rng.randbytes(1_500_000)

    def atomic_save(root):
        write(os.path.join(root, "documents", ".readme.md.tmp"), b"# saved by rename-over\n" + rng.randbytes(300))
        os.rename(os.path.join(root, "documents", ".readme.md.tmp"), os.path.join(root, "documents", "readme.md"))

    return [
        ("create a file", lambda r: write(os.path.join(r, "hello.txt"), b"hello world\n")),
        ("mkdir", lambda r: os.mkdir(os.path.join(r, "docs"))),
        ("create a file in a directory", lambda r: write(os.path.join(r, "docs", "readme.md"), rng.randbytes(10_000))),
        ("overwrite (O_TRUNC)", lambda r: write(os.path.join(r, "hello.txt"), b"hello again, longer than before\n")),
        ("append", lambda r: write(os.path.join(r, "docs", "readme.md"), b"\nappended line\n", append=True)),
        ("rename into a directory", lambda r: os.rename(os.path.join(r, "hello.txt"), os.path.join(r, "docs", "hello.txt"))),
        ("rename a directory", lambda r: os.rename(os.path.join(r, "docs"), os.path.join(r, "documents"))),
        ("create a 1.5 MB file", lambda r: write(os.path.join(r, "big.bin"), big)),
        ("rename over an existing file", atomic_save),
        ("symlink", lambda r: os.symlink("documents/hello.txt", os.path.join(r, "link"))),
        ("chmod", lambda r: os.chmod(os.path.join(r, "big.bin"), 0o600)),
        ("truncate", lambda r: os.truncate(os.path.join(r, "documents", "readme.md"), 100)),
        ("overwrite the middle", lambda r: _pwrite(os.path.join(r, "big.bin"), b"X" * 5000, 700_000)),
        ("delete a file", lambda r: os.unlink(os.path.join(r, "big.bin"))),
        ("delete a symlink", lambda r: os.unlink(os.path.join(r, "link"))),
        ("mkdir another", lambda r: os.mkdir(os.path.join(r, "empty"))),
        ("rmdir", lambda r: os.rmdir(os.path.join(r, "empty"))),
    ]


def _pwrite(path, data, offset):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


@pytest.mark.timeout(150)
def test_every_kind_of_change_shows_on_the_other_node_within_two_seconds(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    assert doc_id(str(a.mount)) == doc_id(str(b.mount)), "a and b (one identity) have different root documents"
    rng = random.Random(3)
    slow = []
    for src, dst in ((a, b), (b, a)):
        base = src.p(f"from-{src.name}")
        os.mkdir(base)
        wait_converged([src, dst], REMOTE, what=f"mkdir from-{src.name} on {src.name}")
        for label, op in _operations(rng):
            op(base)
            _, took = wait_converged([src, dst], REMOTE, what=f"after `{label}` on {src.name}")
            slow.append((took, f"{label} {src.name}->{dst.name}"))
    print("slowest propagation: " + ", ".join(f"{what} {t:.2f} s" for t, what in sorted(slow)[-3:]))

    # sed -i on B (a rename-over save) of a file created on A: a new revision of the same document on A.
    on_a, on_b = a.p("from-a", "documents", "hello.txt"), b.p("from-a", "documents", "hello.txt")
    document = doc_id(on_a)
    assert doc_id(on_b) == document, "from-a/documents/hello.txt has different document ids on a and b"
    before = read_file(on_b)
    subprocess.run(["sed", "-i", "s/hello/HELLO/", on_b], check=True, timeout=30)
    expected = before.replace(b"hello", b"HELLO")
    assert read_file(on_b) == expected
    eventually(lambda: read_file(on_a) == expected, REMOTE,
               lambda: f"node a shows {read_file(on_a)!r} for the file `sed -i`-ed on b, expected {expected!r}")
    assert doc_id(on_b) == document, f"`sed -i` on b gave from-a/documents/hello.txt a new document id on b"
    assert doc_id(on_a) == document, \
        f"after `sed -i` on b, node a shows document id {doc_id(on_a)} for hello.txt, expected {document}"
    assert current_revision(on_a) == current_revision(on_b), "a and b show different revisions of hello.txt"
    wait_converged([a, b], REMOTE, what="after `sed -i` on b")


@pytest.mark.timeout(150)
def test_changes_arriving_while_a_mount_starts_show_in_it(cluster):
    """B streams overwrites while A starts its mount. A first ran as a storage node (`serve`) with the same
    identity, so its store holds 600 documents its tree was never shown for: the mount's start applies them
    (seconds), which makes the start-up window wide enough to hit every time."""
    b = cluster.add("b")
    a = cluster.add("a", identity=b, serve=True)
    cluster.start()
    os.mkdir(b.p("many"))
    count = 600
    for k in range(count):
        write(b.p("many", f"f{k}.txt"), b"initial %d\n" % k)
    eventually(lambda: b.revisions() <= a.revisions(), 30,
               lambda: f"a (serve) lacks {len(b.revisions() - a.revisions())} of b's revisions")
    a.stop()
    a.serve = False  # the same home, now mounted

    def overwrite_all():
        for k in range(count):
            write(b.p("many", f"f{k}.txt"), b"overwritten %d\n" % k)
            time.sleep(0.008)

    writer = threading.Thread(target=overwrite_all, name="overwrite-on-b")
    writer.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        a.start()
        print(f"a's mount took {time.monotonic() - started:.1f} s to start")
    finally:
        writer.join(60)
    # The daemon registers for received revisions before its peer node starts, so none is missed.
    wait_converged([a, b], 10, what="after b's overwrites while a's mount started")


# --- 3. an offline node catches up -----------------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_a_node_that_was_offline_catches_up_with_200_changes(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    rng = random.Random(200)
    files, dirs = [], ["."]
    for i in range(5):
        os.mkdir(a.p(f"d{i}"))
        dirs.append(f"d{i}")
    for i in range(20):
        rel = os.path.join(rng.choice(dirs), f"base{i}.txt")
        write(a.p(rel), b"base %d\n" % i)
        files.append(rel)
    wait_converged([a, b], 10, what="initial tree")

    b.stop()
    counts = {}
    for i in range(200):
        choice = rng.random()
        if choice < 0.3 or len(files) < 5:
            kind, rel = "create", os.path.join(rng.choice(dirs), f"new{i}.txt")
            write(a.p(rel), rng.randbytes(rng.randrange(0, 3000)))
            files.append(rel)
        elif choice < 0.5:
            kind = "overwrite"
            write(a.p(rng.choice(files)), b"overwritten at step %d\n" % i)
        elif choice < 0.65:
            kind = "append"
            write(a.p(rng.choice(files)), b"appended at step %d\n" % i, append=True)
        elif choice < 0.8:
            kind, old = "rename", rng.choice(files)
            new = os.path.join(rng.choice(dirs), f"renamed{i}.txt")
            os.rename(a.p(old), a.p(new))
            files[files.index(old)] = new
        elif choice < 0.92:
            kind, old = "delete", rng.choice(files)
            os.unlink(a.p(old))
            files.remove(old)
        else:
            kind = "mkdir"
            rel = os.path.join(rng.choice(dirs), f"dir{i}")
            os.mkdir(a.p(rel))
            dirs.append(rel)
        counts[kind] = counts.get(kind, 0) + 1
    expected = snapshot(a.mount)
    print(f"200 changes while b was offline: {counts}; {len(expected)} entries")

    started = time.monotonic()
    b.start()
    _, took = wait_converged([a, b], 30, expected=expected, what="after b came back online")
    print(f"b caught up {time.monotonic() - started:.1f} s after its start")
    assert snapshot(a.mount) == expected, "node a's tree changed while b caught up"


# --- 4. partition: conflicting edits and concurrent creates ---------------------------------------------------

@pytest.mark.timeout(180)
def test_partition_keeps_both_edits_and_merges_directories(lab_cluster):
    cl = lab_cluster
    a = cl.add("a")
    b = cl.add("b", identity=a)
    c = cl.add("c", serve=True, pins=[a])
    cl.start()
    os.mkdir(a.p("shared"))
    write(a.p("shared", "doc.txt"), b"original\n")
    wait_converged([a, b], 5, what="before the partition")
    original = current_revision(a.p("shared", "doc.txt"))
    eventually(lambda: c.has_revision(original), 5, "storage node c never got shared/doc.txt before the partition")

    cl.lab.partition([a.host], [b.host, c.host])
    from_a, from_b = b"edited on a during the partition\n", b"edited on b during the partition, longer\n"
    write(a.p("shared", "doc.txt"), from_a)
    write(b.p("shared", "doc.txt"), from_b)
    write(a.p("shared", "onA.txt"), b"created on a\n")
    write(b.p("shared", "onB.txt"), b"created on b\n")
    rev_a, rev_b = current_revision(a.p("shared", "doc.txt")), current_revision(b.p("shared", "doc.txt"))
    assert rev_a != rev_b
    eventually(lambda: c.has_revision(rev_b), 5,
               lambda: f"storage node c, on b's side of the partition and connected to b, did not get b's edit "
                       f"{rev_b[:16]}; c's progress per peer (node, seq): {c.progress()}; b's last seq: {b.last_seq()}")
    time.sleep(REMOTE)
    assert read_file(b.p("shared", "doc.txt")) == from_b, "a's edit crossed the partition"
    assert not os.path.exists(b.p("shared", "onA.txt")), "a's new file crossed the partition"
    assert not c.has_revision(rev_a), "a's revision reached c across the partition"

    healed = time.monotonic()
    cl.lab.heal()
    for n in (a, b, c):
        eventually(lambda: n.has_revision(rev_a) and n.has_revision(rev_b), 45,
                   lambda: f"node {n.name} holds a's edit: {n.has_revision(rev_a)}, b's edit: {n.has_revision(rev_b)} "
                           f"after the heal\n{n.log_tail(10)}")
    tree, took = wait_converged([a, b], 20, what="after the heal")
    print(f"converged {time.monotonic() - healed:.1f} s after the heal")
    content = read_file(a.p("shared", "doc.txt"))
    assert content in (from_a, from_b), f"shared/doc.txt after the heal is neither edit: {content!r}"
    winner = current_revision(a.p("shared", "doc.txt"))
    assert winner == current_revision(b.p("shared", "doc.txt")), "a and b show different winning revisions"
    assert winner in (rev_a, rev_b), f"the winner {winner} is neither edit ({rev_a}, {rev_b})"
    loser = rev_b if winner == rev_a else rev_a
    for n in (a, b):
        lines = eventually(lambda: conflict_lines(n.p("shared", "doc.txt")), REMOTE,
                           f"node {n.name}: user.hypernet.conflicts of shared/doc.txt is empty after the heal")
        assert any(line.split()[0] == loser for line in lines), \
            f"node {n.name}: user.hypernet.conflicts {lines} does not list the losing head {loser}"
    for name, data in (("onA.txt", b"created on a\n"), ("onB.txt", b"created on b\n")):
        assert f"shared/{name}" in tree, f"shared/{name} missing after the heal (directories not merged): {sorted(tree)}"
        for n in (a, b):
            assert read_file(n.p("shared", name)) == data, f"node {n.name}: shared/{name} has the wrong content"


@pytest.mark.timeout(120)
def test_a_relay_that_holds_back_its_relays_still_delivers_what_the_direct_path_lost(lab_cluster):
    """In a full mesh, c gets a's revisions from a directly and b's relays of them are echoes: c asks b to hold
    them back (`prune`, protocol.md "Relaying"), and b then sends them in batches about a second late. When the
    direct path a→c silently drops everything (its connection still looks open), b's held runs must still bring
    c every revision of a."""
    cl = lab_cluster
    a = cl.add("a")
    b = cl.add("b", identity=a)
    c = cl.add("c", serve=True, pins=[a])
    cl.start()
    cl.wait_connected(timeout=30)
    for i in range(20):
        write(a.p(f"warm-{i}.txt"), b"before the cut %d\n" % i, fsync=True)
    last = current_revision(a.p("warm-19.txt"))
    eventually(lambda: c.has_revision(last) and b.has_revision(last), 5, "c or b did not get a's writes before the cut")
    time.sleep(1.5)  # b's held echoes go out; c has told b to prune

    cl.lab.partition([a.host], [c.host])
    revisions = []
    for i in range(5):
        write(a.p(f"cut-{i}.txt"), b"written while a cannot reach c %d\n" % i, fsync=True)
        revisions.append(current_revision(a.p(f"cut-{i}.txt")))
        time.sleep(0.2)
    for r in revisions:
        eventually(lambda: c.has_revision(r), 5,
                   lambda: f"storage node c never got a's revision {r[:16]} through b while a→c was cut: b held its relay "
                           f"back and never sent it\n{b.log_tail(10)}")


@pytest.mark.timeout(180)
def test_in_a_chain_relays_pass_the_writers_revisions_on_at_once(make_node, node_dir):
    """Chain n0–n1–n2–n3 (nft between non-neighbours). A revision n3 makes travels n3→n2→n1, and n1 sends it
    back to n2 as a held echo, a second late (protocol.md "Relaying"). That echo must not make n2 take n1 for a
    redundant path (`prune`): n1 would then hold n0's revisions back from n2 for a second, and every revision of
    the writer at one end would reach the other end a second late (the pub/sub benchmark's chain4 p99 was 1 s)."""
    with cluster_module.lab_cluster(make_node, node_dir, "hnchain", hosts=4) as cl:
        nodes = [cl.add("n0")]
        nodes += [cl.add(f"n{i}", identity=nodes[0]) for i in range(1, 4)]
        for i, n in enumerate(nodes):
            n.peers = [m.listen for j, m in enumerate(nodes) if abs(i - j) == 1]
        for i in range(4):
            for j in range(i + 2, 4):
                cl.lab.partition([nodes[i].host.name], [nodes[j].host.name])
        cl.start(connected=False)
        want = {n.name: {m.listen for j, m in enumerate(nodes) if abs(i - j) == 1} for i, n in enumerate(nodes)}
        eventually(lambda: all(n.connected_addresses() == want[n.name] for n in nodes), 60,
                   lambda: "the chain did not form: " + "; ".join(f"{n.name} sees {sorted(n.connected_addresses())}" for n in nodes))
        write(nodes[3].p("from-the-far-end.txt"), b"made on n3\n", fsync=True)
        far = current_revision(nodes[3].p("from-the-far-end.txt"))
        eventually(lambda: nodes[0].has_revision(far), 10, "n3's revision did not reach n0 along the chain")
        time.sleep(2.5)  # n1's held echo of it reaches n2

        slow = []
        for i in range(3):
            path = nodes[0].p(f"from-the-writer-{i}.txt")
            write(path, b"made on n0 %d\n" % i, fsync=True)
            rev, started = current_revision(path), time.monotonic()
            eventually(lambda: nodes[3].has_revision(rev), 10, f"n0's revision {rev[:16]} did not reach n3")
            took = time.monotonic() - started
            if took > 0.7:
                slow.append(f"{rev[:16]} took {took:.2f} s")
            time.sleep(0.5)
        assert not slow, f"n0's revisions reached n3 about a second late (a relay held them back): {slow}"


# --- 5. the writer disappears after an acknowledged fsync -----------------------------------------------------

@pytest.mark.timeout(120)
def test_acknowledged_write_survives_the_writers_total_loss(cluster):
    a = cluster.add("a", fsync_timeout=20)
    b = cluster.add("b", identity=a)
    cluster.start()
    path = a.p("precious.bin")
    data = os.urandom(300_000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        assert hx(path, "quorum") == b"2", f"node a: default quorum with a peer is {hx(path, 'quorum')!r}, expected 2"
        os.fsync(fd)
        rev = current_revision(path)
    finally:
        os.close(fd)
    assert b.has_revision(rev), f"quorum-2 fsync on a returned but b's catalog lacks revision {rev}"

    a.kill9()
    shutil.rmtree(a.home)
    on_b = b.p("precious.bin")
    eventually(lambda: os.path.exists(on_b) and read_file(on_b) == data, REMOTE + 1,
               lambda: f"node b does not serve the acknowledged content of precious.bin after a was destroyed "
                       f"({os.path.getsize(on_b) if os.path.exists(on_b) else 'missing'} bytes)")
    assert b.run("cat", on_b, text=False).stdout == data, "`hypernet cat` on b differs from the acknowledged content"
    fsck = b.fsck()
    assert fsck.returncode == 0, f"node b: fsck after losing a exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}"


# --- 6. restarts under load ------------------------------------------------------------------------------------

class Writer(threading.Thread):
    """Writes, overwrites and appends files under one directory of one node's mount, never while `gate` is
    held by the test (a restart); remembers what every path must contain."""

    def __init__(self, node, directory, seed):
        super().__init__(daemon=True, name=f"writer-{node.name}")
        self.node, self.directory, self.rng = node, directory, random.Random(seed)
        self.gate = threading.Lock()
        self.done = threading.Event()
        self.expected = {}  # relative path -> bytes
        self.operations = 0
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.done.is_set():
                with self.gate:
                    i += 1
                    rel = os.path.join(self.directory, f"f{i}.txt")
                    choice = self.rng.random()
                    if self.expected and choice < 0.3:
                        rel = self.rng.choice(sorted(self.expected))
                        data = b"overwrite %d\n" % i
                        write(self.node.p(rel), data)
                        self.expected[rel] = data
                    elif self.expected and choice < 0.5:
                        rel = self.rng.choice(sorted(self.expected))
                        line = b"append %d\n" % i
                        write(self.node.p(rel), line, append=True)
                        self.expected[rel] += line
                    else:
                        data = self.rng.randbytes(self.rng.randrange(1, 5000))
                        write(self.node.p(rel), data)
                        self.expected[rel] = data
                    self.operations += 1
                time.sleep(0.03)
        except Exception as e:  # reported by the test
            self.error = f"writer on {self.node.name} failed at operation {self.operations}: {e!r}"


NIO_SHUTDOWN = "Cannot schedule tasks on an EventLoop that has already shut down"


def restart_under_writes(writers, order, pause=1.5):
    """Restarts the nodes in `order` one after the other while `writers` (Writer threads, by node name) run;
    a node's own writer waits while it restarts. Returns once the writers are stopped."""
    for w in writers.values():
        w.start()
    try:
        for node in order:
            time.sleep(pause)
            writer = writers.get(node.name)
            if writer is not None:
                with writer.gate:
                    node.restart()
            else:
                node.restart()
            assert all(w.error is None for w in writers.values()), [w.error for w in writers.values()]
        time.sleep(pause)
    finally:
        for w in writers.values():
            w.done.set()
        for w in writers.values():
            w.join(30)
    errors = [w.error for w in writers.values() if w.error]
    assert not errors, "\n".join(errors)


@pytest.mark.timeout(120)
def test_stopping_a_node_while_peers_replicate_leaves_no_error_in_its_log(cluster):
    """Restarts storage node C 10 times while A and B write (C is receiving most of the time). Regression test:
    SyncNode.stop() used to shut its EventLoopGroup down while work queued for the sessions still sent on their
    channels, and SwiftNIO printed 'ERROR: Cannot schedule tasks on an EventLoop that has already shut down'
    into the log (fixed in 69ea2dc: stop drains the sessions' queues first)."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    for n in (a, b, c):
        n.allow_log_errors(re.escape(NIO_SHUTDOWN))  # checked below, in the test itself
    cluster.start()
    for name in ("wa", "wb"):
        os.mkdir(a.p(name))
    wait_converged([a, b], REMOTE, what="writer directories")
    writers = [Writer(a, "wa", 1), Writer(b, "wb", 2)]
    for w in writers:
        w.start()

    def found():
        return [f"{n.name}: {line}" for n in (a, b, c) for line in n.log_text().splitlines() if NIO_SHUTDOWN in line]

    try:
        for restarts in range(1, 11):
            time.sleep(0.3)
            c.restart()
            if found():
                break
    finally:
        for w in writers:
            w.done.set()
        for w in writers:
            w.join(30)
    assert not [w.error for w in writers if w.error], [w.error for w in writers if w.error]
    assert not found(), f"after {restarts} restarts of c while a and b write, NIO errors in the logs:\n" + \
                        "\n".join(found())


@pytest.mark.timeout(180)
def test_restarting_every_node_in_turn_under_writes_loses_nothing(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()
    for name in ("wa", "wb"):
        os.mkdir(a.p(name))
    wait_converged([a, b], REMOTE, what="writer directories")
    writers = {a.name: Writer(a, "wa", 1), b.name: Writer(b, "wb", 2)}
    restart_under_writes(writers, (c, b, a, c, a))
    print("operations: " + ", ".join(f"{n} {w.operations}" for n, w in writers.items()))

    cluster.wait_connected(timeout=30)
    tree, took = wait_converged([a, b], 30, what="after the restarts")
    for name, w in writers.items():
        for rel, data in sorted(w.expected.items()):
            assert rel in tree, f"{rel} (written on {name}) is missing after the restarts"
            assert read_file(a.p(rel)) == data, f"node a: {rel} (written on {name}) has the wrong content"
    tree_key = a.tree_of(current_revision(a.p("wa")))
    eventually(lambda: (a.revisions(tree_key) | b.revisions(tree_key)) <= c.revisions(tree_key), 30,
               lambda: f"storage node c lacks {len((a.revisions(tree_key) | b.revisions(tree_key)) - c.revisions(tree_key))} "
                       f"revisions of the tree after the restarts")
    for n in (a, b, c):
        fsck = n.fsck()
        assert fsck.returncode == 0 and fsck.stdout.strip() == "store is consistent", \
            f"node {n.name}: fsck exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}"


# --- large writes are forwarded between replicas -----------------------------------------------------------

def bytes_sent_by(pid):
    """TCP bytes sent so far on the live connections of process `pid` (ss's tcp_info)."""
    out = subprocess.run(["ss", "-tinp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return sum(int(tok.split(":")[1]) for head, info in zip(out, out[1:]) if f"pid={pid}," in head
               for tok in info.split() if tok.startswith("bytes_sent:"))


@pytest.mark.timeout(120)
def test_a_large_write_to_two_replicas_is_uploaded_by_the_writer_about_once(cluster):
    a = cluster.add("a", fsync_timeout=FSYNC_TIMEOUT * 10)
    b = cluster.add("b", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()
    eventually(lambda: len(b.connected_addresses()) >= 2 and len(c.connected_addresses()) >= 2, 20,
               "b and c did not connect to each other (peer exchange), so neither can forward to the other")
    directory = a.p("q3")
    os.mkdir(directory)
    os.setxattr(directory, "user.hypernet.quorum", b"3")
    data = os.urandom(32 << 20)
    sent = bytes_sent_by(a.pid)
    fd = os.open(os.path.join(directory, "big"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    upload = (bytes_sent_by(a.pid) - sent) / len(data)
    assert upload < 1.5, f"node a uploaded {upload:.2f} bytes per byte to reach 2 replicas: large runs are not forwarded"
    wait_converged([a, b], 30, what="the large file")


# --- a big directory ---------------------------------------------------------------------------------------------

def create_empty(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


@pytest.mark.timeout(480)
def test_a_big_directory_and_its_changes_arrive_identical_on_the_other_node(cluster):
    """A directory's revision stores only the pages of its listing that changed (issue 14, item 7): 5,000 entries,
    then creates, unlinks and renames on both nodes, must read the same on both, and after a restart."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    os.mkdir(a.p("big"))
    names = {f"f{i:05d}" for i in range(5000)}
    for name in sorted(names):
        create_empty(a.p("big", name))

    def listing(node):
        try:
            return sorted(os.listdir(node.p("big")))
        except FileNotFoundError:
            return None

    def same_on_both(expected):
        return lambda: listing(a) == expected and listing(b) == expected

    def differences(expected):
        def explain():
            lines = []
            for n in (a, b):
                shown = set(listing(n) or [])
                lines.append(f"node {n.name}: {len(shown)} entries, {len(set(expected) - shown)} missing "
                             f"({sorted(set(expected) - shown)[:5]}), {len(shown - set(expected))} extra "
                             f"({sorted(shown - set(expected))[:5]})")
            return "big did not converge:\n" + "\n".join(lines)
        return explain

    expected = sorted(names)
    eventually(same_on_both(expected), 60, differences(expected))

    # Changes on both nodes, all over the listing: b's pages are cut from what it received.
    rng = random.Random(7)
    for i in rng.sample(range(5000), 300):
        old, new = f"f{i:05d}", f"g{i:05d}" if i % 2 else f"f{i:05d}.renamed"
        os.rename(a.p("big", old), a.p("big", new))
        names.remove(old)
        names.add(new)
    for i in range(200):
        create_empty(a.p("big", f"a-new{i:03d}"))
        names.add(f"a-new{i:03d}")
    write(a.p("big", "content.txt"), b"some content\n")
    names.add("content.txt")
    expected = sorted(names)
    eventually(same_on_both(expected), 60, differences(expected))
    removed = [n for n in sorted(names) if n.startswith("f")][::7][:250]
    for name in removed:
        os.unlink(b.p("big", name))
        names.remove(name)
    for i in range(150):
        create_empty(b.p("big", f"b-new{i:03d}"))
        names.add(f"b-new{i:03d}")
    expected = sorted(names)
    eventually(same_on_both(expected), 60, differences(expected))
    assert read_file(b.p("big", "content.txt")) == b"some content\n", "node b: big/content.txt has the wrong content"

    # After a restart b cuts its pages from the catalog again, and its next change stores a listing a reads.
    b.stop()
    b.start()
    assert listing(b) == expected, "node b: big lists other entries after a restart"
    create_empty(b.p("big", "after-restart"))
    expected = sorted(names | {"after-restart"})
    eventually(same_on_both(expected), 60, differences(expected))
    for n in (a, b):
        fsck = n.fsck()
        assert fsck.returncode == 0 and fsck.stdout.strip() == "store is consistent", \
            f"node {n.name}: fsck exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}"
