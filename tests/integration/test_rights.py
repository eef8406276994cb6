"""Rights (issue 4): `hypernet grant/revoke/rights` and their xattrs make permission blocks; the blocks travel
in the tree's log to every node holding it (a second node of the identity, a storage node), which store them
as links of the document's chain; revisions from then on are written under the chain's current epoch.

Nodes run on their own loopback addresses (cluster.py). No traffic leaves the machine.
"""

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from cluster import capture_loopback, eventually
from helpers import current_revision, doc_id, errno_of, hx, read_file, write_file

pytestmark = pytest.mark.replication

ALL = "read,write,delete,admin"


def members(path):
    """{WHO: ROLES} from user.hypernet.rights."""
    lines = hx(path, "rights").decode().splitlines()
    return dict(line.split(" ", 1) for line in lines)


def blocks(node, document_hex):
    """[epoch] of the blocks of `document_hex`'s chain in `node`'s catalog."""
    rows = node.query("SELECT epoch FROM blocks WHERE lower(hex(document)) = ? ORDER BY epoch", (document_hex,))
    return [r[0] for r in rows]


def governed(node, rev):
    """(rights document hex or None, epoch) of revision `rev` in `node`'s catalog, read from the record itself."""
    rows = node.query("SELECT record FROM revisions WHERE id = ?", (bytes.fromhex(rev),))
    assert rows, f"node {node.name}: revision {rev} is not stored"
    record = rows[0][0]
    version, epoch = record[0], struct.unpack_from("<I", record, 18)[0]
    return (record[22:38].hex() if version in (2, 4) else None), epoch


@pytest.mark.timeout(180)
def test_grant_and_revoke_are_blocks_every_holder_stores_and_new_revisions_use(cluster):
    a = cluster.add("a")
    a2 = cluster.add("a2", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    bob = cluster.add("bob")  # only its identity is needed here
    cluster.start(nodes=[a, a2, c])

    os.makedirs(a.p("share", "sub"))
    write_file(a.p("share", "sub", "f.txt"), b"inside\n")
    write_file(a.p("outside.txt"), b"outside\n")
    a.run("contact", "add", "bob", bob.token)

    a.run("grant", a.p("share"), "bob", "read")
    expected = {a.token: ALL, bob.token: "read"}
    assert members(a.p("share")) == expected, "node a: `hypernet grant share bob read` does not show in its rights"
    assert members(a.p("share", "sub", "f.txt")) == expected, "share/sub/f.txt does not inherit share's rights"
    assert members(a.p("outside.txt")) == {a.token: ALL}, "a grant on share changed the rights of outside.txt"
    assert a.run("rights", a.p("share")).stdout == hx(a.p("share"), "rights").decode()

    share = doc_id(a.p("share"))
    inside = current_revision(a.p("share", "sub", "f.txt"))
    eventually(lambda: blocks(c, share) == [0] and c.has_revision(inside), 10,
               lambda: f"storage node c holds blocks {blocks(c, share)} of share's chain and revision {inside}: "
                       f"{c.has_revision(inside)}")
    assert governed(c, inside) == (share, 0), "the first grant did not move share/sub/f.txt to share's chain"
    assert governed(a, current_revision(a.p("outside.txt")))[0] is None, "outside.txt moved to a chain"

    # The identity's other node learns the rights from the blocks, and writes under the chain.
    eventually(lambda: os.path.exists(a2.p("share", "sub", "f.txt")) and members(a2.p("share", "sub", "f.txt")) == expected,
               10, "node a2 does not show share/sub/f.txt with the rights granted on a")
    write_file(a2.p("share", "new.txt"), b"written on a2\n")
    made_on_a2 = current_revision(a2.p("share", "new.txt"))
    eventually(lambda: c.has_revision(made_on_a2), 10, "a2's new file does not reach the storage node")
    assert governed(c, made_on_a2) == (share, 0), "a file created on a2 in share is not written under share's chain"

    # Revoke: a new epoch; what is written from now on names it.
    os.setxattr(a.p("share"), "user.hypernet.revoke", b"bob")
    assert members(a.p("share")) == {a.token: ALL}, "setfattr user.hypernet.revoke bob left bob a member"
    write_file(a.p("share", "sub", "f.txt"), b"after the revoke\n")
    after = current_revision(a.p("share", "sub", "f.txt"))
    eventually(lambda: blocks(c, share) == [0, 1] and c.has_revision(after), 10,
               lambda: f"storage node c holds blocks {blocks(c, share)} after the revoke")
    assert governed(c, after) == (share, 1), "a revision after the revoke does not name the new epoch"

    # Public, and private again.
    a.run("grant", a.p("share"), "*", "read")
    assert members(a.p("share")).get("*") == "read", "`grant share '*' read` does not make share public"
    a.run("revoke", a.p("share"), "*")
    assert "*" not in members(a.p("share")), "`revoke share '*'` leaves share public"

    # Rights survive a restart (they are the stored chain).
    a.restart()
    assert members(a.p("share", "sub", "f.txt")) == {a.token: ALL}
    assert read_file(a.p("share", "sub", "f.txt")) == b"after the revoke\n"
    assert not c.log_findings(), f"storage node c logged problems: {c.log_findings()}"


def read_or_none(path):
    """The file's bytes, or None while it is missing or unreadable (its revisions may still be arriving)."""
    try:
        return read_file(path)
    except OSError:
        return None


def incompressible_name():
    """200 random ASCII characters other than NUL and '/': a file name zstd cannot shrink (its literals would need
    a Huffman table larger than the 12 % it saves), so a directory listing holding it is stored as it is, unless
    sealed."""
    return "".join(chr(1 + b % 126 + (1 if 1 + b % 126 >= ord("/") else 0)) for b in os.urandom(200))


def store_files(node):
    return [p for p in (node.home / "store").rglob("*") if p.is_file()]


@pytest.mark.timeout(240)
def test_a_contact_reads_what_is_shared_and_nothing_written_after_the_revoke(cluster, node_dir):
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])
    c = cluster.add("c", serve=True, pins=[a])
    capture = Path(node_dir) / "storage-node.pcap"
    # Everything the storage node sends or receives, from before the first connection.
    with capture_loopback(capture, [c.listen.split(":")[0]]):
        cluster.start()
        # Contents are random bytes around the marker: zstd cannot shrink them, so without encryption the marker
        # would be in the packs verbatim (the public control below shows that the search finds it there).
        content, later, public_content = (os.urandom(32) for _ in range(3))
        name, public_name = incompressible_name(), incompressible_name()
        note = os.urandom(32).hex()
        shared_bytes = os.urandom(1000) + content + os.urandom(1000)
        os.makedirs(a.p("share", "sub"))
        write_file(a.p("share", "doc.txt"), shared_bytes)
        write_file(a.p("share", "sub", name), b"deep\n")
        os.setxattr(a.p("share", "doc.txt"), "user.note", note.encode())
        write_file(a.p("share", "unshared.txt"), b"not for bob\n")
        write_file(a.p("private.txt"), b"private\n")
        a.run("contact", "add", "bob", b.token)
        b.run("contact", "add", "alice", a.token)
        eventually(lambda: os.path.isdir(b.p("@alice")), 10, "node b does not show /@alice for alice's pinned tree")
        assert os.listdir(b.p("@alice")) == [], "bob sees something of alice's tree before any grant"
        os.makedirs(a.p("pub"))
        a.run("grant", a.p("pub"), "*", "read")
        # Written once public (what was written before keeps its sealed chunks).
        write_file(a.p("pub", public_name), os.urandom(1000) + public_content + os.urandom(1000))

        a.run("grant", a.p("share"), "bob", "read")
        # A document of the shared folder with a chain of its own that leaves bob out: listed, never readable.
        a.run("revoke", a.p("share", "unshared.txt"), "bob")
        shared = b.p("@alice", "share", "doc.txt")
        eventually(lambda: read_or_none(shared) == shared_bytes, 10,
                   "bob does not read /@alice/share/doc.txt byte-exact after alice's grant")
        eventually(lambda: sorted(os.listdir(b.p("@alice"))) == ["pub", "share"], 10,
                   lambda: f"bob's /@alice shows {sorted(os.listdir(b.p('@alice')))}, not the shared and the public folder")
        eventually(lambda: sorted(os.listdir(b.p("@alice", "share"))) == ["doc.txt", "sub", "unshared.txt"], 10,
                   lambda: f"bob's /@alice/share lists {sorted(os.listdir(b.p('@alice', 'share')))}")
        eventually(lambda: errno_of(read_file, b.p("@alice", "share", "unshared.txt")) == "EACCES", 10,
                   lambda: f"reading a listed document bob has no read right on gave "
                           f"{errno_of(read_file, b.p('@alice', 'share', 'unshared.txt'))}, not EACCES")
        assert os.listdir(b.p(f"@{a.token}", "share", "sub")) == [name], "/@TOKEN/ does not show the same tree"
        assert "@alice" in os.listdir(b.p()), "the root of bob's folder does not list @alice"
        assert os.getxattr(shared, "user.note") == note.encode(), "bob does not read the shared file's user xattr"
        assert members(shared) == {a.token: ALL, b.token: "read"}

        # Reading is all bob may do.
        for what, call in [
            ("open for write", lambda: os.open(shared, os.O_WRONLY)),
            ("mkdir", lambda: os.mkdir(b.p("@alice", "share", "new"))),
            ("unlink", lambda: os.unlink(shared)),
            ("rmdir", lambda: os.rmdir(b.p("@alice", "share", "sub"))),
            ("setfattr user.hypernet.grant", lambda: os.setxattr(shared, "user.hypernet.grant", f"{b.token} admin".encode())),
        ]:
            assert errno_of(call) == "EACCES", f"bob's {what} in /@alice/share without the right did not fail with EACCES"

        # Revoked: what alice writes from now on is stored on bob's node, and unreadable to him.
        a.run("revoke", a.p("share"), "bob")
        write_file(a.p("share", "doc.txt"), os.urandom(1000) + later + os.urandom(1000))
        after = current_revision(a.p("share", "doc.txt"))
        eventually(lambda: b.has_revision(after) and c.has_revision(after), 10, "the revision after the revoke did not replicate")
        eventually(lambda: errno_of(read_file, shared) in ("EACCES", "ENOENT") and os.listdir(b.p("@alice")) == ["pub"], 10,
                   lambda: f"bob still reads /@alice/share/doc.txt after the revoke: {errno_of(read_file, shared)}")
        # Every revision made so far is on C, directory listings included (the once-a-second pass writes them).
        time.sleep(1.2)
        revisions = lambda n: {r[0] for r in n.query("SELECT id FROM revisions")}
        eventually(lambda: revisions(a) <= revisions(c), 10, "the storage node does not hold all of alice's revisions")
        time.sleep(0.5)

    # Markers in contents, names and xattrs appear nowhere in the storage node's store, nor in bob's, nor on the wire.
    markers = {"content": content, "file name": name.encode(), "xattr value": note.encode(), "content after the revoke": later}
    traffic = capture.read_bytes()
    assert len(traffic) > 10_000, f"the capture of the storage node's traffic holds only {len(traffic)} bytes"
    c_store = b"".join(p.read_bytes() for p in store_files(c))
    # The control: the same kinds of markers in the public folder, stored in the clear, are found by this search.
    for what, marker in {"public content": public_content, "public file name": public_name.encode()}.items():
        assert marker in c_store, f"the {what} marker is not in the storage node's store: the search cannot find markers"
    for source, data in [(f"{n.name}:{p}", p.read_bytes()) for n in (c, b) for p in store_files(n)] + [("the capture", traffic)]:
        for what, marker in markers.items():
            assert marker not in data, f"the {what} marker is readable in {source}"


def author_of_head(node, path):
    """The identity token that wrote the revision `path` shows on `node`."""
    return hx(path, "history").decode().splitlines()[0].split()[2]


@pytest.mark.timeout(240)
def test_a_contact_writes_with_the_rights_it_is_granted(cluster):
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()
    os.makedirs(a.p("share"))
    write_file(a.p("share", "doc.txt"), b"first line\n")
    a.run("contact", "add", "bob", b.token)
    b.run("contact", "add", "alice", a.token)
    a.run("grant", a.p("share"), "bob", "read")
    doc = b.p("@alice", "share", "doc.txt")
    eventually(lambda: read_or_none(doc) == b"first line\n", 10, "bob cannot read the shared file")
    document = doc_id(a.p("share", "doc.txt"))

    def shell(command):
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)

    assert shell(f"echo second line >> '{doc}'").returncode != 0, "bob appended without the write right"
    a.run("grant", a.p("share"), "bob", "write")
    eventually(lambda: shell(f"echo second line >> '{doc}'").returncode == 0, 10,
               lambda: f"bob's `echo >>` still fails after alice granted write: {shell(f'echo x >> {doc!r}').stderr}")
    eventually(lambda: read_or_none(a.p("share", "doc.txt")) == b"first line\nsecond line\n", 10,
               lambda: f"bob's append does not appear on A: {read_or_none(a.p('share', 'doc.txt'))!r}")
    assert author_of_head(a, a.p("share", "doc.txt")) == b.token, "A does not show bob as the author of his append"

    proc = shell(f"sed -i 's/first/edited/' '{doc}'")
    assert proc.returncode == 0, f"bob's sed -i in /@alice/share failed: {proc.stderr}"
    eventually(lambda: read_or_none(a.p("share", "doc.txt")) == b"edited line\nsecond line\n", 10,
               lambda: f"bob's sed -i does not appear on A: {read_or_none(a.p('share', 'doc.txt'))!r}")
    assert doc_id(a.p("share", "doc.txt")) == document, "bob's sed -i (a rename-over save) changed the document id"
    # The listing without sed's temporary file is the revision after the content's.
    eventually(lambda: sorted(os.listdir(a.p("share"))) == ["doc.txt"], 10,
               lambda: f"sed's temporary file is left on A: {os.listdir(a.p('share'))}")

    os.mkdir(b.p("@alice", "share", "notes"))
    write_file(b.p("@alice", "share", "notes", "n.txt"), b"from bob\n")
    eventually(lambda: read_or_none(a.p("share", "notes", "n.txt")) == b"from bob\n", 10,
               "bob's new directory and file do not appear on A")

    assert errno_of(os.unlink, doc) == "EACCES", "bob removed a file without the delete right"
    assert errno_of(os.setxattr, doc, "user.hypernet.grant", f"{c.token or a.token} read".encode()) == "EACCES", \
        "bob changed rights without admin"
    a.run("grant", a.p("share"), "bob", "delete")
    eventually(lambda: errno_of(os.unlink, b.p("@alice", "share", "notes", "n.txt")) is None, 10,
               "bob still cannot remove a file after alice granted delete")
    eventually(lambda: not os.path.exists(a.p("share", "notes", "n.txt")), 10, "bob's removal does not appear on A")

    # An admin changes the chain: bob, made admin, shares the folder with the storage node's identity.
    a.run("grant", a.p("share"), "bob", "admin")
    c_token = c.token
    eventually(lambda: errno_of(os.setxattr, b.p("@alice", "share"), "user.hypernet.grant", f"{c_token} read".encode()) is None,
               10, "bob, an admin, cannot grant on the shared folder")
    eventually(lambda: members(a.p("share")).get(c_token) == "read", 10, "bob's grant does not reach A")
    assert not a.log_findings() and not c.log_findings(), f"problems logged: {a.log_findings() + c.log_findings()}"


@pytest.mark.timeout(180)
def test_a_public_document_is_readable_by_every_node_and_nothing_else_is(cluster):
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])  # granted nothing
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()
    public, private = b"for everyone " + os.urandom(8).hex().encode(), b"for alice " + os.urandom(8).hex().encode()
    os.makedirs(a.p("pub"))
    os.makedirs(a.p("own"))
    a.run("grant", a.p("pub"), "*", "read")
    # Written after the grant: stored in the clear (what was written before keeps its chunks, now readable by all
    # through the public metadata that names their keys).
    write_file(a.p("pub", "f.txt"), public)
    write_file(a.p("own", "g.txt"), private)
    b.run("contact", "add", "alice", a.token)
    eventually(lambda: read_or_none(b.p("@alice", "pub", "f.txt")) == public, 10,
               "a node granted nothing does not read alice's public folder")
    assert os.listdir(b.p("@alice")) == ["pub"], "more than the public folder is visible to a stranger"
    public_rev, private_rev = current_revision(a.p("pub", "f.txt")), current_revision(a.p("own", "g.txt"))
    eventually(lambda: c.has_revision(public_rev) and c.has_revision(private_rev), 10, "the storage node lacks the revisions")
    size = lambda rev: c.query("SELECT size FROM revisions WHERE id = ?", (bytes.fromhex(rev),))[0][0]
    assert size(public_rev) == len(public), "the storage node could not open the public file's metadata"
    assert size(private_rev) == 0, "the storage node opened the metadata of a file nobody shared with it"
    packs = b"".join(p.read_bytes() for p in (c.home / "store" / "packs").glob("*.pack"))
    assert public in packs, "the public file's content is not stored in the clear on the storage node"
    assert private not in packs, "the private file's content is readable in the storage node's packs"


def test_bad_rights_changes_fail_with_the_contract_errno(make_node):
    node = make_node()
    directory = node.p("d")
    os.mkdir(directory)
    for value in [b"nobody read", b"hn1notatoken read", b"bob", b"* write", b"* read write"]:
        assert errno_of(os.setxattr, directory, "user.hypernet.grant", value) == "EINVAL", \
            f"setfattr -n user.hypernet.grant -v {value!r} did not fail with EINVAL"
    me = node.cli("id").stdout.strip()
    os.setxattr(directory, "user.hypernet.grant", b"* read")
    assert errno_of(os.setxattr, directory, "user.hypernet.revoke", f"{me} admin".encode()) == "EACCES", \
        "revoking the only admin did not fail with EACCES"
    assert errno_of(os.getxattr, directory, "user.hypernet.grant") == "ENODATA", "user.hypernet.grant is readable"
    proc = node.cli("grant", directory, "nobody", "read", check=False)
    assert proc.returncode == 2 and "bad value" in proc.stderr, f"`hypernet grant d nobody read`: {proc.returncode} {proc.stderr}"
    proc = node.cli("grant", "/tmp", "nobody", "read", check=False)
    assert proc.returncode == 4, f"`hypernet grant /tmp …` outside the folder exited {proc.returncode}: {proc.stderr}"
    assert members(directory) == {me: ALL, "*": "read"}


def test_a_change_that_would_leave_a_writer_unable_to_write_is_refused_whole(make_node):
    # Issue 14, item 4: revoking one's own read failed with EACCES yet applied, and every later write was lost
    # ("commit refused: this identity holds no key of the document's current epoch").
    node = make_node()
    me = node.cli("id").stdout.strip()
    path = node.p("f")
    write_file(path, b"v1\n")
    assert errno_of(os.setxattr, path, "user.hypernet.revoke", f"{me} read".encode()) == "EACCES"
    assert members(path) == {me: ALL}, "the refused revoke was applied"
    # The mount writes as the tree's owner: without write or delete its revisions would be refused by every node.
    for roles in ["write", "delete", "read,write,delete"]:
        assert errno_of(os.setxattr, path, "user.hypernet.revoke", f"{me} {roles}".encode()) == "EACCES", roles
    assert members(path) == {me: ALL}
    write_file(path, b"v2\n")
    # A writer, deleter or admin must be a reader: a grant of write alone, or a revoke of a writer's read.
    bob = make_node(start=False)
    bob.cli("init")
    bob_token = bob.cli("id").stdout.strip()
    node.cli("contact", "add", "bob", bob_token)
    for name, value in [("grant", "bob write"), ("grant", "bob delete,admin")]:
        assert errno_of(os.setxattr, path, f"user.hypernet.{name}", value.encode()) == "EACCES", value
    os.setxattr(path, "user.hypernet.grant", b"bob read,write")
    assert errno_of(os.setxattr, path, "user.hypernet.revoke", b"bob read") == "EACCES"
    proc = node.cli("revoke", path, "bob", "read", check=False)
    assert proc.returncode == 1 and "not allowed" in proc.stderr, f"`hypernet revoke f bob read`: {proc.stderr}"
    assert members(path) == {me: ALL, bob_token: "read,write"}
    node.cli("revoke", path, "bob", "read", "write")
    assert members(path) == {me: ALL}
    write_file(path, b"v3\n")
    node.restart()
    assert read_file(path) == b"v3\n"
