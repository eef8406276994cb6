"""Special files (issue 16, item 1): FIFOs, UNIX sockets and device nodes are documents of their own kind,
replicated like symlinks: on another node they appear as the same type, mode, owner and device number."""

import os
import stat

import pytest

from cluster import eventually

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
