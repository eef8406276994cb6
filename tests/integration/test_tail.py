"""`hypernet tail [-n N] [-f] [--grep PATTERN] PATH…` (issue 19, items 2 and 4): two nodes of one identity, a
generator (tests/tools/loggen.py) appending lines at a steady rate on a, `tail -f` on b. What tail prints equals
GNU grep over the final file, in order, with no line lost or printed twice, across a SIGKILL and restart of the
writer's daemon, a restart of tail's own daemon, and a restart of tail itself with --cursor; a new file below the
path joins within 5 s.

Nodes run on their own loopback addresses (cluster.py). No traffic leaves the machine.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster import eventually
from helpers import read_file, write_file

pytestmark = pytest.mark.replication

LOGGEN = Path(__file__).resolve().parent.parent / "tools" / "loggen.py"
RATE = 40  # lines per second
LINES = 400  # 10 s of log


class TailProcess:
    """`hypernet tail` on `node` with `args`, its stdout lines collected by a thread; `stop()` interrupts it."""

    def __init__(self, node, *args):
        self.proc = subprocess.Popen([node.bin, "--home", str(node.home), "tail", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def stop(self):
        """Ctrl-C; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return self.proc.returncode, self.proc.stderr.read().decode(errors="replace")


@pytest.fixture
def pair(cluster):
    """a writes, b (same identity) tails; `logs/` exists on both."""
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    os.mkdir(a.p("logs"))
    eventually(lambda: os.path.isdir(b.p("logs")), 10, "logs/ did not reach b")
    tails = []
    generators = []
    yield a, b, tails, generators
    stop_generators(generators)
    for t in tails:
        t.stop()


def stop_generators(generators):
    for g in generators:
        if g.poll() is None:
            g.kill()
        g.wait()


def loggen(generators, path, lines=LINES, service="svc"):
    proc = subprocess.Popen([sys.executable, str(LOGGEN), path, "--rate", str(RATE), "--lines", str(lines),
                             "--service", service])
    generators.append(proc)
    return proc


def wait_written(generator, timeout=120):
    assert generator.wait(timeout) == 0, "the log generator failed"


def grep(path, word):
    """The lines of the file that contain `word`, as GNU grep prints them."""
    out = subprocess.run(["grep", "-F", "--", word, path], capture_output=True, check=False).stdout
    return out.decode().splitlines()


def same_file(a, b, name):
    eventually(lambda: os.path.exists(b.p("logs", name)) and read_file(b.p("logs", name)) == read_file(
        a.p("logs", name)), 30, f"b's logs/{name} never equalled a's")


def printed_all(tail, expected, timeout=30):
    eventually(lambda: len(tail.lines) >= len(expected), timeout,
               lambda: f"tail printed {len(tail.lines)} of {len(expected)} lines")
    time.sleep(1.5)  # anything printed twice would come now
    assert tail.lines == expected, first_difference(tail.lines, expected)


def first_difference(got, expected):
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            return f"line {i}: tail printed {g!r}, grep gives {e!r}"
    return f"tail printed {len(got)} lines, grep gives {len(expected)}"


@pytest.mark.timeout(240)
def test_tail_f_grep_prints_what_grep_gives_across_a_kill_of_the_writers_daemon(pair):
    a, b, tails, generators = pair
    path = b.p("logs", "app.log")
    write_file(a.p("logs", "app.log"), b"")
    eventually(lambda: os.path.exists(path), 10, "app.log did not reach b")
    tail = TailProcess(b, "-f", "-n", "0", "--grep", "ERROR", path)
    tails.append(tail)
    generator = loggen(generators, a.p("logs", "app.log"))
    eventually(lambda: len(tail.lines) >= 5, 20, lambda: f"tail printed {tail.lines} while the log grew")
    a.kill9()
    time.sleep(1)
    a.start()
    wait_written(generator)
    same_file(a, b, "app.log")
    expected = grep(b.p("logs", "app.log"), "ERROR")
    assert len(expected) >= LINES // 7
    printed_all(tail, expected)


@pytest.mark.timeout(240)
def test_tail_resumes_across_restarts_of_its_daemon_and_of_itself_with_a_cursor(pair, tmp_path):
    a, b, tails, generators = pair
    cursor = tmp_path / "tail.cursor"
    write_file(a.p("logs", "app.log"), b"")
    eventually(lambda: os.path.exists(b.p("logs", "app.log")), 10, "app.log did not reach b")
    first = TailProcess(b, "-f", "-n", "0", "--cursor", str(cursor), b.p("logs"))
    tails.append(first)
    generator = loggen(generators, a.p("logs", "app.log"))
    eventually(lambda: len(first.lines) >= 20, 20, lambda: f"tail printed {first.lines} while the log grew")
    # tail's own daemon restarts: tail waits for it and goes on from where it was.
    before = len(first.lines)
    b.restart()
    eventually(lambda: len(first.lines) >= before + 20, 30, "tail printed nothing after b restarted")
    # tail itself is interrupted and started again on the same cursor.
    code, stderr = first.stop()
    assert code in (0, -signal.SIGINT, 130), f"tail exited {code} on Ctrl-C: {stderr}"
    second = TailProcess(b, "-f", "--cursor", str(cursor), b.p("logs"))
    tails.append(second)
    wait_written(generator)
    same_file(a, b, "app.log")
    prefix = b.p("logs", "app.log") + ":"
    expected = [prefix + line for line in read_file(b.p("logs", "app.log")).decode().splitlines()]
    eventually(lambda: len(first.lines) + len(second.lines) >= len(expected), 30,
               lambda: f"tail printed {len(first.lines)} + {len(second.lines)} of {len(expected)} lines")
    time.sleep(1.5)
    got = first.lines + second.lines
    assert got == expected, first_difference(got, expected)


@pytest.mark.timeout(120)
def test_a_new_file_below_the_path_joins_within_5_seconds_and_json_names_its_cursor(pair):
    a, b, tails, generators = pair
    write_file(a.p("logs", "old.log"), b"one\ntwo\nthree\n")
    eventually(lambda: os.path.exists(b.p("logs", "old.log")), 10, "old.log did not reach b")
    tail = TailProcess(b, "-f", "-n", "2", "--json", b.p("logs"))
    tails.append(tail)
    eventually(lambda: len(tail.lines) >= 2, 10, lambda: f"tail -n 2 printed {tail.lines}")
    write_file(a.p("logs", "new.log"), b"first line of a new file\n")
    eventually(lambda: os.path.exists(b.p("logs", "new.log")), 10, "new.log did not reach b")
    seen = time.monotonic()
    eventually(lambda: len(tail.lines) >= 3, 10, lambda: f"tail never printed new.log's line: {tail.lines}")
    assert time.monotonic() - seen <= 5, "the new file joined more than 5 s after it showed on b"
    objects = [json.loads(line) for line in tail.lines]
    assert [(o["path"], o["line"]) for o in objects] == [
        (b.p("logs", "old.log"), "two"), (b.p("logs", "old.log"), "three"),
        (b.p("logs", "new.log"), "first line of a new file")]
    assert objects[2]["cursor"]["offset"] == len(b"first line of a new file\n")
    assert objects[2]["cursor"]["document"] == os.getxattr(b.p("logs", "new.log"), "user.hypernet.id").decode().strip()
