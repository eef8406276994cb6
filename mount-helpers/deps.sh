# Shared by setup.sh and test.sh (sourced, not run): the Debian packages Hypernet needs, and helpers
# that install only what is missing. Needs root for apt-get; never reads stdin.

# Building and running: headers for the C shims, the FUSE tools, getfattr/setfattr, pkg-config for
# the system-library targets.
HYPERNET_PACKAGES="libfuse3-dev fuse3 libsodium-dev libssl-dev libsqlite3-dev libzstd-dev attr pkg-config"
# Running the tests as well: the editors of the editor-save tests (Debian's full vim and vim-tiny, emacs, nano,
# ed; tests/integration/test_editors.py), pytest/hypothesis for Debian's
# python3 (another python3 first on PATH gets them from pip, see ensure_python_test_modules), and
# network namespaces with partitions and rate limits for the multi-node tests (ip, tc, nsenter, nft), tcpdump to
# show what crosses the wire, fusepy for the power-loss file system (tests/faults/lazyfs.py, Debian's python3), and
# stress-ng and fio for the conformance-under-load tests (tests/integration/test_load_verify.py).
HYPERNET_TEST_PACKAGES="$HYPERNET_PACKAGES vim vim-tiny emacs-nox nano ed python3-pytest python3-hypothesis iproute2 util-linux nftables faketime tcpdump python3-fusepy stress-ng fio"
# Benchmarks: the anchors they compare against.
HYPERNET_BENCH_PACKAGES="$HYPERNET_TEST_PACKAGES gocryptfs syncthing rsync"

# Every build (setup.sh, test.sh, CI): warnings in Hypernet's own targets fail it (dependencies are built with
# their warnings suppressed), and so does importing a module the target does not declare in Package.swift.
HYPERNET_SWIFT_BUILD_FLAGS="-Xswiftc -warnings-as-errors --explicit-target-dependency-import-check error"
# The test build (test.sh) only, never setup.sh's product: testable imports, and the failpoints
# (Sources/HypernetFailpoint, docs/testing.md "Failpoints").
HYPERNET_TEST_BUILD_FLAGS="-Xswiftc -enable-testing -Xswiftc -DHYPERNET_FAILPOINTS"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# install_packages PKG...: apt-get installs those not yet installed; `apt-get update` only if some are.
install_packages() {
    missing=""
    for package in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || missing="$missing $package"
    done
    [ -n "$missing" ] || return 0
    [ "$(id -u)" = 0 ] || die "missing packages:$missing (run as root, or install them)"
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q --no-install-recommends $missing </dev/null
}

# ensure_swift: puts the toolchain on PATH if it is not there yet.
ensure_swift() {
    if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    fi
    command -v swift >/dev/null 2>&1 || die "swift not found (expected on PATH or in /opt/swift/usr/bin)"
}

# ensure_python_test_modules: pytest and hypothesis importable by the python3 on PATH.
ensure_python_test_modules() {
    python3 -c 'import pytest, hypothesis' 2>/dev/null && return 0
    log "installing pytest and hypothesis for $(command -v python3) with pip"
    python3 -m pip install -q pytest hypothesis </dev/null
    python3 -c 'import pytest, hypothesis' || die "pytest/hypothesis still not importable by python3"
}

# hypernet_mounts: mount points of type fuse.hypernet, one per line.
hypernet_mounts() {
    awk '$3 == "fuse.hypernet" { print $2 }' /proc/mounts
}

# hypernet_processes BINARY: pids of running processes whose program is BINARY (an absolute path).
hypernet_processes() {
    for exe in /proc/[0-9]*/exe; do
        target=$(readlink "$exe" 2>/dev/null) || continue
        if [ "$target" = "$1" ] || [ "$target" = "$1 (deleted)" ]; then
            pid=${exe#/proc/}
            echo "${pid%/exe}"
        fi
    done
}
