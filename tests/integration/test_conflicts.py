"""Version control in the folder (issue 6): partitions and offline edits across three nodes of one identity, each
ending with every node agreeing (same tree, same visible revision, same conflicts) and every side's bytes
retrievable through `hypernet cat --rev` and `/.hypernet/revisions/REV`.

Nodes run in the hosts of a network-namespace lab (netns.py); partitions are nft drops. The clock-skew test runs
two daemons under faketime (skipped when it is not installed).
"""

import os
import shutil
import subprocess
import time

import pytest

import cluster as cluster_module
from cluster import describe_difference, eventually, snapshot, wait_converged, write
from helpers import current_revision, doc_id, hx, read_file

pytestmark = pytest.mark.replication

SETTLE = 2.0  # remote changes show within ~2 s (contract)

@pytest.fixture
def trio(make_node, node_dir):
    """Three mounting nodes a, b, c of one identity, each in its own namespace (not started)."""
    with cluster_module.lab_cluster(make_node, node_dir, "hnconf") as cl:
        a = cl.add("a")
        cl.add("b", identity=a)
        cl.add("c", identity=a)
        yield cl


def nodes(cl):
    return [cl["a"], cl["b"], cl["c"]]


def start(cl):
    cl.start()
    return nodes(cl)


def conflicts(path):
    return sorted(line for line in hx(path, "conflicts").decode().splitlines() if line.strip())


def view(node, rel):
    """What `node` shows of `rel`: (document id, visible revision, conflict lines)."""
    path = node.p(*rel.split("/"))
    return doc_id(path), current_revision(path), conflicts(path)


def settle(cl, rels, timeout=30, what="after the heal"):
    """Waits until every node shows the same tree and, for each of `rels`, the same document, visible revision
    and conflicts; returns the tree."""
    ns = nodes(cl)
    tree, _ = wait_converged(ns, timeout, what=what)
    for rel in rels:
        seen = {}

        def same():
            for n in ns:
                try:
                    seen[n.name] = view(n, rel)
                except OSError as e:
                    seen[n.name] = e
            return all(v == seen["a"] and not isinstance(v, Exception) for v in seen.values())

        eventually(same, timeout, lambda: f"{rel}: the nodes disagree {what}: {seen}")
    tree_conflicts = {n.name: n.cli("conflicts").stdout.replace(str(n.mount), "MNT") for n in ns}
    assert len(set(tree_conflicts.values())) == 1, f"`hypernet conflicts` differs between nodes: {tree_conflicts}"
    return same_view(cl, what)


def same_view(cl, what):
    """The view is a function of the revisions held: once every node holds the same revisions, every node shows
    the same tree (names, types, modes, content) within a few seconds, without a restart; returns the tree."""
    ns = nodes(cl)
    held = {}

    def same_revisions():
        for n in ns:
            held[n.name] = n.revisions()
        return all(h == held["a"] for h in held.values())

    eventually(same_revisions, 45, lambda: f"the nodes hold different revisions {what}: "
               + ", ".join(f"{k} lacks {len(set().union(*held.values()) - v)}" for k, v in held.items()))
    tree, _ = wait_converged(ns, 5 * SETTLE, what=f"the trees of nodes holding the same revisions {what}")
    return tree


def same_after_restart(cl, node, tree):
    """A restart shows the same tree: what a node shows never depends on how its revisions arrived."""
    node.restart()
    cl.wait_connected()
    assert snapshot(node.mount) == tree, f"node {node.name} shows another tree after a restart:\n" + \
        describe_difference("before", tree, "after", snapshot(node.mount))


def retrievable(cl, rel, versions):
    """Every node returns each (revision, bytes) of `rel` through the CLI and through the history view."""
    for n in nodes(cl):
        for rev, data in versions:
            got = n.cli("cat", n.p(*rel.split("/")), "--rev", rev, text=False).stdout
            assert got == data, f"node {n.name}: `hypernet cat {rel} --rev {rev[:12]}` gives {got[:40]!r}, not {data[:40]!r}"
            viewed = read_file(n.p(".hypernet", "revisions", rev[:12]))
            assert viewed == data, f"node {n.name}: /.hypernet/revisions/{rev[:12]} gives {viewed[:40]!r}, not {data[:40]!r}"


def isolate_all(cl):
    a, b, c = cl.lab.hosts
    cl.lab.partition([a], [b, c])
    cl.lab.partition([b], [c])


def heal(cl, rels, timeout=45):
    cl.lab.heal()
    cl.wait_connected(timeout=timeout)
    return settle(cl, rels, timeout=timeout)


# --- concurrent edits, resolve through the xattr ---------------------------------------------------------------

@pytest.mark.timeout(240)
def test_three_concurrent_edits_are_all_kept_and_resolve_merges_every_head(trio):
    a, b, c = start(trio)
    write(a.p("doc.txt"), b"original\n")
    settle(trio, ["doc.txt"], what="before the partition")
    ident = doc_id(a.p("doc.txt"))
    isolate_all(trio)
    edits = {}
    for n in (a, b, c):
        data = f"edited on {n.name}\n".encode() * (1 + "abc".index(n.name))
        write(n.p("doc.txt"), data)
        edits[current_revision(n.p("doc.txt"))] = data
    assert len(edits) == 3
    heal(trio, ["doc.txt"])

    winner = current_revision(a.p("doc.txt"))
    assert winner in edits, f"the visible revision {winner} is none of the three edits"
    assert read_file(a.p("doc.txt")) == edits[winner]
    listed = {line.split()[0] for line in conflicts(a.p("doc.txt"))}
    assert listed == set(edits) - {winner}, f"user.hypernet.conflicts lists {listed}, not the two other edits"
    for n in (a, b, c):
        out = n.cli("conflicts").stdout.splitlines()
        assert len(out) == 2 and all(line.startswith(n.p("doc.txt") + "  ") for line in out), \
            f"node {n.name}: `hypernet conflicts` (whole tree) printed {out}"
        assert n.cli("conflicts", n.p("doc.txt")).stdout.splitlines() == out
    retrievable(trio, "doc.txt", edits.items())
    log = a.cli("log", a.p("doc.txt")).stdout
    assert log.count("[conflict]") == 2 and log.count("[visible]") == 1, f"log lacks head markers:\n{log}"

    keep = sorted(listed)[0]
    with pytest.raises(OSError) as bad:
        os.setxattr(b.p("doc.txt"), "user.hypernet.resolve", b"ffffffffffff")
    assert bad.value.errno == 22, f"resolve to an unknown revision: {bad.value}, not EINVAL"
    os.setxattr(b.p("doc.txt"), "user.hypernet.resolve", keep[:12].encode())
    merged = current_revision(b.p("doc.txt"))
    settle(trio, ["doc.txt"], what="after the resolve")
    assert doc_id(a.p("doc.txt")) == ident
    for n in (a, b, c):
        assert conflicts(n.p("doc.txt")) == [], f"node {n.name} still lists conflicts after the resolve"
        assert read_file(n.p("doc.txt")) == edits[keep]
        assert n.cli("conflicts").stdout == ""
    merge_line = next(line for line in a.cli("log", a.p("doc.txt")).stdout.splitlines() if line.startswith(merged[:12]))
    assert "[merge]" in merge_line and all(r[:12] in merge_line for r in edits), \
        f"the resolve revision does not name every head as a parent: {merge_line}"
    # Resolving a file without conflict to its head changes nothing.
    assert b.cli("resolve", b.p("doc.txt"), merged).stdout.strip() == merged
    assert current_revision(b.p("doc.txt")) == merged


# --- edit vs delete ---------------------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_an_edit_beats_a_concurrent_delete_which_stays_in_the_history(trio):
    a, b, c = start(trio)
    os.mkdir(a.p("d"))
    write(a.p("d", "f.txt"), b"original\n")
    write(a.p("d", "other.txt"), b"bystander\n")
    settle(trio, ["d/f.txt"], what="before the partition")
    original = current_revision(a.p("d", "f.txt"))
    trio.lab.partition([a.host], [b.host, c.host])
    write(a.p("d", "f.txt"), b"edited on a\n")
    edited = current_revision(a.p("d", "f.txt"))
    os.unlink(b.p("d", "f.txt"))
    os.unlink(b.p("d", "other.txt"))
    time.sleep(SETTLE)
    assert not os.path.exists(c.p("d", "f.txt")), "b's delete did not reach c"
    tree = heal(trio, ["d/f.txt"])
    assert "d/other.txt" not in tree, "a plain delete was undone"
    for n in (a, b, c):
        assert read_file(n.p("d", "f.txt")) == b"edited on a\n", f"node {n.name} lost the edit to the delete"
        assert current_revision(n.p("d", "f.txt")) == edited
    log = a.cli("log", a.p("d", "f.txt")).stdout
    assert "[deleted]" in log, f"the delete is not in the history:\n{log}"
    retrievable(trio, "d/f.txt", [(original, b"original\n"), (edited, b"edited on a\n")])
    # Resolving keeps the file where it is once the delete is merged away.
    tombstone = conflicts(a.p("d", "f.txt"))[0].split()[0]
    a.cli("resolve", a.p("d", "f.txt"), edited)
    settle(trio, ["d/f.txt"], what="after the resolve")
    for n in (a, b, c):
        assert conflicts(n.p("d", "f.txt")) == [] and read_file(n.p("d", "f.txt")) == b"edited on a\n"
    assert tombstone[:12] in a.cli("log", a.p("d", "f.txt")).stdout


# --- concurrent creates of one name ---------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_concurrent_creates_of_one_name_keep_both_documents(trio):
    a, b, c = start(trio)
    os.mkdir(a.p("d"))
    settle(trio, [], what="before the partition")
    isolate_all(trio)
    made = {}
    for n in (a, b, c):
        write(n.p("d", "new.txt"), f"created on {n.name}\n".encode())
        made[doc_id(n.p("d", "new.txt"))] = (current_revision(n.p("d", "new.txt")), f"created on {n.name}\n".encode())
    tree = heal(trio, [])
    names = sorted(p for p in tree if p.startswith("d/"))
    assert len(names) == 3 and "d/new.txt" in names, f"three documents created as d/new.txt show as {names}"
    shown = {}
    for rel in names:
        assert rel == "d/new.txt" or rel.startswith("d/new.txt (conflict "), f"unexpected name {rel}"
        shown[doc_id(a.p(*rel.split("/")))] = rel
    assert set(shown) == set(made), "not every created document is shown"
    for document, rel in shown.items():
        settle(trio, [rel], what="after the heal")
        retrievable(trio, rel, [made[document]])


# --- concurrent renames ---------------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_concurrent_renames_of_one_file_end_under_one_name(trio):
    a, b, c = start(trio)
    for d in ("d", "d1", "d2"):
        os.mkdir(a.p(d))
    write(a.p("d", "f.txt"), b"same file\n")
    write(a.p("d", "g.txt"), b"moved twice\n")
    settle(trio, ["d/f.txt", "d/g.txt"], what="before the partition")
    f_id, g_id = doc_id(a.p("d", "f.txt")), doc_id(a.p("d", "g.txt"))
    trio.lab.partition([a.host], [b.host, c.host])
    os.rename(a.p("d", "f.txt"), a.p("d", "from-a.txt"))
    os.rename(a.p("d", "g.txt"), a.p("d1", "g.txt"))
    time.sleep(0.05)
    os.rename(b.p("d", "f.txt"), b.p("d", "from-b.txt"))
    os.rename(b.p("d", "g.txt"), b.p("d2", "g.txt"))
    tree = heal(trio, [])
    f_names = [p for p in tree if p.startswith("d/from-")]
    g_names = [p for p in tree if p.endswith("/g.txt")]
    assert len(f_names) == 1 and "d/f.txt" not in tree, f"f.txt renamed twice shows as {f_names}"
    assert len(g_names) == 1, f"g.txt moved to two directories shows as {g_names}"
    for rel, ident, data in ((f_names[0], f_id, b"same file\n"), (g_names[0], g_id, b"moved twice\n")):
        settle(trio, [rel])
        assert doc_id(a.p(*rel.split("/"))) == ident, f"{rel} is not the renamed document"
        retrievable(trio, rel, [(current_revision(a.p(*rel.split("/"))), data)])


# --- moves into a directory deleted elsewhere, and rename cycles ------------------------------------------------

@pytest.mark.timeout(240)
def test_a_file_moved_into_a_directory_deleted_elsewhere_is_not_lost(trio):
    a, b, c = start(trio)
    os.mkdir(a.p("dir"))
    write(a.p("dir", "old.txt"), b"deleted with dir\n")
    write(a.p("f.txt"), b"moved in\n")
    settle(trio, ["f.txt"], what="before the partition")
    rev = current_revision(a.p("f.txt"))
    trio.lab.partition([a.host], [b.host, c.host])
    os.rename(a.p("f.txt"), a.p("dir", "f.txt"))
    shutil.rmtree(b.p("dir"))
    tree = heal(trio, ["dir/f.txt"])
    assert "dir/old.txt" not in tree, "a file deleted with its directory came back"
    assert "f.txt" not in tree
    retrievable(trio, "dir/f.txt", [(rev, b"moved in\n")])


@pytest.mark.timeout(240)
def test_directories_moved_into_each_other_concurrently_leave_a_valid_tree(trio):
    a, b, c = start(trio)
    os.mkdir(a.p("x"))
    os.mkdir(a.p("y"))
    write(a.p("x", "in-x.txt"), b"x\n")
    write(a.p("y", "in-y.txt"), b"y\n")
    settle(trio, [], what="before the partition")
    trio.lab.partition([a.host], [b.host, c.host])
    os.rename(a.p("x"), a.p("y", "x"))
    time.sleep(0.05)
    os.rename(b.p("y"), b.p("x", "y"))
    tree = heal(trio, [])
    files = sorted(p for p in tree if p.endswith(".txt"))
    assert len(files) == 2, f"after a rename cycle the files show as {files} (tree: {sorted(tree)})"
    for n in (a, b, c):
        for rel in files:
            assert read_file(n.p(*rel.split("/"))) in (b"x\n", b"y\n")


# --- deletes against edits and renames deeper in the tree (issue 15) ----------------------------------------------

@pytest.mark.timeout(240)
def test_edits_inside_a_directory_deleted_elsewhere_bring_it_back(trio):
    a, b, c = start(trio)
    os.makedirs(a.p("q", "D"))
    os.makedirs(a.p("c", "D", "sub"))
    write(a.p("q", "D", "q.txt"), b"v0\n")
    write(a.p("c", "D", "sub", "keep.txt"), b"k\n")
    settle(trio, ["q/D/q.txt", "c/D/sub/keep.txt"], what="before the partition")
    q_id = doc_id(a.p("q", "D", "q.txt"))
    trio.lab.partition([a.host], [b.host, c.host])
    shutil.rmtree(a.p("q", "D"))
    shutil.rmtree(a.p("c", "D"))
    write(b.p("q", "D", "q.txt"), b"q edited by B\n")
    write(b.p("c", "D", "sub", "new.txt"), b"new\n")
    edited = current_revision(b.p("q", "D", "q.txt"))
    tree = heal(trio, ["q/D/q.txt", "c/D/sub/new.txt"])
    assert "c/D/sub/keep.txt" not in tree, "a file deleted and changed nowhere else came back"
    for n in (a, b, c):
        assert read_file(n.p("q", "D", "q.txt")) == b"q edited by B\n", f"node {n.name} lost b's edit"
        assert doc_id(n.p("q", "D", "q.txt")) == q_id and current_revision(n.p("q", "D", "q.txt")) == edited
        assert read_file(n.p("c", "D", "sub", "new.txt")) == b"new\n", f"node {n.name} lost b's new file"
    # The deletes stay in the history and the edit against one is a conflict, as for a file.
    for rel in ("q/D/q.txt", "q/D", "c/D"):
        log = a.cli("log", a.p(*rel.split("/"))).stdout
        assert "[deleted]" in log, f"the delete of {rel} is not in its history:\n{log}"
    assert a.p("q", "D", "q.txt") in a.cli("conflicts").stdout
    same_after_restart(trio, a, tree)
    # Writing in a directory brought back keeps it, on every node.
    write(a.p("c", "D", "later.txt"), b"later\n")
    tree = settle(trio, ["c/D/later.txt"], what="after a write in the directory brought back")
    assert {"c/D/later.txt", "c/D/sub/new.txt"} <= set(tree)
    # Resolving the edit against the delete keeps the file and its directories where they are.
    a.cli("resolve", a.p("q", "D", "q.txt"), edited)
    tree = settle(trio, ["q/D/q.txt"], what="after the resolve")
    assert read_file(b.p("q", "D", "q.txt")) == b"q edited by B\n" and conflicts(b.p("q", "D", "q.txt")) == []


def removed_on_a(cl, top, name):
    """`top/D/name` on every node, then, with a cut off from b and c, `rm -rf top/D` on a; returns the nodes."""
    a, b, c = start(cl)
    os.makedirs(a.p(top, "D"))
    write(a.p(top, "D", name), name.split(".")[0].encode() + b"\n")
    settle(cl, [f"{top}/D/{name}"], what="before the partition")
    cl.lab.partition([a.host], [b.host, c.host])
    shutil.rmtree(a.p(top, "D"))
    return a, b, c


@pytest.mark.timeout(240)
def test_a_directory_renamed_while_deleted_elsewhere_shows_the_same_everywhere(trio):
    a, b, c = removed_on_a(trio, "o", "o1.txt")
    time.sleep(1)
    os.rename(b.p("o", "D"), b.p("o", "E"))
    tree = heal(trio, [])
    # The later rename decides the directory's entry; its file was deleted and changed nowhere: it stays deleted.
    assert "o/E" in tree and "o/D" not in tree and "o/E/o1.txt" not in tree, sorted(tree)
    same_after_restart(trio, a, tree)
    same_after_restart(trio, b, tree)


@pytest.mark.timeout(240)
def test_a_delete_built_on_an_older_head_shows_the_edit_it_lost_to_at_once(trio):
    """The fault harness (seed 11): c removed a directory while an edit below it was stored but not shown there, so
    c's delete built on an older head and lost to the edit. a and b showed the directory again; c, to which nothing
    new arrived, never did, although all held the same revisions."""
    a, b, c = start(trio)
    os.makedirs(a.p("t", "D"))
    write(a.p("t", "D", "x.txt"), b"v0\n")
    settle(trio, ["t/D/x.txt"], what="before the partition")
    trio.lab.partition([a.host, b.host], [c.host])
    write(a.p("t", "D", "x.txt"), b"edited on a\n")
    edit = current_revision(a.p("t", "D", "x.txt"))
    time.sleep(1)
    # c's later edit wins: a's, once received, is stored on c but not shown there.
    write(c.p("t", "D", "x.txt"), b"edited on c\n")
    heal(trio, ["t/D/x.txt"])
    assert read_file(c.p("t", "D", "x.txt")) == b"edited on c\n"
    # x has a metadata change, D a listing change, not yet in a revision when they go.
    write(c.p("t", "D", "new.txt"), b"new\n")
    os.chmod(c.p("t", "D", "x.txt"), 0o600)
    # The edit may show again before the directory goes (then `rm -rf` meets it: "Directory not empty").
    shutil.rmtree(c.p("t", "D"), ignore_errors=True)
    # a's edit beats c's delete (built on c's edit): every node shows it, c too, without anything new arriving.
    tree = same_view(trio, "after c removed the directory")
    assert "t/D/x.txt" in tree and "t/D/new.txt" not in tree, sorted(tree)
    for n in (a, b, c):
        assert read_file(n.p("t", "D", "x.txt")) == b"edited on a\n", f"node {n.name} lost a's edit"
        assert current_revision(n.p("t", "D", "x.txt")) == edit
    same_after_restart(trio, c, tree)


@pytest.mark.timeout(240)
def test_a_write_in_a_directory_kept_against_its_delete_keeps_it(trio):
    """The fault harness (seed 11): a directory removed on one node and written into on another shows again (the
    write beats the delete). The next revision of it, written by any node, named the delete as a parent: the
    directory was no longer kept against it, the listing that removed it won, and it vanished on every node with
    what was written in it, acknowledged writes included."""
    a, b, c = removed_on_a(trio, "k", "old.txt")
    write(b.p("k", "D", "new.txt"), b"new\n")
    tree = heal(trio, ["k/D/new.txt"])
    assert "k/D/new.txt" in tree and "k/D/old.txt" not in tree, sorted(tree)
    for n in (a, b):
        write(n.p("k", "D", f"later-{n.name}.txt"), f"later on {n.name}\n".encode())
        tree = settle(trio, [f"k/D/later-{n.name}.txt"], what=f"after a write in the directory on {n.name}")
        assert {"k/D/new.txt", f"k/D/later-{n.name}.txt"} <= set(tree), sorted(tree)
    same_after_restart(trio, c, tree)


# --- clock skew -------------------------------------------------------------------------------------------------

def run_skewed(node, offset):
    """Starts `node`'s daemon under faketime (the daemon re-executes itself, keeping LD_PRELOAD)."""
    run = node.run

    def skewed(*args, **kw):
        if args and args[0] == "mount":
            kw["prefix"] = [*kw.get("prefix", ()), "faketime", "-f", offset]
            kw["env_extra"] = {**kw.get("env_extra", {}), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        return run(*args, **kw)

    node.run = skewed


@pytest.mark.timeout(240)
def test_a_skewed_clock_neither_loses_an_edit_nor_changes_the_agreed_winner(trio):
    if not shutil.which("faketime"):
        pytest.skip("faketime is not installed (mount-helpers/deps.sh)")
    a, b, c = nodes(trio)
    run_skewed(b, "-5m")
    run_skewed(c, "+5m")
    trio.start()
    write(a.p("doc.txt"), b"original\n")
    settle(trio, ["doc.txt"], what="before the partition")
    isolate_all(trio)
    edits = {}
    for n in (a, b, c):
        write(n.p("doc.txt"), f"partitioned edit on {n.name}\n".encode())
        edits[n.name] = (current_revision(n.p("doc.txt")), f"partitioned edit on {n.name}\n".encode())
    heal(trio, ["doc.txt"])
    # The fast clock's edit is the latest by HLC: every node agrees on it, whatever its own clock says.
    assert current_revision(a.p("doc.txt")) == edits["c"][0]
    retrievable(trio, "doc.txt", edits.values())
    # Edits made after seeing the fast clock's revision still win: the slow node's HLC has moved past it.
    for n in (b, a):
        data = f"later edit on {n.name}\n".encode()
        write(n.p("doc.txt"), data)
        rev = current_revision(n.p("doc.txt"))
        settle(trio, ["doc.txt"], what=f"after {n.name}'s later edit")
        for m in nodes(trio):
            assert read_file(m.p("doc.txt")) == data, f"node {m.name} lost {n.name}'s later edit to the skewed clock"
            assert current_revision(m.p("doc.txt")) == rev


# --- editors on a conflicted file -------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_editor_saves_on_a_conflicted_file_keep_its_id_and_its_conflict(trio):
    a, b, c = start(trio)
    write(a.p("notes.txt"), b"one\ntwo\n")
    settle(trio, ["notes.txt"], what="before the partition")
    ident = doc_id(a.p("notes.txt"))
    trio.lab.partition([a.host], [b.host, c.host])
    write(a.p("notes.txt"), b"one\ntwo\nthree on a\n")
    write(b.p("notes.txt"), b"one\ntwo\nthree on b\n")
    heal(trio, ["notes.txt"])
    before = conflicts(a.p("notes.txt"))
    assert len(before) == 1
    other = before[0].split()[0]

    subprocess.run(["sed", "-i", "s/one/ONE/", a.p("notes.txt")], check=True)
    subprocess.run(["python3", "-c", "import os, sys; p = sys.argv[1]; t = p + '.tmp'; "
                    "open(t, 'wb').write(open(p, 'rb').read() + b'py\\n'); os.replace(t, p)", a.p("notes.txt")],
                   check=True)
    settle(trio, ["notes.txt"], what="after the editor saves")
    for n in (a, b, c):
        assert doc_id(n.p("notes.txt")) == ident, f"node {n.name}: an editor save changed the document id"
        assert [line.split()[0] for line in conflicts(n.p("notes.txt"))] == [other], \
            f"node {n.name}: the conflict is no longer listed after editing the visible head"
        assert read_file(n.p("notes.txt")).startswith(b"ONE\n") and read_file(n.p("notes.txt")).endswith(b"py\n")
    made = b.cli("resolve", b.p("notes.txt"), other[:12]).stdout.strip()
    settle(trio, ["notes.txt"], what="after the resolve")
    for n in (a, b, c):
        assert current_revision(n.p("notes.txt")) == made and conflicts(n.p("notes.txt")) == []
        assert read_file(n.p("notes.txt")) == read_file(b.p(".hypernet", "revisions", other[:12]))
