"""`hypernet grep` and `hypernet count` (docs/grep.md): the daemon scans the documents below PATH and streams what it
selects. Their output and exit status equal GNU grep's (LC_ALL=C, -a, -r) and a Python count over copies of the same
bytes; a bad pattern is one line and exit 2; the CLI going away (Ctrl-C) stops the daemon's scan."""

import json
import os
import random
import re
import signal
import subprocess

import pytest

import helpers

SERVICES = ["api", "db", "auth", "cache", "web"]
WORDS = "request served user session token timeout retry connected closed latency bytes ok upstream".split()


def log_lines(rng, count):
    lines = []
    for n in range(count):
        if rng.random() < 0.02:
            line = f"12:{n % 60:02d} ERROR svc={rng.choice(SERVICES)} disk failure on sd{rng.choice('abc')}"
        else:
            level = rng.choice(["INFO", "DEBUG", "warn"])
            line = f"12:{n % 60:02d} {level} svc={rng.choice(SERVICES)} " + " ".join(
                rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
        lines.append(line.encode())
    return lines


@pytest.fixture
def corpus(node, tmp_path):
    """The same files in the mount (`logs/`) and in a plain directory (`copy/logs/`): their bytes as written."""
    rng = random.Random(19)
    files = {
        "logs/app.log": b"\n".join(log_lines(rng, 400)) + b"\n",
        "logs/sub/db.log": b"\r\n".join(log_lines(rng, 50)) + b"\r\n",
        "logs/sub/deeper/noeol.log": b"\n".join(log_lines(rng, 30)),
        "logs/empty.log": b"",
        "logs/binary.bin": b"\x00\xffERROR svc=api raw\n\xfe\xfa\n\x00\n\nplain error line\n",
        # Over many chunks (64 KiB on average): lines cross chunk boundaries.
        "logs/big.log": b"\n".join(log_lines(rng, 40_000)) + b"\n",
    }
    for relative, data in files.items():
        os.makedirs(os.path.dirname(node.p(relative)), exist_ok=True)
        helpers.write_file(node.p(relative), data)
    # Appends, each its own revision, one line split between two of them.
    appended = b""
    fd = os.open(node.p("logs/appended.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for piece in [b"first ERROR svc=web line\nsecond ", b"half, ERROR svc=db after the split\n", b"third\n"]:
            os.write(fd, piece)
            os.fsync(fd)
            appended += piece
    finally:
        os.close(fd)
    files["logs/appended.log"] = appended
    for relative, data in files.items():
        path = tmp_path / "copy" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tmp_path / "copy"


def gnu_grep(args, cwd):
    return subprocess.run(["grep", "-a", "-r", *args], capture_output=True, cwd=cwd, env={"LC_ALL": "C"})


def hypernet_grep(node, args, cwd):
    return subprocess.run([node.bin, "--home", str(node.home), "grep", *args], capture_output=True, cwd=cwd)


def by_file(output: bytes, prefixed: bool):
    """Lines grouped by the file they name, in order within each file (grep -r's file order is the directory's)."""
    files = {}
    for line in output.split(b"\n")[:-1]:
        name, _, rest = line.partition(b":") if prefixed else (b"", b"", line)
        files.setdefault(name, []).append(rest)
    return files


@pytest.mark.parametrize("flags", [
    ["-n"], ["-i", "-w"], ["-v", "-c"], ["-l"], ["-F", "-i", "-c"], ["-E", "-n"], ["-n", "-v", "-w"],
])
def test_grep_prints_what_gnu_grep_prints(node, corpus, flags):
    patterns = ["ERROR", "svc=(api|db)", "svc=\\(api\\|db\\)", "^$", "disk.*sd[ab]", "\\<ok\\>",
                "[[:upper:]]\\{4\\}", "line$", "nothing-like-this"]
    operands = [["logs"], ["logs/sub", "logs/app.log"], ["logs/appended.log"]]
    for pattern in patterns:
        for paths in operands:
            args = [*flags, "--", pattern, *paths] if pattern.startswith("-") else [*flags, pattern, *paths]
            want = gnu_grep(args, corpus)
            got = hypernet_grep(node, args, node.mount)
            what = f"grep {' '.join(args)}: {got.stderr!r} / {want.stderr!r}"
            assert got.returncode == want.returncode, what
            prefixed = len(paths) > 1 or os.path.isdir(corpus / paths[0])
            assert by_file(got.stdout, prefixed) == by_file(want.stdout, prefixed), what


def test_grep_statuses_and_bad_patterns(node, corpus):
    assert hypernet_grep(node, ["ERROR", "logs/app.log"], node.mount).returncode == 0
    nothing = hypernet_grep(node, ["no such words", "logs"], node.mount)
    assert nothing.returncode == 1 and nothing.stdout == b"" and nothing.stderr == b""
    for pattern, syntax in [("a\\(", []), ("(a", ["-E"]), ("a\\{1", []), ("[[:nope:]]", []), ("x\\", [])]:
        bad = hypernet_grep(node, [*syntax, pattern, "logs"], node.mount)
        want = gnu_grep([*syntax, pattern, "logs"], corpus)
        assert bad.returncode == 2 and bad.stdout == b"", bad
        assert bad.stderr == b"hypernet: " + want.stderr.removeprefix(b"grep: "), (bad.stderr, want.stderr)
    # A missing operand is an error; the others are still searched.
    missing = hypernet_grep(node, ["first", "logs/nope", "logs/appended.log"], node.mount)
    assert missing.returncode == 2 and missing.stdout == b"logs/appended.log:first ERROR svc=web line\n", missing
    assert missing.stderr.decode().count("\n") == 1 and "no such file or directory" in missing.stderr.decode()
    outside = hypernet_grep(node, ["x", "/tmp"], node.mount)
    assert outside.returncode == 2 and outside.stderr.decode().count("\n") == 1, outside
    usage = node.cli("grep", "-F", "-E", "x", "logs", check=False)
    assert usage.returncode == 2
    # The longest pattern a peer accepts (docs/protocol.md, "Queries"), and one byte past it.
    longest = "E" * 1023 + "R"
    assert hypernet_grep(node, ["-F", longest, "logs"], node.mount).returncode == 1
    too_long = hypernet_grep(node, ["-F", longest + "R", "logs"], node.mount)
    assert too_long.returncode == 2 and too_long.stdout == b"", too_long
    assert too_long.stderr == b"hypernet: the pattern is longer than 1024 bytes\n", too_long.stderr


def test_grep_json_lines(node, corpus):
    out = hypernet_grep(node, ["--json", "-n", "ERROR svc=api raw\\|^$", "logs/binary.bin"], node.mount)
    assert out.returncode == 0, out
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    path = node.p("logs/binary.bin")
    assert lines == [
        {"base64": "AP9FUlJPUiBzdmM9YXBpIHJhdw==", "line": 1, "offset": 0, "path": path},
        {"line": 4, "offset": 25, "path": path, "text": ""},
    ], lines
    counts = hypernet_grep(node, ["--json", "-c", "ERROR", "logs/sub"], node.mount)
    assert sorted(json.loads(line)["path"] for line in counts.stdout.decode().splitlines()) == [
        node.p("logs/sub/db.log"), node.p("logs/sub/deeper/noeol.log")]


def python_count(root, regex, flags=0):
    pattern = re.compile(regex, flags)
    counts = {}
    for directory, _, names in os.walk(root):
        for name in names:
            for line in open(os.path.join(directory, name), "rb").read().split(b"\n"):
                for m in pattern.finditer(line):
                    if m.end() == m.start():
                        continue
                    key = b"\t".join(g or b"" for g in m.groups()) if m.groups() else m.group(0)
                    counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def test_count_by_group_equals_a_python_count(node, corpus):
    for regex, top, flags in [(rb"ERROR svc=([a-z]+)", None, 0), (rb"svc=([a-z]+) (\w+)", 3, 0),
                              (rb"disk failure on sd[a-c]", None, 0), (rb"(error)", None, re.I)]:
        args = ["count", "--by", regex.decode(), *(["--top", str(top)] if top else []),
                *(["-i"] if flags else []), "logs"]
        got = subprocess.run([node.bin, "--home", str(node.home), *args], capture_output=True, cwd=node.mount)
        want = python_count(corpus / "logs", regex, flags)[:top]
        assert got.returncode == 0, got
        assert got.stdout == b"".join(b"%d %s\n" % (n, key) for key, n in want), (args, got.stdout[:300])
    as_json = node.cli("count", "--by", "svc=(a[a-z]+)", "--json", node.p("logs"))
    assert [json.loads(line)["value"] for line in as_json.stdout.splitlines()] in (["api", "auth"], ["auth", "api"])
    nothing = node.cli("count", "--by", "(nothing-like-this)", node.p("logs"), check=False)
    assert nothing.returncode == 1 and nothing.stdout == ""
    bad = node.cli("count", "--by", "(a", node.p("logs"), check=False)
    assert bad.returncode == 2 and bad.stderr == "hypernet: Unmatched ( or \\(\n"


def interrupted_grep(node, path):
    """Ctrl-C of `hypernet grep . PATH` once it printed its first line (log_lines' first: `12:00 …`)."""
    proc = subprocess.Popen([node.bin, "--home", str(node.home), "grep", ".", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().startswith(b"12:00 "), "no match streamed before the scan ended"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_interrupted_grep_stops_the_daemons_scan(node, corpus):
    """The CLI blocks on a full pipe, so the daemon blocks on the control socket; Ctrl-C closes the connection and
    the daemon stops reading: it logs the stop, having scanned far less than the file."""
    size = os.path.getsize(corpus / "logs/big.log")
    interrupted_grep(node, node.p("logs/big.log"))
    pattern = re.compile(r"scan stopped: the requester went away.*bytes=(\d+)")
    helpers.wait_until(lambda: pattern.search(node.log_text()), timeout=30)
    scanned = int(pattern.search(node.log_text()).group(1))
    assert scanned < size // 2, f"scanned {scanned} of {size} bytes after the interrupt"
    # The daemon serves the next request.
    assert hypernet_grep(node, ["-c", "first", "logs/appended.log"], node.mount).stdout == b"1\n"


def test_grep_over_a_file_of_many_chunks(node, corpus):
    """About 2.6 MB in chunks of 64 KiB on average: lines cut by chunk boundaries are matched whole."""
    for args in [["-n", "ERROR"], ["-c", "-v", "svc=api"], ["-n", "-E", "^12:5[0-9] warn.*(timeout|retry)$"]]:
        want = gnu_grep([*args, "logs/big.log"], corpus)
        got = hypernet_grep(node, [*args, "logs/big.log"], node.mount)
        assert got.returncode == want.returncode == 0 and got.stdout == want.stdout, args
