#!/usr/bin/env bash
# Runs one libFuzzer target for a given time:  scripts/fuzz.sh TARGET [SECONDS]
# Targets: config esp_inbound control_request pcap_reader reassembly state_reader.  Crashes are written to
# build-fuzz/crashes/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
secs=${2:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DOV2_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$target"
mkdir -p build-fuzz/crashes "build-fuzz/corpus/$target"
exec build-fuzz/tests/fuzz/fuzz_"$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/crashes/ "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target"
