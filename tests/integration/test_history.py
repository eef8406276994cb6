"""History through the CLI: `hypernet log`, `cat --rev` of an old revision, `restore` as a new revision."""

import os
import re
import subprocess

from helpers import current_revision, doc_id, errno_of, history, random_bytes, read_file, wait_until, write_file


def log_lines(node, path):
    """`hypernet log PATH` revision lines (they start with a hex revision id), newest first."""
    out = node.cli("log", path).stdout
    return [line.split() for line in out.splitlines() if re.match(r"^\s*[0-9a-f]{8,}\b", line)]


def test_log_cat_restore(node):
    path = node.p("doc.bin")
    versions = [b"first version\n", random_bytes(200_000), b"third\n" * 1000]
    revisions = []
    for content in versions:
        write_file(path, content)
        revisions.append(current_revision(path))
    ident = doc_id(path)

    lines = log_lines(node, path)
    assert len(lines) == 3, f"`hypernet log` shows {len(lines)} revisions for 3 saves"
    for line, rev in zip(lines, reversed(revisions)):
        assert rev.startswith(line[0]) or line[0].startswith(rev), f"log line {line} is not revision {rev}"
    for line, content in zip(lines, reversed(versions)):
        assert str(len(content)) in line[1:], f"log line {line} does not show size {len(content)}"

    # Old revisions by full id and by the short id that `log` prints.
    for rev, content in zip(revisions, versions):
        assert node.cli("cat", path, "--rev", rev, text=False).stdout == content
    short = lines[-1][0]
    assert node.cli("cat", path, "--rev", short, text=False).stdout == versions[0]
    assert node.cli("cat", path, text=False).stdout == versions[-1]

    node.cli("restore", path, revisions[0])
    assert read_file(path) == versions[0], "restore did not make the old content current"
    assert doc_id(path) == ident
    entries = history(path)
    assert len(entries) == 4, "restore must add one revision, keeping the others"
    assert entries[0][0] not in revisions, "restore must make a new revision, not move the head back"
    assert [e[0] for e in entries[1:]] == revisions[::-1]
    assert entries[0][3] == len(versions[0])
    assert len(log_lines(node, path)) == 4
    # The restored revision's own history is still readable.
    assert node.cli("cat", path, "--rev", revisions[1], text=False).stdout == versions[1]


def test_history_survives_restart(node):
    path = node.p("d", "f.txt")
    os.mkdir(node.p("d"))
    for i in range(3):
        write_file(path, b"v%d" % i)
    before = history(path)
    node.restart()
    assert history(path) == before
    assert read_file(path) == b"v2"
    assert node.cli("cat", path, "--rev", before[-1][0], text=False).stdout == b"v0"


def test_unknown_revision_fails(node):
    path = node.p("f")
    write_file(path, b"x")
    result = node.cli("cat", path, "--rev", "0" * 64, check=False)
    assert result.returncode != 0
    assert result.stderr.strip(), "an unknown revision must be reported on stderr"
    result = node.cli("restore", path, "0" * 64, check=False)
    assert result.returncode != 0
    assert read_file(path) == b"x"


def test_a_deleted_file_keeps_its_history_under_its_name(node):
    path = node.p("gone.txt")
    versions = [b"kept after the delete\n", b"second, also kept\n"]
    revisions = []
    root_before = current_revision(node.p())
    for content in versions:
        write_file(path, content)
        revisions.append(current_revision(path))
    # A name is found through the directory's revisions, made once a second: wait for one that lists it.
    assert wait_until(lambda: current_revision(node.p()) != root_before, 5), "no directory revision lists gone.txt"
    os.unlink(path)
    lines = log_lines(node, path)
    assert len(lines) == 3 and "[deleted]" in lines[0], f"`hypernet log` of a deleted file: {lines}"
    for rev, content in zip(revisions, versions):
        assert node.cli("cat", path, "--rev", rev, text=False).stdout == content, \
            f"`hypernet cat --rev` of the deleted file does not return revision {rev[:12]}"
    assert node.cli("cat", path, text=False, check=False).returncode != 0, "cat without --rev of a deleted file succeeded"
    unknown = node.cli("log", node.p("never-existed.txt"), check=False)
    assert unknown.returncode != 0 and "no such file" in unknown.stderr, unknown.stderr


def test_restore_brings_a_deleted_file_back_as_the_same_document(node):
    path = node.p("undo.txt")
    root_before = current_revision(node.p())
    write_file(path, b"first\n")
    first = current_revision(path)
    write_file(path, b"second\n")
    ident = doc_id(path)
    assert wait_until(lambda: current_revision(node.p()) != root_before, 5), "no directory revision lists undo.txt"
    os.unlink(path)
    assert not os.path.exists(path)

    node.cli("restore", path, first[:12])
    assert read_file(path) == b"first\n", "restore of a deleted file did not bring its content back"
    assert doc_id(path) == ident, "the restored file is a new document, not the deleted one"
    lines = log_lines(node, path)
    assert len(lines) == 4, f"restore should add one revision after the deletion: {lines}"
    assert "[deleted]" in " ".join(lines[1]), f"the deletion is not kept in the history: {lines}"
    assert "[deleted]" not in " ".join(lines[0]), f"the newest revision is not the restored one: {lines}"
    # It is back for good: it survives a restart and its directory lists it.
    node.restart()
    assert read_file(path) == b"first\n" and "undo.txt" in os.listdir(node.p())
    # A deleted directory is not brought back this way.
    os.mkdir(node.p("gone-dir"))
    dir_rev = current_revision(node.p("gone-dir"))
    os.rmdir(node.p("gone-dir"))
    refused = node.cli("restore", node.p("gone-dir"), dir_rev, check=False)
    assert refused.returncode != 0 and not os.path.exists(node.p("gone-dir")), "a deleted directory was restored"


def test_the_revisions_view_works_with_ordinary_tools(node, tmp_path):
    path = node.p("view.txt")
    root_before = current_revision(node.p())
    write_file(path, b"old line\n")
    old = current_revision(path)
    write_file(path, b"new line\n")
    view = node.p(".hypernet", "revisions", old)
    # diff and cp read an old revision like any file; a prefix of the id works too.
    diff = subprocess.run(["diff", view, path], capture_output=True, text=True)
    assert diff.returncode == 1 and "< old line" in diff.stdout and "> new line" in diff.stdout, diff.stdout
    subprocess.run(["cp", node.p(".hypernet", "revisions", old[:8]), tmp_path / "copy"], check=True)
    assert (tmp_path / "copy").read_bytes() == b"old line\n"
    # Read-only, and never listed.
    assert errno_of(lambda: os.open(view, os.O_WRONLY)) in ("EROFS", "EACCES"), "a revision in the view opened for writing"
    assert errno_of(os.unlink, view) in ("EROFS", "EACCES"), "a revision in the view could be removed"
    assert old not in os.listdir(node.p(".hypernet", "revisions")), "the revisions view lists revisions"
    # A deleted file's last content is there too, through its deletion revision (found by the name in a listing).
    assert wait_until(lambda: current_revision(node.p()) != root_before, 5), "no directory revision lists view.txt"
    os.unlink(path)
    deleted = history_of_deleted(node, path)
    subprocess.run(["cp", node.p(".hypernet", "revisions", deleted), tmp_path / "rescued"], check=True)
    assert (tmp_path / "rescued").read_bytes() == b"new line\n", "the deletion revision does not show the last content"


def history_of_deleted(node, path):
    """The id of the newest revision (the deletion) of a deleted path, from `hypernet log`."""
    lines = log_lines(node, path)
    assert lines and "[deleted]" in " ".join(lines[0]), f"no deletion at the top of `hypernet log`: {lines}"
    return lines[0][0]
