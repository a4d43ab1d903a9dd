#!/usr/bin/env python3
"""Helpers for bench/sync: signed peer-API calls and timing loops.

  peer.py pass SECRET HOST PORT LOG     hint the standby at HOST:PORT and time
                                        until its log shows the next finished
                                        pass of set "bench" (ms)
  peer.py manifest SECRET HOST PORT     time one signed manifest fetch from
                                        the active (its scan, cached hashes) (ms)
  peer.py state SOCKET                  "duty peer_state peer_reachable" of the
                                        agent behind a control socket
  peer.py change SRC DST                rewrite the 4 KiB file SRC and time until
                                        DST has the new content, polled every
                                        10 ms (ms)

SECRET is a server's pair secret file (`secret` in its state directory, written
at registration). Signing follows src/peer/auth.rs and src/peer/pair.rs: the API
key is HKDF-SHA256(salt "hamon-pair-v2", info "peer-api") of the pair secret, and
the signature HMAC-SHA256 over "hamon-request-v2\\nMETHOD\\nPATH\\nRECEIVER\\n
sha256(body)\\ntime_ms\\nnonce", sent with x-hamon-auth: 2.
TLS is used without certificate checks (the bench's self-signed pair)."""
import hashlib
import hmac
import http.client
import json
import os
import ssl
import sys
import time


def api_key(secret_file):
    with open(secret_file) as f:
        words = f.read().split()
    if words[:2] != ["hamon-pair-secret", "1"]:
        sys.exit(f"{secret_file}: not a pair secret")
    secret = bytes.fromhex(words[2])
    prk = hmac.new(b"hamon-pair-v2", secret, hashlib.sha256).digest()
    return hmac.new(prk, b"peer-api" + b"\x01", hashlib.sha256).digest()


def call(key, host, port, op, body):
    path = f"/peer/v1/sync/{op}"
    body = json.dumps(body).encode()
    t = str(int(time.time() * 1000))
    nonce = os.urandom(16).hex()
    msg = "\n".join(["hamon-request-v2", "POST", path, host,
                     hashlib.sha256(body).hexdigest(), t, nonce]).encode()
    sig = hmac.new(key, msg, hashlib.sha256).hexdigest()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=600)
    c.request("POST", path, body, {"x-hamon-auth": "2", "x-hamon-time": t,
                                   "x-hamon-nonce": nonce,
                                   "x-hamon-signature": sig,
                                   "content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        sys.exit(f"{op}: HTTP {r.status}: {data[:200]!r}")
    return data


def passes(log):
    try:
        with open(log, "rb") as f:
            return f.read().count(b"sync set bench from")
    except FileNotFoundError:
        return 0


def main():
    cmd = sys.argv[1]
    if cmd == "pass":
        key, host, port, log = api_key(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
        before = passes(log)
        t0 = time.monotonic()
        call(key, host, port, "hint", {"class": "frequent"})
        while passes(log) == before:
            if time.monotonic() - t0 > 600:
                sys.exit("no pass within 600 s")
            time.sleep(0.002)
        print(f"{(time.monotonic() - t0) * 1000:.1f}")
    elif cmd == "manifest":
        key, host, port = api_key(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        t0 = time.monotonic()
        data = call(key, host, port, "manifest", {"set": "bench", "version": 2})
        print(f"{(time.monotonic() - t0) * 1000:.1f} {len(data)}")
    elif cmd == "change":
        src, dst = sys.argv[2], sys.argv[3]
        new = os.urandom(2048).hex().encode()  # 4096 bytes, same size
        t0 = time.monotonic()
        with open(src, "wb") as f:
            f.write(new)
        while True:
            try:
                with open(dst, "rb") as f:
                    if f.read() == new:
                        break
            except FileNotFoundError:
                pass
            if time.monotonic() - t0 > 120:
                sys.exit("the change did not arrive within 120 s")
            time.sleep(0.01)
        print(f"{(time.monotonic() - t0) * 1000:.1f}")
    elif cmd == "state":
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[2])
        s.sendall(b'{"cmd":"status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        st = json.loads(data)["status"]
        print(st.get("duty"), st.get("peer_state"), json.dumps(st.get("peer_reachable")))
    else:
        sys.exit(__doc__)


main()
