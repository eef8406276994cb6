"""The fault harness (tests/faults/harness.py, docs/testing.md) in its CI mode: three nodes in network
namespaces, a minute of random faults (kill -9, SIGSTOP, partitions, packet loss, rate limits, delay and jitter,
clock skew, power loss, a failing and a full disk (lazyfs's and a real loop-mounted ext4), damaged packs and WAL, and
failpoints with a test build) while every mount is written,
then the history check and its report line. Every workload runs (`files`, and `trees`: `rm -rf` racing edits and
creates at every depth). The seed is random unless HYPERNET_FAULT_SEED gives one; a failure prints the command that
replays it. HYPERNET_FAULT_DURATION changes the minute."""

import os
import random
import sys
from pathlib import Path

import pytest

import helpers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
import harness  # noqa: E402

pytestmark = pytest.mark.replication


@pytest.mark.timeout(600)
def test_random_faults_lose_nothing_acknowledged_and_the_nodes_converge(node_dir):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    seed = int(os.environ.get("HYPERNET_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
    duration = float(os.environ.get("HYPERNET_FAULT_DURATION", "60"))
    run = harness.Harness(helpers.hypernet_bin(), node_dir, seed, nodes=3, duration=duration,
                          workloads=harness.WORKLOADS, progress=lambda line: print(line, flush=True))
    try:
        report = run.run()
    finally:
        run.teardown()
        if run.history is not None:
            run.history.close()
    print("fault harness: " + harness.summary(report))
    replay = (f"HYPERNET_BIN=... python3 tests/faults/harness.py --seed {seed} --duration {duration:g} "
              f"--workloads {','.join(harness.WORKLOADS)}")
    assert report["acknowledged_lost"] == 0 and not report["problems"], \
        "\n".join(report["problems"]) + f"\nreplay: {replay} (history: {run.history.path})"
    assert sum(report["faults"].values()) > 0 and report["results"].get("ok", 0) > 0, \
        f"the run injected no fault or acknowledged nothing: {report}"


class _Folder:
    """A stand-in for a node: the checker reads its `mount` and runs `hypernet cat` through `run`."""

    mount_enabled = True

    def __init__(self, path, revisions=()):
        self.mount = path
        self.revisions = list(revisions)

    def run(self, *args, check=False, text=False):
        raise AssertionError("no shared path in these histories")


def _ops(*entries):
    """History records of operations run one after the other, a second each."""
    ops = []
    for t, (op_id, kind, path, data, result) in enumerate(entries):
        ops.append({"type": "invoke", "t": float(t), "id": op_id, "op": kind, "path": path,
                    "value": None if data is None else harness.digest(data),
                    "size": None if data is None else len(data)})
        ops.append({"type": "complete", "t": t + 0.5, "id": op_id, "result": result, "error": None})
    return ops


def _check(tmp_path, contents, ops, path="c-a/f0"):
    folders = []
    for i, content in enumerate(contents):
        root = tmp_path / f"n{i}"
        (root / path).parent.mkdir(parents=True)
        if content is not None:
            (root / path).write_bytes(content)
        folders.append(_Folder(root))
    return harness.Checker(folders, ops).check()


def test_the_checker_accepts_the_last_acknowledged_value_or_a_prefix_of_a_later_unknown_write(tmp_path):
    first, second = harness.payload("a-1", 4096), harness.payload("a-2", 70_000)
    ops = _ops(("a-1", "write", "c-a/f0", first, "ok"), ("a-2", "write", "c-a/f0", second, "unknown"))
    for content in (first, second, second[:1000], b""):
        report = _check(tmp_path / str(len(content)), [content, content], ops)
        assert report["problems"] == [] and report["acknowledged_lost"] == 0, report


def test_the_checker_flags_a_lost_acknowledged_write_a_torn_file_and_disagreeing_nodes(tmp_path):
    first, second = harness.payload("a-1", 4096), harness.payload("a-2", 4096)
    acked = _ops(("a-1", "write", "c-a/f0", first, "ok"), ("a-2", "write", "c-a/f0", second, "ok"))
    lost = _check(tmp_path / "lost", [first, first], acked)
    assert lost["acknowledged_lost"] == 1 and "not what the last acknowledged operation" in lost["problems"][0]
    gone = _check(tmp_path / "gone", [None, None], acked)
    assert gone["acknowledged_lost"] == 1
    torn = _check(tmp_path / "torn", [second[:100], second[:100]], acked)
    assert torn["acknowledged_lost"] == 1, "a prefix of an acknowledged write is a loss"
    split = _check(tmp_path / "split", [second, first], acked)
    assert "nodes read different contents" in split["problems"][0]


def test_a_removal_above_excuses_a_missing_file_only_if_it_ended_after_the_write_began(tmp_path):
    path, data = "trees/d0/sub0/a-f0", harness.payload("a-1", 1000)
    removed_after = _ops(("a-1", "write", path, data, "ok"), ("b-1", "rmtree", "trees/d0", None, "ok"))
    assert _check(tmp_path / "after", [None, None], removed_after, path)["problems"] == []
    removed_before = _ops(("b-1", "rmtree", "trees/d0", None, "ok"), ("a-1", "write", path, data, "ok"))
    report = _check(tmp_path / "before", [None, None], removed_before, path)
    assert report["acknowledged_lost"] == 1, "a write after the removal ended must survive it"


def test_fsync_figures_are_grouped_by_the_faults_active_during_each_fsync():
    seconds = [0.1, 0.2, 3.0, 0.3]
    kinds = [frozenset(), frozenset(), frozenset({"pause", "loss"}), frozenset({"loss"})]
    by_fault = harness.fsync_by_fault(seconds, kinds)
    assert by_fault["none"] == {"fsyncs": 2, "p50_s": 0.1, "p99_s": 0.2}
    assert by_fault["loss"] == {"fsyncs": 2, "p50_s": 0.3, "p99_s": 3.0}, "an fsync during two faults counts for both"
    assert by_fault["pause"] == {"fsyncs": 1, "p50_s": 3.0, "p99_s": 3.0}
