#!/usr/bin/env bash
# Installs what Hypernet needs, builds it (release), installs `hypernet`, the mount helper, the systemd units
# (not enabled), the shell completions and the man pages, creates the node (`hypernet init`) and mounts its folder
# at ~/Hypernet (or $1). Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. mount-helpers/deps.sh

mountpoint=${1:-$HOME/Hypernet}

install_packages $HYPERNET_PACKAGES
ensure_swift

log "building (release)"
# shellcheck disable=SC2086 # flags are words
swift build -c release $HYPERNET_SWIFT_BUILD_FLAGS </dev/null
binary="$(swift build -c release $HYPERNET_SWIFT_BUILD_FLAGS --show-bin-path)/hypernet"
[ -x "$binary" ] || die "build produced no $binary"

log "installing /usr/local/bin/hypernet -> $binary and /sbin/mount.fuse.hypernet"
ln -sfn "$binary" /usr/local/bin/hypernet
install -m 0755 mount-helpers/mount.fuse.hypernet /sbin/mount.fuse.hypernet

log "installing the systemd units (not enabled; README: Running as a service), completions and man pages"
install_service_files "" "$binary"
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

log "identity"
hypernet init

mkdir -p "$mountpoint"
if hypernet status >/dev/null 2>&1; then
    log "the node is already running:"
    hypernet status | grep '^mountpoint:'
else
    log "mounting $mountpoint"
    hypernet mount "$mountpoint"
fi

cat <<NEXT

Hypernet is mounted at $mountpoint. Try:
  echo hi > $mountpoint/f
  cat $mountpoint/f
  getfattr -d -m user.hypernet $mountpoint/f
  hypernet log $mountpoint/f
  hypernet status
Stop it with: hypernet unmount $mountpoint
NEXT
