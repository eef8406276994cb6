"""open(O_TMPFILE) and linkat (issue 16, item 2): a file without a name, read and written through its descriptor, that
becomes a new document where linkat names it, with what was written as its one revision; never named, it leaves
nothing (docs/design.md, "Files without a name")."""

import contextlib
import os
import re

import pytest

import cluster as cluster_module
from cluster import eventually
from helpers import doc_id, errno_of, history, link_fd, read_file, write_file

REMOTE = 2.0  # contract: remote changes show in a mount within ~2 s; generous multiples below


def link_empty_path(fd, path):
    link_fd(fd, path, empty_path=True)


def tmpfile(directory, flags=0):
    return os.open(directory, os.O_TMPFILE | os.O_RDWR | flags, 0o600)


def store_counts(node):
    """(documents, revisions) from `hypernet status`."""
    found = re.search(r"store: (\d+) documents, (\d+) revisions", node.cli("status").stdout)
    return int(found[1]), int(found[2])


def settled(node):
    """Waits for the once-a-second pass to have written every directory revision."""
    eventually(lambda: "directories awaiting a revision: 0" in node.cli("status").stdout, 10,
               "directory revisions still due")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("link", [link_empty_path, link_fd], ids=["AT_EMPTY_PATH", "proc-fd"])
def test_a_named_tmpfile_is_a_new_document_holding_what_was_written(node, link):
    os.mkdir(node.p("d"))
    listing = sorted(os.listdir(node.p("d")))
    fd = tmpfile(node.p("d"))
    try:
        os.write(fd, b"atomic\nand more")
        os.ftruncate(fd, 7)
        os.fchmod(fd, 0o640)
        os.setxattr(fd, "user.note", b"before the name")
        os.fsync(fd)  # nothing to replicate yet: returns at once
        st = os.fstat(fd)
        assert (st.st_nlink, st.st_size) == (0, 7), "an unnamed file has no link and its written size"
        assert os.pread(fd, 100, 0) == b"atomic\n"
        assert sorted(os.listdir(node.p("d"))) == listing, "an unnamed file shows in its directory"
        f = node.p("d", "f")
        link(fd, f)
        assert os.lstat(f).st_ino == st.st_ino
        assert (os.fstat(fd).st_nlink, os.lstat(f).st_nlink) == (1, 1)
        assert read_file(f) == b"atomic\n"
        assert os.lstat(f).st_mode & 0o7777 == 0o640
        assert os.getxattr(f, "user.note") == b"before the name"
        # Written through the descriptor after the name: the same file.
        os.pwrite(fd, b"after\n", 7)
        # A second name is a hard link; a taken one is refused.
        assert errno_of(link, fd, f) == "EEXIST"
        link(fd, node.p("g"))
        assert (os.lstat(f).st_nlink, os.lstat(node.p("g")).st_ino) == (2, st.st_ino)
    finally:
        os.close(fd)
    assert read_file(f) == b"atomic\nafter\n"
    # As a file created there and written: its first revision has the content up to the link, the close adds one.
    assert [size for *_, size in history(f)] == [13, 7]
    log = node.cli("log", f).stdout.splitlines()
    assert len([line for line in log if line.strip()]) == 2, log
    node.restart()
    assert read_file(f) == b"atomic\nafter\n" and len(history(f)) == 2
    assert os.getxattr(f, "user.note") == b"before the name"


@pytest.mark.timeout(120)
def test_a_tmpfile_never_named_leaves_nothing(node):
    write_file(node.p("kept"), b"kept\n")
    settled(node)
    before = (store_counts(node), node.pack_bytes(), sorted(os.listdir(node.mount)))
    fd = tmpfile(node.mount)
    try:
        os.write(fd, os.urandom(1 << 20))
        os.fsync(fd)
        os.setxattr(fd, "user.x", b"1")
        assert len(os.pread(fd, 2 << 20, 0)) == 1 << 20
    finally:
        os.close(fd)
    settled(node)
    # No document, no revision, and what it held never went into the packs.
    assert (store_counts(node), node.pack_bytes(), sorted(os.listdir(node.mount))) == before
    # O_EXCL: may never be named (the kernel refuses the link).
    fd = tmpfile(node.mount, os.O_EXCL)
    try:
        os.write(fd, b"never\n")
        assert errno_of(link_fd, fd, node.p("x")) == "ENOENT"
        assert errno_of(link_empty_path, fd, node.p("x")) == "ENOENT"
    finally:
        os.close(fd)
    assert not os.path.exists(node.p("x"))
    assert store_counts(node) == before[0]


@pytest.mark.timeout(120)
def test_a_tmpfile_open_when_the_daemon_stops_is_gone_after_the_restart(node):
    write_file(node.p("kept"), b"kept\n")
    settled(node)
    counts = store_counts(node)
    fd = tmpfile(node.mount)
    try:
        os.write(fd, b"in flight\n")
        assert store_counts(node)[1] == counts[1], "an unnamed file made a revision"
        node.restart()
    finally:
        with contextlib.suppress(OSError):  # the connection it was open on is gone
            os.close(fd)
    assert store_counts(node) == counts, "the unnamed file's row outlived the restart"
    assert "O_TMPFILE" in node.log_text()
    # A crash (SIGKILL) leaves it the same way.
    fd = tmpfile(node.mount)
    try:
        os.write(fd, b"in flight\n")
        node.kill9()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    node.start()
    assert store_counts(node) == counts
    assert read_file(node.p("kept")) == b"kept\n"


@pytest.mark.timeout(60)
def test_a_tmpfile_whose_directory_was_removed_is_named_elsewhere(node, tmp_path):
    # As on ext4: the directory it was opened in is empty to rmdir, and is not needed for the name.
    for root in (str(tmp_path), node.mount):
        os.mkdir(os.path.join(root, "d"))
        fd = tmpfile(os.path.join(root, "d"))
        try:
            os.write(fd, b"orphan\n")
            os.rmdir(os.path.join(root, "d"))
            link_empty_path(fd, os.path.join(root, "f"))
        finally:
            os.close(fd)
        assert read_file(os.path.join(root, "f")) == b"orphan\n"
    assert len(history(node.p("f"))) == 1


@pytest.mark.timeout(60)
def test_o_tmpfile_in_hypernet_is_refused_and_a_name_there_too(node):
    assert errno_of(tmpfile, node.p(".hypernet")) == "EROFS"
    fd = tmpfile(node.mount)
    try:
        assert errno_of(link_empty_path, fd, node.p(".hypernet", "x")) == "EROFS"
        link_empty_path(fd, node.p("named"))
    finally:
        os.close(fd)
    assert read_file(node.p("named")) == b""


@pytest.mark.timeout(180)
def test_a_named_tmpfile_replicates_and_foreign_trees_refuse_one(cluster):
    a, b = cluster_module.sharing_pair(cluster, "share", "read", "write", "delete")
    fd = tmpfile(a.p("share"))
    try:
        os.write(fd, b"made unnamed\n")
        # Its chain is share/'s until it has a name: it cannot get one of its own.
        assert errno_of(os.setxattr, fd, "user.hypernet.grant", b"bob read") == "EINVAL"
        # Another chain governs share/: a name outside it would show the file to members who cannot open it.
        assert errno_of(link_empty_path, fd, a.p("outside")) == "EXDEV"
        link_empty_path(fd, a.p("share", "doc"))
    finally:
        os.close(fd)
    shared = b.p("@alice", "share", "doc")
    eventually(lambda: os.path.exists(shared) and read_file(shared) == b"made unnamed\n", 10 * REMOTE,
               "bob does not see the named tmpfile")
    assert doc_id(shared) == doc_id(a.p("share", "doc"))
    assert len(history(a.p("share", "doc"))) == 1
    # Under /@NAME/ a file without a name could never get one (links there are EXDEV): as on a file system
    # without O_TMPFILE, and programs fall back to a named temporary file.
    assert errno_of(tmpfile, b.p("@alice", "share")) == "ENOTSUP"  # = EOPNOTSUPP on Linux
