#!/usr/bin/env python3
"""Observer-side failover timer.

Runs in the observer's network namespace. Sends an ARP request for the VIP
every few milliseconds on one interface, kills the given PIDs (the active
server's HA daemon) itself, so the kill and the replies share one monotonic
clock, and prints how long after the kill the VIP first answered from
`--new-mac`. Only ever talks on the given interface of its own namespace.

With `--power-cut NS:IFACE` the kill is a power cut: in the same instant the
switch port of the active server (IFACE in namespace NS, the bench's bridge)
goes down, so that nothing of the dead node answers any more, not even its
kernel (a TCP probe then times out instead of being refused). The netlink
socket that does it is opened in NS beforehand, so the cut is one sendmsg.

With `--sync NS:IFACE:KIND:PHASE_MS` the kill comes PHASE_MS after the active
server's last keep-alive left it, seen on IFACE of NS (its switch port): KIND
`vrrp` for keepalived's adverts, `udp:PORT` for hamon's heartbeats. Both
daemons then die at the same point of their cycle, so that the comparison is
of detection and reaction, not of where the kill happened to fall.
"""
import argparse, ctypes, os, signal, socket, struct, sys, time

ETH_P_ARP = 0x0806
CLONE_NEWNET = 0x40000000
RTM_NEWLINK, NLM_F_REQUEST, NLM_F_ACK, IFF_UP = 16, 1, 4, 1


ETH_P_ALL = 0x0003


def in_netns(ns, make):
    """What `make()` returns when called inside network namespace `ns` (sockets
    stay in the namespace they were opened in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            return make()
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def port_down_sender(spec):
    """A function that takes IFACE of namespace NS down (`spec` is NS:IFACE)."""
    ns, iface = spec.split(":", 1)
    nl, index = in_netns(ns, lambda: (
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE),
        socket.if_nametoindex(iface)))
    # nlmsghdr (len, type, flags, seq, pid) + ifinfomsg (family, pad, type,
    # index, flags, change): clear IFF_UP.
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, IFF_UP)
    msg = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body

    def cut():
        nl.send(msg)
        ack = nl.recv(4096)
        # NLMSG_ERROR (2) with error 0 is the ack.
        kind, = struct.unpack_from("=H", ack, 4)
        err, = struct.unpack_from("=i", ack, 16)
        if kind != 2 or err != 0:
            raise OSError(-err, f"taking {iface} down in {ns}")

    return cut


def keepalive_waiter(spec):
    """A function that returns once PHASE_MS have passed since the next
    keep-alive frame seen on IFACE of NS (`spec` is NS:IFACE:KIND:PHASE_MS)."""
    ns, iface, kind, rest = spec.split(":", 3)
    if kind == "udp":
        port, phase = rest.split(":")
        port = int(port)
    else:
        port, phase = None, rest
    phase = float(phase) / 1000.0

    def bind():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((iface, ETH_P_ALL))
        return sock

    sniff = in_netns(ns, bind)

    def is_keepalive(f):
        # Ethernet(14), IPv4 protocol at 23, IHL in the low nibble of 14; UDP
        # destination port 2 bytes into the UDP header.
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            return False
        if kind == "vrrp":
            return f[23] == 112
        ihl = (f[14] & 0x0F) * 4
        return f[23] == 17 and len(f) >= 14 + ihl + 4 and \
            struct.unpack_from("!H", f, 14 + ihl + 2)[0] == port

    def wait():
        # Frames already queued are old: start from an empty queue.
        sniff.setblocking(False)
        try:
            while sniff.recv(65535):
                pass
        except BlockingIOError:
            pass
        sniff.setblocking(True)
        while True:
            frame, addr = sniff.recvfrom(65535)
            # addr[2] is the packet type: 0 host, 3 otherhost, 4 outgoing. The
            # active server's frames come in on its switch port.
            if addr[2] != 4 and is_keepalive(frame):
                seen = time.monotonic()
                break
        while time.monotonic() < seen + phase:
            pass

    return wait


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--new-mac", required=True)
    ap.add_argument("--kill", required=True, help="comma-separated PIDs to SIGKILL")
    ap.add_argument("--power-cut", metavar="NS:IFACE",
                    help="also take this switch port down at the kill")
    ap.add_argument("--sync", metavar="NS:IFACE:KIND:PHASE_MS",
                    help="kill PHASE_MS after the next keep-alive seen there")
    ap.add_argument("--every-ms", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    cut = port_down_sender(a.power_cut) if a.power_cut else None
    sync = keepalive_waiter(a.sync) if a.sync else None

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

    if sync:
        sync()
    t0 = time.monotonic()
    if cut:
        cut()
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
