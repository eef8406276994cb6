"""Damaged chunks repair themselves from a peer (issue 21; store-format.md, "Repair"): a node whose pack records of
a file's chunks, or of a directory listing's, were damaged while it was stopped reads the file again (EIO
meanwhile, never other bytes), shows the directory's later changes, and ends with a clean `hypernet fsck`."""

import errno
import json
import os

import pytest

from cluster import eventually
from helpers import current_revision, random_bytes, read_file, write_file

REPAIR = 30  # seconds: a restart, a connection to the peer and the fetch of a few chunks
# What the damaged node logs: the damage (an error), and what a listing it cannot read does meanwhile.
DAMAGE_LOGGED = (r"corrupt|damaged", r"read failed errno=5", r"EIO until it is repaired")


def damage_revision_chunks(node, revision):
    """Flips a byte in the middle of the ciphertext of every pack record holding a chunk that `revision` brought
    to the stopped `node` (its content's chunks and manifest nodes). Returns how many it damaged."""
    rows = node.query("SELECT pack, offset, length FROM chunks WHERE revision = ?", (bytes.fromhex(revision),))
    for pack, offset, length in rows:
        with open(node.home / "store" / "packs" / f"{pack:08d}.pack", "r+b") as f:
            at = offset + 4 + 32 + length // 2  # past the record header (length, chunk id)
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0xFF]))
    return len(rows)


def read_eventually(path, expected):
    """Reads `path` until it holds `expected`: meanwhile a read may fail with EIO only, and never return other
    bytes."""
    def attempt():
        try:
            data = read_file(path)
        except OSError as e:
            assert e.errno == errno.EIO, f"{path}: expected EIO while damaged, got {errno.errorcode.get(e.errno)}"
            return False
        assert data == expected, f"{path}: read {len(data)} bytes that are not its content"
        return True
    eventually(attempt, REPAIR, f"{path} did not read back after the repair")


def fsck_clean(node):
    fsck = node.fsck()
    assert fsck.returncode == 0, f"node {node.name}: fsck after the repair:\n{fsck.stdout}{fsck.stderr}"
    return fsck.stdout


@pytest.mark.log_errors(*DAMAGE_LOGGED)
def test_a_damaged_file_chunk_is_fetched_again_from_a_peer(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    revisions = []
    for data in (random_bytes(200_000), random_bytes(300_000)):
        write_file(a.p("f.bin"), data, fsync=True)
        eventually(lambda: os.path.exists(b.p("f.bin")) and read_file(b.p("f.bin")) == data, REPAIR,
                   "f.bin did not reach b")
        revisions.append(current_revision(b.p("f.bin")))
    b.stop()
    # The current content's chunks, and the first version's, which nothing reads but fsck.
    for revision in revisions:
        assert damage_revision_chunks(b, revision) > 0, f"b's catalog names no chunk of revision {revision}"

    b.start()
    # Before the fix: EIO for good (nothing asked a peer for a chunk that fails verification).
    read_eventually(b.p("f.bin"), data)
    # fsck finds the first version's damage, has a peer's copy repair it, and says so.
    assert "repaired from a peer" in fsck_clean(b)
    b.restart()  # the repair was made durable
    assert read_file(b.p("f.bin")) == data
    fsck_clean(b)
    # The damaged records are named by no row now: dead, and gc gives their space back (store-format.md, "Compaction").
    before = b.pack_bytes()
    report = json.loads(b.cli("gc", "--json", timeout=120).stdout)
    assert report["deadBytes"] >= 500_000 and report["packsRewritten"] >= 1, report
    assert b.pack_bytes() <= before - 500_000
    assert read_file(b.p("f.bin")) == data
    fsck_clean(b)


@pytest.mark.log_errors(*DAMAGE_LOGGED)
def test_a_damaged_directory_listing_is_fetched_again_and_later_changes_show(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    os.mkdir(a.p("d"))
    files = {f"f{i}.txt": f"file {i}\n".encode() for i in range(3)}
    for name, content in files.items():
        write_file(a.p("d", name), content)
    eventually(lambda: os.path.isdir(b.p("d")) and sorted(os.listdir(b.p("d"))) == sorted(files), REPAIR,
               "d's files did not reach b")
    revision = current_revision(b.p("d"))
    b.stop()
    assert damage_revision_chunks(b, revision) > 0, f"b's catalog names no chunk of d's revision {revision}"

    b.start()
    # A later change of the directory: its merge reads the damaged listing. Before the fix, b logged "placing
    # received directories failed" at each change and never showed it.
    write_file(a.p("d", "later.txt"), b"later\n")
    files["later.txt"] = b"later\n"

    def shown():
        try:
            return sorted(os.listdir(b.p("d"))) == sorted(files)
        except OSError as e:
            assert e.errno == errno.EIO, f"listing d while damaged: expected EIO, got {errno.errorcode.get(e.errno)}"
            return False
    eventually(shown, REPAIR, lambda: f"b shows d as {sorted(os.listdir(b.p('d')))}, expected {sorted(files)}")
    for name, content in files.items():
        assert read_file(b.p("d", name)) == content
    write_file(a.p("d", "after.txt"), b"after\n")
    eventually(lambda: os.path.exists(b.p("d", "after.txt")), REPAIR, "a change after the repair did not show on b")
    fsck_clean(b)
