"""The `hypernet` command line: init/id/status, errors and their exit codes (docs/cli.md), the
log/cat/restore round trip, and the daemon's life cycle (stop, unmount, signals, external unmount)."""

import json
import os
import signal
import stat
import subprocess

import pytest

import helpers
from helpers import Node, pid_alive, wait_until

# Exit codes, docs/cli.md.
USAGE, NO_DAEMON, NOT_HYPERNET_PATH, UNKNOWN_REVISION, MOUNTPOINT, ALREADY_RUNNING = 2, 3, 4, 5, 6, 8


def run(home, *args, cwd=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
    return subprocess.run([helpers.hypernet_bin(), "--home", str(home), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL, timeout=timeout)


def assert_fails(proc, code, message):
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {proc.stderr!r}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypernet: "), proc.stderr
    assert message in lines[0], proc.stderr


def save(path, text):
    helpers.write_file(path, text.encode())


# --- without a daemon -------------------------------------------------------------------------------------

def test_init_is_idempotent_and_private(node_dir):
    home = node_dir / "home"
    first = run(home, "init", "--name", "alice")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith("hn1") and len(token.splitlines()) == 1
    again = run(home, "init")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == token
    ident = run(home, "id")
    assert ident.returncode == 0 and ident.stdout.strip() == token
    keys = home / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for key in keys.iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert (home / "store").is_dir()


def test_id_without_init(node_dir):
    assert_fails(run(node_dir / "home", "id"), 1, "hypernet init")


@pytest.mark.parametrize("args", [("status",), ("stop",), ("log", "/tmp"), ("cat", "/tmp/x"),
                                  ("restore", "/tmp/x", "abc"), ("unmount", "/tmp")])
def test_no_daemon_running(node_dir, args):
    home = node_dir / "home"
    assert run(home, "init").returncode == 0
    assert_fails(run(home, *args), NO_DAEMON, "no daemon running")


def test_fsck_without_daemon(node_dir):
    home = node_dir / "home"
    assert_fails(run(home, "fsck"), 7, "hypernet init")
    assert run(home, "init").returncode == 0
    proc = run(home, "fsck")
    assert proc.returncode == 0, proc.stderr
    assert "consistent" in proc.stdout


def test_usage_errors_and_help(node_dir):
    home = node_dir / "home"
    for args in [("mount",), ("frobnicate",), ("mount", node_dir, "--quorum", "0"), ("restore", "/x")]:
        proc = run(home, *args)
        assert proc.returncode == USAGE, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("hypernet: "), proc.stderr
    for command in ["", "init", "mount", "unmount", "stop", "status", "id", "log", "cat", "restore", "fsck"]:
        proc = run(home, *([command] if command else []), "--help")
        assert proc.returncode == 0 and "USAGE" in proc.stdout, (command, proc.stderr)
    assert not home.exists(), "--help and usage errors must not create the home"


def test_missing_mountpoint(node_dir):
    home = node_dir / "home"
    assert_fails(run(home, "mount", node_dir / "nope"), MOUNTPOINT, "does not exist")
    (node_dir / "file").write_text("x")
    assert_fails(run(home, "mount", node_dir / "file"), MOUNTPOINT, "not a directory")
    assert not (home / "daemon.pid").exists()


# --- with a daemon ----------------------------------------------------------------------------------------

def test_status(node):
    proc = node.cli("status")
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert fields["identity"] == node.cli("id").stdout.strip()
    assert len(fields["node"]) == 64
    assert fields["home"] == str(node.home)
    assert fields["mountpoint"] == os.path.realpath(node.mount)
    assert fields["pid"] == str(node.pid)
    assert fields["store"].endswith("bytes in packs")
    assert fields["peers"] == "none"
    assert fields["listen"] == "none"
    assert fields["quorum"] == "1"
    assert fields["replication backlog"] == "0 revisions, 0 bytes"


def test_status_json(node):
    # One JSON object with the fields docs/cli.md lists (issue 20, item 5); the same facts as the lines.
    node.cli("peer", "add", "127.0.0.1:9")
    proc = node.cli("status", "--json")
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    report = json.loads(lines[0])
    assert set(report) >= {"node", "identity", "home", "mountpoint", "pid", "statistics", "filesystem", "quorum",
                           "pins", "peers", "connections", "maxPeers", "backlogRevisions", "backlogBytes"}, report
    assert (report["connections"], report["maxPeers"]) == (0, 32), report  # docs/cli.md: --max-peers defaults to 32
    assert report["identity"] == node.cli("id").stdout.strip()
    assert len(report["node"]) == 64
    assert report["home"] == str(node.home)
    assert report["mountpoint"] == os.path.realpath(node.mount)
    assert report["pid"] == node.pid
    assert set(report["statistics"]) == {"documents", "revisions", "chunks", "packBytes"}
    assert all(isinstance(v, int) for v in report["statistics"].values())
    assert "listen" not in report and "name" not in report
    assert report["quorum"] == 1 and report["pins"] == []
    assert [p["address"] for p in report["peers"]] == ["127.0.0.1:9"]
    assert report["peers"][0]["connected"] is False
    assert report["backlogRevisions"] == 0 and report["backlogBytes"] == 0


def test_init_while_running(node):
    assert node.cli("init").stdout.strip() == node.cli("id").stdout.strip()
    assert node.cli("status").returncode == 0


def test_long_home_path(node_dir):
    # Past the 107 bytes of sun_path the socket is reached through /proc/self/fd/N/control.sock.
    deep = node_dir / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    node = Node(deep, helpers.hypernet_bin())
    assert len(str(node.home / "control.sock")) > 108
    try:
        node.start()
        assert node.cli("status").stdout.startswith("node: ")
        node.stop()
    finally:
        node.cleanup()
    assert not node.problems, node.problems


def test_control_socket_is_private(node):
    mode = os.stat(node.home / "control.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_not_a_hypernet_path(node):
    assert_fails(node.cli("log", "/etc", check=False), NOT_HYPERNET_PATH, "not a Hypernet path: /etc")
    outside = node.dir / "outside.txt"
    outside.write_text("x")
    assert_fails(node.cli("cat", outside, check=False), NOT_HYPERNET_PATH, "not a Hypernet path")
    assert_fails(node.cli("restore", outside, "abc", check=False), NOT_HYPERNET_PATH, "not a Hypernet path")


def test_no_such_file(node):
    assert_fails(node.cli("log", node.p("missing"), check=False), 1, "no such file")


def test_unknown_revision(node):
    save(node.p("f"), "one")
    assert_fails(node.cli("cat", node.p("f"), "--rev", "ffffffffffff", check=False), UNKNOWN_REVISION,
                 "unknown revision")
    assert_fails(node.cli("restore", node.p("f"), "ffffffffffff", check=False), UNKNOWN_REVISION,
                 "unknown revision")
    assert node.cli("cat", node.p("f")).stdout == "one"


def test_busy_mountpoint_and_second_daemon(node, make_node):
    other = make_node(start=False)
    assert_fails(other.cli("mount", node.mount, check=False), MOUNTPOINT, "busy")
    assert not (other.home / "daemon.pid").exists()
    assert_fails(node.cli("mount", other.mount, check=False), ALREADY_RUNNING,
                 f"a daemon is already running for {node.home} (pid {node.pid})")
    assert not helpers.is_mounted(other.mount)


def test_log_names_the_author_me(node):
    # Issue 20, item 5: not the 110-character token, unless asked for.
    path = node.p("mine.txt")
    save(path, "one\n")
    token = node.cli("id").stdout.strip()
    assert node.cli("log", path).stdout.split()[2] == "me"
    assert node.cli("log", path, "--long").stdout.split()[2] == token
    [entry] = json.loads(node.cli("log", path, "--json").stdout)
    assert entry["author"] == token and entry["authorName"] == "me"
    assert entry["revision"] == helpers.current_revision(path)


def test_log_cat_restore_round_trip(node):
    path = node.p("notes.txt")
    for text in ["first\n", "second\n", "third\n"]:
        save(path, text)
    lines = node.cli("log", path).stdout.splitlines()
    assert len(lines) >= 3
    revisions = [line.split()[0] for line in lines]
    assert all(len(r) == 12 and int(r, 16) >= 0 for r in revisions)
    assert len(set(revisions)) == len(revisions)
    # Newest first: each entry's parent is the next line's revision.
    for line, older in zip(lines, revisions[1:]):
        assert line.split()[4:] == [older], line
    assert revisions[0] == helpers.current_revision(path)[:12]
    oldest_with_first = next(r for r in reversed(revisions)
                             if node.cli("cat", path, "--rev", r).stdout == "first\n")

    assert node.cli("cat", path).stdout == "third\n"
    assert node.cli("cat", path, "--rev", revisions[0][:8]).stdout == "third\n"

    made = node.cli("restore", path, oldest_with_first).stdout.strip()
    assert len(made) >= 12 and made != oldest_with_first
    assert helpers.read_file(path) == b"first\n"
    after = node.cli("log", path).stdout.splitlines()
    assert len(after) == len(lines) + 1
    assert after[0].split()[0] == made[:12]
    assert after[0].split()[4:] == [revisions[0]]
    assert helpers.current_revision(path).startswith(made[:12])


def test_relative_paths(node):
    os.mkdir(node.p("d"))
    save(node.p("d", "f"), "x")
    proc = run(node.home, "log", "f", cwd=node.p("d"))
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) >= 1, proc.stderr
    proc = run(node.home, "cat", "../d/./f", cwd=node.p("d"))
    assert proc.returncode == 0 and proc.stdout == "x", proc.stderr
    # The mount root is a Hypernet path too (its history may still be empty: directory revisions lag).
    root = run(node.home, "log", ".", cwd=node.mount)
    assert root.returncode == 0, root.stderr


def test_fsck_through_daemon(node):
    save(node.p("f"), "data")
    proc = node.cli("fsck")
    assert "consistent" in proc.stdout


# --- stopping ---------------------------------------------------------------------------------------------

def assert_stopped(node, pid):
    assert not pid_alive(pid), "the command returned before the daemon exited"
    assert not node.is_mounted()
    assert not (node.home / "daemon.pid").exists()
    assert not (node.home / "control.sock").exists()
    node.running = False


def test_unmount(node):
    save(node.p("kept"), "kept")
    assert_fails(node.cli("unmount", node.dir, check=False), MOUNTPOINT, "not mounted by the daemon")
    pid = node.pid
    node.cli("unmount", node.mount)
    assert_stopped(node, pid)
    node.start()
    assert helpers.read_file(node.p("kept")) == b"kept"


def test_stop_returns_after_exit(node):
    pid = node.pid
    node.cli("stop")
    assert_stopped(node, pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_unmount(node, signum):
    save(node.p("f"), "before signal")
    pid = node.pid
    os.kill(pid, signum)
    assert wait_until(lambda: not pid_alive(pid), 30)
    assert_stopped(node, pid)
    node.start()
    assert helpers.read_file(node.p("f")) == b"before signal"


def test_external_unmount_stops_daemon(node):
    pid = node.pid
    subprocess.run(["fusermount3", "-u", str(node.mount)], check=True, timeout=30)
    assert wait_until(lambda: not pid_alive(pid), 30)
    assert_stopped(node, pid)


def test_foreground(node_dir):
    node = Node(node_dir, helpers.hypernet_bin())
    env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
    proc = subprocess.Popen([node.bin, "--home", str(node.home), "mount", "--foreground", str(node.mount)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_until(node.is_mounted, 30), "foreground daemon did not mount"
        assert node.read_pid() == proc.pid
        save(node.p("f"), "fg")
        node.cli("stop")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        # Only the line naming the home it created (docs/cli.md).
        assert out == b"" and err == f"hypernet: created {node.home}\n".encode()
    finally:
        helpers.end_foreground(proc, node)


# --- issue 14, item 9 ---------------------------------------------------------------------------------------

def test_log_and_cat_take_names_that_are_not_utf8(node):
    # The folder keeps any bytes in a name; the commands turned them into U+FFFD and found nothing.
    path = os.path.join(os.fsencode(node.mount), b"caf\xe9 \xff.txt")
    helpers.write_file(path, b"v1\n")
    helpers.write_file(path, b"v2\n")

    def cli(*args):
        env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
        return subprocess.run([helpers.hypernet_bin(), "--home", str(node.home), *args], capture_output=True,
                              env=env, stdin=subprocess.DEVNULL, timeout=60)

    log = cli("log", path)
    assert log.returncode == 0, log.stderr
    revisions = [line.split()[0] for line in log.stdout.decode().splitlines()]
    assert len(revisions) == 2
    assert cli("cat", path).stdout == b"v2\n"
    assert cli("cat", path, "--rev", revisions[1]).stdout == b"v1\n"
    missing = cli("cat", os.path.join(os.fsencode(node.mount), b"no\xfe"))
    assert missing.returncode == 1 and b"no\xfe" in missing.stderr, missing.stderr


def test_a_user_not_allowed_to_reach_the_daemon_is_told_so(node):
    # It printed "Permission denied" but exited 3, "no daemon running", while one was.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run([*nobody, helpers.hypernet_bin(), "--home", str(node.home), "status"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert_fails(proc, 1, f"not allowed to reach the daemon of {node.home}")
    assert run(node.home, "status").returncode == 0


def test_init_names_the_directories_it_creates(node_dir):
    home = node_dir / "a" / "b" / "home"
    proc = run(home, "init")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("hn1") and len(proc.stdout.splitlines()) == 1, "stdout is the token alone"
    created = [node_dir / "a", node_dir / "a" / "b", home]
    assert proc.stderr.splitlines() == [f"hypernet: created {d}" for d in created]
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in created)
    assert run(home, "init").stderr == "", "a second init created something"
