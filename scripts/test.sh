#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test suite,
# then runs each libFuzzer target briefly on its seed corpus (clang build in
# build-fuzz; OV2_SKIP_FUZZ=1 skips that stage).  Root is needed (BPF, AF_XDP,
# network namespaces).  Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then echo "ipsecov2: the tests need root (BPF, namespaces); run with sudo" >&2; exit 1; fi
scripts/deps.sh
scripts/build.sh
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 600 -j1 "$@")
if [[ "${OV2_SKIP_FUZZ:-}" != 1 ]]; then
  echo "ipsecov2: fuzz smoke (each target: its seeds, its regressions, a fixed number of runs from seed 1)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DOV2_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  targets=()
  for src in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
  cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null
  failed=0
  for target in "${targets[@]}"; do
    t=build-fuzz/tests/fuzz/$target
    name=${target#fuzz_}
    corpus=$(mktemp -d)
    dirs=("$corpus" "tests/fuzz/corpus/$name")
    [[ -d tests/fuzz/regressions/$name ]] && dirs+=("tests/fuzz/regressions/$name")
    # A fixed seed and run count keep this stage reproducible: it checks the
    # seeds, the regressions and a fixed walk around them.  Open-ended
    # fuzzing is scripts/fuzz.sh TARGET SECONDS.
    case $name in
      esp_inbound) runs=2000000 ;;
      control_request) runs=100000 ;;
      pcap_reader) runs=5000 ;;  # each run opens a capture file through libpcap
      *) runs=20000 ;;
    esac
    if "$t" -seed=1 -runs="$runs" -max_total_time=60 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$corpus/" \
         "${dirs[@]}" >"$corpus/log" 2>&1; then
      echo "fuzz $name: $(grep -o 'Done [0-9]* runs' "$corpus/log" | tail -1), no crash"
    else
      echo "fuzz $name: FAILED"; tail -30 "$corpus/log"; failed=$((failed + 1))
    fi
    rm -rf "$corpus"
  done
  if ((failed)); then echo "fuzz smoke: $failed of ${#targets[@]} targets crashed"; exit 1; fi
  echo "fuzz smoke: all ${#targets[@]} targets ran without a crash"
fi
