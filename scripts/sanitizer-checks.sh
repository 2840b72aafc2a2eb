#!/usr/bin/env bash
# The ASan/UBSan checks of the test command (scripts/test.sh starts this in the
# background, at low priority, as soon as the gcc build is done; it also runs
# on its own, as root):
#   1. one clang build with ASan/UBSan at -O1 (build-fuzz, a unity build:
#      CMakeLists.txt) of the unit-level suites and the libFuzzer targets,
#   2. the unit-level suites there (labels unit esp control config pcap; the
#      esp suite's two malloc-counting tests are compiled out under ASan),
#   3. the fuzz smoke: each libFuzzer target on its seeds, its regressions and
#      a fixed number of runs from seed 1, two targets at a time.
# Each stage prints one line with its time; a failing stage prints its log
# (the build's last lines, the failing tests' output, the crash) and the
# script exits 1.  OV2_SKIP_SANITIZE=1 skips the suites (stage 2),
# OV2_SKIP_FUZZ=1 the fuzz targets (stage 3).  Logs: build-fuzz/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
stage() { echo "ipsecov2: $1: $((SECONDS - t0)) s"; t0=$SECONDS; }
failed() { echo "ipsecov2: FAILED: $1"; exit 1; }
suites=()
[[ "${OV2_SKIP_SANITIZE:-}" != 1 ]] && suites=(ov2_unit_tests ov2_esp_tests ov2_control_tests ov2_config_tests ov2_pcap_tests)
fuzz_targets=()
if [[ "${OV2_SKIP_FUZZ:-}" != 1 ]]; then
  for src in tests/fuzz/fuzz_*.cpp; do fuzz_targets+=("$(basename "$src" .cpp)"); done
fi
((${#suites[@]} + ${#fuzz_targets[@]})) || exit 0
mkdir -p build-fuzz
log=build-fuzz/sanitizer-build.log
if ! { CC=clang CXX=clang++ cmake -S . -B build-fuzz -DOV2_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" &&
       cmake --build build-fuzz -j"$(nproc)" --target "${suites[@]}" "${fuzz_targets[@]}"; } >"$log" 2>&1; then
  tail -50 "$log"
  failed "the ASan/UBSan build (clang, build-fuzz), log $log"
fi
stage "ASan/UBSan build (clang, build-fuzz)"

if ((${#suites[@]})); then
  log=build-fuzz/sanitizer-suites.log
  if (cd build-fuzz && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ctest --output-on-failure --timeout 600 -j1 -L '^(unit|esp|control|config|pcap)$') >"$log" 2>&1; then
    grep -E '^[0-9]+% tests passed|^Total Test time' "$log" | sed 's/^/ASan\/UBSan suites: /'
  else
    cat "$log"
    failed "the unit-level suites under ASan/UBSan (build-fuzz), log $log"
  fi
  stage "ASan/UBSan suites"
fi

# One fuzz target: its seeds, its regressions and a fixed walk around them (a
# fixed seed and run count keep this stage reproducible; open-ended fuzzing is
# scripts/fuzz.sh TARGET SECONDS).  Its result line goes to $dir/result, its
# log (shown on a crash) to $dir/log.
fuzz_one() {
  local target=$1 dir=$2 name=${1#fuzz_} runs
  local dirs=("$dir/corpus" "tests/fuzz/corpus/$name")
  [[ -d tests/fuzz/regressions/$name ]] && dirs+=("tests/fuzz/regressions/$name")
  mkdir -p "$dir/corpus"
  case $name in
    # About 10 s each on this machine when it is idle.
    esp_inbound) runs=2000000 ;;
    control_request) runs=50000 ;;
    pcap_reader) runs=5000 ;;  # each run opens a capture file through libpcap
    *) runs=10000 ;;
  esac
  # The time limit only bounds a starved run (this runs next to the suites);
  # the line says so if it stopped before its run count.
  if build-fuzz/tests/fuzz/"$target" -seed=1 -runs="$runs" -max_total_time=120 -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$dir/" "${dirs[@]}" >"$dir/log" 2>&1; then
    local done_runs
    done_runs=$(grep -o 'Done [0-9]* runs' "$dir/log" | tail -1 | tr -dc 0-9) || true
    if ((${done_runs:-0} >= runs)); then
      echo "fuzz $name: Done $done_runs runs, no crash" >"$dir/result"
    else
      echo "fuzz $name: no crash, but stopped at the time limit after ${done_runs:-0} of $runs runs" >"$dir/result"
    fi
  else
    { echo "fuzz $name: FAILED"; tail -30 "$dir/log"; } >"$dir/result"
    return 1
  fi
}

if ((${#fuzz_targets[@]})); then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  crashed=0
  for ((i = 0; i < ${#fuzz_targets[@]}; i += 2)); do
    pids=()
    for target in "${fuzz_targets[@]:i:2}"; do
      fuzz_one "$target" "$work/$target" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || crashed=$((crashed + 1)); done
  done
  for target in "${fuzz_targets[@]}"; do cat "$work/$target/result"; done
  if ((crashed)); then
    failed "fuzz smoke: $crashed of ${#fuzz_targets[@]} targets crashed (above)"
  fi
  echo "fuzz smoke: all ${#fuzz_targets[@]} targets ran without a crash"
  stage "fuzz smoke"
fi
