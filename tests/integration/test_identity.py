"""`hypernet id export FILE` / `hypernet id import FILE`: the identity and its tree key move to another
node under a passphrase (docs/cli.md, docs/security.md "Identity export file"); the node key stays."""

import os
import stat
import subprocess

import helpers

PASSPHRASE = "tr0ub4dor & 3, or a longer one"


def run(home, *args, passphrase=None, env_extra=None, new_session=False, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("HYPERNET_HOME", "HYPERNET_PASSPHRASE")}
    env["HYPERNET_PWHASH"] = "interactive"  # keeps Argon2id cheap; the format stores the parameters
    if passphrase is not None:
        env["HYPERNET_PASSPHRASE"] = passphrase
    env.update(env_extra or {})
    return subprocess.run([helpers.hypernet_bin(), "--home", str(home), *map(str, args)], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout,
                          start_new_session=new_session)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr!r}"
    return proc.stdout.strip()


def assert_fails(proc, message, code=None):
    assert proc.returncode != 0, f"succeeded: {proc.stdout!r}"
    if code is not None:
        assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {proc.stderr!r}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypernet: "), proc.stderr
    assert message in lines[0], proc.stderr
    assert PASSPHRASE not in proc.stderr + proc.stdout


def snapshot(root):
    """{relative path: (mode, bytes)} of everything under root; {} when it does not exist."""
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            data = helpers.read_file(path) if stat.S_ISREG(info.st_mode) else b""
            result[os.path.relpath(path, root)] = (stat.S_IMODE(info.st_mode), data)
    return result


def exported(node_dir, name="alice"):
    """Home A with a fresh identity, exported under PASSPHRASE: (home, token, export file)."""
    home = node_dir / "a"
    token = ok(run(home, "init", "--name", name))
    export = node_dir / "alice.hnid"
    assert ok(run(home, "id", "export", export, passphrase=PASSPHRASE)) == ""
    return home, token, export


def test_export_then_import_gives_the_same_identity_and_tree_key(node_dir):
    a, token, export = exported(node_dir)
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    assert helpers.read_file(export).startswith(b"hnidexp\0\x01")

    b = node_dir / "b"
    imported = run(b, "id", "import", export, passphrase=PASSPHRASE)
    assert ok(imported) == token
    assert ok(run(b, "id")) == token
    assert ok(run(a, "id")) == token
    assert helpers.read_file(b / "keys" / "tree.key") == helpers.read_file(a / "keys" / "tree.key")
    assert helpers.read_file(b / "keys" / "node.key") != helpers.read_file(a / "keys" / "node.key")
    assert stat.S_IMODE((b / "keys").stat().st_mode) == 0o700
    assert sorted(p.name for p in (b / "keys").iterdir()) == ["identity.key", "node.key", "tree.key"]
    for key in (b / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # The secrets never reach the terminal.
    assert PASSPHRASE not in imported.stdout + imported.stderr

    # Importing again is harmless: same identity, nothing written, and it says so.
    before = snapshot(b)
    again = run(b, "id", "import", export, passphrase=PASSPHRASE)
    assert ok(again) == token
    assert "already has this identity" in again.stderr
    assert snapshot(b) == before
    # `init` afterwards keeps the imported identity and its name.
    assert ok(run(b, "init", "--name", "someone else")) == token


def test_wrong_passphrase_changes_nothing(node_dir):
    _, _, export = exported(node_dir)
    fresh = node_dir / "fresh"  # does not exist: must still not exist
    assert_fails(run(fresh, "id", "import", export, passphrase="not it"), "wrong passphrase or damaged file", 1)
    assert not fresh.exists()
    b = node_dir / "b"
    b.mkdir(mode=0o700)
    before = snapshot(b)
    assert_fails(run(b, "id", "import", export, passphrase=PASSPHRASE + " "), "wrong passphrase or damaged file", 1)
    assert snapshot(b) == before
    assert run(b, "id").returncode == 1  # still no identity


def test_damaged_or_foreign_or_newer_files_are_refused(node_dir):
    _, _, export = exported(node_dir)
    good = helpers.read_file(export)
    b = node_dir / "b"
    cases = [
        (good[:-1], "damaged"),
        (good[:70], "damaged"),
        (good[:-20] + bytes([good[-20] ^ 0x01]) + good[-19:], "wrong passphrase or damaged file"),
        (good[:30] + bytes([good[30] ^ 0x80]) + good[31:], "wrong passphrase or damaged file"),  # salt
        (good[:8] + b"\x02" + good[9:], "newer"),
        (b"hello, not an export\n", "not a hypernet identity export"),
    ]
    for i, (data, message) in enumerate(cases):
        bad = node_dir / f"bad{i}.hnid"
        helpers.write_file(bad, data, mode=0o600)
        assert_fails(run(b, "id", "import", bad, passphrase=PASSPHRASE), message, 1)
        assert not b.exists(), f"case {i} created the home"
    assert_fails(run(b, "id", "import", node_dir / "missing.hnid", passphrase=PASSPHRASE), "missing.hnid", 1)


def test_import_into_a_home_with_another_identity_is_refused(node_dir):
    _, token, export = exported(node_dir)
    other = node_dir / "other"
    other_token = ok(run(other, "init", "--name", "mallory"))
    assert other_token != token
    before = snapshot(other)
    assert_fails(run(other, "id", "import", export, passphrase=PASSPHRASE), "another identity", 1)
    assert snapshot(other) == before
    assert ok(run(other, "id")) == other_token


def test_passphrase_from_a_file_and_from_the_environment(node_dir):
    a = node_dir / "a"
    token = ok(run(a, "init"))
    secret = node_dir / "passphrase.txt"
    helpers.write_file(secret, (PASSPHRASE + "\nsecond line is ignored\n").encode(), mode=0o600)

    # Export with the file (which wins over the environment), import with the environment.
    export = node_dir / "via-file.hnid"
    ok(run(a, "id", "export", export, "--passphrase-file", secret, passphrase="ignored when a file is given"))
    assert ok(run(node_dir / "b", "id", "import", export, passphrase=PASSPHRASE)) == token

    # Export with the environment, import with the file (a CRLF line ending is stripped too).
    export2 = node_dir / "via-env.hnid"
    ok(run(a, "id", "export", export2, passphrase=PASSPHRASE))
    crlf = node_dir / "crlf.txt"
    helpers.write_file(crlf, (PASSPHRASE + "\r\n").encode(), mode=0o600)
    assert ok(run(node_dir / "c", "id", "import", export2, "--passphrase-file", crlf)) == token

    # An existing export is not replaced without --force.
    before = helpers.read_file(export2)
    assert_fails(run(a, "id", "export", export2, passphrase=PASSPHRASE), "already exists", 1)
    assert helpers.read_file(export2) == before
    ok(run(a, "id", "export", export2, "--force", passphrase=PASSPHRASE))
    assert helpers.read_file(export2) != before
    assert stat.S_IMODE(export2.stat().st_mode) == 0o600

    # Empty passphrases are refused.
    empty = node_dir / "empty.txt"
    helpers.write_file(empty, b"\n")
    assert_fails(run(a, "id", "export", node_dir / "x.hnid", "--passphrase-file", empty), "empty", 1)
    assert not (node_dir / "x.hnid").exists()


def test_no_passphrase_and_no_terminal_is_a_clear_error(node_dir):
    a, _, export = exported(node_dir)
    # A new session has no controlling terminal: /dev/tty cannot be opened.
    proc = run(node_dir / "b", "id", "import", export, new_session=True)
    assert_fails(proc, "--passphrase-file", 2)
    assert not (node_dir / "b").exists()
    proc = run(a, "id", "export", node_dir / "y.hnid", new_session=True)
    assert_fails(proc, "HYPERNET_PASSPHRASE", 2)
    assert not (node_dir / "y.hnid").exists()


def test_export_without_identity_fails(node_dir):
    assert_fails(run(node_dir / "none", "id", "export", node_dir / "z.hnid", passphrase=PASSPHRASE),
                 "hypernet init", 1)


def test_imported_identity_runs_a_node(node_dir, make_node):
    """The imported home mounts, and its revisions are signed by the imported identity."""
    _, token, export = exported(node_dir)
    node = make_node(start=False)
    assert ok(run(node.home, "id", "import", export, passphrase=PASSPHRASE)) == token
    node.start()
    helpers.write_file(node.p("hello.txt"), b"hi\n", fsync=True)
    authors = {entry[2] for entry in helpers.history(node.p("hello.txt"))}
    assert authors == {token}
    # While its daemon runs, importing the same identity changes nothing.
    again = run(node.home, "id", "import", export, passphrase=PASSPHRASE)
    assert ok(again) == token and "already has this identity" in again.stderr
