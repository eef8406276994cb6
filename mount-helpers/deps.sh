# Shared by setup.sh and test.sh (sourced, not run): the Debian packages Hypernet needs, and helpers
# that install only what is missing. Needs root for apt-get; never reads stdin.

# Building and running: headers for the C shims, the FUSE tools, getfattr/setfattr, pkg-config for
# the system-library targets, help2man for the man pages (install_service_files).
HYPERNET_PACKAGES="libfuse3-dev fuse3 libsodium-dev libssl-dev libsqlite3-dev libzstd-dev libpcre2-dev attr pkg-config help2man"
# Running the tests as well: the editors of the editor-save tests (Debian's full vim and vim-tiny, emacs, nano,
# ed; tests/integration/test_editors.py), pytest/hypothesis for Debian's
# python3 (another python3 first on PATH gets them from pip, see ensure_python_test_modules), and
# network namespaces with partitions and rate limits for the multi-node tests (ip, tc, nsenter, nft), tcpdump to
# show what crosses the wire, fusepy for the power-loss file system (tests/faults/lazyfs.py, Debian's python3), and
# stress-ng and fio for the conformance-under-load tests (tests/integration/test_load_verify.py), systemd's
# systemd-analyze for checking the units offline (tests/integration/test_service.py).
HYPERNET_TEST_PACKAGES="$HYPERNET_PACKAGES vim vim-tiny emacs-nox nano ed python3-pytest python3-hypothesis iproute2 util-linux nftables faketime tcpdump python3-fusepy stress-ng fio systemd"
# Benchmarks: the anchors they compare against (aria2, opentracker, mktorrent: the BitTorrent swarm of bench/swarm.sh).
HYPERNET_BENCH_PACKAGES="$HYPERNET_TEST_PACKAGES gocryptfs syncthing rsync ripgrep plocate restic borgbackup bc aria2 opentracker mktorrent"

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

# install_service_files ROOT BINARY: what running Hypernet as a service and from a shell needs, below ROOT
# (empty: /): the systemd units (installed, never enabled or started), the shell completions argument-parser
# generates, and the man pages (help2man over each command's --help: argument-parser's generate-manual plugin
# would build every product again in a configuration of its own). Run from the repository's root.
install_service_files() {
    local root=$1 binary=$2 man="$1/usr/local/share/man/man1"
    install -D -m 0644 mount-helpers/systemd/hypernet@.service "$root/usr/local/lib/systemd/system/hypernet@.service"
    install -D -m 0644 mount-helpers/systemd/hypernet.service "$root/usr/local/lib/systemd/user/hypernet.service"
    install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
        "$root/usr/share/fish/vendor_completions.d" "$man"
    "$binary" --generate-completion-script bash >"$root/usr/share/bash-completion/completions/hypernet"
    "$binary" --generate-completion-script zsh >"$root/usr/share/zsh/vendor-completions/_hypernet"
    "$binary" --generate-completion-script fish >"$root/usr/share/fish/vendor_completions.d/hypernet.fish"
    local version
    version=$("$binary" --version)
    help2man -N --no-discard-stderr --version-string="$version" --name="a peer-to-peer persistence layer met as a folder" \
        --include=<(hypernet_see_also "$binary") --output="$man/hypernet.1" "$binary"
    hypernet_commands "$binary" | while IFS=$'\t' read -r words abstract; do
        local page="hypernet-${words// /-}"
        # help2man runs "BINARY WORDS --help"; the title names the page, not the command line.
        help2man -N --no-discard-stderr --version-string="$version" --name="$abstract" \
            --include=<(printf '[SEE ALSO]\n.BR hypernet (1)\n') --output="$man/$page.1" "$binary $words"
        sed -i "s|^\.TH [^ ]*|.TH ${page^^}|" "$man/$page.1"
    done
}

# hypernet_commands BINARY [WORD...]: every command below `BINARY WORD...`, recursively, one per line:
# the words that name it, a tab, its one-line summary (from the SUBCOMMANDS section of its --help).
hypernet_commands() {
    local binary=$1
    shift
    "$binary" "$@" --help | awk '
        /^SUBCOMMANDS:/ { listing = 1; next }
        listing && /^  [a-z]/ {
            if (name != "") print name "\t" summary
            name = $1; summary = $0
            sub(/^  [a-z-]+( \(default\))? +/, "", summary)
            next
        }
        listing && /^    +[^ ]/ { line = $0; sub(/^ +/, "", line); summary = summary " " line; next }
        listing && /^  [^ a-z]/ { listing = 0 }
        END { if (name != "") print name "\t" summary }' |
        while IFS=$'\t' read -r name summary; do
            printf '%s\t%s\n' "${*:+$* }$name" "$summary"
            hypernet_commands "$binary" "$@" "$name"
        done
}

# hypernet_see_also BINARY: a help2man include naming every command's page (`\%`: no line break at its hyphens).
hypernet_see_also() {
    printf '[SEE ALSO]\n'
    hypernet_commands "$1" | cut -f1 | sed 's/ /-/g; s/^/.BR \\%hypernet-/; s/$/ (1),/; $s/,$//'
    printf '.PP\ndocs/cli.md in the source tree.\n'
}
