"""Sharing with other identities (issue 15): alice shares folders with bob and carol, each on a node of their own
that pins alice's tree. Every member of a block reads every document the block covers, whatever the order of the
grants; a member's editor saves and chmods stay; `log` and `cat` work on /@NAME/ paths.

Nodes run on their own loopback addresses (cluster.py). No traffic leaves the machine.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from cluster import eventually
from helpers import current_revision, read_or_none, write_file

pytestmark = pytest.mark.replication


def sharing(cluster, *names, devices=None):
    """alice's node and one per name pinning her tree, started, each with the other identities as contacts by
    name. `devices`: {name: node name} for a second node of that node's identity."""
    devices = devices or {}
    alice = cluster.add("alice")
    nodes = [alice]
    for name in names:
        nodes.append(cluster.add(name, pins=[alice], identity=cluster[devices[name]] if name in devices else None))
    cluster.start()
    for node in nodes:
        for other in nodes:
            if other.token != node.token and other.name not in devices:
                node.run("contact", "add", other.name, other.token)
    return nodes


def reads(node, *parts, expected):
    path = node.p("@alice", *parts)
    eventually(lambda: read_or_none(path) == expected, 15,
               lambda: f"{node.name} reads {read_or_none(path)!r} at /@alice/{'/'.join(parts)}, not {expected!r}")


@pytest.mark.timeout(240)
def test_a_member_added_after_the_first_grant_reads_what_was_written_before(cluster):
    alice, bob, carol = sharing(cluster, "bob", "carol")
    folders = ["bob-first", "carol-first", "again", "delegated"]
    for folder in folders:
        os.makedirs(alice.p(folder, "sub"))
        write_file(alice.p(folder, "a.txt"), f"{folder} a\n".encode())
        write_file(alice.p(folder, "sub", "b.txt"), f"{folder} b\n".encode())

    # A second reader, in either order: both read the documents nobody wrote since.
    alice.run("grant", alice.p("bob-first"), "bob", "read")
    alice.run("grant", alice.p("bob-first"), "carol", "read")
    alice.run("grant", alice.p("carol-first"), "carol", "read")
    alice.run("grant", alice.p("carol-first"), "bob", "read")
    for folder in ["bob-first", "carol-first"]:
        for node in (bob, carol):
            reads(node, folder, "a.txt", expected=f"{folder} a\n".encode())
            reads(node, folder, "sub", "b.txt", expected=f"{folder} b\n".encode())

    # Revoked, written meanwhile, granted again: bob reads what was written while he was out, and carol, added
    # last, reads all of it.
    alice.run("grant", alice.p("again"), "bob", "read")
    reads(bob, "again", "a.txt", expected=b"again a\n")
    alice.run("revoke", alice.p("again"), "bob")
    write_file(alice.p("again", "during.txt"), b"written while bob was out\n")
    alice.run("grant", alice.p("again"), "bob", "read")
    alice.run("grant", alice.p("again"), "carol", "read")
    for node in (bob, carol):
        reads(node, "again", "during.txt", expected=b"written while bob was out\n")
        reads(node, "again", "sub", "b.txt", expected=b"again b\n")

    # A member granted by a delegated admin (bob) reads it all too.
    alice.run("grant", alice.p("delegated"), "bob", "read", "admin")
    reads(bob, "delegated", "a.txt", expected=b"delegated a\n")
    bob.run("grant", bob.p("@alice", "delegated"), "carol", "read")
    reads(carol, "delegated", "a.txt", expected=b"delegated a\n")
    reads(carol, "delegated", "sub", "b.txt", expected=b"delegated b\n")
    eventually(lambda: sorted(os.listdir(carol.p("@alice"))) == sorted(folders), 15,
               lambda: f"carol's /@alice lists {sorted(os.listdir(carol.p('@alice')))}")
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


def mode_or_none(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


@pytest.mark.timeout(180)
def test_a_chmod_right_after_sed_i_in_a_shared_folder_stays(cluster):
    alice, bob = sharing(cluster, "bob")
    os.makedirs(alice.p("share"))
    write_file(alice.p("share", "f.txt"), b"x\n")
    alice.run("grant", alice.p("share"), "bob", "read", "write")
    reads(bob, "share", "f.txt", expected=b"x\n")
    shared = bob.p("@alice", "share", "f.txt")
    for i, mode in enumerate([0o640, 0o604, 0o600]):
        before = b"x\n" if i == 0 else b"y" * i + b"\n"
        after = b"y" * (i + 1) + b"\n"
        proc = subprocess.run(["sh", "-c", f"sed -i 's/{before.decode().strip()}/{after.decode().strip()}/' '{shared}'"
                               f" && chmod {mode:o} '{shared}'"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"bob's sed -i; chmod in /@alice/share failed: {proc.stderr}"
        assert mode_or_none(shared) == mode, f"round {i}: chmod {mode:o} right after sed -i shows {mode_or_none(shared)!r}"
        # Past the kernel's attribute cache, on both nodes: the mode and the content stay.
        time.sleep(1.5)
        for node, path in ((bob, shared), (alice, alice.p("share", "f.txt"))):
            eventually(lambda: mode_or_none(path) == mode and read_or_none(path) == after, 10,
                       lambda: f"round {i}: {node.name} shows mode {oct(mode_or_none(path) or 0)} and "
                               f"{read_or_none(path)!r}, not {oct(mode)} and {after!r}")
        assert sorted(os.listdir(alice.p("share"))) == ["f.txt"], f"sed's temporary file stays: {os.listdir(alice.p('share'))}"


@pytest.mark.skipif(not shutil.which("vim.basic"), reason="needs Debian's full vim")
@pytest.mark.timeout(180)
def test_a_file_shared_on_its_own_stays_shared_across_saves(cluster):
    """Saves of a file shared on its own keep the chain it is written under with its document, so bob reads
    each: vim's save by rename (backupcopy=no; docs/design.md, "Saves that rename the original away"), whose
    kept backup is not listed for him, and `sed -i`'s rename-over (its temporary file was written under the
    directory's chain, which bob is not in)."""
    alice, bob = sharing(cluster, "bob")
    write_file(alice.p("doc.txt"), b"v0\n")
    alice.run("grant", alice.p("doc.txt"), "bob", "read")
    reads(bob, "doc.txt", expected=b"v0\n")
    vim = ["vim.basic", "-es", "-u", "DEFAULTS", "-i", "NONE", "-c", "set backupskip= backupcopy=no backup"]
    for step, save in enumerate([vim, vim, ["sed", "-i"]]):
        edit = f"s/v{step}/v{step + 1}/"
        command = save + (["-c", f"%{edit}", "-c", "wq"] if save is vim else [edit])
        proc = subprocess.run(command + ["doc.txt"], cwd=alice.p(), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, f"{save[0]}: {proc.stderr!r}"
        assert sorted(set(os.listdir(alice.p())) - {".hypernet"}) == ["doc.txt", "doc.txt~"]
        reads(bob, "doc.txt", expected=f"v{step + 1}\n".encode())
    assert sorted(os.listdir(bob.p("@alice"))) == ["doc.txt"]


@pytest.mark.timeout(180)
def test_log_and_cat_read_a_shared_document_by_its_path_under_the_owners_name(cluster):
    alice, bob = sharing(cluster, "bob")
    os.makedirs(alice.p("share", "sub"))
    write_file(alice.p("share", "sub", "f.txt"), b"first\n")
    alice.run("grant", alice.p("share"), "bob", "read", "write")
    shared = bob.p("@alice", "share", "sub", "f.txt")
    reads(bob, "share", "sub", "f.txt", expected=b"first\n")
    granted = current_revision(shared)
    write_file(shared, b"second\n")
    edited = current_revision(shared)

    log = bob.run("log", shared).stdout.splitlines()
    assert log and log[0].split()[:1] == [edited[:12]] and log[0].split()[2] == "me", \
        f"`hypernet log` of /@alice/share/sub/f.txt does not start with bob's edit {edited[:12]}, by me: {log}"
    assert any(line.split()[0] == granted[:12] and line.split()[2] == "alice" for line in log), \
        f"the log lacks alice's revision {granted[:12]}, by her contact name: {log}"
    # Tokens with --long; both with --json (issue 20, item 5). alice's node names bob.
    long = bob.run("log", shared, "--long").stdout.splitlines()
    assert [line.split()[2] for line in long] == [bob.token if line.split()[2] == "me" else alice.token
                                                  for line in log], long
    entries = {e["revision"][:12]: e for e in json.loads(bob.run("log", shared, "--json").stdout)}
    assert (entries[edited[:12]]["author"], entries[edited[:12]]["authorName"]) == (bob.token, "me")
    assert (entries[granted[:12]]["author"], entries[granted[:12]]["authorName"]) == (alice.token, "alice")
    eventually(lambda: edited[:12] in alice.run("log", alice.p("share", "sub", "f.txt")).stdout, 10,
               "bob's edit does not reach alice's log")
    by_alice = alice.run("log", alice.p("share", "sub", "f.txt")).stdout.splitlines()
    assert [line.split()[2] for line in by_alice if line.startswith(edited[:12])] == ["bob"], by_alice
    assert bob.run("cat", shared).stdout == "second\n", "`hypernet cat` of a shared file is not its content"
    assert bob.run("cat", shared, "--rev", granted[:12]).stdout == "first\n", "`hypernet cat --rev` of a shared file"
    assert bob.run("log", bob.p(f"@{alice.token}", "share", "sub", "f.txt")).stdout.splitlines() == log, \
        "/@TOKEN/ paths do not give the same log"
    # A deleted file's history stays reachable by its name, as in one's own tree.
    os.unlink(alice.p("share", "sub", "f.txt"))
    eventually(lambda: not os.path.exists(shared), 10, "alice's rm does not reach bob's node")
    after_rm = bob.run("log", shared).stdout.splitlines()
    assert after_rm[1:] == log and "[deleted]" in after_rm[0], f"the log of the deleted shared file: {after_rm}"
    missing = bob.run("log", bob.p("@alice", "share", "nothing.txt"), check=False)
    assert missing.returncode != 0 and "no such file" in missing.stderr.lower(), missing.stderr


def shell(command):
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(300)
def test_a_revoked_writers_offline_edits_are_refused_by_every_node_that_learns_the_revoke(cluster):
    alice, bob, bob2, carol = sharing(cluster, "bob", "bob2", "carol", devices={"bob2": "bob"})
    os.makedirs(alice.p("share"))
    write_file(alice.p("share", "f.txt"), b"x\n")
    alice.run("grant", alice.p("share"), "bob", "read", "write")
    alice.run("grant", alice.p("share"), "carol", "read")
    for node in (bob, bob2, carol):
        reads(node, "share", "f.txt", expected=b"x\n")

    # Only alice's node learns the revoke; bob, alone, edits as he still may by what his node holds.
    for node in (bob, bob2, carol):
        node.stop()
    alice.run("revoke", alice.p("share"), "bob", "write")
    write_file(alice.p("share", "a.txt"), b"alice after the revoke\n")
    alice.stop()
    bob.start()
    f = bob.p("@alice", "share", "f.txt")
    proc = shell(f"sed -i 's/x/bob offline/' '{f}' && echo new > '{bob.p('@alice', 'share', 'new.txt')}'")
    assert proc.returncode == 0, f"bob's offline edits failed: {proc.stderr}"
    edit = current_revision(f)
    # bob's other device and carol get his edits before the revoke: they store and show them.
    bob2.start()
    carol.start()
    for node in (bob2, carol):
        reads(node, "share", "f.txt", expected=b"bob offline\n")
        reads(node, "share", "new.txt", expected=b"new\n")

    # alice's node comes back with the block: every node refuses the edits made after it, and says so.
    alice.start()
    for node in (bob, bob2, carol):
        reads(node, "share", "f.txt", expected=b"x\n")
        eventually(lambda: not os.path.exists(node.p("@alice", "share", "new.txt")), 10,
                   lambda: f"{node.name} still shows bob's new.txt after learning the revoke")
        reads(node, "share", "a.txt", expected=b"alice after the revoke\n")
        log = node.run("log", node.p("@alice", "share", "f.txt")).stdout.splitlines()
        refused = [line for line in log if line.startswith(edit[:12])]
        assert refused and refused[0].endswith("[refused]"), f"{node.name}: log does not mark bob's edit refused: {log}"
        conflicts = node.run("conflicts", node.p("@alice", "share", "f.txt")).stdout
        assert edit[:12] in conflicts, f"{node.name}: `conflicts` does not list bob's refused edit: {conflicts!r}"
        # By name (issue 20, item 5): bob's own nodes say "me", carol's her contact's name; --long the token.
        name = "bob" if node is carol else "me"
        by = {line.split()[1]: line.split()[3] for line in conflicts.splitlines()}
        assert by[edit[:12]] == name, conflicts
        long = node.run("conflicts", node.p("@alice", "share", "f.txt"), "--long").stdout
        assert {line.split()[1]: line.split()[3] for line in long.splitlines()}[edit[:12]] == bob.token, long
        entries = json.loads(node.run("conflicts", node.p("@alice", "share", "f.txt"), "--json").stdout)
        assert [(e["author"], e["authorName"]) for e in entries if e["revision"] == edit] == [(bob.token, name)]
        assert edit[:12] in node.run("conflicts").stdout, f"{node.name}: `conflicts` without a path omits it"
    assert not alice.has_revision(edit), "alice's node stored bob's edit made after the revoke"
    assert read_or_none(alice.p("share", "f.txt")) == b"x\n" and not os.path.exists(alice.p("share", "new.txt"))
