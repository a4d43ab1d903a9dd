#!/usr/bin/env python3
"""Floods a Health Monitor as a keyless stranger would, and measures what the
peer and an operator get meanwhile.

The stranger holds IDLE connections that send nothing and STALLED TLS
handshakes (half a ClientHello, or a whole one and never the Finished) from
ADDRS source addresses, reopening whatever the server closes. The peer probes
GET /healthz from its own address every 250 ms; a logged-in operator loads
the page every second. Prints one JSON object.

  flood.py TARGET_IP PORT PEER_IP OPERATOR_IP KEY SECONDS ADDR_PREFIX ADDRS IDLE STALLED
"""
import json
import socket
import ssl
import statistics
import sys
import threading
import time

(target, port, peer, operator, key, secs, prefix, addrs, idle, stalled) = sys.argv[1:11]
port, secs, addrs, idle, stalled = int(port), float(secs), int(addrs), int(idle), int(stalled)

CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def client_hello():
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = CTX.wrap_bio(incoming, outgoing)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


HELLO = client_hello()


def https(source, method, path, headers=None, body=b"", timeout=5.0):
    """One request on a fresh TLS connection; (status, body, seconds)."""
    started = time.monotonic()
    raw = socket.create_connection((target, port), timeout=timeout, source_address=(source, 0))
    with CTX.wrap_socket(raw) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    took = time.monotonic() - started
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.partition(b"\r\n\r\n")[2], took


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack(stop, opened):
    held = {i: [None] * (idle + stalled) for i in range(addrs)}
    while not stop.is_set():
        for i, socks in held.items():
            source = f"{prefix}{10 + i}"
            for j, s in enumerate(socks):
                if s is not None and still_open(s):
                    continue
                if s is not None:
                    s.close()
                try:
                    s = socket.create_connection((target, port), timeout=1, source_address=(source, 0))
                    if j >= idle:
                        s.sendall(HELLO[: len(HELLO) // 2] if j % 2 else HELLO)
                    s.setblocking(False)
                except OSError:
                    s = None
                socks[j] = s
                opened[0] += 1
        stop.wait(0.5)
    for socks in held.values():
        for s in socks:
            if s is not None:
                s.close()


def main():
    status, _, _ = https(operator, "POST", "/login",
                         {"Content-Type": "application/x-www-form-urlencoded"},
                         f"key={key}".encode())
    assert status == 303, f"login: {status}"
    # the cookie: log in again reading the header
    raw = socket.create_connection((target, port), timeout=5, source_address=(operator, 0))
    with CTX.wrap_socket(raw) as s:
        body = f"key={key}".encode()
        s.sendall(f"POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    cookie = [l.split(b":", 1)[1].split(b";")[0].strip().decode()
              for l in answer.split(b"\r\n") if l.lower().startswith(b"set-cookie:")][0]

    stop, opened = threading.Event(), [0]
    t = threading.Thread(target=attack, args=(stop, opened))
    t.start()
    time.sleep(2)  # the flood is in place
    probes, probe_failures, pages, page_failures, page_times = [], 0, 0, 0, []
    end = time.monotonic() + secs
    n = 0
    while time.monotonic() < end:
        try:
            status, _, took = https(peer, "GET", "/healthz")
            if status == 200:
                probes.append(took)
            else:
                probe_failures += 1
        except OSError:
            probe_failures += 1
        n += 1
        if n % 4 == 0:
            try:
                status, body, took = https(operator, "GET", "/", {"Cookie": cookie})
                if status == 200 and b"Primary Active" in body:
                    pages += 1
                    page_times.append(took)
                else:
                    page_failures += 1
            except OSError:
                page_failures += 1
        time.sleep(0.25)
    stop.set()
    t.join()
    probes.sort()
    ms = lambda v: round(v * 1000, 1)
    print(json.dumps({
        "probes": len(probes), "probe_failures": probe_failures,
        "probe_median_ms": ms(statistics.median(probes)) if probes else None,
        "probe_p99_ms": ms(probes[int(len(probes) * 0.99) - 1]) if probes else None,
        "probe_max_ms": ms(probes[-1]) if probes else None,
        "pages": pages, "page_failures": page_failures,
        "page_max_ms": ms(max(page_times)) if page_times else None,
        "attack_connections_opened": opened[0],
    }))


main()
