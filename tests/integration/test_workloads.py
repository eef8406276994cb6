"""Real programs and concurrent access on the mount, checked against a native directory or by content."""

import hashlib
import mmap
import os
import shutil
import sqlite3
import subprocess
import threading

import pytest

from helpers import random_bytes, read_file, write_file


def tree_digest(root):
    """{relative path: (type, mode, sha256 or link target)} of everything under root."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                result[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                result[rel] = ("dir", oct(st.st_mode & 0o7777))
            else:
                result[rel] = ("file", oct(st.st_mode & 0o7777), hashlib.sha256(read_file(path)).hexdigest())
    return result


def test_parallel_writers(node):
    errors = []

    def writer(k):
        try:
            d = node.p(f"w{k}")
            os.mkdir(d)
            for i in range(40):
                data = random_bytes(1000 + 997 * i, seed=k * 1000 + i)
                write_file(os.path.join(d, f"f{i}"), data, fsync=(i % 5 == 0))
        except Exception as e:  # reported below: threads must not swallow failures
            errors.append(f"writer {k}: {e!r}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(6):
        assert sorted(os.listdir(node.p(f"w{k}"))) == sorted(f"f{i}" for i in range(40))
        for i in range(40):
            assert read_file(node.p(f"w{k}", f"f{i}")) == random_bytes(1000 + 997 * i, seed=k * 1000 + i)


def test_parallel_appends_to_one_file(node):
    """O_APPEND writes from several threads: none lost, none interleaved (each write is one FUSE request)."""
    path = node.p("shared.log")
    write_file(path, b"")
    lines_per_thread, threads_count = 200, 4

    def appender(k):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for i in range(lines_per_thread):
                os.write(fd, b"thread %d line %04d %s\n" % (k, i, b"x" * (i % 37)))
        finally:
            os.close(fd)

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = read_file(path).splitlines()
    assert len(lines) == lines_per_thread * threads_count
    expected = {b"thread %d line %04d %s" % (k, i, b"x" * (i % 37))
                for k in range(threads_count) for i in range(lines_per_thread)}
    assert set(lines) == expected


def test_concurrent_renames_and_reads(node):
    d = node.p("spin")
    os.mkdir(d)
    write_file(os.path.join(d, "target"), b"v0")
    stop = threading.Event()
    errors = []

    def reader():
        while not stop.is_set():
            try:
                data = read_file(os.path.join(d, "target"))
            except FileNotFoundError:
                errors.append("target missing during atomic replaces")
                continue
            if not (data.startswith(b"v") and data[1:].isdigit()):
                errors.append(f"torn read: {data[:40]!r}")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(1, 150):
            tmp = os.path.join(d, f".tmp{i}")
            write_file(tmp, b"v%d" % i)
            os.replace(tmp, os.path.join(d, "target"))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:5]
    assert read_file(os.path.join(d, "target")) == b"v149"
    assert os.listdir(d) == ["target"]


def test_shared_mmap_write(node, tmp_path):
    for root in (str(tmp_path), node.p()):
        path = os.path.join(root, "mapped")
        write_file(path, b"\0" * 65536)
        with open(path, "r+b") as f:
            with mmap.mmap(f.fileno(), 65536) as m:
                m[100:105] = b"hello"
                m[60000:60005] = b"world"
                m.flush()
    assert read_file(os.path.join(str(tmp_path), "mapped")) == read_file(node.p("mapped"))


def test_execute_from_mount(node):
    target = node.p("true")
    shutil.copy("/bin/true", target)
    os.chmod(target, 0o755)
    assert subprocess.run([target], timeout=30).returncode == 0
    script = node.p("script.sh")
    write_file(script, b"#!/bin/sh\necho from-mount\n", mode=0o755)
    os.chmod(script, 0o755)
    assert subprocess.run([script], capture_output=True, timeout=30).stdout == b"from-mount\n"


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_database(node, journal):
    path = node.p(f"db-{journal}.sqlite")
    db = sqlite3.connect(path)
    try:
        assert db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        for batch in range(5):
            with db:
                db.executemany("INSERT INTO t (v) VALUES (?)", [(random_bytes(500, seed=batch * 100 + i),)
                                                                for i in range(100)])
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 500
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_git_repository(node):
    repo = node.p("repo")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1", "HOME": node.p()}

    def git(*args):
        result = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result.stdout

    os.mkdir(repo)
    git("init", "-q", "-b", "main")
    for i in range(20):
        write_file(os.path.join(repo, f"file{i}.txt"), b"content %d\n" % i)
    git("add", ".")
    git("commit", "-q", "-m", "first")
    write_file(os.path.join(repo, "file3.txt"), b"changed\n")
    git("commit", "-q", "-am", "second")
    git("gc", "-q")
    assert git("fsck", "--strict") == ""
    assert len(git("log", "--oneline").splitlines()) == 2
    assert git("status", "--porcelain") == ""


def test_untar_matches_native(node, tmp_path):
    archive = tmp_path / "src.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", "/usr/share", "doc/python3", "doc/fuse3", "doc/git"],
                   check=True, timeout=120, capture_output=True)
    native = tmp_path / "native"
    native.mkdir()
    mounted = node.p("untar")
    os.mkdir(mounted)
    for root in (str(native), mounted):
        subprocess.run(["tar", "-xf", str(archive), "-C", root], check=True, timeout=300)
    assert tree_digest(mounted) == tree_digest(str(native))
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(native), mounted], capture_output=True, text=True,
                          timeout=300)
    assert diff.returncode == 0, diff.stdout[-2000:]
    shutil.rmtree(mounted)
    assert not os.path.exists(mounted)
