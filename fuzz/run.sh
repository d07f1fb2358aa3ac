#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 25) seeded from its corpus
# in fuzz/corpus/<target> (new inputs go to a temp directory, so the checkout
# stays clean); fails on the first finding, which libFuzzer saves under
# fuzz/artifacts/<target>/. Uses the nightly toolchain when installed, else
# stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags).
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-25}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
"${fuzz[@]}" build -O
for target in $("${fuzz[@]}" list); do
  work=$(mktemp -d)
  echo "fuzz: $target for ${secs}s"
  "${fuzz[@]}" run -O "$target" "$work" "corpus/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E 'stat::number_of_executed_units|panicked|==ERROR|SUMMARY|Test unit written' || true
  status=${PIPESTATUS[0]}
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target found a failing input (see fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
