#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test suite.
# Next to the suites, at low priority: the static checks
# (scripts/static-checks.sh: cppcheck on ctl/, and clang-tidy too with
# OV2_TIDY=1), the benchmark program's build, and scripts/sanitizer-checks.sh
# (one clang build with ASan/UBSan, build-fuzz; there the unit-level suites,
# labels unit esp control config pcap, and each libFuzzer target briefly on its
# seed corpus).  After the suites: the tests of label bench (ipsecov2-bench
# stopped early, about 25 s), then the results of the sanitizer checks.
# OV2_SKIP_STATIC=1, OV2_SKIP_SANITIZE=1, OV2_SKIP_FUZZ=1 skip those stages.
# Root is needed (BPF, AF_XDP, network namespaces).  Extra arguments go to the
# ctest runs of the build tree (the suites, then label bench).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then echo "ipsecov2: the tests need root (BPF, namespaces); run with sudo" >&2; exit 1; fi
# Per-stage wall times (and, at the end, the CPU time of this script and its
# children), so that a slow run shows where its time went.
stage_t0=$SECONDS
stage() { echo "ipsecov2: $1: $((SECONDS - stage_t0)) s (total $SECONDS s)"; stage_t0=$SECONDS; }
scripts/deps.sh
stage "packages"
scripts/build.sh
stage "gcc build"
build=${BUILD_DIR:-build}
static_pid=
bench_pid=
san_pid=
trap '[[ -n $static_pid ]] && kill "$static_pid" 2>/dev/null; [[ -n $bench_pid ]] && kill -- -"$bench_pid" 2>/dev/null
      [[ -n $san_pid ]] && kill -- -"$san_pid" 2>/dev/null; true' EXIT
if [[ "${OV2_SKIP_STATIC:-}" != 1 ]]; then
  BUILD_DIR=$build OV2_STATIC_TIDY=${OV2_TIDY:-0} nice -n 10 scripts/static-checks.sh >"$build/static-checks.log" 2>&1 &
  static_pid=$!
fi
# In the background at the lowest priority while the suites below run (most
# of their time is spent waiting on namespaces, daemons and traffic, so these
# take the idle CPU): the benchmark program (built, not run, so that it keeps
# compiling; label bench runs it below), and scripts/sanitizer-checks.sh: one
# clang build with ASan/UBSan (build-fuzz), the unit-level suites there and
# the fuzz smoke.  Each in a session of its own (setsid), so that a failure
# can stop all of it.
bench_log=$build/bench-build.log
setsid nice -n 19 cmake --build "$build" -j"$(nproc)" --target ipsecov2-bench >"$bench_log" 2>&1 &
bench_pid=$!
san_log=$build/sanitizer-checks.log
setsid nice -n 19 scripts/sanitizer-checks.sh >"$san_log" 2>&1 &
san_pid=$!
(cd "$build" && ctest --output-on-failure --timeout 600 -j1 -LE '^bench$' "$@")
stage "suites (ctest)"
# Now the background work is what everything waits for: back to normal
# priority (also for the processes it starts from now on).
renice -n 0 -g "$bench_pid" "$san_pid" >/dev/null 2>&1 || true
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=
if ((bench_rc)); then tail -50 "$bench_log"; echo "ipsecov2: FAILED: the benchmark program's build, log $bench_log"; exit 1; fi
stage "waiting for the benchmark program's build"
# Label bench (ipsecov2-bench itself, stopped early) needs the bench: it runs
# once that build is done, next to the sanitizer checks.
echo "ipsecov2: the benchmark program stopped early (label bench)"
(cd "$build" && ctest --output-on-failure --timeout 600 -j1 -L '^bench$' "$@")
stage "label bench"
san_rc=0
wait "$san_pid" || san_rc=$?
san_pid=
stage "waiting for the sanitizer checks"
echo "ipsecov2: the sanitizer checks (scripts/sanitizer-checks.sh, in the background since the gcc build):"
cat "$san_log"
if ((san_rc)); then echo "ipsecov2: FAILED: the sanitizer checks (above), log $san_log"; exit 1; fi
if [[ -n $static_pid ]]; then
  static_rc=0
  wait "$static_pid" || static_rc=$?
  static_pid=
  cat "$build/static-checks.log"
  if ((static_rc)); then echo "static checks: findings (above)"; exit 1; fi
fi
echo "ipsecov2: all stages passed in $SECONDS s; CPU time (user, system) of this script, then of its children:"
times
