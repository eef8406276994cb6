"""Push, not polling (issue 5): every revision stored on a node, made there or received, is an event for
`hypernet watch PATH…` and for readers of `/.hypernet/events`; revisions reach nodes that are not connected to
the writer (forwarding); a watcher that was away resumes with `--since` and misses nothing; `tail -f` on one
node follows a log appended on another.

Nodes run on their own loopback addresses (cluster.py), or, for the chain, in network-namespace hosts
(netns.py) with the writer and the far end cut apart by nft. No traffic leaves the machine.
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import cluster as cluster_module
from cluster import eventually, write
from helpers import doc_id, read_file

pytestmark = pytest.mark.replication


class Stream:
    """A process printing lines (`hypernet watch`, `cat /.hypernet/events`, `tail -f`), read in the background:
    each line with the wall time it arrived. Killed by pid at `close`, also when the test fails."""

    def __init__(self, args, name):
        self.name = name
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines = []  # (time.time() on arrival, text without the newline)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw.decode().rstrip("\n")))

    def events(self):
        return [json.loads(text) for _, text in list(self.lines)]

    def revisions(self):
        return [e["rev"] for e in self.events() if e.get("event") == "revision"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        return self.proc.stderr.read().decode()


@pytest.fixture
def streams():
    started = []

    def start(args, name):
        s = Stream([str(a) for a in args], name)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def watch(node, streams, *paths, since=None):
    args = [node.bin, "--home", node.home, "watch", *(paths or [node.mount])]
    if since is not None:
        args += ["--since", since]
    return streams(args, f"watch on {node.name}")


def revisions_of(node, path):
    """Every revision of the document at `path` in `node`'s catalog, in the order the node stored them."""
    rows = node.query("SELECT lower(hex(id)) FROM revisions WHERE lower(hex(document)) = ? ORDER BY seq",
                      (doc_id(path),))
    return [r[0] for r in rows]


def assert_causal(events, name):
    """Each revision listed after every parent of it that is listed at all (per document)."""
    position = {}
    for i, e in enumerate(events):
        if e.get("event") != "revision":
            continue
        for p in e["parents"]:
            assert p not in position or position[p] < i, \
                f"{name}: revision {e['rev'][:12]} of {e['path']} came before its parent {p[:12]}"
        assert e["rev"] not in position, f"{name}: revision {e['rev'][:12]} of {e['path']} reported twice"
        position[e["rev"]] = i


# --- a burst of writes seen by a watcher and by a reader of /.hypernet/events --------------------------------

@pytest.mark.timeout(180)
def test_watch_and_events_file_see_every_revision_of_a_burst_in_causal_order(cluster, streams):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    c = cluster.add("c", identity=a)
    cluster.start()

    watcher = watch(b, streams)
    reader = streams(["cat", c.p(".hypernet", "events")], "events reader on c")
    time.sleep(1)  # both are registered: the stream starts at the present

    files = [f"burst-{i}.txt" for i in range(4)]
    for i in range(50):
        for name in files:
            write(a.p(name), f"{name} write {i}\n".encode())
    expected = {name: revisions_of(a, a.p(name)) for name in files}
    wanted = {rev for revs in expected.values() for rev in revs}
    assert len(wanted) >= 200, f"node a: 200 writes made only {len(wanted)} revisions"

    for stream in (watcher, reader):
        eventually(lambda: wanted <= set(stream.revisions()), 20,
                   lambda: f"{stream.name}: {len(wanted - set(stream.revisions()))} of {len(wanted)} revisions of the "
                           f"burst never reported ({len(stream.lines)} lines, exit status {stream.proc.poll()})")
        events = stream.events()
        assert_causal(events, stream.name)
        for name, revs in expected.items():
            seen = [e["rev"] for e in events if e.get("path") == f"/{name}"]
            assert seen == revs, \
                f"{stream.name}: the revisions of /{name} are reported out of order or under another path"
        sample = next(e for e in events if e.get("path") == f"/{files[0]}")
        for field in ("event", "path", "rev", "author", "time", "seq", "document", "kind", "size", "parents",
                      "conflict"):
            assert field in sample, f"{stream.name}: event lines lack the field {field!r}: {sample}"
        assert sample["author"] == a.token, f"{stream.name}: author {sample['author']} is not a's identity"


# --- tail -f follows a log appended on another node ---------------------------------------------------------

@pytest.mark.timeout(120)
def test_tail_f_on_b_follows_a_log_appended_on_a(cluster, streams):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()

    write(a.p("app.log"), b"start\n")
    eventually(lambda: os.path.exists(b.p("app.log")), 5, "node b never shows app.log written on a")
    tail = streams(["tail", "-n", "+1", "-f", b.p("app.log")], "tail -f on b")
    eventually(lambda: tail.lines, 5, "tail -f on b printed nothing")

    # A logger holding the file open: 500 lines over 10 s, each carrying the time it was written.
    count, interval = 500, 0.02
    fd = os.open(a.p("app.log"), os.O_WRONLY | os.O_APPEND)
    try:
        start = time.monotonic()
        for i in range(count):
            os.write(fd, f"line {i:04d} {time.time():.6f}\n".encode())
            time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
        eventually(lambda: len(tail.lines) >= count + 1, 10,
                   lambda: f"tail -f on b shows {len(tail.lines) - 1} of {count} lines appended on a")
    finally:
        os.close(fd)

    lines = list(tail.lines)[1:]
    numbers = [int(text.split()[1]) for _, text in lines]
    assert numbers == list(range(count)), \
        f"tail -f on b: lines missing, repeated or out of order (first wrong at index " \
        f"{next(i for i, n in enumerate(numbers + [-1]) if i >= len(numbers) or n != i)})"
    delays = sorted(arrived - float(text.split()[2]) for arrived, text in lines)
    median, worst = delays[len(delays) // 2], delays[-1]
    print(f"tail -f delay from a's write to b's output: median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms")
    assert worst <= 1.5, f"tail -f on b: a line took {worst:.2f} s to appear (median {median:.2f} s); limit 1.5 s"


# --- forwarding: a node connected only to a relay still gets pushes ------------------------------------------

@pytest.fixture
def lab_cluster(make_node, node_dir):
    with cluster_module.lab_cluster(make_node, node_dir, "hnevents") as cl:
        yield cl


@pytest.mark.timeout(120)
def test_a_node_connected_only_through_a_relay_gets_pushes(lab_cluster, streams):
    cl = lab_cluster
    a = cl.add("a")
    b = cl.add("b", identity=a)
    c = cl.add("c", identity=a)
    cl.lab.partition([a.host.name], [c.host.name])  # the chain a - b - c
    cl.start(connected=False)
    cl.wait_connected(nodes=[a, b], timeout=30)
    cl.wait_connected(nodes=[b, c], timeout=30)
    assert a.listen not in c.connected_addresses(), "c reached a across the nft cut: not a chain"

    watcher = watch(c, streams)
    time.sleep(1)
    sent = time.monotonic()
    write(a.p("pushed.txt"), b"from a, through b\n")
    rev = revisions_of(a, a.p("pushed.txt"))[-1]
    eventually(lambda: os.path.exists(c.p("pushed.txt")) and read_file(c.p("pushed.txt")) == b"from a, through b\n",
               2.0, "node c (connected only to b) does not show pushed.txt within 2 s")
    eventually(lambda: rev in watcher.revisions(), 2.0, "watch on c never reported the revision made on a")
    print(f"a -> b -> c: visible on c after {time.monotonic() - sent:.2f} s")


# --- a watcher that was away resumes with --since and misses nothing ----------------------------------------

@pytest.mark.timeout(180)
def test_a_subscriber_killed_for_30_s_gets_and_reports_every_revision(cluster, streams):
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()

    watcher = watch(b, streams)
    time.sleep(1)
    write(a.p("feed.txt"), b"before\n")
    eventually(lambda: watcher.events(), 5, "watch on b reported nothing for a write on a")
    last_seq = max(e["seq"] for e in watcher.events())

    b.kill9()
    watcher.close()
    started = time.monotonic()
    for i in range(100):
        write(a.p("feed.txt"), f"revision {i}\n".encode())
        time.sleep(max(0.0, started + (i + 1) * 0.3 - time.monotonic()))
    made = set(revisions_of(a, a.p("feed.txt"))[-100:])
    assert len(made) == 100, f"node a: 100 writes made {len(made)} revisions"

    b.start()
    cluster.wait_connected(timeout=30)
    resumed = watch(b, streams, since=last_seq)
    eventually(lambda: made <= set(resumed.revisions()), 30,
               lambda: f"watch --since {last_seq} on b reported {len(made & set(resumed.revisions()))} of the 100 "
                       f"revisions made while b was down")
    assert_causal(resumed.events(), "watch --since on b")
    assert read_file(b.p("feed.txt")) == b"revision 99\n", "node b does not show the last revision after restart"


# --- /.hypernet/events on one node ------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_events_file_readers_each_get_every_event_and_can_be_interrupted(node, streams):
    first = streams(["cat", node.p(".hypernet", "events")], "first reader")
    second = streams(["cat", node.p(".hypernet", "events")], "second reader")
    time.sleep(0.5)
    for i in range(5):
        write(node.p(f"e{i}.txt"), b"x\n")
    for reader in (first, second):
        eventually(lambda: {f"/e{i}.txt" for i in range(5)} <= {e["path"] for e in reader.events()}, 5,
                   lambda: f"{reader.name} saw {[e['path'] for e in reader.events()]}")

    # A reader blocked in read(2) ends at once on a signal (the FUSE request is interrupted).
    idle = streams(["cat", node.p(".hypernet", "events")], "idle reader")
    time.sleep(0.5)
    idle.proc.send_signal(signal.SIGINT)
    try:
        idle.proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        raise AssertionError("cat /.hypernet/events ignored SIGINT for 3 s: the blocked read was not interrupted")


def test_watch_refuses_a_path_outside_the_mount(node):
    proc = node.cli("watch", "/tmp", check=False, timeout=10)
    assert proc.returncode != 0, "hypernet watch /tmp succeeded"
    assert "not a Hypernet path" in proc.stderr, f"unclear error for watch /tmp: {proc.stderr!r}"


# --- bounded fan-out: a writer followed by more nodes than its eager fan-out ---------------------------------

def bytes_sent_by(pid):
    """Bytes the process's TCP sockets have sent (ss -tinp), over all its connections."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True).stdout
    total, lines = 0, out.splitlines()
    for i, line in enumerate(lines):
        if f"pid={pid}," in line and i + 1 < len(lines):
            total += sum(int(tok.split(":")[1]) for tok in lines[i + 1].split() if tok.startswith("bytes_sent:"))
    return total


@pytest.mark.timeout(180)
def test_a_writer_with_six_followers_reaches_all_and_uploads_content_to_few(cluster):
    a = cluster.add("a")
    followers = [cluster.add(f"s{i}", serve=True, pins=[a]) for i in range(6)]
    cluster.start(timeout=40)

    write(a.p("warm.txt"), b"every follower subscribed\n")
    warm = revisions_of(a, a.p("warm.txt"))[-1]
    eventually(lambda: all(f.has_revision(warm) for f in followers), 10, "not every follower got warm.txt")

    data = os.urandom(2 << 20)  # below the forwarding threshold: pushed, not forwarded
    sent = bytes_sent_by(a.pid)
    write(a.p("payload.bin"), data)
    rev = revisions_of(a, a.p("payload.bin"))[-1]
    eventually(lambda: all(f.has_revision(rev) for f in followers), 5,
               lambda: f"followers without a's revision after 5 s: {[f.name for f in followers if not f.has_revision(rev)]}")
    upload = (bytes_sent_by(a.pid) - sent) / len(data)
    print(f"writer upload for 6 followers: {upload:.2f} bytes per byte")
    assert upload < 6, f"node a uploaded {upload:.2f} bytes per byte to 6 followers: its fan-out is not bounded"


# --- no event reveals a name to a node that cannot read the document ----------------------------------------

@pytest.mark.timeout(120)
def test_a_node_that_only_stores_a_tree_gets_no_event_naming_its_documents(cluster, streams):
    a = cluster.add("a")
    d = cluster.add("d", pins=[a])  # another identity, mounted, storing a's tree without any right on it
    cluster.start()

    reader = streams(["cat", d.p(".hypernet", "events")], "events reader on d")
    time.sleep(1)
    name = f"secret-{os.urandom(8).hex()}.txt"
    write(a.p(name), b"not for d\n")
    rev = revisions_of(a, a.p(name))[-1]
    eventually(lambda: d.has_revision(rev), 10, "node d (pinning a's tree) never stored a's revision")
    write(d.p("own.txt"), b"d's own file\n")
    eventually(lambda: any(e.get("path") == "/own.txt" for e in reader.events()), 5,
               "node d's events reader did not report d's own write")
    leaked = [text for _, text in reader.lines if name in text or rev in text]
    assert not leaked, f"node d's event stream reveals a's document it cannot read: {leaked[:2]}"


@pytest.mark.timeout(120)
def test_a_contact_gets_the_events_of_what_is_shared_with_it_and_of_nothing_else(cluster, streams):
    a = cluster.add("a")
    b = cluster.add("b", pins=[a])  # bob: another identity, holding alice's tree
    cluster.start()
    a.run("contact", "add", "bob", b.token)
    b.run("contact", "add", "alice", a.token)
    os.makedirs(a.p("share"))
    write(a.p("share", "doc.txt"), b"shared\n")
    secret = f"private-{os.urandom(8).hex()}.txt"
    write(a.p(secret), b"not for bob\n")
    a.run("grant", a.p("share"), "bob", "read")
    eventually(lambda: os.path.exists(b.p("@alice", "share", "doc.txt")), 10, "bob does not see /@alice/share/doc.txt")

    watcher = watch(b, streams, b.p("@alice", "share"))
    reader = streams(["cat", b.p(".hypernet", "events")], "events reader on b")
    time.sleep(1)
    write(a.p("share", "doc.txt"), b"shared, second version\n")
    shared_rev = revisions_of(a, a.p("share", "doc.txt"))[-1]
    write(a.p(secret), b"still not for bob\n")
    secret_rev = revisions_of(a, a.p(secret))[-1]

    eventually(lambda: shared_rev in watcher.revisions(), 10,
               lambda: f"watch /@alice/share on b did not report alice's revision: {watcher.lines}")
    event = next(e for e in watcher.events() if e.get("rev") == shared_rev)
    assert event["path"] == "/@alice/share/doc.txt", f"the shared revision's event has path {event['path']!r}"
    assert event["author"] == a.token, f"the shared revision's event names {event['author']} as its author"
    eventually(lambda: shared_rev in reader.revisions(), 10, "b's /.hypernet/events did not report the shared revision")
    # The private revision reached bob's node, yet no event there tells of it.
    eventually(lambda: b.has_revision(secret_rev), 10, "alice's private revision never reached bob's node")
    time.sleep(1)
    leaked = [text for stream in (watcher, reader) for _, text in stream.lines if secret in text or secret_rev in text]
    assert not leaked, f"bob's events tell of alice's document that is not shared with him: {leaked[:2]}"
