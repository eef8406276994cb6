"""Power loss during garbage collection (issue 20, item 3): the node's store lives on tests/faults/lazyfs.py,
which forgets every write not yet fsynced when told the power went. `hypernet gc` releases what `last 1` drops
and compacts the packs; the machine stops at a random point of it, the store comes back with only what was
synced, and every retained revision still reads back byte-exact, each released one is refused with one line,
fsck is clean, and the next gc completes the work (docs/store-format.md, "Compaction": crash recovery)."""

import os
import random
import shutil
import subprocess
import threading
import time

import pytest

from test_power_loss import node_on_lazyfs
from test_retention import NAME, cat, gc, needs_failpoints, released

ROUNDS = 4
SAVES = 4
SIZE = 400_000


def save_synced(path, content) -> str:
    """Writes and fsyncs `content` (only fsync promises survival of a power loss); the revision made."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return os.getxattr(path, "user.hypernet.revision").decode()


def verify(node, files: dict, context: str):
    """Each file's last save is current and retained; every save not marked released reads back exactly, a
    released one is refused with one line; fsck is clean."""
    for path, saved in files.items():
        marked = released(node, path)
        revisions = list(saved)
        assert revisions[-1] not in marked, f"{context}: the head of {path} was released"
        for revision, content in saved.items():
            proc = cat(node, path, revision, check=False)
            if revision in marked:
                assert proc.returncode == 1 and proc.stderr.count(b"\n") == 1, f"{context}: {proc}"
            else:
                assert proc.returncode == 0 and proc.stdout == content, \
                    f"{context}: revision {revision[:12]} of {path} differs ({proc.returncode}, {proc.stderr!r})"
    fsck = node.cli("fsck", check=False, timeout=300)
    assert fsck.returncode == 0, f"{context}: fsck exited {fsck.returncode}:\n{fsck.stdout}{fsck.stderr}"


def saves(node, round_, files):
    """SAVES fsynced saves of random content to d/f<round_> (d under `last 1`), recorded in `files`."""
    d = node.p("d")
    if not os.path.isdir(d):
        os.mkdir(d)
        os.setxattr(d, NAME, b"last 1")
    path = os.path.join(d, f"f{round_}")
    files[path] = {}
    for _ in range(SAVES):
        content = os.urandom(SIZE)
        files[path][save_synced(path, content)] = content


def finish(node, files, context):
    """A last gc completes the release: every save but the last of each file is released."""
    gc(node)
    verify(node, files, f"after a last gc ({context})")
    for path, saved in files.items():
        assert released(node, path) == set(list(saved)[:-1]), f"{path}: the last gc did not finish the release"


@pytest.mark.timeout(900)
def test_a_power_loss_during_gc_loses_nothing_retained(make_node, node_dir):
    """A first gc runs to its end and gives the time a pass takes; each later round saves more under `last 1`
    and cuts the power at a random point of a gc (kill -9 of the daemon, then lazyfs forgets what was not
    synced). The seed and each cut's time are printed."""
    node, store, lazy = node_on_lazyfs(make_node)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    files = {}
    try:
        lazy.mount()
        node.start()
        took = None
        for round_ in range(ROUNDS):
            saves(node, round_, files)
            if took is None:
                start = time.monotonic()
                assert gc(node)["retention"]["revisions"] == SAVES - 1
                took = time.monotonic() - start
                continue
            outcome = {}
            runner = threading.Thread(target=lambda: outcome.update(proc=gc(node, check=False)))
            runner.start()
            # A pass walks every revision: about round_ + 1 times the first one's work.
            delay = rng.random() * took * (round_ + 1)
            time.sleep(delay)
            node.kill9()  # the machine stops: the daemon with it ...
            print(f"round {round_}: power loss {delay:.3f} s into gc (seed {seed}):", lazy.power_loss())
            runner.join(timeout=60)
            proc = outcome.get("proc")
            print(f"  gc {'finished first' if isinstance(proc, dict) else 'was cut'} (a full pass took {took:.3f} s)")
            lazy.mount()
            node.start()
            verify(node, files, f"after the power loss of round {round_} (seed {seed}, {delay:.3f} s)")
        finish(node, files, f"seed {seed}")
    finally:
        if node.running:
            node.stop()
        lazy.close()
        shutil.rmtree(lazy.backing, ignore_errors=True)


@needs_failpoints
@pytest.mark.timeout(300)
@pytest.mark.parametrize("step", ["retention.release", "compact.copy", "compact.switch", "compact.remove"])
@pytest.mark.log_errors(r"failpoint (retention|compact)\.")
def test_a_power_loss_at_each_step_of_gc_loses_nothing_retained(make_node, monkeypatch, step):
    """The daemon dies at a step of gc (a failpoint's panic) and the power goes with it: what was not synced is
    forgotten. Every retained revision reads back exactly, fsck is clean, and the next gc finishes."""
    node, store, lazy = node_on_lazyfs(make_node)
    files = {}
    try:
        lazy.mount()
        monkeypatch.setenv("HYPERNET_FAILPOINT", f"{step}:panic")
        node.start()
        monkeypatch.delenv("HYPERNET_FAILPOINT")
        saves(node, 0, files)
        proc = gc(node, check=False)
        assert isinstance(proc, subprocess.CompletedProcess), f"gc survived the failpoint: {proc}"
        assert f"failpoint {step}: panic" in node.log_text()
        node.reap()
        print(lazy.power_loss())
        lazy.mount()
        node.start()
        verify(node, files, f"after a power loss at {step}")
        finish(node, files, step)
    finally:
        if node.running:
            node.stop()
        lazy.close()
        shutil.rmtree(lazy.backing, ignore_errors=True)
