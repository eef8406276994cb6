"""`hypernet du` (docs/cli.md, du): current, history and shared bytes in the packs, per directory, against contents
of known sizes. Random contents neither compress nor deduplicate, so each MiB written takes one MiB in the packs
plus the records' and manifests' overhead (under 64 KiB here)."""

import json
import os

import helpers

MIB = 1 << 20
OVERHEAD = 64 << 10


def du(node, *path):
    return json.loads(node.cli("du", "--json", *path).stdout)


def about(value, mib):
    return mib * MIB <= value <= mib * MIB + OVERHEAD


def test_du_counts_current_history_and_shared_bytes(node):
    os.mkdir(node.p("d"))
    first = os.urandom(MIB)
    helpers.write_file(node.p("d", "a"), first, fsync=True)
    helpers.write_file(node.p("d", "b"), first, fsync=True)  # the same content: stored once
    # The directory's revision naming b: a listing follows its entries within a second, or at once on the
    # directory's fsync; without it b, deleted below, would be a document no stored listing ever named.
    directory = os.open(node.p("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

    [a] = du(node, node.p("d", "a"))
    assert a["path"] == node.p("d", "a") and about(a["current"], 1) and a["history"] < OVERHEAD, a
    d = du(node, node.p("d"))[-1]
    assert d["path"] == node.p("d"), d
    assert about(d["current"], 1) and about(d["shared"], 1), f"a copy counted twice or not shared: {d}"

    helpers.write_file(node.p("d", "a"), os.urandom(MIB), fsync=True)  # a's first content is history now
    [a] = du(node, node.p("d", "a"))
    assert about(a["current"], 1) and about(a["history"], 1), a
    d = du(node, node.p("d"))[-1]
    assert about(d["current"], 2) and d["history"] < OVERHEAD and about(d["shared"], 1), f"b still uses it: {d}"

    os.unlink(node.p("d", "b"))  # a deleted document's content stays in the directory's history
    d = du(node, node.p("d"))[-1]
    assert about(d["current"], 1) and about(d["history"], 1) and about(d["shared"], 1), d

    lines = node.cli("du").stdout.splitlines()
    assert lines[-1].split("\t")[3] == str(node.mount), lines
    assert [line.split("\t")[3] for line in lines] == [node.p("d"), str(node.mount)], lines
    root = du(node)[-1]
    assert about(root["current"], 1) and about(root["history"], 1), root


def test_du_of_a_missing_path_fails_in_one_line(node):
    proc = node.cli("du", node.p("nothing"), check=False)
    assert proc.returncode == 1 and proc.stderr == f"hypernet: no such file or directory: {node.p('nothing')}\n", \
        proc.stderr
