"""`hypernet grep` near the data (issue 19; docs/protocol.md, "Queries"): documents whose content a node does not
hold are scanned by a peer that holds them and may read them for the requester; only results cross.

alice's desktop holds her logs; bob holds her tree on demand (her contact) and is granted read on one folder. bob's
grep over /@alice/ prints exactly what GNU grep prints over copies of that folder's files, while his packs do not
grow by the logs, and nothing (not even a name) of the folder he may not read. (A second device of alice's holds its
own tree in full, so it scans locally: the on-demand holder here is bob.)"""

import os
import random

import pytest

from cluster import eventually
from helpers import write_file
from test_grep import by_file, gnu_grep, hypernet_grep, log_lines
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
    grown = settled_pack_bytes(bob) - before
    logs = sum(len(d) for d in files.values())
    assert grown < logs // 10, f"bob's packs grew by {grown} bytes for {logs} bytes of logs: they came over"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"
