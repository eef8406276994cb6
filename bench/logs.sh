#!/usr/bin/env bash
# Benchmark of issue 19: grep, count and tail -f --grep near the data, against pulling the logs (rsync) and
# grepping them on one node. The measurement is bench/logs.py (its docstring says what and how); this checks what
# it needs first. Needs root (network namespaces), rsync, and a release build.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERNET_BIN=${HYPERNET_BIN:-$REPO/.build/release/hypernet}
[[ $(id -u) == 0 ]] || { echo "bench: run as root (network namespaces)" >&2; exit 1; }
command -v rsync >/dev/null || { echo "bench: rsync is not installed (mount-helpers/deps.sh)" >&2; exit 1; }
[[ -x $HYPERNET_BIN ]] || { echo "bench: no hypernet at $HYPERNET_BIN (swift build -c release)" >&2; exit 1; }
exec python3 "$REPO/bench/logs.py" "$@"
