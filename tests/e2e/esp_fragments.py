#!/usr/bin/python3
"""Builds tunnel-mode ESP (scapy SecurityAssociation, AES-GCM) carrying an ICMP
echo request, as outer IPv4 fragments (scapy fragment()), and prints the
Ethernet frames in hex, one per line, in the order to send them.

The configuration (JSON, with the key) comes on stdin, never on the command
line: spi, key (hex, key||salt), seq, outer_src, outer_dst, inner_src,
inner_dst, src_mac, dst_mac, payload (ICMP data bytes), fragsize, ip_id, kind:
  good      the fragments, last first (any order must do)
  overlap   a copy of the second fragment with other bytes after it (IPv4
            overlap with differing data: the datagram is dropped)
  beyond    one fragment whose end lies beyond what a frame holds (too big)
  unended   the first fragment only (never completes)
"""
import json
import sys

from scapy.all import ICMP, IP, Ether, Raw, fragment, raw
from scapy.layers.ipsec import ESP, SecurityAssociation

c = json.loads(sys.stdin.read())
sa = SecurityAssociation(ESP, spi=c["spi"], crypt_algo="AES-GCM", crypt_key=bytes.fromhex(c["key"]),
                         tunnel_header=IP(src=c["outer_src"], dst=c["outer_dst"]))
inner = IP(src=c["inner_src"], dst=c["inner_dst"]) / ICMP(type=8, id=0x4242, seq=c["seq"] & 0xffff) / Raw(
    bytes(i % 251 for i in range(c["payload"])))
outer = IP(raw(sa.encrypt(inner, seq_num=c["seq"])))
outer.flags = 0
outer.id = c["ip_id"]
del outer.chksum
frags = [IP(raw(f)) for f in fragment(IP(raw(outer)), fragsize=c["fragsize"])]
kind = c["kind"]
if kind == "good":
    frags.reverse()
elif kind == "overlap":
    b = bytearray(raw(frags[1]))
    for i in range((b[0] & 15) * 4, len(b)):
        b[i] ^= 0xff
    frags.insert(2, IP(bytes(b)))
elif kind == "beyond":
    f = frags[1].copy()
    f.frag = 8000 // 8
    del f.chksum
    frags = [f]
elif kind == "unended":
    frags = frags[:1]
else:
    sys.exit("unknown kind " + kind)
for f in frags:
    print(raw(Ether(src=c["src_mac"], dst=c["dst_mac"]) / f).hex())
