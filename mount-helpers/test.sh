#!/usr/bin/env bash
# Runs every test: installs what is missing, builds once (release, with tests), runs the Swift unit
# tests and the integration suite against real mounts, and fails if a Hypernet mount or daemon started
# by the run is left behind. Exit status non-zero on any failure. Needs root and /dev/fuse; no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
. mount-helpers/deps.sh

install_packages $HYPERNET_TEST_PACKAGES
ensure_swift
ensure_python_test_modules
[ -e /dev/fuse ] || die "no /dev/fuse: the integration tests need FUSE"

# shellcheck disable=SC2086 # flags are words
binary="$(swift build -c release $HYPERNET_TEST_BUILD_FLAGS $HYPERNET_SWIFT_BUILD_FLAGS --show-bin-path </dev/null)/hypernet"
# Whatever runs already (a folder mounted by setup.sh) is not ours to judge.
mounts_before=$(hypernet_mounts | sort)
processes_before=$(hypernet_processes "$binary" | sort)

log "checking the formatting (.swift-format)"
failed=0
swift format lint --strict --configuration .swift-format --recursive Package.swift Sources Tests Fuzz </dev/null || failed=1

log "building (release, with tests and failpoints, warnings as errors)"
# Testable imports: some unit tests count what a component does inside (DirectoryCostTests), not how long it takes.
# Failpoints: tests/integration/test_failpoints.py and the fault harness's `failpoint` fault.
# shellcheck disable=SC2086
swift build -c release --build-tests $HYPERNET_TEST_BUILD_FLAGS $HYPERNET_SWIFT_BUILD_FLAGS </dev/null

log "unit tests"
swift test -c release --skip-build </dev/null || failed=1

log "integration tests (HYPERNET_BIN=$binary)"
HYPERNET_BIN=$binary python3 -m pytest -q tests/integration </dev/null || failed=1

# Only the suite's own mounts (under its hypernet-it-* directory): a benchmark or a user's folder
# mounted meanwhile is not ours to judge or unmount.
left_mounts=$(comm -13 <(echo "$mounts_before") <(hypernet_mounts | grep '/hypernet-it-' | sort))
left_processes=$(comm -13 <(echo "$processes_before") <(hypernet_processes "$binary" | sort))
if [ -n "$left_mounts$left_processes" ]; then
    failed=1
    for mount in $left_mounts; do
        echo "left behind: mount $mount" >&2
        fusermount3 -u -z "$mount" || true
    done
    for pid in $left_processes; do
        echo "left behind: process $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
        kill -KILL "$pid" 2>/dev/null || true
    done
fi

if [ "$failed" = 0 ]; then
    log "all tests passed"
else
    echo "FAILED" >&2
fi
exit "$failed"
