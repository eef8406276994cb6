#!/usr/bin/env bash
# Benchmark of issue 2: the same workloads on a native directory, libfuse's passthrough_ll, gocryptfs and a
# Hypernet mount, medians of N runs, ratios of Hypernet to gocryptfs and passthrough_ll, peak RSS of the
# Hypernet daemon. Table on stdout, JSON in bench/results/. Needs root (drop_caches), fio, gocryptfs,
# fuse3, gcc, pkg-config and libfuse3-dev. Everything it mounts or starts is undone on exit.
set -euo pipefail

usage() {
    cat <<EOF
usage: bench/run.sh [--runs N] [--only TARGET[,TARGET...]] [--quick] [--dir DIR]

  --runs N     runs per target; figures are medians (default 3)
  --only LIST  targets to measure, comma separated: native, passthrough_ll, gocryptfs, hypernet
               (default all four)
  --quick      small sizes and short runs, for developing the benchmark (not for the record)
  --dir DIR    where backing directories, mounts and the tarball go (default \${TMPDIR:-/tmp});
               the native target is a directory there, so DIR decides the disk measured

environment:
  HYPERNET_BIN  the hypernet executable (default: .build/release/hypernet in the repository)
  PYTHON        python 3 interpreter (default python3)
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$REPO/bench"
PYTHON=${PYTHON:-python3}
HYPERNET_BIN=${HYPERNET_BIN:-$REPO/.build/release/hypernet}
ALL_TARGETS=(native passthrough_ll gocryptfs hypernet)
RUNS=3
QUICK=0
ONLY=""
BASE=${TMPDIR:-/tmp}

while (($#)); do
    case "$1" in
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --only) ONLY=${2:?--only needs a target list}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --dir) BASE=${2:?--dir needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "bench: $*" >&2; exit 1; }
INSTALL_HINT="install the anchors: bash -c '. mount-helpers/deps.sh && install_packages \$HYPERNET_BENCH_PACKAGES'"
log() { echo "bench: $*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
TARGETS=()
if [[ -n $ONLY ]]; then
    IFS=, read -r -a TARGETS <<<"$ONLY"
    for t in "${TARGETS[@]}"; do
        [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target '$t' (one of: ${ALL_TARGETS[*]})"
    done
else
    TARGETS=("${ALL_TARGETS[@]}")
fi
wants() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || die "must run as root: cold reads need /proc/sys/vm/drop_caches"
for tool in fio fusermount3 findmnt gcc pkg-config tar "$PYTHON"; do
    command -v "$tool" >/dev/null || die "missing tool: $tool ($INSTALL_HINT)"
done
if wants gocryptfs; then command -v gocryptfs >/dev/null || die "missing tool: gocryptfs ($INSTALL_HINT)"; fi
if wants hypernet; then
    [[ -x $HYPERNET_BIN ]] || die "no hypernet executable at $HYPERNET_BIN (build with: swift build -c release, or set HYPERNET_BIN)"
fi
[[ -d $BASE ]] || die "no directory $BASE"

# Sizes. The full set is what issue 2 asks for; --quick only checks that the benchmark itself works.
if ((QUICK)); then
    SEQ_MIB=64 RAND_MIB=32 RAND_SECS=2 SMALL_COUNT=200 APPEND_BIG_MIB=128 APPEND_SMALL_MIB=16 APPENDS=20
    TAR_DIRS=(include/linux) TAR_EXCLUDES=()
else
    SEQ_MIB=512 RAND_MIB=256 RAND_SECS=10 SMALL_COUNT=2000 APPEND_BIG_MIB=1024 APPEND_SMALL_MIB=16 APPENDS=50
    # /usr/include without its two largest vendored trees: ~48 MB in ~4,200 entries on this machine kind.
    TAR_DIRS=(include) TAR_EXCLUDES=(--exclude=include/node --exclude=include/llvm-14)
fi

WORK=$(mktemp -d "$BASE/hypernet-bench.XXXXXX")
RAW="$WORK/raw.jsonl"
: >"$RAW"

# The one target mounted at any time, so cleanup knows what to undo.
CUR_TARGET="" CUR_MNT="" CUR_PID="" CUR_PID_START="" CUR_HOME="" CUR_DIR=""

# Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat, after the command name).
start_time() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    read -r -a fields <<<"$stat"
    echo "${fields[19]}"
}

# Still the process we started: same PID and same start time (guards against a reused PID).
ours() {
    [[ -n $1 && -n $2 && $(start_time "$1") == "$2" ]]
}

# Reads the mount table rather than stat'ing the path: a dead FUSE server's mount fails every stat.
is_mounted() {
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

unmount_path() {
    local mnt=$1
    is_mounted "$mnt" || return 0
    fusermount3 -u "$mnt" 2>/dev/null || { sleep 1; fusermount3 -u "$mnt" 2>/dev/null; } || fusermount3 -uz "$mnt" || true
}

# Waits for the server of the current target to exit after its unmount, then insists.
stop_server() {
    local i
    [[ -n $CUR_PID ]] || return 0
    for ((i = 0; i < 100; i++)); do ours "$CUR_PID" "$CUR_PID_START" || return 0; sleep 0.1; done
    log "$CUR_TARGET server $CUR_PID did not exit after unmount; sending SIGTERM"
    kill -TERM "$CUR_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do ours "$CUR_PID" "$CUR_PID_START" || return 0; sleep 0.1; done
    kill -KILL "$CUR_PID" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    if [[ -n $CUR_TARGET ]]; then
        ((status == 0)) || log "cleaning up $CUR_TARGET after failure"
        if [[ $CUR_TARGET == hypernet ]]; then
            timeout 60 "$HYPERNET_BIN" --home "$CUR_HOME" stop >/dev/null 2>&1
            # Failed between starting the daemon and learning its PID: its PID file in our home names it.
            if [[ -z $CUR_PID ]]; then
                CUR_PID=$(tr -dc 0-9 <"$CUR_HOME/daemon.pid" 2>/dev/null)
                CUR_PID_START=$(start_time "$CUR_PID") || CUR_PID=""
            fi
        fi
        [[ -n $CUR_MNT ]] && unmount_path "$CUR_MNT"
        stop_server
    fi
    if ((status != 0)); then
        for f in "$WORK"/*.log ${CUR_HOME:+"$CUR_HOME/hypernet.log"}; do
            [[ -s $f ]] && { log "--- last lines of $f"; tail -n 20 "$f" >&2; }
        done
    fi
    # --one-file-system: never descend into a mount that failed to go away.
    if findmnt -rno TARGET | grep -qF -- "$WORK"; then
        log "a mount under $WORK is still present; leaving $WORK in place"
    else
        rm -rf --one-file-system "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# Appends one run's figures ({"name": value, ...}) for the current target to the raw file.
RUN=0
record() {
    printf '{"run": %d, "target": "%s", "metrics": %s}\n' "$RUN" "$CUR_TARGET" "$1" >>"$RAW"
}

# Runs a measuring command that prints a JSON object of figures, and records them.
measure() {
    local out
    out=$(timeout -k 10 900 "$@") || die "measurement failed on $CUR_TARGET: $*"
    record "$out"
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

wait_mounted() {
    local mnt=$1 pid=$2 i
    for ((i = 0; i < 200; i++)); do
        is_mounted "$mnt" && return 0
        kill -0 "$pid" 2>/dev/null || die "$CUR_TARGET exited before mounting (see log)"
        sleep 0.05
    done
    die "$CUR_TARGET did not mount $mnt within 10 s"
}

# --- one-time preparation --------------------------------------------------------------------------

if wants passthrough_ll; then
    examples=/usr/share/doc/libfuse3-dev/examples
    mkdir -p "$WORK/pt-build"
    # Debian may ship the examples gzip-compressed; the .c includes passthrough_helpers.h.
    for f in passthrough_ll.c passthrough_helpers.h; do
        if [[ -f $examples/$f ]]; then
            cp "$examples/$f" "$WORK/pt-build/"
        elif [[ -f $examples/$f.gz ]]; then
            gunzip -c "$examples/$f.gz" >"$WORK/pt-build/$f"
        else
            die "no $f in $examples (apt-get install libfuse3-dev)"
        fi
    done
    # shellcheck disable=SC2046  # pkg-config prints several flags on purpose
    gcc -O2 -Wall -o "$WORK/pt-build/passthrough_ll" "$WORK/pt-build/passthrough_ll.c" $(pkg-config --cflags --libs fuse3)
    PT_BIN="$WORK/pt-build/passthrough_ll"
fi

# A deterministic tarball (sorted, fixed owner and mtime) read from the page cache of $BASE's disk.
TARBALL="$WORK/tree.tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner "${TAR_EXCLUDES[@]}" \
    -C /usr -cf "$TARBALL" "${TAR_DIRS[@]}"
TAR_ENTRIES=$(tar -tf "$TARBALL" | wc -l)
TAR_BYTES=$(stat -c %s "$TARBALL")
TAR_SHA=$(sha256sum "$TARBALL" | cut -d' ' -f1)

hypernet_meta='null'
if wants hypernet; then
    hypernet_meta=$(printf '{"bin": "%s", "bin_mtime": "%s", "bin_sha256": "%s", "git": "%s"}' "$HYPERNET_BIN" \
        "$(date -u -r "$HYPERNET_BIN" +%FT%TZ)" "$(sha256sum "$HYPERNET_BIN" | cut -d' ' -f1)" \
        "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo none)")
fi
targets_json=$(printf '"%s",' "${TARGETS[@]}")
cat >"$WORK/meta.json" <<EOF
{
  "date": "$(date -u +%FT%TZ)",
  "machine": $("$PYTHON" "$BENCH/workloads.py" machine "$BASE"),
  "config": {"runs": $RUNS, "quick": $( ((QUICK)) && echo true || echo false), "targets": [${targets_json%,}],
    "seq_mib": $SEQ_MIB, "rand_mib": $RAND_MIB, "rand_secs": $RAND_SECS, "small_count": $SMALL_COUNT,
    "small_bytes": 4096, "append_big_mib": $APPEND_BIG_MIB, "append_small_mib": $APPEND_SMALL_MIB,
    "appends": $APPENDS, "append_bytes": 100, "tar_entries": $TAR_ENTRIES, "tar_bytes": $TAR_BYTES,
    "tar_sha256": "$TAR_SHA", "tar_source": "/usr/${TAR_DIRS[*]} ${TAR_EXCLUDES[*]}"},
  "hypernet": $hypernet_meta
}
EOF

# --- targets: up (fresh backing store for each run), cycle (remount for cold caches), down ----------

# Password for gocryptfs, made once; its scrypt cost is paid at init and at every mount, not while measuring.
head -c 32 /dev/urandom | base64 >"$WORK/gocryptfs.pass"

# The daemon that `hypernet mount` left running, from the PID file in its home.
hypernet_pid() {
    local pid
    pid=$(tr -dc 0-9 <"$CUR_HOME/daemon.pid" 2>/dev/null) || true
    [[ -n $pid && -d /proc/$pid ]] || die "no running hypernet daemon for $CUR_HOME (daemon.pid: '${pid:-missing}')"
    echo "$pid"
}

mount_target() {
    case $CUR_TARGET in
    native) ;;
    passthrough_ll)
        "$PT_BIN" -f -o source="$CUR_DIR/src" "$CUR_MNT" 2>>"$WORK/passthrough_ll.log" &
        CUR_PID=$! CUR_PID_START=$(start_time $!)
        wait_mounted "$CUR_MNT" "$CUR_PID" ;;
    gocryptfs)
        gocryptfs -fg -q -passfile "$WORK/gocryptfs.pass" "$CUR_DIR/cipher" "$CUR_MNT" 2>>"$WORK/gocryptfs.log" &
        CUR_PID=$! CUR_PID_START=$(start_time $!)
        wait_mounted "$CUR_MNT" "$CUR_PID" ;;
    hypernet)
        # `mount` daemonizes and returns once the mount answers.
        "$HYPERNET_BIN" --home "$CUR_HOME" mount "$CUR_MNT" >>"$WORK/hypernet-cli.log" 2>&1 ||
            die "hypernet mount failed (see $CUR_HOME/hypernet.log)"
        is_mounted "$CUR_MNT" || die "hypernet mount returned but $CUR_MNT is not a mount point"
        CUR_PID=$(hypernet_pid)
        CUR_PID_START=$(start_time "$CUR_PID") ;;
    esac
}

unmount_target() {
    case $CUR_TARGET in
    native) ;;
    passthrough_ll | gocryptfs)
        fusermount3 -u "$CUR_MNT"
        stop_server ;;
    hypernet)
        # VmHWM is the daemon's lifetime peak; read it just before the daemon goes away.
        measure "$PYTHON" "$BENCH/workloads.py" peak-rss "$CUR_PID"
        "$HYPERNET_BIN" --home "$CUR_HOME" stop >>"$WORK/hypernet-cli.log" 2>&1 || die "hypernet stop failed"
        stop_server
        ! is_mounted "$CUR_MNT" || die "hypernet stop left $CUR_MNT mounted" ;;
    esac
    CUR_PID="" CUR_PID_START=""
}

target_up() {
    CUR_TARGET=$1
    CUR_DIR="$WORK/run$RUN/$CUR_TARGET"
    mkdir -p "$CUR_DIR"
    case $CUR_TARGET in
    native) CUR_MNT="" ;;
    passthrough_ll) mkdir -p "$CUR_DIR/src" "$CUR_DIR/mnt"; CUR_MNT="$CUR_DIR/mnt" ;;
    gocryptfs)
        mkdir -p "$CUR_DIR/cipher" "$CUR_DIR/mnt"; CUR_MNT="$CUR_DIR/mnt"
        gocryptfs -init -q -passfile "$WORK/gocryptfs.pass" "$CUR_DIR/cipher" >>"$WORK/gocryptfs.log" 2>&1 ;;
    hypernet)
        CUR_HOME="$CUR_DIR/home"; mkdir -p "$CUR_DIR/mnt"; CUR_MNT="$CUR_DIR/mnt"
        "$HYPERNET_BIN" --home "$CUR_HOME" init >>"$WORK/hypernet-cli.log" 2>&1 || die "hypernet init failed" ;;
    esac
    mount_target
}

# Where workloads write: the mount, or for native a plain directory on the same disk.
target_path() {
    if [[ $CUR_TARGET == native ]]; then mkdir -p "$CUR_DIR/dir"; echo "$CUR_DIR/dir"; else echo "$CUR_MNT"; fi
}

# Cold caches: the kernel's (drop_caches) and any the file system server keeps (remount).
cold() {
    unmount_target
    mount_target
    drop_caches
}

target_down() {
    unmount_target
    rm -rf --one-file-system "$CUR_DIR"
    CUR_TARGET="" CUR_MNT="" CUR_HOME="" CUR_DIR=""
}

# --- workloads -------------------------------------------------------------------------------------

fio_job() { # name file rw bs size [more fio options]
    local name=$1 file=$2 rw=$3 bs=$4 size=$5
    shift 5
    timeout -k 10 900 fio --name="$name" --filename="$file" --rw="$rw" --bs="$bs" --size="$size" \
        --ioengine=psync --fallocate=none --output-format=json --output="$WORK/fio.json" "$@" >/dev/null ||
        die "fio $name failed on $CUR_TARGET"
}

fio_metric() { # metric direction bw|iops
    measure "$PYTHON" "$BENCH/workloads.py" fio-metric "$WORK/fio.json" --metric "$1" --direction "$2" --kind "$3"
}

# fio lays out a read job's file itself if it is short: a file that lost bytes must fail, not be rewritten.
expect_size() { # path mib
    local size
    size=$(stat -c %s "$1") || die "$1 is missing on $CUR_TARGET"
    ((size == $2 * 1024 * 1024)) || die "$1 has $size bytes on $CUR_TARGET, expected $2 MiB"
}

# Writes a file of random (fio-scrambled, incompressible) data and fsyncs it, untimed.
make_file() { # path mib
    fio_job prepare "$1" write 1M "${2}M" --end_fsync=1
}

workload_seq() {
    local dir
    dir=$(target_path)
    fio_job seqwrite "$dir/seq" write 1M "${SEQ_MIB}M" --end_fsync=1
    fio_metric seq_write write bw
    cold
    dir=$(target_path)
    expect_size "$dir/seq" "$SEQ_MIB"
    fio_job seqread "$dir/seq" read 1M "${SEQ_MIB}M"
    fio_metric seq_read_cold read bw
    rm -f "$dir/seq"
}

workload_rand() {
    local dir
    dir=$(target_path)
    make_file "$dir/rand" "$RAND_MIB"
    cold
    dir=$(target_path)
    expect_size "$dir/rand" "$RAND_MIB"
    fio_job randread "$dir/rand" randread 4k "${RAND_MIB}M" --direct=0 --time_based --runtime="${RAND_SECS}s"
    fio_metric rand_read_4k read iops
    rm -f "$dir/rand"
}

workload_small() {
    measure "$PYTHON" "$BENCH/workloads.py" small-files "$(target_path)" --count "$SMALL_COUNT"
}

workload_tree() {
    local dir t0 t1 t2
    dir="$(target_path)/tree"
    mkdir "$dir"
    t0=$(now)
    timeout -k 10 900 tar -xf "$TARBALL" -C "$dir" || die "untar failed on $CUR_TARGET"
    t1=$(now)
    timeout -k 10 900 rm -rf "$dir" || die "rm -rf failed on $CUR_TARGET"
    t2=$(now)
    record "{\"untar\": $(elapsed "$t0" "$t1"), \"rm_rf\": $(elapsed "$t1" "$t2")}"
}

workload_append() {
    local dir
    dir=$(target_path)
    make_file "$dir/append-big" "$APPEND_BIG_MIB"
    make_file "$dir/append-small" "$APPEND_SMALL_MIB"
    measure "$PYTHON" "$BENCH/workloads.py" append --count "$APPENDS" \
        "$dir/append-big=append_big" "$dir/append-small=append_small"
    rm -f "$dir/append-big" "$dir/append-small"
}

# --- main loop: targets interleaved within each run so slow drift of the machine hits all alike ----

for ((RUN = 1; RUN <= RUNS; RUN++)); do
    for target in "${TARGETS[@]}"; do
        log "run $RUN/$RUNS: $target"
        target_up "$target"
        drop_caches
        workload_seq
        workload_rand
        workload_small
        workload_tree
        workload_append
        target_down
    done
done

mkdir -p "$BENCH/results"
"$PYTHON" "$BENCH/report.py" "$RAW" --meta "$WORK/meta.json" \
    --out "$BENCH/results/bench-$(date -u +%Y%m%dT%H%M%SZ)$( ((QUICK)) && echo -quick).json"
