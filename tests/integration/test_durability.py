"""Crash safety (issue 2, "Crash safety"): nothing that fsync or close acknowledged is lost when the daemon is
killed with SIGKILL; a file held open and written is visible to others within about a second."""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import current_revision, history, read_file, verify_acks, verify_burst, wait_until

HELPERS = str(Path(__file__).with_name("helpers.py"))
ROUNDS = 3
ACKS_PER_ROUND = 60


def start_writer(root, ack_file, mode, seed):
    return subprocess.Popen([sys.executable, HELPERS, "writer", root, str(ack_file), mode, str(seed)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def count_acks(ack_file):
    try:
        return Path(ack_file).read_text().count('"state": "ack"')
    except FileNotFoundError:
        return 0


def verify_rounds(acks, label):
    """Every round so far must still read back: recovery must not damage earlier rounds."""
    for ack in acks:
        checked, problems = verify_acks(ack)
        print(f"{label}: {checked} acknowledged files from {ack.name} verified")
        assert not problems, f"{label}:\n" + "\n".join(problems)
        assert checked >= 10, f"only {checked} acknowledged files checked from {ack}"


@pytest.mark.parametrize("mode", ["fsync", "close"])
@pytest.mark.timeout(600)
def test_kill9_loses_nothing_acknowledged(make_node, node_dir, mode):
    node = make_node()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    acks = []
    for round_ in range(ROUNDS):
        ack_file = node_dir / f"acks-{round_}.jsonl"  # outside the mount
        acks.append(ack_file)
        root = node.p(f"round{round_}")
        os.mkdir(root)
        writer = start_writer(root, ack_file, mode, seed + round_)
        try:
            reached = wait_until(lambda: count_acks(ack_file) >= ACKS_PER_ROUND or writer.poll() is not None, 120)
            assert reached and writer.poll() is None, \
                f"writer stopped early (seed {seed}): {writer.stdout.read().decode(errors='replace')}\n" \
                f"{Path(ack_file).read_text()[-2000:]}"
            time.sleep(rng.random() * 0.05)  # land anywhere in the next operation
            node.kill9()
            try:
                writer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
                pytest.fail("the writer hung on the dead mount after the daemon was killed")
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        node.start()
        verify_rounds(acks, f"{mode} round {round_} (seed {seed})")
    fsck = node.cli("fsck", check=False, timeout=300)
    assert fsck.returncode == 0, f"fsck after kill -9 exited {fsck.returncode}:\n{fsck.stdout}\n{fsck.stderr}"


@pytest.mark.parametrize("mode", ["fsync", "close"])
@pytest.mark.timeout(600)
def test_kill9_during_burst_of_creates_and_unlinks(make_node, node_dir, mode):
    """Issue 22: four writers create and unlink small files at once (several in flight, as `tar x` or `rm -rf`),
    the daemon is killed right after acknowledgements; every acknowledged file is there after the restart, none
    in flight is torn, and none whose unlink was fsynced comes back."""
    node = make_node()
    seed = random.randrange(1 << 30)
    acks = [node_dir / f"burst-{i}.jsonl" for i in range(4)]  # outside the mount
    writers = []
    for i, ack in enumerate(acks):
        os.mkdir(node.p(f"w{i}"))
        writers.append(subprocess.Popen(
            [sys.executable, HELPERS, "burst", node.p(f"w{i}"), str(ack), mode, str(seed + i)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        reached = wait_until(lambda: all(count_acks(a) >= 100 for a in acks)
                             or any(w.poll() is not None for w in writers), 180)
        assert reached and all(w.poll() is None for w in writers), \
            f"a writer stopped early (seed {seed}): " + " | ".join(Path(a).read_text()[-300:] for a in acks)
        node.kill9()
        for w in writers:
            w.wait(timeout=30)
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    node.start()
    for ack in acks:
        checked, problems = verify_burst(ack, mode)
        print(f"{mode} (seed {seed}): {checked} paths from {ack.name} verified")
        assert not problems, f"{mode} (seed {seed}):\n" + "\n".join(problems)
        assert checked >= 30, f"only {checked} paths checked from {ack}"
    fsck = node.cli("fsck", check=False, timeout=300)
    assert fsck.returncode == 0, f"fsck after kill -9 exited {fsck.returncode}:\n{fsck.stdout}\n{fsck.stderr}"


def test_staging_recovered_after_kill_with_open_file(make_node):
    """A file open for writing when the daemon dies: no crash at restart, fsck clean, its acknowledged
    (fsynced) first part intact."""
    node = make_node()
    path = node.p("open.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first part\n")
        os.fsync(fd)
        os.write(fd, b"unacknowledged tail\n")
        node.kill9()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN from the dead mount
    node.start()
    content = read_file(path)
    assert content.startswith(b"first part\n"), f"fsynced data lost: {content!r}"
    assert content in (b"first part\n", b"first part\nunacknowledged tail\n"), f"torn content: {content!r}"
    fsck = node.cli("fsck", check=False, timeout=300)
    assert fsck.returncode == 0, f"fsck exited {fsck.returncode}:\n{fsck.stdout}\n{fsck.stderr}"


def test_each_fsync_of_an_append_loop_survives_a_kill_right_after_it(make_node):
    """Issue 22, item 4: the revision an fsync returned for is there after a kill -9 right after it, also when
    the file's last chunk is rewritten with the same bytes (stored as its base), one byte longer or one shorter
    than its base (a delta, never the base)."""
    node = make_node()
    path = node.p("appended")
    rng = random.Random(22)
    expected = b""
    steps = ["append"] * 20 + ["same", "longer", "shorter"]
    for step in steps:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if step == "append":
                block = rng.randbytes(4096)
                os.pwrite(fd, block, len(expected))
                expected += block
            elif step == "same":
                os.pwrite(fd, expected[-4096:], len(expected) - 4096)
            elif step == "longer":
                os.pwrite(fd, b"x", len(expected))
                expected += b"x"
            else:
                os.ftruncate(fd, len(expected) - 1)
                expected = expected[:-1]
            os.fsync(fd)
            revision = current_revision(path)
        finally:
            os.close(fd)
        if step != "append" or len(expected) % (32 << 10) == 0:
            node.kill9()
            node.start()
            assert read_file(path) == expected, f"after {step}: the fsynced content is not what was written"
            assert current_revision(path) == revision, f"after {step}: the fsynced revision is not the current one"


FOLLOWER = r"""
import os, sys, time
path, want, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    if os.stat(path).st_size >= want:
        print(time.monotonic()); sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
"""


@pytest.mark.timeout(120)
def test_open_file_visible_without_close(node):
    """Contract: a file held open while written (a log) gets a revision at least once a second."""
    path = node.p("app.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = 0
        for i in range(3):
            line = b"event %d %s\n" % (i, b"x" * 40)
            os.write(fd, line)
            written += len(line)
            t0 = time.monotonic()
            # Another process sees the new size within ~1.5 s.
            follower = subprocess.run([sys.executable, "-c", FOLLOWER, path, str(written), "1.5"],
                                      capture_output=True, text=True, timeout=30)
            assert follower.returncode == 0, f"size {written} not visible to another process within 1.5 s"
            # And the store has a revision holding it (what other nodes and `hypernet cat` see).
            committed = wait_until(lambda: history(path) and history(path)[0][3] >= written, 2.0 - (time.monotonic() - t0))
            assert committed, f"no revision with {written} bytes within 2 s of the write, file still open: " \
                              f"{history(path)[:3]}"
            shown = node.cli("cat", path, text=False).stdout
            assert len(shown) >= written and shown[:written] == read_file(path)[:written], \
                f"`hypernet cat` shows {len(shown)} bytes, not the {written} written"
            time.sleep(0.3)
        rev = current_revision(path)
        time.sleep(2.5)
        assert current_revision(path) == rev, "an idle open file keeps making revisions"
    finally:
        os.close(fd)
