"""Forgery (issue 4): a modified node serves forged records in its log of another identity's tree; every honest
node holding that tree refuses them, logs it, and never shows them.

The modified node is `hypernet-forge` (Sources/hypernet-forge/main.swift): it writes forged rows straight into a
stopped node's catalog (and packs), and the node's ordinary daemon, started again, serves them to its peers,
since a log is served from the catalog as it stands. Its path comes from $HYPERNET_FORGE, else it is looked for
next to $HYPERNET_BIN (`swift build --product hypernet-forge` puts it there):

    HYPERNET_BIN=/work/.build-forge/release/hypernet python3 -m pytest -q tests/integration/test_forgery.py

Topology, one cluster per forgery: alice on node a (mounted), bob on node b (mounted, its own identity, pins
alice's tree), a storage node c (pins alice's tree). alice shares the folder `share` with bob (read, write) and,
for every mode but swapped-chunk and unauthorised-delete, then revokes bob's `write` (he stays a reader, so that
his own view of the share, /@alice/share on b, is there to look at). Then b is stopped, forged, started again, and a and c must:
not store the forged record, log its rejection (naming it where the record decodes), keep their chain of
`share` (the same blocks at the same seqs), its rights, the heads of the forged-at file and what a's mount shows.
A replayed genuine block is the exception to "log": it is no news, skipped without a line; what is checked is
that a and c processed it (their progress in b's log passed it) and changed nothing. What each mode forges, and
why, is in the tool's header comment and in docs/security.md, "Forgery test double".

Last, the forging node's own `hypernet fsck` must find what was forged. Everything runs on loopback addresses (cluster.py).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

import helpers
from cluster import eventually
from helpers import current_revision, doc_id, hx, read_file, write_file

pytestmark = pytest.mark.replication


class Mode:
    def __init__(self, revoke, logged, record="revision"):
        self.revoke = revoke  # revoke bob's write (a new epoch) before forging
        self.logged = logged  # regex a and c log, {id} / {chunk} filled in; None: nothing to log
        self.record = record  # what the forged id names: "revision", "block", or "replay" (a genuine old block)


MODES = {
    "revoked-writer": Mode(True, r"warning hypernet: rejected log record {id}: author has no right for it"),
    # A tombstone by bob, who holds read and write but not delete: an unauthorised delete.
    "unauthorised-delete": Mode(False, r"warning hypernet: rejected log record {id}: author has no right for it"),
    # b's daemon checks what it serves: it finds its own chunk damaged and answers "not held" (store-format.md,
    # "Repair"), so a and c never get the bytes and refuse the revision that lacks them.
    "swapped-chunk": Mode(False, r"warning hypernet: rejected log record {id}: chunk {chunk} is missing"),
    # The record does not decode, so the line names its place in the sender's log.
    "edited-block": Mode(True, r"warning hypernet: rejected the log record at seq {seq}: invalid permission block signature",
                         record="block"),
    "self-signed-block": Mode(True, r"warning hypernet: rejected log record {id}: permission block refused: "
                                    r"the signer is not an admin", record="block"),
    "rolled-back-block": Mode(True, r"warning hypernet: rejected log record {id}: permission block refused: "
                                    r"epoch 1 where 2 is next", record="block"),
    # A genuine block a node holds already is no news: skipped without a line (protocol.md, step 3).
    "replayed-block": Mode(True, None, record="replay"),
}


def forge_binary() -> str:
    path = os.environ.get("HYPERNET_FORGE") or str(Path(helpers.hypernet_bin()).parent / "hypernet-forge")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # CI must not pass by skipping.
        pytest.fail(f"hypernet-forge not found or not executable: {path} (build it with "
                    f"`swift build --product hypernet-forge` or set HYPERNET_FORGE)", pytrace=False)
    return path


def read_or_none(path):
    try:
        return read_file(path)
    except OSError:
        return None


def members(path):
    """{WHO: ROLES} from user.hypernet.rights."""
    return dict(line.split(" ", 1) for line in hx(path, "rights").decode().splitlines())


def chain_rows(node, document_hex):
    """[(block id hex, epoch, seq)] of `document_hex`'s chain in `node`'s catalog."""
    return node.query("SELECT lower(hex(id)), epoch, seq FROM blocks WHERE lower(hex(document)) = ? ORDER BY epoch",
                      (document_hex,))


def holds(node, record_id):
    """Which tables of `node`'s catalog hold `record_id` (a revision or a block)."""
    key = bytes.fromhex(record_id)
    return [t for t in ("revisions", "blocks") if node.query(f"SELECT 1 FROM {t} WHERE id = ?", (key,))]


def progress_seq(node, peer_hex, tree_hex):
    rows = node.query("SELECT seq FROM progress WHERE lower(hex(peer)) = ? AND lower(hex(tree)) = ?", (peer_hex, tree_hex))
    return rows[0][0] if rows else None


def files_under(root):
    """{relative path: bytes or the error reading it} of every file below `root`."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                found[os.path.relpath(path, root)] = read_file(path)
            except OSError as e:
                found[os.path.relpath(path, root)] = e
    return found


def share_with_bob(cluster, revoke):
    """a, b, c started; alice's `share` shared with bob and replicated to b and c. Returns the nodes and ids."""
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])
    c = cluster.add("c", serve=True, pins=[a])
    cluster.start()
    os.makedirs(a.p("share"))
    write_file(a.p("share", "doc.txt"), b"alice wrote this\n")
    a.run("contact", "add", "bob", b.token)
    b.run("contact", "add", "alice", a.token)
    a.run("grant", a.p("share"), "bob", "read", "write")
    epochs = [0]
    text = b"alice wrote this\n"
    if revoke:
        a.run("revoke", a.p("share"), "bob", "write")
        text = b"alice wrote this after the revoke\n"
        write_file(a.p("share", "doc.txt"), text)
        epochs = [0, 1]
    share, doc = doc_id(a.p("share")), doc_id(a.p("share", "doc.txt"))
    rev = current_revision(a.p("share", "doc.txt"))
    tree = a.tree_of(rev)

    # b's parents for a forged revision are its heads of doc.txt: they must be alice's, and stored on c too.
    def replicated():
        return all([e for _, e, _ in chain_rows(n, share)] == epochs and n.heads(doc) == a.heads(doc) == {rev}
                   for n in (b, c)) and read_or_none(b.p("@alice", "share", "doc.txt")) == text

    eventually(replicated, 20, lambda: f"share did not replicate: a heads {a.heads(doc)}, b heads {b.heads(doc)}, "
                                       f"c heads {c.heads(doc)}; blocks on b {chain_rows(b, share)}, on c "
                                       f"{chain_rows(c, share)}; b reads {read_or_none(b.p('@alice', 'share', 'doc.txt'))!r}")
    return a, b, c, share, doc, tree, text


def run_forge(b, tree, document, mode, content):
    return subprocess.run([forge_binary(), "--home", str(b.home), "--tree", tree, "--document", document, mode,
                           "--content", content], capture_output=True, text=True, timeout=60)


def forge(b, tree, document, mode, content):
    result = run_forge(b, tree, document, mode, content)
    assert result.returncode == 0, \
        f"hypernet-forge {mode} exited {result.returncode}: {result.stderr.strip()}"
    lines = result.stdout.split()
    assert lines and all(re.fullmatch(r"[0-9a-f]{64}", x) for x in lines), \
        f"hypernet-forge {mode} printed {result.stdout!r}, not ids"
    return lines


def rejections(node, offset, pattern):
    return re.findall(pattern, node.log_text()[offset:])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", list(MODES))
def test_forged_records_are_refused_by_every_honest_node(cluster, mode):
    m = MODES[mode]
    a, b, c, share, doc, tree, text = share_with_bob(cluster, m.revoke)
    # The forging node's own catalog no longer holds together (its chain of share, its packs): its daemon fails
    # to store what alice sends it and to read what it forged. Those lines are not under test; crashes still are.
    b.allow_log_errors(r"corrupt chunk [0-9a-f]+: .*damaged, to be fetched again from a peer",
                       r"storing received revisions failed: corrupt permission block",
                       r"read (revision|shared document) failed: corrupt")
    marker = os.urandom(16).hex()
    before = {n.name: (chain_rows(n, share), n.heads(doc)) for n in (a, c)}
    rights = members(a.p("share"))
    offsets = {n.name: len(n.log_text()) for n in (a, c)}

    # The tool writes only into a stopped node's store.
    refused = run_forge(b, tree, doc, mode, "never written")
    assert refused.returncode == 1 and "a daemon holds" in refused.stderr, \
        f"hypernet-forge ran on b's home while b's daemon runs: exit {refused.returncode}, {refused.stderr.strip()!r}"

    b.stop()
    ids = forge(b, tree, doc, mode, f"forged by bob {marker}\n")
    forged, chunk = ids[0], (ids[1] if len(ids) > 1 else None)
    table = "revisions" if m.record == "revision" else "blocks"
    rows = b.query(f"SELECT seq FROM {table} WHERE id = ?", (bytes.fromhex(forged),))
    assert rows, f"hypernet-forge {mode} printed {forged}, which is not in b's {table}"
    forged_seq = rows[0][0]
    b.start()
    b_node = a.query("SELECT lower(hex(node)) FROM peers WHERE address = ?", (b.listen,))[0][0]

    # a and c read b's log past the forgery (the swapped chunk stops it: they never get its bytes and refuse the
    # revision that lacks them, and again on the next connection, which resumes there).
    pattern = m.logged.format(id=forged, chunk=chunk, seq=forged_seq) if m.logged else None
    for n in (a, c):
        if mode == "swapped-chunk":
            eventually(lambda: len(rejections(n, offsets[n.name], pattern)) >= 2, 60,
                       lambda: f"node {n.name} did not refuse the revision lacking the swapped chunk twice (lines matching {pattern!r}: "
                               f"{len(rejections(n, offsets[n.name], pattern))}):\n{n.log_tail(15)}")
            continue
        eventually(lambda: (progress_seq(n, b_node, tree) or 0) >= forged_seq, 30,
                   lambda: f"node {n.name} did not process b's log up to the forged record (seq {forged_seq}): "
                           f"its progress in b's log is {progress_seq(n, b_node, tree)}\n{n.log_tail(15)}")
        if pattern:
            assert rejections(n, offsets[n.name], pattern), \
                f"node {n.name} logged no line matching {pattern!r} for {mode}:\n{n.log_tail(15)}"

    # Nothing stored, nothing changed.
    for n in (a, c):
        if m.record == "replay":
            assert holds(n, forged) == ["blocks"], f"node {n.name} lost the genuine block {forged} replayed to it"
        else:
            assert not holds(n, forged), f"node {n.name} stored the forged {m.record} {forged} ({mode})"
        if chunk:
            assert not n.query("SELECT 1 FROM chunks WHERE id = ?", (bytes.fromhex(chunk),)), \
                f"node {n.name} recorded the swapped chunk {chunk}"
        chain, heads = before[n.name]
        assert chain_rows(n, share) == chain, \
            f"node {n.name}'s chain of share changed after {mode}: {chain} before, {chain_rows(n, share)} after"
        assert n.heads(doc) == heads, f"node {n.name}'s heads of share/doc.txt changed after {mode}: {heads} -> {n.heads(doc)}"

    # What a shows: the same rights, the same file, the forged content nowhere.
    assert members(a.p("share")) == rights, f"a's rights of share changed after {mode}: {members(a.p('share'))}"
    assert a.run("rights", a.p("share")).stdout == hx(a.p("share"), "rights").decode()
    assert read_file(a.p("share", "doc.txt")) == text, f"a's share/doc.txt changed after {mode}"
    if m.record == "revision":
        assert not os.path.exists(a.p(".hypernet", "revisions", forged)), \
            f"a's /.hypernet/revisions/ shows the forged revision {forged}"
    shown = [p for p, data in files_under(a.p("share")).items() if isinstance(data, bytes) and marker.encode() in data]
    assert not shown, f"a's mount shows the content forged by {mode} in {shown}"

    # The forging node's catalog no longer holds together, and `hypernet fsck` there says so: a node stores nothing
    # it did not check, so what fsck finds was written around the checks. (What b's own mount shows is its own
    # business: a modified node can show itself anything.)
    b.stop()
    check = b.run("fsck", check=False, timeout=120)
    assert check.returncode != 0 and "problem" in check.stderr, \
        f"fsck on the forging node found nothing after {mode}: exit {check.returncode}, {check.stdout.strip()!r}"
