#!/usr/bin/python3
"""Bounded TCP transfer for the data-path tests.

  dataplane_tcp.py server BIND_ADDR PORT   accept one connection, read to EOF,
                                           answer "<bytes> <sha256>", exit
  dataplane_tcp.py client BIND_ADDR DST PORT BYTES
                                           send BYTES deterministic bytes, half-close,
                                           print the server's answer and exit 0 only
                                           if it matches what was sent
Every byte is acknowledged end to end (unlike iperf3 -n, which stops counting
when the sender has written its data)."""
import hashlib
import socket
import sys


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def server(bind, port):
    s = socket.socket(family(bind), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(1)
    s.settimeout(30)
    c, _ = s.accept()
    c.settimeout(30)
    h = hashlib.sha256()
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
    c.sendall(f"{n} {h.hexdigest()}\n".encode())
    c.close()


def client(bind, dst, port, total):
    c = socket.socket(family(dst), socket.SOCK_STREAM)
    c.settimeout(30)
    c.bind((bind, 0))
    c.connect((dst, port))
    h = hashlib.sha256()
    block = bytes(i & 0xFF for i in range(65536))
    sent = 0
    while sent < total:
        chunk = block[: min(len(block), total - sent)]
        c.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    c.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        answer += b
    expected = f"{sent} {h.hexdigest()}"
    print(answer.decode().strip())
    return 0 if answer.decode().strip() == expected else 1


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
