"""Drives tests/faults/lazyfs.py mounted over a node's store: mount, power loss, disk faults (EIO, ENOSPC), heal.
Used by tests/integration/test_power_loss.py and the fault harness's `powerloss`, `eio` and `enospc` faults."""

import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from helpers import is_mounted, lazy_unmount, wait_until  # noqa: E402

LAZYFS = str(Path(__file__).resolve().with_name("lazyfs.py"))
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-fusepy
SIGNALS = {"eio": signal.SIGUSR2, "enospc": signal.SIGRTMIN, "heal": signal.SIGRTMIN + 1}


def fusepy_missing():
    """Why lazyfs cannot run here, or None."""
    if os.path.exists(SYSTEM_PYTHON) and subprocess.run([SYSTEM_PYTHON, "-c", "import fusepy"]).returncode == 0:
        return None
    return "python3-fusepy is missing (mount-helpers/deps.sh installs it)"


class LazyStore:
    """lazyfs.py mounted over `mountpoint`, its data in `backing`; its output appended to `log`."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path):
        self.backing, self.mountpoint, self.log, self.proc = Path(backing), Path(mountpoint), Path(log), None

    def mount(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([SYSTEM_PYTHON, LAZYFS, str(self.backing), str(self.mountpoint)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if not wait_until(lambda: is_mounted(self.mountpoint) or self.proc.poll() is not None, 20) \
                or self.proc.poll() is not None:
            raise AssertionError(f"lazyfs did not mount {self.mountpoint}: {self.tail()}")

    def tail(self, lines=5):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def power_loss(self):
        """Unsynced writes undone, the file system gone (its mount left dead, then unmounted)."""
        self.proc.send_signal(signal.SIGUSR1)
        self.proc.wait(timeout=60)
        lazy_unmount(self.mountpoint)
        assert wait_until(lambda: not is_mounted(self.mountpoint), 10), f"{self.mountpoint} still mounted"
        return self.tail(1)

    def disk(self, state):
        """`eio` (a failing disk), `enospc` (a full one) or `heal`."""
        self.proc.send_signal(SIGNALS[state])

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mountpoint):
            lazy_unmount(self.mountpoint)
