"""Extended attributes as CONTRACT.md "Extended attributes" specifies them, on a single node."""

import errno
import os
import re
import sqlite3
import subprocess
import time

import pytest

from cluster import eventually
from helpers import XATTR_PREFIX, current_revision, doc_id, errno_of, history, hx, read_file, user_xattrs, write_file

READABLE = ["id", "revision", "history", "conflicts", "replicas", "quorum", "rights"]


def value(path, name) -> str:
    return hx(path, name).decode()


@pytest.fixture(params=["file", "directory", "root"])
def target(request, node):
    if request.param == "file":
        path = node.p("f")
        write_file(path, b"hello\n")
    elif request.param == "directory":
        path = node.p("d")
        os.mkdir(path)
    else:
        path = node.p()
    return path


def test_readable_table(target, node):
    ident = value(target, "id").strip()
    assert re.fullmatch(r"\S+", ident), f"user.hypernet.id {ident!r}"
    rev = value(target, "revision").strip()
    assert re.fullmatch(r"\S+", rev), f"user.hypernet.revision {rev!r}"
    entries = history(target)
    assert entries, "user.hypernet.history is empty"
    assert entries[0][0] == rev, "the newest history line is not the current revision"
    assert len({e[0] for e in entries}) == len(entries), "revision ids repeat in the history"
    assert hx(target, "conflicts") == b"", "conflicts must be empty on one node"
    assert value(target, "replicas").strip() == "1"
    assert value(target, "quorum").strip() == "1"
    token = node.cli("id").stdout.strip()
    assert value(target, "rights") == f"{token} read,write,delete,admin\n", "the owner is not the one member, with every role"
    assert node.cli("rights", target).stdout == value(target, "rights"), "hypernet rights differs from user.hypernet.rights"


def test_getfattr_dump_shows_revision(node):
    # Acceptance scenario 1: `getfattr -d -m user.hypernet f` shows a revision.
    path = node.p("f")
    write_file(path, b"hi\n")
    out = subprocess.run(["getfattr", "-d", "-m", "user.hypernet", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.search(f'^user\\.hypernet\\.revision="{current_revision(path)}(\\\\012)?"$', out.stdout, re.M), out.stdout


def test_history_grows_newest_first(node):
    path = node.p("f")
    revisions = []
    for i in range(3):
        write_file(path, b"x" * (i + 1))
        revisions.append(current_revision(path))
    entries = history(path)
    assert [e[0] for e in entries] == revisions[::-1]
    assert [e[3] for e in entries] == [3, 2, 1]
    assert len(set(revisions)) == 3
    assert len({doc_id(path)}) == 1


def test_id_is_stable_and_unique(node):
    a, b = node.p("a"), node.p("b")
    write_file(a, b"same")
    write_file(b, b"same")
    ident = doc_id(a)
    assert ident != doc_id(b), "two documents share an id"
    write_file(a, b"changed")
    os.truncate(a, 2)
    os.chmod(a, 0o600)
    os.rename(a, node.p("a2"))
    assert doc_id(node.p("a2")) == ident, "id changed across write/truncate/chmod/rename"


def test_unknown_hypernet_names(node):
    path = node.p("f")
    write_file(path, b"x")
    assert errno_of(os.getxattr, path, XATTR_PREFIX + "nosuch") == "ENODATA"
    assert errno_of(os.setxattr, path, XATTR_PREFIX + "nosuch", b"1") == "EINVAL"
    assert errno_of(os.removexattr, path, XATTR_PREFIX + "nosuch") == "EINVAL"


@pytest.mark.parametrize("name", ["grant", "revoke", "resolve", "quorum", "id", "nosuch"])
def test_removing_a_hypernet_name_is_einval(node, name):
    # Issue 14, item 9: the write-only names gave ENODATA where docs/xattrs.md and docs/errno.md say EINVAL.
    path = node.p("f")
    write_file(path, b"x")
    rev = current_revision(path)
    assert errno_of(os.removexattr, path, XATTR_PREFIX + name) == "EINVAL"
    assert current_revision(path) == rev


@pytest.mark.parametrize("name", ["id", "revision", "history", "conflicts", "replicas"])
def test_read_only_names_refuse_writes(node, name):
    path = node.p("f")
    write_file(path, b"x")
    before = hx(path, name)
    result = errno_of(os.setxattr, path, XATTR_PREFIX + name, b"forged")
    assert result in ("EINVAL", "EACCES", "EPERM"), f"setxattr user.hypernet.{name}: {result}"
    assert hx(path, name) == before


@pytest.mark.parametrize("name", ["trusted.t", "security.t", "system.hypernet", "os2.t"])
def test_names_outside_user_namespace(node, name):
    path = node.p("f")
    write_file(path, b"x")
    for op in (lambda: os.setxattr(path, name, b"v"), lambda: os.getxattr(path, name),
               lambda: os.removexattr(path, name)):
        result = errno_of(op)
        # ENOTSUP and EOPNOTSUPP are the same number on Linux.
        assert result == "ENOTSUP", f"{name}: {result}"
    assert name not in os.listxattr(path)


def test_user_xattr_round_trip(node):
    path = node.p("f")
    write_file(path, b"x")
    binary = bytes(range(256)) * 8
    os.setxattr(path, "user.bin", binary)
    os.setxattr(path, "user.empty", b"")
    os.setxattr(path, "user.text", b"hello")
    assert os.getxattr(path, "user.bin") == binary
    assert os.getxattr(path, "user.empty") == b""
    assert user_xattrs(path) == {"user.bin": binary, "user.empty": b"", "user.text": b"hello"}
    assert errno_of(os.setxattr, path, "user.text", b"again", os.XATTR_CREATE) == "EEXIST"
    assert errno_of(os.setxattr, path, "user.none", b"v", os.XATTR_REPLACE) == "ENODATA"
    os.setxattr(path, "user.text", b"replaced", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.text") == b"replaced"
    os.removexattr(path, "user.text")
    assert errno_of(os.getxattr, path, "user.text") == "ENODATA"
    assert errno_of(os.removexattr, path, "user.text") == "ENODATA"
    # Size probes through getfattr/listxattr with small buffers: the C library retries on ERANGE.
    out = subprocess.run(["getfattr", "--only-values", "-n", "user.bin", path], capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == binary


def test_user_xattrs_on_directory(node):
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, "user.tag", b"dir")
    assert user_xattrs(d) == {"user.tag": b"dir"}


def test_user_xattr_change_is_a_revision(node):
    path = node.p("f")
    write_file(path, b"content")
    rev, count = current_revision(path), len(history(path))
    os.setxattr(path, "user.k", b"v1")
    assert len(history(path)) == count + 1, "setxattr did not make a revision"
    assert current_revision(path) != rev
    os.setxattr(path, "user.k", b"v2")
    assert len(history(path)) == count + 2
    os.removexattr(path, "user.k")
    assert len(history(path)) == count + 3, "removexattr did not make a revision"
    assert read_file(path) == b"content"
    # setfattr(1), as the contract words it.
    subprocess.run(["setfattr", "-n", "user.k", "-v", "v3", path], check=True, timeout=30)
    assert len(history(path)) == count + 4


def test_user_xattrs_survive_restart(node):
    path = node.p("f")
    write_file(path, b"content")
    os.setxattr(path, "user.keep", b"\x00\x01kept")
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, "user.dirtag", b"d")
    node.restart()
    assert os.getxattr(path, "user.keep") == b"\x00\x01kept"
    assert os.getxattr(d, "user.dirtag") == b"d"


def test_quorum_set_and_inherited(node):
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, XATTR_PREFIX + "quorum", b"2")
    os.mkdir(os.path.join(d, "sub"))
    assert value(d, "quorum").strip() == "2"
    write_file(os.path.join(d, "f"), b"x")
    write_file(os.path.join(d, "sub", "g"), b"x")
    assert value(os.path.join(d, "f"), "quorum").strip() == "2", "a file created below does not inherit"
    assert value(os.path.join(d, "sub", "g"), "quorum").strip() == "2", "inheritance stops after one level"
    assert value(os.path.join(d, "sub"), "quorum").strip() == "2"
    # A file's own setting wins over its directory's; elsewhere the mount default stays.
    os.setxattr(os.path.join(d, "f"), XATTR_PREFIX + "quorum", b"3")
    assert value(os.path.join(d, "f"), "quorum").strip() == "3"
    write_file(node.p("outside"), b"x")
    assert value(node.p("outside"), "quorum").strip() == "1"
    node.restart()
    assert value(os.path.join(d, "sub", "g"), "quorum").strip() == "2", "quorum setting lost on restart"
    assert value(os.path.join(d, "f"), "quorum").strip() == "3"


@pytest.mark.parametrize("bad", [b"", b"0", b"-1", b"abc", b"1.5", b"99999999999999999999999", b"\x00"])
def test_bad_quorum_is_einval(node, bad):
    path = node.p("f")
    write_file(path, b"x")
    assert errno_of(os.setxattr, path, XATTR_PREFIX + "quorum", bad) == "EINVAL", f"quorum {bad!r}"
    assert value(path, "quorum").strip() == "1"


@pytest.mark.timeout(120)
def test_unreachable_quorum_fsync_eio(make_node):
    # Contract: fsync returns EIO when the quorum is not reached within the timeout; the data stays.
    node = make_node(quorum=2, fsync_timeout=1)
    path = node.p("f")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"kept locally")
        start = time.monotonic()
        with pytest.raises(OSError) as raised:
            os.fsync(fd)
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EIO
    assert 0.8 <= elapsed < 10, f"fsync failed after {elapsed:.1f}s with --fsync-timeout 1"
    assert value(path, "quorum").strip() == "2"
    assert value(path, "replicas").strip() == "1"
    assert read_file(path) == b"kept locally"
    # A file with its own quorum of 1 is durable as soon as this node holds it.
    os.setxattr(node.p(), XATTR_PREFIX + "quorum", b"1")
    fd = os.open(node.p("g"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)


def catalog_query(node, sql, args=()):
    db = sqlite3.connect(f"file:{node.home / 'store' / 'catalog.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


@pytest.mark.timeout(600)
def test_4097_user_xattrs_keep_the_file(node):
    # Issue 14, item 3: the writer had no limit and the reader stopped at 4,096, so after a remount the file
    # was gone (ENOENT), `hypernet cat` failed with EIO and fsck reported "invalid xattr count".
    path = node.p("f")
    write_file(path, b"x\n")
    names = [f"user.n{i:04d}" for i in range(4097)]
    for name in names:
        os.setxattr(path, name, b"x")
    node.stop()
    fsck = node.cli("fsck", check=False, timeout=300)
    assert fsck.returncode == 0, f"fsck: {fsck.stdout}{fsck.stderr}"
    node.start()
    assert read_file(path) == b"x\n"
    assert node.cli("cat", path).stdout == "x\n"
    assert [n for n in os.listxattr(path) if not n.startswith(XATTR_PREFIX)] == names
    assert os.getxattr(path, "user.n4096") == b"x"


def test_user_xattrs_fill_their_space_then_enospc(node):
    # One limit, where the write is accepted: a document's user xattrs (names with their NUL, and values) fit
    # in 64 KiB less 256 bytes, so listxattr always works and a set never rewrites more than that.
    path = node.p("f")
    write_file(path, b"content")
    value_ = b"v" * 1000
    names = []
    for i in range(100):
        result = errno_of(os.setxattr, path, f"user.k{i:03d}", value_)
        if result is not None:
            break
        names.append(f"user.k{i:03d}")
    assert result == "ENOSPC", f"setxattr past the space: {result}"
    assert len(names) == (64 * 1024 - 256) // (len("user.k000") + 1 + len(value_))
    rev = current_revision(path)
    # 882 bytes are left: 7 for the name "user.x" and its NUL, and 875 for a value.
    assert errno_of(os.setxattr, path, "user.x", b"y" * 876) == "ENOSPC"
    assert errno_of(os.setxattr, path, names[0], value_ + b"v" * 883) == "ENOSPC", "a growing replace must not fit"
    assert current_revision(path) == rev, "a refused set made a revision"
    # The total comes before the kernel's value limit: 64 KiB fits no document, one byte more is the kernel's E2BIG.
    assert errno_of(os.setxattr, path, "user.big", b"b" * 65536) == "ENOSPC"
    assert errno_of(os.setxattr, path, "user.big", b"b" * 65537) == "E2BIG"
    os.setxattr(path, names[0], b"short")  # shrinking is always allowed
    os.removexattr(path, names[1])
    os.setxattr(path, "user.x", b"y" * 900)
    listed = subprocess.run(["getfattr", "-d", path], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "user.x=" in listed.stdout, listed.stderr
    node.restart()
    assert os.getxattr(path, "user.x") == b"y" * 900 and read_file(path) == b"content"
    # A revision holds at most 4 KiB of xattrs; past that it names a list stored by the chunk (docs/xattrs.md).
    document = bytes.fromhex(doc_id(path))
    records = catalog_query(node, "SELECT length(record) FROM revisions WHERE document = ?", (document,))
    assert len(records) >= len(names) + 3
    assert max(r[0] for r in records) <= 5 * 1024, "a revision holds more than 4 KiB of xattrs"


@pytest.mark.timeout(900)
def test_thousands_of_user_xattrs_are_stored_by_the_chunk_and_replicate(cluster):
    # Issue 14, item 3: each set rewrote the whole list (10,000 attributes: 34 s, a 1.2 GB catalog). Now a list
    # past 4 KiB is stored as chunks cut by content: a set stores the chunk around its entry, and the revision
    # names the list. 5,000 attributes of 12 bytes are as many as the space (64 KiB less 256) holds, about.
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    path = a.p("f")
    write_file(path, b"x\n")
    names = [f"user.n{i:04d}" for i in range(5000)]
    for name in names:
        os.setxattr(path, name, b"x")
    os.setxattr(path, names[1234], b"changed")
    os.removexattr(path, names[4321])
    expected = [n for n in names if n != names[4321]]
    document = bytes.fromhex(doc_id(path))
    records = a.query("SELECT length(record) FROM revisions WHERE document = ? ORDER BY seq DESC LIMIT 100", (document,))
    assert max(r[0] for r in records) < 1024, "a revision holds the xattr list, not its root"
    a.stop()
    a.start()
    assert read_file(path) == b"x\n"
    assert [n for n in os.listxattr(path) if not n.startswith(XATTR_PREFIX)] == expected
    assert all(os.getxattr(path, n) == (b"changed" if n == names[1234] else b"x") for n in expected)
    on_b = b.p("f")
    eventually(lambda: os.path.exists(on_b) and current_revision(on_b) == current_revision(path), 60,
               lambda: "b does not show a's last revision of f")
    assert [n for n in os.listxattr(on_b) if not n.startswith(XATTR_PREFIX)] == expected
    assert all(os.getxattr(on_b, n) == os.getxattr(path, n) for n in expected)
    b.stop()
    fsck = b.fsck()
    assert fsck.returncode == 0, f"fsck on b: {fsck.stdout}{fsck.stderr}"
