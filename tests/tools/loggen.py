#!/usr/bin/env python3
"""Appends log lines to a file at a steady rate, as a service's log would grow (issue 19's tail and grep tests).

    loggen.py PATH [--rate LINES_PER_SECOND] [--lines N] [--service NAME] [--retry SECONDS]

Line i (from 1) is `{i:08d} {UTC time} {LEVEL} {service} {message}`; LEVEL is ERROR for one line in 7, WARN for
one in 5 of the others, else INFO, so a pattern like ERROR matches a known share. The file is kept open and each
line is one write(2). Writing resumes after the file's last complete line: a generator restarted (or one whose
writes failed because the filesystem's daemon was killed: it reopens the file every 0.2 s for up to --retry
seconds) continues the numbering, so the final file holds lines 1..N once each, in order. Exits 0 once line N is
written (N = 0: never), 1 if the file stays unwritable for --retry seconds.
"""

import argparse
import os
import sys
import time



def level(i):
    return "ERROR" if i % 7 == 0 else "WARN" if i % 5 == 0 else "INFO"


def line(i, service):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return f"{i:08d} {stamp}Z {level(i)} {service} request {i * 7919 % 100003} took {i % 97} ms\n".encode()


def last_number(path):
    """The number of the file's last complete line (0 if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read()
    except FileNotFoundError:
        return 0
    lines = tail.split(b"\n")[:-1]  # the part after the last newline is incomplete
    return int(lines[-1].split()[0]) if lines and lines[-1] else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--lines", type=int, default=0)
    parser.add_argument("--service", default="svc")
    parser.add_argument("--retry", type=float, default=60.0)
    args = parser.parse_args()
    interval = 1.0 / args.rate
    fd = None
    failing_since = None
    next_at = time.monotonic()
    i = None
    while True:
        try:
            if fd is None:
                i = last_number(args.path) + 1
                fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if args.lines and i > args.lines:
                os.close(fd)
                return 0
            os.write(fd, line(i, args.service))
            failing_since = None
            i += 1
        except OSError as e:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                fd = None
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > args.retry:
                print(f"loggen: {args.path}: {e}", file=sys.stderr)
                return 1
            time.sleep(0.2)
            next_at = time.monotonic()
            continue
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
