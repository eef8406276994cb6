"""Retention policies (issue 20): `hypernet retention PATH [POLICY]` and `user.hypernet.retention`, set on a file
or directory, inherited like the quorum, kept in the document's signed metadata and so replicated to every node
that holds the tree's keys (docs/design.md, "Retention")."""

import json
import os

import pytest

from cluster import eventually
from helpers import XATTR_PREFIX, errno_of, hx, read_file, write_file

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
