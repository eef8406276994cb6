#!/usr/bin/env bash
# Benchmark of issue 17: a swarm of N = 2, 4, 6, 8 readers of one seeder's 128 MiB public file in network
# namespaces with 50 Mbit/s uploads, against the lower bound, aria2 and the seeder alone; first byte and cold
# streaming on loopback. The work is bench/swarm.py (its docstring says what is measured); this checks the tools
# and passes the options on. Table on stdout, JSON in bench/results/swarm-<time>.json.
set -euo pipefail

usage() {
    cat <<EOF2
usage: bench/swarm.sh [--runs N] [--readers 2,4,6,8] [--size-mib 128] [--large-mib 1024] [--no-aria2] [--quick]

  --runs N       runs per case; figures are medians (default 3)
  --readers L    the values of N (default 2,4,6,8)
  --quick        N=2, an 8 MiB file, a 64 MiB large file, one run: checks the benchmark, not for the record

environment:
  HYPERNET_BIN  the hypernet executable (default: .build/release/hypernet in the repository)
  PYTHON        python 3 interpreter (default python3)
EOF2
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export HYPERNET_BIN=${HYPERNET_BIN:-$REPO/.build/release/hypernet}
for a in "$@"; do [[ $a == -h || $a == --help ]] && { usage; exit 0; }; done

die() { echo "swarm: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (FUSE mounts, network namespaces, tc, nft)"
[[ -x $HYPERNET_BIN ]] || die "no hypernet executable at $HYPERNET_BIN (swift build -c release, or set HYPERNET_BIN)"
INSTALL_HINT="bash -c '. mount-helpers/deps.sh && install_packages \$HYPERNET_BENCH_PACKAGES'"
for tool in ip tc nft nsenter fusermount3 sha256sum "$PYTHON"; do
    command -v "$tool" >/dev/null || die "missing tool: $tool ($INSTALL_HINT)"
done
exec "$PYTHON" "$REPO/bench/swarm.py" "$@"
