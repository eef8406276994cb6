"""Editor saves (contract: a save by rename-over is a new revision of the target document): each editor keeps
the document id and adds exactly one revision, and leaves the same content and mode as on a native directory."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from helpers import doc_id, history, read_file, write_file

OLD = b"alpha beta\nsecond line\n" * 50
NEW = OLD.replace(b"alpha", b"omega")
REPLACEMENT = b"replacement from elsewhere\n" * 20


def sed(directory, name, scratch):
    subprocess.run(["sed", "-i", "s/alpha/omega/", name], cwd=directory, check=True, timeout=60)
    return NEW


def python_replace(directory, name, scratch):
    with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
        tmp.write(NEW)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, os.path.join(directory, name))
    return NEW


def vim_like(program):
    def edit(directory, name, scratch):
        proc = subprocess.run([program, "-es", "-u", "DEFAULTS", "-i", "NONE", "-c", "%s/alpha/omega/", "-c", "wq",
                               name], cwd=directory, timeout=60, stdin=subprocess.DEVNULL, capture_output=True)
        assert proc.returncode == 0, f"{program} exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}"
        return NEW
    return edit


def cp_from_outside(directory, name, scratch):
    src = os.path.join(scratch, "src")
    write_file(src, REPLACEMENT)
    subprocess.run(["cp", src, name], cwd=directory, check=True, timeout=60)
    return REPLACEMENT


def cp_within(directory, name, scratch):
    write_file(os.path.join(directory, "src"), REPLACEMENT)
    subprocess.run(["cp", "src", name], cwd=directory, check=True, timeout=60)
    return REPLACEMENT


def mv_within(directory, name, scratch):
    write_file(os.path.join(directory, "src"), REPLACEMENT)
    subprocess.run(["mv", "src", name], cwd=directory, check=True, timeout=60)
    return REPLACEMENT


def shell_redirect(directory, name, scratch):
    subprocess.run(["sh", "-c", f"printf 'replacement from elsewhere\\n%.0s' $(seq 20) > {name}"], cwd=directory,
                   check=True, timeout=60)
    return REPLACEMENT


EDITORS = {
    "sed -i": sed,
    "python tempfile+os.replace": python_replace,
    "cp over (from outside)": cp_from_outside,
    "cp over (within the mount)": cp_within,
    "mv over (within the mount)": mv_within,
    "shell > redirect": shell_redirect,
}
_seen = set()
for _program in ("vim", "vi", "vim.tiny"):
    _found = shutil.which(_program)
    if _found and os.path.realpath(_found) not in _seen:
        _seen.add(os.path.realpath(_found))
        EDITORS[f"{_program} -es"] = vim_like(_program)


def log_revisions(node, path):
    """Revision lines of `hypernet log PATH` (lines starting with a hex revision id)."""
    out = node.cli("log", path).stdout
    return [line for line in out.splitlines() if re.match(r"^\s*[0-9a-f]{8,}\b", line)]


@pytest.mark.parametrize("editor", sorted(EDITORS))
def test_editor_save_keeps_document(node, tmp_path, editor):
    edit = EDITORS[editor]
    native_dir, scratch = tmp_path / "native", tmp_path / "scratch"
    native_dir.mkdir()
    scratch.mkdir()
    mount_dir = node.p("docs")
    os.mkdir(mount_dir)
    for directory in (str(native_dir), mount_dir):
        write_file(os.path.join(directory, "note.txt"), OLD)
    path = os.path.join(mount_dir, "note.txt")

    ident, before, logged = doc_id(path), history(path), log_revisions(node, path)
    assert ident, "user.hypernet.id is empty"
    assert len(before) == 1, f"one write+close made {len(before)} revisions: {before}"
    assert len(logged) == len(before), f"`hypernet log` shows {len(logged)} revisions, history xattr {len(before)}"

    expected = edit(mount_dir, "note.txt", str(scratch))
    edit(str(native_dir), "note.txt", str(scratch))

    assert read_file(path) == expected
    assert doc_id(path) == ident, f"{editor}: document id changed"
    after = history(path)
    assert len(after) == len(before) + 1, \
        f"{editor}: expected exactly one new revision, history went from {len(before)} to {len(after)}:\n" + \
        "\n".join(" ".join(map(str, e)) for e in after)
    assert after[1:] == before, f"{editor}: older history changed"
    assert after[0][3] == len(expected), f"{editor}: newest revision size {after[0][3]}, content is {len(expected)}"
    assert len(log_revisions(node, path)) == len(after), f"{editor}: `hypernet log` disagrees with the history xattr"

    native_names = sorted(os.listdir(native_dir))
    assert sorted(os.listdir(mount_dir)) == native_names, "leftover or missing files differ from native"
    native_mode = stat.S_IMODE(os.stat(native_dir / "note.txt").st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == native_mode, "mode after the save differs from native"


def test_repeated_saves_accumulate_history(node):
    path = node.p("f.txt")
    write_file(path, OLD)
    ident = doc_id(path)
    for i in range(5):
        with tempfile.NamedTemporaryFile(dir=node.p(), delete=False) as tmp:
            tmp.write(b"version %d\n" % i)
        os.replace(tmp.name, path)
    entries = history(path)
    assert doc_id(path) == ident
    assert len(entries) == 6
    assert [e[3] for e in entries] == [len(b"version %d\n" % i) for i in range(4, -1, -1)] + [len(OLD)]
    assert read_file(path) == b"version 4\n"
