#!/usr/bin/env bash
# Static checks of our code (ctl/, not the generated BPF skeletons or
# third-party headers): clang-tidy-14 with the checks in .clang-tidy and
# cppcheck with the suppressions (each with its reason) in
# .cppcheck-suppressions.  Any finding fails.  Needs a configured and built
# tree for compile_commands.json and the generated headers: BUILD_DIR
# (default build).  OV2_STATIC_JOBS parallel clang-tidy processes (default 1:
# scripts/test.sh runs this next to the tests).  OV2_STATIC_TIDY=0 runs only
# cppcheck (scripts/test.sh does that unless OV2_TIDY=1: clang-tidy costs
# about 6.5 CPU-minutes here and would take the test command past 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
db=$BUILD_DIR/compile_commands.json
[[ -f $db ]] || { echo "static-checks: no $db (run scripts/build.sh)" >&2; exit 1; }
jobs=${OV2_STATIC_JOBS:-1}
failed=0

t0=$SECONDS
if [[ ${OV2_STATIC_TIDY:-1} == 0 ]]; then
  echo "static-checks: clang-tidy skipped (OV2_STATIC_TIDY=0; run scripts/static-checks.sh for it)"
else
mapfile -t files < <(find ctl -name '*.cpp' | sort)
if ! printf '%s\n' "${files[@]}" |
     xargs -P "$jobs" -n 4 clang-tidy-14 -p "$BUILD_DIR" --quiet 2>/dev/null >"$BUILD_DIR/clang-tidy.log"; then
  failed=1
fi
# clang-tidy exits 0 on a warning it was not told to treat as error; any
# "warning:"/"error:" line in our files is a finding either way.
if grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error):' "$BUILD_DIR/clang-tidy.log"; then
  failed=1
fi
echo "static-checks: clang-tidy on ${#files[@]} files of ctl/: $((SECONDS - t0)) s, $( ((failed)) && echo FINDINGS || echo clean)"
fi

t0=$SECONDS
if ! cppcheck --project="$db" --file-filter="ctl/*" --library=scripts/cppcheck-libbpf.cfg --std=c++20 --quiet -j"$jobs" \
       --enable=warning,performance,portability --inline-suppr \
       --suppressions-list=.cppcheck-suppressions --error-exitcode=1 \
       --template='{file}:{line}: {severity} {id}: {message}' 2>&1; then
  echo "static-checks: cppcheck: FINDINGS"
  failed=1
else
  echo "static-checks: cppcheck on ctl/: $((SECONDS - t0)) s, clean"
fi
exit "$failed"
