#!/usr/bin/python3
"""Independent ESP peer for the engine's interop tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:
  {"jobs": [{"op": "open"|"seal", "impl": "scapy"|"pyref", "sa": {...},
             "packets": [{"hex": "...", "seq": N}], ...}]}
  -> {"jobs": [{"packets": ["hex", ...]}]}   (or {"error": "..."} per job)

"open" decrypts packets the engine sealed and returns the plaintext IP packet
(tunnel: the inner packet; transport: the restored IP header + payload);
"seal" encrypts plaintext IP packets with the given sequence numbers.

impl "scapy" uses scapy's SecurityAssociation (AES-GCM, ChaCha20-Poly1305,
AES-CBC/NULL with HMAC).  scapy 2.5 has no GMAC, gets CBC+HMAC ESN wrong and
writes a wrong NAT-T UDP length, so: the UDP header of NAT-T packets is
checked/added here (not by scapy), and impl "pyref" is a from-the-RFCs
implementation on python3-cryptography + hmac for GMAC (RFC 4543) and for
HMAC with ESN (RFC 4303 §2.2.1: seq_hi appended to the ICV input).

Exit status: 0 if every job succeeded, 1 otherwise; 2 if scapy or
cryptography is missing (the C++ test treats that as a failure, not a skip).
"""
import hashlib
import hmac
import json
import struct
import sys

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.packet import Raw
except ImportError as e:  # pragma: no cover
    print(json.dumps({"error": "missing python module: %s (install python3-scapy python3-cryptography)" % e}))
    sys.exit(2)

SCAPY_CRYPT = {
    "aes-gcm-128": "AES-GCM", "aes-gcm-192": "AES-GCM", "aes-gcm-256": "AES-GCM",
    "chacha20-poly1305": "CHACHA20-POLY1305",
    "aes-cbc-128": "AES-CBC", "aes-cbc-192": "AES-CBC", "aes-cbc-256": "AES-CBC",
    "null": "NULL",
}
SCAPY_AUTH = {"none": "NULL", "hmac-sha256": "SHA2-256-128", "hmac-sha1": "HMAC-SHA1-96"}


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip_header_len(p):
    return (p[0] & 15) * 4 if p[0] >> 4 == 4 else 40


def set_proto_and_length(hdr, proto, total):
    hdr = bytearray(hdr)
    if hdr[0] >> 4 == 4:
        hdr[9] = proto
        hdr[2:4] = struct.pack("!H", total)
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", csum(bytes(hdr[: ip_header_len(hdr)])))
    else:
        hdr[6] = proto
        hdr[4:6] = struct.pack("!H", total - 40)
    return bytes(hdr)


def strip_udp(pkt, sa):
    """Checks the NAT-T UDP header (RFC 3948) and returns IP|ESP."""
    hl = ip_header_len(pkt)
    udp = pkt[hl:hl + 8]
    sport, dport, ulen, ck = struct.unpack("!HHHH", udp)
    if (sport, dport) != (sa["sport"], sa["dport"]):
        raise ValueError("NAT-T ports %d/%d, want %d/%d" % (sport, dport, sa["sport"], sa["dport"]))
    if ulen != len(pkt) - hl:
        raise ValueError("NAT-T UDP length %d, want %d" % (ulen, len(pkt) - hl))
    if pkt[0] >> 4 == 4:
        if ck != 0:
            raise ValueError("NAT-T UDP checksum over IPv4 must be 0")
    else:
        pseudo = pkt[8:40] + struct.pack("!IxxxB", ulen, 17)
        if ck == 0 or csum(pseudo + pkt[hl:]) != 0:
            raise ValueError("NAT-T UDP checksum over IPv6 wrong")
    return set_proto_and_length(pkt[:hl], 50, len(pkt) - 8) + pkt[hl + 8:]


def add_udp(pkt, sa):
    hl = ip_header_len(pkt)
    body = pkt[hl:]
    ulen = 8 + len(body)
    udp = struct.pack("!HHHH", sa["sport"], sa["dport"], ulen, 0)
    hdr = set_proto_and_length(pkt[:hl], 17, len(pkt) + 8)
    if pkt[0] >> 4 == 6:
        pseudo = hdr[8:40] + struct.pack("!IxxxB", ulen, 17)
        c = csum(pseudo + udp + body) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", c)
    return hdr + udp + body


def scapy_sa(sa):
    tunnel = None
    if sa["mode"] == "tunnel":
        tunnel = IP(src=sa["src"], dst=sa["dst"]) if ":" not in sa["src"] else IPv6(src=sa["src"], dst=sa["dst"])
    return SecurityAssociation(
        ESP, spi=sa["spi"], crypt_algo=SCAPY_CRYPT[sa["enc"]], crypt_key=bytes.fromhex(sa["enc_key"]) or None,
        auth_algo=SCAPY_AUTH[sa["auth"]], auth_key=bytes.fromhex(sa["auth_key"]) or None,
        tunnel_header=tunnel, esn_en=sa["esn"], esn=0)


def parse_ip(raw):
    return IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)


# ---- pyref: ESP from the RFCs ------------------------------------------------

def suite_params(sa):
    enc, auth = sa["enc"], sa["auth"]
    if enc.startswith("aes-gcm") or enc == "chacha20-poly1305":
        return dict(kind="aead", iv=8, icv=16, block=4)
    if auth.startswith("aes-gmac"):
        return dict(kind="gmac", iv=8, icv=16, block=4)
    icv = 16 if auth == "hmac-sha256" else 12
    if enc == "null":
        return dict(kind="hmac", iv=0, icv=icv, block=4)
    return dict(kind="cbc", iv=16, icv=icv, block=16)


def aad_for(spi, seq, esn):
    return struct.pack("!IQ", spi, seq) if esn else struct.pack("!II", spi, seq & 0xFFFFFFFF)


def hmac_icv(sa, p, data, seq):
    key = bytes.fromhex(sa["auth_key"])
    h = hmac.new(key, data + (struct.pack("!I", seq >> 32) if sa["esn"] else b""),
                 hashlib.sha256 if sa["auth"] == "hmac-sha256" else hashlib.sha1)
    return h.digest()[: p["icv"]]


def pyref_open_esp(sa, esp, seq_hi):
    p = suite_params(sa)
    spi, seq_lo = struct.unpack("!II", esp[:8])
    if spi != sa["spi"]:
        raise ValueError("wrong SPI")
    seq = (seq_hi << 32) | seq_lo
    iv = esp[8:8 + p["iv"]]
    ct = esp[8 + p["iv"]:len(esp) - p["icv"]]
    icv = esp[len(esp) - p["icv"]:]
    if p["kind"] == "aead":
        k = bytes.fromhex(sa["enc_key"])
        aead = ChaCha20Poly1305(k[:-4]) if sa["enc"] == "chacha20-poly1305" else AESGCM(k[:-4])
        pt = aead.decrypt(k[-4:] + iv, ct + icv, aad_for(spi, seq, sa["esn"]))
    elif p["kind"] == "gmac":
        k = bytes.fromhex(sa["auth_key"])
        AESGCM(k[:-4]).decrypt(k[-4:] + iv, icv, aad_for(spi, seq, sa["esn"]) + iv + ct)
        pt = ct
    else:
        if not hmac.compare_digest(hmac_icv(sa, p, esp[:len(esp) - p["icv"]], seq), icv):
            raise ValueError("HMAC ICV mismatch")
        if p["kind"] == "cbc":
            d = Cipher(algorithms.AES(bytes.fromhex(sa["enc_key"])), modes.CBC(iv)).decryptor()
            pt = d.update(ct) + d.finalize()
        else:
            pt = ct
    pad, nh = pt[-2], pt[-1]
    if list(pt[len(pt) - 2 - pad:len(pt) - 2]) != list(range(1, pad + 1)):
        raise ValueError("bad padding")
    return pt[:len(pt) - 2 - pad], nh


def pyref_seal_esp(sa, payload, nh, seq):
    p = suite_params(sa)
    pad = (p["block"] - (len(payload) + 2) % p["block"]) % p["block"]
    pt = payload + bytes(range(1, pad + 1)) + bytes([pad, nh])
    hdr = struct.pack("!II", sa["spi"], seq & 0xFFFFFFFF)
    if p["kind"] in ("aead", "gmac"):
        iv = struct.pack("!Q", seq)
    elif p["kind"] == "cbc":
        iv = bytes((seq * 7 + i) & 0xFF for i in range(16))
    else:
        iv = b""
    if p["kind"] == "aead":
        k = bytes.fromhex(sa["enc_key"])
        aead = ChaCha20Poly1305(k[:-4]) if sa["enc"] == "chacha20-poly1305" else AESGCM(k[:-4])
        return hdr + iv + aead.encrypt(k[-4:] + iv, pt, aad_for(sa["spi"], seq, sa["esn"]))
    if p["kind"] == "gmac":
        k = bytes.fromhex(sa["auth_key"])
        tag = AESGCM(k[:-4]).encrypt(k[-4:] + iv, b"", aad_for(sa["spi"], seq, sa["esn"]) + iv + pt)
        return hdr + iv + pt + tag
    if p["kind"] == "cbc":
        e = Cipher(algorithms.AES(bytes.fromhex(sa["enc_key"])), modes.CBC(iv)).encryptor()
        pt = e.update(pt) + e.finalize()
    body = hdr + iv + pt
    return body + hmac_icv(sa, p, body, seq)


def outer_header(sa, length):
    if ":" not in sa["src"]:
        return raw_bytes(IP(src=sa["src"], dst=sa["dst"], proto=50, len=length + 20, ttl=64))
    return raw_bytes(IPv6(src=sa["src"], dst=sa["dst"], nh=50, plen=length, hlim=64))


def raw_bytes(pkt):
    return bytes(pkt)


# ---- jobs ---------------------------------------------------------------------

def open_packet(sa, impl, raw, seq_hi):
    if sa["udp_encap"]:
        raw = strip_udp(raw, sa)
    if impl == "scapy":
        s = scapy_sa(sa)
        if sa["esn"]:
            s.esn = seq_hi
        out = s.decrypt(parse_ip(raw))
        return bytes(out)
    hl = ip_header_len(raw)
    if raw[0] >> 4 == 6 and raw[6] != 50:
        raise ValueError("pyref handles IPv6 without extension headers only")
    payload, nh = pyref_open_esp(sa, raw[hl:], seq_hi)
    if sa["mode"] == "tunnel":
        if nh not in (4, 41):
            raise ValueError("tunnel next header %d" % nh)
        return payload
    return set_proto_and_length(raw[:hl], nh, hl + len(payload)) + payload


def seal_packet(sa, impl, plain, seq):
    if impl == "scapy":
        s = scapy_sa(sa)
        # scapy treats seq_num=0 as "not given": pass a low half of 0 through the SA.
        s.seq_num = seq & 0xFFFFFFFF
        out = bytes(s.encrypt(parse_ip(plain), esn_en=sa["esn"], esn=seq >> 32))
    else:
        if sa["mode"] == "tunnel":
            esp = pyref_seal_esp(sa, plain, 4 if plain[0] >> 4 == 4 else 41, seq)
            out = outer_header(sa, len(esp)) + esp
        else:
            hl = ip_header_len(plain)
            nh = plain[9] if plain[0] >> 4 == 4 else plain[6]
            esp = pyref_seal_esp(sa, plain[hl:], nh, seq)
            out = set_proto_and_length(plain[:hl], 50, hl + len(esp)) + esp
    if sa["udp_encap"]:
        out = add_udp(out, sa)
    return out


def main():
    req = json.load(sys.stdin)
    answers, ok = [], True
    for job in req["jobs"]:
        try:
            outs = []
            for p in job["packets"]:
                raw = bytes.fromhex(p["hex"])
                if job["op"] == "open":
                    outs.append(open_packet(job["sa"], job["impl"], raw, p.get("seq", 0) >> 32).hex())
                else:
                    outs.append(seal_packet(job["sa"], job["impl"], raw, p["seq"]).hex())
            answers.append({"packets": outs})
        except Exception as e:  # report per job, keep going
            ok = False
            answers.append({"error": "%s: %s" % (type(e).__name__, e)})
    json.dump({"jobs": answers}, sys.stdout)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
