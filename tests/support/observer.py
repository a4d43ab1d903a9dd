#!/usr/bin/env python3
"""The fault suite's outside observer: a managed device that uses the VIP.

Runs in the observer's network namespace and talks only on its interface.
Every --every-ms it asks who has the VIP (a broadcast ARP request) and pings
it the way a client does (the kernel's own ICMP socket, so the neighbour
cache, updated by gratuitous ARP, picks the MAC). It prints one line per
answer, flushed at once, so the reader can time it:

    arp MAC     an ARP reply for the VIP came from MAC
    echo MAC    an echo reply from the VIP came from MAC

It never exits on its own; the test kills it.
"""
import argparse
import os
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def mac_text(raw):
    return ":".join(f"{b:02x}" for b in raw)


def checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--every-ms", type=float, default=50.0)
    a = ap.parse_args()

    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind((a.iface, 0))
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.setblocking(False)
    own = mac_bytes(open(f"/sys/class/net/{a.iface}/address").read().strip())
    vip, src = socket.inet_aton(a.vip), socket.inet_aton(a.src_ip)
    who_has = (b"\xff" * 6 + own + struct.pack("!H", ETH_P_ARP)
               + struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
               + own + src + b"\x00" * 6 + vip)
    ident = os.getpid() & 0xFFFF
    out = sys.stdout
    seq = 0
    due = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= due:
            seq = (seq + 1) & 0xFFFF
            raw.send(who_has)
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"hamon-observer"
            body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            try:
                icmp.sendto(body, (a.vip, 0))
            except OSError:
                pass  # no neighbour yet: the kernel says so; the round simply gets no echo
            due = max(due + a.every_ms / 1000.0, now)
            continue
        ready, _, _ = select.select([raw, icmp], [], [], due - now)
        if icmp in ready:
            try:
                icmp.recv(2048)  # drained; the replies are read off the wire below
            except OSError:
                pass
        if raw not in ready:
            continue
        frame = raw.recv(2048)
        if len(frame) < 42:
            continue
        kind = frame[12:14]
        if kind == b"\x08\x06":
            # ARP: oper at 20, sender MAC 22..28, sender IP 28..32.
            if frame[20:22] == b"\x00\x02" and frame[28:32] == vip:
                out.write(f"arp {mac_text(frame[22:28])}\n")
                out.flush()
        elif kind == b"\x08\x00" and frame[6:12] != own:
            ihl = (frame[14] & 0x0F) * 4
            if frame[23] != 1 or frame[26:30] != vip:
                continue
            icmp_at = 14 + ihl
            if frame[icmp_at] == 0 and struct.unpack("!H", frame[icmp_at + 4:icmp_at + 6])[0] == ident:
                out.write(f"echo {mac_text(frame[6:12])}\n")
                out.flush()


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
