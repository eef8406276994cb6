"""A pass-through file system that forgets, on a simulated power loss, every write not yet made durable by
fsync (LazyFS's approach, much reduced). Mounted over a node's store, it lets a test crash the machine under
the daemon at any point and check that what fsync acknowledged survived.

    /usr/bin/python3 tests/faults/lazyfs.py BACKING MOUNTPOINT     # runs in the foreground until unmounted
    kill -USR1 PID                                                 # power loss: undo unsynced writes, exit
    kill -USR2 PID; kill -RTMIN PID; kill -RTMIN+1 PID             # a failing disk (EIO), a full one, healed

Data writes go to the backing file at once (so reads, mmap and other openers see them, as with a page
cache), and the bytes they overwrite are remembered, per file, until that file is fsynced. A power loss
writes the remembered bytes back (newest first), truncates each file to its size at its last fsync, and exits
without unmounting: the test then lazily unmounts the dead mount and mounts a fresh one over the same backing
directory. Metadata operations (create, rename, unlink, mkdir, chmod) are durable at once, so a power loss
keeps a file that was created but never fsynced, empty; it never loses a name. What this does not model
(reordering of metadata against data, torn sectors) is listed in docs/testing.md.

Disk faults, until healed: a failing disk (SIGUSR2) fails every write, truncate, create and fsync with EIO, and
the writes an fsync failed to make durable stay lost at the next power loss even if a later fsync succeeds (as
on Linux, which drops the dirty pages of a failed writeback: "fsyncgate"); a full disk (SIGRTMIN) fails writes,
creates, truncates that grow and mkdir with ENOSPC. Reads always work.

It needs Debian's python3-fusepy (libfuse 2), hence /usr/bin/python3.
"""

import errno
import os
import signal
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations


class PendingFile:
    """What one file's writes since its last fsync overwrote: (offset, old bytes) and the size then."""

    def __init__(self, fd, size):
        self.fd = fd  # our own descriptor (read-write), valid whatever the opener's mode and later renames
        self.size = size
        self.undo = []

    def remember(self, offset, length):
        end = min(offset + length, self.size)
        if offset < end:
            self.undo.append((offset, os.pread(self.fd, end - offset, offset)))

    def roll_back(self):
        for offset, data in reversed(self.undo):
            os.pwrite(self.fd, data, offset)
        os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        os.close(self.fd)


class LazyFS(Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.mutex = threading.Lock()
        self.pending = {}  # (st_dev, st_ino) -> PendingFile
        self.lost = []  # PendingFiles whose fsync failed, oldest first: undone at a power loss whatever came after
        self.fault = None  # errno.EIO (a failing disk), errno.ENOSPC (a full one) or None

    def check(self, *faults):
        """Fails the operation if the disk currently has one of `faults`."""
        if self.fault in faults:
            raise FuseOSError(self.fault)

    def full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def __call__(self, op, path, *args):
        try:
            return super().__call__(op, path, *args)
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO) from None

    # --- the part that forgets --------------------------------------------------------------------------------
    def pending_for(self, fh):
        info = os.fstat(fh)
        key = (info.st_dev, info.st_ino)
        entry = self.pending.get(key)
        if entry is None:
            entry = PendingFile(os.open(f"/proc/self/fd/{fh}", os.O_RDWR), info.st_size)
            self.pending[key] = entry
        return entry

    def write(self, path, data, offset, fh):
        self.check(errno.EIO, errno.ENOSPC)
        with self.mutex:
            self.pending_for(fh).remember(offset, len(data))
            return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        own = fh is None
        if own:
            fh = os.open(self.full(path), os.O_RDWR)
        try:
            with self.mutex:
                entry = self.pending_for(fh)
                current = os.fstat(fh).st_size
                self.check(errno.EIO, *(() if length <= current else (errno.ENOSPC,)))
                if length < current:
                    entry.remember(length, current - length)
                os.ftruncate(fh, length)
        finally:
            if own:
                os.close(fh)

    def fsync(self, path, datasync, fh):
        with self.mutex:
            info = os.fstat(fh)
            entry = self.pending.pop((info.st_dev, info.st_ino), None)
            if self.fault == errno.EIO:
                if entry is not None:
                    self.lost.append(entry)
                raise FuseOSError(errno.EIO)
            os.fsync(fh)
            if entry is not None:
                os.close(entry.fd)

    def power_loss(self):
        with self.mutex:
            # Newest first: what was written since a failed fsync, then what that fsync failed to save.
            entries = [*self.pending.values(), *reversed(self.lost)]
            restored = sum(len(data) for entry in entries for _, data in entry.undo)
            cut = sum(max(0, os.fstat(entry.fd).st_size - entry.size) for entry in entries)
            for entry in entries:
                entry.roll_back()
            print(f"power loss: {len(entries)} files rolled back ({restored} bytes restored, {cut} cut; "
                  f"{len(self.lost)} after a failed fsync)", flush=True)
            os.sync()
            os._exit(0)

    # --- pass-through -------------------------------------------------------------------------------------------
    def open(self, path, flags):
        return os.open(self.full(path), flags)

    def create(self, path, mode, fi=None):
        self.check(errno.EIO, errno.ENOSPC)
        fh = os.open(self.full(path), os.O_RDWR | os.O_CREAT, mode)
        with self.mutex:
            self.pending_for(fh)  # created empty: a power loss before its fsync leaves it empty
        return fh

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsyncdir(self, path, datasync, fh):
        return 0

    def getattr(self, path, fh=None):
        info = os.fstat(fh) if fh is not None else os.lstat(self.full(path))
        return {key: getattr(info, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                    "st_nlink", "st_size", "st_uid", "st_blocks", "st_rdev")}

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self.full(path))]

    def access(self, path, mode):
        if not os.access(self.full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self.full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self.full(path), uid, gid)

    def mkdir(self, path, mode):
        self.check(errno.EIO, errno.ENOSPC)
        os.mkdir(self.full(path), mode)

    def rmdir(self, path):
        os.rmdir(self.full(path))

    def unlink(self, path):
        os.unlink(self.full(path))

    def rename(self, old, new):
        os.rename(self.full(old), self.full(new))

    def link(self, target, source):
        os.link(self.full(source), self.full(target))

    def symlink(self, target, source):
        os.symlink(source, self.full(target))

    def readlink(self, path):
        return os.readlink(self.full(path))

    def mknod(self, path, mode, dev):
        os.mknod(self.full(path), mode, dev)

    def utimens(self, path, times=None):
        os.utime(self.full(path), times)

    def statfs(self, path):
        info = os.statvfs(self.full(path))
        return {key: getattr(info, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                    "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lazyfs.py BACKING MOUNTPOINT")
    fs = LazyFS(sys.argv[1])
    # The signals are taken by a thread of its own: the main thread stays inside libfuse's loop.
    faults = {signal.SIGUSR2: errno.EIO, signal.SIGRTMIN: errno.ENOSPC, signal.SIGRTMIN + 1: None}
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, *faults})

    def wait_for_signals():
        while True:
            received = signal.sigwait({signal.SIGUSR1, *faults})
            if received == signal.SIGUSR1:
                fs.power_loss()
            fs.fault = faults[received]
            print(f"disk fault: {fs.fault and errno.errorcode[fs.fault]}", flush=True)

    threading.Thread(target=wait_for_signals, daemon=True).start()
    FUSE(fs, sys.argv[2], foreground=True, nothreads=False, fsname="lazyfs")


if __name__ == "__main__":
    main()
