#!/usr/bin/env python3
"""Benchmark of issue 18: search over a corpus of text documents on one node, against the native tools.

The corpus: --docs documents (default 100,000, about 1 GB) made from the text Debian ships (/usr/share/doc, and
/usr/share/man decompressed), deterministically (--seed): each document is a slice of that text at a random
place and of a random length (mean about 10 KB), with a first line of its own (`hnbenchN` and words drawn from the
corpus), so documents are neither all alike nor all different. 1,000 a folder. The same files are written as a
native copy in --dir, for the anchors.

Figures (medians of --runs where a run repeats):

  * foreground write throughput of the corpus through the mount, indexing on and indexing off
    (`HYPERNET_SEARCH_INDEX=off`), each on a fresh home; MB/s and documents/s;
  * indexing throughput: the node that wrote with indexing off is restarted with it on, and the time until
    `hypernet index` reaches the log's end gives documents/s and MB/s; the daemon's peak RSS meanwhile;
  * index size ÷ text size (search.sqlite with its WAL, after the catch-up, over the corpus' bytes);
  * query latency p50/p99 of the fixed query set `bench/search_queries.txt` (metadata-only, full-text and
    combined, selective and broad), each query --repeat times over the control socket (what `hypernet search`
    sends); and the same questions answered on the native copy by `rg -l`, `grep -rl`, `find` (`-newer`,
    `-size`, `-user`) and `plocate` (over a database `updatedb` built of the copy), run the same number of times;
  * commit to found: a new document written and closed, then `search` polled until it answers it; p50/p99 over
    --found samples.

Prints one line per figure with its ratio to its anchor and the issue's target, or with --json one JSON object.
--smoke: 300 documents, 1 run, few repeats: checks the benchmark itself, not for the record.

Usage: HYPERNET_BIN=.build/release/hypernet python3 bench/search.py [--docs N] [--runs R] [--dir DIR] [--json]
Needs root (FUSE) and ripgrep, plocate (mount-helpers/deps.sh, HYPERNET_BENCH_PACKAGES). Everything it starts
is stopped and everything it writes deleted.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replication import Node  # noqa: E402

PER_FOLDER = 1000


def log(msg):
    print(f"search: {msg}", file=sys.stderr, flush=True)


def source_text(limit: int) -> bytes:
    """Up to `limit` bytes of the text Debian ships: /usr/share/doc's plain and gzipped files, then the manual
    pages decompressed, in path order (deterministic on one machine)."""
    out, total = [], 0
    for top in ("/usr/share/doc", "/usr/share/man"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                try:
                    if name.endswith(".gz"):
                        with gzip.open(path, "rb") as f:
                            data = f.read(1 << 20)
                    elif os.path.islink(path) or os.path.getsize(path) > 1 << 20:
                        continue
                    else:
                        data = Path(path).read_bytes()
                except (OSError, EOFError, gzip.BadGzipFile):
                    continue
                if b"\0" in data[:8192]:
                    continue
                out.append(data)
                total += len(data)
                if total >= limit:
                    return b"\n".join(out)
    return b"\n".join(out)


class Corpus:
    """The documents: (relative path, bytes), made on demand from the source text."""

    def __init__(self, count: int, seed: int, mean: int = 10_000):
        self.count, self.seed, self.mean = count, seed, mean
        self.text = source_text(64 << 20)
        self.words = sorted(set(w for w in self.text[: 8 << 20].split() if w.isalpha() and 4 <= len(w) <= 12))
        assert self.text and self.words, "no text found in /usr/share/doc and /usr/share/man"

    def __iter__(self):
        rng = random.Random(self.seed)
        for i in range(self.count):
            length = max(64, int(rng.expovariate(1 / self.mean)))
            start = rng.randrange(max(1, len(self.text) - length))
            header = b" ".join([b"hnbench%d" % i] + rng.sample(self.words, 6))
            yield f"d{i // PER_FOLDER:03d}/doc{i:06d}.txt", header + b"\n" + self.text[start:start + length]


def write_corpus(corpus, root: Path) -> dict:
    """Writes every document below `root`; seconds, documents and bytes."""
    total, start = 0, time.perf_counter()
    for rel, data in corpus:
        path = root / rel
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "documents": corpus.count, "bytes": total,
            "docs_per_s": corpus.count / seconds, "mb_per_s": total / seconds / 1e6}


class Control:
    """The node's control socket: one JSON request a line, one JSON answer a line (docs/cli.md)."""

    def __init__(self, home: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(home / "control.sock"))
        self.file = self.sock.makefile("rb")

    def ask(self, request: dict):
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(self.file.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"{request}: {answer}")
        return answer["result"]

    def search(self, query: str, limit: int = 20):
        return self.ask({"command": "search", "query": query, "limit": limit})

    def close(self):
        self.file.close()
        self.sock.close()


def start_node(node: Node, indexing: bool = True):
    env = None if indexing else {"HYPERNET_SEARCH_INDEX": "off"}
    node.cli("mount", str(node.mount), "--listen", node.address, env=env)
    node.pid = int((node.home / "daemon.pid").read_text().strip())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def index_size(home: Path) -> int:
    return sum(os.path.getsize(p) for p in (f"{home}/search.sqlite", f"{home}/search.sqlite-wal") if os.path.exists(p))


def catch_up(node: Node, timeout: float) -> dict:
    """Waits until the index reaches the log's end; seconds and the daemon's peak RSS meanwhile."""
    control = Control(node.home)
    start, peak = time.perf_counter(), 0
    try:
        while True:
            status = control.ask({"command": "index"})
            peak = max(peak, rss_kib(node.pid))
            if status["indexed"] >= status["logged"]:
                return {"seconds": time.perf_counter() - start, "peak_rss_kib": peak, "status": status}
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the index did not catch up in {timeout} s: {status}")
            time.sleep(0.05)
    finally:
        control.close()


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50_ms": pick(0.5) * 1000, "p99_ms": pick(0.99) * 1000, "n": len(samples)}


def timed(fn, repeat: int):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def load_queries(path: Path) -> list:
    """`bench/search_queries.txt`: `NAME<TAB>KIND<TAB>QUERY<TAB>ANCHOR` a line (KIND metadata, text or combined;
    ANCHOR a native command with {dir} and {ref} for the copy and a reference file, or -)."""
    queries = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, query, anchor = line.split("\t")
            queries.append({"name": name, "kind": kind, "query": query, "anchor": None if anchor == "-" else anchor})
    return queries


def run_native(command: str, native: Path, ref: Path, db: Path):
    cmd = command.format(dir=native, ref=ref, db=db)
    subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=2, help="write runs with indexing on and off, taking turns")
    ap.add_argument("--repeat", type=int, default=50, help="times each query runs")
    ap.add_argument("--found", type=int, default=50, help="commit-to-found samples")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--smoke", action="store_true", help="300 documents, 1 run, few repeats")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.docs, args.runs, args.repeat, args.found = 300, 1, 3, 3
    binary = os.environ.get("HYPERNET_BIN", str(HERE.parent / ".build/release/hypernet"))
    for tool in ("rg", "grep", "find", "plocate", "updatedb"):
        if shutil.which(tool) is None:
            sys.exit(f"search: {tool} is missing (mount-helpers/deps.sh: HYPERNET_BENCH_PACKAGES)")
    queries = load_queries(HERE / "search_queries.txt")
    corpus = Corpus(args.docs, args.seed)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": os.uname().nodename, "docs": args.docs,
               "runs": args.runs, "repeat": args.repeat, "seed": args.seed}
    root = Path(tempfile.mkdtemp(prefix="hn-bench-search-", dir=args.dir))
    nodes = []
    try:
        native = root / "native"
        native.mkdir()
        log(f"native copy of {args.docs} documents")
        results["native_write"] = write_corpus(corpus, native)
        ref = native / "d000" / "doc000000.txt"
        db = root / "plocate.db"
        start = time.perf_counter()
        subprocess.run(["updatedb", "-l", "0", "-o", str(db), "-U", str(native)], check=True)
        results["plocate_updatedb_s"] = time.perf_counter() - start

        writes = {"on": [], "off": []}
        indexings = []
        for run in range(args.runs):
            for mode in ("on", "off"):
                node = Node(binary, root, f"{mode}{run}", f"127.0.{100 + os.getpid() % 100}.{run * 2 + 1}:7400")
                nodes.append(node)
                node.cli("init")
                start_node(node, indexing=mode == "on")
                log(f"run {run + 1}: writing through the mount, indexing {mode}")
                writes[mode].append(write_corpus(corpus, node.mount))
                if mode == "on":
                    catch_up(node, timeout=24 * 3600)
                    node.stop()
                    continue
                # The node that wrote without indexing indexes it all at its next start.
                node.stop()
                start_node(node)
                log(f"run {run + 1}: indexing {args.docs} documents")
                indexing = catch_up(node, timeout=24 * 3600)
                text = writes["off"][-1]["bytes"]
                indexings.append({
                    "seconds": indexing["seconds"], "docs_per_s": args.docs / indexing["seconds"],
                    "mb_per_s": text / indexing["seconds"] / 1e6, "peak_rss_kib": indexing["peak_rss_kib"],
                    "index_bytes": index_size(node.home), "text_bytes": text,
                    "index_ratio": index_size(node.home) / text})
                if run < args.runs - 1:
                    node.stop()
        # The last node indexed stays up for the queries.
        measured = nodes[-1]
        results["indexing_runs"] = indexings
        results["indexing"] = {key: statistics.median(i[key] for i in indexings) for key in indexings[0]}
        results["indexing"]["peak_rss_kib"] = max(i["peak_rss_kib"] for i in indexings)
        results["write"] = {mode: {key: statistics.median(w[key] for w in runs) for key in ("docs_per_s", "mb_per_s")}
                            for mode, runs in writes.items()}
        results["write"]["slowdown"] = 1 - results["write"]["on"]["mb_per_s"] / results["write"]["off"]["mb_per_s"]

        log("queries")
        control = Control(measured.home)
        results["queries"] = []
        for q in queries:
            # The query's answer, once: how many documents it finds (at most 10,000).
            found = len(control.search(q["query"], limit=10_000))
            row = {**q, "found": found, "hypernet": timed(lambda: control.search(q["query"]), args.repeat)}
            if q["anchor"]:
                row["native"] = timed(lambda: run_native(q["anchor"], native, ref, db), max(3, args.repeat // 10))
            results["queries"].append(row)

        log("commit to found")
        samples = []
        for k in range(args.found):
            word = f"hnfound{k}x{args.seed}"
            start = time.perf_counter()
            with open(measured.mount / f"found{k}.txt", "wb") as f:
                f.write(f"{word}\n".encode())
            while not control.search(word):
                time.sleep(0.002)
            samples.append(time.perf_counter() - start)
        results["found"] = percentiles(samples)
        control.close()
        measured.stop()
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        summary(results)


def summary(r):
    """One line per figure: Hypernet, its anchor, the ratio (> 1: Hypernet is better) and the issue's target."""
    ix = r["indexing"]
    print(f"indexing: {ix['docs_per_s']:.0f} documents/s, {ix['mb_per_s']:.1f} MB/s "
          f"(target >= 500 documents/s per core); peak RSS {ix['peak_rss_kib'] / 1024:.0f} MiB (target < 250)")
    print(f"index size / text size: {ix['index_ratio']:.2f} (target <= 1.0)")
    w = r["write"]
    print(f"writes: {w['on']['mb_per_s']:.1f} MB/s indexing on, {w['off']['mb_per_s']:.1f} MB/s off: "
          f"{w['slowdown'] * 100:.1f} % slower (target <= 10 %); native copy {r['native_write']['mb_per_s']:.1f} MB/s")
    text_p50 = {q["name"]: q["hypernet"]["p50_ms"] for q in r["queries"] if q["kind"] == "text"}
    for q in r["queries"]:
        h = q["hypernet"]
        line = (f"{q['kind']:>8} {q['name']:<18} {h['p50_ms']:8.2f} ms p50 {h['p99_ms']:8.2f} ms p99 "
                f"({q['found']} found)")
        if "native" in q:
            ratio = q["native"]["p50_ms"] / h["p50_ms"]
            line += f"; {q['anchor'].split()[0]} {q['native']['p50_ms']:.1f} ms: {ratio:.3g}x"
        target = {"metadata": "p99 <= 10 ms", "text": "p50 <= 20 ms, p99 <= 100 ms",
                  "combined": "<= 2x its text query"}[q["kind"]]
        if q["kind"] == "combined" and q["name"].split("+")[0] in text_p50:
            line += f"; {h['p50_ms'] / text_p50[q['name'].split('+')[0]]:.2f}x its text query"
        if q["kind"] == "text" and q["name"].startswith("selective"):
            target += ", >= 100x rg -l"
        print(f"{line} (target {target})")
    f = r["found"]
    print(f"commit to found: {f['p50_ms']:.0f} ms p50, {f['p99_ms']:.0f} ms p99 (target p99 <= 1000 ms)")


if __name__ == "__main__":
    main()
