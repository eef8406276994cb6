"""The append-cost property (issue 2): a 100-byte append + fsync costs in proportion to the appended bytes, not
the file size. Measured as bytes added to HOME/store/packs and as time per append. Since delta chunks (issue 6)
the rewritten last chunk and leaf are stored as deltas against their previous versions: a few hundred bytes,
where they were a whole chunk (up to 256 KiB) and a leaf before."""

import os
import statistics
import time

import pytest

from helpers import random_bytes, read_file

APPENDS = 10
# The line, a chunk delta and a leaf delta with their headers (~700 B measured); a whole chunk would be 16 KiB+.
MAX_BYTES_PER_APPEND = 8 << 10
# Below one minimum chunk (16 KiB) differences are noise, not growth with file size.
RATIO_FLOOR = 16 << 10


def write_big(path, head_size, tail):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        remaining = head_size
        while remaining:
            n = min(remaining, 4 << 20)
            os.write(fd, random_bytes(n))
            remaining -= n
        os.write(fd, tail)
    finally:
        os.close(fd)


def measure_appends(node, path):
    costs, times = [], []
    for i in range(APPENDS):
        line = random_bytes(100)
        before = node.pack_bytes()
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append(time.perf_counter() - start)
        costs.append(node.pack_bytes() - before)
    return costs, times


@pytest.mark.timeout(600)
def test_append_cost_independent_of_size(node):
    # Both files end in the same 1 MiB, so content-defined chunking gives them the same last chunk: what an
    # append rewrites is then the same for both, and any difference comes from the file size.
    tail = random_bytes(1 << 20)
    small, large = node.p("small.bin"), node.p("large.bin")
    write_big(small, 0, tail)
    write_big(large, 63 << 20, tail)

    results = {}
    for label, path in (("1 MiB", small), ("64 MiB", large)):
        costs, times = measure_appends(node, path)
        results[label] = (costs, times)
        print(f"{label}: pack bytes per append {costs}, ms {[round(t * 1000, 2) for t in times]}")
        assert max(costs) < MAX_BYTES_PER_APPEND, f"{label}: an append added {max(costs)} bytes to the packs"

    small_cost, large_cost = (statistics.median(results[k][0]) for k in ("1 MiB", "64 MiB"))
    assert large_cost / max(small_cost, RATIO_FLOOR) < 2, \
        f"append cost grows with file size: median {small_cost} bytes (1 MiB) vs {large_cost} bytes (64 MiB)"
    small_time, large_time = (statistics.median(results[k][1]) for k in ("1 MiB", "64 MiB"))
    assert large_time / max(small_time, 0.005) < 3, \
        f"append time grows with file size: {small_time * 1000:.1f} ms (1 MiB) vs {large_time * 1000:.1f} ms (64 MiB)"
    assert read_file(large)[-(APPENDS * 100 + (1 << 20)):-(APPENDS * 100)] == tail
