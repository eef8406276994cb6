"""Garbage collection and pack compaction (docs/store-format.md, "Compaction"; docs/cli.md, gc): `hypernet gc`
rewrites the packs whose dead share passes the threshold and gives the space back; a kill -9 at any step of a
compaction loses nothing and leaves fsck clean; reads and writes go on during one.

Dead records are made the way a node makes them: two writers store the same new content at once (every commit
held back by the failpoint `catalog.commit:sleep`, so each appends its chunks before either commits), and the second
copy of each chunk is named by no catalog row. So these tests need a test build and skip otherwise."""

import json
import os
import subprocess
import threading

import pytest

import helpers

SIZE = 4 << 20
PAIRS = 4
SLOW_COMMITS = "catalog.commit:sleep(300)"


@pytest.fixture(autouse=True)
def _test_build():
    if not helpers.has_failpoints(helpers.hypernet_bin()):
        pytest.skip("the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")


def make_garbage(node) -> dict:
    """PAIRS pairs of files, each pair written at once with the same content; returns the files' contents."""
    files = {}
    for i in range(PAIRS):
        data = os.urandom(SIZE)
        names = [f"pair{i}-{k}" for k in ("a", "b")]
        writers = [threading.Thread(target=helpers.write_file, args=(node.p(n), data), kwargs={"fsync": True})
                   for n in names]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        files.update({n: data for n in names})
    return files


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


def gc(node, *args, check=True):
    proc = node.cli("gc", "--json", *args, check=check, timeout=300)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc


def fsck_clean(node):
    proc = node.cli("fsck", check=False, timeout=300)
    assert proc.returncode == 0, f"fsck exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def test_gc_returns_the_dead_bytes_and_keeps_every_file(make_node, monkeypatch):
    monkeypatch.setenv("HYPERNET_FAILPOINT", SLOW_COMMITS)
    node = make_node()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    files = make_garbage(node)

    sizes = helpers.pack_sizes(node.home)
    measured = gc(node, "--dry-run")
    assert measured["dryRun"] and measured["packsDue"] == 1, measured
    assert measured["deadBytes"] >= SIZE, f"the concurrent writers left no dead records: {measured}"
    assert helpers.pack_sizes(node.home) == sizes, "a dry run changed the packs"

    before = node.pack_bytes()
    report = gc(node)
    after = node.pack_bytes()
    assert report["packsRewritten"] == 1 and not report["dryRun"], report
    assert report["bytesReclaimed"] >= measured["deadBytes"] * 0.95, (measured, report)
    assert before - after >= measured["deadBytes"] * 0.95, f"{before} -> {after} bytes in packs: {report}"
    check_files(node, files)
    fsck_clean(node)
    assert gc(node)["packsRewritten"] == 0, "a second pass found more to rewrite"

    node.restart()
    check_and_stop(node, files)


def test_gc_without_a_daemon_compacts_the_store_directly(make_node, monkeypatch):
    monkeypatch.setenv("HYPERNET_FAILPOINT", SLOW_COMMITS)
    node = make_node()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    files = make_garbage(node)
    node.stop()
    before = node.pack_bytes()
    proc = node.cli("gc", timeout=300)
    assert proc.stdout.startswith("reclaimed ") and "rewrote 1 of 1 packs" in proc.stdout, proc.stdout
    assert node.pack_bytes() <= before - SIZE
    fsck_clean(node)
    node.start()
    check_files(node, files)


@pytest.mark.parametrize("step", ["compact.copy", "compact.switch", "compact.remove"])
@pytest.mark.log_errors(r"failpoint compact\.")
def test_a_kill_at_each_compaction_step_loses_nothing(make_node, monkeypatch, step):
    """The daemon dies (SIGKILL) at the step; after a restart every file reads back exactly, fsck is clean, and
    the dead space is given back (by the restart finishing the compaction, or by the next pass)."""
    monkeypatch.setenv("HYPERNET_FAILPOINT", f"{SLOW_COMMITS},{step}:panic")
    node = make_node()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    files = make_garbage(node)
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


def test_reads_and_writes_go_on_during_a_compaction(make_node, monkeypatch):
    monkeypatch.setenv("HYPERNET_FAILPOINT", SLOW_COMMITS)
    node = make_node()
    files = make_garbage(node)
    node.stop()
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
    check_files(node, files)
    fsck_clean(node)
    node.restart()
    check_and_stop(node, files)
