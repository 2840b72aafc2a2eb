#!/usr/bin/python3
"""Builds tunnel-mode ESP (scapy SecurityAssociation, AES-GCM) carrying an ICMP
echo request (or a UDP datagram), as outer IPv4 fragments (scapy fragment()),
and prints the Ethernet frames in hex, one per line, in the order to send them.

The configuration (JSON, with the key) comes on stdin, never on the command
line: spi, key (hex, key||salt), seq, outer_src, outer_dst (IPv6 addresses:
IPv6 outer header and fragment headers, fragment6()), inner_src,
inner_dst, src_mac, dst_mac, payload (ICMP data bytes), fragsize, ip_id,
natt (optional: ESP in UDP 4500, RFC 3948, IPv4 outer), v6_ext (optional:
IPv6 extension headers before the Fragment header, the unfragmentable part
every fragment carries: "hop", "dest", "routing"), vlan (optional: an
802.1Q tag with this VID on every frame), inner (optional: "udp" -- a UDP
datagram from port 7000 to `dport` carrying `payload` bytes, with DF if
`df`; "udp6" -- the same over IPv6 from inner_src6 to inner_dst6), kind:
  good      the fragments, last first (any order must do)
  overlap   IPv4: a copy of the second fragment with other bytes after it
            (overlap with differing data: the datagram is dropped); IPv6: a
            copy of the second fragment 8 bytes further (any overlap drops)
  beyond    one fragment whose datagram would pass 65535 bytes with its
            header (too big; its payload itself ends within 65535, so
            ov2_wire still sends it to the worker)
  far       one fragment at offset 8000 (more to come): its datagram needs a
            large reassembly buffer and never completes; `count` of them
            (IPv4 outer), of as many datagrams (IP ids from ip_id on)
  unended   the first fragment only (never completes)
  ike       not ESP: a UDP 4500 datagram with the non-ESP marker and `payload`
            bytes (what a big IKE message looks like), fragmented
"""
import json
import sys

from scapy.all import (ICMP, IP, UDP, Dot1Q, Ether, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Raw, fragment, fragment6, raw)
from scapy.layers.ipsec import ESP, SecurityAssociation

c = json.loads(sys.stdin.read())
v6 = ":" in c["outer_dst"]
outer_header = IPv6(src=c["outer_src"], dst=c["outer_dst"]) if v6 else IP(src=c["outer_src"], dst=c["outer_dst"])
sa = SecurityAssociation(ESP, spi=c["spi"], crypt_algo="AES-GCM", crypt_key=bytes.fromhex(c["key"]),
                         tunnel_header=outer_header)
data = Raw(bytes(i % 251 for i in range(c["payload"])))
if c.get("inner") == "udp":
    inner = IP(src=c["inner_src"], dst=c["inner_dst"], flags="DF" if c.get("df") else 0) / UDP(
        sport=7000, dport=c["dport"]) / data
elif c.get("inner") == "udp6":
    inner = IPv6(src=c["inner_src6"], dst=c["inner_dst6"]) / UDP(sport=7000, dport=c["dport"]) / data
else:
    inner = IP(src=c["inner_src"], dst=c["inner_dst"]) / ICMP(type=8, id=0x4242, seq=c["seq"] & 0xffff) / data
esp = raw(sa.encrypt(inner, seq_num=c["seq"]))
if v6:
    body = esp[40:]  # the ESP packet after the fixed header
    whole = IPv6(src=c["outer_src"], dst=c["outer_dst"])
    for name in c.get("v6_ext", []):
        whole = whole / {"hop": IPv6ExtHdrHopByHop, "dest": IPv6ExtHdrDestOpt, "routing": IPv6ExtHdrRouting}[name]()
    whole = whole / IPv6ExtHdrFragment(nh=50, id=c["ip_id"]) / Raw(body)
    frags = [IPv6(raw(f)) for f in fragment6(whole, c["fragsize"])]
else:
    outer = IP(esp)
    if c.get("natt") or c["kind"] == "ike":
        # scapy 2.5 writes a wrong NAT-T UDP length: the UDP header is ours.
        body = bytes(4) + bytes(i % 251 for i in range(c["payload"])) if c["kind"] == "ike" else esp[20:]
        outer = IP(src=c["outer_src"], dst=c["outer_dst"]) / UDP(sport=4500, dport=4500) / Raw(body)
        outer = IP(raw(outer))
    outer.flags = 0
    outer.id = c["ip_id"]
    del outer.chksum
    frags = [IP(raw(f)) for f in fragment(IP(raw(outer)), fragsize=c["fragsize"])]
kind = c["kind"]
if kind in ("good", "ike"):
    frags.reverse()
elif kind == "overlap" and v6:
    b = bytearray(raw(frags[1]))
    off = int.from_bytes(b[42:44], "big")
    b[42:44] = (off + 8).to_bytes(2, "big")
    frags.insert(2, IPv6(bytes(b)))
elif kind == "overlap":
    b = bytearray(raw(frags[1]))
    for i in range((b[0] & 15) * 4, len(b)):
        b[i] ^= 0xff
    frags.insert(2, IP(bytes(b)))
elif kind == "beyond":
    f = frags[1].copy()
    f.frag = (65536 - len(f.payload)) // 8 - 1  # ends within 65535 bytes, its header makes it 65536 or more
    del f.chksum
    frags = [f]
elif kind == "far":
    second = frags[1]
    frags = []
    for i in range(c.get("count", 1)):  # one datagram each: ip_id, ip_id + 1, ...
        f = second.copy()
        f.frag = 8000 // 8
        f.id = c["ip_id"] + i
        del f.chksum
        frags.append(f)
elif kind == "unended":
    frags = frags[:1]
else:
    sys.exit("unknown kind " + kind)
eth = Ether(src=c["src_mac"], dst=c["dst_mac"])
if "vlan" in c:
    eth = eth / Dot1Q(vlan=c["vlan"])
for f in frags:
    print(raw(eth / f).hex())
