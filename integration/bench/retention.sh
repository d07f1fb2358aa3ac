#!/usr/bin/env bash
# Retention over many tags (issue 22): a store of TAGS tags in REPOS pushed
# repositories (each tag its own small manifest over one shared config), their
# push times spread over 100 days; `berth retention` with keep_last = 10 and
# remove_older_than = 30 days. Time and peak RSS of: the dry run (after the
# index was built once), then the real run.
#
#   bash integration/bench/retention.sh      # TAGS=100000 REPOS=100
set -euo pipefail
cd "$(dirname "$0")/../.."
TAGS=${TAGS:-100000}
REPOS=${REPOS:-100}
source integration/bench/lib.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq; apt-get install -y -qq time >/dev/null; }

python3 integration/bench/make_store.py "$WORK/store" "$TAGS" "$REPOS" --spread-days 100
cat >"$WORK/berth.toml" <<TOML
[[retention]]
repositories = ["ci/*"]
keep_last = 10
remove_older_than = "30days"
TOML
run() { # label args… -> "seconds rss_mib"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$BERTH" retention --config "$WORK/berth.toml" --data "$WORK/store" "$@" >"$WORK/$label.out"
  read -r secs kib <"$WORK/time"
  echo "$secs $((kib / 1024))"
}
"$BERTH" gc --dry-run --data "$WORK/store" >/dev/null  # builds the index once (what a server does at its first start)
read -r dry_s dry_rss < <(run dry --dry-run)
read -r real_s real_rss < <(run real)
echo "| retention over $TAGS tags in $REPOS repositories | time | peak RSS |"
echo "|---|---|---|"
echo "| dry run | ${dry_s} s | ${dry_rss} MiB |"
echo "| real run ($(tail -1 "$WORK/real.out" | grep -o 'removed [0-9]* tags')) | ${real_s} s | ${real_rss} MiB |"
