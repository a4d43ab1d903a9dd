#!/usr/bin/env python3
"""Observer-side failover timer.

Runs in the observer's network namespace. Sends an ARP request for the VIP
every few milliseconds on one interface, kills the given PIDs (the active
server's HA daemon) itself, so the kill and the replies share one monotonic
clock, and prints how long after the kill the VIP first answered from
`--new-mac`. Only ever talks on the given interface of its own namespace.
"""
import argparse, os, signal, socket, struct, sys, time

ETH_P_ARP = 0x0806


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--new-mac", required=True)
    ap.add_argument("--kill", required=True, help="comma-separated PIDs to SIGKILL")
    ap.add_argument("--every-ms", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((a.iface, ETH_P_ARP))
    s.settimeout(a.every_ms / 1000.0)
    own = open(f"/sys/class/net/{a.iface}/address").read().strip()
    own_b, new_b = mac_bytes(own), mac_bytes(a.new_mac)
    vip_b, src_b = socket.inet_aton(a.vip), socket.inet_aton(a.src_ip)
    req = (b"\xff" * 6 + own_b + struct.pack("!H", ETH_P_ARP)
           + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + own_b + src_b + b"\x00" * 6 + vip_b)

    def answered_by(frame):
        # Ethernet(14) + ARP: oper at 20, sender mac 22..28, sender ip 28..32
        if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
            return None
        if frame[28:32] != vip_b:
            return None
        return frame[22:28]

    # Warm up: the VIP must answer from somewhere before the kill.
    t_end = time.monotonic() + 5
    seen_before = None
    while time.monotonic() < t_end and seen_before is None:
        s.send(req)
        try:
            seen_before = answered_by(s.recv(2048))
        except socket.timeout:
            pass
    if seen_before is None:
        print("error: the VIP does not answer before the kill", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    for pid in a.kill.split(","):
        os.kill(int(pid), signal.SIGKILL)
    next_send = t0
    while time.monotonic() - t0 < a.timeout:
        now = time.monotonic()
        if now >= next_send:
            s.send(req)
            next_send = now + a.every_ms / 1000.0
        try:
            frame = s.recv(2048)
        except socket.timeout:
            continue
        if answered_by(frame) == new_b:
            print(f"{(time.monotonic() - t0) * 1000:.1f}")
            return 0
    print("error: no answer from the new MAC within the timeout", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
