#!/bin/bash
# Counts what each small-file workload costs the daemon (issue 22; docs/BENCHMARKS.md, "Small files, deletes and
# fsync"): FUSE requests by opcode, syscalls, SQLite prepares by statement (BEGIN IMMEDIATE: a write transaction,
# BEGIN DEFERRED: a read transaction), and the daemon's CPU time. Counts, not wall-clock times, so it works on a
# busy machine. Needs root and perf.
# usage: sudo bench/count.sh [OUTDIR] [PHASE...]   (phases: create unlink createfsync untar rmrf append)
set -euo pipefail
BIN=${HYPERNET_BIN:-$(dirname "$0")/../.build/release/hypernet}
OUT=${1:-/tmp/hypernet-count}; shift || true
PHASES=${*:-create unlink createfsync untar rmrf append}
WORK=$(mktemp -d); H=$WORK/home; M=$WORK/mnt; mkdir -p "$OUT" "$M"
SQLITE=$(ldd "$BIN" | awk '/libsqlite3/ {print $3}')
PROBE=probe_libsqlite3:sqlite3_prepare_v3
perf probe -q -x "$SQLITE" --add 'sqlite3_prepare_v3 sql=+0(%si):string' 2>/dev/null || true
cleanup() { "$BIN" --home "$H" stop >/dev/null 2>&1 || true; fusermount3 -u "$M" 2>/dev/null || true
            perf probe -q -d "$PROBE" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
(cd /usr/include && tar --sort=name --owner=0 --group=0 --mtime=@0 -cf "$WORK/linux.tar" linux)
"$BIN" --home "$H" mount "$M" >/dev/null
PID=$(cat "$H/daemon.pid")
for phase in $PHASES; do
    perf record -q -o "$OUT/$phase.daemon.data" -p "$PID" -e "$PROBE" \
        -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64 2>/dev/null &
    recorder=$!; sleep 1
    read -r -a before < <(cut -d' ' -f14,15 "/proc/$PID/stat")
    perf record -q -o "$OUT/$phase.fuse.data" -e fuse:fuse_request_send -- \
        python3 - "$phase" "$M" "$WORK/linux.tar" <<'PY'
import os, subprocess, sys
phase, root, tarball = sys.argv[1:4]
data = os.urandom(4096)
def files(sub, n, fsync):
    os.makedirs(f"{root}/{sub}", exist_ok=True)
    for i in range(n):
        fd = os.open(f"{root}/{sub}/f{i:05d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
        os.close(fd)
if phase == "create": files("c", 2000, False)
elif phase == "createfsync": files("s", 2000, True)
elif phase == "unlink": [os.unlink(f"{root}/c/f{i:05d}") for i in range(2000)]
elif phase == "untar": os.makedirs(f"{root}/t"); subprocess.run(["tar", "-xf", tarball, "-C", f"{root}/t"], check=True)
elif phase == "rmrf": subprocess.run(["rm", "-rf", f"{root}/t"], check=True)
elif phase == "append":
    fd = os.open(f"{root}/log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    os.write(fd, os.urandom(1 << 20)); os.fsync(fd)
    for _ in range(1000):
        os.write(fd, os.urandom(100)); os.fsync(fd)
    os.close(fd)
PY
    sleep 1.5; kill -INT "$recorder" 2>/dev/null || true; wait "$recorder" || true
    read -r -a after < <(cut -d' ' -f14,15 "/proc/$PID/stat")
    {
        echo "== $phase: daemon CPU $(( after[0] + after[1] - before[0] - before[1] )) ticks of 1/$(getconf CLK_TCK) s"
        perf script -i "$OUT/$phase.daemon.data" -F event 2>/dev/null | sort | uniq -c
        perf script -i "$OUT/$phase.daemon.data" 2>/dev/null | grep -o 'sql="[A-Z]* [A-Z]*' | sort | uniq -c | sort -rn
        echo "== $phase: FUSE requests"
        perf script -i "$OUT/$phase.fuse.data" 2>/dev/null | grep -o '(FUSE_[A-Z_]*)' | sort | uniq -c | sort -rn
    } | tee "$OUT/$phase.txt"
done
