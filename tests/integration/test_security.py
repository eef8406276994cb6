"""Security suite (issue 21, item 4), the parts the other suites do not cover already:

- what a node keeps at rest and sends: a marker in a file's content, name, xattr value and symlink target is on
  no wire (every connection of a cluster of two devices of one identity and a storage node, captured with
  tcpdump), nowhere in the storage node's home, and nowhere in either device's packs; the catalog holds the
  current tree in plaintext (docs/security.md, "Threat model"), so the current name is found there (the control
  that the search works), but no replaced name, value or target survives in the stopped store;
- floods and slow senders against a node whose memory is capped by a cgroup (`memory.max`, or v1's
  `memory.limit_in_bytes`): it is never OOM-killed, drops the hostile connections and keeps replicating.

Covered elsewhere and not repeated: the storage node's and a revoked reader's stores and the storage node's
traffic for a shared folder (test_rights.py), forged, replayed and rolled-back revisions and blocks
(test_forgery.py), malformed and flooding peers with an RSS bound (test_hostile_peers.py), `security.*` and
`trusted.*` xattrs and 4,097 user xattrs (test_xattrs.py). Names and limits from the folder, local users
through every path: test_security_limits.py. What each test proves: docs/testing.md, "Security suite".
"""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from cluster import capture_loopback, eventually
from helpers import pid_alive, read_file, wait_until, write_file
from test_hostile_peers import attack_while_replicating, hub, peer_double, replicate  # noqa: F401  (hub: fixture)
from test_forgery import forge, share_with_bob
from test_rights import incompressible_name

pytestmark = pytest.mark.replication


def files_of(root):
    return [p for p in Path(root).rglob("*") if p.is_file()]


def found_in(paths, markers):
    """[(what, path)] for every marker found in any of `paths`."""
    hits = []
    for path in paths:
        data = path.read_bytes()
        hits += [(what, str(path)) for what, marker in markers.items() if marker in data]
    return hits


def marked_state(tag):
    """Random, incompressible markers for one state of the tree: content, file name, xattr value, symlink target."""
    return {f"{tag} content": os.urandom(32), f"{tag} file name": incompressible_name().encode(),
            f"{tag} xattr value": os.urandom(32).hex().encode(),
            f"{tag} symlink target": incompressible_name().encode()}


def write_state(node, state, tag, name=None):
    """Writes (or, with `name`, rewrites and renames) the marked file and its symlink; returns name and content."""
    content = os.urandom(1000) + state[f"{tag} content"] + os.urandom(1000)
    new_name = os.fsdecode(state[f"{tag} file name"])
    if name is not None:
        os.rename(node.p("docs", name), node.p("docs", new_name))
        os.unlink(node.p("docs", "link"))
    write_file(node.p("docs", new_name), content)
    os.setxattr(node.p("docs", new_name), "user.note", state[f"{tag} xattr value"])
    os.symlink(os.fsdecode(state[f"{tag} symlink target"]), node.p("docs", "link"))
    return new_name, content


@pytest.mark.timeout(240)
def test_markers_are_on_no_wire_and_in_no_store_but_the_current_catalog(cluster, node_dir):
    a = cluster.add("a")
    a2 = cluster.add("a2", identity=a)
    c = cluster.add("c", serve=True, pins=[a])
    pcap = Path(node_dir) / "cluster.pcap"
    old, new = marked_state("old"), marked_state("new")
    with capture_loopback(pcap, [n.listen.split(":")[0] for n in cluster.nodes]):
        cluster.start()
        os.mkdir(a.p("docs"))
        old_name, _ = write_state(a, old, "old")
        eventually(lambda: os.path.isdir(a2.p("docs")) and os.listdir(a2.p("docs")) == sorted(["link", old_name]), 20,
                   "a2 does not show what a wrote in docs")
        # Replace every marked thing: the file renamed, rewritten and its xattr set anew; the symlink replaced.
        new_name, new_content = write_state(a, new, "new", name=old_name)
        def shows_new_state():
            try:
                return read_file(a2.p("docs", new_name)) == new_content \
                    and os.readlink(a2.p("docs", "link")).encode() == new["new symlink target"]
            except OSError:
                return False

        eventually(shows_new_state, 20, "a2 does not show the new state")
        time.sleep(1.2)  # the once-a-second pass writes the directory revisions
        revisions = lambda n: {r[0] for r in n.query("SELECT id FROM revisions")}  # noqa: E731
        eventually(lambda: revisions(a) <= revisions(c) and revisions(a) <= revisions(a2), 20,
                   "the storage node or a2 does not hold all of a's revisions")
    cluster.close()  # a stopped store: what a backup or a stolen disk holds

    markers = {**old, **new}
    traffic = pcap.read_bytes()
    assert len(traffic) > 10_000, f"the capture holds only {len(traffic)} bytes"
    assert not found_in([pcap], markers), f"in clear on the wire: {found_in([pcap], markers)}"
    assert not found_in(files_of(c.home), markers), f"in the storage node's home: {found_in(files_of(c.home), markers)}"
    for n in (a, a2):
        packs = files_of(n.home / "store" / "packs")
        assert packs, f"{n.name} has no packs"
        assert not found_in(packs, markers), f"in {n.name}'s packs: {found_in(packs, markers)}"
        store = files_of(n.home / "store")
        # The control: the current name and xattr value are in the catalog, as documented.
        for what in ("new file name", "new xattr value"):
            assert found_in(store, {what: new[what]}), f"the {what} is not in {n.name}'s catalog: the search is blind"
        # The replaced symlink is a deleted document, whose last state the catalog keeps (security.md).
        replaced = {what: marker for what, marker in old.items() if what != "old symlink target"}
        assert not found_in(store, replaced), \
            f"replaced state readable in {n.name}'s stopped store: {found_in(store, replaced)}"


# --- names from peers ------------------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_names_no_file_may_have_from_a_writers_node_are_never_shown(cluster):
    """bob, a writer of alice's shared folder, lists `""`, `.`, `..`, `a/b`, a NUL and 256 bytes in a directory
    revision from a modified node (hypernet-forge hostile-names): a revision he may make, so every node stores it;
    alice's mount and bob's own view show the folder without those names, and every listed name still opens."""
    a, b, c, share, doc, tree, text = share_with_bob(cluster, revoke=False)
    b.stop()
    forged = forge(b, tree, share, "hostile-names", "unused")[0]
    b.start()
    eventually(lambda: a.has_revision(forged) and c.has_revision(forged), 30,
               lambda: f"the forged listing did not reach a and c\n{a.log_tail(10)}")
    eventually(lambda: a.heads(share) == {forged}, 10, lambda: f"a's heads of share: {a.heads(share)}")
    time.sleep(1.5)  # shown by the pass that applies received revisions
    warning = f"directory revision {forged} lists 6 names no file may have: left out"
    # Unfiltered, the empty name alone made `ls` of the folder fail with EIO (the kernel refuses the entry).
    for n, root in [(a, a.p("share")), (b, b.p("@alice", "share"))]:
        names = os.listdir(root)
        assert names == ["doc.txt"], f"{n.name} lists {names!r} in the shared folder"
        assert read_file(os.path.join(root, "doc.txt")) == text
        assert warning in n.log_text(), f"{n.name} logged no {warning!r}\n{n.log_tail(10)}"
    assert [line for line in a.log_text().splitlines() if warning in line][1:] == [], "logged more than once"


# --- memory under a cgroup limit ---------------------------------------------------------------------------------

MEMORY_LIMIT = 128 << 20  # the 64 MiB frame budget, a mount's buffers and the page cache of its pack writes


class MemoryCgroup:
    """A child of this process's memory cgroup (v2 `memory.max`, else v1 `memory.limit_in_bytes`) that a running
    process is moved into; `close` moves whatever is left back to the parent and removes it."""

    def __init__(self, name, limit):
        controllers = Path("/sys/fs/cgroup/cgroup.controllers")
        self.v2 = controllers.exists() and "memory" in controllers.read_text().split()
        own = {line.split(":", 2)[1]: line.strip().split(":", 2)[2].lstrip("/") for line in open("/proc/self/cgroup")}
        self.parent = Path("/sys/fs/cgroup") / own[""] if self.v2 else Path("/sys/fs/cgroup/memory") / own["memory"]
        self.dir = self.parent / name
        try:
            self.dir.mkdir()
        except OSError as e:
            pytest.skip(f"cannot make a memory cgroup under {self.parent}: {e}")
        if self.v2:
            self.set("memory.max", limit)
            self.set("memory.swap.max", 0)
        else:
            self.set("memory.limit_in_bytes", limit)
            self.set("memory.memsw.limit_in_bytes", limit)  # no swapping out of the cap

    def set(self, name, value):
        if (self.dir / name).exists():
            (self.dir / name).write_text(str(value))

    def add(self, pid):
        (self.dir / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        text = (self.dir / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        counts = dict(line.split() for line in text.splitlines() if line.strip())
        return int(counts.get("oom_kill", 0))

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.dir / name).read_text()) if (self.dir / name).exists() else -1

    def close(self):
        for pid in (self.dir / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self.parent / "cgroup.procs").write_text(pid)
        wait_until(lambda: not (self.dir / "cgroup.procs").read_text().split(), 5)
        self.dir.rmdir()


@pytest.mark.timeout(240)
def test_floods_and_slow_senders_leave_a_memory_capped_node_up_and_replicating(hub):
    t, a, b = hub
    cgroup = MemoryCgroup(f"hypernet-security-{os.getpid()}", MEMORY_LIMIT)
    try:
        replicate(a, b, "warm-up", via=t)
        cgroup.add(t.pid)
        double = peer_double()
        log_offset = len(t.log_text())
        # Slow senders fill the frame budget (each sends 16 MiB of a 17 MiB frame, then nothing) while a flood of
        # junk chunks runs, and the honest nodes replicate through t.
        slow = subprocess.Popen([double, "--connect", t.listen, "--mode", "partial-frame", "--connections", "24",
                                 "--parallel", "24", "--sources", "2", "--frame-bytes", str(16 << 20)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            attack, output, rounds = attack_while_replicating(
                t, a, b, "flood", [double, "--connect", t.listen, "--mode", "flood-chunks", "--connections", "60",
                                   "--parallel", "15", "--sources", "4"])
            slow_output, _ = slow.communicate(timeout=120)
        finally:
            if slow.poll() is None:
                slow.kill()
                slow.wait()
        assert attack.returncode == 0, f"flood-chunks: {output}"
        assert slow.returncode == 0, f"partial-frame: {slow_output}"
        assert pid_alive(t.pid), f"t died under a {MEMORY_LIMIT >> 20} MiB cap\n{t.log_tail(20)}"
        assert cgroup.oom_kills() == 0, f"t's cgroup saw {cgroup.oom_kills()} OOM kills"
        replicate(b, a, "after-flood", via=t)
        report = f"peak {cgroup.peak() >> 20} MiB of {MEMORY_LIMIT >> 20}; {rounds} files replicated meanwhile"
        dropped = [line for line in t.log_text()[log_offset:].splitlines() if "peer dropped" in line]
        assert len(dropped) >= 60 + 24 - 3, f"t dropped {len(dropped)} of 84 hostile connections\n{t.log_tail(10)}"
        print(report)
    finally:
        cgroup.close()
