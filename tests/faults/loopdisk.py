"""A small real file system for a node's store: an ext4 image in a sparse file, attached to a loop device and
mounted, that a writer fills to the last block (a full disk as the kernel makes it, where lazyfs.py's `enospc`
only says so). Used by tests/integration/test_full_disk.py and the fault harness's `enospc-real` fault.

This kernel has loop devices but no device-mapper, so there is no dm-flakey: a failing disk (`EIO`) stays
lazyfs's (docs/testing.md, "Power loss and disk faults")."""

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from helpers import is_mounted, wait_until  # noqa: E402

FILLER = "filler"  # the writer's file, at the root of the file system


def loop_missing():
    """Why a loop-mounted file system cannot be made here, or None."""
    if os.geteuid() != 0:
        return "mounting needs root"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    missing = [tool for tool in ("losetup", "mkfs.ext4") if shutil.which(tool) is None]
    return f"{', '.join(missing)} missing" if missing else None


@contextlib.contextmanager
def node_store_on_loop_disk(node, size: int):
    """For the block: the node's store (HOME/store) on a LoopDisk of `size` bytes, yielded mounted; the node is
    stopped and the disk taken down afterwards, whatever happened."""
    store = node.home / "store"
    store.mkdir(parents=True)
    disk = LoopDisk(node.dir / "store.img", store, size)
    try:
        disk.mount()
        yield disk
    finally:
        try:
            if node.running:
                node.stop()
        finally:
            disk.close()


class LoopDisk:
    """An ext4 file system of `size` bytes in `image`, mounted at `mountpoint` (which must exist) by `mount()`,
    taken down with its loop device by `close()` (also after a failure; safe to call twice)."""

    def __init__(self, image: Path, mountpoint: Path, size: int):
        self.image, self.mountpoint, self.size, self.device = Path(image), Path(mountpoint), size, None

    def mount(self):
        with open(self.image, "wb") as f:  # sparse: only what ext4 writes takes room
            f.truncate(self.size)
        # No blocks reserved for root: the daemon runs as root and would write on into them.
        run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
        self.device = run("losetup", "--find", "--show", str(self.image)).strip()
        # discard: blocks freed in the file system are freed in the image too.
        run("mount", "-o", "discard", self.device, str(self.mountpoint))
        return self

    def __enter__(self):
        return self.mount()

    def __exit__(self, *exc):
        self.close()

    def fill(self):
        """Writes the filler file until the file system refuses with ENOSPC, in ever smaller pieces down to one
        block, and syncs it: no block is left free. Returns the bytes written."""
        written = 0
        fd = os.open(self.mountpoint / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            piece = 1 << 20
            while piece >= 4096:
                try:
                    written += os.write(fd, b"\0" * piece)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    piece //= 2
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def free(self):
        """Removes the filler: its blocks are free again."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.mountpoint / FILLER)

    def available(self):
        info = os.statvfs(self.mountpoint)
        return info.f_bavail * info.f_frsize

    def close(self):
        if is_mounted(self.mountpoint):
            # A daemon killed a moment ago may still hold files open: detach lazily rather than fail.
            if subprocess.run(["umount", str(self.mountpoint)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
            wait_until(lambda: not is_mounted(self.mountpoint), 10)
        if self.device is not None:
            subprocess.run(["losetup", "-d", self.device], capture_output=True)
            self.device = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.image)


def run(*args):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout
