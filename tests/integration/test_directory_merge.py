"""Directories of one name made concurrently on several nodes are one directory (issue 15, item 4): each side's
entries show in it (same-named files inside as conflict copies), on every node, after restarts, and a write into a
merged directory on a node that had not seen the merge yet shows there too. A file against a directory keeps the
renamed form. docs/design.md, "Same-named directories".
"""

import os
import time

import pytest

import cluster as cluster_module
from cluster import eventually, snapshot, wait_converged, write
from helpers import doc_id, read_file
from test_conflicts import heal, isolate_all, same_after_restart, settle, start, trio  # noqa: F401 (fixture)

pytestmark = pytest.mark.replication


def paths(node):
    shown = cluster_module.try_snapshot(node.mount)
    return [] if isinstance(shown, OSError) else sorted(shown)


def conflicted(tree):
    return sorted(p for p in tree if " (conflict " in p)


def directories(tree):
    return sorted(p for p, v in tree.items() if v[0] == "dir")


@pytest.mark.timeout(240)
def test_two_nodes_offline_make_one_directory_of_one_name(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    b.stop()
    os.makedirs(a.p("photos", "trip"))
    write(a.p("photos", "from-a.jpg"), b"a's photo\n")
    write(a.p("photos", "trip", "same.txt"), b"a's note\n")
    a.stop()
    b.start()
    os.makedirs(b.p("photos", "trip"))
    write(b.p("photos", "from-b.jpg"), b"b's photo\n")
    write(b.p("photos", "trip", "same.txt"), b"b's note\n")
    a.start()
    cluster.wait_connected(timeout=30)
    tree, _ = wait_converged([a, b], 30, what="after both came back")
    assert directories(tree) == ["photos", "photos/trip"], f"the two photos/trip show as {directories(tree)}"
    assert read_file(a.p("photos", "from-a.jpg")) == b"a's photo\n"
    assert read_file(b.p("photos", "from-b.jpg")) == b"b's photo\n"
    notes = sorted(p for p in tree if p.startswith("photos/trip/"))
    assert len(notes) == 2 and "photos/trip/same.txt" in notes, f"the two same.txt show as {notes}"
    assert sorted(read_file(a.p(*p.split("/"))) for p in notes) == [b"a's note\n", b"b's note\n"]
    # The view survives a restart, and writes on either node go into the one directory.
    b.restart()
    cluster.wait_connected(timeout=30)
    assert snapshot(b.mount) == tree, "b shows another tree after a restart"
    write(b.p("photos", "trip", "after.txt"), b"written after the merge\n")
    write(a.p("photos", "later-a.jpg"), b"later\n")
    wait_converged([a, b], 30, what="after writes into the merged directory")
    # A delete concurrent with another node's first revision of the merge would be undone, as by a concurrent move
    # (docs/design.md): this one follows it.
    time.sleep(2)
    os.remove(a.p("photos", "from-b.jpg"))
    tree, _ = wait_converged([a, b], 30, what="after a delete in the merged directory")
    assert "photos/trip/after.txt" in tree and "photos/later-a.jpg" in tree
    assert "photos/from-b.jpg" not in tree, "a file removed from the merged directory came back"
    assert conflicted(tree) == [notes[1]] and directories(tree) == ["photos", "photos/trip"], sorted(tree)
    a.restart()
    cluster.wait_connected(timeout=30)
    assert wait_converged([a, b], 30, what="after a's restart")[0] == tree


@pytest.mark.timeout(300)
def test_three_nodes_merge_nested_directories_and_keep_a_file_against_a_directory(trio):
    a, b, c = start(trio)
    isolate_all(trio)
    for n in (a, b, c):
        os.makedirs(n.p("a", "b", "c"))
        write(n.p("a", "b", "c", f"{n.name}.txt"), f"made on {n.name}\n".encode())
        write(n.p("a", "b", "c", "same.txt"), f"same name on {n.name}\n".encode())
    os.mkdir(a.p("x"))
    write(a.p("x", "in-x.txt"), b"in the directory x\n")
    write(b.p("x"), b"the file x\n")
    tree = heal(trio, [])
    # The directory x and the file x are both kept, the one with the greater id renamed as usual.
    xs = sorted(p for p in tree if p == "x" or (p.startswith("x (conflict ") and "/" not in p))
    assert len(xs) == 2 and "x" in xs, f"the directory x and the file x show as {xs}"
    (dir_x,) = [p for p in xs if tree[p][0] == "dir"]
    (file_x,) = [p for p in xs if tree[p][0] == "file"]
    assert read_file(a.p(file_x)) == b"the file x\n"
    assert read_file(c.p(dir_x, "in-x.txt")) == b"in the directory x\n"
    merged = ["a", "a/b", "a/b/c", dir_x]
    assert directories(tree) == merged, f"directories after the heal: {directories(tree)}"
    inside = sorted(p for p in tree if p.startswith("a/b/c/"))
    assert [p for p in inside if not p.startswith("a/b/c/same.txt")] == ["a/b/c/a.txt", "a/b/c/b.txt", "a/b/c/c.txt"]
    assert len(inside) == 6 and "a/b/c/same.txt" in inside, f"three same.txt show as {inside}"
    # Moving the merged directory elsewhere writes the merge first, at every depth: the old parent's listing no
    # longer names the losers, and nothing placed in them may be left behind.
    os.mkdir(a.p("moved"))
    os.rename(a.p("a"), a.p("moved", "a"))
    tree = settle(trio, [], what="after a move of the merged directory")
    merged = ["moved", "moved/a", "moved/a/b", "moved/a/b/c", dir_x]
    assert directories(tree) == merged, f"directories after the move: {directories(tree)}"
    assert len([p for p in tree if p.startswith("moved/a/b/c/")]) == 6, sorted(tree)
    # Every node's next writes in the merged directories change nothing else.
    for n in (a, b, c):
        write(n.p("moved", "a", "b", "c", f"after-{n.name}.txt"), b"after\n")
    tree = settle(trio, [], what="after writes into the merged directories")
    assert directories(tree) == merged, f"directories after the writes: {directories(tree)}"
    assert len([p for p in tree if p.startswith("moved/a/b/c/")]) == 9, sorted(tree)
    same_after_restart(trio, c, tree)


@pytest.mark.timeout(300)
def test_a_write_into_a_merged_directory_from_a_node_that_had_not_seen_the_merge(trio):
    a, b, c = start(trio)
    isolate_all(trio)
    os.mkdir(a.p("photos"))
    write(a.p("photos", "a.txt"), b"from a\n")
    os.mkdir(b.p("photos"))
    write(b.p("photos", "b.txt"), b"from b\n")
    # The directory with the greater id is the one merged into the other: its node writes in it late.
    late, other = (a, b) if doc_id(a.p("photos")) > doc_id(b.p("photos")) else (b, a)
    survivor = doc_id(other.p("photos"))
    trio.lab.heal([late.host], [c.host])
    eventually(lambda: f"photos/{late.name}.txt" in paths(c), 60, f"c never got {late.name}'s photos")
    trio.lab.partition([late.host], [c.host])
    trio.lab.heal([other.host], [c.host])
    merged = ["photos", "photos/a.txt", "photos/b.txt"]
    eventually(lambda: sorted(paths(c)) == merged, 60,
               lambda: f"c does not show one merged photos: {sorted(snapshot(c.mount))}")
    assert doc_id(c.p("photos")) == survivor
    trio.lab.partition([other.host], [c.host])
    # c writes the merge (the loser ends) while `late`, which never saw it, writes into the loser.
    write(c.p("photos", "c.txt"), b"from c\n")
    time.sleep(1.5)
    write(late.p("photos", "late.txt"), b"written late into the loser\n")
    tree = heal(trio, [])
    assert directories(tree) == ["photos"], f"directories after the heal: {directories(tree)}"
    assert sorted(tree) == ["photos", "photos/a.txt", "photos/b.txt", "photos/c.txt", "photos/late.txt"], sorted(tree)
    assert read_file(other.p("photos", "late.txt")) == b"written late into the loser\n"
    # A later write on a node that had merged ends the revived loser again; nothing moves.
    write(other.p("photos", "last.txt"), b"last\n")
    tree = settle(trio, [], what="after the last write")
    assert "photos/late.txt" in tree and directories(tree) == ["photos"], sorted(tree)
    same_after_restart(trio, late, tree)
