#!/usr/bin/env bash
# tcp_strongswan.sh [SECONDS] — baseline: iperf3 TCP between the inner
# addresses of two namespace hosts (10.1.0.1 -> 10.2.0.1) through strongSwan
# with kernel-libipsec (user-space ESP through a TUN device; this kernel has
# no ESP).  IKEv2 with a random PSK, CHILD_SA ESP AES-GCM-128 (aes128gcm16),
# tunnel mode, UDP-encapsulated (kernel-libipsec forces it).
#
# One charon per namespace, each with its own strongswan.conf
# (STRONGSWAN_CONF), its own vici socket and its own pid file: charon's pid
# file path is compiled in (/var/run/charon.pid), so each charon runs in a
# private mount namespace with the host's work directory bind-mounted over
# /run.  A system-wide charon, if any, is never touched.
#
# Before measuring, checks that the traffic really is ESP: captures packets
# on the wire during a ping and a 1 s iperf3 run and requires every one to be
# ESP (UDP-encapsulated) or IKE, never plain TCP/ICMP.
#
# stdout: one line "tcp_gbps_strongswan <Gbit/s>" (iperf3 receiver
# throughput); stderr: human log (CPU per process included).  Exit 0 on
# success, non-zero with a message otherwise.  Needs root.
# OV2_BENCH_KEEP_WORKDIR=1 keeps the work directory (configs, charon logs,
# capture) for inspection; it holds the PSK file (mode 0600).
# OV2_BENCH_FAULT (test hook, tests/e2e/strongswan_baseline_test.sh) breaks
# the setup on purpose to prove the checks fail: "ike-auth" (host B expects
# another peer identity, so IKE authentication fails) or "leak" (host A routes
# the peer's inner address around the tunnel, so plain TCP is on the wire).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=netns_topology.sh
source "$(dirname "$(readlink -f "$0")")/netns_topology.sh"

CHARON_BIN=/usr/lib/ipsec/charon
KERNEL_LIBIPSEC_PLUGIN=/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
OPENSSL_PLUGIN=/usr/lib/ipsec/plugins/libstrongswan-openssl.so
IPERF_PORT=5201
CHILD_NAME=bench
# What must be on the wire before we believe the tunnel carries the traffic.
MIN_ESP_PACKETS=20
CAPTURE_PACKETS=60

duration=${1:-10}
fault=${OV2_BENCH_FAULT:-}
[[ -z "$fault" || "$fault" == ike-auth || "$fault" == leak ]] ||
  topo_die "OV2_BENCH_FAULT must be empty, 'ike-auth' or 'leak' (got '$fault')"
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || topo_die "usage: ${0##*/} [SECONDS]  (SECONDS a positive integer, got '$duration')"

[[ -x "$CHARON_BIN" ]] || topo_die "$CHARON_BIN missing: install strongswan-charon (scripts/bench/deps.sh)"
[[ -f "$KERNEL_LIBIPSEC_PLUGIN" ]] || topo_die "kernel-libipsec plugin missing: install libcharon-extra-plugins (scripts/bench/deps.sh)"
[[ -f "$OPENSSL_PLUGIN" ]] || topo_die "openssl plugin (AES-GCM) missing: install libstrongswan-standard-plugins (scripts/bench/deps.sh)"
command -v swanctl >/dev/null || topo_die "swanctl missing: install strongswan-swanctl (scripts/bench/deps.sh)"
command -v tcpdump >/dev/null || topo_die "tcpdump missing: run scripts/deps.sh"
[[ -c /dev/net/tun ]] || topo_die "/dev/net/tun missing: kernel-libipsec needs a TUN device"

topo_init
topo_watchdog $((duration + 150))
topo_create

# ---------------------------------------------------------------- configs
psk_file="$TOPO_WORKDIR/psk-secrets.conf"

# Writes the shared swanctl secrets section with a fresh random 32-byte PSK
# into a 0600 file.  The PSK goes from /dev/urandom through a pipe into the
# file: never on a command line, in a variable or in a log.
write_psk_file() {
  (
    umask 077
    {
      printf 'secrets {\n  ike-bench {\n    id-a = bench-a\n    id-b = bench-b\n    secret = 0x'
      od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
      printf '\n  }\n}\n'
    } >"$psk_file"
  )
  chmod 0600 "$psk_file"
}

# Writes HOST_DIR/strongswan.conf for one charon: explicit plugin list
# (openssl does AES-GCM, kernel-libipsec the user-space ESP), own vici
# socket, file log, routes in table 220.
write_strongswan_conf() {
  local dir=$1
  cat >"$dir/strongswan.conf" <<EOF
charon {
  load = random nonce openssl kdf pem pkcs1 pubkey x509 kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  routing_table = 220
  routing_table_prio = 220
  retransmit_tries = 3
  retransmit_timeout = 1.0
  plugins {
    vici {
      socket = unix://$dir/charon.vici
    }
  }
  filelog {
    charon {
      path = $dir/charon.log
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      ike = 1
      cfg = 1
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
swanctl {
  load = random nonce openssl pem pkcs1 pubkey x509
}
EOF
}

# Writes HOST_DIR/swanctl.conf: one IKEv2 connection to the peer with one
# tunnel-mode CHILD_SA between the two inner addresses.
write_swanctl_conf() {
  local dir=$1 local_wire=$2 remote_wire=$3 local_id=$4 remote_id=$5 local_ts=$6 remote_ts=$7
  cat >"$dir/swanctl.conf" <<EOF
connections {
  bench {
    version = 2
    local_addrs = $local_wire
    remote_addrs = $remote_wire
    proposals = aes128gcm16-prfsha256-ecp256
    encap = yes
    dpd_delay = 0
    local {
      auth = psk
      id = $local_id
    }
    remote {
      auth = psk
      id = $remote_id
    }
    children {
      $CHILD_NAME {
        mode = tunnel
        local_ts = $local_ts/32
        remote_ts = $remote_ts/32
        esp_proposals = aes128gcm16
        start_action = none
      }
    }
  }
}
include $psk_file
EOF
}

dir_a="$TOPO_WORKDIR/a"
dir_b="$TOPO_WORKDIR/b"
mkdir -p "$dir_a/run" "$dir_b/run"
write_psk_file
write_strongswan_conf "$dir_a"
write_strongswan_conf "$dir_b"
write_swanctl_conf "$dir_a" "$TOPO_WIRE_A" "$TOPO_WIRE_B" bench-a bench-b "$TOPO_INNER_A" "$TOPO_INNER_B"
peer_id_expected_by_b=bench-a
[[ "$fault" == ike-auth ]] && peer_id_expected_by_b=bench-not-a
write_swanctl_conf "$dir_b" "$TOPO_WIRE_B" "$TOPO_WIRE_A" bench-b "$peer_id_expected_by_b" "$TOPO_INNER_B" "$TOPO_INNER_A"

# Runs swanctl against one host's charon (its own strongswan.conf and vici
# socket), bounded in time.
swanctl_on() {
  local dir=$1
  shift
  STRONGSWAN_CONF="$dir/strongswan.conf" timeout --kill-after=5 30 \
    swanctl "$@" --uri "unix://$dir/charon.vici"
}

# -------------------------------------------------------------- charons
# Starts charon in namespace NS with DIR's config, in a private mount
# namespace where DIR/run is /run (so its pid file is DIR/run/charon.pid).
# Sets the variable named by the third argument to charon's pid.
start_charon() {
  local ns=$1 dir=$2 pid_var=$3 pid
  # nsenter and unshare exec (no fork) and sh execs charon, so $! is charon.
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner sh
  STRONGSWAN_CONF="$dir/strongswan.conf" \
    nsenter --net="/run/netns/$ns" -- \
    unshare --mount --propagation private -- \
    /bin/sh -c 'mount --bind "$1" /run && exec "$2"' charon-in-netns "$dir/run" "$CHARON_BIN" \
    >"$dir/charon.stdout" 2>&1 </dev/null &
  pid=$!
  topo_add_cleanup "topo_stop_pid $pid"
  printf -v "$pid_var" '%s' "$pid"
}

charon_ready() {
  local dir=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || topo_die "charon ($dir) exited during start-up: $(tail -n 5 "$dir/charon.log" "$dir/charon.stdout" 2>/dev/null)"
  [[ -S "$dir/charon.vici" ]] && swanctl_on "$dir" --stats >/dev/null 2>&1
}

charon_pid_a="" charon_pid_b=""
start_charon "$TOPO_NS_A" "$dir_a" charon_pid_a
start_charon "$TOPO_NS_B" "$dir_b" charon_pid_b
topo_wait_for "charon in $TOPO_NS_A answering on its vici socket" 15 charon_ready "$dir_a" "$charon_pid_a"
topo_wait_for "charon in $TOPO_NS_B answering on its vici socket" 15 charon_ready "$dir_b" "$charon_pid_b"
[[ "$(cat "/proc/$charon_pid_a/comm")" == charon && "$(cat "/proc/$charon_pid_b/comm")" == charon ]] ||
  topo_die "the started processes are not charon"
topo_log "charon up: pid $charon_pid_a in $TOPO_NS_A, pid $charon_pid_b in $TOPO_NS_B; $(grep -m1 -o 'loaded plugins: .*' "$dir_a/charon.log" || true)"
grep -q 'kernel-libipsec' "$dir_a/charon.log" || topo_die "charon did not load kernel-libipsec (see $dir_a/charon.log)"

for dir in "$dir_a" "$dir_b"; do
  swanctl_on "$dir" --load-all --noprompt --file "$dir/swanctl.conf" >"$dir/swanctl-load.log" 2>&1 ||
    topo_die "swanctl --load-all failed for $dir: $(grep -v "failed to load" "$dir/swanctl-load.log" | tail -n 5)"
done

# ----------------------------------------------------------- IKE + CHILD
topo_log "initiating IKEv2 (PSK) and CHILD_SA '$CHILD_NAME' (ESP aes128gcm16, tunnel) from $TOPO_NS_A"
topo_run_interruptible swanctl_on "$dir_a" --initiate --child "$CHILD_NAME" --timeout 20 >"$dir_a/swanctl-initiate.log" 2>&1 ||
  topo_die "IKE/CHILD_SA not established: $(grep -v "failed to load" "$dir_a/swanctl-initiate.log" | tail -n 8)"

# True when HOST_DIR's charon lists the CHILD_SA as INSTALLED with ESP
# AES-GCM-128 and the route to REMOTE_TS via the TUN device is in table 220.
child_sa_installed() {
  local dir=$1 ns=$2 remote_ts=$3 sas
  sas=$(swanctl_on "$dir" --list-sas 2>/dev/null) || return 1
  grep -q 'ESTABLISHED' <<<"$sas" || return 1
  grep -E "${CHILD_NAME}: #[0-9]+, reqid [0-9]+, INSTALLED, TUNNEL" <<<"$sas" | grep -q 'ESP:AES_GCM_16-128' || return 1
  ip -n "$ns" route show table 220 | grep -q "^${remote_ts} .*dev ipsec"
}
topo_wait_for "CHILD_SA installed in $TOPO_NS_A" 15 child_sa_installed "$dir_a" "$TOPO_NS_A" "$TOPO_INNER_B"
topo_wait_for "CHILD_SA installed in $TOPO_NS_B" 15 child_sa_installed "$dir_b" "$TOPO_NS_B" "$TOPO_INNER_A"
topo_log "CHILD_SA installed: $(swanctl_on "$dir_a" --list-sas 2>/dev/null | grep -m1 -E "${CHILD_NAME}: #[0-9]+, reqid" | sed 's/^ *//')"
topo_log "route in $TOPO_NS_A: $(ip -n "$TOPO_NS_A" route show table 220 | head -n1)"
# No route for the inner addresses exists outside table 220: packets to the
# peer's inner address can only leave through the TUN device.

if [[ "$fault" == leak ]]; then
  topo_log "FAULT INJECTED (OV2_BENCH_FAULT=leak): $TOPO_NS_A routes ${TOPO_INNER_B} around the tunnel"
  ip -n "$TOPO_NS_A" route add "${TOPO_INNER_B}/32" via "$TOPO_WIRE_B" dev "$TOPO_WIRE_DEV" src "$TOPO_INNER_A" table 100
  ip -n "$TOPO_NS_A" rule add pref 100 to "${TOPO_INNER_B}/32" lookup 100
fi
topo_wait_for "ping ${TOPO_INNER_B} through the tunnel" 10 \
  topo_in_a ping -c 1 -W 1 -q -I "$TOPO_INNER_A" "$TOPO_INNER_B"
topo_start_iperf_server "$IPERF_PORT"

# ------------------------------------------------------ ESP on the wire?
capture="$TOPO_WORKDIR/wire.pcap"
timeout --kill-after=2 20 nsenter --net="/run/netns/${TOPO_NS_A}" -- tcpdump -i "$TOPO_WIRE_DEV" -nn -Z root -U -c "$CAPTURE_PACKETS" -w "$capture" ip \
  >"$TOPO_WORKDIR/tcpdump.log" 2>&1 &
tcpdump_pid=$!
topo_add_cleanup "topo_stop_pid $tcpdump_pid"
topo_wait_for "tcpdump listening on $TOPO_WIRE_DEV" 10 grep -q 'listening on' "$TOPO_WORKDIR/tcpdump.log"
topo_in_a ping -c 3 -i 0.2 -W 1 -q -I "$TOPO_INNER_A" "$TOPO_INNER_B" >/dev/null 2>&1 || true
topo_run_iperf_client 1 "$TOPO_WORKDIR/iperf3-check.json" "$IPERF_PORT" ||
  topo_die "the 1 s iperf3 check through the tunnel failed: $(head -c 400 "$TOPO_WORKDIR/iperf3-check.json")"
wait "$tcpdump_pid" 2>/dev/null || true
# Classifies every captured packet: ESP (raw or UDP-encapsulated), IKE
# (including NAT keep-alives), or anything else (a leak of plain traffic).
read -r esp_packets ike_packets other_packets < <(
  tcpdump -nn -r "$capture" 2>/dev/null | awk '
    /ESP\(spi=0x/ { esp++; next }
    /isakmp|NONESP-encap/ { ike++; next }
    { other++; if (!first) first = $0 }
    END { print esp + 0, ike + 0, other + 0; if (first) print "tcp_strongswan.sh: first non-ESP packet: " first > "/dev/stderr" }'
)
topo_log "wire capture ($capture): $esp_packets ESP, $ike_packets IKE, $other_packets other packets; sample: $(tcpdump -nn -r "$capture" -c 1 2>/dev/null 'udp port 4500' | cut -c1-120)"
((other_packets == 0)) || topo_die "non-ESP packets on the wire: the traffic is not (only) going through IPsec"
((esp_packets >= MIN_ESP_PACKETS)) || topo_die "only $esp_packets ESP packets on the wire (want >= $MIN_ESP_PACKETS): traffic is not going through ESP"

# ------------------------------------------------------------ measure
clk_tck=$(getconf CLK_TCK)
iperf_server_pid=$TOPO_IPERF_SERVER_PID
cpu0_a=$(topo_cpu_ticks "$charon_pid_a"); cpu0_b=$(topo_cpu_ticks "$charon_pid_b"); cpu0_s=$(topo_cpu_ticks "$iperf_server_pid")
topo_thread_ticks "$charon_pid_a" >"$TOPO_WORKDIR/threads-a.0"; topo_thread_ticks "$charon_pid_b" >"$TOPO_WORKDIR/threads-b.0"
read -r busy0 total0 < <(topo_machine_ticks)
start_ns=$(date +%s%N)
json="$TOPO_WORKDIR/iperf3-client.json"
topo_log "iperf3 TCP ${TOPO_INNER_A} -> ${TOPO_INNER_B} for ${duration} s through strongSwan kernel-libipsec"
topo_run_iperf_client "$duration" "$json" "$IPERF_PORT" || topo_die "iperf3 client failed: $(head -c 400 "$json" 2>/dev/null)"
elapsed_ticks=$((($(date +%s%N) - start_ns) * clk_tck / 1000000000))
read -r busy1 total1 < <(topo_machine_ticks)
topo_thread_ticks "$charon_pid_a" >"$TOPO_WORKDIR/threads-a.1"; topo_thread_ticks "$charon_pid_b" >"$TOPO_WORKDIR/threads-b.1"
cpu1_a=$(topo_cpu_ticks "$charon_pid_a"); cpu1_b=$(topo_cpu_ticks "$charon_pid_b"); cpu1_s=$(topo_cpu_ticks "$iperf_server_pid")
gbps=$(topo_gbps_from_iperf_json "$json") || topo_die "cannot read the iperf3 result"
cpu_pct() { echo $((($2 - $1) * 100 / (elapsed_ticks > 0 ? elapsed_ticks : 1))); }
client_cpu=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["cpu_utilization_percent"]["host_total"]))' "$json" 2>/dev/null || echo "?")
topo_log "CPU during the run (% of one core): charon A (sender: encrypts data) $(cpu_pct "$cpu0_a" "$cpu1_a")%, charon B (receiver: decrypts data) $(cpu_pct "$cpu0_b" "$cpu1_b")%, iperf3 server $(cpu_pct "$cpu0_s" "$cpu1_s")%, iperf3 client ${client_cpu}%; machine busy $(((busy1 - busy0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1)))% of $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
topo_log "charon threads: A $(topo_busiest_thread "$TOPO_WORKDIR/threads-a.0" "$TOPO_WORKDIR/threads-a.1" "$elapsed_ticks"); B $(topo_busiest_thread "$TOPO_WORKDIR/threads-b.0" "$TOPO_WORKDIR/threads-b.1" "$elapsed_ticks")"
topo_log "SA after the run: $(swanctl_on "$dir_a" --list-sas 2>/dev/null | grep -E 'in  |out ' | sed 's/^ *//' | tr '\n' ';')"
echo "tcp_gbps_strongswan $gbps"
