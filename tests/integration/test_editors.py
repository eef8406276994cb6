"""Editor saves (contract: a save is a new revision of the document it saves): each editor keeps the document id
and adds exactly one revision per save, whether it writes in place, renames a temporary file over the original,
or renames the original away and writes the file anew (docs/design.md, "Saves that rename the original away"),
and leaves the same files, content and mode as on a native directory."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import doc_id, history, read_file, write_file

SAVES = 3
SAVES_DIR = Path(__file__).parent / "saves"
# docs/design.md: a file arriving at a name continues the document renamed away from it within this time.
WINDOW = 2.0


def content(step):
    return b"v%d beta\nsecond line\n" % step * 50


def substitution(step):
    return f"s/v{step}/v{step + 1}/g"


def sed(directory, name, scratch, step):
    subprocess.run(["sed", "-i", substitution(step), name], cwd=directory, check=True, timeout=60)
    return content(step + 1)


def perl(directory, name, scratch, step):
    subprocess.run(["perl", "-pi", "-e", substitution(step), name], cwd=directory, check=True, timeout=60)
    return content(step + 1)


def ed(directory, name, scratch, step):
    subprocess.run(["ed", "-s", name], input=f",{substitution(step)}\nw\nq\n".encode(), cwd=directory, check=True,
                   timeout=60, capture_output=True)
    return content(step + 1)


def python_replace(directory, name, scratch, step):
    with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
        tmp.write(content(step + 1))
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, os.path.join(directory, name))
    return content(step + 1)


def vim_like(program, options=""):
    # backupskip= : vim's default skips backups (and so the rename) for files under /tmp, where tests run.
    settings = f"set backupskip= {options}".strip()

    def edit(directory, name, scratch, step):
        proc = subprocess.run([program, "-es", "-u", "DEFAULTS", "-i", "NONE", "-c", settings,
                               "-c", f"%{substitution(step)}", "-c", "wq", name],
                              cwd=directory, timeout=60, stdin=subprocess.DEVNULL, capture_output=True)
        assert proc.returncode == 0, f"{program} exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}"
        return content(step + 1)
    return edit


def vim_in_a_terminal(directory, name, scratch, step):
    """`vim -u DEFAULTS` as a user starts it, with its out-of-the-box settings (backupcopy=auto, writebackup)."""
    command = f"vim.basic -u DEFAULTS -i NONE -c 'set backupskip=' -c '%{substitution(step)}' -c wq {name}"
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=directory, timeout=60,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "TERM": "xterm"})
    assert proc.returncode == 0, f"vim exited {proc.returncode}"
    return content(step + 1)


def emacs(directory, name, scratch, step):
    # Emacs's default backup (by rename, once per session, to NAME~), also for files under /tmp.
    script = (f"(progn (setq backup-enable-predicate (lambda (_) t)) (find-file {json.dumps(name)})"
              f" (while (search-forward \"v{step}\" nil t) (replace-match \"v{step + 1}\")) (save-buffer))")
    proc = subprocess.run(["emacs", "-Q", "--batch", "--eval", script], cwd=directory, timeout=60,
                          stdin=subprocess.DEVNULL, capture_output=True)
    assert proc.returncode == 0, f"emacs exited {proc.returncode}: {proc.stderr!r}"
    return content(step + 1)


def nano(directory, name, scratch, step):
    """nano in a pseudo-terminal: types `x` at the start and leaves with ^X, saving without a prompt (-t)."""
    path = os.path.join(directory, name)
    old = read_file(path)
    proc = subprocess.Popen(["script", "-qec", f"nano -I -t {name}", "/dev/null"], cwd=directory,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TERM": "xterm"})
    try:
        # Keys typed before nano reads the terminal could be discarded when it sets the terminal up.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _has_child(proc.pid, "nano"):
            time.sleep(0.05)
        time.sleep(0.5)
        proc.stdin.write(b"x\x18")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, "nano failed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    return b"x" + old


def _has_child(pid, name):
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == name or _has_child(int(child), name):
                return True
        except OSError:
            pass
    return False


def replay(calls):
    """Replays the system calls of saves/CALLS (an editor that is not installed here)."""
    lines = [line.split() for line in (SAVES_DIR / calls).read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def edit(directory, name, scratch, step):
        new, fds = content(step + 1), {}
        original = stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
        for op, *args in lines:
            paths = [os.path.join(directory, a.replace("{name}", name)) for a in args[:2]]
            if op == "stat":
                os.stat(paths[0])
            elif op == "open":
                flags = 0
                for flag in args[1].split("|"):
                    flags |= getattr(os, flag)
                fds[args[0]] = os.open(paths[0], flags, int(args[2], 8))
            elif op == "write":
                os.write(fds[args[0]], new)
            elif op == "fsync":
                os.fsync(fds[args[0]])
            elif op == "close":
                os.close(fds.pop(args[0]))
            elif op == "chmod":
                os.chmod(paths[0], original if args[1] == "=original" else int(args[1], 8))
            elif op == "rename":
                os.rename(paths[0], paths[1])
            elif op == "unlink":
                os.unlink(paths[0])
            else:
                raise AssertionError(f"saves/{calls}: unknown call {op}")
        assert not fds, f"saves/{calls} leaves {sorted(fds)} open"
        return new
    return edit


def cp_from_outside(directory, name, scratch, step):
    src = os.path.join(scratch, "src")
    write_file(src, content(step + 1))
    subprocess.run(["cp", src, name], cwd=directory, check=True, timeout=60)
    return content(step + 1)


def cp_within(directory, name, scratch, step):
    write_file(os.path.join(directory, "src"), content(step + 1))
    subprocess.run(["cp", "src", name], cwd=directory, check=True, timeout=60)
    return content(step + 1)


def mv_within(directory, name, scratch, step):
    write_file(os.path.join(directory, "src"), content(step + 1))
    subprocess.run(["mv", "src", name], cwd=directory, check=True, timeout=60)
    return content(step + 1)


def shell_redirect(directory, name, scratch, step):
    subprocess.run(["sh", "-c", f"printf 'v{step + 1} beta\\nsecond line\\n%.0s' $(seq 50) > {name}"],
                   cwd=directory, check=True, timeout=60)
    return content(step + 1)


EDITORS = {
    "sed -i": sed,
    "perl -pi": perl,
    "ed": ed,
    "python tempfile+os.replace": python_replace,
    "cp over (from outside)": cp_from_outside,
    "cp over (within the mount)": cp_within,
    "mv over (within the mount)": mv_within,
    "shell > redirect": shell_redirect,
    "vscode default (replayed)": replay("vscode-default.calls"),
    "vscode atomic (replayed)": replay("vscode-atomic.calls"),
    "jetbrains safe write (replayed)": replay("jetbrains-safe-write.calls"),
}
if shutil.which("emacs"):
    EDITORS["emacs"] = emacs
if shutil.which("nano") and shutil.which("script"):
    EDITORS["nano"] = nano
if shutil.which("vim.tiny"):
    EDITORS["vim.tiny -es"] = vim_like("vim.tiny")
if shutil.which("vim.basic") and shutil.which("script"):
    EDITORS["vim -u DEFAULTS (in a terminal)"] = vim_in_a_terminal
if shutil.which("vim.basic"):
    # Debian's full vim, with every way it can save (`:help backupcopy`): 'no' renames the original away and
    # writes the file anew; 'auto' does so too when it can (a file of one link whose owner it can keep).
    for _copy in ("yes", "no", "auto"):
        for _writebackup in ("writebackup", "nowritebackup"):
            for _backup in ("backup", "nobackup"):
                EDITORS[f"vim -es bkc={_copy} {_writebackup} {_backup}"] = vim_like(
                    "vim.basic", f"backupcopy={_copy} {_writebackup} {_backup}")


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
        write_file(os.path.join(directory, "note.txt"), content(0))
    path = os.path.join(mount_dir, "note.txt")

    ident, before, logged = doc_id(path), history(path), log_revisions(node, path)
    assert ident, "user.hypernet.id is empty"
    assert len(before) == 1, f"one write+close made {len(before)} revisions: {before}"
    assert len(logged) == len(before), f"`hypernet log` shows {len(logged)} revisions, history xattr {len(before)}"

    # Several saves: the second and later ones find the backup of the one before (emacs renames over it).
    for step in range(SAVES):
        expected = edit(mount_dir, "note.txt", str(scratch), step)
        assert edit(str(native_dir), "note.txt", str(scratch), step) == expected

        assert read_file(path) == expected
        assert doc_id(path) == ident, f"{editor}: save {step + 1} changed the document id"
        after = history(path)
        assert len(after) == len(before) + 1, \
            f"{editor}: save {step + 1}: expected exactly one new revision, history went from {len(before)} " + \
            f"to {len(after)}:\n" + "\n".join(" ".join(map(str, e)) for e in after)
        assert after[1:] == before, f"{editor}: save {step + 1} changed the older history"
        assert after[0][3] == len(expected), \
            f"{editor}: newest revision size {after[0][3]}, content is {len(expected)}"
        assert len(log_revisions(node, path)) == len(after), \
            f"{editor}: `hypernet log` disagrees with the history xattr"
        before = after

        native_names = sorted(os.listdir(native_dir))
        assert sorted(os.listdir(mount_dir)) == native_names, "leftover or missing files differ from native"
        for other in native_names:
            if other != "note.txt":
                # A backup the editor keeps is a document of its own, holding what it holds natively.
                assert read_file(os.path.join(mount_dir, other)) == read_file(native_dir / other), other
                assert doc_id(os.path.join(mount_dir, other)) != ident, f"{other} shares note.txt's document"
        native_mode = stat.S_IMODE(os.stat(native_dir / "note.txt").st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == native_mode, "mode after the save differs from native"


def test_repeated_saves_accumulate_history(node):
    path = node.p("f.txt")
    write_file(path, content(0))
    ident = doc_id(path)
    for i in range(5):
        with tempfile.NamedTemporaryFile(dir=node.p(), delete=False) as tmp:
            tmp.write(b"version %d\n" % i)
        os.replace(tmp.name, path)
    entries = history(path)
    assert doc_id(path) == ident
    assert len(entries) == 6
    assert [e[3] for e in entries] == [len(b"version %d\n" % i) for i in range(4, -1, -1)] + [len(content(0))]
    assert read_file(path) == b"version 4\n"


def test_a_backup_kept_by_the_editor_is_a_new_document_with_the_old_content(node):
    """vim with `backup`: NAME~ stays. NAME keeps the document and its history; NAME~ is a document of its own
    whose first revision is the content before the save (in its own history)."""
    path = node.p("kept.txt")
    write_file(path, content(0))
    ident = doc_id(path)
    vim_like("vim.basic" if shutil.which("vim.basic") else "vim.tiny", "backupcopy=no backup")(
        node.p(), "kept.txt", None, 0)
    backup = path + "~"
    assert doc_id(path) == ident
    assert read_file(backup) == content(0)
    assert doc_id(backup) not in ("", ident)
    # The backup's first revision is made by the once-a-second pass.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not history(backup):
        time.sleep(0.1)
    assert [e[3] for e in history(backup)] == [len(content(0))]
    assert [e[3] for e in history(path)] == [len(content(1)), len(content(0))]


def test_renaming_away_and_creating_far_apart_makes_a_new_document(node):
    """`mv a a.old`, then `a` created after the window: a new document; a.old keeps a's document."""
    a = node.p("a")
    write_file(a, b"old\n")
    ident = doc_id(a)
    os.rename(a, a + ".old")
    time.sleep(WINDOW + 0.5)
    write_file(a, b"new\n")
    assert doc_id(a) not in ("", ident)
    assert doc_id(a + ".old") == ident
    assert len(history(a)) == 1


def test_only_a_backup_name_and_only_the_name_left_continue_the_document(node):
    """Within the window too: a file renamed to a name that does not hold its own (`mv a b`) is moved, not
    saved, so a new `a` is a new document; and a create of another name is unaffected by a rename away."""
    a, b, c = node.p("a"), node.p("b"), node.p("c")
    write_file(a, b"old\n")
    ident = doc_id(a)
    os.rename(a, b)
    write_file(a, b"new\n")
    assert doc_id(a) not in ("", ident)
    assert doc_id(b) == ident

    d = node.p("d")
    write_file(d, b"d\n")
    dident = doc_id(d)
    os.rename(d, d + "~")
    write_file(c, b"c\n")
    assert doc_id(c) not in ("", dident, ident)
    assert doc_id(d + "~") == dident
    write_file(d, b"d again\n")
    assert doc_id(d) == dident, "a create of the name left right after, with another create between, is a save"


def test_renaming_to_a_backup_name_over_a_file_moves_the_document(node):
    """`mv a a~` over an existing a~ (emacs's backup on its second session) moves a's document to a~ and
    deletes the old a~ (unlike a rename-over save, which keeps the target's document)."""
    a = node.p("a")
    write_file(a, b"a\n")
    write_file(a + "~", b"old backup\n")
    ident = doc_id(a)
    os.rename(a, a + "~")
    assert doc_id(a + "~") == ident
    assert read_file(a + "~") == b"a\n"
    assert [e[3] for e in history(a + "~")] == [2]


@pytest.mark.timeout(150)
def test_a_save_by_rename_continues_the_document_on_a_peer(cluster):
    """vim's save by rename on node a: node b shows the same document at the name, with the new revision on top
    of the old history, and the kept backup as another document."""
    from cluster import eventually
    a = cluster.add("a")
    b = cluster.add("b", identity=a)
    cluster.start()
    on_a, on_b = a.p("shared.txt"), b.p("shared.txt")
    write_file(on_a, content(0))
    ident = doc_id(on_a)
    eventually(lambda: os.path.exists(on_b) and doc_id(on_b) == ident, 10, "shared.txt did not reach b")
    vim_like("vim.basic" if shutil.which("vim.basic") else "vim.tiny", "backupcopy=no backup")(
        a.p(), "shared.txt", None, 0)
    eventually(lambda: os.path.exists(on_b) and read_file(on_b) == content(1), 10,
               lambda: f"b shows {read_file(on_b)[:20]!r}… for the saved file")
    assert doc_id(on_b) == ident
    eventually(lambda: len(history(on_b)) == 2, 10, lambda: f"b's history of shared.txt: {history(on_b)}")
    eventually(lambda: os.path.exists(on_b + "~") and read_file(on_b + "~") == content(0), 10,
               "the backup did not reach b")
    assert doc_id(on_b + "~") not in ("", ident)
