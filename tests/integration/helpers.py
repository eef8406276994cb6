"""Shared code for the integration suite: the `Node` under test, errno capture, xattr and store helpers.

Also runnable as a script (`python3 helpers.py writer ...`): the crash-test writer runs in its own process
so that killing the daemon under it looks exactly like killing it under any application.
"""

import ctypes
import errno
import hashlib
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".build" / "release" / "hypernet"

XATTR_PREFIX = "user.hypernet."
LOG_LINE = re.compile(r"^\S+ (trace|debug|info|notice|warning|error|critical) \S+?: ")
CRASH = re.compile(r"Fatal error|Program crashed|Segmentation fault|Illegal instruction|Aborted|Current stack trace")


def hypernet_bin() -> str:
    return os.environ.get("HYPERNET_BIN") or str(DEFAULT_BIN)


# --- errno capture -----------------------------------------------------------------------------------------

def outcome(fn, *args, **kwargs):
    """('ok', value) or ('err', 'ENAME'): lets two filesystems be compared call by call."""
    try:
        return ("ok", fn(*args, **kwargs))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, str(e.errno)))


def errno_of(fn, *args, **kwargs):
    """The errno name `fn` fails with, or None when it succeeds."""
    kind, value = outcome(fn, *args, **kwargs)
    return value if kind == "err" else None


def as_user(uid, fn, groups=()):
    """Runs fn() in a forked child with uid and gid `uid` and supplementary `groups`; returns its `outcome`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups(list(groups))
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            result = outcome(fn)
        except BaseException as e:  # the child must never return into pytest
            result = ("child failed", repr(e))
        os.write(write_end, pickle.dumps(result))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        result = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert result[0] != "child failed", result[1]
    return result


_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(src, dst, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000  # needs CAP_DAC_READ_SEARCH (the suite runs as root)


def link_fd(fd, dst, empty_path=False):
    """Names the file open as `fd` at `dst`: linkat(fd, "", ..., AT_EMPTY_PATH), or else through /proc/self/fd/N
    with AT_SYMLINK_FOLLOW (os.link calls link(2), which would link the /proc symlink itself)."""
    if empty_path:
        rc = _libc.linkat(fd, b"", AT_FDCWD, os.fsencode(dst), AT_EMPTY_PATH)
    else:
        rc = _libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(dst), AT_SYMLINK_FOLLOW)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)


# --- files ---------------------------------------------------------------------------------------------------

def write_file(path, data: bytes, fsync=False, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 20]):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_or_none(path):
    """The file's bytes, or None while it is missing or unreadable (its revisions may still be arriving)."""
    try:
        return read_file(path)
    except OSError:
        return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(n: int, seed=None) -> bytes:
    return random.Random(seed).randbytes(n) if seed is not None else os.urandom(n)


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` passes (returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- Hypernet xattrs -----------------------------------------------------------------------------------------

def hx(path, name, follow=True) -> bytes:
    return os.getxattr(path, XATTR_PREFIX + name, follow_symlinks=follow)


def doc_id(path) -> str:
    return hx(path, "id").decode().strip()


def current_revision(path) -> str:
    return hx(path, "revision").decode().strip()


def history(path):
    """user.hypernet.history as a list of (rev, time, author, size), newest first (contract: `REV TIME AUTHOR SIZE`)."""
    entries = []
    for line in hx(path, "history").decode().splitlines():
        if not line.strip():
            continue
        fields = line.split()
        assert len(fields) == 4, f"history line is not `REV TIME AUTHOR SIZE`: {line!r}"
        entries.append((fields[0], fields[1], fields[2], int(fields[3])))
    return entries


def user_xattrs(path, follow=True) -> dict:
    """Every `user.*` xattr except Hypernet's virtual `user.hypernet.*` ones."""
    names = sorted(n for n in os.listxattr(path, follow_symlinks=follow)
                   if n.startswith("user.") and not n.startswith(XATTR_PREFIX))
    return {n: os.getxattr(path, n, follow_symlinks=follow) for n in names}


def pack_bytes(home) -> int:
    packs = Path(home) / "store" / "packs"
    return sum(p.stat().st_size for p in packs.rglob("*") if p.is_file()) if packs.exists() else 0


def pack_sizes(home) -> dict:
    packs = Path(home) / "store" / "packs"
    return {str(p): p.stat().st_size for p in packs.rglob("*") if p.is_file()} if packs.exists() else {}


# --- processes and mounts --------------------------------------------------------------------------------------

def mounts():
    """(mountpoint, fstype) of every mount, with /proc/mounts' octal escapes decoded."""
    result = []
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            result.append((point, fields[2]))
    return result


def is_mounted(path) -> bool:
    path = os.path.realpath(path)
    return any(point == path for point, _ in mounts())


def pid_alive(pid) -> bool:
    """True for a live process (zombies count as gone: their parent, not us, reaps them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def proc_cmdline(pid) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def processes_mentioning(prefix: str):
    """PIDs whose command line or HYPERNET_HOME mentions `prefix` (a directory owned by the suite)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        hit = any(prefix in arg for arg in proc_cmdline(pid))
        if not hit:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    hit = any(v.startswith(b"HYPERNET_HOME=" + prefix.encode()) for v in f.read().split(b"\0"))
            except OSError:
                pass
        if hit and pid_alive(pid) and any("hypernet" in a for a in proc_cmdline(pid)[:1]):
            found.append(pid)
    return found


def has_failpoints(binary) -> bool:
    """Whether `binary` is a test build with failpoints (docs/testing.md): only such a build holds the parser of
    HYPERNET_FAILPOINT and its messages (every build names the variable, in the daemon's refusal)."""
    with open(binary, "rb") as f:
        return b"ACTION is panic, error or sleep(MS)" in f.read()


def lazy_unmount(path):
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


def end_foreground(proc, node):
    """Cleanup after a test that ran `hypernet mount --foreground` itself: kills the daemon if it still runs and
    lazily unmounts what it left mounted."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if node.is_mounted():
        lazy_unmount(node.mount)


class Node:
    """One Hypernet daemon with its home and mountpoint, driven through the `hypernet` CLI."""

    def __init__(self, directory: Path, bin_path: str, options=(), quorum=None, fsync_timeout=None):
        self.dir = Path(directory)
        self.home = self.dir / "home"
        self.mount = self.dir / "mnt"
        self.bin = bin_path
        self.options = list(options)
        self.quorum = quorum
        self.fsync_timeout = fsync_timeout
        self.pid = None
        self.pids = set()  # every daemon pid seen, for the leak check
        self.running = False  # whether the test expects the daemon up (false after kill9/stop)
        self.allowed_log_errors = []  # regexes; None in the list allows every error line
        self.problems = []  # teardown findings that fail the test
        self.mount.mkdir(parents=True, exist_ok=True)

    # CLI ---------------------------------------------------------------------------------------------------
    def cli(self, *args, check=True, timeout=60, input=None, text=True):
        env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
        proc = subprocess.run([self.bin, "--home", str(self.home), *map(str, args)], capture_output=True,
                              input=input, text=text, timeout=timeout, env=env, stdin=None if input else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"`hypernet {' '.join(map(str, args))}` exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}")
        return proc

    def start(self):
        args = ["mount", str(self.mount)]
        for option in self.options:
            args += ["-o", option]
        if self.quorum is not None:
            args += ["--quorum", str(self.quorum)]
        if self.fsync_timeout is not None:
            args += ["--fsync-timeout", str(self.fsync_timeout)]
        self.running = True  # set first: a half-started daemon must still be cleaned up
        proc = self.cli(*args, check=False, timeout=60)
        self.read_pid()
        if proc.returncode != 0:
            raise AssertionError(f"`hypernet mount` exited {proc.returncode}: {proc.stderr.strip()}")
        assert self.is_mounted(), f"`hypernet mount` returned 0 but {self.mount} is not in /proc/mounts"
        assert self.pid is not None, f"no pid in {self.home / 'daemon.pid'} after mount"
        return self

    def read_pid(self):
        try:
            self.pid = int((self.home / "daemon.pid").read_text().split()[0])
            self.pids.add(self.pid)
        except (OSError, ValueError, IndexError):
            self.pid = None
        return self.pid

    def stop(self, timeout=30):
        """`hypernet stop`, then waits for the daemon to exit and the mount to go. Raises on failure."""
        pid = self.pid
        proc = self.cli("stop", check=False, timeout=timeout)
        self.running = False
        if proc.returncode != 0:
            raise AssertionError(f"`hypernet stop` exited {proc.returncode}: {proc.stderr.strip()}")
        if pid is not None and not wait_until(lambda: not pid_alive(pid), timeout):
            raise AssertionError(f"daemon {pid} still running {timeout}s after `hypernet stop`")
        if not wait_until(lambda: not self.is_mounted(), 5):
            raise AssertionError(f"{self.mount} still mounted after `hypernet stop`")

    def restart(self):
        self.stop()
        return self.start()

    def kill9(self):
        """SIGKILL the daemon (a crash), wait for it, and lazily unmount the dead mount."""
        assert self.pid is not None and pid_alive(self.pid), "kill9: no daemon running"
        os.kill(self.pid, signal.SIGKILL)
        self.reap()

    def reap(self):
        """After the daemon crashed (SIGKILL, a failpoint's panic): waits for it to be gone and lazily unmounts
        the dead mount."""
        self.running = False
        assert wait_until(lambda: not pid_alive(self.pid), 10), f"daemon {self.pid} is still running"
        lazy_unmount(self.mount)
        assert wait_until(lambda: not self.is_mounted(), 5), f"{self.mount} still mounted after fusermount3 -u -z"

    def is_mounted(self):
        return is_mounted(self.mount)

    # paths and files ---------------------------------------------------------------------------------------
    def p(self, *parts) -> str:
        return os.path.join(str(self.mount), *parts)

    def log_text(self) -> str:
        try:
            return (self.home / "hypernet.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def allow_log_errors(self, *patterns):
        """Declares error lines this test expects (regexes); without arguments any error line is allowed."""
        self.allowed_log_errors.extend(patterns or [None])

    def pack_bytes(self) -> int:
        return pack_bytes(self.home)

    # teardown ----------------------------------------------------------------------------------------------
    def cleanup(self):
        """Stops everything this node started, whatever state the test left it in; records what went wrong."""
        if self.running and self.pid is not None and pid_alive(self.pid):
            try:
                self.stop()
            except (AssertionError, subprocess.TimeoutExpired) as e:
                self.problems.append(f"stop failed: {e}")
        self.running = False
        if self.is_mounted():
            lazy_unmount(self.mount)
        self.read_pid()
        # Daemons from daemon.pid (only while they still look like ours: pids get reused) and any
        # other hypernet process naming this node's directory.
        ours = {pid for pid in self.pids if pid_alive(pid) and "hypernet" in " ".join(proc_cmdline(pid))}
        for pid in sorted(ours | set(processes_mentioning(str(self.dir)))):
            self.problems.append(f"hypernet process {pid} {proc_cmdline(pid)} was still running: killed")
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 10)
        if self.is_mounted():
            lazy_unmount(self.mount)
            if self.is_mounted():
                self.problems.append(f"{self.mount} is still mounted after fusermount3 -u -z")

    def log_findings(self):
        """Error/critical lines, crashes and lines not in the log format, minus what the test declared expected."""
        allow_all = None in self.allowed_log_errors
        patterns = [re.compile(p) for p in self.allowed_log_errors if p is not None]
        findings = []
        for line in self.log_text().splitlines():
            if not line.strip():
                continue
            m = LOG_LINE.match(line)
            if CRASH.search(line):
                findings.append(line)  # never expected
            elif m is None or m.group(1) in ("error", "critical"):
                if not (allow_all or any(p.search(line) for p in patterns)):
                    findings.append(line)
        return findings


# --- crash-test writer (separate process) ------------------------------------------------------------------------

SIZES = [0, 1, 100, 4096, 65536, 200_000, 1_000_000]


def _payload(rng: random.Random) -> bytes:
    size = rng.choice(SIZES)
    if rng.random() < 0.5:
        return rng.randbytes(size)
    return (b"hypernet %d " % rng.randrange(1 << 30) * (size // 10 + 1))[:size]


def writer_main(root: str, ack_path: str, mode: str, seed: int):
    """Writes files under `root` forever; appends one JSON line per step to `ack_path` (outside the mount):
    {"op", "path", "state": "begin"} before and {"state": "ack", "sha256", ...} once close/fsync returned."""
    rng = random.Random(seed)
    durable = mode == "fsync"
    ack = open(ack_path, "a", buffering=1)
    known = {}  # path -> content of the last acknowledged version
    log_path = os.path.join(root, "log.txt")
    log_len = 0
    dirs = [os.path.join(root, f"d{i}") for i in range(4)]

    def record(**fields):
        ack.write(json.dumps(fields) + "\n")
        ack.flush()

    def finish(fd, directory=None):
        if durable:
            os.fsync(fd)
        os.close(fd)
        if durable and directory is not None:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    try:
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        i = 0
        while True:
            i += 1
            choice = rng.random()
            if choice < 0.15:
                # Append a line to the log.
                line = b"line %d %s\n" % (i, rng.randbytes(rng.randrange(1, 200)).hex().encode())
                record(op="append", path=log_path, state="begin", length=log_len)
                fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.write(fd, line)
                finish(fd, root)
                with open(log_path, "rb") as f:
                    content = f.read()
                log_len += len(line)
                record(op="append", path=log_path, state="ack", length=log_len,
                       sha256=sha256(content[:log_len]))
                continue
            data = _payload(rng)
            directory = rng.choice(dirs)
            if choice < 0.3 and known:
                # Atomic replace of an acknowledged file (tempfile + rename): old or new content, never a mix.
                path = rng.choice(sorted(known))
                tmp = path + ".tmp"
                record(op="replace", path=path, state="begin", old=sha256(known[path]), new=sha256(data))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, data)
                finish(fd)
                os.rename(tmp, path)
                if durable:
                    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
                    os.fsync(dfd)
                    os.close(dfd)
            elif choice < 0.4 and known:
                # Rewrite in place (O_TRUNC).
                path = rng.choice(sorted(known))
                record(op="rewrite", path=path, state="begin")
                fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
                os.write(fd, data)
                finish(fd)
            else:
                path = os.path.join(directory, f"f{i}")
                record(op="create", path=path, state="begin")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view[: 1 << 18]):]
                finish(fd, directory)
            known[path] = data
            record(op="done", path=path, state="ack", sha256=sha256(data), size=len(data))
    except OSError as e:
        record(op="error", state="error", error=errno.errorcode.get(e.errno, str(e.errno)))


def verify_acks(ack_path: str):
    """Checks the mount against the writer's acknowledgements; returns (checked, problems)."""
    last = {}  # path -> last record
    acked = {}  # path -> last acknowledged record
    for line in Path(ack_path).read_text().splitlines():
        rec = json.loads(line)
        if "path" not in rec:
            continue
        last[rec["path"]] = rec
        if rec["state"] == "ack":
            acked[rec["path"]] = rec
    problems = []
    checked = 0
    for path, rec in sorted(last.items()):
        before = acked.get(path)
        if rec["state"] == "ack" or rec["op"] == "append":
            expected = acked.get(path)
            if expected is None:
                continue
            try:
                content = read_file(path)
            except OSError as e:
                problems.append(f"{path}: acknowledged but reading fails: {e}")
                continue
            checked += 1
            if rec["op"] == "append" or expected["op"] == "append":
                # The log may hold more than was acknowledged, never less, and its prefix must be exact.
                if len(content) < expected["length"] or sha256(content[: expected["length"]]) != expected["sha256"]:
                    problems.append(f"{path}: acknowledged log prefix of {expected['length']} bytes lost or wrong "
                                    f"(file has {len(content)} bytes)")
            elif sha256(content) != expected["sha256"]:
                problems.append(f"{path}: content differs from the acknowledged version "
                                f"({len(content)} bytes, expected {expected['size']})")
        elif rec["op"] == "replace" and before is not None:
            # In flight at the crash: rename is atomic, so the old or the new content, nothing else.
            try:
                digest = sha256(read_file(path))
            except OSError as e:
                problems.append(f"{path}: replace in flight at the crash, now unreadable: {e}")
                continue
            checked += 1
            if digest not in (rec["old"], rec["new"]):
                problems.append(f"{path}: replace in flight at the crash left neither the old nor the new content")
    return checked, problems


def burst_main(root: str, ack_path: str, mode: str, seed: int):
    """A burst of small creates and unlinks in `root` (as `tar x`, `rm -rf`, a build): JSON lines to `ack_path`,
    {"op": "create"|"unlink", "path", "state": "begin"} before each and {"state": "ack", ...} once close or fsync
    (of the file, then of the directory for an unlink) returned."""
    rng = random.Random(seed)
    ack = open(ack_path, "a", buffering=1)
    live = []
    try:
        for i in range(1_000_000):
            if live and rng.random() < 0.4:
                path = live.pop(rng.randrange(len(live)))
                ack.write(json.dumps({"op": "unlink", "path": path, "state": "begin"}) + "\n")
                os.unlink(path)
                if mode == "fsync":
                    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
                    os.fsync(dfd)
                    os.close(dfd)
                ack.write(json.dumps({"op": "unlink", "path": path, "state": "ack"}) + "\n")
                continue
            path = os.path.join(root, f"f{i}")
            data = rng.randbytes(rng.choice([1, 100, 4096, 10_000]))
            ack.write(json.dumps({"op": "create", "path": path, "state": "begin", "sha256": sha256(data)}) + "\n")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            if mode == "fsync":
                os.fsync(fd)
            os.close(fd)
            ack.write(json.dumps({"op": "create", "path": path, "state": "ack", "sha256": sha256(data)}) + "\n")
            live.append(path)
    except OSError as e:
        ack.write(json.dumps({"op": "error", "state": "error", "error": errno.errorcode.get(e.errno, str(e.errno))})
                  + "\n")


def verify_burst(ack_path: str, mode: str):
    """Checks the mount against `burst_main`'s acknowledgements; returns (checked, problems). An acknowledged
    file holds what was acknowledged; one in flight at the crash is absent, empty or whole, never torn; one whose
    unlink was acknowledged (with the directory fsynced) is gone."""
    last = {}
    for line in Path(ack_path).read_text().splitlines():
        rec = json.loads(line)
        if "path" in rec:
            last[rec["path"]] = rec
    problems = []
    checked = 0
    for path, rec in sorted(last.items()):
        content = read_or_none(path)
        checked += 1
        if rec["op"] == "create" and rec["state"] == "ack":
            if content is None or sha256(content) != rec["sha256"]:
                problems.append(f"{path}: acknowledged, now {'missing' if content is None else 'different'}")
        elif rec["op"] == "create":
            if content not in (None, b"") and sha256(content) != rec["sha256"]:
                problems.append(f"{path}: in flight at the crash, now torn ({len(content)} bytes)")
        elif rec["state"] == "ack" and mode == "fsync" and content is not None:
            problems.append(f"{path}: its unlink was acknowledged and fsynced, yet it is back")
    return checked, problems


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] in ("writer", "burst"):
        main = writer_main if sys.argv[1] == "writer" else burst_main
        main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit("usage: helpers.py writer|burst ROOT ACKFILE fsync|close SEED")
