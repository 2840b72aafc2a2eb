#!/usr/bin/env bash
# strongswan_baseline_test.sh — smoke tests of the TCP baselines in
# scripts/bench/ (tcp_plain.sh, tcp_strongswan.sh).  Needs root, iperf3,
# tcpdump and strongSwan (scripts/deps.sh).  Each script runs 2 s of iperf3;
# the whole file takes about a minute.  Exit status: number of failed tests
# (0 = all passed).  Every run is bounded by timeout, and every test checks
# that the scripts left no namespace, process or work directory behind.

# The test functions are called indirectly, through run_test.
# shellcheck disable=SC2317
set -uo pipefail

BENCH_DIR="$(cd "$(dirname "$(readlink -f "$0")")/../../scripts/bench" && pwd)"
TMP=$(mktemp -d /tmp/ov2sst$$.XXXXXX)
trap 'rm -rf -- "$TMP"' EXIT
passed=0
failed=0

fail() { echo "    FAIL: $*" >&2; return 1; }

# Runs one test function and counts the result.
run_test() {
  local name=$1
  echo "[ RUN  ] $name" >&2
  if "$name"; then
    echo "[  OK  ] $name" >&2
    passed=$((passed + 1))
  else
    echo "[FAILED] $name (logs: $TMP/$name.*)" >&2
    failed=$((failed + 1))
    OV2_KEEP_TEST_TMP=1
  fi
}

# Runs a bench script (bounded) with stdout/stderr into $TMP/<test>.out/.err;
# sets RC and PID (the script's pid, which names its namespaces ov2b<PID>a/b).
run_script() {
  local test=$1
  shift
  timeout --kill-after=10 150 "$@" >"$TMP/$test.out" 2>"$TMP/$test.err" &
  PID_OF_TIMEOUT=$!
  wait "$PID_OF_TIMEOUT"
  RC=$?
}

# True when nothing of a bench run with script pid P is left: namespaces,
# work directory.  (Processes inside the namespaces die with them; the
# SIGTERM test checks the processes explicitly.)
nothing_left_of() {
  local pid=$1
  if ip netns list | grep -qE "^ov2b${pid}[ab]( |$)"; then fail "namespace ov2b${pid}a/b left behind"; return 1; fi
  if compgen -G "/tmp/ov2b${pid}.*" >/dev/null; then fail "work directory /tmp/ov2b${pid}.* left behind"; return 1; fi
  return 0
}

# The script's own pid is not $! (that is timeout's); read it from the
# namespace names it logged.
script_pid_from_log() { grep -m1 -oE "ov2b[0-9]+a" "$1" | tr -dc "0-9" || echo "unknown-pid"; }

# Checks stdout is exactly one "KEY <positive number with 3 decimals>" line.
one_positive_key_value_line() {
  local file=$1 key=$2
  [[ $(wc -l <"$file") -eq 1 ]] || { fail "stdout has $(wc -l <"$file") lines, want 1: $(head -c 300 "$file")"; return 1; }
  grep -qE "^${key} [0-9]+\.[0-9]{3}$" "$file" || { fail "stdout is not '$key <x.yyy>': $(cat "$file")"; return 1; }
  awk '{ exit !($2 > 0) }' "$file" || { fail "throughput is zero: $(cat "$file")"; return 1; }
}

test_plain_prints_one_positive_gbps_line_and_cleans_up() {
  local t=${FUNCNAME[0]}
  run_script "$t" "$BENCH_DIR/tcp_plain.sh" 2
  [[ $RC -eq 0 ]] || { fail "exit $RC: $(tail -n 5 "$TMP/$t.err")"; return 1; }
  one_positive_key_value_line "$TMP/$t.out" tcp_gbps_plain || return 1
  nothing_left_of "$(script_pid_from_log "$TMP/$t.err")"
}

test_strongswan_prints_one_positive_gbps_line_with_only_esp_on_the_wire() {
  local t=${FUNCNAME[0]}
  run_script "$t" "$BENCH_DIR/tcp_strongswan.sh" 2
  [[ $RC -eq 0 ]] || { fail "exit $RC: $(tail -n 5 "$TMP/$t.err")"; return 1; }
  one_positive_key_value_line "$TMP/$t.out" tcp_gbps_strongswan || return 1
  grep -q 'INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128' "$TMP/$t.err" || { fail "no UDP-encapsulated AES-GCM-128 tunnel CHILD_SA in the log"; return 1; }
  grep -qE 'wire capture .*: [0-9]+ ESP, [0-9]+ IKE, 0 other packets' "$TMP/$t.err" || { fail "wire capture line missing or not all ESP"; return 1; }
  nothing_left_of "$(script_pid_from_log "$TMP/$t.err")"
}

test_strongswan_fails_clearly_when_plain_tcp_leaks_onto_the_wire() {
  local t=${FUNCNAME[0]}
  OV2_BENCH_FAULT=leak run_script "$t" "$BENCH_DIR/tcp_strongswan.sh" 2
  [[ $RC -ne 0 ]] || { fail "exit 0 although plain traffic bypassed the tunnel"; return 1; }
  [[ ! -s "$TMP/$t.out" ]] || { fail "printed a result although the check failed: $(cat "$TMP/$t.out")"; return 1; }
  grep -q 'ERROR: non-ESP packets on the wire' "$TMP/$t.err" || { fail "no clear message: $(tail -n 3 "$TMP/$t.err")"; return 1; }
  grep -qE 'first non-ESP packet: .*10\.1\.0\.1.* > 10\.2\.0\.1' "$TMP/$t.err" || { fail "the leaked packet is not named"; return 1; }
  nothing_left_of "$(script_pid_from_log "$TMP/$t.err")"
}

test_strongswan_fails_clearly_when_ike_authentication_fails() {
  local t=${FUNCNAME[0]}
  OV2_BENCH_FAULT=ike-auth run_script "$t" "$BENCH_DIR/tcp_strongswan.sh" 2
  [[ $RC -ne 0 ]] || { fail "exit 0 although IKE could not authenticate"; return 1; }
  [[ ! -s "$TMP/$t.out" ]] || { fail "printed a result: $(cat "$TMP/$t.out")"; return 1; }
  grep -q 'ERROR: IKE/CHILD_SA not established' "$TMP/$t.err" || { fail "no clear message: $(tail -n 3 "$TMP/$t.err")"; return 1; }
  grep -q 'AUTHENTICATION_FAILED' "$TMP/$t.err" || { fail "the IKE error is not shown"; return 1; }
  nothing_left_of "$(script_pid_from_log "$TMP/$t.err")"
}

test_strongswan_psk_file_is_0600_and_psk_appears_in_no_output_or_log() {
  local t=${FUNCNAME[0]} workdir psk
  OV2_BENCH_KEEP_WORKDIR=1 run_script "$t" "$BENCH_DIR/tcp_strongswan.sh" 1
  [[ $RC -eq 0 ]] || { fail "exit $RC: $(tail -n 5 "$TMP/$t.err")"; return 1; }
  workdir=$(grep -m1 -oE '/tmp/ov2b[0-9]+\.[A-Za-z0-9]+' "$TMP/$t.err")
  [[ -n "$workdir" && -f "$workdir/psk-secrets.conf" ]] || { fail "kept work directory or PSK file not found"; return 1; }
  # shellcheck disable=SC2064 # expand now: remove this run's directory
  trap "rm -rf -- '$TMP' '$workdir'" EXIT
  [[ $(stat -c %a "$workdir/psk-secrets.conf") == 600 ]] || { fail "PSK file mode $(stat -c %a "$workdir/psk-secrets.conf"), want 600"; return 1; }
  psk=$(grep -oE 'secret = 0x[0-9a-f]{64}' "$workdir/psk-secrets.conf" | cut -c12-)
  [[ ${#psk} -eq 64 ]] || { fail "PSK file has no 32-byte hex secret"; return 1; }
  if grep -rqiF "$psk" "$TMP/$t.out" "$TMP/$t.err" "$workdir" --exclude=psk-secrets.conf; then
    fail "the PSK appears in an output or log file"; return 1
  fi
  rm -rf -- "$workdir"
  nothing_left_of "$(script_pid_from_log "$TMP/$t.err")"
}

test_strongswan_sigterm_mid_run_stops_charons_and_removes_namespaces() {
  local t=test_sigterm script_pid ns_pids pid rc deadline
  "$BENCH_DIR/tcp_strongswan.sh" 30 >"$TMP/$t.out" 2>"$TMP/$t.err" &
  script_pid=$!
  deadline=$((SECONDS + 60))
  until grep -q 'for 30 s through strongSwan' "$TMP/$t.err"; do
    if ((SECONDS >= deadline)) || ! kill -0 "$script_pid" 2>/dev/null; then
      fail "measurement did not start: $(tail -n 3 "$TMP/$t.err")"
      kill -KILL "$script_pid" 2>/dev/null
      return 1
    fi
    sleep 0.2
  done
  ns_pids="$(ip netns pids "ov2b${script_pid}a") $(ip netns pids "ov2b${script_pid}b")"
  [[ $(wc -w <<<"$ns_pids") -ge 3 ]] || { fail "expected charon x2 and iperf3 in the namespaces, got pids: $ns_pids"; return 1; }
  kill -TERM "$script_pid"
  deadline=$((SECONDS + 20))
  while kill -0 "$script_pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { fail "script still running 20 s after SIGTERM"; kill -KILL "$script_pid"; return 1; }
    sleep 0.2
  done
  wait "$script_pid"
  rc=$?
  [[ $rc -eq 143 ]] || { fail "exit $rc after SIGTERM, want 143"; return 1; }
  for pid in $ns_pids; do
    [[ ! -e /proc/$pid ]] || { fail "process $pid ($(cat /proc/"$pid"/comm 2>/dev/null)) survived the cleanup"; return 1; }
  done
  [[ ! -s "$TMP/$t.out" ]] || { fail "printed a result although interrupted"; return 1; }
  nothing_left_of "$script_pid"
}

[[ $EUID -eq 0 ]] || { echo "strongswan_baseline_test.sh: needs root (network namespaces)" >&2; exit 1; }
OV2_KEEP_TEST_TMP=""
run_test test_plain_prints_one_positive_gbps_line_and_cleans_up
run_test test_strongswan_prints_one_positive_gbps_line_with_only_esp_on_the_wire
run_test test_strongswan_fails_clearly_when_plain_tcp_leaks_onto_the_wire
run_test test_strongswan_fails_clearly_when_ike_authentication_fails
run_test test_strongswan_psk_file_is_0600_and_psk_appears_in_no_output_or_log
run_test test_strongswan_sigterm_mid_run_stops_charons_and_removes_namespaces
echo "strongswan_baseline_test.sh: $passed passed, $failed failed" >&2
if [[ -n "$OV2_KEEP_TEST_TMP" ]]; then
  trap - EXIT
  echo "strongswan_baseline_test.sh: logs kept in $TMP" >&2
fi
exit "$failed"
