#!/usr/bin/python3
# Seals IP packets with scapy's SecurityAssociation (an ESP implementation
# independent of ours).  Used by tests/pcap/interop_test.cpp and to make the
# checked-in fixture scapy_esp.pcap:
#   /usr/bin/python3 scapy_seal.py scapy_cases.json scapy_plain.hex scapy_esp.pcap
# argv: a JSON config ({"cases": [...]}, keys inside, never on the command
# line), the output file of plaintext IP packets (hex, one per line) and the
# output pcap of Ethernet-framed ESP packets.
import json, sys
from scapy.all import Ether, IP, IPv6, UDP, TCP, ICMP, Raw, wrpcap, raw
from scapy.layers.inet6 import ICMPv6EchoRequest
from scapy.layers.ipsec import SecurityAssociation, ESP

cfg = json.load(open(sys.argv[1]))
plain_lines, frames = [], []
for c in cfg["cases"]:
    L3 = IP if c["family"] == 4 else IPv6
    sa = SecurityAssociation(
        ESP, spi=c["spi"], crypt_algo=c["crypt"],
        crypt_key=bytes.fromhex(c["crypt_key"]) if c["crypt_key"] else None,
        auth_algo=c["auth"], auth_key=bytes.fromhex(c["auth_key"]) if c["auth_key"] else None,
        tunnel_header=L3(src=c["sa_src"], dst=c["sa_dst"]) if c["mode"] == "tunnel" else None,
        nat_t_header=UDP(sport=4500, dport=4500) if c["natt"] else None)
    for i, n in enumerate([0, 1, 57, 1000]):
        if i % 3 == 0:
            l4 = UDP(sport=5000 + i, dport=53) / Raw(bytes((i * 7 + k) % 256 for k in range(n)))
        elif i % 3 == 1:
            l4 = TCP(sport=6000 + i, dport=80, flags="PA") / Raw(b"t" * n)
        else:
            l4 = (ICMP() if c["family"] == 4 else ICMPv6EchoRequest()) / Raw(b"i" * n)
        p = L3(raw(L3(src=c["src"], dst=c["dst"]) / l4))
        e = sa.encrypt(p)
        if c["natt"]:
            # scapy 2.5.0 leaves a wrong UDP length in NAT-T packets: recompute.
            e[UDP].len = None
            e[UDP].chksum = 0
            if c["family"] == 4:
                e.len = None
                e.chksum = None
            else:
                e.plen = None
            e = L3(raw(e))
        plain_lines.append(raw(p).hex())
        frames.append(Ether(src="52:54:00:00:00:01", dst="52:54:00:00:00:02") / e)
open(sys.argv[2], "w").write("\n".join(plain_lines) + "\n")
wrpcap(sys.argv[3], frames)
