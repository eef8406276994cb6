"""Special files (issue 16, item 1): FIFOs, UNIX sockets and device nodes are documents of their own kind,
replicated like symlinks: on another node they appear as the same type, mode, owner and device number."""

import os
import stat

import pytest

from cluster import eventually, sharing_pair

REMOTE = 2.0  # contract: remote changes show in a mount within ~2 s; generous multiples below

KINDS = {  # modes the umask (022) leaves as they are
    "fifo": (stat.S_IFIFO | 0o640, 0),
    "sock": (stat.S_IFSOCK | 0o600, 0),
    "chr": (stat.S_IFCHR | 0o600, os.makedev(1, 3)),
    "blk": (stat.S_IFBLK | 0o640, os.makedev(7, 200)),
}


def described(path):
    info = os.lstat(path)
    return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_rdev)


@pytest.mark.timeout(120)
def test_special_files_replicate_with_their_type(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    os.mkdir(a.p("dev"))
    for name, (mode, device) in KINDS.items():
        os.mknod(a.p("dev", name), mode, device)
    os.chown(a.p("dev", "sock"), 1000, 1000)
    expected = {name: described(a.p("dev", name)) for name in KINDS}
    assert {name: e[:2] for name, e in expected.items()} == \
        {name: (stat.S_IFMT(mode), stat.S_IMODE(mode)) for name, (mode, _) in KINDS.items()}
    assert expected["chr"][4] == os.makedev(1, 3) and expected["blk"][4] == os.makedev(7, 200)

    def on_b():
        try:
            return {name: described(b.p("dev", name)) for name in KINDS}
        except FileNotFoundError:
            return None
    eventually(lambda: on_b() == expected, 10 * REMOTE,
               lambda: f"node b shows {on_b()}, node a {expected}")

    # Changes replicate as revisions of the same documents: chmod, rename, unlink.
    os.chmod(a.p("dev", "fifo"), 0o600)
    os.rename(a.p("dev", "chr"), a.p("dev", "null"))
    os.unlink(a.p("dev", "blk"))
    eventually(lambda: sorted(os.listdir(b.p("dev"))) == ["fifo", "null", "sock"] and
               stat.S_IMODE(os.lstat(b.p("dev", "fifo")).st_mode) == 0o600, 10 * REMOTE,
               lambda: f"node b: {sorted(os.listdir(b.p('dev')))}")
    assert described(b.p("dev", "null")) == expected["chr"]
    assert stat.S_ISFIFO(os.lstat(b.p("dev", "fifo")).st_mode)


@pytest.mark.timeout(180)
def test_a_contact_with_write_makes_special_files_in_a_shared_folder(cluster):
    a, b = sharing_pair(cluster, "share", "read", "write")
    shared = b.p("@alice", "share")
    eventually(lambda: os.path.isdir(shared), 10 * REMOTE, "bob does not see alice's shared folder")
    os.mkfifo(os.path.join(shared, "fifo"), 0o640)
    os.mknod(os.path.join(shared, "sock"), stat.S_IFSOCK | 0o600)
    assert stat.S_ISFIFO(os.lstat(os.path.join(shared, "fifo")).st_mode)
    assert stat.S_ISSOCK(os.lstat(os.path.join(shared, "sock")).st_mode)

    def on_a():
        try:
            return {n: stat.S_IFMT(os.lstat(a.p("share", n)).st_mode) for n in ("fifo", "sock")}
        except FileNotFoundError:
            return None
    eventually(lambda: on_a() == {"fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK}, 10 * REMOTE,
               lambda: f"alice's node shows {on_a()}")


def revisions(node, path):
    """`hypernet log`'s revision ids, newest first (user.* xattrs, user.hypernet.* too, exist only on regular
    files and directories: the kernel refuses them on other types)."""
    return [line.split()[0] for line in node.cli("log", path).stdout.splitlines() if line.strip()]


@pytest.mark.timeout(60)
def test_restore_of_a_special_file_makes_an_old_revision_current(node):
    path = node.p("fifo")
    os.mkfifo(path, 0o640)
    first = revisions(node, path)[0]
    os.chmod(path, 0o600)
    eventually(lambda: len(revisions(node, path)) == 2, 5, "chmod made no revision")
    restored = node.cli("restore", path, first).stdout.strip()
    assert revisions(node, path)[0] == restored[:12], "the restore is not the newest revision"
    assert len(revisions(node, path)) == 3
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    # What a restore brings back is the content: a FIFO's is its type; the mode stays the current one.
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
