"""Fixtures for the real-mount integration suite.

`node` / `make_node` start Hypernet daemons through the CLI in a directory of their own and always clean
up, also when a test fails: `hypernet stop`, then `fusermount3 -u -z`, then SIGKILL. Teardown fails the
test on error/critical lines (or crashes, or stray output) in the daemon's log unless the test declared
them with `@pytest.mark.log_errors(regex, ...)` or `node.allow_log_errors(...)`. At the end of the session
the run fails if any mount or hypernet process started by the suite is left.

Every node lives under one suite directory (mode 0755, so that tests can switch to other users), which is
removed at the end when nothing is left mounted in it.
"""

import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import helpers  # noqa: E402
from helpers import Node  # noqa: E402

SUITE_DIR = None  # created on first use by suite_dir()
_NODES = []  # every node of the session, for the watchdog and the leak check
DEFAULT_TIMEOUT = 300


def pytest_configure(config):
    config.addinivalue_line("markers", "log_errors(*regexes): error lines in the daemon log this test expects "
                                       "(no argument: any error line); crashes are never expected")
    config.addinivalue_line("markers", "timeout(seconds): watchdog for one test (default 300 s)")


def suite_dir() -> Path:
    global SUITE_DIR
    if SUITE_DIR is None:
        SUITE_DIR = Path(tempfile.mkdtemp(prefix="hypernet-it-"))
        SUITE_DIR.chmod(0o755)
    return SUITE_DIR


def pytest_sessionstart(session):
    binary = helpers.hypernet_bin()
    if session.config.option.collectonly:
        return
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        # CI must not pass by skipping everything.
        pytest.exit(f"hypernet binary not found or not executable: {binary} "
                    f"(build with `swift build -c release` or set HYPERNET_BIN)", returncode=1)


def _leftovers():
    """Mounts and hypernet processes under the suite directory or pytest's temp dirs."""
    roots = [str(SUITE_DIR)]
    mounts = [point for point, fstype in helpers.mounts()
              if fstype.startswith("fuse")
              and any(point.startswith(root) for root in roots)]
    pids = set()
    for root in roots:
        pids.update(helpers.processes_mentioning(root))
    for node in _NODES:
        pids.update(pid for pid in node.pids if helpers.pid_alive(pid)
                    and "hypernet" in " ".join(helpers.proc_cmdline(pid)))
    return mounts, sorted(pids)


def pytest_sessionfinish(session, exitstatus):
    if SUITE_DIR is None:
        return
    mounts, pids = _leftovers()
    if mounts or pids:
        lines = [f"left behind by the suite: mount {m}" for m in mounts]
        lines += [f"left behind by the suite: process {pid} {' '.join(helpers.proc_cmdline(pid))}" for pid in pids]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for m in mounts:
            helpers.lazy_unmount(m)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "\n".join(lines)
        if reporter is not None:
            reporter.write_line(text, red=True)
        else:
            print(text, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    still_mounted, _ = _leftovers()
    if not still_mounted:
        shutil.rmtree(SUITE_DIR, ignore_errors=True)


@pytest.fixture
def node_dir(request):
    """A fresh directory (0755) under the suite directory, for tests that manage mounts themselves."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    path = Path(tempfile.mkdtemp(prefix=name + "-", dir=suite_dir()))
    path.chmod(0o755)
    return path


@pytest.fixture
def make_node(request):
    """Factory: make_node(options=["allow_other"], quorum=None, fsync_timeout=None, start=True) -> Node.

    `node_class` (a Node subclass) and further keyword arguments (passed to it) let harnesses such as
    cluster.py make their own kind of node with the same cleanup, log and leak checks; `label` names the
    node's directory instead of n0, n1, ..."""
    created = []
    marker_patterns = []
    for marker in request.node.iter_markers("log_errors"):
        marker_patterns.extend(marker.args or [None])

    def factory(options=(), quorum=None, fsync_timeout=None, start=True, node_class=Node, label=None, **extra):
        name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:50]
        label = label or f"n{len(created)}"
        directory = Path(tempfile.mkdtemp(prefix=f"{name}-{label}-", dir=suite_dir()))
        directory.chmod(0o755)
        node = node_class(directory, helpers.hypernet_bin(), options=options, quorum=quorum,
                          fsync_timeout=fsync_timeout, **extra)
        node.allowed_log_errors.extend(marker_patterns)
        created.append(node)
        _NODES.append(node)
        if start:
            node.start()
        return node

    yield factory

    failures = []
    for node in created:
        node.cleanup()
        failures += [f"{node.dir.name}: {p}" for p in node.problems]
        findings = node.log_findings()
        if findings:
            shown = findings[:30] + ([f"... and {len(findings) - 30} more"] if len(findings) > 30 else [])
            failures.append(f"{node.dir.name}: unexpected lines in {node.home / 'hypernet.log'}:\n    "
                            + "\n    ".join(shown))
    if failures:
        pytest.fail("node teardown:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture
def node(make_node):
    """One running node with default options."""
    return make_node()


@pytest.fixture
def cluster(make_node, node_dir):
    """A cluster.Cluster of nodes on their own loopback addresses, closed at the end."""
    from cluster import Cluster

    cl = Cluster(make_node, node_dir)
    yield cl
    cl.close()


@pytest.fixture(autouse=True)
def _watchdog(request):
    """A test stuck in a syscall on a hung mount cannot be interrupted by signals; after the timeout the
    watchdog dumps every thread's stack and SIGKILLs the daemons, which aborts the FUSE connection so the
    blocked calls fail with ENOTCONN and the test ends (failed) instead of hanging CI."""
    marker = request.node.get_closest_marker("timeout")
    seconds = marker.args[0] if marker else DEFAULT_TIMEOUT
    first_node = len(_NODES)

    def fire():
        sys.stderr.write(f"\n*** {request.node.nodeid} exceeded {seconds}s: killing its daemons ***\n")
        faulthandler.dump_traceback(all_threads=True)
        for node in _NODES[first_node:]:
            node.problems.append(f"test exceeded its {seconds}s timeout")
            for pid in node.pids:
                if helpers.pid_alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            helpers.lazy_unmount(node.mount)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
