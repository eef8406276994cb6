"""`hypernet grep` near the data (issue 19; docs/protocol.md, "Queries"): documents whose content a node does not
hold are scanned by a peer that holds them and may read them for the requester; only results cross.

alice's desktop holds her logs; bob holds her tree on demand (her contact) and is granted read on one folder. bob's
grep over /@alice/ prints exactly what GNU grep prints over copies of that folder's files, while his packs do not
grow by the logs, and nothing (not even a name) of the folder he may not read. (A second device of alice's holds its
own tree in full, so it scans locally: the on-demand holder here is bob.)"""

import json
import os
import random
import re

import pytest

from cluster import eventually
from helpers import write_file
from test_grep import by_file, gnu_grep, hypernet_grep, log_lines, python_count
from test_partial import settled_pack_bytes

pytestmark = pytest.mark.replication


@pytest.mark.timeout(240)
def test_grep_on_a_node_without_the_content_runs_where_the_logs_are(cluster, tmp_path):
    alice = cluster.add("alice")
    bob = cluster.add("bob")
    bob.run("contact", "add", "alice", alice.token)
    cluster.start()
    alice.run("contact", "add", "bob", bob.token)
    rng = random.Random(36)
    files = {
        "shared/api.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
        "shared/sub/db.log": b"\n".join(log_lines(rng, 3_000)) + b"\n",
        "private/secret.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
    }
    for relative, data in files.items():
        os.makedirs(os.path.dirname(alice.p(relative)), exist_ok=True)
        write_file(alice.p(relative), data)
        copy = tmp_path / "copy" / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
    alice.run("grant", alice.p("shared"), "bob", "read")
    for relative in ("shared/api.log", "shared/sub/db.log"):
        path = bob.p("@alice", relative)
        size = len(files[relative])
        eventually(lambda: os.path.exists(path) and os.stat(path).st_size == size, 30,
                   lambda: f"bob does not list /@alice/{relative} in full")

    before = settled_pack_bytes(bob)
    for args in (["-n", "ERROR", "shared"], ["-c", "-E", "svc=(api|db)", "shared"], ["-l", "-i", "disk", "shared"]):
        got = hypernet_grep(bob, args, bob.p("@alice"))
        want = gnu_grep(args, tmp_path / "copy")
        assert got.returncode == want.returncode, (args, got.stderr)
        assert by_file(got.stdout, True) == by_file(want.stdout, True), args
    # The whole of /@alice/ as bob sees it: the shared folder's matches, nothing of the rest.
    everything = hypernet_grep(bob, ["-n", "ERROR", "@alice"], bob.mount)
    assert everything.returncode == 0, everything.stderr
    assert b"secret" not in everything.stdout + everything.stderr
    assert b"private" not in everything.stdout + everything.stderr
    shown = sorted(name.decode() for name in by_file(everything.stdout, True))
    assert shown == ["@alice/shared/api.log", "@alice/shared/sub/db.log"], shown
    # --json: each line found by alice's node carries its real offset in the file.
    as_json = hypernet_grep(bob, ["--json", "disk failure on sda", bob.p("@alice", "shared", "api.log")], bob.mount)
    data, offset, want = files["shared/api.log"], 0, []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        if b"disk failure on sda" in line:
            want.append((number, offset, line.decode()))
        offset += len(line) + 1
    got = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(o["line"], o["offset"], o["text"]) for o in got] == want, got[:3]
    grown = settled_pack_bytes(bob) - before
    logs = sum(len(d) for d in files.values())
    assert grown < logs // 10, f"bob's packs grew by {grown} bytes for {logs} bytes of logs: they came over"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


@pytest.mark.timeout(240)
def test_count_on_a_node_without_the_content_adds_up_the_peers_tables(cluster, tmp_path):
    """`hypernet count` over alice's tree held on demand: mapped where the logs are, reduced at bob's; it equals a
    Python count over copies of the files bob may read. carol, a contact of alice's without read right, counts
    nothing, not even through a path she guesses."""
    alice = cluster.add("alice")
    bob = cluster.add("bob")
    carol = cluster.add("carol")
    for node in (bob, carol):
        node.run("contact", "add", "alice", alice.token)
    cluster.start()
    for node in (bob, carol):
        alice.run("contact", "add", node.name, node.token)
    rng = random.Random(37)
    files = {
        "shared/api.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
        "shared/sub/db.log": b"\n".join(log_lines(rng, 3_000)) + b"\n",
        "shared/sub/empty.log": b"",
        "private/secret.log": b"\n".join(log_lines(rng, 5_000)) + b"\n",
    }
    for relative, data in files.items():
        os.makedirs(os.path.dirname(alice.p(relative)), exist_ok=True)
        write_file(alice.p(relative), data)
        copy = tmp_path / "copy" / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
    alice.run("grant", alice.p("shared"), "bob", "read")
    for relative in ("shared/api.log", "shared/sub/db.log"):
        path = bob.p("@alice", relative)
        size = len(files[relative])
        eventually(lambda: os.path.exists(path) and os.stat(path).st_size == size, 30,
                   lambda: f"bob does not list /@alice/{relative} in full")

    before = settled_pack_bytes(bob)
    for regex, top, flags in [(rb"ERROR svc=([a-z]+)", None, 0), (rb"svc=([a-z]+) (\w+)", 4, 0),
                              (rb"disk failure on sd[a-c]", None, 0), (rb"(error)", None, re.I)]:
        args = ["count", "--by", regex.decode(), *(["--top", str(top)] if top else []), *(["-i"] if flags else [])]
        got = bob.run(*args, bob.p("@alice"), check=False, text=False)
        want = python_count(tmp_path / "copy" / "shared", regex, flags)[:top]
        assert got.returncode == 0, (args, got.stderr)
        assert got.stdout == b"".join(b"%d %s\n" % (n, key) for key, n in want), (args, got.stdout[:300])
    as_json = bob.run("count", "--by", "svc=(db)", "--json", bob.p("@alice", "shared", "sub"))
    want = python_count(tmp_path / "copy" / "shared" / "sub", rb"svc=(db)")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [{"count": want[0][1], "value": "db"}]
    grown = settled_pack_bytes(bob) - before
    assert grown < len(files["shared/api.log"]) // 10, f"bob's packs grew by {grown} bytes: the logs came over"

    # carol holds alice's tree on demand too but may read none of it: nothing is counted, and a path she guesses is
    # answered as one that does not exist.
    nowhere = carol.run("count", "--by", "svc=([a-z]+)", carol.p("@alice", "nothing"), check=False, text=False)
    for path in (carol.p("@alice"), carol.p("@alice", "shared"), carol.p("@alice", "shared", "api.log")):
        got = carol.run("count", "--by", "svc=([a-z]+)", path, check=False, text=False)
        assert got.returncode in (1, 2) and got.stdout == b"", (path, got)
        if got.returncode == 2:
            assert got.stderr.replace(path.encode(), b"P") == nowhere.stderr.replace(
                carol.p("@alice", "nothing").encode(), b"P"), got.stderr
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"
