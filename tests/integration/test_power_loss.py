"""Power loss (issue 21, item 2): the node's store lives on tests/faults/lazyfs.py, which forgets every write
not yet fsynced when told the power went. After a power loss at a random point of a writer's run, every file
whose fsync returned reads back exactly, the store opens without repair and fsck finds nothing; earlier rounds
stay intact. (Only fsync promises survival of a power loss: a close acknowledges against a crash of the
daemon, not of the machine, so the writer fsyncs.)"""

import errno
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_until
from test_durability import count_acks, start_writer, verify_rounds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from lazystore import LazyStore, fusepy_missing  # noqa: E402

ROUNDS = 3
ACKS_PER_ROUND = 40


def require_fusepy():
    missing = fusepy_missing()
    if missing:
        pytest.fail(missing)


def test_lazyfs_forgets_what_was_not_fsynced_and_keeps_what_was(node_dir):
    require_fusepy()
    lazy = LazyStore(node_dir / "backing", node_dir / "mnt", node_dir / "lazyfs.log")
    lazy.backing.mkdir()
    lazy.mountpoint.mkdir()
    try:
        lazy.mount()
        synced, unsynced, grown = (lazy.mountpoint / name for name in ("synced", "unsynced", "grown"))
        for path, data in ((synced, b"kept"), (unsynced, b"lost"), (grown, b"old ")):
            with open(path, "wb", buffering=0) as f:
                f.write(data)
                if path is not unsynced:
                    os.fsync(f.fileno())
        with open(grown, "r+b", buffering=0) as f:
            f.write(b"OLD ")
            f.seek(0, os.SEEK_END)
            f.write(b"and new")
        assert grown.read_bytes() == b"OLD and new", "reads must see unsynced writes before the power loss"
        assert "2 files rolled back" in lazy.power_loss()
        lazy.mount()
        assert (synced.read_bytes(), unsynced.read_bytes(), grown.read_bytes()) == (b"kept", b"", b"old ")
    finally:
        lazy.close()


def test_lazyfs_disk_faults_fail_writes_and_a_failed_fsync_loses_its_writes(node_dir):
    """A failing disk fails writes and fsync with EIO; what a failed fsync did not save is gone at the next power
    loss even after a later fsync succeeds (Linux drops the pages of a failed writeback); a full disk fails writes
    with ENOSPC but syncs what it holds; healed, both work again."""
    require_fusepy()
    lazy = LazyStore(node_dir / "backing", node_dir / "mnt", node_dir / "lazyfs.log")
    lazy.backing.mkdir()
    lazy.mountpoint.mkdir()
    path, probe = lazy.mountpoint / "file", lazy.mountpoint / "probe"

    def probe_fails_with(code):
        try:
            probe.write_bytes(b"x")
        except OSError as e:
            return e.errno == code
        return code is None

    try:
        lazy.mount()
        with open(path, "wb", buffering=0) as f:
            f.write(b"base")
            os.fsync(f.fileno())
            f.seek(0)
            f.write(b"LOST")  # written while the disk works, its fsync fails below
            lazy.disk("eio")
            assert wait_until(lambda: probe_fails_with(errno.EIO), 10), "writes did not fail with EIO"
            with pytest.raises(OSError) as failed:
                os.fsync(f.fileno())
            assert failed.value.errno == errno.EIO
            lazy.disk("enospc")
            assert wait_until(lambda: probe_fails_with(errno.ENOSPC), 10), "writes did not fail with ENOSPC"
            os.fsync(f.fileno())  # a full disk still syncs what it holds
            lazy.disk("heal")
            assert wait_until(lambda: probe_fails_with(None), 10), "writes still fail after healing"
            os.fsync(f.fileno())  # succeeds, but cannot bring back what the failed one dropped
        assert path.read_bytes() == b"LOST"
        assert "1 after a failed fsync" in lazy.power_loss()
        lazy.mount()
        assert path.read_bytes() == b"base"
    finally:
        lazy.close()



def node_on_lazyfs(make_node):
    """A node, not started, whose store directory is lazyfs's mount (not mounted yet) over its own backing."""
    require_fusepy()
    node = make_node(start=False)
    store = node.home / "store"
    store.mkdir(parents=True, mode=0o700)
    node.home.chmod(0o700)
    lazy = LazyStore(node.dir / "store-backing", store, node.dir / "lazyfs.log")
    lazy.backing.mkdir(mode=0o700)
    return node, store, lazy

@pytest.mark.timeout(600)
def test_a_power_loss_keeps_everything_fsync_acknowledged(make_node, node_dir):
    node, store, lazy = node_on_lazyfs(make_node)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    acks = []
    try:
        lazy.mount()
        node.start()
        for round_ in range(ROUNDS):
            ack_file = node_dir / f"acks-{round_}.jsonl"
            acks.append(ack_file)
            root = node.p(f"round{round_}")
            os.mkdir(root)
            writer = start_writer(root, ack_file, "fsync", seed + round_)
            try:
                reached = wait_until(lambda: count_acks(ack_file) >= ACKS_PER_ROUND or writer.poll() is not None,
                                     180)
                assert reached and writer.poll() is None, \
                    f"writer stopped early (seed {seed}): {writer.stdout.read().decode(errors='replace')}"
                time.sleep(rng.random() * 0.05)
                node.kill9()  # the machine stops: the daemon with it ...
                print(lazy.power_loss())  # ... and what the disk had not made durable
                writer.wait(timeout=30)
            finally:
                if writer.poll() is None:
                    writer.kill()
                    writer.wait()
            lazy.mount()
            node.start()
            verify_rounds(acks, f"after power loss {round_ + 1} (seed {seed})")
        fsck = node.cli("fsck", check=False, timeout=300)
        assert fsck.returncode == 0, f"fsck after power losses exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}"
    finally:
        if node.running:
            node.stop()
        lazy.close()
        shutil.rmtree(lazy.backing, ignore_errors=True)


@pytest.mark.timeout(300)
@pytest.mark.log_errors(".")  # the failing disk's errors, then every later sync's and the checkpoint's at stop
def test_after_a_failed_sync_no_later_fsync_succeeds_until_a_restart(make_node, node_dir):
    """fsyncgate (design.md, "A failed sync fails every later one"): once a store sync failed, the pages it did not
    write may be gone while a later fdatasync returns 0, so no later fsync may succeed, nor a checkpoint make the
    catalog name those bytes; a restart opens the store afresh. (No power loss follows: lazyfs undoes a failed
    fsync's writes over later synced ones, more than Linux loses; testing.md, "Power loss".)"""
    node, store, lazy = node_on_lazyfs(make_node)

    def fsync_errno(name, data):
        fd = os.open(node.p(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
            return None
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)

    try:
        lazy.mount()
        node.start()
        assert fsync_errno("f", b"acknowledged") is None
        with open(node.p("f"), "wb") as f:
            f.write(b"committed at close, never synced")
        lazy.disk("eio")
        fd = os.open(node.p("f"), os.O_RDONLY)
        try:
            with pytest.raises(OSError) as failed:
                os.fsync(fd)
            assert failed.value.errno == errno.EIO
        finally:
            os.close(fd)
        lazy.disk("heal")

        def healed():
            try:
                (store / "probe").write_bytes(b"x")
            except OSError:
                return False
            (store / "probe").unlink()
            return True

        assert wait_until(healed, 10), "the disk did not heal"
        assert fsync_errno("g", b"after the failed sync") == errno.EIO, "a sync succeeded after a failed one"
        node.restart()
        assert fsync_errno("h", b"after a restart") is None, "a restart did not make syncs work again"
    finally:
        if node.running:
            node.stop()
        lazy.close()
