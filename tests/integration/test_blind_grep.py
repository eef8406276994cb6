"""Search on ciphertext (issue 19 item 5; docs/security.md, "Search on ciphertext"; docs/protocol.md, "Blind
queries"): alice's logs are held by a storage node, which has no key; alice grants bob read and goes away. bob's
`grep -w WORD` reaches only the storage node: it answers from the files' blind token indexes with exactly the blocks
holding the word, bob fetches and opens those blocks and prints what GNU grep prints over copies of the files, and
the word is nowhere in what the storage node holds or what crosses the wire."""

import os
import random
import struct
import subprocess

import pytest

from cluster import capture_loopback, eventually
from test_grep import by_file, gnu_grep, hypernet_grep, log_lines
from test_partial import settled
from test_remote_grep import write_with_copies
from test_security import files_of, found_in

pytestmark = pytest.mark.replication

WORD_BYTES = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def words(line: bytes):
    """grep -w's words of a line (C locale), as the index folds them."""
    out, word = set(), bytearray()
    for b in line + b"\n":
        if b in WORD_BYTES:
            word.append(b)
        elif word:
            out.add(bytes(word).lower())
            word = bytearray()
    return out


def stored_chunk(node, chunk_id: bytes) -> bytes:
    """A chunk's stored bytes as the node's catalog and packs hold them, its frame opened (a clear chunk's)."""
    [(pack, offset, length)] = node.query("SELECT pack, offset, length FROM chunks WHERE id = ?", (chunk_id,))
    with open(node.home / "store" / "packs" / f"{pack:08d}.pack", "rb") as f:
        f.seek(offset)
        size, stored_id = struct.unpack("<I", f.read(4))[0], f.read(32)
        assert stored_id == chunk_id and size == length
        frame = f.read(size)
    if frame[0] == 0:
        return frame[1:]
    assert frame[0] == 1, f"codec {frame[0]}"
    return subprocess.run(["zstd", "-d", "-c"], input=frame[1:], capture_output=True, check=True).stdout


def blind_indexes(node):
    """{newline count: [(start, newlines, span, tokens)]}: the blind index of the last revision of each file the node
    holds, parsed as store-format.md lays it out, keyed by its content's newlines (the files here differ in that)."""
    last = {}
    for document, record in node.query("SELECT document, record FROM revisions ORDER BY seq"):
        last[document] = record
    indexes = {}
    for record in last.values():
        if record[0] not in (3, 4):
            continue
        body = record[:-64]
        index = stored_chunk(node, body[-40:-8])
        version, token_length, count = struct.unpack_from("<BBI", index)
        assert (version, token_length) == (1, 4)
        at, blocks = 6, []
        for _ in range(count):
            start, newlines, span, n = struct.unpack_from("<IIII", index, at)
            tokens = struct.unpack_from(f"<{n}I", index, at + 16)
            at += 16 + 4 * n
            blocks.append((start, newlines, span, tokens))
        assert at == len(index)
        indexes[sum(b[1] for b in blocks)] = blocks
    return indexes


@pytest.mark.timeout(300)
def test_a_storage_node_finds_whole_words_it_cannot_read(cluster, node_dir, tmp_path):
    alice = cluster.add("alice")
    storage = cluster.add("storage", serve=True, pins=[alice])
    bob = cluster.add("bob")
    bob.run("contact", "add", "alice", alice.token)
    pcap = tmp_path / "blind.pcap"
    rng = random.Random(46)
    marker = b"zq" + os.urandom(10).hex().encode()  # a word no log line has by chance

    def with_marker(count):
        lines = log_lines(rng, count)
        for i in rng.sample(range(count), count // 200):
            lines[i] += b" user=" + (marker.upper() if i % 2 else marker) + b" done"
        return b"\n".join(lines) + b"\n"

    files = {"shared/api.log": with_marker(30_000), "shared/sub/db.log": with_marker(7_000)}
    with capture_loopback(pcap, [n.listen.split(":")[0] for n in cluster.nodes]):
        cluster.start()
        alice.run("contact", "add", "bob", bob.token)
        write_with_copies(alice, files, tmp_path / "copy")
        alice.run("grant", alice.p("shared"), "bob", "read")
        for relative, data in files.items():
            path = bob.p("@alice", relative)
            eventually(lambda: os.path.exists(path) and os.stat(path).st_size == len(data), 30,
                       lambda: f"bob does not list /@alice/{relative} in full")
        revisions = lambda n: {r[0] for r in n.query("SELECT id FROM revisions")}  # noqa: E731
        eventually(lambda: revisions(alice) <= revisions(storage), 30, "the storage node lacks alice's revisions")
        alice.stop()  # from now on bob reaches only the storage node, which holds no key
        # Until bob sees the connection end, a query may still go to alice and be answered by her: not what is tested.
        eventually(lambda: alice.listen not in bob.connected_addresses(), 20, "bob still shows alice connected")

        # A word that is nowhere: bob fetches the manifests, no block.
        absent = hypernet_grep(bob, ["-w", "-F", "nosuchwordanywhere", "shared"], bob.p("@alice"))
        assert absent.returncode == 1 and absent.stdout == b"", absent.stderr
        # What is not a whole word needs a node that reads: none is reachable.
        partial = hypernet_grep(bob, ["-F", marker[:8].decode(), "shared"], bob.p("@alice"))
        assert partial.returncode == 2 and b"no connected peer may read it" in partial.stderr, partial
        # Replication records small listing chunks in the background (two reached bob up to 2 s after the first
        # grep): the count is read once it settled, so that only the greps' fetches are counted.
        count = lambda: bob.query("SELECT COUNT(*) FROM chunks")[0][0]  # noqa: E731
        held = lambda: settled(count, "the count of bob's chunks", quiet=1.5, timeout=20)  # noqa: E731
        before = held()
        for args in (["-w", "-F", "-n", marker.decode()], ["-w", "-i", "-c", marker.decode()],
                     ["-w", "-l", "-i", marker.upper().decode()]):
            got = hypernet_grep(bob, [*args, "shared"], bob.p("@alice"))
            want = gnu_grep([*args, "shared"], tmp_path / "copy")
            assert got.returncode == want.returncode == 0, (args, got.stderr)
            assert by_file(got.stdout, True) == by_file(want.stdout, True), args
        fetched = held() - before

    # The storage node answered exactly the blocks whose lines hold the word: bob fetched the chunks they span and no
    # others, as computed here from the indexes the storage node holds and the text of the files.
    indexes = blind_indexes(storage)
    expected = 0
    for data in files.values():
        blocks = indexes[data.count(b"\n")]
        lines = data.split(b"\n")
        first, wanted = 0, set()
        for i, (start, newlines, span, tokens) in enumerate(blocks):
            if span == 0:
                continue
            block_lines = lines[first:first + newlines + (1 if i == len(blocks) - 1 else 0)]
            if any(marker.lower() in words(line) for line in block_lines):
                wanted.update(range(i, i + span))
            first += newlines
        assert wanted, "the marker is in no block"
        expected += len(wanted)
    assert fetched == expected, f"bob fetched {fetched} chunks for the matching blocks, which span {expected}"
    cluster.close()
    traffic = pcap.read_bytes()
    assert len(traffic) > 10_000
    hits = found_in([pcap, *files_of(storage.home)], {"the word": marker, "the word upper-cased": marker.upper()})
    assert not hits, f"the word in clear: {hits}"
