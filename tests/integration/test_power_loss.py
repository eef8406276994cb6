"""Power loss (issue 21, item 2): the node's store lives on tests/faults/lazyfs.py, which forgets every write
not yet fsynced when told the power went. After a power loss at a random point of a writer's run, every file
whose fsync returned reads back exactly, the store opens without repair and fsck finds nothing; earlier rounds
stay intact. (Only fsync promises survival of a power loss: a close acknowledges against a crash of the
daemon, not of the machine, so the writer fsyncs.)"""

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import is_mounted, lazy_unmount, wait_until
from test_durability import count_acks, start_writer, verify_rounds

LAZYFS = str(Path(__file__).resolve().parent.parent / "faults" / "lazyfs.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-fusepy
ROUNDS = 3
ACKS_PER_ROUND = 40


class LazyStore:
    """lazyfs.py mounted over `mountpoint`, its data in `backing`."""

    def __init__(self, backing: Path, mountpoint: Path):
        self.backing, self.mountpoint, self.proc = backing, mountpoint, None

    def mount(self):
        self.proc = subprocess.Popen([SYSTEM_PYTHON, LAZYFS, str(self.backing), str(self.mountpoint)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not wait_until(lambda: is_mounted(self.mountpoint) or self.proc.poll() is not None, 20) \
                or self.proc.poll() is not None:
            output = self.proc.stdout.read().decode(errors="replace") if self.proc.poll() is not None else ""
            pytest.fail(f"lazyfs did not mount {self.mountpoint}: {output}")

    def power_loss(self):
        """Unsynced writes undone, the file system gone (its mount left dead, then unmounted)."""
        self.proc.send_signal(signal.SIGUSR1)
        self.proc.wait(timeout=60)
        lazy_unmount(self.mountpoint)
        assert wait_until(lambda: not is_mounted(self.mountpoint), 10), f"{self.mountpoint} still mounted"
        return self.proc.stdout.read().decode(errors="replace").strip()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mountpoint):
            lazy_unmount(self.mountpoint)


def require_fusepy():
    if not (os.path.exists(SYSTEM_PYTHON) and subprocess.run([SYSTEM_PYTHON, "-c", "import fusepy"]).returncode == 0):
        pytest.fail("python3-fusepy is missing (mount-helpers/deps.sh installs it)")


def test_lazyfs_forgets_what_was_not_fsynced_and_keeps_what_was(node_dir):
    require_fusepy()
    lazy = LazyStore(node_dir / "backing", node_dir / "mnt")
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


@pytest.mark.timeout(600)
def test_a_power_loss_keeps_everything_fsync_acknowledged(make_node, node_dir):
    require_fusepy()
    node = make_node(start=False)
    store = node.home / "store"
    store.mkdir(parents=True, mode=0o700)
    node.home.chmod(0o700)
    lazy = LazyStore(node.dir / "store-backing", store)
    lazy.backing.mkdir(mode=0o700)
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
