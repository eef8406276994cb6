"""Bad input from the folder costs what it is (issue 21, item 5).

- Every documented limit of what the folder accepts (docs/errno.md, docs/xattrs.md, docs/store-format.md) is
  probed at the limit, which must work and reach a second device of the identity unchanged (the encoder and the
  decoders agree), and one past it, which must fail with the documented errno and change nothing.
- One client's abusive operation (a huge write, a loop over 10,000 xattrs, a deep mkdir) stalls no other
  client's small write and fsync, nor `hypernet stop`.
- A local user of an `allow_other` mount reaches nothing the file's mode denies, through the live tree,
  `/.hypernet/` or `/@NAME/`, xattrs included.

What each test proves and its pass criterion: docs/testing.md, "Security suite".
"""

import errno
import os
import subprocess
import sys
import time

import pytest

from cluster import eventually
from helpers import as_user, current_revision, errno_of, read_file, read_or_none, wait_until, write_file

pytestmark = pytest.mark.replication

NAME_MAX = 255  # errno.md: ENAMETOOLONG past it
TARGET_MAX = 4095  # errno.md: a symlink target of 4096 bytes or more is ENAMETOOLONG
XATTR_NAME_MAX = 255  # xattrs.md: ERANGE past it
XATTR_VALUE_MAX = 64 << 10  # E2BIG past it
XATTR_TOTAL = 65_280  # names with their NUL and values of one document; ENOSPC past it
SIZE_MAX = 1 << 60  # store-format.md, "Holes and the size limit"; EFBIG past it
DEPTH = int(os.environ.get("HYPERNET_SECURITY_DEPTH", "300"))  # no documented depth limit: probed this deep
OTHER = 1002


def walk_down(root, names):
    """Opens each name below `root` in turn (no path is ever longer than one name) and returns the last one's
    fd, so a tree deeper than PATH_MAX allows can be reached."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def xattr_state(path):
    return {n: os.getxattr(path, n) for n in sorted(os.listxattr(path)) if not n.startswith("user.hypernet.")}


@pytest.mark.timeout(240)
def test_every_limit_works_at_the_limit_on_every_device_and_fails_one_past(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    os.mkdir(a.p("at"))
    names = {
        "ascii": "n" * NAME_MAX,
        "two-byte UTF-8": "é" * (NAME_MAX // 2) + "x",
        "four-byte UTF-8 and ASCII": "\U0001f600" * 63 + "xyz",
        "invalid UTF-8": os.fsdecode(b"\xff\xfe" * 127 + b"\x80"),
        "NFC twin": "caf\u00e9",
        "NFD twin": "cafe\u0301",
    }
    for what, name in names.items():
        assert len(os.fsencode(name)) == NAME_MAX or "twin" in what, what
        write_file(a.p("at", name), what.encode())
    os.mkdir(a.p("at", "d" * NAME_MAX))
    target = "t" * TARGET_MAX
    os.symlink(target, a.p("at", "link"))
    write_file(a.p("at", "xattrs"), b"")
    long_name = "user." + "x" * (XATTR_NAME_MAX - len("user."))
    os.setxattr(a.p("at", "xattrs"), long_name, b"v")
    write_file(a.p("at", "full"), b"")
    fill = XATTR_TOTAL - len("user.big") - 1
    os.setxattr(a.p("at", "full"), "user.big", b"b" * fill)
    write_file(a.p("at", "huge"), b"")
    os.truncate(a.p("at", "huge"), SIZE_MAX)
    fd = os.open(a.p("at"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        write_file(f"/proc/self/fd/{fd}/bottom", b"deep")
    finally:
        os.close(fd)

    # One past: the documented errno, nothing created or changed.
    before = sorted(os.listdir(a.p("at")))
    past = "m" * (NAME_MAX + 1)
    for what, call, expected in [
        ("create a 256-byte name", lambda: write_file(a.p("at", past), b"x"), "ENAMETOOLONG"),
        ("mkdir a 256-byte name", lambda: os.mkdir(a.p("at", past)), "ENAMETOOLONG"),
        ("symlink named 256 bytes", lambda: os.symlink("t", a.p("at", past)), "ENAMETOOLONG"),
        ("symlink to 4096 bytes", lambda: os.symlink("t" * (TARGET_MAX + 1), a.p("at", "link2")), "ENAMETOOLONG"),
        ("rename to 256 bytes", lambda: os.rename(a.p("at", "xattrs"), a.p("at", past)), "ENAMETOOLONG"),
        ("a 256-byte xattr name", lambda: os.setxattr(a.p("at", "xattrs"), long_name + "x", b"v"), "ERANGE"),
        ("a 64 KiB + 1 value", lambda: os.setxattr(a.p("at", "xattrs"), "user.v", b"v" * (XATTR_VALUE_MAX + 1)),
         "E2BIG"),
        ("a byte past 65,280 in all", lambda: os.setxattr(a.p("at", "full"), "user.big", b"b" * (fill + 1)), "ENOSPC"),
        ("a new xattr past 65,280 in all", lambda: os.setxattr(a.p("at", "full"), "user.c", b""), "ENOSPC"),
        ("truncate to 2^60 + 1", lambda: os.truncate(a.p("at", "huge"), SIZE_MAX + 1), "EFBIG"),
    ]:
        assert errno_of(call) == expected, f"{what}: {errno_of(call)}, not {expected}"
    assert sorted(os.listdir(a.p("at"))) == before
    assert xattr_state(a.p("at", "xattrs")) == {long_name: b"v"}
    assert xattr_state(a.p("at", "full")) == {"user.big": b"b" * fill}
    assert os.stat(a.p("at", "huge")).st_size == SIZE_MAX

    # The other device decodes all of it into the same tree.
    def same():
        try:
            if sorted(os.listdir(b.p("at"))) != before:
                return False
            fd = walk_down(b.p("at"), ["d"] * DEPTH)
            try:
                return os.open("bottom", os.O_RDONLY, dir_fd=fd) and True
            finally:
                os.close(fd)
        except OSError:
            return False

    eventually(same, 60, lambda: f"b does not show a's tree at the limits: {sorted(os.listdir(b.p('at')))}")
    for what, name in names.items():
        assert read_file(b.p("at", name)) == what.encode(), f"the {what} name reads differently on b"
    assert os.path.isdir(b.p("at", "d" * NAME_MAX))
    assert os.readlink(b.p("at", "link")) == target
    eventually(lambda: xattr_state(b.p("at", "xattrs")) == {long_name: b"v"}
               and xattr_state(b.p("at", "full")) == {"user.big": b"b" * fill}, 10, "b's xattrs differ from a's")
    assert os.stat(b.p("at", "huge")).st_size == SIZE_MAX
    fd = walk_down(b.p("at"), ["d"] * DEPTH)
    try:
        rd = os.open("bottom", os.O_RDONLY, dir_fd=fd)
        assert os.read(rd, 10) == b"deep"
        os.close(rd)
    finally:
        os.close(fd)


# --- one client's abuse stalls no other -----------------------------------------------------------------------

def abuse_main(kind, root):
    """Abuses the mount at `root` until killed (or out of room): its own process, as another application."""
    if kind == "huge-write":
        # One open file written without a close: 64 MiB staged at a time are sealed into the packs.
        fd = os.open(os.path.join(root, "huge"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        block = os.urandom(1 << 20)
        for i in range(1 << 30):
            os.pwrite(fd, block, (i % 512) << 20)
    elif kind == "xattr-loop":
        # 10,000 attributes of one file, set again and again (each set that fits is a revision).
        path = os.path.join(root, "xattrs")
        write_file(path, b"")
        for i in range(1 << 30):
            try:
                os.setxattr(path, f"user.a{i % 10_000}", b"%d" % i)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    elif kind == "deep-mkdir":
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(1 << 30):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["huge-write", "xattr-loop", "deep-mkdir"])
def test_an_abusive_client_stalls_no_other_client_nor_stop(node, kind):
    os.mkdir(node.p("abuse"))
    abuser = subprocess.Popen([sys.executable, __file__, kind, node.p("abuse")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    written = {}
    try:
        time.sleep(1)  # the abuse is under way
        assert abuser.poll() is None, f"the {kind} abuser ended early: {abuser.communicate()[0]}"
        for i in range(5):
            data = os.urandom(100) + b"%d" % i
            write_file(node.p(f"small-{i}"), data, fsync=True)
            written[f"small-{i}"] = data
        # The small writes completed while the abuse went on: they did not wait for it.
        assert abuser.poll() is None, f"the {kind} abuser ended before the small writes did: {abuser.communicate()[0]}"
        node.stop()  # raises unless the daemon exits and the mount goes while the abuser still calls into it
    finally:
        abuser.kill()
        abuser.wait()
    node.start()
    for name, data in written.items():
        assert read_file(node.p(name)) == data, f"{name}, fsynced during the {kind} abuse, is lost"


# --- local users of an allow_other mount ------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_a_local_user_reaches_nothing_the_mode_denies_through_any_path(cluster):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    a = cluster.add("a", options=["allow_other"])
    b = cluster.add("b", pins=[a], options=["allow_other"])
    cluster.start()
    os.makedirs(a.p("share", "private"))
    os.chmod(a.p("share", "private"), 0o700)
    write_file(a.p("share", "secret.txt"), b"secret", mode=0o600)
    write_file(a.p("share", "open.txt"), b"open", mode=0o644)
    write_file(a.p("share", "private", "inner.txt"), b"inner", mode=0o644)
    for path, mode in [(a.p("share", "secret.txt"), 0o600), (a.p("share", "open.txt"), 0o644)]:
        os.chmod(path, mode)  # whatever the umask
        os.setxattr(path, "user.note", b"note")
    a.run("contact", "add", "bob", b.token)
    b.run("contact", "add", "alice", a.token)
    a.run("grant", a.p("share"), "bob", "read")
    foreign = b.p("@alice", "share")
    eventually(lambda: read_or_none(os.path.join(foreign, "secret.txt")) == b"secret"
               and os.path.isdir(os.path.join(foreign, "private"))
               and os.stat(os.path.join(foreign, "private")).st_mode & 0o077 == 0, 20,
               lambda: f"bob's node does not show the shared folder with its modes: "
                       f"{[(n, oct(os.stat(os.path.join(foreign, n)).st_mode)) for n in os.listdir(foreign)]}")

    def other(fn):
        return as_user(OTHER, fn)

    for label, root in [("a's live tree", a.p("share")), ("b's /@alice/", foreign)]:
        secret, opened = os.path.join(root, "secret.txt"), os.path.join(root, "open.txt")
        inner = os.path.join(root, "private", "inner.txt")
        assert other(lambda: read_file(opened)) == ("ok", b"open"), label
        for what, call, expected in [
            ("read a 0600 file", lambda: read_file(secret), "EACCES"),
            ("read its user xattr", lambda: os.getxattr(secret, "user.note"), "EACCES"),
            ("read its history", lambda: os.getxattr(secret, "user.hypernet.history"), "EACCES"),
            ("reach into a 0700 directory", lambda: read_file(inner), "EACCES"),
            ("list a 0700 directory", lambda: os.listdir(os.path.join(root, "private")), "EACCES"),
            ("write someone else's 0644 file", lambda: os.open(opened, os.O_WRONLY), "EACCES"),
            ("set an xattr on it", lambda: os.setxattr(opened, "user.x", b"x"), "EACCES"),
            ("create in someone else's directory", lambda: write_file(os.path.join(root, "new"), b"x"), "EACCES"),
            ("unlink in it", lambda: os.unlink(opened), "EACCES"),
        ]:
            assert other(call) == ("err", expected), f"{label}: a local user may {what}: {other(call)}"

    # /.hypernet/revisions/ on both nodes: the secret's and the inner file's revisions stay out of reach.
    revisions = {what: current_revision(a.p("share", *parts)) for what, parts in
                 [("secret", ["secret.txt"]), ("inner", ["private", "inner.txt"])]}
    for n in (a, b):
        for what, rev in revisions.items():
            path = n.p(".hypernet", "revisions", rev)
            outcome = other(lambda: read_file(path))
            assert outcome[0] == "err" and outcome[1] in ("EACCES", "ENOENT"), \
                f"a local user reads the {what} revision through {n.name}'s /.hypernet/: {outcome}"
    assert wait_until(lambda: read_file(a.p(".hypernet", "revisions", revisions["secret"])) == b"secret", 5)

    # xattrs outside `user.` are stored nowhere, not even for root, whichever path names the file.
    # (b's /.hypernet/revisions/ does not show other identities' revisions: xattrs.md.)
    for path in [a.p("share", "open.txt"), os.path.join(foreign, "open.txt"),
                 a.p(".hypernet", "revisions", revisions["secret"])]:
        for name in ("trusted.t", "security.t"):
            got = errno_of(os.setxattr, path, name, b"v" * 100)
            assert got in ("ENOTSUP", "EACCES", "EROFS"), f"setxattr {name} on {path}: {got}"
            assert name not in os.listxattr(path) and errno_of(os.getxattr, path, name) in ("ENOTSUP", "ENODATA")


if __name__ == "__main__":
    abuse_main(sys.argv[1], sys.argv[2])
