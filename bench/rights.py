#!/usr/bin/env python3
"""Benchmark of issue 4 (rights), all on loopback, in one run:

  * grant latency on a folder of FILES files (4 KiB each): from the start of `hypernet grant MOUNT/share bob read`
    on alice's node A until bob's node B reads `MOUNT/@alice/share/fLAST` byte-exact (polled every 10 ms); the
    command's own time (the first grant moves every document below `share` to share's new chain, one revision
    each: O(files), expected);
  * revoke latency on the same folder: from the start of `hypernet revoke MOUNT/share bob` until B holds the new
    permission block (its catalog's `blocks` has the next epoch of share's document) AND `ls MOUNT/@alice` on B
    no longer lists `share`; the size of the new block, and the revisions the revoke made on A. The same on a
    folder of 10 files, as the O(files) control;
  * a revoke with 100 more members: 100 identities made with `hypernet --home DIR init`, contacts of alice, each
    granted `read` on `share100` (one grant each, bob first); then one revoke of one of them, timed until B (a
    member too) holds the new block; block size with 102 members against 2;
  * the write-path cost of encryption: write + fsync of a new file of random bytes (fresh bytes every time) into
    a private folder of A and into a public one (`hypernet grant MOUNT/pub '*' read`), PAIRS pairs per run, the
    two writes of a pair back to back, their order alternating (and once into a native directory on the same file
    system as the homes). A public document's chunks are stored in the clear (ChunkSealer: no HMAC chunk
    key, no AEAD; the id is a BLAKE2b of the stored frame, as for a private chunk's ciphertext; only its small
    metadata is still sealed, under the known all-zero key), so private and public differ by the encryption of
    the content alone: (public - private) / public throughput, per pair, is the fraction of write throughput lost
    to encryption, the figure that answers "encryption costs <= 15 %" (median of the run's pairs, then of the
    runs). Checked: the start of a public file is in A's store as is, that of a private one is not. Explanatory:
    the throughput of ChaCha20-Poly1305 and HMAC-SHA-256 (OpenSSL's, as the daemon uses them, through ctypes and
    `hmac`; 64 KiB buffers: the average chunk) on this machine, i.e. what a private chunk costs more than a public one, as a share of the private
    write time (the loss if that work were serial) and of the daemon's CPU time for the write (/proc/PID/stat),
    and the daemon's CPU per GB private minus public.

Every timed command starts with both daemons idle (at most 10 % of a core over 0.5 s), and its effects are polled
in order, the cheap one first: B's catalog for the block, then B's mount (a listing of /@alice walks every shared
directory whenever alice's log has grown, about 0.3 s with a 1,000-file share, so polling it before the block
arrives would slow B down). The cost of one such
listing, and of a read of the last file, are reported too.

Nodes: A (alice, mounts, listens on 127.X.Y.1) and B (bob, its own identity, mounts, `--peer A --pin alice`),
contacts both ways; fresh homes for every run. B is stopped before the write-throughput part, so that A's write
path is measured alone (as bench/run.sh does) and not against B storing the same bytes on the same 2 cores.

Usage: sudo HYPERNET_BIN=.build/release/hypernet python3 bench/rights.py [--runs 3] [--files 1000]
       [--members 100] [--mib 256] [--pairs 5] [--crypto-mib 1024] [--dir DIR]
Prints one line per figure (medians of the runs) and writes JSON to bench/results/rights-<time>.json.
Needs root (FUSE). Everything it starts is stopped on exit, also on failure.
"""

import argparse
import ctypes
import fcntl
import hashlib
import hmac
import json
import mmap
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replication import Node, write_all, write_file  # noqa: E402
from workloads import _loadavg  # noqa: E402

POLL_S = 0.010          # how often the effect on B is checked while a timed command runs
SETTLE_POLL_S = 0.05    # setup waits
FILE_SIZE = 4096
SMALL_FILES = 10        # the O(files) control folder, and the files of share100
REVOKE_TARGET_S = 2.0
ENCRYPTION_TARGET = 0.15


def log(msg):
    print(f"rights: {msg}", file=sys.stderr, flush=True)


def loadavg_text():
    return " ".join(f"{x:.2f}" for x in _loadavg())


class Failure(RuntimeError):
    pass


def log_tail(node, lines=25):
    try:
        return "\n".join((node.home / "hypernet.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def until(predicate, timeout, what, nodes=(), interval=SETTLE_POLL_S):
    """Polls `predicate` until truthy; on timeout raises with the tail of each node's log."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = "".join(f"\n--- {n.name}: {n.home}/hypernet.log (tail)\n{log_tail(n)}" for n in nodes)
            raise Failure(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def query(node, sql, params=()):
    """Read-only query of a node's catalog; None while it cannot be read (busy)."""
    try:
        db = sqlite3.connect(f"file:{node.home}/store/catalog.sqlite?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()


def revisions_of(node, tree):
    rows = query(node, "SELECT COUNT(*) FROM revisions WHERE tree = ?", (tree,))
    return rows[0][0] if rows else -1


def block_size(node, document, epoch):
    """Length of the stored block of `document`'s chain at `epoch`, or None if the node does not hold it."""
    rows = query(node, "SELECT length(record) FROM blocks WHERE document = ? AND epoch = ?", (document, epoch))
    return rows[0][0] if rows else None


def max_epoch(node, document):
    rows = query(node, "SELECT MAX(epoch) FROM blocks WHERE document = ?", (document,))
    return rows[0][0] if rows and rows[0][0] is not None else -1


def status(node):
    out = {}
    for line in node.cli("status").stdout.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def settled(node):
    s = status(node)
    return s.get("directories awaiting a revision") == "0" and s.get("open files") == "0"


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiet(nodes, timeout=60, window=0.5, busy=0.05):
    """Waits until every node's daemon used at most `busy` s of CPU over `window` s (done with what the previous
    step gave it), so that a timed command does not also measure the tail of earlier work. Returns the seconds
    waited."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        before = [cpu_seconds(n.pid) for n in nodes]
        time.sleep(window)
        if all(cpu_seconds(n.pid) - b <= busy for n, b in zip(nodes, before)):
            return time.perf_counter() - start
        if time.monotonic() > deadline:
            raise Failure(f"the daemons of {', '.join(n.name for n in nodes)} stayed busy for {timeout} s")


def doc_id(path):
    """user.hypernet.id (32 hex digits) as the catalog stores it: 16 bytes."""
    return bytes.fromhex(os.getxattr(path, "user.hypernet.id").decode().strip())


def read_or_none(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def listing(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def median_time(fn, times=3):
    samples = []
    for _ in range(times):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def make_files(directory, count, size=FILE_SIZE, prefix="f"):
    """`count` new files of random bytes (write + close, no fsync); returns {name: bytes}."""
    directory.mkdir()
    files = {}
    for i in range(count):
        name = f"{prefix}{i:04d}"
        data = os.urandom(size)
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        files[name] = data
    return files


class Timed:
    """Runs a command in the background: `start` (perf_counter just before the spawn), `end` once it exited."""

    def __init__(self, argv, env):
        self.argv = argv
        self.end = None
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=env)
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        self.out, self.err = self.proc.communicate()
        self.end = time.perf_counter()

    def join(self, timeout):
        self.thread.join(timeout)
        if self.end is None:
            raise Failure(f"`{' '.join(self.argv)}` did not finish within {timeout} s")
        if self.proc.returncode != 0:
            raise Failure(f"`{' '.join(self.argv)}` failed with exit code {self.proc.returncode}: {self.err.strip()}")
        return self.end - self.start


def timed_effect(node, args, conditions, timeout, nodes):
    """Starts `hypernet --home NODE.home ARGS…` and polls `conditions` ({name: predicate}) every POLL_S from the
    moment the command starts, in order: a condition is polled only once the ones before it held (they are
    monotonic: once true, they stay true), so an expensive check (a listing of /@alice) does not load the node
    before the cheap one (a catalog query) says the change has arrived. Each is recorded at the return of the
    first check that found it true. Returns (command seconds, {name: seconds from the start}, effect = the last)."""
    env = dict(os.environ, HYPERNET_PWHASH="interactive")
    cmd = Timed([node.binary, "--home", str(node.home), *args], env)
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(conditions):
        for name, predicate in conditions.items():
            if name in seen:
                continue
            if not predicate():
                break
            seen[name] = time.perf_counter() - cmd.start
        if len(seen) == len(conditions):
            break
        if cmd.end is not None and cmd.proc.returncode != 0:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    command = cmd.join(max(1.0, deadline - time.monotonic() + 60))
    missing = [name for name in conditions if name not in seen]
    if missing:
        detail = "".join(f"\n--- {n.name}: {n.home}/hypernet.log (tail)\n{log_tail(n)}" for n in nodes)
        raise Failure(f"`hypernet {' '.join(args)}` (exit 0 after {command:.2f} s): no effect within {timeout} s: "
                      f"{', '.join(missing)} never held{detail}")
    return command, seen, max(seen.values())


# --- the AEAD and hash throughput of this machine -----------------------------------------------------------

def crypto_rates(total_bytes, size=64 << 10):
    """MB/s of what a private chunk costs more than a public one, over `size`-byte buffers, `total_bytes` each, with
    the daemon's implementations: ChaCha20-Poly1305 from OpenSSL's libcrypto (the bulk of its XChaCha20-Poly1305,
    the HChaCha20 subkey being 64 bytes of work per chunk) through ctypes, and HMAC-SHA-256 (the chunk key) through
    Python's `hmac`, which is OpenSSL's too. The per-call Python overhead (~1 us per 64 KiB) makes the figures
    slightly low, hence the share of encryption slightly high."""
    lib = ctypes.CDLL("libcrypto.so.3")
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_chacha20_poly1305.restype = ctypes.c_void_p
    lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_int]
    lib.EVP_EncryptFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    cipher = lib.EVP_chacha20_poly1305()
    plain = ctypes.create_string_buffer(os.urandom(size), size)
    sealed = ctypes.create_string_buffer(size + 16)
    out_len = ctypes.c_int()
    key = os.urandom(32)
    nonce = bytes(12)  # zero, as for chunks

    def seal():
        ctx = lib.EVP_CIPHER_CTX_new()
        ok = lib.EVP_EncryptInit_ex(ctx, cipher, None, key, nonce) == 1
        ok = ok and lib.EVP_EncryptUpdate(ctx, sealed, ctypes.byref(out_len), plain, size) == 1
        ok = ok and lib.EVP_EncryptFinal_ex(ctx, sealed, ctypes.byref(out_len)) == 1
        lib.EVP_CIPHER_CTX_free(ctx)
        if not ok:
            raise Failure("OpenSSL's ChaCha20-Poly1305 failed")

    n = max(1, total_bytes // size)
    seal()  # warm up
    start = time.perf_counter()
    for _ in range(n):
        seal()
    aead_s = time.perf_counter() - start
    data = bytes(plain.raw[:size])
    start = time.perf_counter()
    for _ in range(n):
        hmac.new(key, data, "sha256").digest()
    mac_s = time.perf_counter() - start
    return {"aead_MBps": n * size / aead_s / 1e6, "chunk_key_MBps": n * size / mac_s / 1e6,
            "bytes": n * size, "buffer": size}


def in_store(store, needles):
    """For each byte string of `needles`: is it in any file below `store` (packs, catalog…)?"""
    found = [False] * len(needles)
    for path in sorted(p for p in Path(store).rglob("*") if p.is_file()):
        if all(found) or path.stat().st_size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for i, needle in enumerate(needles):
                found[i] = found[i] or m.find(needle) >= 0
    return found


# --- one run ------------------------------------------------------------------------------------------------

def one_run(binary, root, run, args, members):
    """members: [(contact name, token)] of the extra identities. Returns the run's figures."""
    r = {"loadavg_before": _loadavg()}
    base = 100 + os.getpid() % 100
    a = Node(binary, root, "alice", f"127.{base}.{run + 1}.1:7420")
    b = Node(binary, root, "bob", f"127.{base}.{run + 1}.2:7420")
    nodes = [a, b]
    try:
        alice = a.cli("init", "--name", "alice").stdout.strip()
        bob = b.cli("init", "--name", "bob").stdout.strip()
        a.cli("contact", "add", "bob", bob)
        b.cli("contact", "add", "alice", alice)
        a.start()
        b.start("--peer", a.address, "--pin", alice)
        r["quorum_a"] = status(a).get("quorum")

        # --- 1. grant on a folder of FILES files -----------------------------------------------------------
        log(f"run {run + 1}: {args.files} files in share")
        share = a.mount / "share"
        files = make_files(share, args.files)
        last = f"f{args.files - 1:04d}"
        until(lambda: settled(a), 60, "alice's node to make its revisions", nodes)
        share_id = doc_id(share)
        tree = until(lambda: (query(a, "SELECT tree FROM revisions WHERE document = ? LIMIT 1", (share_id,)) or [[None]])[0][0],
                     30, "a revision of share on A", nodes)
        until(lambda: revisions_of(b, tree) == revisions_of(a, tree) > args.files, 300,
              "B to hold every revision of alice's tree", nodes)
        until(lambda: "@alice" in listing(b.mount), 30, "`@alice` in bob's root", nodes)
        if listing(b.mount / "@alice"):
            raise Failure(f"bob sees {listing(b.mount / '@alice')} in /@alice before any grant")
        before = revisions_of(a, tree)

        quiet(nodes)
        log(f"run {run + 1}: grant share bob read")
        grant_start = time.perf_counter()
        target = b.mount / "@alice" / "share" / last
        command, seen, effect = timed_effect(
            a, ["grant", str(share), "bob", "read"],
            {"block_on_b": lambda: block_size(b, share_id, 0) is not None,
             "readable_on_b": lambda: read_or_none(target) == files[last]},
            120, nodes)
        r["grant_command_s"], r["grant_effect_s"] = command, effect
        r["grant_block_on_b_s"], r["grant_readable_on_b_s"] = seen["block_on_b"], seen["readable_on_b"]
        until(lambda: settled(a), 60, "alice's node to settle after the grant", nodes)
        r["grant_revisions_made"] = revisions_of(a, tree) - before
        until(lambda: revisions_of(b, tree) == revisions_of(a, tree), 120, "B to hold the grant's revisions", nodes)
        shown = listing(b.mount / "@alice")
        if shown != ["share"]:
            raise Failure(f"bob's /@alice lists {shown} after the grant (expected ['share'])")
        # Measured from the grant's start: until both daemons are idle again (B keeps working on the grant's
        # revisions for a while after it can read the last file); the revoke is timed from an idle state.
        quiet(nodes)
        r["grant_until_quiet_s"] = time.perf_counter() - grant_start
        # What one look at B's view costs now: `ls MOUNT/@alice` (share listed) and a read of the last file.
        r["ls_alice_share_listed_s"] = median_time(lambda: listing(b.mount / "@alice"))
        r["read_last_file_s"] = median_time(lambda: read_or_none(target))
        quiet(nodes)

        log(f"run {run + 1}: revoke share bob")
        before = revisions_of(a, tree)
        command, seen, effect = timed_effect(
            a, ["revoke", str(share), "bob"],
            {"block_on_b": lambda: block_size(b, share_id, 1) is not None,
             "unlisted_on_b": lambda: "share" not in listing(b.mount / "@alice")},
            60, nodes)
        r["revoke_command_s"], r["revoke_effect_s"] = command, effect
        r["revoke_block_on_b_s"], r["revoke_unlisted_on_b_s"] = seen["block_on_b"], seen["unlisted_on_b"]
        time.sleep(1.2)  # the once-a-second pass: any revision the revoke caused is made by now
        until(lambda: settled(a), 60, "alice's node to settle after the revoke", nodes)
        r["revoke_revisions_made"] = revisions_of(a, tree) - before
        r["block_2_members_bytes"] = block_size(b, share_id, 0)   # alice + bob
        r["block_1_member_bytes"] = block_size(b, share_id, 1)    # alice, after the revoke
        if read_or_none(target) is not None:
            r["problem_read_after_revoke"] = f"bob still reads {target} after the revoke"

        # --- the O(files) control: the same on a folder of 10 files ------------------------------------------
        log(f"run {run + 1}: the same on a folder of {SMALL_FILES} files")
        small = a.mount / "small"
        small_files = make_files(small, SMALL_FILES)
        until(lambda: settled(a), 60, "alice's node to make its revisions", nodes)
        small_id = doc_id(small)
        until(lambda: revisions_of(b, tree) == revisions_of(a, tree), 120, "B to hold the small folder", nodes)
        small_last = f"f{SMALL_FILES - 1:04d}"
        quiet(nodes)
        command, seen, effect = timed_effect(
            a, ["grant", str(small), "bob", "read"],
            {"readable_on_b": lambda: read_or_none(b.mount / "@alice" / "small" / small_last) == small_files[small_last]},
            60, nodes)
        r["small_grant_command_s"], r["small_grant_effect_s"] = command, effect
        until(lambda: settled(a), 60, "alice's node to settle", nodes)
        until(lambda: revisions_of(b, tree) == revisions_of(a, tree), 120, "B to hold the small folder's grant", nodes)
        quiet(nodes)
        r["ls_alice_small_listed_s"] = median_time(lambda: listing(b.mount / "@alice"))
        quiet(nodes)
        command, seen, effect = timed_effect(
            a, ["revoke", str(small), "bob"],
            {"block_on_b": lambda: block_size(b, small_id, 1) is not None,
             "unlisted_on_b": lambda: "small" not in listing(b.mount / "@alice")},
            60, nodes)
        r["small_revoke_command_s"], r["small_revoke_effect_s"] = command, effect
        r["small_block_1_member_bytes"] = block_size(b, small_id, 1)

        # --- 3. a revoke with 100 more members ----------------------------------------------------------------
        log(f"run {run + 1}: share100 with bob and {len(members)} more members")
        for name, token in members:
            a.cli("contact", "add", name, token)
        s100 = a.mount / "share100"
        make_files(s100, SMALL_FILES)
        until(lambda: settled(a), 60, "alice's node to make its revisions", nodes)
        s100_id = doc_id(s100)
        grants = []
        for who in ["bob"] + [name for name, _ in members]:
            t = time.perf_counter()
            a.cli("grant", str(s100), who, "read")
            grants.append(time.perf_counter() - t)
        r["grant_100_command_s"] = grants  # one per member, in order: bob first (it moves the files), then m000…
        epoch = len(grants) - 1
        rights = a.cli("rights", str(s100)).stdout.splitlines()
        r["members_before_revoke"] = len(rights)
        until(lambda: block_size(b, s100_id, epoch) is not None, 60,
              f"B to hold share100's block of epoch {epoch}", nodes)
        until(lambda: settled(a), 60, "alice's node to settle", nodes)
        quiet(nodes)
        victim = members[0][0]
        command, seen, effect = timed_effect(
            a, ["revoke", str(s100), victim],
            {"block_on_b": lambda: block_size(b, s100_id, epoch + 1) is not None},
            60, nodes)
        r["revoke_100_command_s"], r["revoke_100_effect_s"] = command, effect
        r["block_many_members_bytes"] = block_size(b, s100_id, epoch)       # alice + bob + members
        r["block_after_revoke_100_bytes"] = block_size(b, s100_id, epoch + 1)
        # [epoch, members, bytes]: epoch k of share100 has k + 2 members (alice, bob, k others); the last one is
        # the revoke's, with one member fewer.
        r["block_sizes"] = [[k, k + 2 if k <= epoch else epoch + 1, block_size(b, s100_id, k)] for k in range(epoch + 2)]
        r["members_after_revoke"] = len(a.cli("rights", str(s100)).stdout.splitlines())
        if max_epoch(b, s100_id) != epoch + 1:
            r["problem_epochs"] = f"B holds share100 up to epoch {max_epoch(b, s100_id)}, expected {epoch + 1}"

        # --- 4. the write-path cost of encryption: private vs public (in the clear) vs native ----------------
        # A private folder's chunks are keyed-BLAKE2b'd (the chunk key) and sealed with XChaCha20-Poly1305; a
        # public folder's are stored in the clear (ChunkSealer: no chunk key, no AEAD); both get the chunk id (a
        # BLAKE2b of the stored bytes) and sealed metadata (under the known all-zero key for the public one; a few
        # hundred bytes). So (public - private) / public is the fraction of write throughput lost to encryption.
        # One write is noisy on this VM (per-run ratios 0.86-1.08 before): `--pairs` private/public pairs per run,
        # the two writes of a pair back to back, their order alternating from pair to pair (ABBA).
        log(f"run {run + 1}: write throughput ({args.mib} MiB, {args.pairs} private/public pairs): "
            f"stopping bob's node first")
        b.stop()
        priv, pub, native = a.mount / "priv", a.mount / "pub", root / "native"
        priv.mkdir()
        pub.mkdir()
        native.mkdir()
        a.cli("grant", str(pub), "*", "read")
        rights = a.cli("rights", str(pub)).stdout
        if "* read" not in rights:
            raise Failure(f"`hypernet grant {pub} '*' read` did not make it public: rights are {rights!r}")
        until(lambda: settled(a), 60, "alice's node to settle", nodes)
        size = args.mib << 20
        samples = {}  # label -> 64 bytes at the start of its first file (a chunk's frame starts with them)

        def timed_write(label, directory, name):
            data = os.urandom(size)  # fresh bytes: chunks are deduplicated
            samples.setdefault(label, data[:64])
            quiet([a])
            cpu = cpu_seconds(a.pid)
            seconds = write_file(directory / name, data)
            mbps = size / seconds / 1e6
            cpu_per_gb = None
            if label != "native":
                # The daemon's CPU time for the write (both cores): its pipeline may overlap work, so wall time
                # alone does not say how much of its work encryption is.
                until(lambda: settled(a), 60, "alice's node to settle", nodes)
                cpu_per_gb = (cpu_seconds(a.pid) - cpu) / size * 1e9
            log(f"  {label} {name}: {mbps:.0f} MB/s" + ("" if cpu_per_gb is None else f", daemon CPU {cpu_per_gb:.2f} s/GB"))
            return mbps, cpu_per_gb

        r["write_native_MBps"], _ = timed_write("native", native, "big.bin")
        (native / "big.bin").unlink()
        pairs = []  # [private MB/s, public MB/s, private CPU s/GB, public CPU s/GB]
        for i in range(args.pairs):
            order = [("private", priv), ("public", pub)]
            if (i + run) % 2:
                order.reverse()
            got = {label: timed_write(label, directory, f"big{i:02d}.bin") for label, directory in order}
            pairs.append([got["private"][0], got["public"][0], got["private"][1], got["public"][1]])
            until(lambda: settled(a), 60, "alice's node to settle", nodes)
        r["pairs"] = pairs
        r["write_private_MBps"] = statistics.median(p[0] for p in pairs)
        r["write_public_MBps"] = statistics.median(p[1] for p in pairs)
        r["daemon_cpu_private_s_per_GB"] = statistics.median(p[2] for p in pairs)
        r["daemon_cpu_public_s_per_GB"] = statistics.median(p[3] for p in pairs)
        # The answer to the target: the fraction of write throughput lost to encryption, per pair (same minute,
        # same load), then the median of the run's pairs.
        r["encryption_loss_pairs"] = [(p[1] - p[0]) / p[1] for p in pairs]
        r["encryption_loss"] = statistics.median(r["encryption_loss_pairs"])
        r["encryption_loss_of_medians"] = (r["write_public_MBps"] - r["write_private_MBps"]) / r["write_public_MBps"]
        r["daemon_cpu_encryption_s_per_GB"] = statistics.median(p[2] - p[3] for p in pairs)

        # Are the public chunks really in the clear (and the private ones not)? The first 64 bytes of a file
        # start its first chunk's frame (after the codec byte): look for them in A's store.
        found = in_store(a.home / "store", list(samples.values()))
        r["public_stored_in_clear"] = found[list(samples).index("public")]
        r["private_stored_in_clear"] = found[list(samples).index("private")]
        if not r["public_stored_in_clear"]:
            r["problem_public_not_in_clear"] = ("the start of a public file is not in A's store in the clear: this "
                                                "binary still encrypts public chunks")
        if r["private_stored_in_clear"]:
            r["problem_private_in_clear"] = "the start of a private file is in A's store in the clear"

        r.update(crypto_rates(args.crypto_mib << 20))
        # Secondary, explanatory: seconds of AEAD + chunk-key HMAC (what a private chunk costs more than a public
        # one) per byte, over seconds of the private write per byte: the loss if that work were serial on the
        # write path (= 1 - t_public / t_private with t_private = t_public + crypto); and over the daemon's CPU.
        crypto = 1 / r["aead_MBps"] + 1 / r["chunk_key_MBps"]
        r["crypto_s_per_GB"] = crypto * 1e3
        r["encryption_share_private"] = crypto * r["write_private_MBps"]
        r["encryption_share_of_cpu_private"] = crypto * 1e3 / r["daemon_cpu_private_s_per_GB"]
        r["loadavg_after"] = _loadavg()
    finally:
        # Warnings and errors the daemons logged, for the report (read before the homes go).
        for n in nodes:
            try:
                lines = (n.home / "hypernet.log").read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            found = [line for line in lines if any(f" {level} " in line for level in ("warning", "error", "critical"))]
            r[f"log_findings_{n.name}"] = {"count": len(found), "first": found[:20]}
        for n in nodes:
            stop(n)
    return r


def pid_file_locked(path):
    """Does a live daemon hold the flock of its pid file (HomeLock)? A stale file names a pid that may be reused."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stop(node):
    """Stops the node's daemon (by `stop`, else SIGKILL of its pid) and makes sure its mount is gone."""
    try:
        if node.pid is None and (node.home / "daemon.pid").exists() and pid_file_locked(node.home / "daemon.pid"):
            try:
                node.pid = int((node.home / "daemon.pid").read_text().strip())
            except ValueError:
                pass
        node.stop()
    finally:
        if os.path.ismount(node.mount):
            subprocess.run(["fusermount3", "-uz", str(node.mount)], capture_output=True)


# --- main ---------------------------------------------------------------------------------------------------

def median(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--mib", type=int, default=256, help="size of each file of the write-throughput part")
    ap.add_argument("--pairs", type=int, default=5,
                    help="private/public write pairs per run (the encryption-cost part; one native write per run)")
    ap.add_argument("--crypto-mib", type=int, default=1024, help="bytes encrypted and hashed by the crypto part")
    ap.add_argument("--dir", default=None, help="where homes, mounts and the native directory go (default $TMPDIR)")
    args = ap.parse_args()
    if min(args.runs, args.files, args.members, args.mib, args.pairs, args.crypto_mib) < 1:
        ap.error("--runs, --files, --members, --mib, --pairs and --crypto-mib must be at least 1")
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet"))
    if os.geteuid() != 0:
        sys.exit("rights: needs root (FUSE)")
    root = Path(tempfile.mkdtemp(prefix="hn-bench-rights-", dir=args.dir))
    machine = json.loads(subprocess.run([sys.executable, str(HERE / "workloads.py"), "machine", str(root)],
                                        capture_output=True, text=True, check=True).stdout)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
               "binary": binary, "binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest(),
               "config": vars(args), "runs": []}
    try:
        log(f"{args.members} identities (hypernet init)")
        members = []
        for i in range(args.members):
            home = root / "ids" / f"m{i:03d}"
            token = subprocess.run([binary, "--home", str(home), "init"], check=True, capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL).stdout.strip()
            members.append((f"m{i:03d}", token))
        for run in range(args.runs):
            load = loadavg_text()
            log(f"run {run + 1} of {args.runs}: load average {load}")
            print(f"load average before run {run + 1}: {load}", flush=True)
            run_root = root / f"run{run + 1}"  # fresh homes, mounts and native directory for every run
            run_root.mkdir()
            results["runs"].append(one_run(binary, run_root, run, args, members))
            if not os.environ.get("HYPERNET_BENCH_KEEP"):
                shutil.rmtree(run_root, ignore_errors=True)
            log(f"run {run + 1}: {json.dumps(results['runs'][-1])}")
    finally:
        if not os.environ.get("HYPERNET_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")
    results["loadavg_at_end"] = _loadavg()

    runs = results["runs"]
    m = {key: median(runs, key) for key in runs[0] if isinstance(runs[0][key], (int, float))}
    m["grant_100_last_command_s"] = statistics.median(r["grant_100_command_s"][-1] for r in runs)
    m["grant_100_third_command_s"] = statistics.median(r["grant_100_command_s"][1] for r in runs)
    m["grant_100_median_command_s"] = statistics.median(statistics.median(r["grant_100_command_s"][1:]) for r in runs)
    # Ratios between targets are taken per run (same run, same load), then the median of the runs.
    m["private_over_public"] = statistics.median(r["write_private_MBps"] / r["write_public_MBps"] for r in runs)
    m["private_over_native"] = statistics.median(r["write_private_MBps"] / r["write_native_MBps"] for r in runs)
    m["public_over_native"] = statistics.median(r["write_public_MBps"] / r["write_native_MBps"] for r in runs)
    all_losses = [x for r in runs for x in r["encryption_loss_pairs"]]
    m["encryption_loss_all_pairs"] = statistics.median(all_losses)
    m["encryption_loss_min"], m["encryption_loss_max"] = min(all_losses), max(all_losses)
    results["medians"] = m
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"rights-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))

    n_members = runs[0]["members_before_revoke"]
    rows = [
        # (figure, value, unit, ratio, anchor)
        (f"grant, {args.files}-file folder: command on A", m["grant_command_s"], "s", None, ""),
        (f"grant, {args.files}-file folder: B holds the block", m["grant_block_on_b_s"], "s", None, ""),
        (f"grant, {args.files}-file folder: B reads @alice/share/f{args.files - 1:04d}", m["grant_readable_on_b_s"], "s",
         m["grant_readable_on_b_s"] / m["small_grant_effect_s"], f"÷ {SMALL_FILES}-file folder"),
        (f"grant, {SMALL_FILES}-file folder: B reads its last file", m["small_grant_effect_s"], "s", None, ""),
        ("revisions made by the grant on A", m["grant_revisions_made"], "revs", None, ""),
        ("grant: until both daemons are idle again (0.5 s windows)", m["grant_until_quiet_s"], "s", None, ""),
        (f"`ls @alice` on B, {args.files}-file share listed (one call)", m["ls_alice_share_listed_s"], "s",
         m["ls_alice_share_listed_s"] / m["ls_alice_small_listed_s"], f"÷ {SMALL_FILES}-file share listed"),
        (f"`ls @alice` on B, {SMALL_FILES}-file share listed, {args.files}-file one revoked", m["ls_alice_small_listed_s"],
         "s", None, ""),
        (f"read of @alice/share/f{args.files - 1:04d} on B (open + read, 4 KiB)", m["read_last_file_s"], "s", None, ""),
        (f"revoke, {args.files}-file folder: command on A", m["revoke_command_s"], "s",
         m["revoke_command_s"] / m["small_revoke_command_s"], f"÷ {SMALL_FILES}-file folder"),
        (f"revoke, {args.files}-file folder: B holds the new block", m["revoke_block_on_b_s"], "s", None, ""),
        (f"revoke, {args.files}-file folder: share gone from B's /@alice", m["revoke_unlisted_on_b_s"], "s", None, ""),
        (f"revoke, {args.files}-file folder: effect on B (both)", m["revoke_effect_s"], "s",
         m["revoke_effect_s"] / REVOKE_TARGET_S, f"÷ target {REVOKE_TARGET_S:.0f} s (≤ 1 met)"),
        (f"revoke, {SMALL_FILES}-file folder: command on A", m["small_revoke_command_s"], "s", None, ""),
        (f"revoke, {SMALL_FILES}-file folder: effect on B (both)", m["small_revoke_effect_s"], "s", None, ""),
        ("revisions made by the revoke on A", m["revoke_revisions_made"], "revs", None, ""),
        (f"new block after the revoke, {args.files}-file folder (1 member)", m["block_1_member_bytes"], "B",
         m["block_1_member_bytes"] / m["small_block_1_member_bytes"], f"÷ same on the {SMALL_FILES}-file folder"),
        (f"grant on share100 making {n_members} members: command on A", m["grant_100_last_command_s"], "s",
         m["grant_100_last_command_s"] / m["grant_100_third_command_s"], "÷ the grant making 3 members"),
        (f"revoke of 1 of {n_members} members: command on A", m["revoke_100_command_s"], "s",
         m["revoke_100_command_s"] / m["revoke_command_s"], "÷ revoke with 2 members"),
        (f"revoke of 1 of {n_members} members: B holds the new block", m["revoke_100_effect_s"], "s",
         m["revoke_100_effect_s"] / m["revoke_block_on_b_s"], "÷ the same with 2 members"),
        (f"block with {n_members} members", m["block_many_members_bytes"], "B",
         m["block_many_members_bytes"] / m["block_2_members_bytes"], "÷ block with 2 members"),
        ("block with 2 members", m["block_2_members_bytes"], "B", None, ""),
        ("block bytes per member", (m["block_many_members_bytes"] - m["block_2_members_bytes"]) / (n_members - 2), "B", None, ""),
        (f"write+fsync {args.mib} MiB, private folder (median of the pairs)", m["write_private_MBps"], "MB/s",
         m["private_over_public"], "÷ public"),
        (f"write+fsync {args.mib} MiB, public folder, in the clear", m["write_public_MBps"], "MB/s",
         m["public_over_native"], "÷ native"),
        (f"write+fsync {args.mib} MiB, native", m["write_native_MBps"], "MB/s", None, ""),
        ("private ÷ native", m["private_over_native"], "×", None, ""),
        ("write throughput lost to encryption, (public - private) ÷ public", m["encryption_loss"] * 100, "%",
         m["encryption_loss"] / ENCRYPTION_TARGET, "÷ target 15 % (≤ 1 met)"),
        (f"… median of all {len(all_losses)} pairs", m["encryption_loss_all_pairs"] * 100, "%", None, ""),
        ("… from the medians of the throughputs", m["encryption_loss_of_medians"] * 100, "%", None, ""),
        ("ChaCha20-Poly1305 encrypt (OpenSSL), 64 KiB buffers", m["aead_MBps"], "MB/s",
         m["aead_MBps"] / m["write_private_MBps"], "÷ private write"),
        ("HMAC-SHA-256 (OpenSSL, the chunk key), 64 KiB buffers", m["chunk_key_MBps"], "MB/s",
         m["chunk_key_MBps"] / m["write_private_MBps"], "÷ private write"),
        ("AEAD + chunk-key HMAC per GB (what a private chunk costs more)", m["crypto_s_per_GB"], "s", None, ""),
        ("… as a share of the private write time (the loss if serial)", m["encryption_share_private"] * 100, "%",
         None, ""),
        ("daemon CPU per GB written, private folder (both cores)", m["daemon_cpu_private_s_per_GB"], "s",
         m["daemon_cpu_private_s_per_GB"] / (1e3 / m["write_private_MBps"]), "÷ wall time per GB"),
        ("daemon CPU per GB written, public folder (both cores)", m["daemon_cpu_public_s_per_GB"], "s",
         m["daemon_cpu_public_s_per_GB"] / (1e3 / m["write_public_MBps"]), "÷ wall time per GB"),
        ("daemon CPU per GB, private - public (median of the pairs)", m["daemon_cpu_encryption_s_per_GB"], "s",
         m["daemon_cpu_encryption_s_per_GB"] / m["crypto_s_per_GB"], "÷ AEAD + chunk-key HMAC per GB"),
        ("AEAD + chunk-key HMAC as a share of the private CPU time", m["encryption_share_of_cpu_private"] * 100, "%",
         None, ""),
    ]
    print(f"{'figure':<72} {'value':>10} {'unit':<5} {'ratio':>7}  anchor")
    for name, value, unit, ratio, anchor in rows:
        if value is None:
            v = "-"
        elif unit in ("revs", "B"):
            v = f"{value:.0f}"
        elif unit == "%" or (isinstance(value, float) and 10 <= value < 100 and unit != "MB/s"):
            v = f"{value:.1f}"
        else:
            v = f"{value:.3f}" if isinstance(value, float) and value < 10 else f"{value:.0f}"
        rt = "" if ratio is None else f"{ratio:.2f}"
        print(f"{name:<72} {v:>10} {unit:<5} {rt:>7}  {anchor}")
    met_revoke = m["revoke_effect_s"] <= REVOKE_TARGET_S
    print(f"\nmedians of {len(runs)} runs; load average before each run: "
          + "; ".join(" ".join(f"{x:.2f}" for x in r["loadavg_before"]) for r in runs)
          + f"; at the end {' '.join(f'{x:.2f}' for x in results['loadavg_at_end'])}")
    print(f"target: revoke of a {args.files}-file folder takes effect on B within {REVOKE_TARGET_S:.0f} s: "
          f"{m['revoke_effect_s']:.3f} s: {'MET' if met_revoke else 'NOT MET'}")
    print(f"target: revoke costs O(members), not O(files): it made {m['revoke_revisions_made']:.0f} revisions on A; its block "
          f"is {m['block_1_member_bytes']:.0f} B on the {args.files}-file folder and {m['small_block_1_member_bytes']:.0f} B "
          f"on the {SMALL_FILES}-file one; command {m['revoke_command_s']:.3f} s vs {m['small_revoke_command_s']:.3f} s; "
          f"the block grows {(m['block_many_members_bytes'] - m['block_2_members_bytes']) / (n_members - 2):.0f} B per member")
    loss = m["encryption_loss"]
    print(f"target: encryption costs <= 15 % of write throughput: (public - private) ÷ public = {loss * 100:.1f} % "
          f"(median of {len(runs)} runs of {args.pairs} pairs each; per run "
          + ", ".join(f"{r['encryption_loss'] * 100:.1f}" for r in runs)
          + f" %; single pairs {m['encryption_loss_min'] * 100:.1f} to {m['encryption_loss_max'] * 100:.1f} %): "
          f"{'MET' if loss <= ENCRYPTION_TARGET else 'NOT MET'}. A public document's chunks are stored in the clear "
          f"(no chunk key, no AEAD; only its small metadata is sealed, under the known all-zero key), so the two "
          f"folders differ by the encryption alone. Explanatory: AEAD + chunk-key HMAC take "
          f"{m['crypto_s_per_GB']:.2f} s/GB here, {m['encryption_share_private'] * 100:.1f} % of the private write "
          f"time if serial; the daemon spends {m['daemon_cpu_encryption_s_per_GB']:.2f} s/GB more CPU on a private "
          f"write ({m['daemon_cpu_private_s_per_GB']:.2f} vs {m['daemon_cpu_public_s_per_GB']:.2f} s/GB)")
    clear = [(r.get("public_stored_in_clear"), r.get("private_stored_in_clear")) for r in runs]
    print("public chunks in A's store in the clear: " + ", ".join("yes" if c[0] else "NO" for c in clear)
          + "; private ones: " + ", ".join("YES" if c[1] else "no" for c in clear) + " (per run)")
    for i, r in enumerate(runs):
        for key, value in r.items():
            if key.startswith("problem"):
                print(f"PROBLEM (run {i + 1}): {value}")
            if key.startswith("log_findings_") and value["count"]:
                print(f"run {i + 1}: {key[len('log_findings_'):]}'s hypernet.log has {value['count']} warning/error "
                      f"lines, the first: {value['first'][0]}")
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
