"""Running as a service (issue 20, item 5; docs/cli.md, "Running as a service"): what setup.sh installs (units,
completions, man pages) is well-formed, the units pass `systemd-analyze verify`, and the daemon speaks sd_notify
(READY=1 once the mount answers, STOPPING=1 when it starts to stop), stops on SIGTERM with an unmount and exit 0,
and logs to the journal when stderr is one."""

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import helpers
from helpers import Node, wait_until

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "mount-helpers" / "systemd"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """setup.sh's install_service_files into a directory of its own (as ROOT)."""
    root = tmp_path_factory.mktemp("root")
    proc = subprocess.run(["bash", "-c", '. mount-helpers/deps.sh && install_service_files "$0" "$1"', str(root),
                           helpers.hypernet_bin()], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return root


def test_completions(installed):
    bash = installed / "usr/share/bash-completion/completions/hypernet"
    zsh = installed / "usr/share/zsh/vendor-completions/_hypernet"
    fish = installed / "usr/share/fish/vendor_completions.d/hypernet.fish"
    assert "mount" in bash.read_text() and "--foreground" in bash.read_text()
    assert zsh.read_text().startswith("#compdef hypernet")
    assert "complete -c 'hypernet'" in fish.read_text()
    proc = subprocess.run(["bash", "-n", str(bash)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # Sourced into a shell that has bash-completion's `complete`, it registers a completion for hypernet.
    proc = subprocess.run(["bash", "-c", f'. "{bash}" && complete -p hypernet'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "hypernet" in proc.stdout, proc.stderr
    for shell, script in (("zsh", zsh), ("fish", fish)):
        if shutil.which(shell):
            proc = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr


def test_man_pages(installed):
    pages = installed / "usr/local/share/man/man1"
    names = sorted(p.name for p in pages.iterdir())
    for page in ("hypernet.1", "hypernet-mount.1", "hypernet-status.1", "hypernet-id-export.1",
                 "hypernet-peer-add.1", "hypernet-contact-list.1"):
        assert page in names, names
    for name in names:
        # groff's warnings on (-ww): a page must render without one.
        proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(pages / name)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", f"{name}: {proc.stderr}"
    rendered = subprocess.run(["man", "-l", str(pages / "hypernet-mount.1")], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"})
    assert rendered.returncode == 0, rendered.stderr
    assert "HYPERNET-MOUNT" in rendered.stdout and "--foreground" in rendered.stdout
    top = subprocess.run(["man", "-l", str(pages / "hypernet.1")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"}).stdout
    assert "hypernet-mount(1)" in top


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit, scope", [("hypernet@.service", "--system"), ("hypernet.service", "--user")])
def test_units_pass_systemd_analyze_verify(installed, tmp_path, unit, scope):
    # Works offline (no systemd as PID 1 needed); a unit it cannot parse still exits 0, so stderr must stay
    # empty. The man pages its Documentation= names are looked up with `man`, among the installed ones.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    directory = "system" if scope == "--system" else "user"
    copy = tmp_path / unit
    shutil.copy(installed / "usr/local/lib/systemd" / directory / unit, copy)
    assert copy.read_bytes() == (UNITS / unit).read_bytes()
    proc = subprocess.run(["systemd-analyze", scope, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime),
                               "MANPATH": str(installed / "usr/local/share/man")})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def as_service(node, journal, *args, abstract=True):
    """Starts `hypernet ARGS... --foreground` as systemd would: a notify socket (an abstract name or a path) that
    it returns, and stderr a journal stream (the file `journal`)."""
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"hypernet-test-{os.getpid()}-{node.dir.name}"
        manager.bind("\0" + name)
        notify_socket = "@" + name
    else:
        notify_socket = str(node.dir / "notify")
        manager.bind(notify_socket)
    manager.settimeout(60)
    info = os.fstat(journal.fileno())
    env = {k: v for k, v in os.environ.items() if k != "HYPERNET_HOME"}
    env.update(NOTIFY_SOCKET=notify_socket, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
    proc = subprocess.Popen([node.bin, "--home", str(node.home), *args, "--foreground"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=journal, env=env)
    return manager, proc


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract-socket", "path-socket"])
def test_notify_ready_stopping_and_sigterm(node_dir, abstract):
    node = Node(node_dir, helpers.hypernet_bin())
    journal = open(node_dir / "journal", "w+b")
    manager, proc = as_service(node, journal, "mount", str(node.mount), abstract=abstract)
    try:
        ready, _ = manager.recvfrom(4096)
        assert ready == b"READY=1"
        # Sent once a stat of the mount was answered: it is mounted and serves at once.
        assert node.is_mounted()
        helpers.write_file(node.p("f"), b"written before SIGTERM")
        os.kill(proc.pid, signal.SIGTERM)
        stopping, _ = manager.recvfrom(4096)
        assert stopping == b"STOPPING=1"
        assert proc.wait(timeout=60) == 0
        assert not node.is_mounted()
    finally:
        helpers.end_foreground(proc, node)
        manager.close()
    journal.seek(0)
    lines = journal.read().decode(errors="replace").splitlines()
    journal.close()
    # The journal gets the daemon's log, with sd-daemon(3) priorities and without a time of its own;
    # HOME/hypernet.log gets nothing.
    assert f"hypernet: created {node.home}" in lines
    assert any(line.startswith("<6>hypernet: mount ready ") for line in lines), lines
    assert "<6>hypernet: daemon stopped" in lines, lines
    assert not (node.home / "hypernet.log").exists() or "mount ready" not in node.log_text()
    # Nothing acknowledged was lost by the stop.
    node.start()
    try:
        assert helpers.read_file(node.p("f")) == b"written before SIGTERM"
    finally:
        node.cleanup()
    assert node.problems == []


def test_notify_when_serving(node_dir):
    # `serve` is ready once the node runs and its control socket answers.
    node = Node(node_dir, helpers.hypernet_bin())
    with open(node_dir / "journal", "w+b") as journal:
        manager, proc = as_service(node, journal, "serve")
        try:
            assert manager.recvfrom(4096)[0] == b"READY=1"
            assert node.cli("status").returncode == 0
            os.kill(proc.pid, signal.SIGTERM)
            assert manager.recvfrom(4096)[0] == b"STOPPING=1"
            assert proc.wait(timeout=60) == 0
        finally:
            helpers.end_foreground(proc, node)
            manager.close()


@pytest.mark.parametrize("unit", ["hypernet@.service", "hypernet.service"])
def test_the_units_clear_a_dead_mount_before_a_restart_and_leave_a_live_one(make_node, unit):
    # Restart=on-failure after a crash: `mount` refuses a dead FUSE mount (exit 6), so ExecStartPre clears it.
    [prepare] = [line.split("=", 1)[1] for line in (UNITS / unit).read_text().splitlines()
                 if line.startswith("ExecStartPre=")]
    assert prepare.startswith("/bin/sh -c '") and prepare.endswith("'")
    script = prepare[len("/bin/sh -c '"):-1]
    node = make_node()

    def run_prepare():
        env = {**os.environ, "HYPERNET_MOUNTPOINT": str(node.mount)}
        proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

    run_prepare()
    assert node.is_mounted(), "ExecStartPre unmounted a live mount"
    os.kill(node.pid, signal.SIGKILL)
    assert wait_until(lambda: not helpers.pid_alive(node.pid), 10)
    node.running = False
    listing = helpers.errno_of(os.listdir, node.mount)
    assert node.is_mounted() and listing in ("ENOTCONN", "ECONNABORTED"), f"a dead mount: {listing}"
    run_prepare()
    assert not node.is_mounted() and node.mount.is_dir()
    node.start()
    assert node.is_mounted()

