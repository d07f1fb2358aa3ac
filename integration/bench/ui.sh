#!/usr/bin/env bash
# The web page on a large store: 10,000 repositories and 100,000 tags,
# written in registry:2's layout (ui_store.py), served by berth; then the time
# each page takes (ui_pages.py), cold and warm, p50 / p99 / max.
#
#   bash integration/bench/ui.sh            # REPOS=10000 TAGS=10 N=200
#
# Not a test: nothing here asserts; numbers go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPOS=${REPOS:-10000}
TAGS=${TAGS:-10}
N=${N:-200}
source integration/bench/lib.sh

started=$(now)
python3 integration/bench/ui_store.py "$WORK/data" "$REPOS" "$TAGS"
echo "store written in $(python3 -c "print(round($(now) - $started))") s"
port=$(free_port)
started=$(now)
pid=$(start_berth "$WORK/data" "$port" --no-mirror)
wait_http "http://127.0.0.1:$port/v2/"
# The first page waits for the names (walked once at startup).
curl -fs -o /dev/null "http://127.0.0.1:$port/ui/"
echo "first page after $(python3 -c "print(round($(now) - $started, 2))") s (the walk of $REPOS repositories)"
python3 integration/bench/ui_pages.py "127.0.0.1:$port" "$N" "$REPOS" "$TAGS"
echo "peak RSS $(rss_mib "$pid") MiB"
