#!/usr/bin/env python3
"""Measurements that fio does not cover, and helpers for bench/run.sh.

Each subcommand prints one JSON object on stdout; run.sh stores it per run and target.
Only the standard library is used so the benchmark runs on a fresh machine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def small_files(args):
    """create+write+fsync of COUNT files, then stat of each, then unlink of each (seconds per phase)."""
    work = os.path.join(args.dir, "small")
    os.mkdir(work)
    # Random content, made before timing: a deduplicating or compressing store gets no free ride.
    payloads = [os.urandom(args.size) for _ in range(args.count)]
    paths = [os.path.join(work, "f%05d" % i) for i in range(args.count)]

    start = time.perf_counter()
    for path, data in zip(paths, payloads):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError("short write to %s" % path)
            os.fsync(fd)
        finally:
            os.close(fd)
    created = time.perf_counter()
    for path, data in zip(paths, payloads):
        if os.stat(path).st_size != len(data):
            raise OSError("wrong size after fsync: %s" % path)
    statted = time.perf_counter()
    for path in paths:
        os.unlink(path)
    unlinked = time.perf_counter()
    os.rmdir(work)

    print(json.dumps({
        "small_files": unlinked - start,
        "small_files_create_write_fsync": created - start,
        "small_files_stat": statted - created,
        "small_files_unlink": unlinked - statted,
    }))


def append(args):
    """COUNT appends of BYTES bytes, each followed by fsync, to each FILE=METRIC pair (ms per append+fsync).

    The files take turns, so a passing disturbance (another process's I/O) hits every file alike and
    the medians can be compared with each other.
    """
    targets = []
    for spec in args.files:
        path, _, metric = spec.rpartition("=")
        if not path:
            sys.exit("expected FILE=METRIC, got %r" % spec)
        targets.append((metric, os.open(path, os.O_WRONLY | os.O_APPEND), []))
    try:
        for i in range(args.count):
            line = (b"append %06d " % i).ljust(args.bytes - 1, b".") + b"\n"
            for _, fd, samples in targets:
                start = time.perf_counter()
                os.write(fd, line)
                os.fsync(fd)
                samples.append((time.perf_counter() - start) * 1000.0)
    finally:
        for _, fd, _ in targets:
            os.close(fd)
    figures = {}
    for metric, _, samples in targets:
        samples.sort()
        figures[metric] = statistics.median(samples)
        figures[metric + "_min"] = samples[0]
        figures[metric + "_p90"] = samples[int(0.9 * (len(samples) - 1))]
        figures[metric + "_max"] = samples[-1]
    print(json.dumps(figures))


def fio_metric(args):
    """Throughput (MiB/s) or IOPS of the single job in a fio --output-format=json file."""
    with open(args.json) as f:
        result = json.load(f)
    side = result["jobs"][0][args.direction]
    if side["total_ios"] == 0:
        sys.exit("fio reported no %s I/O in %s" % (args.direction, args.json))
    value = side["bw_bytes"] / (1024 * 1024) if args.kind == "bw" else side["iops"]
    print(json.dumps({args.metric: value}))


def peak_rss(args):
    """VmHWM of a process in MiB: the kernel's own high-water mark, so no sampling is needed."""
    with open("/proc/%d/status" % args.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                print(json.dumps({"peak_rss": kib / 1024}))
                return
    sys.exit("no VmHWM for pid %d" % args.pid)


def _command_output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine(args):
    """Where the figures come from: CPU, memory, kernel, the disk under the benchmark directory."""
    with open("/proc/meminfo") as f:
        mem_kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    cpu_model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    source, fstype = (_command_output(["findmnt", "-no", "SOURCE,FSTYPE", "-T", args.dir]) or "? ?").split()[:2]
    # The size of the whole disk, not of the partition.
    block = _command_output(["lsblk", "-ndo", "PKNAME", source]) or os.path.basename(source)
    disk = {"device": source, "fstype": fstype, "size": _command_output(["lsblk", "-ndo", "SIZE", "/dev/" + block])}
    print(json.dumps({
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / (1024 * 1024), 1),
        "kernel": platform.release(),
        "disk": disk,
        "fio": _command_output(["fio", "--version"]),
        "gocryptfs": (_command_output(["gocryptfs", "--version"]) or "").split(";")[0] or None,
        "libfuse": _command_output(["pkg-config", "--modversion", "fuse3"]),
        # Other work on the machine skews every figure: say how busy it was.
        "loadavg_at_start": _loadavg(),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("small-files", help=small_files.__doc__)
    p.add_argument("dir")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--size", type=int, default=4096)
    p.set_defaults(func=small_files)

    p = sub.add_parser("append", help=append.__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", metavar="FILE=METRIC")
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--bytes", type=int, default=100)
    p.set_defaults(func=append)

    p = sub.add_parser("fio-metric", help=fio_metric.__doc__)
    p.add_argument("json")
    p.add_argument("--metric", required=True)
    p.add_argument("--direction", choices=["read", "write"], required=True)
    p.add_argument("--kind", choices=["bw", "iops"], required=True)
    p.set_defaults(func=fio_metric)

    p = sub.add_parser("peak-rss", help=peak_rss.__doc__)
    p.add_argument("pid", type=int)
    p.set_defaults(func=peak_rss)

    p = sub.add_parser("machine", help=machine.__doc__)
    p.add_argument("dir")
    p.set_defaults(func=machine)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
