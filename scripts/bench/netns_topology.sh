# shellcheck shell=bash
# netns_topology.sh — sourceable library: two benchmark hosts in network
# namespaces joined by one veth "wire", with cleanup that always runs.
#
#   host A  (ns ${TOPO_NS_A})               host B  (ns ${TOPO_NS_B})
#   lo    10.1.0.1/32  (inner)              lo    10.2.0.1/32  (inner)
#   wire0 192.0.2.1/24 <------ veth ------> wire0 192.0.2.2/24
#
# Usage (from a bash script running as root):
#   source "$(dirname "$0")/netns_topology.sh"
#   topo_init                 # installs the EXIT/INT/TERM/HUP traps, makes $TOPO_WORKDIR
#   topo_watchdog 120         # optional: SIGTERM to this script after 120 s
#   topo_create               # namespaces, veth, addresses
#   topo_add_cleanup "cmd"    # hooks, run in reverse order before the namespaces go
#   topo_in_a cmd... / topo_in_b cmd...
#
# Names carry the pid of the script (prefix "ov2b<pid>"), so parallel runs and
# other engineers' namespaces (other prefixes) are never touched.  Nothing is
# configured in the root namespace.  Logs go to stderr; stdout is left to the
# caller's machine-readable "key value" lines.

TOPO_PREFIX="ov2b$$"
TOPO_NS_A="${TOPO_PREFIX}a"
TOPO_NS_B="${TOPO_PREFIX}b"
TOPO_WIRE_DEV="wire0"
TOPO_WIRE_A="192.0.2.1"
TOPO_WIRE_B="192.0.2.2"
TOPO_INNER_A="10.1.0.1"
TOPO_INNER_B="10.2.0.1"
TOPO_WORKDIR=""
TOPO_CLEANUP_HOOKS=()
TOPO_WATCHDOG_PID=""
TOPO_CLEANED=0
TOPO_FOREGROUND_PID=""
# A copy of the caller's stderr, so messages survive the output redirections
# of topo_wait_for's polled commands.
exec {TOPO_LOG_FD}>&2

# Logs one line to stderr, prefixed with the calling script's name.
topo_log() { printf '%s: %s\n' "${0##*/}" "$*" >&"$TOPO_LOG_FD"; }

# Logs an error and exits 1 (the EXIT trap cleans up).
topo_die() { printf '%s: ERROR: %s\n' "${0##*/}" "$*" >&"$TOPO_LOG_FD"; exit 1; }

# Runs a command inside host A's / host B's network namespace.  nsenter (not
# "ip netns exec") keeps the caller's mount namespace, so /sys and bpffs stay
# visible and no /etc/netns bind mounts happen.
topo_in_a() { nsenter --net="/run/netns/${TOPO_NS_A}" -- "$@"; }
topo_in_b() { nsenter --net="/run/netns/${TOPO_NS_B}" -- "$@"; }

# Registers a shell command to run at cleanup (reverse registration order,
# before the namespaces are deleted).  Failures of hooks are ignored.
topo_add_cleanup() { TOPO_CLEANUP_HOOKS+=("$1"); }

# Sends SIGTERM, then SIGKILL after up to 5 s, to one process we started.
topo_stop_pid() {
  local pid=$1 i
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# Deletes one namespace of ours after stopping every process still inside it
# (all of them were started by this script: the namespace is private to it).
topo__delete_ns() {
  local ns=$1 pid
  [[ -e "/run/netns/$ns" ]] || return 0
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    [[ "$pid" == "$$" ]] && continue
    topo_stop_pid "$pid"
  done
  ip netns delete "$ns" 2>/dev/null || topo_log "warning: could not delete namespace $ns"
}

# Deletes namespaces "ov2b<pid>a|b" left behind by earlier runs whose script
# process no longer exists (e.g. killed with SIGKILL, which no trap can catch).
topo_reap_stale() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ "$ns" =~ ^ov2b([0-9]+)[ab]$ ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ "$pid" == "$$" ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    topo_log "removing stale namespace $ns (its script, pid $pid, is gone)"
    topo__delete_ns "$ns"
  done
}

# The cleanup: hooks (reverse order), namespaces, watchdog, work directory.
# Idempotent; runs from the EXIT trap on every exit path.
topo_cleanup() {
  local rc=$? i
  ((TOPO_CLEANED)) && return "$rc"
  TOPO_CLEANED=1
  # A signal now must not cut the cleanup short (it is bounded: 5 s per
  # process, then SIGKILL).  A second SIGTERM does come: PR_SET_PDEATHSIG
  # is sent again at each reparenting, so a SIGKILLed multi-threaded
  # ipsecov2-bench can send it once per exiting thread, and with the default
  # action restored here the second one killed this shell between stopping
  # the daemons, leaving one running and both namespaces.
  trap 'topo_log "signal during the cleanup: finishing it first"' INT TERM HUP
  topo_stop_pid "$TOPO_FOREGROUND_PID"
  for ((i = ${#TOPO_CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${TOPO_CLEANUP_HOOKS[$i]}" >/dev/null 2>&1 || true
  done
  topo__delete_ns "$TOPO_NS_A"
  topo__delete_ns "$TOPO_NS_B"
  if [[ -n "$TOPO_WATCHDOG_PID" ]]; then
    kill -TERM "$TOPO_WATCHDOG_PID" 2>/dev/null || true
    wait "$TOPO_WATCHDOG_PID" 2>/dev/null || true
  fi
  if [[ -n "$TOPO_WORKDIR" && -d "$TOPO_WORKDIR" ]]; then
    if [[ -n "${OV2_BENCH_KEEP_WORKDIR:-}" ]]; then
      topo_log "keeping work directory $TOPO_WORKDIR (OV2_BENCH_KEEP_WORKDIR set)"
    else
      rm -rf -- "$TOPO_WORKDIR"
    fi
  fi
  return "$rc"
}

# Checks root and tools, installs the traps, creates the private work
# directory ($TOPO_WORKDIR, mode 0700) and reaps stale namespaces of ours.
topo_init() {
  [[ $EUID -eq 0 ]] || topo_die "must run as root (creates network namespaces)"
  local tool
  for tool in ip nsenter timeout iperf3 python3 ping ss sysctl; do
    command -v "$tool" >/dev/null || topo_die "missing tool '$tool': run scripts/deps.sh"
  done
  trap topo_cleanup EXIT
  trap 'topo_log "interrupted (SIGINT)"; exit 130' INT
  trap 'topo_log "terminated (SIGTERM, watchdog or caller)"; exit 143' TERM
  trap 'exit 129' HUP
  TOPO_WORKDIR=$(mktemp -d "/tmp/${TOPO_PREFIX}.XXXXXX") || topo_die "mktemp failed"
  chmod 0700 "$TOPO_WORKDIR"
  topo_reap_stale
}

# Bounds the whole script: SIGTERM to it after SECONDS (its TERM trap exits
# and the EXIT trap cleans up).  The watchdog is stopped at cleanup.
topo_watchdog() {
  local seconds=$1 parent=$$
  # The sleep is killed with the watchdog and nothing holds the caller's
  # stdout: a reader waiting for EOF (ipsecov2-bench) must not wait for it.
  (
    sleep_pid=""
    trap 'kill -TERM $sleep_pid 2>/dev/null; exit 0' TERM
    sleep "$seconds" &
    sleep_pid=$!
    wait $sleep_pid
    printf '%s: ERROR: watchdog: still running after %s s, terminating\n' "${0##*/}" "$seconds" >&2
    kill -TERM "$parent" 2>/dev/null
  ) >/dev/null &
  TOPO_WATCHDOG_PID=$!
}

# Creates the two hosts: namespaces, the veth wire (created directly inside
# the namespaces, never in the root one), wire and inner addresses, and
# rp_filter off (tunnelled packets arrive on a TUN device, not on the wire).
topo_create() {
  local ns
  ip netns add "$TOPO_NS_A" || topo_die "cannot create namespace $TOPO_NS_A"
  ip netns add "$TOPO_NS_B" || topo_die "cannot create namespace $TOPO_NS_B"
  ip -n "$TOPO_NS_A" link add "$TOPO_WIRE_DEV" type veth peer name "$TOPO_WIRE_DEV" netns "$TOPO_NS_B" ||
    topo_die "cannot create the veth wire"
  ip -n "$TOPO_NS_A" addr add "${TOPO_WIRE_A}/24" dev "$TOPO_WIRE_DEV"
  ip -n "$TOPO_NS_B" addr add "${TOPO_WIRE_B}/24" dev "$TOPO_WIRE_DEV"
  ip -n "$TOPO_NS_A" addr add "${TOPO_INNER_A}/32" dev lo
  ip -n "$TOPO_NS_B" addr add "${TOPO_INNER_B}/32" dev lo
  for ns in "$TOPO_NS_A" "$TOPO_NS_B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$TOPO_WIRE_DEV" up
    nsenter --net="/run/netns/$ns" -- sysctl -q -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  done
  topo_wait_for "wire reachable (ping ${TOPO_WIRE_B})" 10 \
    topo_in_a ping -c 1 -W 1 -q "$TOPO_WIRE_B"
  topo_log "hosts up: $TOPO_NS_A (${TOPO_WIRE_A}, ${TOPO_INNER_A}) <-> $TOPO_NS_B (${TOPO_WIRE_B}, ${TOPO_INNER_B})"
}

# Polls a command (quietly) every 0.2 s until it succeeds; dies with a clear
# message after TIMEOUT seconds.  Usage: topo_wait_for "what" TIMEOUT cmd...
topo_wait_for() {
  local what=$1 timeout_s=$2
  shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || topo_die "timed out after ${timeout_s} s waiting for: $what"
    sleep 0.2
  done
}

# Starts an iperf3 server on host B bound to the inner address, registers it
# for cleanup and waits until it listens.  Sets TOPO_IPERF_SERVER_PID.
topo_start_iperf_server() {
  local port=${1:-5201}
  # nsenter directly, not topo_in_b: a backgrounded function would be a
  # subshell and $! its pid, not iperf3's.
  nsenter --net="/run/netns/${TOPO_NS_B}" -- \
    iperf3 -s -B "$TOPO_INNER_B" -p "$port" >"$TOPO_WORKDIR/iperf3-server.log" 2>&1 </dev/null &
  TOPO_IPERF_SERVER_PID=$!
  topo_add_cleanup "topo_stop_pid $TOPO_IPERF_SERVER_PID"
  topo_wait_for "iperf3 server listening on ${TOPO_INNER_B}:${port}" 10 \
    topo__listening_b "$port"
}
topo__listening_b() { topo_in_b ss -Hltn "sport = :$1" | grep -q .; }

# Runs a long command in the background and waits for it, returning its exit
# status.  Bash runs a trap only after the foreground command ends, but it
# interrupts "wait": so SIGTERM/SIGINT (and the watchdog) act at once, and
# the cleanup stops the command.
topo_run_interruptible() {
  local rc=0
  "$@" &
  TOPO_FOREGROUND_PID=$!
  wait "$TOPO_FOREGROUND_PID" || rc=$?
  TOPO_FOREGROUND_PID=""
  return "$rc"
}

# Runs one iperf3 TCP test from host A's inner address to host B's for
# SECONDS, bounded by timeout; writes iperf3's JSON to FILE.
topo_run_iperf_client() {
  local seconds=$1 json=$2 port=${3:-5201}
  topo_run_interruptible timeout --kill-after=5 $((seconds + 20)) \
    nsenter --net="/run/netns/${TOPO_NS_A}" -- \
    iperf3 -c "$TOPO_INNER_B" -B "$TOPO_INNER_A" -p "$port" -t "$seconds" -J --connect-timeout 5000 >"$json"
}

# Prints the receiver's throughput in Gbit/s (3 decimals) from iperf3 -J
# output; fails if the JSON reports an error or no received bytes.
topo_gbps_from_iperf_json() {
  python3 - "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
except Exception as e:
    sys.exit(f"iperf3 produced no valid JSON: {e}")
if doc.get("error"):
    sys.exit(f"iperf3 error: {doc['error']}")
received = doc.get("end", {}).get("sum_received", {})
bps = received.get("bits_per_second", 0.0)
if not bps or received.get("bytes", 0) == 0:
    sys.exit("iperf3 reports no received bytes")
print(f"{bps / 1e9:.3f}")
EOF
}

# CPU time (user+system clock ticks) consumed so far by one process, all its
# threads included; 0 if it is gone.
topo_cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# One line "tid ticks" per thread of a process (user+system clock ticks).
topo_thread_ticks() {
  local stat
  for stat in /proc/"$1"/task/*/stat; do
    awk '{ print $1, $14 + $15 }' "$stat" 2>/dev/null
  done
}

# From two topo_thread_ticks snapshots (files) and the elapsed ticks, prints
# "N threads busy, busiest X% of one core" for a process.
topo_busiest_thread() {
  awk -v elapsed="$3" '
    NR == FNR { before[$1] = $2; next }
    { d = $2 - before[$1]; if (d > 0) busy++; if (d > max) max = d }
    END { printf "%d threads busy, busiest %d%% of one core", busy, (elapsed > 0 ? max * 100 / elapsed : 0) }' "$1" "$2"
}

# Busy and total ticks of the whole machine (all CPUs) from /proc/stat.
topo_machine_ticks() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6; print busy, total }' /proc/stat
}
