"""The mount against a native directory (ext4 under /tmp here): the same operations on both, same results
and errno. A hypothesis state machine drives random sequences; plain tests cover the edge cases."""

import collections
import fcntl
import os
import random
import socket
import stat
import subprocess
import time

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, precondition,
                                 rule, run_state_machine_as_test)

import helpers
from cluster import eventually
from helpers import (RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_PREFIX, as_user, errno_of, link_fd, outcome,
                     read_file, renameat2)

MAX_EXAMPLES = int(os.environ.get("HYPERNET_HYPOTHESIS_EXAMPLES", "40"))
STEPS = int(os.environ.get("HYPERNET_HYPOTHESIS_STEPS", "30"))
# Shrinking a failure on a real mount (restarts included) can take many minutes: off unless asked for.
# The failing sequence is printed either way.
SHRINK = os.environ.get("HYPERNET_HYPOTHESIS_SHRINK") == "1"
# Crashes and the two-node machine (remote arrivals) cost seconds per step: fewer sequences by default.
CRASH_EXAMPLES = int(os.environ.get("HYPERNET_HYPOTHESIS_CRASH_EXAMPLES", "30"))
REMOTE_EXAMPLES = int(os.environ.get("HYPERNET_HYPOTHESIS_REMOTE_EXAMPLES", "20"))
CRASH_SPACING = 4
# How long a change may take to show on the other node before the machine calls it lost.
REMOTE_TIMEOUT = 15
# What the machines checked, printed at the end of each test (pytest -s shows it).
STATS = collections.Counter()

# A small namespace so that operations collide: rename over existing files, into non-empty dirs, ...
TOP = ["a", "b", "c"]
SUB = ["a", "b"]
PATHS = TOP + [f"{t}/{s}" for t in TOP for s in SUB]


def big_blob(size, seed):
    return random.Random(seed).randbytes(size)


DATA = st.one_of(
    st.binary(max_size=300),
    st.builds(big_blob, st.sampled_from([20_000, 70_000, 300_000]), st.integers(0, 255)),
)
OFFSETS = st.sampled_from([0, 1, 100, 4095, 65536, 131077, 400_000])
LENGTHS = st.sampled_from([0, 1, 50, 4096, 70_000, 300_001])
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o777])
OPEN_FLAGS = st.sampled_from([
    os.O_WRONLY | os.O_CREAT,
    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    os.O_RDWR | os.O_CREAT,
    os.O_RDWR | os.O_TRUNC,
    os.O_RDWR | os.O_APPEND,
    os.O_RDONLY,
    os.O_WRONLY | os.O_DIRECTORY,
    os.O_RDONLY | os.O_DIRECTORY,
])
XATTR_NAMES = st.sampled_from(["user.a", "user.b", "user.long." + "x" * 100])
XATTR_FLAGS = st.sampled_from([0, os.XATTR_CREATE, os.XATTR_REPLACE])
TIMES = st.sampled_from([(0, 0), (1_000_000_000, 2_000_000_123), (1_700_000_000_123_456_789, 1_600_000_000_987_654_321)])
OWNERS = st.sampled_from([(0, 0), (1000, 1000), (65534, 65534), (1000, 0)])


def symlink_target(link, target):
    """A relative target for `link` that resolves inside the sandbox, whatever symlinked dirs are on the way
    (PATHS are at most two deep, so a link's directory is at most one deep and one `..` stays inside)."""
    return os.path.relpath(target, os.path.dirname(link) or ".")


def snapshot(root, times=()):
    """Everything observable under `root` that must match between native and mount; `times` adds stat
    fields such as "st_mtime_ns", for comparing one tree with itself across a restart."""
    tree = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        names = sorted(os.listdir(dirpath))
        tree[(rel_dir, "listdir")] = names
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st_ = os.lstat(path)
            entry = {"type": stat.S_IFMT(st_.st_mode), "mode": stat.S_IMODE(st_.st_mode),
                     "uid": st_.st_uid, "gid": st_.st_gid, "nlink": st_.st_nlink}
            inodes.setdefault(st_.st_ino, []).append(rel)
            for field in times:
                entry[field] = getattr(st_, field)
            if stat.S_ISCHR(st_.st_mode) or stat.S_ISBLK(st_.st_mode):
                entry["rdev"] = st_.st_rdev
            if stat.S_ISLNK(st_.st_mode):
                entry["target"] = os.readlink(path)
                entry["size"] = st_.st_size
            elif stat.S_ISREG(st_.st_mode):
                entry["size"] = st_.st_size
                entry["content"] = read_file(path)
            if not stat.S_ISLNK(st_.st_mode):
                names_x = sorted(n for n in os.listxattr(path, follow_symlinks=False)
                                 if n.startswith("user.") and not n.startswith(XATTR_PREFIX))
                entry["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False) for n in names_x}
            tree[rel] = entry
    # Hard links: which names share an inode.
    tree["same inode"] = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return tree


def native_paths(root, inode):
    """Every name of regular file `inode` under `root`."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            if st_.st_ino == inode and stat.S_ISREG(st_.st_mode):
                found.append(os.path.relpath(path, root))
    return sorted(found)


def describe_difference(native, mounted, names=("native", "mount")):
    lines = []
    for key in sorted(set(native) | set(mounted), key=str):
        a, b = native.get(key), mounted.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for field in sorted(set(a) | set(b)):
                fa, fb = a.get(field), b.get(field)
                if fa != fb:
                    if field == "content":
                        fa, fb = f"{len(fa or b'')} bytes", f"{len(fb or b'')} bytes (differs)"
                    lines.append(f"{key}.{field}: {names[0]}={fa!r} {names[1]}={fb!r}")
        else:
            lines.append(f"{key}: {names[0]}={a!r} {names[1]}={b!r}")
    return "\n".join(lines)


def do_mkdir(r, p, m):
    os.mkdir(os.path.join(r, p), m)


def do_rmdir(r, p):
    os.rmdir(os.path.join(r, p))


def do_unlink(r, p):
    os.unlink(os.path.join(r, p))


def do_rename(r, s, d):
    os.rename(os.path.join(r, s), os.path.join(r, d))


def do_open_write_close(r, p, f, d):
    fd = os.open(os.path.join(r, p), f, 0o644)
    try:
        return os.write(fd, d) if f & (os.O_WRONLY | os.O_RDWR) else len(os.read(fd, 1 << 20))
    finally:
        os.close(fd)


def do_chmod(r, p, m):
    os.chmod(os.path.join(r, p), m)


def do_setxattr(r, p, n, v, f):
    os.setxattr(os.path.join(r, p), n, v, f)


def do_removexattr(r, p, n):
    os.removexattr(os.path.join(r, p), n)


def writes(flags):
    """Whether a descriptor opened with `flags` may write (or truncated): only its close accepts what the file holds.
    A read-only one commits nothing (docs/design.md, "When revisions are made")."""
    return flags & (os.O_WRONLY | os.O_RDWR) != 0 or flags & os.O_TRUNC != 0


def fd_content(fd):
    return os.pread(fd, os.fstat(fd).st_size, 0)


class PosixMachine(RuleBasedStateMachine):
    """Runs every rule on a native directory and on a directory of the mount; results must be equal.
    Paths are drawn mostly from what exists (or, for creating rules, from what does not), so that most
    steps do something rather than fail with ENOENT."""

    node = None  # set by the test
    native_base = None
    mount_base = None
    counter = 0

    fds = Bundle("fds")

    def __init__(self):
        super().__init__()
        PosixMachine.counter += 1
        name = f"ex{PosixMachine.counter}"
        self.roots = (os.path.join(self.native_base, name), os.path.join(self.mount_base, name))
        for root in self.roots:
            os.mkdir(root)
        self.open_fds = []
        # Files written through a held descriptor since their last close or fsync (native inode -> every
        # content it had since then, the accepted one first; None: created by that open, never closed).
        self.pending = {}
        self.steps_done = self.last_crash = 0
        self.trace = []

    def both(self, label, fn, *args):
        STATS["operations"] += 1
        results = [outcome(fn, root, *args) for root in self.roots]
        self.trace.append(f"{label}{args!r} -> {results[0]!r}" if results[0] == results[1] else
                          f"{label}{args!r} -> native {results[0]!r}, mount {results[1]!r}")
        assert results[0] == results[1], f"{label}{args!r}: native={results[0]!r} mount={results[1]!r}\n" + \
            self.steps()
        return results[0]

    def steps(self):
        return "operations so far (native root {}):\n  ".format(self.roots[0]) + "\n  ".join(self.trace[-40:])

    def pick(self, draw, creating=False):
        """A path from PATHS: usually one that exists (or is missing, when `creating`), sometimes any."""
        exists = [p for p in PATHS if os.path.lexists(os.path.join(self.roots[0], p))]
        preferred = [p for p in PATHS if p not in exists] if creating else exists
        if preferred and draw.draw(st.integers(0, 3)) > 0:
            return draw.draw(st.sampled_from(preferred))
        return draw.draw(st.sampled_from(PATHS))

    @initialize(payload=DATA)
    def populate(self, payload):
        for root in self.roots:
            os.mkdir(os.path.join(root, "a"))
            with open(os.path.join(root, "b"), "wb") as f:
                f.write(payload)
            with open(os.path.join(root, "a", "a"), "wb") as f:
                f.write(b"small")

    # Namespace ---------------------------------------------------------------------------------------------
    @rule(draw=st.data(), mode=MODES)
    def mkdir(self, draw, mode):
        self.both("mkdir", do_mkdir, self.pick(draw, creating=True), mode)

    @rule(draw=st.data())
    def rmdir(self, draw):
        self.both("rmdir", do_rmdir, self.pick(draw))

    @rule(draw=st.data())
    def unlink(self, draw):
        self.both("unlink", do_unlink, self.pick(draw))

    @rule(draw=st.data())
    def rename(self, draw):
        self.both("rename", do_rename, self.pick(draw), self.pick(draw, creating=draw.draw(st.booleans())))

    @rule(draw=st.data(), points_to=st.sampled_from(PATHS + ["missing"]))
    def symlink(self, draw, points_to):
        link = self.pick(draw, creating=True)
        self.both("symlink", lambda r, l, t: os.symlink(t, os.path.join(r, l)), link, symlink_target(link, points_to))

    # A socket node, not a FIFO or a device: opening those blocks (FIFO) or differs by design (`nodev`).
    @rule(draw=st.data(), mode=MODES)
    def mknod_socket(self, draw, mode):
        self.both("mknod", lambda r, p, m: os.mknod(os.path.join(r, p), stat.S_IFSOCK | m),
                  self.pick(draw, creating=True), mode)

    @rule(draw=st.data(), follow=st.booleans())
    def link(self, draw, follow):
        self.both("link", lambda r, s, d, f: os.link(os.path.join(r, s), os.path.join(r, d), follow_symlinks=f),
                  self.pick(draw), self.pick(draw, creating=True), follow)

    @rule(draw=st.data())
    def readlink(self, draw):
        self.both("readlink", lambda r, p: os.readlink(os.path.join(r, p)), self.pick(draw))

    @rule(draw=st.data())
    def listdir(self, draw):
        path = draw.draw(st.sampled_from([".", self.pick(draw)]))
        self.both("listdir", lambda r, p: sorted(os.listdir(os.path.join(r, p))), path)

    @rule(draw=st.data(), follow=st.booleans())
    def stat(self, draw, follow):
        def fn(r, p, f):
            s = os.stat(os.path.join(r, p), follow_symlinks=f)
            size = None if stat.S_ISDIR(s.st_mode) else s.st_size
            return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), size, s.st_uid, s.st_gid, s.st_nlink)
        self.both("stat", fn, self.pick(draw), follow)

    # Content -----------------------------------------------------------------------------------------------
    @rule(draw=st.data(), flags=OPEN_FLAGS, payload=DATA)
    def open_write_close(self, draw, flags, payload):
        path = self.pick(draw, creating=draw.draw(st.booleans()))
        result = self.both("open+write", do_open_write_close, path, flags, payload)
        if writes(flags):
            self.accept_path(path, result)

    @rule(draw=st.data(), offset=OFFSETS, payload=DATA)
    def pwrite(self, draw, offset, payload):
        def fn(r, p, o, d):
            fd = os.open(os.path.join(r, p), os.O_WRONLY)
            try:
                return os.pwrite(fd, d, o)
            finally:
                os.close(fd)
        path = self.pick(draw)
        self.accept_path(path, self.both("pwrite", fn, path, offset, payload))

    @rule(draw=st.data(), payload=DATA)
    def append(self, draw, payload):
        def fn(r, p, d):
            fd = os.open(os.path.join(r, p), os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, d)
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        path = self.pick(draw)
        self.accept_path(path, self.both("append", fn, path, payload))

    @rule(draw=st.data(), length=LENGTHS)
    def truncate(self, draw, length):
        path = self.pick(draw)
        self.accept_path(path, self.both("truncate", lambda r, p, n: os.truncate(os.path.join(r, p), n), path, length))

    @rule(draw=st.data(), offset=OFFSETS)
    def read(self, draw, offset):
        def fn(r, p, o):
            fd = os.open(os.path.join(r, p), os.O_RDONLY)
            try:
                return os.pread(fd, 1 << 20, o)
            finally:
                os.close(fd)
        self.both("pread", fn, self.pick(draw), offset)

    # Metadata ----------------------------------------------------------------------------------------------
    @rule(draw=st.data(), mode=MODES)
    def chmod(self, draw, mode):
        self.both("chmod", do_chmod, self.pick(draw), mode)

    @rule(draw=st.data(), owner=OWNERS)
    def chown(self, draw, owner):
        self.both("chown", lambda r, p, o: os.chown(os.path.join(r, p), *o), self.pick(draw), owner)

    @rule(draw=st.data(), times=TIMES)
    def utime(self, draw, times):
        def fn(r, p, t):
            full = os.path.join(r, p)
            os.utime(full, ns=t)
            s = os.stat(full)
            return (s.st_atime_ns, s.st_mtime_ns)
        self.both("utime", fn, self.pick(draw), times)

    @rule(draw=st.data(), name=XATTR_NAMES, value=st.binary(max_size=64), flags=XATTR_FLAGS)
    def setxattr(self, draw, name, value, flags):
        self.both("setxattr", do_setxattr, self.pick(draw), name, value, flags)

    @rule(draw=st.data(), name=XATTR_NAMES)
    def getxattr(self, draw, name):
        self.both("getxattr", lambda r, p, n: os.getxattr(os.path.join(r, p), n), self.pick(draw), name)

    @rule(draw=st.data(), name=XATTR_NAMES)
    def removexattr(self, draw, name):
        self.both("removexattr", do_removexattr, self.pick(draw), name)

    @rule(draw=st.data())
    def listxattr(self, draw):
        self.both("listxattr", lambda r, p: sorted(n for n in os.listxattr(os.path.join(r, p))
                                                  if not n.startswith(XATTR_PREFIX)), self.pick(draw))

    # Descriptors held across steps (open, then unlink/rename while open, then use) ------------------------
    @precondition(lambda self: len(self.open_fds) < 4)
    @rule(target=fds, draw=st.data(),
          flags=st.sampled_from([os.O_RDWR, os.O_RDWR | os.O_APPEND, os.O_RDWR | os.O_CREAT, os.O_RDONLY]))
    def hold_open(self, draw, flags):
        pair = self.open_pair(self.pick(draw), flags)
        return multiple() if pair is None else pair

    # A file without a name until fd_link names it (or never).
    @precondition(lambda self: len(self.open_fds) < 4)
    @rule(target=fds, draw=st.data())
    def hold_tmpfile(self, draw):
        pair = self.open_pair(draw.draw(st.sampled_from([".", self.pick(draw)])), os.O_TMPFILE | os.O_RDWR)
        return multiple() if pair is None else pair

    def open_pair(self, path, flags):
        """Opens `path` in both worlds and holds both descriptors; None when the open failed (alike)."""
        existed = os.path.lexists(os.path.join(self.roots[0], path))
        results = [outcome(os.open, os.path.join(root, path), flags, 0o644) for root in self.roots]
        kinds = [k for k, _ in results]
        self.trace.append(f"open{(path, flags)!r} held -> {kinds}")
        if kinds == ["ok", "ok"]:
            pair = (results[0][1], results[1][1])
            self.open_fds.append(pair)
            STATS["descriptors held"] += 1
            if not existed:
                self.pending[os.fstat(pair[0]).st_ino] = [None, b""]
            return pair
        for kind, value in results:
            if kind == "ok":
                os.close(value)
        assert results[0] == results[1], f"open{(path, flags)}: native={results[0]!r} mount={results[1]!r}\n" + \
            self.steps()
        return None

    @rule(pair=fds, payload=DATA, offset=st.one_of(st.none(), OFFSETS))
    def fd_write(self, pair, payload, offset):
        self.both_fd("write" if offset is None else f"pwrite@{offset}", pair,
                     lambda fd: os.write(fd, payload) if offset is None else os.pwrite(fd, payload, offset),
                     changes=True)

    @rule(pair=fds, offset=OFFSETS)
    def fd_read(self, pair, offset):
        self.both_fd(f"pread@{offset}", pair, lambda fd: os.pread(fd, 1 << 20, offset))

    @rule(pair=fds)
    def fd_stat(self, pair):
        def fn(fd):
            s = os.fstat(fd)
            return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), None if stat.S_ISDIR(s.st_mode) else s.st_size)
        self.both_fd("fstat", pair, fn)

    @rule(pair=fds, length=LENGTHS)
    def fd_truncate(self, pair, length):
        self.both_fd(f"ftruncate({length})", pair, lambda fd: os.ftruncate(fd, length), changes=True)

    @rule(pair=fds, draw=st.data())
    def fd_link(self, pair, draw):
        path = self.pick(draw, creating=True)
        roots = dict(zip(pair, self.roots))
        self.both_fd(f"link to {path}", pair, lambda fd: link_fd(fd, os.path.join(roots[fd], path)))

    @rule(pair=fds)
    def fd_fsync(self, pair):
        if self.both_fd("fsync", pair, os.fsync) == ("ok", None):
            self.pending.pop(os.fstat(pair[0]).st_ino, None)

    @rule(pair=consumes(fds))
    def fd_close(self, pair):
        if pair in self.open_fds:
            if writes(fcntl.fcntl(pair[0], fcntl.F_GETFL)):
                self.pending.pop(os.fstat(pair[0]).st_ino, None)  # close accepts what the file holds (flush)
            self.open_fds.remove(pair)
        self.both_fd("close", pair, os.close)

    def both_fd(self, label, pair, fn, changes=False):
        """Runs fn on both descriptors of a held pair; `changes`: fn may change the content (not accepted yet)."""
        if pair not in self.open_fds:
            self.trace.append(f"held fd {pair[0]}: {label} skipped (closed by a crash)")
            return None
        STATS["operations"] += 1
        native = pair[0]
        changes = changes and stat.S_ISREG(os.fstat(native).st_mode)
        if changes:
            inode = os.fstat(native).st_ino
            self.pending.setdefault(inode, [fd_content(native)])
        results = [outcome(fn, fd) for fd in pair]
        if changes and fd_content(native) != self.pending[inode][-1]:
            self.pending[inode].append(fd_content(native))
        self.trace.append(f"held fd {pair[0]}: {label} -> {results[0]!r}" if results[0] == results[1] else
                          f"held fd {pair[0]}: {label} -> native {results[0]!r}, mount {results[1]!r}")
        assert results[0] == results[1], f"{label} on held fd: native={results[0]!r} mount={results[1]!r}\n" + \
            self.steps()
        return results[0]

    def accept_path(self, path, result):
        """A rule that opened and closed `path` (or truncated it by path) made its content accepted."""
        if result[0] == "ok" and self.pending:
            try:
                self.pending.pop(os.stat(os.path.join(self.roots[0], path)).st_ino, None)
            except OSError:
                pass

    # Persistence: everything survives a restart of the daemon (ctime: test_times_survive_restart) ---------
    @precondition(lambda self: not self.open_fds)
    @rule()
    def restart(self):
        before = snapshot(self.roots[1], times=("st_mtime_ns",))
        self.node.restart()
        after = snapshot(self.roots[1], times=("st_mtime_ns",))
        self.trace.append("restart the daemon")
        assert before == after, "the tree changed across a restart:\n" + describe_difference(before, after, ("before", "after")) + \
            "\n" + self.steps()

    # The whole tree after every step ------------------------------------------------------------------------
    @invariant()
    def trees_match(self):
        self.steps_done += 1
        native, mounted = snapshot(self.roots[0]), snapshot(self.roots[1])
        assert native == mounted, "trees differ:\n" + describe_difference(native, mounted) + "\n" + self.steps()

    def teardown(self):
        for pair in self.open_fds:
            for fd in pair:
                try:
                    os.close(fd)
                except OSError:
                    pass


class CrashMachine(PosixMachine):
    """PosixMachine with crashes: the daemon killed with SIGKILL at random points, restarted and remounted."""

    # A crash checks what a restart checks and more; a restart, having no argument, would be drawn most often
    # and take the time the other rules need (test_state_machine[plain] keeps it).
    restart = None
    # What a crash keeps of a file made by O_TMPFILE and named by linkat is not modelled yet (testing.md).
    hold_tmpfile = None
    fd_link = None

    # Crashes: SIGKILL of the daemon, restart, remount. At most one in CRASH_SPACING steps: a crash costs
    # seconds, and hypothesis draws rules without arguments far more often than the others.
    @precondition(lambda self: self.steps_done - self.last_crash >= CRASH_SPACING)
    @rule(draw=st.data(), payload=st.one_of(st.none(), DATA))
    def crash(self, draw, payload):
        """With a payload: first writes it through a descriptor of a file that the crash then finds open."""
        if payload is not None:
            pair = self.open_pair(self.pick(draw), os.O_RDWR)
            if pair is not None:
                self.both_fd("write", pair, lambda fd: os.write(fd, payload), changes=True)
        self.crash_now("crash")

    # Right after a close or an fsync returned: what they accepted must be there.
    @precondition(lambda self: self.steps_done - self.last_crash >= CRASH_SPACING)
    @rule(draw=st.data(), payload=DATA, sync=st.booleans())
    def crash_after_write(self, draw, payload, sync):
        def fn(r, p, d, s):
            fd = os.open(os.path.join(r, p), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, d)
                if s:
                    os.fsync(fd)
            finally:
                os.close(fd)
        path = self.pick(draw, creating=draw.draw(st.booleans()))
        self.accept_path(path, self.both("write+fsync+close" if sync else "write+close", fn, path, payload, sync))
        self.crash_now("crash right after close returned")

    def crash_now(self, label):
        """Kills the daemon with SIGKILL, remounts, and checks what a crash may do (docs/testing.md): with no
        descriptor open the tree is as it was, mtimes included; a file written through a descriptor open at the
        crash shows one of the contents it had since its last close or fsync. The held descriptors die in both
        worlds; the native files take the content the mount kept, so that later steps compare again."""
        STATS["crashes"] += 1
        self.last_crash = self.steps_done
        held = bool(self.open_fds)
        STATS["crashes with descriptors open"] += held
        before = None if held else snapshot(self.roots[1], times=("st_mtime_ns",))
        self.node.kill9()
        for pair in self.open_fds:
            for fd in pair:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the mount's descriptor died with its daemon
        self.open_fds = []
        self.node.start()
        self.trace.append(f"{label}: kill -9 the daemon ({len(self.pending)} files written through open descriptors)")
        if before is not None:
            after = snapshot(self.roots[1], times=("st_mtime_ns",))
            assert before == after, "the tree changed across a crash with nothing open:\n" + \
                describe_difference(before, after, ("before", "after")) + "\n" + self.steps()
        for inode, contents in self.pending.items():
            for rel in native_paths(self.roots[0], inode):
                native, mounted = (os.path.join(root, rel) for root in self.roots)
                kept = read_file(mounted) if os.path.lexists(mounted) else None
                assert kept in contents, f"{rel} after the crash: {len(kept or b'')} bytes, none of the " + \
                    f"{len(contents)} contents it had since its last close or fsync\n" + self.steps()
                self.trace.append(f"  {rel} kept content {contents.index(kept)} of {len(contents)} since its close")
                if kept is None:
                    os.unlink(native)
                else:
                    with open(native, "r+b") as f:
                        f.write(kept)
                        f.truncate()
        self.pending = {}


class RemoteMachine(CrashMachine):
    """PosixMachine on node a of two nodes of one identity, where node b also changes the same directory
    through its own mount. Each remote operation starts once b shows everything a did (so it is causally after
    a's last change, never concurrent: conflicts are test_conflicts.py's), and the next step waits until a
    shows it. A crash kills a; b stays up."""

    remote = None  # node b, set by the test

    def __init__(self):
        super().__init__()
        self.remote_root = os.path.join(str(self.remote.mount), os.path.basename(self.roots[1]))
        self.recent = []  # paths the last steps drew, so that b often changes what a just changed

    def pick(self, draw, creating=False):
        path = super().pick(draw, creating)
        self.recent = (self.recent + [path])[-3:]
        return path

    def remote_both(self, label, fn, *args):
        """fn on the native directory and on b's mount, after b caught up with a; a must then show it."""
        STATS["remote operations"] += 1
        # mtimes too: a chmod or utimens still only in a's catalog row would otherwise meet b's change as a fork.
        caught_up = lambda: snapshot_or_error(self.roots[1], ("st_mtime_ns",)) == \
            snapshot_or_error(self.remote_root, ("st_mtime_ns",))
        eventually(caught_up, REMOTE_TIMEOUT, lambda: "node b did not catch up with node a:\n" + describe_difference(
            snapshot(self.roots[1], ("st_mtime_ns",)), snapshot_or_error(self.remote_root, ("st_mtime_ns",)),
            ("a", "b")) + "\n" + self.steps())
        results = [outcome(fn, root, *args) for root in (self.roots[0], self.remote_root)]
        self.trace.append(f"on node b: {label}{args!r} -> {results[0]!r}" if results[0] == results[1] else
                          f"on node b: {label}{args!r} -> native {results[0]!r}, node b {results[1]!r}")
        assert results[0] == results[1], f"on node b: {label}{args!r}: native={results[0]!r} b={results[1]!r}\n" + \
            self.steps()
        eventually(lambda: snapshot(self.roots[0]) == snapshot_or_error(self.roots[1]), REMOTE_TIMEOUT,
                   lambda: "node a does not show node b's change:\n" + describe_difference(
                       snapshot(self.roots[0]), snapshot_or_error(self.roots[1])) + "\n" + self.steps())

    def remote_path(self, draw, creating=False):
        if self.recent and draw.draw(st.booleans()):
            return draw.draw(st.sampled_from(self.recent))
        return self.pick(draw, creating)

    # Three rules of one argument: hypothesis draws rules with fewer arguments more often, and remote changes
    # should be frequent. A remote change is not drawn while a holds descriptors open: their writes are staged,
    # not yet a revision b could build on.
    @precondition(lambda self: not self.open_fds)
    @rule(draw=st.data())
    def remote_write(self, draw):
        flags = draw.draw(st.sampled_from([os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_WRONLY | os.O_APPEND,
                                           os.O_RDWR | os.O_CREAT]))
        self.remote_both("write", do_open_write_close, self.remote_path(draw, creating=True), flags, draw.draw(DATA))

    @precondition(lambda self: not self.open_fds)
    @rule(draw=st.data())
    def remote_namespace(self, draw):
        kind = draw.draw(st.sampled_from(["mkdir", "rmdir", "unlink", "rename"]))
        path = self.remote_path(draw, creating=kind == "mkdir")
        if kind == "mkdir":
            self.remote_both(kind, do_mkdir, path, draw.draw(MODES))
        elif kind == "rename":
            self.remote_both(kind, do_rename, path, self.remote_path(draw, creating=draw.draw(st.booleans())))
        else:
            self.remote_both(kind, do_rmdir if kind == "rmdir" else do_unlink, path)

    @precondition(lambda self: not self.open_fds)
    @rule(draw=st.data())
    def remote_metadata(self, draw):
        kind = draw.draw(st.sampled_from(["chmod", "setxattr", "removexattr"]))
        path = self.remote_path(draw)
        if kind == "chmod":
            self.remote_both(kind, do_chmod, path, draw.draw(MODES))
        elif kind == "setxattr":
            self.remote_both(kind, do_setxattr, path, draw.draw(XATTR_NAMES), draw.draw(st.binary(max_size=64)), 0)
        else:
            self.remote_both(kind, do_removexattr, path, draw.draw(XATTR_NAMES))


def snapshot_or_error(root, times=()):
    """snapshot(), or the error while the tree is missing or changing under the walk (replication)."""
    try:
        return snapshot(root, times)
    except OSError as e:
        return {"error": repr(e)}


def run_machine(machine, max_examples):
    STATS.clear()
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=max_examples, stateful_step_count=STEPS, deadline=None, database=None, print_blob=True,
            verbosity=Verbosity.normal, phases=list(Phase) if SHRINK else [p for p in Phase if p != Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]))
    finally:
        print(f"{machine.__name__}: " + ", ".join(f"{k} {v}" for k, v in sorted(STATS.items())))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("machine,examples", [(PosixMachine, MAX_EXAMPLES), (CrashMachine, CRASH_EXAMPLES)],
                         ids=["plain", "crashes"])
def test_state_machine(node, tmp_path, machine, examples):
    machine.node = node
    machine.native_base = str(tmp_path)
    machine.mount_base = node.p()
    run_machine(machine, examples)


@pytest.mark.timeout(900)
def test_state_machine_with_remote_arrivals(cluster, tmp_path):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    RemoteMachine.node, RemoteMachine.remote = a, b
    RemoteMachine.native_base = str(tmp_path)
    RemoteMachine.mount_base = a.p()
    run_machine(RemoteMachine, REMOTE_EXAMPLES)


@pytest.mark.timeout(180)
def test_create_over_a_name_a_peer_just_removed(cluster, monkeypatch):
    """The remote machine's EINVAL (docs/testing.md), replayed: a's utimens of `b` to an older mtime, b's O_TRUNC
    rewrite, a's pwrite and unlink; then b's open(O_RDWR|O_CREAT) + write, as soon as b's listing lacks `b`, while
    b's kernel still holds the name (the `vfs.show` failpoint stalls b's invalidations 3 s; stat keeps the entry
    fresh). The open must create the file, as on ext4, not fail on the removed inode; a then shows it."""
    if not helpers.has_failpoints(helpers.hypernet_bin()):
        pytest.skip("the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    monkeypatch.setenv("HYPERNET_FAILPOINT", "vfs.show:sleep(3000)")
    cluster.start()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    path_a, path_b = os.path.join(a.p(), "b"), os.path.join(b.p(), "b")
    with open(path_a, "wb") as f:
        f.write(b"first")
    eventually(lambda: os.path.exists(path_b), REMOTE_TIMEOUT, "b never showed a's file")
    os.utime(path_a, ns=(1_000_000_000, 2_000_000_123))
    eventually(lambda: os.stat(path_b).st_mtime_ns == 2_000_000_123, REMOTE_TIMEOUT, "b never showed a's utimens")
    do_open_write_close(b.p(), "b", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, b"rewritten on b")
    eventually(lambda: read_file(path_a) == b"rewritten on b", REMOTE_TIMEOUT, "a never showed b's rewrite")
    fd = os.open(path_a, os.O_WRONLY)
    os.pwrite(fd, b"pwritten on a", 4)
    os.close(fd)
    eventually(lambda: read_file(path_b) == b"rewrpwritten on a", REMOTE_TIMEOUT, "b never showed a's pwrite")
    os.unlink(path_a)

    def removed_on_b():
        # Keeps the kernel's entry for `b` fresh (a second each time) until the listing, asked of the daemon, lacks
        # it (only a stall of this loop lets the entry expire first: then nothing stale is left to open).
        return outcome(os.stat, path_b)[0] == "err" or "b" not in os.listdir(b.p())
    eventually(removed_on_b, REMOTE_TIMEOUT, "b never showed a's unlink")
    assert outcome(do_open_write_close, b.p(), "b", os.O_RDWR | os.O_CREAT, b"created on b") == ("ok", 12)
    eventually(lambda: os.path.exists(path_a) and read_file(path_a) == b"created on b", REMOTE_TIMEOUT,
               "a never showed the file b created")


# --- plain edge cases, each compared with the native directory ----------------------------------------------------

@pytest.fixture
def roots(node, tmp_path):
    native = tmp_path / "native"
    native.mkdir()
    mounted = os.path.join(node.p(), "cmp")
    os.mkdir(mounted)
    return str(native), mounted


def same(roots, fn):
    """Runs fn(root) on both and asserts equal outcomes; returns the native one."""
    native, mounted = (outcome(fn, r) for r in roots)
    assert native == mounted, f"native={native!r} mount={mounted!r}"
    return native


def j(root, *parts):
    return os.path.join(root, *parts)


def touch(path):
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def with_fd(path, flags, fn=lambda fd: None):
    """Opens, runs fn(fd), always closes: an fd left open on the mount would keep it busy."""
    fd = os.open(path, flags, 0o644)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def test_long_names(roots):
    ok, too_long = "n" * 255, "n" * 256
    # Bytes, not characters: 85 three-byte characters are 255 bytes, 86 are too many.
    utf8_ok, utf8_long = "\u20ac" * 85, "\u20ac" * 86
    for name in (ok, utf8_ok):
        same(roots, lambda r: touch(j(r, name)))
        same(roots, lambda r: os.stat(j(r, name)).st_size)
        same(roots, lambda r: os.mkdir(j(r, name[:-1] + "D")))
        same(roots, lambda r: os.rename(j(r, name), j(r, "short")))
        same(roots, lambda r: os.rename(j(r, "short"), j(r, name)))
        same(roots, lambda r: os.symlink("short", j(r, "l" + name[1:])))
    for name in (too_long, utf8_long):
        assert same(roots, lambda r: touch(j(r, name))) == ("err", "ENAMETOOLONG")
        same(roots, lambda r: os.stat(j(r, name)))
        same(roots, lambda r: os.mkdir(j(r, name)))
        same(roots, lambda r: os.symlink("x", j(r, name)))
        same(roots, lambda r: os.rename(j(r, ok), j(r, name)))
        same(roots, lambda r: os.unlink(j(r, name)))
    same(roots, lambda r: sorted(os.listdir(r)))


def test_non_utf8_names(roots):
    # Linux names are bytes: not valid UTF-8 must round-trip exactly.
    for name in (b"caf\xe9", b"\xff\xfe", b"a\x01b", b"\xc3"):
        same(roots, lambda r: touch(os.path.join(os.fsencode(r), name)))
    same(roots, lambda r: sorted(os.listdir(os.fsencode(r))))
    same(roots, lambda r: os.stat(os.path.join(os.fsencode(r), b"caf\xe9")).st_size)


def test_long_symlink_targets(roots):
    for length in (1000, 4095):
        target = ("t" * 200 + "/") * (length // 201) + "t" * (length % 201)
        assert len(target) == length
        same(roots, lambda r: os.symlink(target, j(r, f"l{length}")))
        assert same(roots, lambda r: os.readlink(j(r, f"l{length}"))) == ("ok", target)
        same(roots, lambda r: os.lstat(j(r, f"l{length}")).st_size)
    same(roots, lambda r: os.symlink("t" * 4096, j(r, "l4096")))


ERRNO_CASES = {
    "rmdir non-empty": (["d/", "d/f"], lambda r: os.rmdir(j(r, "d"))),
    "rmdir file": (["f"], lambda r: os.rmdir(j(r, "f"))),
    "rmdir dot": (["d/"], lambda r: os.rmdir(j(r, "d", "."))),
    "unlink dir": (["d/"], lambda r: os.unlink(j(r, "d"))),
    "mkdir existing": (["d/"], lambda r: os.mkdir(j(r, "d"))),
    "mkdir over file": (["f"], lambda r: os.mkdir(j(r, "f"))),
    "rename dir into own subdir": (["d/", "d/s/"], lambda r: os.rename(j(r, "d"), j(r, "d", "s", "x"))),
    "rename dir onto own child": (["d/", "d/s/"], lambda r: os.rename(j(r, "d"), j(r, "d", "s"))),
    "rename dir over non-empty dir": (["d/", "e/", "e/f"], lambda r: os.rename(j(r, "d"), j(r, "e"))),
    "rename dir over empty dir": (["d/", "d/f", "e/"], lambda r: (os.rename(j(r, "d"), j(r, "e")),
                                                                  sorted(os.listdir(j(r, "e"))))),
    "rename file over dir": (["f", "d/"], lambda r: os.rename(j(r, "f"), j(r, "d"))),
    "rename dir over file": (["f", "d/"], lambda r: os.rename(j(r, "d"), j(r, "f"))),
    "rename to itself": (["f"], lambda r: (os.rename(j(r, "f"), j(r, "f")), os.listdir(r))),
    "rename missing": ([], lambda r: os.rename(j(r, "nope"), j(r, "x"))),
    "rename over file across dirs": (["d/", "d/f", "e/", "e/g"], lambda r: (
        os.rename(j(r, "d", "f"), j(r, "e", "g")), sorted(os.listdir(j(r, "d"))), read_file(j(r, "e", "g")))),
    "open dir for write": (["d/"], lambda r: with_fd(j(r, "d"), os.O_WRONLY)),
    "O_DIRECTORY on file": (["f"], lambda r: with_fd(j(r, "f"), os.O_RDONLY | os.O_DIRECTORY)),
    "O_CREAT|O_EXCL existing": (["f"], lambda r: with_fd(j(r, "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
    "O_EXCL on dangling symlink": (["l->nope"], lambda r: with_fd(j(r, "l"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
    "O_CREAT on dangling symlink": (["l->nope"], lambda r: (with_fd(j(r, "l"), os.O_CREAT | os.O_WRONLY),
                                                           sorted(os.listdir(r)))),
    "O_RDONLY|O_TRUNC truncates (Linux)": (["f"], lambda r: (with_fd(j(r, "f"), os.O_RDONLY | os.O_TRUNC),
                                                             os.stat(j(r, "f")).st_size)),
    "O_NOFOLLOW on symlink": (["f", "l->f"], lambda r: with_fd(j(r, "l"), os.O_RDONLY | os.O_NOFOLLOW)),
    "readlink on file": (["f"], lambda r: os.readlink(j(r, "f"))),
    "file as directory": (["f"], lambda r: os.stat(j(r, "f", "x"))),
    "create under file": (["f"], lambda r: touch(j(r, "f", "x"))),
    "symlink over existing": (["f"], lambda r: os.symlink("x", j(r, "f"))),
    "symlink loop": (["l->m", "m->l"], lambda r: os.stat(j(r, "l"))),
    "read dir": (["d/"], lambda r: with_fd(j(r, "d"), os.O_RDONLY, lambda fd: os.read(fd, 10))),
    "truncate dir": (["d/"], lambda r: os.truncate(j(r, "d"), 0)),
    "truncate negative": (["f"], lambda r: os.truncate(j(r, "f"), -1)),
    "pwrite negative": (["f"], lambda r: with_fd(j(r, "f"), os.O_WRONLY, lambda fd: os.pwrite(fd, b"x", -1))),
    "write on O_RDONLY": (["f"], lambda r: with_fd(j(r, "f"), os.O_RDONLY, lambda fd: os.write(fd, b"x"))),
    "read on O_WRONLY": (["f"], lambda r: with_fd(j(r, "f"), os.O_WRONLY, lambda fd: os.read(fd, 1))),
    "sparse file": ([], lambda r: (with_fd(j(r, "s"), os.O_CREAT | os.O_WRONLY, lambda fd: os.pwrite(fd, b"x", 1 << 20)),
                                   read_file(j(r, "s")) == b"\0" * (1 << 20) + b"x")),
    "truncate extends with zeros": (["f"], lambda r: (os.truncate(j(r, "f"), 100000),
                                                      read_file(j(r, "f")) == b"data" + b"\0" * 99996)),
    "unlink while open": (["f"], lambda r: _unlink_while_open(j(r, "f"))),
    "rename while open": (["f"], lambda r: _rename_while_open(r)),
    "dir nlink": (["d/", "d/x/", "d/y/", "d/f"], lambda r: (os.stat(j(r, "d")).st_nlink,
                                                            os.stat(j(r, "d", "f")).st_nlink)),
    "setgid dir inherits group": (["g/"], lambda r: _setgid_inherit(r)),
    "chmod symlink target": (["f", "l->f"], lambda r: (os.chmod(j(r, "l"), 0o600),
                                                      stat.S_IMODE(os.stat(j(r, "f")).st_mode))),
    "xattr create exists": (["f"], lambda r: (os.setxattr(j(r, "f"), "user.k", b"v"),
                                              os.setxattr(j(r, "f"), "user.k", b"w", os.XATTR_CREATE))),
    "xattr replace missing": (["f"], lambda r: os.setxattr(j(r, "f"), "user.k", b"v", os.XATTR_REPLACE)),
    "xattr remove missing": (["f"], lambda r: os.removexattr(j(r, "f"), "user.k")),
    "xattr on symlink itself": (["f", "l->f"], lambda r: os.setxattr(j(r, "l"), "user.k", b"v",
                                                                   follow_symlinks=False)),
    "xattr empty value": (["f"], lambda r: (os.setxattr(j(r, "f"), "user.e", b""), os.getxattr(j(r, "f"), "user.e"))),
    "xattr too large": (["f"], lambda r: os.setxattr(j(r, "f"), "user.big", b"x" * 65537)),
}


def _unlink_while_open(path):
    def use(fd):
        os.unlink(path)
        os.pwrite(fd, b"more", 4)
        return os.pread(fd, 100, 0), os.fstat(fd).st_size
    return with_fd(path, os.O_RDWR, use), os.path.exists(path)


def _rename_while_open(root):
    def use(fd):
        os.rename(j(root, "f"), j(root, "g"))
        os.write(fd, b"+tail")
    with_fd(j(root, "f"), os.O_RDWR | os.O_APPEND, use)
    return read_file(j(root, "g")), os.path.exists(j(root, "f"))


def _setgid_inherit(root):
    os.chown(j(root, "g"), 0, 1234)
    os.chmod(j(root, "g"), 0o2775)
    os.mkdir(j(root, "g", "sub"))
    touch(j(root, "g", "f"))
    sub, f = os.stat(j(root, "g", "sub")), os.stat(j(root, "g", "f"))
    return sub.st_gid, stat.S_IMODE(sub.st_mode) & 0o2000, f.st_gid


def _build(root, spec):
    for item in spec:
        if "->" in item:
            link, target = item.split("->")
            os.symlink(target, j(root, link))
        elif item.endswith("/"):
            os.mkdir(j(root, item))
        else:
            with open(j(root, item), "wb") as f:
                f.write(b"data")


@pytest.mark.parametrize("case", sorted(ERRNO_CASES))
def test_errno_matches_native(roots, case):
    spec, op = ERRNO_CASES[case]
    for root in roots:
        _build(root, spec)
    same(roots, op)
    # The trees afterwards too (a failed call must change nothing).
    native, mounted = snapshot(roots[0]), snapshot(roots[1])
    assert native == mounted, "trees differ:\n" + describe_difference(native, mounted)


def test_renameat2_flags(roots):
    def setup(r):
        for name, data in (("a", b"A"), ("b", b"B")):
            with open(j(r, name), "wb") as f:
                f.write(data)

    cases = [
        ("NOREPLACE onto existing", lambda r: renameat2(j(r, "a"), j(r, "b"), RENAME_NOREPLACE)),
        ("NOREPLACE onto missing", lambda r: renameat2(j(r, "a"), j(r, "c"), RENAME_NOREPLACE)),
        ("EXCHANGE two files", lambda r: renameat2(j(r, "a"), j(r, "b"), RENAME_EXCHANGE)),
        ("EXCHANGE with missing", lambda r: renameat2(j(r, "a"), j(r, "c"), RENAME_EXCHANGE)),
    ]
    for label, op in cases:
        for r in roots:
            for name in os.listdir(r):
                os.unlink(j(r, name))
            setup(r)
        native, mounted = outcome(op, roots[0]), outcome(op, roots[1])
        state = [{n: read_file(j(r, n)) for n in sorted(os.listdir(r))} for r in roots]
        if mounted == native:
            assert state[0] == state[1], f"{label}: same result {native} but trees differ: {state}"
        else:
            # Not supported: a clear errno and nothing changed, never a silent plain rename.
            assert mounted in (("err", "EINVAL"), ("err", "ENOTSUP")), \
                f"{label}: native={native} mount={mounted}"
            assert state[1] == {"a": b"A", "b": b"B"}, f"{label}: failed with {mounted} but changed the tree"


SPECIAL_FILES = {
    "fifo": lambda path: os.mkfifo(path, 0o640),
    "socket": lambda path: os.mknod(path, stat.S_IFSOCK | 0o600),
    "char device": lambda path: os.mknod(path, stat.S_IFCHR | 0o620, os.makedev(1, 3)),
    "block device": lambda path: os.mknod(path, stat.S_IFBLK | 0o660, os.makedev(7, 200)),
}


@pytest.mark.parametrize("kind", sorted(SPECIAL_FILES))
def test_special_files_like_native(roots, kind):
    """Each special file type through create, stat, chmod, chown, utimens, rename (also over a file) and unlink."""
    steps = [
        ("create", lambda r: SPECIAL_FILES[kind](j(r, "s"))),
        ("again", lambda r: SPECIAL_FILES[kind](j(r, "s"))),
        ("chmod", lambda r: os.chmod(j(r, "s"), 0o604)),
        ("chown", lambda r: os.chown(j(r, "s"), 1000, 1000, follow_symlinks=False)),
        ("utimens", lambda r: os.utime(j(r, "s"), ns=(1_000_000_000, 2_000_000_123), follow_symlinks=False)),
        ("setxattr", lambda r: os.setxattr(j(r, "s"), "user.a", b"1", follow_symlinks=False)),
        ("rename", lambda r: os.rename(j(r, "s"), j(r, "t"))),
        ("rename over a file", lambda r: (touch(j(r, "f")), os.rename(j(r, "t"), j(r, "f")))),
        ("mkdir over it", lambda r: os.mkdir(j(r, "f"))),
    ]
    for label, step in steps:
        results = [outcome(step, r) for r in roots]
        assert results[0] == results[1], f"{kind}, {label}: native={results[0]!r} mount={results[1]!r}"
        trees = [snapshot(r) for r in roots]
        assert trees[0] == trees[1], f"{kind}, after {label}:\n" + describe_difference(*trees)
    same(roots, lambda r: (os.lstat(j(r, "f")).st_mtime_ns, os.lstat(j(r, "f")).st_nlink))
    same(roots, lambda r: os.unlink(j(r, "f")))
    same(roots, lambda r: sorted(os.listdir(r)))


def test_special_files_work(roots):
    """A FIFO carries bytes, a bound UNIX socket accepts a connection, and device nodes stay closed (`nodev`)."""
    mounted = roots[1]
    os.mkfifo(j(mounted, "fifo"))
    fd = os.open(j(mounted, "fifo"), os.O_RDWR)  # both ends at once: never blocks
    try:
        os.write(fd, b"through the pipe")
        assert os.read(fd, 100) == b"through the pipe"
    finally:
        os.close(fd)
    cwd = os.getcwd()
    os.chdir(mounted)  # sun_path holds at most 107 bytes: bind by a relative name
    try:
        with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
            server.bind("sock")
            server.listen(1)
            client.connect("sock")
            connection, _ = server.accept()
            with connection:
                client.sendall(b"hello")
                assert connection.recv(5) == b"hello"
    finally:
        os.chdir(cwd)
    assert stat.S_ISSOCK(os.lstat(j(mounted, "sock")).st_mode)
    os.mknod(j(mounted, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert errno_of(os.open, j(mounted, "null"), os.O_WRONLY) == "EACCES", "a device opened on a nodev mount"
    assert sorted(os.listdir(mounted)) == ["fifo", "null", "sock"]


def test_hard_links_like_native(roots):
    """Links of every type: link counts, shared inodes and content after each step, as on ext4."""
    steps = [
        ("file", lambda r: touch(j(r, "f"))),
        ("fifo", lambda r: os.mkfifo(j(r, "p"))),
        ("symlink", lambda r: os.symlink("f", j(r, "l"))),
        ("dir", lambda r: os.mkdir(j(r, "d"))),
        ("link a file", lambda r: os.link(j(r, "f"), j(r, "d", "f"))),
        ("link a fifo", lambda r: os.link(j(r, "p"), j(r, "d", "p"))),
        ("link a symlink itself", lambda r: os.link(j(r, "l"), j(r, "d", "l"), follow_symlinks=False)),
        ("link through a symlink", lambda r: os.link(j(r, "l"), j(r, "g"))),
        ("link a directory", lambda r: os.link(j(r, "d"), j(r, "e"))),
        ("link over a name", lambda r: os.link(j(r, "f"), j(r, "p"))),
        ("write through one name", lambda r: write(j(r, "g"), b"shared")),
        ("rename a link", lambda r: os.rename(j(r, "d", "f"), j(r, "h"))),
        ("rename a link over another", lambda r: os.rename(j(r, "h"), j(r, "g"))),
        ("rename over a link", lambda r: (write(j(r, "t"), b"new"), os.rename(j(r, "t"), j(r, "f")))),
        ("chmod one name", lambda r: os.chmod(j(r, "g"), 0o600)),
        ("unlink a name", lambda r: os.unlink(j(r, "p"))),
        ("unlink a symlink's name", lambda r: os.unlink(j(r, "l"))),
        ("exchange", lambda r: renameat2(j(r, "g"), j(r, "d", "p"), RENAME_EXCHANGE)),
        ("rmdir after unlinks", lambda r: (os.unlink(j(r, "d", "l")), os.unlink(j(r, "d", "p")), os.rmdir(j(r, "d")))),
    ]
    for label, step in steps:
        results = [outcome(step, r) for r in roots]
        assert results[0] == results[1], f"{label}: native={results[0]!r} mount={results[1]!r}"
        trees = [snapshot(r) for r in roots]
        assert trees[0] == trees[1], f"after {label}:\n" + describe_difference(*trees)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_statfs(node):
    s = os.statvfs(node.p())
    assert s.f_bsize > 0 and s.f_frsize > 0
    assert s.f_blocks > 0
    assert s.f_bavail <= s.f_bfree <= s.f_blocks
    assert s.f_namemax == 255
    df = subprocess.run(["df", "-P", node.p()], capture_output=True, text=True, timeout=30)
    assert df.returncode == 0, df.stderr


def test_flock_and_posix_locks(node):
    path = node.p("lock")
    with open(path, "wb") as f:
        f.write(b"x")
    a, b = open(path, "r+b"), open(path, "r+b")
    try:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_UN)
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(a, fcntl.LOCK_EX | fcntl.LOCK_NB)  # POSIX locks are per process: same process succeeds
    finally:
        a.close()
        b.close()


def test_readdir_large_and_rm_rf(roots):
    for r in roots:
        os.mkdir(j(r, "big"))
        for i in range(700):
            touch(j(r, "big", f"entry-{i:04d}-" + "x" * (i % 50)))
    same(roots, lambda r: sorted(os.listdir(j(r, "big"))))
    # Unlinking while reading the directory must not skip or repeat entries (readdir offsets).
    def drain(r):
        removed = 0
        with os.scandir(j(r, "big")) as it:
            for entry in it:
                os.unlink(entry.path)
                removed += 1
        return removed, os.listdir(j(r, "big"))
    same(roots, drain)
    same(roots, lambda r: os.rmdir(j(r, "big")))


# --- timestamps: which of mtime/ctime change, per operation, as on the native filesystem ------------------------

TIME_OPS = {
    "write": lambda r: _write_at(j(r, "f"), b"y", 1),
    "write through O_TRUNC": lambda r: os.close(os.open(j(r, "f"), os.O_WRONLY | os.O_TRUNC)),
    "append": lambda r: _append(j(r, "f"), b"more"),
    "truncate": lambda r: os.truncate(j(r, "f"), 1),
    "truncate same size": lambda r: os.truncate(j(r, "f"), 4),
    "chmod": lambda r: os.chmod(j(r, "f"), 0o600),
    "chown": lambda r: os.chown(j(r, "f"), 1000, 1000),
    "utime now": lambda r: os.utime(j(r, "f")),
    "setxattr": lambda r: os.setxattr(j(r, "f"), "user.t", b"1"),
    "read": lambda r: read_file(j(r, "f")),
    "create in dir": lambda r: touch(j(r, "d", "new")),
    "unlink in dir": lambda r: os.unlink(j(r, "d", "g")),
    "mkdir in dir": lambda r: os.mkdir(j(r, "d", "sub")),
    "rename within dir": lambda r: os.rename(j(r, "d", "g"), j(r, "d", "h")),
    "rename across dirs": lambda r: os.rename(j(r, "d", "g"), j(r, "g")),
    "symlink in dir": lambda r: os.symlink("x", j(r, "d", "l")),
}


def _write_at(path, data, offset):
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, data, offset)
    os.close(fd)


def _append(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, data)
    os.close(fd)


def _times(root):
    """(mtime, ctime) of the watched objects; the renamed file is followed to its new name."""
    result = {}
    for label, candidates in (("f", ["f"]), ("d", ["d"]), ("root", ["."]), ("g", ["d/g", "d/h", "g"])):
        for c in candidates:
            try:
                s = os.lstat(j(root, c))
            except FileNotFoundError:
                continue
            result[label] = (s.st_mtime_ns, s.st_ctime_ns)
            break
    return result


@pytest.mark.parametrize("op", sorted(TIME_OPS))
def test_timestamps_like_native(roots, op):
    changed = []
    for r in roots:
        with open(j(r, "f"), "wb") as f:
            f.write(b"data")
        os.mkdir(j(r, "d"))
        with open(j(r, "d", "g"), "wb") as f:
            f.write(b"g")
        time.sleep(0.05)  # the kernel's coarse clock ticks every few ms
        before = _times(r)
        TIME_OPS[op](r)
        after = _times(r)
        diff = set()
        for label in before:
            if label not in after:
                continue
            for index, field in enumerate(("mtime", "ctime")):
                if after[label][index] < before[label][index]:
                    pytest.fail(f"{op}: {label}.{field} went backwards on {'native' if r == roots[0] else 'mount'}")
                if after[label][index] != before[label][index]:
                    diff.add(f"{label}.{field}")
        changed.append(sorted(diff))
    assert changed[0] == changed[1], f"{op}: native changed {changed[0]}, mount changed {changed[1]}"


def test_timestamps_are_wall_clock(node):
    t0 = time.time_ns()
    with open(node.p("f"), "wb") as f:
        f.write(b"x")
    s = os.stat(node.p("f"))
    t1 = time.time_ns()
    for field in ("st_mtime_ns", "st_ctime_ns"):
        value = getattr(s, field)
        assert t0 - 10_000_000 <= value <= t1 + 10_000_000, f"{field}={value} not within [{t0}, {t1}]"
    os.utime(node.p("f"), ns=(1_234_567_890_123_456_789, 1_234_567_891_987_654_321))
    s = os.stat(node.p("f"))
    assert (s.st_atime_ns, s.st_mtime_ns) == (1_234_567_890_123_456_789, 1_234_567_891_987_654_321)


def test_times_survive_restart(node):
    root = node.p("t")
    os.mkdir(root)
    with open(j(root, "written"), "wb") as f:
        f.write(b"x")
    for name in ("chmodded", "renamed", "xattr", "utimed", "truncated"):
        with open(j(root, name), "wb") as f:
            f.write(b"data")
    os.mkdir(j(root, "dir"))
    time.sleep(0.05)
    os.chmod(j(root, "chmodded"), 0o600)
    os.rename(j(root, "renamed"), j(root, "renamed2"))
    os.rename(j(root, "dir"), j(root, "dir2"))
    os.setxattr(j(root, "xattr"), "user.k", b"v")
    os.utime(j(root, "utimed"), ns=(1_000_000_001, 2_000_000_002))
    os.truncate(j(root, "truncated"), 1)
    os.symlink("written", j(root, "link"))
    fields = ("st_mtime_ns", "st_ctime_ns", "st_atime_ns")
    before = snapshot(root, times=fields[:2])
    utimed_atime = os.stat(j(root, "utimed")).st_atime_ns
    node.restart()
    after = snapshot(root, times=fields[:2])
    assert before == after, "times changed across a restart:\n" + describe_difference(before, after, ("before", "after"))
    assert os.stat(j(root, "utimed")).st_atime_ns == utimed_atime == 1_000_000_001


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR])
def test_metadata_of_an_open_file_survives_a_crash(node, flags):
    """chmod, chown and utimens are durable when they return, also while the file is open (found by
    CrashMachine: the chmod of a file held open was undone by a crash). Writes through the open descriptor were
    never accepted: the content is the closed one or includes them, and the size agrees with it."""
    path = node.p("f")
    with open(path, "wb") as f:
        f.write(b"closed content")
    fd = os.open(path, flags)
    try:
        if flags == os.O_RDWR:
            os.pwrite(fd, b"written, never closed", 100)
        os.chmod(path, 0o600)
        os.chown(path, 1000, 1001)
        os.utime(path, ns=(1_000_000_001, 2_000_000_002))
        node.kill9()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN: the daemon is gone
    node.start()
    s = os.stat(path)
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_mtime_ns) == (0o600, 1000, 1001, 2_000_000_002)
    content = read_file(path)
    assert content in (b"closed content", b"closed content".ljust(100, b"\0") + b"written, never closed")
    assert s.st_size == len(content)


# --- permission checks as another user (kernel default_permissions + sticky bit) -----------------------------------

def _as_user(uid, fn):
    """Runs fn() as `uid`; returns its errno name or None."""
    kind, value = as_user(uid, fn)
    return value if kind == "err" else None


@pytest.fixture
def shared_roots(make_node, node_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    node = make_node(options=["allow_other"])
    native = node_dir / "native"
    native.mkdir()
    native.chmod(0o755)
    mounted = node.p("shared")
    os.mkdir(mounted)
    os.chmod(mounted, 0o755)
    return str(native), mounted


OWNER, OTHER = 1001, 1002


def test_sticky_directory(shared_roots):
    for r in shared_roots:
        os.mkdir(j(r, "tmp"))
        os.chmod(j(r, "tmp"), 0o1777)
        for name in ("f", "g", "h"):
            with open(j(r, "tmp", name), "wb") as f:
                f.write(b"x")
            os.chown(j(r, "tmp", name), OWNER, OWNER)
            os.chmod(j(r, "tmp", name), 0o666)
    ops = [
        ("other unlinks", OTHER, lambda r: os.unlink(j(r, "tmp", "f"))),
        ("other renames away", OTHER, lambda r: os.rename(j(r, "tmp", "f"), j(r, "tmp", "x"))),
        ("other renames over", OTHER, lambda r: (touch(j(r, "tmp", "mine")),
                                                 os.rename(j(r, "tmp", "mine"), j(r, "tmp", "g")))),
        ("other writes (mode 666)", OTHER, lambda r: _append(j(r, "tmp", "f"), b"ok")),
        ("owner unlinks", OWNER, lambda r: os.unlink(j(r, "tmp", "h"))),
    ]
    for label, uid, op in ops:
        native, mounted = (_as_user(uid, lambda: op(r)) for r in shared_roots)
        assert native == mounted, f"{label}: native={native} mount={mounted}"
    assert sorted(os.listdir(j(shared_roots[0], "tmp"))) == sorted(os.listdir(j(shared_roots[1], "tmp")))


def test_permissions_as_other_user(shared_roots):
    for r in shared_roots:
        os.mkdir(j(r, "ro"))  # 0755 root-owned
        with open(j(r, "ro", "f"), "wb") as f:
            f.write(b"secret")
        os.chmod(j(r, "ro", "f"), 0o600)
        with open(j(r, "pub"), "wb") as f:
            f.write(b"public")
        os.chmod(j(r, "pub"), 0o644)
    ops = [
        ("create in 0755 root dir", lambda r: touch(j(r, "ro", "new"))),
        ("read 0600 root file", lambda r: read_file(j(r, "ro", "f"))),
        ("write 0644 root file", lambda r: with_fd(j(r, "pub"), os.O_WRONLY)),
        ("read 0644 root file", lambda r: read_file(j(r, "pub"))),
        ("chmod root file", lambda r: os.chmod(j(r, "pub"), 0o666)),
        ("chown to self", lambda r: os.chown(j(r, "pub"), OTHER, OTHER)),
        ("utime root file", lambda r: os.utime(j(r, "pub"), (1, 1))),
        ("unlink in 0755 root dir", lambda r: os.unlink(j(r, "ro", "f"))),
        ("setxattr on root file", lambda r: os.setxattr(j(r, "pub"), "user.x", b"1")),
    ]
    for label, op in ops:
        native, mounted = (_as_user(OTHER, lambda: op(r)) for r in shared_roots)
        assert native == mounted, f"{label}: native={native} mount={mounted}"
