"""Garbage collection and pack compaction (docs/store-format.md, "Compaction"; docs/cli.md, gc): `hypernet gc`
rewrites the packs whose dead share passes the threshold and gives the space back; a kill -9 at any step of a
compaction loses nothing and leaves fsck clean; reads and writes go on during one; the space limits (`--max-store-size`
and a nearly full disk) give ENOSPC and let the node write again once gc made room.

Dead records are what failed writes, duplicates and unused pushed chunks leave: records no catalog row names, in the
middle of a pack. `make_garbage` puts an exact amount of them into a stopped node's last pack, followed by one record
a row names (a chunk written and not yet listed by a revision, `store-format.md`, "Catalog"), so that a start does not
cut them off as the unnamed end of the pack."""

import errno
import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from loopdisk import loop_missing, node_store_on_loop_disk  # noqa: E402

SIZE = 4 << 20
FILES = 4
RECORD = 36 + (64 << 10)  # a dead record: u32 length, chunk id, 64 KiB of ciphertext
DEAD = 256 * RECORD  # about 16 MiB

needs_failpoints = pytest.mark.skipif(
    not helpers.has_failpoints(helpers.hypernet_bin()),
    reason="the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")


def make_garbage(node, files=FILES, dead=DEAD) -> dict:
    """Writes `files` random files of SIZE through the running node, stops it, and appends `dead` bytes of records
    no row names to its last pack, then one record a row names. Returns the files' contents; the node is stopped."""
    written = {f"file{i}": os.urandom(SIZE) for i in range(files)}
    for name, data in written.items():
        helpers.write_file(node.p(name), data, fsync=True)
    node.stop()
    pack = sorted((node.home / "store" / "packs").glob("*.pack"))[-1]
    with open(pack, "ab") as f:
        for _ in range(dead // RECORD):
            ciphertext = os.urandom(RECORD - 36)
            f.write(struct.pack("<I", len(ciphertext)) + hashlib.blake2b(ciphertext, digest_size=32).digest()
                    + ciphertext)
        named = os.urandom(1000)
        offset = f.tell()
        chunk = hashlib.blake2b(named, digest_size=32).digest()
        f.write(struct.pack("<I", len(named)) + chunk + named)
        f.flush()
        os.fsync(f.fileno())
    catalog = sqlite3.connect(node.home / "store" / "catalog.sqlite")
    with catalog:
        catalog.execute("INSERT INTO chunks (id, pack, offset, length) VALUES (?, ?, ?, ?)",
                        (chunk, int(pack.stem), offset, len(named)))
    catalog.close()
    return written


def read_uncached(path) -> bytes:
    """The file's bytes from the daemon, not from the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_files(node, files):
    for name, data in files.items():
        assert read_uncached(node.p(name)) == data, f"{name} differs"


def check_and_stop(node, files):
    """Every file reads back exactly; then, with the daemon stopped, fsck (opening the store itself) is clean."""
    check_files(node, files)
    node.stop()
    fsck_clean(node)


def check_across_a_restart(node, files):
    check_files(node, files)
    fsck_clean(node)
    node.restart()
    check_and_stop(node, files)


def gc(node, *args, check=True):
    proc = node.cli("gc", "--json", *args, check=check, timeout=300)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc


def fsck_clean(node):
    proc = node.cli("fsck", check=False, timeout=300)
    assert proc.returncode == 0, f"fsck exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def test_gc_returns_the_dead_bytes_and_keeps_every_file(make_node):
    node = make_node()
    files = make_garbage(node)
    node.start()

    sizes = helpers.pack_sizes(node.home)
    measured = gc(node, "--dry-run")
    assert measured["dryRun"] and measured["packsDue"] == 1, measured
    assert measured["deadBytes"] >= DEAD, measured
    assert helpers.pack_sizes(node.home) == sizes, "a dry run changed the packs"

    before = node.pack_bytes()
    report = gc(node)
    after = node.pack_bytes()
    assert report["packsRewritten"] == 1 and not report["dryRun"], report
    assert report["bytesReclaimed"] >= measured["deadBytes"] * 0.95, (measured, report)
    assert before - after >= measured["deadBytes"] * 0.95, f"{before} -> {after} bytes in packs: {report}"
    assert gc(node)["packsRewritten"] == 0, "a second pass found more to rewrite"
    check_across_a_restart(node, files)


def test_gc_without_a_daemon_compacts_the_store_directly(make_node):
    node = make_node()
    files = make_garbage(node)
    before = node.pack_bytes()
    proc = node.cli("gc", timeout=300)
    assert proc.stdout.startswith("reclaimed ") and "rewrote 1 of 1 packs" in proc.stdout, proc.stdout
    assert node.pack_bytes() <= before - DEAD
    fsck_clean(node)
    node.start()
    check_files(node, files)


@needs_failpoints
@pytest.mark.parametrize("step", ["compact.copy", "compact.switch", "compact.remove"])
@pytest.mark.log_errors(r"failpoint compact\.")
def test_a_kill_at_each_compaction_step_loses_nothing(make_node, monkeypatch, step):
    """The daemon dies (SIGKILL) at the step; after a restart every file reads back exactly, fsck is clean, and
    the dead space is given back (by the restart finishing the compaction, or by the next pass)."""
    node = make_node()
    files = make_garbage(node)
    monkeypatch.setenv("HYPERNET_FAILPOINT", f"{step}:panic")
    node.start()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    dead = gc(node, "--dry-run")["deadBytes"]
    before = node.pack_bytes()

    proc = gc(node, check=False)
    assert isinstance(proc, subprocess.CompletedProcess), f"gc survived the failpoint: {proc}"
    assert f"failpoint {step}: panic" in node.log_text()
    node.reap()

    node.start()
    check_files(node, files)
    fsck_clean(node)
    gc(node)
    assert node.pack_bytes() <= before - dead * 0.95, f"{before} -> {node.pack_bytes()} bytes, {dead} were dead"
    check_and_stop(node, files)


@needs_failpoints
def test_reads_and_writes_go_on_during_a_compaction(make_node, monkeypatch):
    node = make_node()
    files = make_garbage(node)
    # Each record copied takes 20 ms more: the pass lasts seconds, long enough to read and write meanwhile.
    monkeypatch.setenv("HYPERNET_FAILPOINT", "compact.copy:sleep(20)")
    node.start()
    monkeypatch.delenv("HYPERNET_FAILPOINT")

    collector = subprocess.Popen([node.bin, "--home", str(node.home), "gc", "--json"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        rounds = 0
        written = {}
        while collector.poll() is None:
            check_files(node, files)
            data = os.urandom(300_000)
            written[f"during{rounds}"] = data
            helpers.write_file(node.p(f"during{rounds}"), data, fsync=True)
            rounds += 1
        out, err = collector.communicate(timeout=300)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    assert collector.returncode == 0, err
    assert json.loads(out)["packsRewritten"] == 1, out
    assert rounds >= 2, f"the compaction ended before the reads could overlap it ({rounds} rounds)"
    files.update(written)
    check_across_a_restart(node, files)


# While the store is full, the commits at close and the passes fail and say so in the log.
FULL_ERRORS = r"(commit at release|pending revision|directory revision|periodic commit) failed"


def start_limited(node, size):
    node.running = True  # set first: a half-started daemon must still be cleaned up
    node.cli("mount", node.mount, "--max-store-size", size)
    node.read_pid()


@pytest.mark.log_errors(FULL_ERRORS)
def test_max_store_size_gives_enospc_reads_go_on_and_gc_makes_room_without_a_restart(make_node):
    node = make_node()
    files = make_garbage(node)  # 16 MiB live, 16 MiB dead
    start_limited(node, "40M")
    for i in range(40):  # fill the store up to its limit
        data = os.urandom(1 << 20)
        try:
            helpers.write_file(node.p(f"fill-{i}"), data, fsync=True)
        except OSError as e:
            assert e.errno == errno.ENOSPC, f"a write past the limit gave {e!r}"
            break
        files[f"fill-{i}"] = data
    else:
        pytest.fail("40 MiB more fitted in a store bounded to 40 MiB")
    assert node.is_mounted()
    check_files(node, files)
    assert node.log_text().count("the store reached its size limit (--max-store-size 41943040 bytes") == 1

    dead = gc(node, "--dry-run")["deadBytes"]
    assert gc(node)["bytesReclaimed"] >= dead * 0.95 >= DEAD * 0.95
    more = os.urandom(1 << 20)
    helpers.write_file(node.p("after-gc"), more, fsync=True)
    files["after-gc"] = more
    check_across_a_restart(node, files)


@pytest.mark.skipif(bool(loop_missing()), reason=f"no loop-mounted file system here: {loop_missing()}")
@pytest.mark.log_errors(FULL_ERRORS)
def test_a_nearly_full_disk_gives_enospc_before_it_is_full_and_gc_makes_room_without_a_restart(make_node):
    """The store on a 128 MiB ext4, which a node keeps 8 MiB of free: once another writer leaves 12 MiB, a 6 MiB write
    fails with ENOSPC while the file system still has room; reads go on; gc (8 MiB live to copy, 8 MiB dead) makes
    room and the same write then succeeds without a restart."""
    node = make_node(start=False)
    store = node.home / "store"
    with node_store_on_loop_disk(node, 128 << 20):
        node.start()
        files = make_garbage(node, files=2, dead=128 * RECORD)
        node.start()

        def free():
            st = os.statvfs(store)
            return st.f_bavail * st.f_frsize

        with open(store / "filler", "wb") as f:  # another writer takes all but 12 MiB
            left = free() - (12 << 20)
            while left > 0:
                left -= f.write(b"\0" * min(left, 1 << 20))
            f.flush()
            os.fsync(f.fileno())

        with pytest.raises(OSError) as refused:
            helpers.write_file(node.p("big"), os.urandom(6 << 20), fsync=True)
        assert refused.value.errno == errno.ENOSPC, f"a write on a nearly full disk gave {refused.value!r}"
        assert free() >= 8 << 20, f"the node let the disk fill up: {free()} bytes free"
        assert "the disk holding the store is nearly full" in node.log_text()
        assert node.is_mounted()
        check_files(node, files)

        assert gc(node)["packsRewritten"] == 1
        big = os.urandom(6 << 20)
        helpers.write_file(node.p("big"), big, fsync=True)
        files["big"] = big
        check_files(node, files)
        fsck_clean(node)
        node.stop()
        os.unlink(store / "filler")
        node.start()
        check_and_stop(node, files)

