#!/usr/bin/env bash
# Benchmark of issue 20: a store with half of its bytes dead (every file overwritten once under `last 1`), then
# `hypernet gc`: time, bytes given back and their rate, peak daemon RSS during it, and foreground write throughput
# during the pass against idle. In the same run, the same two generations of the same files in a restic and a borg
# repository: `restic forget --keep-last 1 --prune` and `borg prune --keep-last 1 && borg compact`. Table on
# stdout, JSON in bench/results/. Needs restic and borgbackup (mount-helpers/deps.sh, HYPERNET_BENCH_PACKAGES).
# Everything it mounts or starts is undone on exit.
set -euo pipefail

usage() {
    cat <<USAGE
usage: bench/retention.sh [--size GIB] [--dir DIR]

  --size GIB  store size before gc, half of it dead (default 10)
  --dir DIR   where homes, mounts, repositories and the staged files go (default \${TMPDIR:-/tmp})

environment:
  HYPERNET_BIN  the hypernet executable (default: .build/release/hypernet in the repository)
USAGE
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HYPERNET_BIN=${HYPERNET_BIN:-$REPO/.build/release/hypernet}
SIZE=10
BASE=${TMPDIR:-/tmp}
while (($#)); do
    case "$1" in
    --size) SIZE=${2:?--size needs a number of GiB}; shift 2 ;;
    --dir) BASE=${2:?--dir needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
[[ $SIZE =~ ^[1-9][0-9]*$ ]] || die "--size must be a whole number of GiB"
for tool in restic borg; do command -v $tool >/dev/null || die "$tool is not installed (mount-helpers/deps.sh)"; done
[[ -x $HYPERNET_BIN ]] || die "no hypernet at $HYPERNET_BIN (swift build -c release)"

WORK=$(mktemp -d "$BASE/hypernet-retention-XXXXXX")
HOME_DIR=$WORK/home
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/stage"
hn() { "$HYPERNET_BIN" --home "$HOME_DIR" "$@"; }
cleanup() {
    hn stop >/dev/null 2>&1 || true
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

FILES=$((SIZE * 1024 / 2 / 64)) # 64 MiB files: half the size per generation
generation() { # fills the stage with a new generation of the files (incompressible)
    rm -rf "$WORK/stage" && mkdir -p "$WORK/stage"
    for ((i = 0; i < FILES; i++)); do head -c $((64 << 20)) /dev/urandom >"$WORK/stage/f$i"; done
}
pack_bytes() { du -sb "$HOME_DIR/store/packs" | cut -f1; }
write_rate() { # MB/s of a 256 MiB fsynced write into the mount
    local out
    out=$(dd if=/dev/zero of="$MNT/data/probe" bs=1M count=256 conv=fsync 2>&1 | tail -1)
    rm -f "$MNT/data/probe"
    awk '{for (i = 1; i < NF; i++) if ($(i + 1) ~ /^[MG]B\/s$/) print ($(i + 1) == "GB/s" ? $i * 1000 : $i)}' <<<"$out"
}

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic BORG_PASSPHRASE=bench BORG_REPO=$WORK/borg
restic init >/dev/null
borg init --encryption=repokey >/dev/null 2>&1
hn mount "$MNT" >/dev/null
mkdir "$MNT/data"
hn retention "$MNT/data" last 1
for g in 1 2; do
    log "generation $g: $FILES files of 64 MiB"
    generation
    cp "$WORK/stage"/f* "$MNT/data/"
    (cd "$WORK/stage" && restic backup --quiet . && borg create "::g$g" . )
done
sync
idle=$(write_rate)
before=$(pack_bytes)
pid=$(cut -d' ' -f1 "$HOME_DIR/daemon.pid")
start=$(date +%s.%N)
hn gc --json >"$WORK/gc.json" &
gc=$!
(   # the daemon's peak RSS while the pass runs, in KiB
    peak=0
    while kill -0 $gc 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
        ((rss > peak)) && peak=$rss
        sleep 0.2
    done
    echo $peak >"$WORK/peak"
) &
sampler=$!
during=$(write_rate)
wait $gc
gc_seconds=$(echo "$(date +%s.%N) - $start" | bc)
wait $sampler
peak=$(cat "$WORK/peak")
after=$(pack_bytes)
restic_before=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)
start=$(date +%s.%N)
restic forget --quiet --keep-last 1 --prune >/dev/null
restic_seconds=$(echo "$(date +%s.%N) - $start" | bc)
restic_after=$(du -sb "$RESTIC_REPOSITORY" | cut -f1)
borg_before=$(du -sb "$BORG_REPO" | cut -f1)
start=$(date +%s.%N)
borg prune --keep-last 1 && borg compact
borg_seconds=$(echo "$(date +%s.%N) - $start" | bc)
borg_after=$(du -sb "$BORG_REPO" | cut -f1)

dead=$((FILES * (64 << 20)))
mkdir -p "$REPO/bench/results"
result=$REPO/bench/results/retention-$(date -u +%Y%m%dT%H%M%SZ).json
cat >"$result" <<JSON
{"size_gib": $SIZE, "dead_bytes": $dead, "gc": $(cat "$WORK/gc.json"),
 "hypernet": {"seconds": $gc_seconds, "before": $before, "after": $after, "peak_rss_kib": $peak,
              "write_mb_s_idle": ${idle:-0}, "write_mb_s_during_gc": ${during:-0}},
 "restic": {"seconds": $restic_seconds, "before": $restic_before, "after": $restic_after},
 "borg": {"seconds": $borg_seconds, "before": $borg_before, "after": $borg_after}}
JSON
printf '%-10s %10s %16s %12s\n' tool seconds "bytes freed" "MB/s freed"
for t in hypernet:$gc_seconds:$((before - after)) restic:$restic_seconds:$((restic_before - restic_after)) \
    borg:$borg_seconds:$((borg_before - borg_after)); do
    IFS=: read -r name seconds freed <<<"$t"
    printf '%-10s %10.1f %16d %12.1f\n' "$name" "$seconds" "$freed" "$(echo "$freed / 1000000 / $seconds" | bc -l)"
done
echo "reclaimed $(echo "100 * ($before - $after) / $dead" | bc -l | cut -c1-5) % of the dead bytes; peak daemon RSS ${peak} KiB;"
echo "foreground writes ${during:-?} MB/s during gc, ${idle:-?} MB/s idle; JSON: $result"
