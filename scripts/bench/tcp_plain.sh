#!/usr/bin/env bash
# tcp_plain.sh [SECONDS] — baseline: iperf3 TCP between the inner addresses of
# two namespace hosts (10.1.0.1 -> 10.2.0.1), routed directly over the plain
# veth, no IPsec.  stdout: one line "tcp_gbps_plain <Gbit/s>" (iperf3
# receiver throughput); stderr: human log.  Exit 0 on success, non-zero with
# a message otherwise.  Needs root.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=netns_topology.sh
source "$(dirname "$(readlink -f "$0")")/netns_topology.sh"

duration=${1:-10}
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || topo_die "usage: ${0##*/} [SECONDS]  (SECONDS a positive integer, got '$duration')"

topo_init
topo_watchdog $((duration + 60))
topo_create

# Inner addresses routed straight over the wire.
ip -n "$TOPO_NS_A" route add "${TOPO_INNER_B}/32" via "$TOPO_WIRE_B" dev "$TOPO_WIRE_DEV" src "$TOPO_INNER_A"
ip -n "$TOPO_NS_B" route add "${TOPO_INNER_A}/32" via "$TOPO_WIRE_A" dev "$TOPO_WIRE_DEV" src "$TOPO_INNER_B"
topo_wait_for "inner route (ping ${TOPO_INNER_B} from ${TOPO_INNER_A})" 10 \
  topo_in_a ping -c 1 -W 1 -q -I "$TOPO_INNER_A" "$TOPO_INNER_B"

topo_start_iperf_server 5201
json="$TOPO_WORKDIR/iperf3-client.json"
read -r busy0 total0 < <(topo_machine_ticks)
topo_log "iperf3 TCP ${TOPO_INNER_A} -> ${TOPO_INNER_B} for ${duration} s over the plain veth"
topo_run_iperf_client "$duration" "$json" || topo_die "iperf3 client failed (exit $?): $(head -c 400 "$json" 2>/dev/null)"
read -r busy1 total1 < <(topo_machine_ticks)
gbps=$(topo_gbps_from_iperf_json "$json") || topo_die "cannot read the iperf3 result"
topo_log "machine CPU busy during the run: $(((busy1 - busy0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1)))% of $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tcp_gbps_plain $gbps"
