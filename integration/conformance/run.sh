#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite (v1.1.1, all four workflows)
# against a fresh berth. The suite is not part of this repository: build it
# from opencontainers/distribution-spec (folder conformance, tag v1.1.1) with
# `go test -c -o conformance.test` and pass its path:
#
#   CONFORMANCE_BIN=/path/to/conformance.test bash integration/conformance/run.sh
#
# TARGET_URL=http://host:port runs it against another registry instead (e.g.
# Distribution 2.8, to compare); the registry must be empty.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CONFORMANCE_BIN:?set CONFORMANCE_BIN to a built conformance.test}"
WORK=$(mktemp -d /tmp/berth-conformance.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=
if [ -z "${TARGET_URL:-}" ]; then
  cargo build --release --quiet --bin berth
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  target/release/berth serve --listen "127.0.0.1:$PORT" --data "$WORK/data" >"$WORK/berth.log" 2>&1 &
  PID=$!
  TARGET_URL=http://127.0.0.1:$PORT
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$TARGET_URL/v2/" && break; sleep 0.05; done
fi
# berth never mounts a blob without `from` (a blob is readable only where it is
# linked), so automatic cross-mount is declared off.
cd "$WORK"
OCI_ROOT_URL=$TARGET_URL OCI_NAMESPACE=conformance/repo OCI_CROSSMOUNT_NAMESPACE=conformance/other \
OCI_TEST_PULL=1 OCI_TEST_PUSH=1 OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
OCI_AUTOMATIC_CROSSMOUNT=0 OCI_REPORT_DIR="$WORK" "$CONFORMANCE_BIN" 2>&1 | grep -E 'Ran [0-9]+ of|Passed|FAIL\]' | sed 's/\x1b\[[0-9;]*m//g'
