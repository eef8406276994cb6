"""Sparse files (issue 14, item 6): a truncate or a write far past the end stores no zeros and returns at once;
holes read as zeros, count for nothing in st_blocks, answer SEEK_DATA/SEEK_HOLE as ext4 does, replicate, and
survive a restart; past the format's limit (2^60 bytes) the answer is EFBIG. The time bounds below only catch a
hang (the bug kept the daemon busy for more than ten minutes); they measure nothing."""

import errno
import os
import random
import subprocess

import pytest

from cluster import eventually
from helpers import current_revision, errno_of

HUGE = 999_999_999_999_999  # the issue's `truncate -s`
LIMIT = 1 << 60  # docs/store-format.md, "Holes and the size limit"
HANG = 20  # seconds: a command taking longer is stuck, not slow


def pread(path, offset, count):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)


def pwrite(path, data, offset):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def stored_bytes(path):
    return os.stat(path).st_blocks * 512


def check_sparse(path, pack_growth):
    """The state the huge-truncate test leaves: checked before and after a restart."""
    assert os.stat(path).st_size == HUGE
    assert stored_bytes(path) <= 8192, f"st_blocks counts {stored_bytes(path)} bytes for a file of holes"
    assert pack_growth() < 64 << 10, f"the packs grew by {pack_growth()} bytes for a hole"
    assert pread(path, 0, 6) == b"start\n"
    assert pread(path, HUGE // 2, 1 << 20) == bytes(1 << 20)
    assert pread(path, HUGE - 10, 100) == bytes(10)


@pytest.mark.timeout(120)
def test_a_huge_truncate_returns_at_once_and_stores_nothing(node):
    path = node.p("f")
    with open(path, "wb") as f:
        f.write(b"start\n")
    before = node.pack_bytes()
    subprocess.run(["truncate", "-s", str(HUGE), path], check=True, timeout=HANG)
    # `du` reads st_blocks: a few KiB, not a petabyte.
    du = subprocess.run(["du", "-k", path], check=True, capture_output=True, text=True, timeout=HANG)
    assert int(du.stdout.split()[0]) <= 8, f"du: {du.stdout!r}"
    check_sparse(path, lambda: node.pack_bytes() - before)
    # Other requests and `stop` go on: nothing holds the daemon.
    assert "f" in os.listdir(node.p())
    node.stop(timeout=HANG)
    node.start()
    check_sparse(path, lambda: node.pack_bytes() - before)
    assert subprocess.run([node.bin, "--home", str(node.home), "fsck"], capture_output=True, text=True,
                          timeout=60).returncode == 0


@pytest.mark.timeout(120)
def test_a_write_far_past_the_end_leaves_a_hole(node):
    path = node.p("f")
    pwrite(path, b"head", 0)
    before = node.pack_bytes()
    pwrite(path, b"tail", 1 << 40)
    assert os.stat(path).st_size == (1 << 40) + 4
    assert stored_bytes(path) <= 16384
    assert node.pack_bytes() - before < 64 << 10
    assert pread(path, 0, 8) == b"head" + bytes(4)
    assert pread(path, 1 << 39, 1 << 20) == bytes(1 << 20)
    assert pread(path, (1 << 40) - 2, 10) == bytes(2) + b"tail"
    # Writing into the hole later stores that block only.
    pwrite(path, b"middle", 1 << 30)
    assert pread(path, (1 << 30) - 1, 8) == b"\0middle\0"
    assert stored_bytes(path) <= 24576
    node.restart()
    assert pread(path, (1 << 40) - 2, 10) == bytes(2) + b"tail"
    assert pread(path, (1 << 30) - 1, 8) == b"\0middle\0"
    # The same revision through the history view.
    old = node.p(".hypernet", "revisions", current_revision(path))
    assert pread(old, (1 << 40) - 2, 10) == bytes(2) + b"tail"
    assert pread(old, 1 << 35, 4096) == bytes(4096)


def test_past_the_limit_is_efbig_and_nothing_changes(node):
    path = node.p("f")
    with open(path, "wb") as f:
        f.write(b"kept")
    assert errno_of(os.truncate, path, LIMIT + 1) == "EFBIG"
    assert errno_of(pwrite, path, b"x", LIMIT) == "EFBIG"
    assert os.stat(path).st_size == 4
    assert pread(path, 0, 10) == b"kept"
    os.truncate(path, LIMIT)  # the limit itself is allowed
    assert os.stat(path).st_size == LIMIT
    assert pread(path, LIMIT - 3, 10) == bytes(3)


def seek_map(path, points):
    """(SEEK_DATA, SEEK_HOLE) from each offset, or the errno."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        for p in points:
            row = []
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                try:
                    row.append(os.lseek(fd, p, whence))
                except OSError as e:
                    row.append(errno.errorcode[e.errno])
            out.append((p, *row))
        return out
    finally:
        os.close(fd)


MiB = 1 << 20
# Each step: (what, argument): writes of fresh data at offsets, and truncates.
STEPS = [("write", (0, 5000)), ("truncate", 10 * MiB), ("write", (3 * MiB, 100)), ("write", (8 * MiB + 1, 70000)),
         ("truncate", 9 * MiB + 5), ("write", (5 * MiB - 10, 20)), ("truncate", 12 * MiB + 3)]
POINTS = sorted({0, 1, 4095, 4096, 8191, 8192, MiB, 3 * MiB - 1, 3 * MiB, 3 * MiB + 4096, 5 * MiB - 4097, 5 * MiB,
                 5 * MiB + 4096, 8 * MiB, 8 * MiB + 70001, 9 * MiB, 9 * MiB + 4, 9 * MiB + 5, 10 * MiB, 12 * MiB,
                 12 * MiB + 2, 12 * MiB + 3, 13 * MiB})


def apply(path, fd, step):
    what, argument = step
    if what == "write":
        offset, count = argument
        os.pwrite(fd, random.Random(offset).randbytes(count), offset)
    else:
        os.ftruncate(fd, argument)


@pytest.mark.timeout(120)
def test_seek_data_and_seek_hole_answer_as_ext4(node, tmp_path):
    native, mounted = str(tmp_path / "f"), node.p("f")
    fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in (native, mounted)]
    try:
        for n, step in enumerate(STEPS):
            for p, fd in zip((native, mounted), fds):
                apply(p, fd, step)
            # While written (staged) ...
            assert seek_map(mounted, POINTS) == seek_map(native, POINTS), f"open, after {STEPS[:n + 1]}"
    finally:
        for fd in fds:
            os.close(fd)
    # ... and committed, then after a restart.
    assert seek_map(mounted, POINTS) == seek_map(native, POINTS)
    node.restart()
    assert seek_map(mounted, POINTS) == seek_map(native, POINTS)
    with open(native, "rb") as a, open(mounted, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.timeout(150)
def test_a_sparse_file_replicates(cluster):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    path = a.p("sparse")
    pwrite(path, b"middle", 1 << 40)
    os.truncate(path, HUGE)
    on_b = b.p("sparse")
    eventually(lambda: os.path.exists(on_b) and os.stat(on_b).st_size == HUGE, 10,
               lambda: f"b shows {os.stat(on_b).st_size if os.path.exists(on_b) else 'nothing'} for the sparse file")
    assert pread(on_b, (1 << 40) - 1, 8) == b"\0middle\0"
    assert pread(on_b, 1 << 30, 4096) == bytes(4096)
    assert stored_bytes(on_b) <= 8192
