"""Other local users (issue 14, items 1 and 2). Under `-o allow_other`, `/.hypernet/` shows another user only what
the live tree lets it see: a revision has its document's owner, group and mode, is found only by a user who could
`stat` the document, and opens only for one who could read it; `/.hypernet/events` leaves out the documents its
reader could not read. The home's files are private to their owner whatever the umask, and a store made with wider
modes is tightened at start.
"""

import os
import stat
import subprocess
import threading

import pytest

from helpers import as_user, current_revision, read_file, wait_until, write_file

OTHER, GROUP = 1002, 1003


@pytest.fixture
def shared(make_node):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    return make_node(options=["allow_other"])


def revision_path(node, path):
    return node.p(".hypernet", "revisions", current_revision(path))


def settled_revision(node, path):
    """The document's revision once one shows its current owner and mode (chown, chmod and a directory's new
    entries are versioned by the next once-a-second pass)."""
    live = os.stat(path)

    def settled():
        try:
            st = os.stat(revision_path(node, path))
        except FileNotFoundError:
            return False
        return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (live.st_uid, live.st_gid,
                                                                    stat.S_IMODE(live.st_mode) & 0o555)
    assert wait_until(settled, 10), f"no revision of {path} with its current metadata"
    return revision_path(node, path)


def test_revisions_follow_the_document(shared):
    node = shared
    write_file(node.p("open.txt"), b"public", mode=0o644)
    write_file(node.p("secret.txt"), b"secret", mode=0o600)
    os.mkdir(node.p("private"), 0o700)
    write_file(node.p("private", "inner.txt"), b"inner", mode=0o644)
    write_file(node.p("group.txt"), b"group", mode=0o640)
    os.chown(node.p("group.txt"), 0, GROUP)
    for name, mode in [("open.txt", 0o644), ("secret.txt", 0o600), ("group.txt", 0o640), ("private", 0o700)]:
        os.chmod(node.p(name), mode)  # whatever the test's umask
    revs = {name: settled_revision(node, node.p(*name.split("/")))
            for name in ("open.txt", "secret.txt", "private/inner.txt", "group.txt", "private")}

    # The owner (root) reads them all.
    assert read_file(revs["secret.txt"]) == b"secret"
    assert read_file(revs["private/inner.txt"]) == b"inner"

    # Attributes: the document's owner, group and read bits.
    st = os.stat(revs["group.txt"])
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, GROUP, 0o440)
    assert stat.S_IMODE(os.stat(revs["secret.txt"]).st_mode) == 0o400

    def other(fn, groups=()):
        return as_user(OTHER, fn, groups)

    # A readable document's revision reads as the live file does.
    assert other(lambda: read_file(revs["open.txt"])) == ("ok", b"public")
    # A 0600 file: stat allowed (as for the live file), reading refused.
    assert other(lambda: os.stat(node.p("secret.txt")).st_size)[0] == "ok"
    assert other(lambda: os.stat(revs["secret.txt"]).st_size)[0] == "ok"
    assert other(lambda: read_file(node.p("secret.txt"))) == ("err", "EACCES")
    assert other(lambda: read_file(revs["secret.txt"])) == ("err", "EACCES")
    # Inside a 0700 directory: the live file cannot be reached; its revision is not found, by id or prefix.
    assert other(lambda: os.stat(node.p("private", "inner.txt"))) == ("err", "EACCES")
    assert other(lambda: os.stat(revs["private/inner.txt"])) == ("err", "ENOENT")
    assert other(lambda: read_file(revs["private/inner.txt"])) == ("err", "ENOENT")
    prefix = os.path.join(os.path.dirname(revs["private/inner.txt"]), os.path.basename(revs["private/inner.txt"])[:6])
    assert other(lambda: os.stat(prefix)) == ("err", "ENOENT")
    assert os.stat(prefix).st_size == 5, "the owner finds it by prefix"
    # The 0700 directory's listing (a directory revision): as `ls` of the live directory, refused.
    assert other(lambda: os.listdir(node.p("private"))) == ("err", "EACCES")
    assert other(lambda: read_file(revs["private"])) == ("err", "EACCES")
    # Group permission counts supplementary groups, as for the live file.
    assert other(lambda: read_file(revs["group.txt"])) == ("err", "EACCES")
    assert other(lambda: read_file(revs["group.txt"]), groups=[GROUP]) == ("ok", b"group")
    assert other(lambda: read_file(node.p("group.txt")), groups=[GROUP]) == ("ok", b"group")

    # A change of the live document's mode applies to its old revisions at once.
    old_open = revs["open.txt"]
    os.chmod(node.p("open.txt"), 0o600)
    assert other(lambda: read_file(old_open)) == ("err", "EACCES")


class EventLines:
    """`cat /.hypernet/events` as `uid`, its lines collected in the background; killed by pid at `close`."""

    def __init__(self, node, uid):
        self.proc = subprocess.Popen(["cat", node.p(".hypernet", "events")], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, user=uid, group=uid, extra_groups=[])
        self.lines = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.thread.start()

    def text(self):
        return b"".join(self.lines).decode()

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)


def test_events_leave_out_what_the_reader_cannot_read(shared):
    node = shared
    os.mkdir(node.p("private"), 0o700)
    os.chmod(node.p("private"), 0o700)
    readers = {"root": EventLines(node, 0), "other": EventLines(node, OTHER)}
    try:
        # Both readers are open once each has seen a file written after they started.
        n = 0
        while not all("/ready" in r.text() for r in readers.values()):
            assert n < 100, "the readers never started"
            write_file(node.p(f"ready{n}"), b"r", mode=0o644)
            wait_until(lambda: all("/ready" in r.text() for r in readers.values()), 0.2)
            n += 1
        write_file(node.p("private", "hidden-name.txt"), b"x", mode=0o644)
        write_file(node.p("secret.txt"), b"s", mode=0o600)
        os.chmod(node.p("secret.txt"), 0o600)
        write_file(node.p("last.txt"), b"l", mode=0o644)
        # Log order: once a reader has `last.txt`, it has had its chance at the others.
        assert wait_until(lambda: all("/last.txt" in r.text() for r in readers.values()), 15)
    finally:
        for r in readers.values():
            r.close()
    everything, other = readers["root"].text(), readers["other"].text()
    assert "/private/hidden-name.txt" in everything and "/secret.txt" in everything
    assert "hidden-name" not in other, other
    assert "/secret.txt" not in other, other
    assert "/last.txt" in other


def test_home_is_private_whatever_the_umask(make_node):
    previous = os.umask(0o022)
    try:
        # `init` makes the store in the CLI's own process, under the caller's umask.
        node = make_node(start=False)
        node.cli("init")
        node.start()
        write_file(node.p("f"), b"data" * 1000, fsync=True)
        node.stop()
    finally:
        os.umask(previous)

    def wide(home):
        found = []
        for directory, dirs, files in os.walk(home):
            for name in [directory] + [os.path.join(directory, f) for f in files]:
                st = os.lstat(name)
                if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                    if stat.S_IMODE(st.st_mode) & 0o077:
                        found.append(f"{oct(stat.S_IMODE(st.st_mode))} {os.path.relpath(name, home)}")
        return found

    store = node.home / "store"
    assert (store / "catalog.sqlite").exists() and list((store / "packs").iterdir())
    assert wide(node.home) == []

    # A store made with wider modes (an older version, a copy) is made private at start.
    widened = [store, store / "packs", store / "catalog.sqlite", next((store / "packs").iterdir())]
    for path in widened:
        path.chmod(0o755 if path.is_dir() else 0o644)
    node.start()
    assert wide(node.home) == []
    assert read_file(node.p("f")) == b"data" * 1000
    assert "made private" in node.log_text()
