#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Package.swift) and runs each for SECONDS (default 60).
#
#   Fuzz/run.sh [SECONDS] [TARGET...]        targets: FuzzFrames FuzzHandshake FuzzRecords FuzzStore FuzzControl
#                                          FuzzHaves
#                                          (default: all)
#
# Environment:
#   FUZZ_JOBS=N       parallel fuzzing processes per target (default 1)
#   FUZZ_MERGE=1      afterwards, merge what the run found into Fuzz/corpus/<target>/ (only inputs that add
#                     coverage; libFuzzer -merge=1), to be committed with the seeds
#   FUZZ_NO_BUILD=1   skip `swift build`
#   FUZZ_ARGS="..."   extra libFuzzer flags (e.g. -max_len=65536 -dict=...)
#
# Each target reads the committed corpus Fuzz/corpus/<target>/ (seeds from WireFuzz.seeds(),
# StoreFuzz.seeds() and ControlFuzz.seeds(), merged finds, crashers) and writes new inputs to a scratch corpus
# in Fuzz/.build/fuzz-corpus/<target>/ (ignored by git), so a run never floods the committed one. Crashers go
# to Fuzz/artifacts/<target>/; copy a fixed one into Fuzz/corpus/<target>/ so that `swift test`
# (FuzzCorpusTests) replays it from then on. Exit status: 0 if no target crashed; 1 otherwise (each crash is
# listed with its file and hex).
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(FuzzFrames FuzzHandshake FuzzRecords FuzzStore FuzzControl FuzzHaves)
jobs="${FUZZ_JOBS:-1}"

if [ -z "${FUZZ_NO_BUILD:-}" ]; then
    # -sanitize=fuzzer instruments for coverage and links libFuzzer; each target's main.swift calls
    # LLVMFuzzerRunDriver (see Package.swift for why not -parse-as-library).
    swift build -c release -Xswiftc -sanitize=fuzzer,address
fi
bin="$(swift build -c release -Xswiftc -sanitize=fuzzer,address --show-bin-path)"

# The Swift runtime's backtracer would catch the trap before libFuzzer does and keep the process waiting.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}"

status=0
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    scratch=".build/fuzz-corpus/$target"
    artifacts="artifacts/$target"
    mkdir -p "$corpus" "$scratch" "$artifacts"
    log=".build/fuzz-$target.log"
    parallel=""
    [ "$jobs" -gt 1 ] && parallel="-jobs=$jobs -workers=$jobs"
    echo "== $target: ${seconds}s, corpus $corpus (+ $scratch), log Fuzz/$log"
    set +e
    # -rss_limit_mb: the decoders bound every allocation far below this; more is a finding.
    "$bin/$target" "$scratch" "$corpus" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 $parallel ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    # With -jobs, libFuzzer copies each job's fuzz-N.log into its own output when the job ends.
    rm -f fuzz-[0-9]*.log
    execs=$(awk '/^stat::number_of_executed_units/ {n += $2} END {print n + 0}' "$log")
    echo "   $execs executions; $(grep -E '^#[0-9]+.*DONE' "$log" | tail -1)"
    crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) 2>/dev/null | sort)
    if [ "$rc" -ne 0 ] || [ -n "$crashes" ]; then
        status=1
        echo "!! $target exited $rc; findings:"
        for f in $crashes; do echo "   $f: $(od -An -tx1 -v "$f" | tr -d ' \n' | head -c 512)"; done
        grep -E "ERROR|Fatal error|SUMMARY|deadly signal" "$log" | head -5 || true
    fi
    if [ -n "${FUZZ_MERGE:-}" ]; then
        "$bin/$target" -merge=1 "$corpus" "$scratch" >".build/fuzz-$target-merge.log" 2>&1 || true
        echo "   merged into $corpus: $(ls "$corpus" | wc -l) files"
    fi
done
exit $status
