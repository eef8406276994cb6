"""Search (issue 18, docs/search.md): `hypernet search` over the local index of what this identity may read, on
real mounts. Words of content, metadata filters, deletions and renames, a deleted index rebuilt at start, a
malformed query's error; with two identities, bob finds what alice shares with him and nothing else, not even a
name, and a revoke removes it; a storage node indexes nothing.
"""

import calendar
import json
import os
import time

import threading

import pytest

import helpers
from cluster import eventually
from helpers import write_file
from test_events import Stream


def search(node, query, *options, timeout=60):
    """The results of `hypernet search --json`, as dicts (node: a helpers.Node or a cluster node)."""
    run = node.run if hasattr(node, "run") else node.cli
    proc = run("search", "--json", *options, "--", query, timeout=timeout)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def paths(node, query, *options):
    return sorted(r["path"] for r in search(node, query, *options))


def finds(node, query, expected, timeout=1.0, *options):
    """Polls until `query` gives exactly `expected` (absolute paths); the contract is within 1 s."""
    eventually(lambda: paths(node, query, *options) == sorted(expected), timeout,
               lambda: f"`search {query}` gives {paths(node, query, *options)}, not {sorted(expected)}")


def test_content_words_and_metadata_filters_find_a_file(node):
    plan = b"The quarterly plan for the team.\nSecond line.\n"
    write_file(node.p("plan.txt"), plan)
    os.makedirs(node.p("old"))
    write_file(node.p("old", "draft.txt"), b"A quarterly plan, only a draft.\n")
    write_file(node.p("image.bin"), bytes(range(256)) * 40)
    os.setxattr(node.p("image.bin"), "user.color", b"red")
    old = calendar.timegm((2026, 1, 15, 12, 0, 0))
    os.utime(node.p("old", "draft.txt"), (old, old))

    finds(node, '"quarterly plan"', [node.p("plan.txt"), node.p("old", "draft.txt")], timeout=5)
    finds(node, '"quarterly plan" -draft', [node.p("plan.txt")])
    finds(node, "quarter*", [node.p("plan.txt"), node.p("old", "draft.txt")])
    finds(node, "quarterly modified:<2026-02-01", [node.p("old", "draft.txt")])
    finds(node, "quarterly modified:<30d", [node.p("plan.txt")])
    finds(node, "image", [node.p("image.bin")])  # a binary file, by its name only
    finds(node, "tag:color=red size:>8K kind:file", [node.p("image.bin")])
    finds(node, "kind:dir", [node.p("old")])
    finds(node, "path:/old/* OR name:plan.txt", [node.p("plan.txt"), node.p("old", "draft.txt")])

    [result] = search(node, "team")
    assert result["snippet"] and "team" in result["snippet"], result
    assert result["owner"] == "me" and result["kind"] == "file" and result["size"] == len(plan), result
    # The human form: the path, then the snippet indented.
    lines = node.cli("search", "team").stdout.splitlines()
    assert lines[0] == node.p("plan.txt") and lines[1].startswith("    "), lines
    assert [r["path"] for r in search(node, "quarterly", "--sort", "path", "--limit", "1", "--offset", "1")] \
        == [node.p("plan.txt")]

    # The same as a folder: symlinks to the matching documents, by name.
    folder = node.p(".hypernet", "search", '"quarterly plan" -draft')
    assert os.listdir(folder) == ["plan.txt"]
    assert os.readlink(os.path.join(folder, "plan.txt")) == "../../../plan.txt"
    with open(os.path.join(folder, "plan.txt"), "rb") as f:
        assert f.read() == plan
    assert sorted(os.listdir(node.p(".hypernet", "search", "quarterly"))) == ["draft.txt", "plan.txt"]
    assert "search" in os.listdir(node.p(".hypernet"))
    assert not os.path.exists(node.p(".hypernet", "search", "colour:red")), "a malformed query is a folder"
    # The views: queries of their own.
    assert os.listdir(node.p(".hypernet", "by-tag", "color")) == ["image.bin"]
    assert os.readlink(node.p(".hypernet", "by-tag", "color", "image.bin")) == "../../../image.bin"
    assert sorted(os.listdir(node.p(".hypernet", "recent"))) == ["draft.txt", "image.bin", "plan.txt"]
    assert os.readlink(node.p(".hypernet", "recent", "plan.txt")) == "../../plan.txt"
    assert sorted(os.listdir(node.p(".hypernet", "by-owner", "me"))) == ["draft.txt", "image.bin", "old", "plan.txt"]
    assert os.listdir(node.p(".hypernet", "conflicts")) == []


def test_deleted_and_renamed_files_show_within_a_second(node):
    os.makedirs(node.p("a"))
    write_file(node.p("a", "notes.txt"), b"zebra crossing\n")
    write_file(node.p("gone.txt"), b"zebra stripes\n")
    finds(node, "zebra", [node.p("a", "notes.txt"), node.p("gone.txt")], timeout=5)

    os.unlink(node.p("gone.txt"))
    finds(node, "zebra", [node.p("a", "notes.txt")])
    os.rename(node.p("a", "notes.txt"), node.p("a", "renamed.txt"))
    finds(node, "zebra", [node.p("a", "renamed.txt")])
    finds(node, "name:renamed.txt", [node.p("a", "renamed.txt")])
    os.rename(node.p("a"), node.p("b"))
    finds(node, "path:/b/*", [node.p("b", "renamed.txt")])
    write_file(node.p("b", "renamed.txt"), b"horse\n")
    finds(node, "zebra", [])
    finds(node, "horse", [node.p("b", "renamed.txt")])


def test_search_watch_prints_new_matches_as_they_arrive(node):
    write_file(node.p("before.txt"), b"walrus before\n")
    finds(node, "walrus", [node.p("before.txt")], timeout=5)
    stream = Stream([node.bin, "--home", str(node.home), "search", "--watch", "--json", "walrus -ignored"], "watch")
    try:
        eventually(lambda: len(stream.lines) == 1, 5, lambda: f"--watch printed {stream.lines}, not the current match")
        write_file(node.p("ignored.txt"), b"walrus ignored\n")
        write_file(node.p("new.txt"), b"a new walrus\n")
        eventually(lambda: len(stream.lines) >= 2, 5, lambda: f"--watch printed {stream.lines}")
        time.sleep(1)
        printed = [json.loads(text)["path"] for _, text in stream.lines]
        assert printed == [node.p("before.txt"), node.p("new.txt")], printed
    finally:
        stream.close()


def test_a_malformed_query_names_the_column_and_exits_9(node):
    for query, column, words in [
        ('plan "quarterly', 6, "unterminated quote"),
        ("colour:red", 1, "unknown filter 'colour:'"),
        ("a OR", 3, "'OR' needs a term on each side"),
        ("size:>lots", 6, "'size:>lots'"),
    ]:
        proc = node.cli("search", "--", query, check=False)
        assert proc.returncode == 9, (query, proc.returncode, proc.stderr)
        assert proc.stdout == ""
        [line] = proc.stderr.splitlines()
        assert f"column {column}: " in line and words in line, (query, line)
    assert node.cli("search", "--sort", "colour", "x", check=False).returncode == 2


def test_a_query_folder_spells_a_slash_as_an_escape(node):
    os.makedirs(node.p("projects", "a"))
    os.makedirs(node.p("other"))
    write_file(node.p("projects", "a", "notes.txt"), b"otter notes\n")
    write_file(node.p("other", "notes.txt"), b"otter elsewhere\n")
    finds(node, "otter", [node.p("projects", "a", "notes.txt"), node.p("other", "notes.txt")], timeout=5)
    finds(node, "otter path:/projects/*", [node.p("projects", "a", "notes.txt")])
    for escaped in ["otter path:%2Fprojects%2F*", "otter path:%2fprojects%2f*", "otter path:\u2215projects\u2215*",
                    "path:projects%2Fa%2Fnotes.txt"]:
        folder = node.p(".hypernet", "search", escaped)
        assert os.listdir(folder) == ["notes.txt"], escaped
        assert os.path.realpath(os.path.join(folder, "notes.txt")) == os.path.realpath(
            node.p("projects", "a", "notes.txt"))
    both = sorted(os.listdir(node.p(".hypernet", "search", "otter path:*%2Fnotes.txt")))
    assert both == sorted(os.listdir(node.p(".hypernet", "search", "otter"))) and len(both) == 2, both


def index_status(node):
    run = node.run if hasattr(node, "run") else node.cli
    return json.loads(run("index", "--json").stdout)


def test_an_append_indexes_only_the_appended_lines(node):
    """A log grown by appends: each append's words are found within 1 s, and the indexer reads about the appended
    bytes (and the old last chunk: at most 2 × 256 KiB more), not the file; a rewrite in the middle indexes it
    whole."""
    line = b"%06d routine entry with ordinary words and nothing to find\n"
    log = b"".join(line % i for i in range(70000))  # 4 MiB
    write_file(node.p("app.log"), log)
    finds(node, "routine", [node.p("app.log")], timeout=10)
    size = len(log)
    for i in range(12):
        appended = b"".join(line % j for j in range(i * 1000, i * 1000 + 2000)) + f"zebra{i} done\n".encode()
        before = index_status(node)
        with open(node.p("app.log"), "ab") as f:
            f.write(appended)
        size += len(appended)
        finds(node, f"zebra{i}", [node.p("app.log")])
        after = index_status(node)
        assert after["appendsIndexed"] > before["appendsIndexed"], (before, after)
        read = after["textBytesRead"] - before["textBytesRead"]
        assert len(appended) <= read <= len(appended) + 2 * 256 * 1024, (i, read, len(appended), size)
    [result] = search(node, "zebra11")
    assert result["size"] == size == os.path.getsize(node.p("app.log")), result
    finds(node, "zebra0 routine", [node.p("app.log")])
    assert len(search(node, "zebra* OR routine", "--limit", "100")) == 1, "one result for a document of many rows"
    finds(node, "routine -zebra5", [])
    # A rewrite in the middle: indexed whole again.
    before = index_status(node)
    with open(node.p("app.log"), "r+b") as f:
        f.seek(size // 2)
        f.write(b"\nunicorn\n")
    finds(node, "unicorn", [node.p("app.log")], timeout=10)  # 5 MB indexed whole: no 1 s promise
    after = index_status(node)
    assert after["appendsIndexed"] == before["appendsIndexed"], (before, after)
    assert after["textBytesRead"] - before["textBytesRead"] >= size, (before, after)
    finds(node, "zebra3", [node.p("app.log")])


def delete_index(node):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{node.home}/search.sqlite{suffix}"):
            os.unlink(f"{node.home}/search.sqlite{suffix}")


def damage(index):
    index.write_bytes(b"not a database" * 1000)
    wal = f"{index}-wal"
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0, "the stopped daemon left frames in the index's WAL"


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.mark.timeout(900)
def test_a_page_of_large_files_does_not_hold_all_their_texts(node, monkeypatch):
    """The indexer commits a log page's texts every 16 MiB (`SearchIndexer.pageTextLimit`) rather than holding them
    all until the page's end: twelve text files of 8 MiB (96 MiB, one page) are indexed whole by a daemon whose
    peak RSS grows by far less than their 96 MiB. Written with indexing off, then indexed at the next start."""
    node.stop()
    monkeypatch.setenv("HYPERNET_SEARCH_INDEX", "off")
    node.start()
    block = "".join(f"line {n} of words alpha{n % 997} beta{n % 991} gamma{n % 983}\n" for n in range(20_000))
    block = (block * (1 + (1 << 20) // len(block)))[: 1 << 20]
    for i in range(12):
        write_file(node.p(f"big{i}.txt"), (f"marker{i}\n" + block * 8)[: 8 << 20].encode())
    node.stop()
    node.start()
    baseline = vm_kib(node.pid, "VmRSS")
    node.stop()
    monkeypatch.delenv("HYPERNET_SEARCH_INDEX")
    node.start()
    eventually(lambda: index_status(node)["indexed"] >= index_status(node)["logged"], 600,
               lambda: f"not indexed: {index_status(node)}")
    grown = (vm_kib(node.pid, "VmHWM") - baseline) // 1024
    assert paths(node, "marker11") == [node.p("big11.txt")]
    assert paths(node, "alpha5") == sorted(node.p(f"big{i}.txt") for i in range(12))
    assert grown < 100, f"indexing 96 MiB of text grew the daemon by {grown} MiB"


def test_a_deleted_index_is_rebuilt_at_start_with_the_same_results(node):
    for i in range(30):
        write_file(node.p(f"doc{i}.txt"), f"common word{i} {'even' if i % 2 == 0 else 'odd'}\n".encode())
    finds(node, "even", [node.p(f"doc{i}.txt") for i in range(0, 30, 2)], timeout=10)
    before = search(node, "common", "--limit", "100", "--sort", "path")
    node.stop()
    index = node.home / "search.sqlite"
    assert index.exists() and (index.stat().st_mode & 0o777) == 0o600
    delete_index(node)
    node.start()
    eventually(lambda: search(node, "common", "--limit", "100", "--sort", "path") == before, 10,
               lambda: "the rebuilt index answers differently")
    # `index --rebuild` waits until everything is indexed again.
    out = node.cli("index", "--rebuild").stdout
    assert "30 documents indexed" in out, out
    assert search(node, "common", "--limit", "100", "--sort", "path") == before
    # A damaged index is replaced at start.
    node.stop()
    damage(index)
    node.start()
    eventually(lambda: search(node, "common", "--limit", "100", "--sort", "path") == before, 10,
               lambda: "the index rebuilt after damage answers differently")
    assert "store is consistent" in node.cli("fsck").stdout
    # fsck without a daemon reports a damaged index, and the next start rebuilds it.
    node.stop()
    damage(index)
    proc = node.cli("fsck", check=False)
    assert proc.returncode == 7 and "search index: " in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    node.start()
    eventually(lambda: search(node, "common", "--limit", "100", "--sort", "path") == before, 10,
               lambda: "the index rebuilt after fsck answers differently")


def alice_bob_and_storage(cluster):
    """alice's node, bob's and a storage node, both pinning alice's tree, started; alice and bob know each other;
    alice has an empty folder /share."""
    alice = cluster.add("alice")
    bob = cluster.add("bob", pins=[alice])
    storage = cluster.add("storage", serve=True, pins=[alice])
    cluster.start()
    alice.run("contact", "add", "bob", bob.token)
    bob.run("contact", "add", "alice", alice.token)
    os.makedirs(alice.p("share"))
    return alice, bob, storage


@pytest.mark.replication
@pytest.mark.timeout(240)
def test_bob_finds_what_alice_shares_and_nothing_else(cluster):
    alice, bob, storage = alice_bob_and_storage(cluster)
    write_file(alice.p("share", "report.txt"), b"budget for the lighthouse project\n")
    write_file(alice.p("share", "hidden.txt"), b"lighthouse secrets\n")
    write_file(alice.p("private-lighthouse.txt"), b"lighthouse diary\n")
    finds(alice, "lighthouse", [alice.p("share", "report.txt"), alice.p("share", "hidden.txt"),
                                alice.p("private-lighthouse.txt")], timeout=5)
    assert search(bob, "lighthouse") == [], "bob finds alice's documents before any grant"

    alice.run("grant", alice.p("share"), "bob", "read")
    alice.run("revoke", alice.p("share", "hidden.txt"), "bob")
    shared = bob.p("@alice", "share", "report.txt")
    finds(bob, "lighthouse", [shared], timeout=15)
    finds(bob, "owner:alice", [bob.p("@alice", "share"), shared])
    finds(bob, "shared:yes budget", [shared])
    # hidden.txt has a chain of its own that leaves bob out: only alice reads it.
    finds(alice, "shared:yes kind:file", [alice.p("share", "report.txt")], timeout=5)
    [result] = search(bob, "budget")
    assert result["owner"] == "alice" and result["author"] == "alice", result
    # Neither the unreadable document nor the private one, not even by name.
    for query in ["secrets", "diary", "name:hidden.txt", "name:private*", "hidden", "private"]:
        assert search(bob, query) == [], f"bob's `search {query}` shows {search(bob, query)}"
        assert os.listdir(bob.p(".hypernet", "search", query)) == []
    assert os.listdir(bob.p(".hypernet", "search", "lighthouse")) == ["report.txt"]
    assert sorted(os.listdir(bob.p(".hypernet", "by-owner", "alice"))) == ["report.txt", "share"]
    assert os.path.realpath(bob.p(".hypernet", "search", "lighthouse", "report.txt")) == os.path.realpath(shared)

    alice.run("revoke", alice.p("share"), "bob")
    write_file(alice.p("share", "report.txt"), b"after the revoke\n")
    finds(bob, "lighthouse", [], timeout=10)
    finds(bob, "owner:alice", [], timeout=10)
    assert os.listdir(bob.p(".hypernet", "search", "lighthouse")) == []

    # A storage node indexes nothing and finds nothing.
    assert search(storage, "lighthouse") == [] and search(storage, "") == []
    assert not (storage.home / "search.sqlite").exists()


@pytest.mark.replication
@pytest.mark.timeout(240)
def test_own_edits_are_indexed_ahead_of_another_identitys_arrivals(cluster, monkeypatch):
    """A page of bob's log holding his own edit and alice's arrivals indexes his edit first: it shows while her
    part is still being indexed (`index.foreign:sleep(4000)` stalls that part), where before it waited for her part
    (in the 20,000-document test, a walk of her shared tree: over the second that bob's own edits may take)."""
    if not helpers.has_failpoints(helpers.hypernet_bin()):
        pytest.skip("the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")
    monkeypatch.setenv("HYPERNET_FAILPOINT", "index.foreign:sleep(4000)")
    alice, bob, storage = alice_bob_and_storage(cluster)
    monkeypatch.delenv("HYPERNET_FAILPOINT")
    alice.run("grant", alice.p("share"), "bob", "read")
    write_file(alice.p("share", "first.txt"), b"walrus\n")
    finds(bob, "walrus", [bob.p("@alice", "share", "first.txt")], timeout=40)  # each page of hers stalls 4 s

    # bob's indexer stalls on alice's next arrival; meanwhile another of hers and bob's own edit are logged, so
    # that its next page holds both.
    write_file(alice.p("share", "second.txt"), b"narwhal\n")
    eventually(lambda: "second.txt" in os.listdir(bob.p("@alice", "share")), 10, "alice's second file never arrived")
    time.sleep(0.5)  # the indexer's batching delay: it stalls on the second file now
    write_file(alice.p("share", "third.txt"), b"dugong\n")
    eventually(lambda: "third.txt" in os.listdir(bob.p("@alice", "share")), 10, "alice's third file never arrived")
    write_file(bob.p("own.txt"), b"octopus\n")
    eventually(lambda: paths(bob, "octopus"), 10, "bob's own edit is not found")
    assert paths(bob, "dugong") == [], "bob's own edit waited for alice's arrival logged before it"
    finds(bob, "dugong", [bob.p("@alice", "share", "third.txt")], timeout=15)
    finds(bob, "narwhal", [bob.p("@alice", "share", "second.txt")])


def all_paths(node, query):
    """Every result of `query`, page by page (a page holds at most 10,000)."""
    found = []
    while True:
        page = search(node, query, "--limit", "10000", "--offset", str(len(found)), "--sort", "path", timeout=600)
        found += [r["path"] for r in page]
        if len(page) < 10000:
            return sorted(found)


def caught_up(node, documents, timeout=600):
    """Waits until `node`'s index holds `documents` documents and has reached the end of its log."""
    def done():
        status = index_status(node)
        return status["documents"] == documents and status["indexed"] >= status["logged"]
    eventually(done, timeout, lambda: f"{node.name}'s index: {index_status(node)}, not {documents} documents",
               interval=1)


def generate(node, top, prefix, count):
    """`count` small text documents below node's `top`, 100 a folder: `PREFIX-NNNNN.txt` holding the words
    `common`, `PREFIXN` and the group `gNN` (N mod 50). Returns their relative paths."""
    made = []
    for folder in range(count // 100):
        os.makedirs(node.p(top, f"{prefix}{folder:02d}"))
        for n in range(folder * 100, folder * 100 + 100):
            path = os.path.join(top, f"{prefix}{folder:02d}", f"{prefix}-{n:05d}.txt")
            write_file(node.p(path), f"common {prefix}{n} g{n % 50:02d}\n".encode())
            made.append(path)
    return made


@pytest.mark.replication
@pytest.mark.timeout(900)
def test_twenty_thousand_documents_of_two_identities_respect_rights_exactly(cluster):
    """Issue 18's test at its size: alice writes 5,000 documents in a folder shared with bob and 5,000 private
    ones, bob 10,000 of his own. bob's results are exactly his and the shared ones, over the whole set (every
    document by a word and by metadata, and none of alice's private ones by word or name); edits, renames,
    deletions and a revoke show; the query folders list what `search` gives; a deleted index is rebuilt with the
    same results; the storage node indexes nothing."""
    alice, bob, storage = alice_bob_and_storage(cluster)
    alice.run("grant", alice.p("share"), "bob", "read")

    started = time.monotonic()
    made = {}
    writers = [threading.Thread(target=lambda key, *a: made.__setitem__(key, generate(*a)), args=args)
               for args in [("share", alice, "share", "share", 5000), ("private", alice, "private", "priv", 5000),
                            ("bob", bob, "own", "bob", 10000)]]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert sum(map(len, made.values())) == 20000
    print(f"20,000 documents written in {time.monotonic() - started:.0f} s")

    expected = sorted([bob.p("@alice", p) for p in made["share"]] + [bob.p(p) for p in made["bob"]])
    # Indexed: bob's 10,000 and alice's 5,000 shared documents, and their folders (1 + 100 and 1 + 50).
    caught_up(bob, 15152)
    print(f"written, replicated and indexed in {time.monotonic() - started:.0f} s")
    # The whole set, by a word of every document: bob's and the shared ones, not one of alice's private ones.
    assert all_paths(bob, "common") == expected
    for query in ["priv*", "name:priv*", "path:/@alice/private*", "g07 path:*priv*"]:
        assert search(bob, query) == [], f"bob's `search {query}` shows {search(bob, query)[:3]}"
    assert len(all_paths(alice, "common")) == 10000 and all_paths(alice, "bob*") == []

    # The query folders list what `search` gives (a group: 100 shared documents and 200 of bob's).
    for query in ["g07", "g31 -bob*", "common path:/@alice/*"]:
        names = sorted(r["name"] for r in search(bob, query, "--limit", "1000"))
        folder = bob.p(".hypernet", "search", query.replace("/", "%2F"))
        assert sorted(os.listdir(folder)) == names and names, query
    assert len(os.listdir(bob.p(".hypernet", "search", "g07"))) == 300

    # Edits, renames and deletions: bob's own within a second, alice's once they arrive.
    write_file(bob.p("own", "bob00", "bob-00007.txt"), b"edited zebra\n")
    os.rename(bob.p("own", "bob00", "bob-00008.txt"), bob.p("own", "bob00", "renamed.txt"))
    os.unlink(bob.p("own", "bob00", "bob-00009.txt"))
    write_file(alice.p("share", "share00", "share-00001.txt"), b"edited giraffe\n")
    finds(bob, "zebra", [bob.p("own", "bob00", "bob-00007.txt")])
    finds(bob, "bob8", [bob.p("own", "bob00", "renamed.txt")])
    finds(bob, "bob9", [])
    finds(bob, "giraffe", [bob.p("@alice", "share", "share00", "share-00001.txt")], timeout=15)
    # A revoke: the folder's 100 documents leave bob's results.
    alice.run("revoke", alice.p("share", "share03"), "bob")
    finds(bob, "path:/@alice/share/share03/*", [], timeout=15)
    expected = sorted(
        set(expected) - {bob.p("own", "bob00", f"bob-0000{n}.txt") for n in (8, 9)}
        - {bob.p("@alice", p) for p in made["share"] if p.startswith("share/share03/")}
        | {bob.p("own", "bob00", "renamed.txt")})
    assert all_paths(bob, "kind:file") == expected
    before = all_paths(bob, "common")

    # A deleted index is rebuilt at start, with the same results.
    bob.stop()
    delete_index(bob)
    bob.start()
    caught_up(bob, 15152 - 102)  # one document deleted, a folder and its 100 documents revoked
    assert all_paths(bob, "common") == before, "the rebuilt index answers differently"
    assert all_paths(bob, "kind:file") == expected

    assert search(storage, "") == [] and not (storage.home / "search.sqlite").exists()
