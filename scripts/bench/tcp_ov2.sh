#!/usr/bin/env bash
# tcp_ov2.sh [SECONDS] — iperf3 TCP between the inner addresses of two
# namespace hosts (10.1.0.1 -> 10.2.0.1) through two real ipsecov2d daemons
# (--engine auto --wire wire0) and an AES-GCM-128 tunnel installed with
# ipsecov2ctl, as scripts/demo.sh does.  Before measuring it proves the
# traffic is ESP: after a few pings, the per-SA packet counters of all four
# SAs (`ipsecov2ctl --json stats`) must have grown; after the run, the
# outbound SA of host A must have carried at least the bytes iperf3 received.
# stdout: one line "tcp_gbps_ov2 <Gbit/s>" (iperf3 receiver throughput);
# stderr: human log.  Binaries: ${BUILD_DIR:-build}/ctl.  Needs root.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=netns_topology.sh
source "$(dirname "$(readlink -f "$0")")/netns_topology.sh"

duration=${1:-10}
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || topo_die "usage: ${0##*/} [SECONDS]  (SECONDS a positive integer, got '$duration')"

repo_root=$(readlink -f "$(dirname "$(readlink -f "$0")")/../..")
build_dir=${BUILD_DIR:-build}
[[ "$build_dir" = /* ]] || build_dir="$repo_root/$build_dir"
bin="$build_dir/ctl"
for b in ipsecov2d ipsecov2ctl; do
  [[ -x "$bin/$b" ]] || topo_die "missing $bin/$b: build it (cmake --build $build_dir --target $b) or set BUILD_DIR"
done

topo_init
topo_watchdog $((duration + 90))
topo_create

sock_a="$TOPO_WORKDIR/a.sock"
sock_b="$TOPO_WORKDIR/b.sock"
ctl_a() { topo_in_a "$bin/ipsecov2ctl" --socket "$sock_a" "$@"; }
ctl_b() { topo_in_b "$bin/ipsecov2ctl" --socket "$sock_b" "$@"; }

# Daemons: nsenter directly so that $! is the daemon's pid.
nsenter --net="/run/netns/${TOPO_NS_A}" -- "$bin/ipsecov2d" --engine auto --wire "$TOPO_WIRE_DEV" --socket "$sock_a" \
  >"$TOPO_WORKDIR/a.log" 2>&1 </dev/null &
daemon_a=$!
topo_add_cleanup "topo_stop_pid $daemon_a"
nsenter --net="/run/netns/${TOPO_NS_B}" -- "$bin/ipsecov2d" --engine auto --wire "$TOPO_WIRE_DEV" --socket "$sock_b" \
  >"$TOPO_WORKDIR/b.log" 2>&1 </dev/null &
daemon_b=$!
topo_add_cleanup "topo_stop_pid $daemon_b"
for s in "$sock_a" "$sock_b"; do
  for _ in $(seq 200); do [[ -S "$s" ]] && break; sleep 0.05; done
  [[ -S "$s" ]] || topo_die "ipsecov2d did not create $s: $(tail -n 5 "$TOPO_WORKDIR"/[ab].log | tr '\n' ' ')"
done
kill -0 "$daemon_a" 2>/dev/null && kill -0 "$daemon_b" 2>/dev/null || topo_die "an ipsecov2d exited early"

# Keys (16-byte key + 4-byte salt) in files of the private work dir only.
(umask 077
 od -An -N20 -tx1 /dev/urandom | tr -d ' \n' >"$TOPO_WORKDIR/k_ab"
 od -An -N20 -tx1 /dev/urandom | tr -d ' \n' >"$TOPO_WORKDIR/k_ba")
out_a=$(ctl_a sa add --dir out --mode tunnel --src "$TOPO_WIRE_A" --dst "$TOPO_WIRE_B" --spi 0x1001 --aead aes-gcm-128 --key-file "$TOPO_WORKDIR/k_ab")
in_a=$(ctl_a sa add --dir in --mode tunnel --src "$TOPO_WIRE_B" --dst "$TOPO_WIRE_A" --spi 0x2001 --aead aes-gcm-128 --key-file "$TOPO_WORKDIR/k_ba")
out_b=$(ctl_b sa add --dir out --mode tunnel --src "$TOPO_WIRE_B" --dst "$TOPO_WIRE_A" --spi 0x2001 --aead aes-gcm-128 --key-file "$TOPO_WORKDIR/k_ba")
in_b=$(ctl_b sa add --dir in --mode tunnel --src "$TOPO_WIRE_A" --dst "$TOPO_WIRE_B" --spi 0x1001 --aead aes-gcm-128 --key-file "$TOPO_WORKDIR/k_ab")
ctl_a policy add --dir out --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa "$out_a" >/dev/null
ctl_a policy add --dir in --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa "$in_a" >/dev/null
ctl_b policy add --dir out --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa "$out_b" >/dev/null
ctl_b policy add --dir in --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa "$in_b" >/dev/null
# Routes into the offload device: wire MTU minus the worst-case ESP overhead.
wire_mtu=$(topo_in_a cat "/sys/class/net/$TOPO_WIRE_DEV/mtu" 2>/dev/null || ip -n "$TOPO_NS_A" -o link show dev "$TOPO_WIRE_DEV" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
route_mtu=$((wire_mtu - 105))
ip -n "$TOPO_NS_A" route add 10.2.0.0/24 dev ov2 src "$TOPO_INNER_A" mtu "$route_mtu"
ip -n "$TOPO_NS_B" route add 10.1.0.0/24 dev ov2 src "$TOPO_INNER_B" mtu "$route_mtu"
topo_log "tunnel: A out $out_a in $in_a, B out $out_b in $in_b (aes-gcm-128), route mtu $route_mtu"

# Prints the packets (or bytes, FIELD) counter of SA HANDLE from a stats JSON file.
sa_counter() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for sa in doc.get("sas", []):
    if sa.get("handle") == sys.argv[2]:
        print(int(sa.get(sys.argv[3], 0))); break
else:
    print(0)
PY
}
snapshot() {  # snapshot NAME: stats JSON of both daemons into the work dir
  ctl_a --json stats >"$TOPO_WORKDIR/$1-a.json"
  ctl_b --json stats >"$TOPO_WORKDIR/$1-b.json"
}

snapshot before
topo_wait_for "ping ${TOPO_INNER_B} from ${TOPO_INNER_A} through the tunnel" 15 \
  topo_in_a ping -c 1 -W 1 -q -I "$TOPO_INNER_A" "$TOPO_INNER_B"
topo_in_a ping -c 5 -i 0.2 -W 2 -q -I "$TOPO_INNER_A" "$TOPO_INNER_B" >/dev/null || topo_die "pings through the tunnel were lost"
snapshot pinged
for spec in "a $out_a" "a $in_a" "b $out_b" "b $in_b"; do
  read -r side handle <<<"$spec"
  p0=$(sa_counter "$TOPO_WORKDIR/before-$side.json" "$handle" packets)
  p1=$(sa_counter "$TOPO_WORKDIR/pinged-$side.json" "$handle" packets)
  ((p1 >= p0 + 5)) || topo_die "SA $handle on host $side counted $p0 -> $p1 packets for 5 pings: the traffic is not going through ESP"
  topo_log "ESP check: SA $handle on host $side: packets $p0 -> $p1"
done

topo_start_iperf_server 5201
json="$TOPO_WORKDIR/iperf3-client.json"
read -r busy0 total0 < <(topo_machine_ticks)
topo_log "iperf3 TCP ${TOPO_INNER_A} -> ${TOPO_INNER_B} for ${duration} s through ipsecov2 (AES-GCM-128 tunnel)"
topo_run_iperf_client "$duration" "$json" || topo_die "iperf3 client failed (exit $?): $(head -c 400 "$json" 2>/dev/null)"
read -r busy1 total1 < <(topo_machine_ticks)
gbps=$(topo_gbps_from_iperf_json "$json") || topo_die "cannot read the iperf3 result"
snapshot after
received=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$json")
b0=$(sa_counter "$TOPO_WORKDIR/pinged-a.json" "$out_a" bytes)
b1=$(sa_counter "$TOPO_WORKDIR/after-a.json" "$out_a" bytes)
((b1 - b0 >= received)) || topo_die "host A's outbound SA carried $((b1 - b0)) bytes but iperf3 received $received: traffic bypassed ESP"
topo_log "ESP check: host A outbound SA carried $((b1 - b0)) bytes for $received iperf3 payload bytes"
topo_log "machine CPU busy during the run: $(((busy1 - busy0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1)))% of $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tcp_gbps_ov2 $gbps"
