"""Streaming reads of content held on demand (issue 19, item 3; issue 17, item 4): `hypernet cat` and a sequential
read of the mounted file start giving bytes as soon as the first chunks arrive, fetch the next ones ahead in a
window that grows with sequential access, and give exactly the bytes written.

bob holds alice's tree on demand (her contact); alice's link is rate-limited (tbf in a network-namespace lab,
netns.py) so that the whole file takes seconds to cross: the time to the first byte is compared with the time to
the last, not with a fixed figure. Skipped when namespaces cannot be made here.
"""

import os
import subprocess
import time

import pytest

import cluster as cluster_module
from cluster import eventually
from helpers import random_bytes, write_file

pytestmark = pytest.mark.replication

SIZE = 64 << 20
RATE = "64mbit"  # 64 MiB in about 8.4 s


@pytest.fixture
def shared(make_node, node_dir):
    """alice shares `shared/` (three SIZE-byte files, one per test) with bob, who holds her tree on demand; alice's link then
    runs at RATE. Yields (alice, bob, contents)."""
    with cluster_module.lab_cluster(make_node, node_dir, "hnstream", hosts=2) as cl:
        alice = cl.add("alice")
        bob = cl.add("bob")
        bob.run("contact", "add", "alice", alice.token)
        cl.start()
        alice.run("contact", "add", "bob", bob.token)
        os.mkdir(alice.p("shared"))
        contents = {f"f{i}.bin": random_bytes(SIZE, seed=i) for i in range(3)}
        for name, data in contents.items():
            write_file(alice.p("shared", name), data)
        alice.run("grant", alice.p("shared"), "bob", "read")
        for name in contents:
            path = bob.p("@alice", "shared", name)
            eventually(lambda: os.path.exists(path) and os.stat(path).st_size == SIZE, 30,
                       lambda: f"bob does not see {name} whole")
        cl.lab.limit_rate(cl.lab.hosts[0], RATE, direction="egress")  # alice's host
        yield alice, bob, contents
        for node in cl.nodes:
            assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"


def timed_read(stream, chunk=1 << 16):
    """(bytes, seconds to the first byte, seconds to the last) of reading `stream` to its end."""
    start = time.monotonic()
    parts = [stream.read(1)]
    first = time.monotonic() - start
    while True:
        part = stream.read(chunk)
        if not part:
            break
        parts.append(part)
    return b"".join(parts), first, time.monotonic() - start


@pytest.mark.timeout(240)
def test_cat_of_a_file_held_on_demand_streams_as_its_chunks_arrive(shared):
    alice, bob, contents = shared
    command = [bob.bin, "--home", str(bob.home), "cat", bob.p("@alice", "shared", "f0.bin")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        data, first, last = timed_read(proc.stdout)
        stderr = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, f"hypernet cat failed ({proc.returncode}): {stderr}"
    assert data == contents["f0.bin"], f"cat gave {len(data)} bytes, not the {SIZE} alice wrote"
    assert first < last / 4, f"cat's first byte came after {first:.2f} s of {last:.2f} s: it did not stream"


@pytest.mark.timeout(240)
def test_a_sequential_read_of_the_mounted_file_streams(shared):
    alice, bob, contents = shared
    with open(bob.p("@alice", "shared", "f1.bin"), "rb", buffering=0) as f:
        data, first, last = timed_read(f)
    assert data == contents["f1.bin"], "the mounted file gave other bytes than alice wrote"
    assert first < last / 4, f"the first byte came after {first:.2f} s of {last:.2f} s: the read did not stream"


@pytest.mark.timeout(240)
def test_a_sequential_read_fetches_ahead_in_a_growing_window(shared):
    alice, bob, contents = shared
    before = bob.pack_bytes()
    with open(bob.p("@alice", "shared", "f2.bin"), "rb", buffering=0) as f:
        head = b"".join(f.read(1 << 16) for _ in range(128))  # the first 8 MiB
        assert head == contents["f2.bin"][:len(head)]
        # Nothing more is read: what arrives now was asked for ahead (the kernel's own readahead is 1 MiB).
        eventually(lambda: bob.pack_bytes() - before >= 20 << 20, 30,
                   lambda: f"bob fetched {bob.pack_bytes() - before} bytes after a sequential read of 8 MiB: "
                   "nothing was fetched ahead")
        assert f.read(4 << 20) == contents["f2.bin"][len(head):len(head) + (4 << 20)]
