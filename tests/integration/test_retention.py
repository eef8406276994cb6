"""Retention policies (issue 20): `hypernet retention PATH [POLICY]` and `user.hypernet.retention`, set on a file
or directory, inherited like the quorum, kept in the document's signed metadata and so replicated to every node
that holds the tree's keys (docs/design.md, "Retention")."""

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone

import pytest

from cluster import eventually
import helpers
from helpers import XATTR_PREFIX, current_revision, errno_of, hx, read_file, write_file

NAME = XATTR_PREFIX + "retention"
DEFAULT = "within 30d daily 180"


def policy(path) -> str:
    return hx(path, "retention").decode()


def test_policy_is_set_inherited_shown_and_removed(node):
    d = node.p("d")
    os.makedirs(os.path.join(d, "sub"))
    write_file(os.path.join(d, "sub", "f"), b"x")
    write_file(node.p("outside"), b"x")
    assert policy(node.p()) == DEFAULT, "the default is not in force where nothing is set"
    assert node.cli("retention", d).stdout == DEFAULT + "\n"

    os.setxattr(d, NAME, b" daily 7,last 2 ")
    assert policy(d) == "last 2 daily 7", "the policy does not read back in its canonical form"
    assert policy(os.path.join(d, "sub", "f")) == "last 2 daily 7", "a file two levels below does not inherit"
    assert policy(node.p("outside")) == DEFAULT
    # The CLI sets the same attribute; a file's own policy wins over its directory's.
    node.cli("retention", os.path.join(d, "sub", "f"), "within", "1y6w")
    assert policy(os.path.join(d, "sub", "f")) == "within 1y42d"
    assert node.cli("retention", os.path.join(d, "sub", "f")).stdout == "within 1y42d\n"
    names = os.listxattr(d)
    assert NAME in names and "hypernet.retention" not in names, f"listxattr shows {names}"
    assert not any(n.startswith("user.") and "retention" in n and n != NAME for n in names)

    node.restart()
    assert policy(os.path.join(d, "sub")) == "last 2 daily 7", "the policy was lost on restart"
    assert policy(os.path.join(d, "sub", "f")) == "within 1y42d"
    os.removexattr(os.path.join(d, "sub", "f"), NAME)
    assert policy(os.path.join(d, "sub", "f")) == "last 2 daily 7", "removing the policy does not restore inheritance"
    assert errno_of(os.removexattr, os.path.join(d, "sub", "f"), NAME) == "ENODATA"


@pytest.mark.parametrize("bad", [b"", b"last 0", b"last", b"forever", b"all last 2", b"within 5", b"\xff"])
def test_bad_policy_is_einval_and_a_usage_error(node, bad):
    path = node.p("f")
    write_file(path, b"x")
    assert errno_of(os.setxattr, path, NAME, bad) == "EINVAL", f"retention {bad!r}"
    assert policy(path) == DEFAULT
    words = bad.decode(errors="replace").split()
    if words:
        proc = node.cli("retention", path, *words, check=False)
        assert proc.returncode == 2, proc
        assert proc.stderr.startswith("hypernet: bad retention policy: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert policy(path) == DEFAULT


def test_the_cli_refuses_a_path_outside_the_mount(node, tmp_path):
    proc = node.cli("retention", tmp_path, "last", "3", check=False)
    assert proc.returncode != 0 and "not a Hypernet path" in proc.stderr, proc


@pytest.mark.replication
@pytest.mark.timeout(150)
def test_a_policy_set_on_one_node_is_in_force_on_the_others(cluster):
    """Set on a: read on b (the same identity, mounted) and on c, a node of the same identity that only serves
    (`hypernet serve`) while the policy is set and is mounted afterwards to read what it holds."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", identity=a, serve=True)
    cluster.start()
    os.makedirs(a.p("d", "sub"))
    write_file(a.p("d", "sub", "f"), b"x")
    a.cli("retention", a.p("d"), "last", "2", "hourly", "24")
    eventually(lambda: os.path.exists(b.p("d", "sub", "f")) and policy(b.p("d", "sub", "f")) == "last 2 hourly 24",
               10, lambda: f"b shows {policy(b.p('d')) if os.path.exists(b.p('d')) else 'no d'}")
    eventually(lambda: a.revisions() <= c.revisions(), 30,
               lambda: f"c (serve) lacks {len(a.revisions() - c.revisions())} of a's revisions")
    c.stop()
    c.serve = False
    c.start()
    assert policy(c.p("d", "sub", "f")) == "last 2 hourly 24", "the storage node does not hold the policy"


def gc_plan(node) -> dict:
    return json.loads(node.cli("gc", "--dry-run", "--json").stdout)["retention"]


def test_gc_plans_to_release_exactly_what_last_2_drops(node):
    """Five saves of a file under `last 2`: the content only the three older ones hold is what goes; the first
    save's chunks stay, since another file holds the same bytes (deduplicated)."""
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, NAME, b"last 2")
    versions = [os.urandom(300_000) for _ in range(5)]
    for content in versions:
        write_file(os.path.join(d, "f"), content)
    write_file(node.p("same-as-first"), versions[0])
    plan = gc_plan(node)
    revisions = [line for line in node.cli("log", os.path.join(d, "f")).stdout.splitlines() if line.strip()]
    assert plan["revisions"] == len(revisions) - 2, (plan, revisions)
    # What must go: the sealed bytes of the second and third saves (chunks, 16 bytes of tag each, manifest leaves).
    expected = 2 * 300_000
    assert expected <= plan["bytes"] <= expected * 1.05, plan
    assert read_file(os.path.join(d, "f")) == versions[-1]
    # A dry run changes nothing.
    assert gc_plan(node) == plan


def test_revisions_below_their_quorum_are_not_released(make_node):
    """Quorum 2 and no peer: this node holds the only copy of every revision, so `last 1` releases nothing."""
    node = make_node(quorum=2)
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, NAME, b"last 1")
    for k in range(3):
        write_file(os.path.join(d, "f"), os.urandom(100_000))
    assert gc_plan(node)["revisions"] == 0


# --- releasing content (docs/design.md, "Retention decisions") -----------------------------------------------------

needs_failpoints = pytest.mark.skipif(
    not helpers.has_failpoints(helpers.hypernet_bin()),
    reason="the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")


def gc(node, *args, check=True):
    proc = node.cli("gc", "--json", *args, check=check, timeout=300)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc


def save(path, content) -> str:
    """Writes `content` as a new revision of `path`; its revision id."""
    write_file(path, content)
    return current_revision(path)


def saves(node, policy: bytes, count: int, size: int):
    """`count` saves of random content to d/f under `policy` (set on d) in `node`'s mount: the path of f, and each
    revision's content, oldest first."""
    d = node.p("d")
    os.mkdir(d)
    os.setxattr(d, NAME, policy)
    f = os.path.join(d, "f")
    saved = {}
    for _ in range(count):
        content = os.urandom(size)
        saved[save(f, content)] = content
    return f, saved


def history_of(node, path) -> list:
    return json.loads(node.cli("log", "--json", path).stdout)


def cat(node, path, revision, check=True):
    return node.cli("cat", "--rev", revision, path, check=check, text=False)


def released(node, path) -> set:
    return {e["revision"] for e in history_of(node, path) if e["isReleased"]}


def check_revisions(node, path, saved: dict, gone: set):
    """Every saved revision not released reads back exactly (`cat --rev`); each released one is marked so and
    refused with one line; fsck is clean."""
    marked = released(node, path)
    assert marked == gone, f"released {sorted(marked)}, expected {sorted(gone)}"
    for revision, content in saved.items():
        if revision in gone:
            proc = cat(node, path, revision, check=False)
            assert proc.returncode == 1 and proc.stdout == b"", proc
            assert proc.stderr.decode().endswith("its content was released by the retention policy\n"), proc.stderr
            assert proc.stderr.count(b"\n") == 1, proc.stderr
        else:
            assert cat(node, path, revision).stdout == content, f"revision {revision[:12]} differs"
    proc = node.cli("fsck", check=False, timeout=300)
    assert proc.returncode == 0, f"fsck: {proc.stdout}{proc.stderr}"


def test_gc_releases_what_last_2_drops_and_keeps_the_rest_exact(node):
    """Five saves under `last 2`, the first also held by another file: gc releases the second and third saves'
    content (as planned, and the packs shrink by that much), marks the three older revisions [released] in `log`,
    refuses `cat --rev` and `restore` of them, and every other revision still reads back exactly, across a
    restart."""
    f, saved = saves(node, b"last 2", 5, 300_000)
    first = list(saved.values())[0]
    write_file(node.p("same-as-first"), first)
    plan = gc_plan(node)
    before = node.pack_bytes()
    report = gc(node)
    assert report["retention"] == plan, (plan, report)
    # The packs give back the released records; the directory's revisions made meanwhile take a few hundred bytes.
    freed = before - node.pack_bytes()
    assert plan["bytes"] * 0.99 <= freed <= plan["bytes"] * 1.05 + (64 << 10), f"freed {freed}, plan {plan}"
    gone = set(list(saved)[:3])
    check_revisions(node, f, saved, gone)
    assert read_file(f) == list(saved.values())[-1] and read_file(node.p("same-as-first")) == first
    # The log marks them; restore of a released revision fails with the same line, of a retained one works.
    lines = node.cli("log", f).stdout.splitlines()
    assert sum(line.endswith("[released]") for line in lines) == 3, lines
    proc = node.cli("restore", f, list(saved)[0], check=False)
    assert proc.returncode == 1 and "released by the retention policy" in proc.stderr, proc
    assert gc(node)["retention"] == {"revisions": 0, "chunks": 0, "bytes": 0}, "a second pass found more"
    # A restore of the fourth save: `last 2` now drops the fourth itself, whose content the restore still names.
    node.cli("restore", f, list(saved)[3])
    assert gc(node)["retention"] == {"revisions": 1, "chunks": 0, "bytes": 0}
    gone.add(list(saved)[3])
    assert read_file(f) == list(saved.values())[3]
    node.restart()
    check_revisions(node, f, saved, gone)
    assert read_file(f) == list(saved.values())[3]


@pytest.mark.replication
@pytest.mark.timeout(150)
def test_a_node_catching_up_stores_released_revisions_as_released(cluster):
    """a (quorum 1) releases three of four saves under `last 1` before b, a node of the same identity, first
    connects: b receives their records without their content (a's log lists only what it holds), records them as
    released, shows the last save, and its own gc neither waits for that content nor fails."""
    a = cluster.add("a", quorum=1)
    b = cluster.add("b", identity=a, quorum=1)
    a.start()
    _, saved = saves(a, b"last 1", 4, 150_000)
    assert gc(a)["retention"]["revisions"] == 3
    gone = set(list(saved)[:3])
    b.start()
    eventually(lambda: a.revisions() <= b.revisions(), 30,
               lambda: f"b lacks {len(a.revisions() - b.revisions())} of a's revisions")
    eventually(lambda: helpers.read_or_none(b.p("d", "f")) == list(saved.values())[-1], 10, "b does not show f")
    check_revisions(b, b.p("d", "f"), saved, gone)
    report = gc(b)
    assert "retentionError" not in report and report["retention"]["revisions"] == 0, report
    check_revisions(b, b.p("d", "f"), saved, gone)


@pytest.mark.replication
@pytest.mark.timeout(240)
def test_a_storage_node_applies_the_owners_release(cluster):
    """a sets `last 1` and saves four times; c, a storage node without a's keys, holds everything. a's gc releases
    three saves and puts a signed release statement in its log; c's gc applies it: its packs shrink by what a's plan
    said. b, a's second device, then gets the tree from c alone: the retained save reads back byte-exact, the
    released ones are marked so (docs/design.md, "Release statements")."""
    a = cluster.add("a")
    c = cluster.add("c", serve=True, pins=[a])
    b = cluster.add("b", identity=a)
    cluster.start([a, c])
    f, saved = saves(a, b"last 1", 4, 150_000)
    eventually(lambda: a.revisions() <= c.revisions(), 30,
               lambda: f"c lacks {len(a.revisions() - c.revisions())} of a's revisions")
    # Released only once c's acks are recorded (quorum 2).
    eventually(lambda: gc_plan(a)["revisions"] == 3, 30, lambda: f"a's plan: {gc_plan(a)}")
    plan = gc_plan(a)
    assert gc(a)["retention"] == plan
    eventually(lambda: gc_plan(c) == plan, 30, lambda: f"c's plan: {gc_plan(c)}, a's: {plan}")
    before = c.pack_bytes()
    report = gc(c)
    assert report["retention"] == plan, (plan, report)
    freed = before - c.pack_bytes()
    assert plan["bytes"] * 0.99 <= freed <= plan["bytes"] * 1.05 + (64 << 10), f"freed {freed}, plan {plan}"
    assert gc(c)["retention"] == {"revisions": 0, "chunks": 0, "bytes": 0}, "applied twice"
    a.stop()
    b.start()
    cluster.wait_connected([b, c])
    eventually(lambda: a.revisions() <= b.revisions(), 30,
               lambda: f"b lacks {len(a.revisions() - b.revisions())} of a's revisions")
    eventually(lambda: helpers.read_or_none(b.p("d", "f")) == list(saved.values())[-1], 10, "b does not show f")
    check_revisions(b, b.p("d", "f"), saved, set(list(saved)[:3]))


@pytest.mark.replication
@pytest.mark.timeout(240)
def test_a_revision_reusing_content_this_node_released_brings_it_back(cluster):
    """a releases the first two of three saves under `last 1`; b, a's second device, has not collected and still
    holds them. b then writes g, the first save's bytes and a tail (a new manifest root over the first save's data
    chunks), and restores f to its second save (the same root): b's log lists only what is new to b. a fetches
    what they reuse of the content it released: both read back byte-exact on a, and fsck is clean (docs/design.md,
    "Retention decisions", item 5)."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    f, saved = saves(a, b"last 1", 3, 300_000)
    eventually(lambda: a.revisions() <= b.revisions(), 30,
               lambda: f"b lacks {len(a.revisions() - b.revisions())} of a's revisions")
    eventually(lambda: gc_plan(a)["revisions"] == 2, 30, lambda: f"a's plan: {gc_plan(a)}")
    assert gc(a)["retention"]["revisions"] == 2
    first, second = list(saved.values())[:2]
    g = first + os.urandom(1000)
    write_file(b.p("g"), g)
    b.cli("restore", b.p("d", "f"), list(saved)[1])
    eventually(lambda: helpers.read_or_none(a.p("g")) == g and helpers.read_or_none(a.p("d", "f")) == second, 30,
               lambda: f"on a, g reads {errno_of(lambda: read_file(a.p('g')))}, f "
                       f"{errno_of(lambda: read_file(a.p('d', 'f')))} (None: no error)")
    a.restart()
    assert read_file(a.p("g")) == g and read_file(a.p("d", "f")) == second
    proc = a.cli("fsck", check=False, timeout=300)
    assert proc.returncode == 0, f"fsck: {proc.stdout}{proc.stderr}"


class KeepAllNode(helpers.Node):
    """A node mounted with `--keep-all`."""

    def cli(self, *args, **kw):
        if args and args[0] == "mount":
            args = (*args, "--keep-all")
        return super().cli(*args, **kw)


def test_keep_all_releases_nothing(make_node):
    """`mount --keep-all` keeps every revision's content whatever the policy says (a node may keep more)."""
    node = make_node(node_class=KeepAllNode)
    f, saved = saves(node, b"last 1", 3, 100_000)
    assert gc(node).get("retention") is None
    check_revisions(node, f, saved, set())


@needs_failpoints
@pytest.mark.parametrize("step", ["retention.release", "compact.copy", "compact.switch", "compact.remove"])
@pytest.mark.log_errors(r"failpoint (retention|compact)\.")
def test_a_kill_during_release_or_compaction_loses_nothing_retained(make_node, monkeypatch, step):
    """The daemon dies (SIGKILL) in gc's release transaction or at a step of the compaction after it: after a
    restart the release is all there or not at all, every revision not marked released reads back exactly, fsck
    is clean; the next gc completes the release."""
    node = make_node(start=False)
    monkeypatch.setenv("HYPERNET_FAILPOINT", f"{step}:panic")
    node.start()
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    f, saved = saves(node, b"last 2", 6, 200_000)
    proc = gc(node, check=False)
    assert isinstance(proc, subprocess.CompletedProcess), f"gc survived the failpoint: {proc}"
    assert f"failpoint {step}: panic" in node.log_text()
    node.reap()
    node.start()
    # The release's transaction either committed (every step after it) or did not (its own failpoint).
    gone = set(list(saved)[:4]) if step != "retention.release" else set()
    check_revisions(node, f, saved, gone)
    gc(node)
    check_revisions(node, f, saved, set(list(saved)[:4]))
    node.restart()
    check_revisions(node, f, saved, set(list(saved)[:4]))


# --- a year of edits (contract scenario 10) -------------------------------------------------------------------------

class FakeClockNode(helpers.Node):
    """A node whose daemon reads its wall clock's offset from the file `clock` at each call (libfaketime's
    FAKETIME_TIMESTAMP_FILE; monotonic time untouched), so a test moves its time without a restart. Started
    through the `faketime` wrapper, which sets up what libfaketime needs, without its own FAKETIME, which would
    take precedence over the file."""

    def __init__(self, *args, clock, **kw):
        super().__init__(*args, **kw)
        self.wrapper = self.dir / "faketime-hypernet"
        self.wrapper.write_text(
            f"#!/bin/sh\nexec faketime -f +0 env -u FAKETIME FAKETIME_TIMESTAMP_FILE={clock} FAKETIME_NO_CACHE=1 "
            f"FAKETIME_DONT_FAKE_MONOTONIC=1 {self.bin} \"$@\"\n")
        self.wrapper.chmod(0o755)

    def cli(self, *args, **kw):
        if not (args and args[0] == "mount"):
            return super().cli(*args, **kw)
        real, self.bin = self.bin, str(self.wrapper)
        try:
            return super().cli(*args, **kw)
        finally:
            self.bin = real


DAY = 86400


def expected_kept(times: dict, now: float) -> set:
    """The revisions `within 30d weekly 8 monthly 6` keeps (docs/design.md: the newest of each of the N latest UTC
    ISO weeks and months that have one), and the head, computed here independently of the daemon."""
    kept = {r for r, t in times.items() if t >= now - 30 * DAY}
    for rule, count in ((lambda t: datetime.fromtimestamp(t, timezone.utc).isocalendar()[:2], 8),
                        (lambda t: datetime.fromtimestamp(t, timezone.utc).timetuple()[:2], 6)):
        newest = {}
        for r, t in times.items():
            key = rule(t)
            if key not in newest or t > times[newest[key]]:
                newest[key] = r
        kept |= {newest[k] for k in sorted(newest)[-count:]}
    kept.add(max(times, key=times.get))
    return kept


@pytest.mark.timeout(600)
def test_a_year_of_edits_keeps_what_the_policy_says_and_gc_frees_what_it_planned(make_node, tmp_path):
    """A file saved every four days for a year (the daemon's clock faked, moved forward through a file) under `within 30d weekly 8 monthly 6`: gc releases exactly the revisions the
    policy drops (computed here), `du`'s history and the packs shrink by what the plan said, every retained
    revision reads back exactly, and the released ones are marked and refused."""
    if not shutil.which("faketime"):
        pytest.skip("faketime is not installed (mount-helpers/deps.sh)")
    clock = tmp_path / "faketime"
    clock.write_text("-365d\n")
    node = make_node(node_class=FakeClockNode, clock=clock)
    d = node.p("d")
    os.mkdir(d)
    node.cli("retention", d, "within", "30d", "weekly", "8", "monthly", "6")
    f = os.path.join(d, "f")
    saved, times = {}, {}
    for days_ago in range(364, 0, -4):
        clock.write_text(f"-{days_ago}d\n")
        content = os.urandom(40_000)
        revision = save(f, content)
        saved[revision] = content
    clock.write_text("+0\n")
    for e in history_of(node, f):
        times[e["revision"]] = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
    assert set(times) == set(saved), "the log does not list every save"
    now = time.time()
    assert min(times.values()) < now - 360 * DAY, "the faked clock was not in force"
    kept = expected_kept(times, now)
    plan = gc_plan(node)
    assert plan["revisions"] == len(saved) - len(kept), (plan, len(saved), len(kept))

    def history_bytes():
        return json.loads(node.cli("du", "--json", d).stdout)[-1]["history"]

    du_before, packs_before = history_bytes(), node.pack_bytes()
    report = gc(node)
    assert report["retention"] == plan, (plan, report)
    # du counts each record with its 36-byte header; manifest nodes kept as delta bases leave it a little more.
    du_freed = du_before - history_bytes()
    assert plan["bytes"] <= du_freed <= plan["bytes"] * 1.05 + 36 * plan["chunks"] + (16 << 10), (du_freed, plan)
    packs_freed = packs_before - node.pack_bytes()
    assert plan["bytes"] * 0.99 <= packs_freed <= plan["bytes"] * 1.05 + (64 << 10), (packs_freed, plan)
    check_revisions(node, f, saved, set(saved) - kept)
    node.restart()
    check_revisions(node, f, saved, set(saved) - kept)
