#!/usr/bin/env python3
"""A delay line for the fault suite, where the kernel has no netem.

Binds an nftables queue (NFQUEUE, over raw netfilter netlink) and lets each
queued packet go after a random delay between --min-ms and --max-ms. Packets
that arrive close together leave in a different order when the spread is wider
than their gap: delay and reordering. Runs in the namespace whose nftables
rule queues the packets; prints "ready" once bound. The test kills it.
"""
import argparse
import heapq
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


def attr(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\x00" * ((4 - length % 4) % 4)


def message(msg, queue, attrs, seq, flags=NLM_F_REQUEST):
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + b"".join(attrs)
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def acked(s, seq):
    """Waits for the kernel's answer to request `seq`; raises if it refused it."""
    while True:
        data = s.recv(1 << 16)
        _, kind, _, got, _ = struct.unpack("=IHHII", data[:16])
        if kind == NLMSG_ERROR and got == seq:
            code = struct.unpack("=i", data[16:20])[0]
            if code != 0:
                raise OSError(-code, f"nfqueue config request {seq} refused")
            return


def attrs_of(data):
    out = {}
    while len(data) >= 4:
        length, kind = struct.unpack("=HH", data[:4])
        if length < 4:
            break
        out[kind & 0x7FFF] = data[4:length]
        data = data[(length + 3) & ~3:]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--min-ms", type=float, required=True)
    ap.add_argument("--max-ms", type=float, required=True)
    a = ap.parse_args()

    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    bind = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)
    ack = NLM_F_REQUEST | NLM_F_ACK
    s.send(message(NFQNL_MSG_CONFIG, a.queue, [attr(NFQA_CFG_CMD, bind)], 1, ack))
    acked(s, 1)
    params = struct.pack("!IB", 0, NFQNL_COPY_META)
    s.send(message(NFQNL_MSG_CONFIG, a.queue, [attr(NFQA_CFG_PARAMS, params)], 2, ack))
    acked(s, 2)
    print("ready", flush=True)

    held = []  # (release time, packet id)
    seq = 3
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, pid = heapq.heappop(held)
            verdict = struct.pack("!II", NF_ACCEPT, pid)
            s.send(message(NFQNL_MSG_VERDICT, a.queue, [attr(NFQA_VERDICT_HDR, verdict)], seq))
            seq += 1
        wait = held[0][0] - now if held else 1.0
        ready, _, _ = select.select([s], [], [], max(wait, 0))
        if not ready:
            continue
        data = s.recv(1 << 16)
        while len(data) >= 16:
            length, kind, _, _, _ = struct.unpack("=IHHII", data[:16])
            if length < 16:
                break
            if kind == NLMSG_ERROR:
                code = struct.unpack("=i", data[16:20])[0]
                if code != 0:
                    print(f"netlink error {code}", file=sys.stderr, flush=True)
            elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                hdr = attrs_of(data[20:length]).get(NFQA_PACKET_HDR)
                if hdr:
                    pid = struct.unpack("!I", hdr[:4])[0]
                    delay = random.uniform(a.min_ms, a.max_ms) / 1000.0
                    heapq.heappush(held, (time.monotonic() + delay, pid))
            data = data[(length + 3) & ~3:]


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
