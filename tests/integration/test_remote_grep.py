"""`hypernet grep` near the data (issue 19; docs/protocol.md, "Queries"): documents whose content a node does not
hold are scanned by a peer that holds them and may read them for the requester; only results cross.

alice's desktop holds her logs; bob holds her tree on demand (her contact) and is granted read on one folder. bob's
grep over /@alice/ prints exactly what GNU grep prints over copies of that folder's files, while his packs do not
grow by the logs, and nothing (not even a name) of the folder he may not read. (A second device of alice's holds its
own tree in full, so it scans locally: the on-demand holder here is bob.) The same holds for `count` (a table per
serving node, added up at bob's) and for `tail -f --grep` (alice's node scans each new revision from bob's cursor)."""

import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

from cluster import eventually
from helpers import write_file
from test_grep import by_file, gnu_grep, hypernet_grep, log_lines, python_count
from test_partial import settled_pack_bytes
from test_tail import LINES, LOGGEN, TailProcess, grep, loggen, printed_all, stop_generators, wait_written

pytestmark = pytest.mark.replication


def write_with_copies(node, files, copies):
    """Writes `files` ({relative path: bytes}) in the node's mount, and copies of them under `copies` for GNU grep."""
    for relative, data in files.items():
        os.makedirs(os.path.dirname(node.p(relative)), exist_ok=True)
        write_file(node.p(relative), data)
        copy = copies / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)


def shared_logs(cluster, tmp_path, files, others=()):
    """alice writes `files` (also copied to tmp_path/copy) and grants bob read on `shared/`; bob, and `others`, hold
    her tree on demand (her contacts). Returns alice and bob once bob lists the shared files in full."""
    alice = cluster.add("alice")
    bob = cluster.add("bob")
    contacts = [bob, *(cluster.add(name) for name in others)]
    for node in contacts:
        node.run("contact", "add", "alice", alice.token)
    cluster.start()
    for node in contacts:
        alice.run("contact", "add", node.name, node.token)
    write_with_copies(alice, files, tmp_path / "copy")
    alice.run("grant", alice.p("shared"), "bob", "read")
    for relative in files:
        if relative.startswith("shared/"):
            path = bob.p("@alice", relative)
            size = len(files[relative])
            eventually(lambda: os.path.exists(path) and os.stat(path).st_size == size, 30,
                       lambda: f"bob does not list /@alice/{relative} in full")
    return alice, bob


@pytest.mark.timeout(240)
def test_grep_on_a_node_without_the_content_runs_where_the_logs_are(cluster, tmp_path):
    rng = random.Random(36)
    files = {
        "shared/api.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
        "shared/sub/db.log": b"\n".join(log_lines(rng, 3_000)) + b"\n",
        "private/secret.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
    }
    alice, bob = shared_logs(cluster, tmp_path, files)

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
    rng = random.Random(37)
    files = {
        "shared/api.log": b"\n".join(log_lines(rng, 20_000)) + b"\n",
        "shared/sub/db.log": b"\n".join(log_lines(rng, 3_000)) + b"\n",
        "shared/sub/empty.log": b"",
        "private/secret.log": b"\n".join(log_lines(rng, 5_000)) + b"\n",
    }
    _, bob = shared_logs(cluster, tmp_path, files, others=["carol"])
    carol = cluster["carol"]

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


@pytest.mark.timeout(240)
def test_tail_f_grep_of_a_log_held_on_demand_is_scanned_where_the_log_is(cluster):
    """bob follows alice's log, which he holds on demand: for each revision alice's node scans from bob's cursor and
    only the selected lines cross: alice's node serves bob no chunk of the log, and bob's packs do not grow by it.
    What bob prints equals GNU grep over alice's final file, in order, across a SIGKILL and restart of alice's daemon
    (the writer, whose node answers the scans)."""
    alice = cluster.add("alice")
    bob = cluster.add("bob")
    bob.run("contact", "add", "alice", alice.token)
    cluster.start()
    alice.run("contact", "add", "bob", bob.token)
    os.mkdir(alice.p("logs"))
    log = alice.p("logs", "app.log")
    # 1.3 MB written before tail starts: following the log must not bring it over.
    assert subprocess.run([sys.executable, str(LOGGEN), log, "--rate", "1000000", "--lines", "20000"]).returncode == 0
    alice.run("grant", alice.p("logs"), "bob", "read")
    path = bob.p("@alice", "logs", "app.log")
    eventually(lambda: os.path.exists(path) and os.stat(path).st_size == os.path.getsize(log), 30,
               "bob does not list alice's log in full")
    before = settled_pack_bytes(bob)
    tail = TailProcess(bob, "-f", "-n", "0", "--grep", "ERROR", path)
    generators = []
    try:
        generator = loggen(generators, log, lines=20_000 + LINES)
        eventually(lambda: len(tail.lines) >= 5, 30, lambda: f"tail printed {tail.lines} while the log grew")
        alice.kill9()
        time.sleep(1)
        alice.start()
        wait_written(generator)
        eventually(lambda: os.stat(path).st_size == os.path.getsize(log), 30, "bob never saw the whole log")
        expected = [line for line in grep(log, "ERROR") if int(line.split()[0]) > 20_000]
        assert len(expected) >= LINES // 7
        printed_all(tail, expected)
        # Half a megabyte of lines that do not match, then one that does: it is printed, the rest stays at alice's
        # (what her node serves since its restart is the few small chunks of metadata bob's mount reads).
        with open(log, "ab") as f:
            f.write(b"".join(b"bulk %s\n" % os.urandom(500).hex().encode() for _ in range(512)))
            f.write(b"last ERROR line\n")
        printed_all(tail, expected + ["last ERROR line"])
        served = sum(p.get("bytesServed", 0) for p in alice.status_json()["peers"])
        assert served < 128 << 10, f"alice's node served {served} bytes of chunks to bob: the log came over"
    finally:
        stop_generators(generators)
        tail.stop()
    grown = settled_pack_bytes(bob) - before
    assert grown < 256 << 10, f"bob's packs grew by {grown} bytes following the log: its content came over"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"
