"""Issue 19's test: four writer nodes append logs at a steady rate (tests/tools/loggen.py), each an identity of its
own that grants a fifth, the reader, read on its `logs/`. The reader holds their trees on demand, so its
`tail -f --grep`, `grep` and `count` run where the logs are (docs/grep.md). Every result equals GNU grep (a Python
count) over copies of the same files at the same revisions; a writer killed (SIGKILL) mid-tail and restarted loses
and duplicates no line; Ctrl-C of a grep stops the serving node's reads (its log says so).

Nodes run on their own loopback addresses (cluster.py). No traffic leaves the machine.
"""

import os
import random
import re
import shutil
import subprocess
import sys

import pytest

from cluster import eventually
from helpers import write_file
from test_grep import by_file, gnu_grep, hypernet_grep, interrupted_grep, log_lines, python_count
from test_tail import LOGGEN, TailProcess, first_difference, grep, stop_generators, wait_written

pytestmark = pytest.mark.replication

WRITERS = ["w1", "w2", "w3", "w4"]
RATE = 15  # lines per second and writer
LINES = 225  # 15 s of log


@pytest.mark.timeout(300)
def test_four_writers_tailed_grepped_and_counted_from_a_fifth_node(cluster, tmp_path):
    reader = cluster.add("reader")
    writers = [cluster.add(name) for name in WRITERS]
    for w in writers:
        reader.run("contact", "add", w.name, w.token)
    cluster.start()
    for w in writers:
        w.run("contact", "add", "reader", reader.token)
        os.mkdir(w.p("logs"))
        write_file(w.p("logs", "app.log"), b"")
        w.run("grant", w.p("logs"), "reader", "read")
    # Old logs of w1's, large enough that a grep of every line fills the credit window: Ctrl-C stops it there.
    os.mkdir(writers[0].p("archive"))
    write_file(writers[0].p("archive", "old.log"), b"\n".join(log_lines(random.Random(45), 120_000)) + b"\n")
    writers[0].run("grant", writers[0].p("archive"), "reader", "read")

    def shown(w, *parts):
        return reader.p("@" + w.name, *parts)

    for w in writers:
        eventually(lambda: os.path.exists(shown(w, "logs", "app.log")), 30, f"{w.name}'s log did not show")
    # -n: every line, those written before tail had read the files included.
    tail = TailProcess(reader, "-f", "-n", "100000", "--grep", "ERROR", *(shown(w, "logs") for w in writers))
    generators = []
    try:
        for w in writers:
            generators.append(subprocess.Popen([sys.executable, str(LOGGEN), w.p("logs", "app.log"), "--rate",
                                                str(RATE), "--lines", str(LINES), "--service", w.name]))
        eventually(lambda: len(tail.lines) >= 8, 30, lambda: f"tail printed {tail.lines} while the logs grew")
        writers[1].kill9()
        writers[1].start()
        for g in generators:
            wait_written(g)
        for w in writers:
            eventually(lambda: os.stat(shown(w, "logs", "app.log")).st_size == os.path.getsize(w.p("logs", "app.log")),
                       30, f"the reader never saw all of {w.name}'s log")
            copy = tmp_path / "copy" / ("@" + w.name) / "logs"
            copy.mkdir(parents=True)
            shutil.copyfile(w.p("logs", "app.log"), copy / "app.log")

        # tail: each file's lines, in order, once each.
        expected = {shown(w, "logs", "app.log"): grep(w.p("logs", "app.log"), "ERROR") for w in writers}
        total = sum(len(lines) for lines in expected.values())
        assert total >= 4 * (LINES // 7)

        def by_path():
            printed = {}
            for line in tail.lines:
                path, _, text = line.partition(":")
                printed.setdefault(path, []).append(text)
            return printed

        def differences():
            printed = by_path()
            return "; ".join(f"{path}: {first_difference(printed.get(path, []), lines)}"
                             for path, lines in expected.items() if printed.get(path, []) != lines)

        eventually(lambda: len(tail.lines) >= total, 60,
                   lambda: f"tail printed {len(tail.lines)} of {total} lines: {differences()}")
        tail.stop()
        assert not differences()
        assert len(tail.lines) == total, "tail printed lines of other files"

        # grep and count over the four trees, against the copies.
        operands = ["@" + w.name + "/logs" for w in writers]
        for args in (["-n", "ERROR"], ["-c", "-E", "WARN|ERROR"], ["-l", "took 9[0-6] ms"], ["-n", "-w", "w3"]):
            got = hypernet_grep(reader, [*args, *operands], reader.mount)
            want = gnu_grep([*args, *operands], tmp_path / "copy")
            assert got.returncode == want.returncode, (args, got.stderr)
            assert by_file(got.stdout, True) == by_file(want.stdout, True), args
        for regex in (rb"(ERROR|WARN|INFO) (w[0-9])", rb"took (9[0-9]) ms"):
            got = reader.run("count", "--by", regex.decode(), *(reader.p(o) for o in operands), text=False)
            want = python_count(tmp_path / "copy", regex)
            assert got.stdout == b"".join(b"%d %s\n" % (n, key) for key, n in want), (regex, got.stdout[:300])
    finally:
        stop_generators(generators)
        tail.stop()

    # Ctrl-C: the reader's daemon cancels the query, and w1's node stops reading the archive.
    interrupted_grep(reader, shown(writers[0], "archive", "old.log"))
    stopped = re.compile(r"query stopped: cancelled.*sent=(\d+)")
    eventually(lambda: stopped.search(writers[0].log_text()), 30, "w1's node did not stop the query")
    sent = int(stopped.search(writers[0].log_text()).group(1))
    size = os.path.getsize(writers[0].p("archive", "old.log"))
    assert sent < size // 2, f"w1's node sent {sent} of {size} bytes before the cancel"
    for node in cluster.nodes:
        assert not node.log_findings(), f"node {node.name} logged problems: {node.log_findings()}"
