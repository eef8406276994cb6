"""Failpoints (docs/testing.md, "Failpoints"): a test build (-Xswiftc -DHYPERNET_FAILPOINTS) crashes, stalls or
fails on demand at named steps of its pipelines (`HYPERNET_FAILPOINT=name:[P%]panic|error|sleep(MS)`). These tests
need such a build and skip otherwise; the fault harness arms them at random (its `failpoint` fault)."""

import os
import subprocess

import pytest

import helpers
from test_durability import count_acks, start_writer

ROUNDS = 3  # at least; more until MIN_ACKED files were acknowledged before the panics, at most MAX_ROUNDS
MIN_ACKED = 10
MAX_ROUNDS = 12


@pytest.fixture(autouse=True)
def _test_build():
    if not helpers.has_failpoints(helpers.hypernet_bin()):
        pytest.skip("the binary has no failpoints (build it with -Xswiftc -DHYPERNET_FAILPOINTS)")


@pytest.mark.log_errors(r"failpoint catalog\.commit: panic")
@pytest.mark.timeout(600)
def test_a_panic_at_catalog_commit_then_restart_loses_nothing_acknowledged(make_node, node_dir, monkeypatch):
    """The daemon dies inside a catalog transaction, at a random one of a writer that fsyncs every file and
    directory, at least three times and until ten acknowledged files are checked (where the panic falls is chance);
    after each restart every file whose fsync returned reads back exactly, from every round so far, and fsck is
    clean at the end."""
    node = make_node(start=False)
    acks, counts = [], {}
    round_ = 0
    while round_ < ROUNDS or (sum(counts.values()) < MIN_ACKED and round_ < MAX_ROUNDS):
        monkeypatch.setenv("HYPERNET_FAILPOINT", "catalog.commit:0.5%panic")
        node.start()
        monkeypatch.delenv("HYPERNET_FAILPOINT")
        ack_file = node_dir / f"acks-{round_}.jsonl"  # outside the mount
        acks.append(ack_file)
        root = node.p(f"round{round_}")
        os.makedirs(root, exist_ok=True)
        writer = start_writer(root, ack_file, "fsync", 1000 + round_)
        try:
            died = helpers.wait_until(lambda: not helpers.pid_alive(node.pid), 180)
            assert died, f"the failpoint never fired: {count_acks(ack_file)} acknowledged writes"
            writer.wait(timeout=30)  # its next call fails on the dead mount (ENOTCONN)
        except subprocess.TimeoutExpired:
            pytest.fail("the writer hung on the dead mount after the failpoint's panic")
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert "failpoint catalog.commit: panic" in node.log_text()
        node.reap()
        node.start()
        for ack in acks:  # recovery must not damage earlier rounds either
            checked, problems = helpers.verify_acks(ack)
            assert not problems, f"round {round_}, {ack.name}:\n" + "\n".join(problems)
            counts[ack.name] = checked
        node.stop()
        round_ += 1
    print(f"acknowledged files verified after each panic: {counts}")
    assert sum(counts.values()) >= MIN_ACKED, f"only {counts} acknowledged files checked in {round_} rounds"
    fsck = node.cli("fsck", check=False, timeout=300)  # the daemon stopped: fsck opens the store itself
    assert fsck.returncode == 0, f"fsck after the panics exited {fsck.returncode}:\n{fsck.stdout}\n{fsck.stderr}"


@pytest.mark.log_errors("HYPERNET_FAILPOINT")
def test_an_unknown_failpoint_is_refused_at_start_in_one_line(make_node, monkeypatch):
    node = make_node(start=False)
    monkeypatch.setenv("HYPERNET_FAILPOINT", "catalog.comit:panic")
    proc = node.cli("mount", node.mount, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == \
        "hypernet: HYPERNET_FAILPOINT: catalog.comit:panic: not NAME:ACTION with a known NAME", proc.stderr
    assert not node.is_mounted()
