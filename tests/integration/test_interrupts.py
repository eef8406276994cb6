"""Interrupts (issue 16, item 4): a signal to a process waiting in a quorum fsync ends the wait (FUSE_INTERRUPT,
EINTR) instead of leaving the process in uninterruptible sleep; the data stays queued and replicates later."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cluster import eventually
from helpers import read_file

HANG = 20  # seconds: only detects a process that never ends, not a performance bound

# Writes argv[1], says so, then fsyncs; a SIGINT (KeyboardInterrupt) during the fsync exits 3.
WRITER = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, sys.argv[2].encode())
    print("fsync", flush=True)
    try:
        os.fsync(fd)
    except KeyboardInterrupt:
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum, expected", [(signal.SIGINT, 3), (signal.SIGTERM, -signal.SIGTERM)])
def test_a_signal_ends_a_quorum_fsync_and_the_data_replicates_later(cluster, signum, expected):
    # Quorum 2 with no fsync timeout: without interrupts the fsync would wait for the peer forever.
    a = cluster.add("a", quorum=2, fsync_timeout=0)
    b = cluster.add("b", identity=a)
    cluster.start()
    b.stop()

    path = a.p("waiting.txt")
    content = f"written while the peer is away ({signum.name})\n"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, content], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "fsync\n", "the writer did not reach its fsync"
        time.sleep(1)  # into the fsync, which cannot return before b acks
        assert writer.poll() is None, "the quorum-2 fsync returned with the peer stopped"
        writer.send_signal(signum)
        try:
            code = writer.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            a.kill9()  # aborts the connection: the stuck writer ends, the test can clean up
            writer.wait(timeout=HANG)
            pytest.fail(f"{signum.name} did not end a quorum fsync within {HANG} s (process stuck on the mount)")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert code == expected, f"writer ended with {code} after {signum.name}, expected {expected}"
    assert read_file(path) == content.encode(), "the interrupted fsync lost the written content"
    assert a.backlog()[0] >= 1, f"node a: nothing queued for the absent peer:\n{a.status()}"

    b.start()
    cluster.wait_connected(timeout=30)
    eventually(lambda: os.path.exists(b.p("waiting.txt")) and read_file(b.p("waiting.txt")) == content.encode(),
               30, "the content of the interrupted fsync never reached node b")
    eventually(lambda: a.backlog()[0] == 0, 30, lambda: f"node a: backlog stays:\n{a.status()}")
