"""Hard links (issue 16, item 2): `link(2)` gives a document one more name. st_ino, st_nlink, content and history are
shared; removing a name keeps the others; the names replicate, and another node shows the same (docs/design.md,
"Hard links")."""

import os

import pytest

import cluster as cluster_module
from cluster import eventually, wait_converged
from helpers import doc_id, errno_of, history, read_file, write_file

REMOTE = 2.0  # contract: remote changes show in a mount within ~2 s; generous multiples below


def nlinks(*paths):
    return [os.lstat(p).st_nlink for p in paths]


@pytest.mark.timeout(120)
def test_a_link_is_one_more_name_of_the_same_document(node):
    os.mkdir(node.p("d"))
    f, g, h = node.p("f"), node.p("d", "g"), node.p("d", "h")
    write_file(f, b"first\n")
    before = history(f)
    os.link(f, g)
    assert os.lstat(f).st_ino == os.lstat(g).st_ino, "two names of one document show two inodes"
    assert nlinks(f, g) == [2, 2]
    assert doc_id(f) == doc_id(g)
    with open(g, "ab") as out:
        out.write(b"second\n")
    assert read_file(f) == b"first\nsecond\n", "a write through one name does not show through the other"
    # A second link, then renames of one name: the others stay.
    os.link(g, h)
    assert nlinks(f, g, h) == [3, 3, 3]
    os.rename(h, node.p("h2"))
    assert nlinks(f, g, node.p("h2")) == [3, 3, 3]
    # Removing a name keeps the document, its id and its whole history.
    os.unlink(f)
    assert nlinks(g, node.p("h2")) == [2, 2]
    assert read_file(g) == b"first\nsecond\n"
    assert [r for r, *_ in before][-1] in [r for r, *_ in history(g)], "the history before the link is gone"
    # What refuses: a directory, a taken name, a name under /.hypernet and a file of /.hypernet.
    assert errno_of(os.link, node.p("d"), node.p("d2")) == "EPERM"
    assert errno_of(os.link, g, node.p("h2")) == "EEXIST"
    assert errno_of(os.link, g, node.p(".hypernet", "g")) == "EROFS"
    assert errno_of(os.link, node.p(".hypernet", "status"), node.p("status")) == "EXDEV"
    # The names are stored: a restart shows them.
    ino = os.lstat(g).st_ino
    node.restart()
    assert [os.lstat(p).st_ino for p in (g, node.p("h2"))] == [ino, ino]
    assert nlinks(g, node.p("h2")) == [2, 2]
    # The last name goes with a delete, kept in the history.
    os.unlink(g)
    assert nlinks(node.p("h2")) == [1]
    rev = history(node.p("h2"))[0][0]
    os.unlink(node.p("h2"))
    assert read_file(node.p(".hypernet", "revisions", rev[:12])) == b"first\nsecond\n"


@pytest.mark.timeout(120)
def test_a_save_by_rename_over_one_name_leaves_the_other_with_the_old_content(node):
    f, g, tmp = node.p("f"), node.p("g"), node.p("f.tmp")
    write_file(f, b"old\n")
    os.link(f, g)
    ident = doc_id(g)
    write_file(tmp, b"new\n")
    os.rename(tmp, f)
    assert read_file(f) == b"new\n" and read_file(g) == b"old\n", "as on ext4, the other name keeps the old file"
    assert nlinks(f, g) == [1, 1]
    assert os.lstat(f).st_ino != os.lstat(g).st_ino
    assert doc_id(g) == ident
    # rename(2) between two names of one file does nothing.
    os.link(g, node.p("g2"))
    os.rename(g, node.p("g2"))
    assert nlinks(g, node.p("g2")) == [2, 2]


@pytest.mark.timeout(180)
def test_links_into_another_rights_domain_or_tree_are_refused_with_exdev(cluster):
    a, b = cluster_module.sharing_pair(cluster, "share", "read", "write", "delete")
    os.makedirs(a.p("private"))
    write_file(a.p("private", "f"), b"mine\n")
    write_file(a.p("share", "doc"), b"shared\n")
    # Another chain governs share/: a name there would show a private document to bob.
    assert errno_of(os.link, a.p("private", "f"), a.p("share", "f")) == "EXDEV"
    assert errno_of(os.link, a.p("share", "doc"), a.p("private", "doc")) == "EXDEV"
    os.link(a.p("share", "doc"), a.p("share", "doc2"))  # within one domain
    assert nlinks(a.p("share", "doc"), a.p("share", "doc2")) == [2, 2]
    shared = b.p("@alice", "share", "doc")
    eventually(lambda: os.path.exists(shared), 10 * REMOTE, "bob does not see alice's shared document")
    write_file(b.p("mine"), b"bob's\n")
    assert errno_of(os.link, shared, b.p("doc")) == "EXDEV", "a link out of another identity's tree"
    assert errno_of(os.link, b.p("mine"), b.p("@alice", "share", "mine")) == "EXDEV"
    assert errno_of(os.link, shared, b.p("@alice", "share", "doc3")) == "EXDEV"


@pytest.mark.timeout(180)
def test_another_node_shows_every_name_of_one_document(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    write_file(a.p("f"), b"linked\n")
    os.mkdir(a.p("d"))
    os.link(a.p("f"), a.p("d", "g"))
    os.link(a.p("f"), a.p("d", "h"))

    def shown(node, *names):
        try:
            infos = [os.lstat(node.p(*n.split("/"))) for n in names]
        except FileNotFoundError:
            return None
        return len({i.st_ino for i in infos}), [i.st_nlink for i in infos]

    eventually(lambda: shown(b, "f", "d/g", "d/h") == (1, [3, 3, 3]), 10 * REMOTE,
               lambda: f"node b shows (inodes, links) {shown(b, 'f', 'd/g', 'd/h')}, not one inode with 3 links")
    assert read_file(b.p("d", "g")) == b"linked\n"
    assert doc_id(b.p("d", "h")) == doc_id(a.p("f"))
    # An edit through one name on b shows through every name on a; a name removed on b goes on a.
    write_file(b.p("d", "g"), b"edited on b\n")
    os.unlink(b.p("f"))
    eventually(lambda: shown(a, "d/g", "d/h") == (1, [2, 2]) and not os.path.exists(a.p("f"))
               and read_file(a.p("d", "h")) == b"edited on b\n", 10 * REMOTE,
               lambda: f"node a shows {shown(a, 'd/g', 'd/h')}, f exists: {os.path.exists(a.p('f'))}")
    wait_converged([a, b], 10 * REMOTE)
    # A restart of b shows the same names from its catalog.
    b.restart()
    cluster.wait_connected()
    assert shown(b, "d/g", "d/h") == (1, [2, 2])
    # A rename of one name moves that name only; the last name's removal deletes the document everywhere, its
    # history kept.
    os.rename(a.p("d", "h"), a.p("h2"))
    eventually(lambda: shown(b, "d/g", "h2") == (1, [2, 2]) and not os.path.exists(b.p("d", "h")), 10 * REMOTE,
               lambda: f"after a rename of one name, node b shows {shown(b, 'd/g', 'h2')}")
    rev = history(a.p("h2"))[0][0]
    os.unlink(a.p("d", "g"))
    os.unlink(a.p("h2"))
    eventually(lambda: not os.path.exists(b.p("h2")) and os.listdir(b.p("d")) == [], 10 * REMOTE,
               "node b still shows a name of the deleted document")
    assert read_file(b.p(".hypernet", "revisions", rev[:12])) == b"edited on b\n"


@pytest.fixture
def pair(make_node, node_dir):
    """Two mounting nodes a, b of one identity, each in its own network namespace (not started)."""
    with cluster_module.lab_cluster(make_node, node_dir, "hnlink", hosts=2) as cl:
        a = cl.add("a")
        cl.add("b", identity=a)
        yield cl


@pytest.mark.timeout(240)
def test_a_link_into_a_directory_deleted_elsewhere_keeps_both(pair):
    a, b = pair["a"], pair["b"]
    pair.start()
    os.mkdir(a.p("d"))
    write_file(a.p("d", "old"), b"deleted with d\n")
    write_file(a.p("f"), b"kept\n")
    wait_converged([a, b], 10 * REMOTE, what="before the partition")
    pair.lab.partition([a.host], [b.host])
    os.link(a.p("f"), a.p("d", "f"))
    os.unlink(b.p("d", "old"))
    os.rmdir(b.p("d"))
    pair.lab.heal()
    pair.wait_connected(timeout=45)
    tree, _ = wait_converged([a, b], 45, what="after the heal")
    # The link is a change of d: it beats d's delete, as a file moved into it does; d shows with the link only.
    assert "d/f" in tree and "f" in tree and "d/old" not in tree, sorted(tree)
    for n in (a, b):
        assert os.lstat(n.p("f")).st_ino == os.lstat(n.p("d", "f")).st_ino, f"node {n.name}: two inodes"
        assert nlinks(n.p("f"), n.p("d", "f")) == [2, 2]


@pytest.mark.timeout(240)
def test_concurrent_links_and_unlinks_of_one_document_agree_everywhere(pair):
    a, b = pair["a"], pair["b"]
    pair.start()
    os.mkdir(a.p("x"))
    os.mkdir(a.p("y"))
    write_file(a.p("f"), b"one document\n")
    os.link(a.p("f"), a.p("x", "f"))
    wait_converged([a, b], 10 * REMOTE, what="before the partition")
    pair.lab.partition([a.host], [b.host])
    os.link(a.p("f"), a.p("y", "from-a"))
    os.unlink(b.p("x", "f"))
    pair.lab.heal()
    pair.wait_connected(timeout=45)
    tree, _ = wait_converged([a, b], 45, what="after the heal")
    names = sorted(p for p in tree if tree[p][0] == "file")
    assert names == ["f", "y/from-a"], f"the names after a link on a and an unlink on b: {names}"
    for n in (a, b):
        assert len({os.lstat(n.p(*p.split("/"))).st_ino for p in names}) == 1
        assert nlinks(*(n.p(*p.split("/")) for p in names)) == [2, 2]
