#!/usr/bin/env bash
# The main job: install what is missing, build, bring up two hosts (network
# namespaces joined by a veth "wire"), each running its own ipsecov2d, install
# an AES-GCM-128 tunnel between 10.1.0.0/24 and 10.2.0.0/24 with ipsecov2ctl,
# run ping and a TCP transfer through ESP, prove with tshark that every packet
# on the wire is ESP with a good ICV, print the SA table and the counters, and
# tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ $EUID -ne 0 ]]; then echo "ipsecov2 demo: needs root (BPF, AF_XDP, namespaces); run with sudo" >&2; exit 1; fi
if [[ "${OV2_DEMO_NO_BUILD:-}" != 1 ]]; then
  scripts/deps.sh
  OV2_TARGETS="ipsecov2d ipsecov2ctl" scripts/build.sh
fi
BIN=${BUILD_DIR:-$ROOT/build}/ctl
TAG="ov2demo$$"
A="${TAG}a" B="${TAG}b" M="${TAG}m"  # two hosts and the switch between them
WORK=$(mktemp -d /tmp/ov2demo.XXXXXX)
chmod 700 "$WORK"
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$A" 2>/dev/null
  ip netns del "$B" 2>/dev/null
  ip netns del "$M" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

inA() { nsenter --net=/run/netns/"$A" "$@"; }
inB() { nsenter --net=/run/netns/"$B" "$@"; }
inM() { nsenter --net=/run/netns/"$M" "$@"; }
ctlA() { inA "$BIN/ipsecov2ctl" --socket "$WORK/a.sock" "$@"; }
ctlB() { inB "$BIN/ipsecov2ctl" --socket "$WORK/b.sock" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "topology: host A ($A) and host B ($B), wire 192.0.2.1 <-> 192.0.2.2 through a switch ($M)"
# The wire is a bridge in a third namespace, where we capture: on the hosts
# themselves the ESP is invisible to tcpdump (AF_XDP transmits past the capture
# point, and XDP takes received ESP before it).
ip netns add "$A"
ip netns add "$B"
ip netns add "$M"
ip link add wa netns "$A" type veth peer name pa netns "$M"
ip link add wb netns "$B" type veth peer name pb netns "$M"
inM ip link add br0 type bridge mcast_snooping 0  # no IGMP of its own on the wire
for p in pa pb; do inM ip link set "$p" master br0; inM ip link set "$p" up; done
inM ip link set br0 up
for run in inA inB inM; do
  $run ip link set lo up
  # IPv4 only on this wire, so that every packet on it is ours to account for.
  $run sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
inA ip addr add 192.0.2.1/24 dev wa
inB ip addr add 192.0.2.2/24 dev wb
inA ip link set wa up
inB ip link set wb up
inA ip addr add 10.1.0.1/32 dev lo
inB ip addr add 10.2.0.1/32 dev lo

say "start ipsecov2d in each host"
# Background jobs run nsenter directly (not through a shell function, whose
# subshell would inherit the cleanup trap).
nsenter --net=/run/netns/"$A" "$BIN/ipsecov2d" --engine auto --wire wa --socket "$WORK/a.sock" >"$WORK/a.log" 2>&1 &
PIDS+=($!)
nsenter --net=/run/netns/"$B" "$BIN/ipsecov2d" --engine auto --wire wb --socket "$WORK/b.sock" >"$WORK/b.log" 2>&1 &
PIDS+=($!)
for s in a b; do
  for _ in $(seq 100); do [[ -S "$WORK/$s.sock" ]] && break; sleep 0.05; done
  [[ -S "$WORK/$s.sock" ]] || { echo "ipsecov2d ($s) did not start:"; cat "$WORK/$s.log"; exit 1; }
done

say "keys: two random AES-GCM-128 keys (16-byte key + 4-byte salt), in files only"
umask 077
od -An -N20 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/k_ab"
od -An -N20 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/k_ba"

say "SAs and policies (tunnel mode, aes-gcm-128)"
OUT_A=$(ctlA sa add --dir out --mode tunnel --src 192.0.2.1 --dst 192.0.2.2 --spi 0x1001 --aead aes-gcm-128 --key-file "$WORK/k_ab")
IN_A=$(ctlA sa add --dir in --mode tunnel --src 192.0.2.2 --dst 192.0.2.1 --spi 0x2001 --aead aes-gcm-128 --key-file "$WORK/k_ba")
OUT_B=$(ctlB sa add --dir out --mode tunnel --src 192.0.2.2 --dst 192.0.2.1 --spi 0x2001 --aead aes-gcm-128 --key-file "$WORK/k_ba")
IN_B=$(ctlB sa add --dir in --mode tunnel --src 192.0.2.1 --dst 192.0.2.2 --spi 0x1001 --aead aes-gcm-128 --key-file "$WORK/k_ab")
ctlA policy add --dir out --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa "$OUT_A" >/dev/null
ctlA policy add --dir in --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa "$IN_A" >/dev/null
ctlB policy add --dir out --src 10.2.0.0/24 --dst 10.1.0.0/24 --action protect --sa "$OUT_B" >/dev/null
ctlB policy add --dir in --src 10.1.0.0/24 --dst 10.2.0.0/24 --action protect --sa "$IN_B" >/dev/null
# Routes into the offload device carry the wire MTU minus the worst-case ESP
# overhead (105 bytes), so TCP picks segments that still fit once encrypted.
WIRE_MTU=$(inA ip -o link show dev wa | sed -n "s/.* mtu \([0-9]*\) .*/\1/p")
ROUTE_MTU=$((WIRE_MTU - 105))
inA ip route add 10.2.0.0/24 dev ov2 src 10.1.0.1 mtu "$ROUTE_MTU"
inB ip route add 10.1.0.0/24 dev ov2 src 10.2.0.1 mtu "$ROUTE_MTU"
echo "host A: out $OUT_A  in $IN_A"
echo "host B: out $OUT_B  in $IN_B"

say "capture the wire (on the switch)"
nsenter --net=/run/netns/"$M" tcpdump -i br0 -n -U -Z root --immediate-mode -B 16384 -w "$WORK/wire.pcap" -c 20000 not arp \
  >"$WORK/tcpdump.log" 2>&1 &
CAP=$!
PIDS+=($CAP)
for _ in $(seq 100); do grep -q listening "$WORK/tcpdump.log" 2>/dev/null && break; sleep 0.05; done

say "ping 10.1.0.1 -> 10.2.0.1 through ESP"
inA ping -c 5 -i 0.2 -W 2 -I 10.1.0.1 10.2.0.1

say "TCP: 2 seconds of iperf3 through ESP"
nsenter --net=/run/netns/"$B" iperf3 -s -1 -B 10.2.0.1 >"$WORK/iperf-s.log" 2>&1 &
PIDS+=($!)
sleep 0.3
inA iperf3 -c 10.2.0.1 -B 10.1.0.1 -t 2 -f m | grep -E 'sender|receiver'

sleep 0.3
kill -INT "$CAP" 2>/dev/null || true
wait "$CAP" 2>/dev/null || true

say "tshark: every packet on the wire is ESP with a good ICV"
sa_row() { printf '"IPv4","%s","%s","%s","AES-GCM with 16 octet ICV [RFC4106]","0x%s","NULL",""' "$1" "$2" "$3" "$(cat "$4")"; }
# Everything the two hosts sent (source 192.0.2.0/24) must be ESP with a good ICV.
HOSTS='ip.src==192.0.2.0/24'
total=$(tshark -r "$WORK/wire.pcap" -Y "$HOSTS" -T fields -e frame.number 2>/dev/null | wc -l)
notesp=$(tshark -r "$WORK/wire.pcap" -Y "$HOSTS && !esp" -T fields -e frame.number 2>/dev/null | wc -l)
good=$(tshark -r "$WORK/wire.pcap" -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE \
  -o "uat:esp_sa:$(sa_row 192.0.2.1 192.0.2.2 0x00001001 "$WORK/k_ab")" \
  -o "uat:esp_sa:$(sa_row 192.0.2.2 192.0.2.1 0x00002001 "$WORK/k_ba")" \
  -Y "$HOSTS && esp.icv_good == 1" -T fields -e frame.number 2>/dev/null | wc -l)
other=$(tshark -r "$WORK/wire.pcap" -Y "!($HOSTS)" -T fields -e frame.number 2>/dev/null | wc -l)
echo "packets the hosts sent on the wire: $total (first 20000 captured)   not ESP: $notesp   ESP with a good ICV: $good"
if ((notesp > 0)); then
  echo "not ESP:"; tshark -r "$WORK/wire.pcap" -Y "$HOSTS && !esp" 2>/dev/null | head -20
fi
if ((other > 0)); then
  echo "other frames on the wire (not from the hosts): $other"; tshark -r "$WORK/wire.pcap" -Y "!($HOSTS)" 2>/dev/null | head -5
fi

say "what ipsecov2d on host A logged"
grep -v '^$' "$WORK/a.log" | head -8

say "SA table (host A)"
ctlA sa list
say "policies (host A)"
ctlA policy list
if ctlA stats >/dev/null 2>&1; then
  say "counters (host A)"; ctlA stats
  say "counters (host B)"; ctlB stats
fi

if [[ $total -gt 0 && $notesp -eq 0 && $good -eq $total ]]; then
  say "PASS: $total packets crossed the wire, all ESP, all with a good ICV"
else
  say "FAIL: see above"; exit 1
fi
