//! Sending raw Ethernet frames on one interface, and the announcement burst.
//!
//! The socket is `AF_PACKET`/`SOCK_RAW` with protocol 0: the kernel attaches
//! no receive hook to it, so it never queues incoming traffic. It is bound to
//! one interface and never put in promiscuous mode or joined to any group.
//! Opening it needs `CAP_NET_RAW`.

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

use super::{arp, ndisc};

// Ethernet header offsets, shared by the frame builders.
pub(crate) const ETH_DST_OFFSET: usize = 0;
pub(crate) const ETH_SRC_OFFSET: usize = 6;
pub(crate) const ETH_TYPE_OFFSET: usize = 12;
pub(crate) const ETH_HEADER_LEN: usize = 14;

const MAC_LEN: u8 = 6;

/// Longest a stop request waits during a gap between rounds.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Reads `N` bytes at `offset`, or `None` when `buf` is too short.
pub(crate) fn get<const N: usize>(buf: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    buf.get(offset..end)?.try_into().ok()
}

/// Reads a big-endian `u16` at `offset`, or `None` when `buf` is too short.
pub(crate) fn get_u16(buf: &[u8], offset: usize) -> Option<u16> {
    get::<2>(buf, offset).map(u16::from_be_bytes)
}

/// Errors from building, parsing and sending frames.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The operating system refused an operation (socket, bind, send, ioctl).
    #[error("packet socket: {0}")]
    Io(#[from] io::Error),
    /// A frame is not what the caller claims or needs.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// No interface has this name or index.
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
}

/// Builds a `sockaddr_ll` for `ifindex`, with `protocol` already in network
/// byte order and `mac` as the link-layer address.
fn link_addr(ifindex: i32, protocol: u16, mac: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types, as
    // `view_as` requires, and it is smaller than the storage. All zeros, as
    // the storage starts out, is a valid `sockaddr_ll`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol;
    ll.sll_ifindex = ifindex;
    ll.sll_halen = MAC_LEN;
    ll.sll_addr[..6].copy_from_slice(&mac);
    let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the first `len` bytes of the storage hold the `sockaddr_ll`
    // initialised above, with its family set to AF_PACKET.
    unsafe { SockAddr::new(storage, len) }
}

/// An `AF_PACKET`, `SOCK_RAW` socket bound to one interface (by ifindex),
/// protocol 0 so it receives nothing (we only send; never promiscuous).
#[derive(Debug)]
pub struct PacketSocket {
    socket: Socket,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens the socket and binds it to `ifindex`.
    ///
    /// An index of 0, one above `i32::MAX` or one the kernel does not know
    /// is [`PacketError::NoSuchInterface`]; a missing `CAP_NET_RAW` is
    /// [`PacketError::Io`] with `PermissionDenied`. The interface may be
    /// down: sending then fails, opening does not.
    pub fn open(ifindex: u32) -> Result<PacketSocket, PacketError> {
        let no_such = || PacketError::NoSuchInterface(format!("index {ifindex}"));
        let index = i32::try_from(ifindex)
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(no_such)?;
        // `None` is protocol 0: no receive hook, nothing is ever queued.
        // socket2 sets SOCK_CLOEXEC.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        // Binding with protocol 0 keeps it 0 and only ties the socket to the
        // interface (and checks that the interface exists).
        match socket.bind(&link_addr(index, 0, [0; 6])) {
            Ok(()) => Ok(PacketSocket {
                socket,
                ifindex: index,
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(no_such()),
            Err(e) => Err(e.into()),
        }
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex.unsigned_abs()
    }

    /// Sends one complete Ethernet frame (header included) out of the
    /// interface, addressed with a `sockaddr_ll` for that ifindex whose
    /// link-layer address (`sll_halen` 6) is the frame's destination MAC and
    /// whose protocol is the frame's EtherType.
    ///
    /// A frame shorter than an Ethernet header is
    /// [`PacketError::Malformed`]; the kernel's refusals (interface down,
    /// frame longer than the MTU, no buffer space) are [`PacketError::Io`].
    pub fn send(&self, frame: &[u8]) -> Result<(), PacketError> {
        let short = || PacketError::Malformed("frame shorter than an Ethernet header");
        if frame.len() < ETH_HEADER_LEN {
            return Err(short());
        }
        let dst = get::<6>(frame, ETH_DST_OFFSET).ok_or_else(short)?;
        // Kept in network byte order, as `sll_protocol` wants it.
        let ethertype = get::<2>(frame, ETH_TYPE_OFFSET).ok_or_else(short)?;
        let addr = link_addr(self.ifindex, u16::from_ne_bytes(ethertype), dst);
        loop {
            match self.socket.send_to(frame, &addr) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(_) => {
                    return Err(PacketError::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "packet socket sent part of a frame",
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// ifindex and MAC of an interface by name, via `if_nametoindex` and
/// `SIOCGIFHWADDR` (ioctl) — small, no netlink needed.
///
/// A name that cannot be an interface name (empty, 16 bytes or more, with a
/// NUL) or that no interface has is [`PacketError::NoSuchInterface`]; an
/// interface whose hardware type is not Ethernet (loopback, tun, ...) is
/// [`PacketError::Io`] with `InvalidInput`, since no ARP or NA can be sent
/// on it.
pub fn interface(name: &str) -> Result<(u32, [u8; 6]), PacketError> {
    let no_such = || PacketError::NoSuchInterface(name.to_owned());
    let os_error = |e: io::Error| {
        if e.raw_os_error() == Some(libc::ENODEV) {
            no_such()
        } else {
            PacketError::Io(e)
        }
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(no_such());
    }
    let c_name = CString::new(name).map_err(|_| no_such())?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        return Err(os_error(io::Error::last_os_error()));
    }

    // SAFETY: `ifreq` is plain old data (a name array and a union of plain
    // structs), for which all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    // The length check above leaves at least one trailing NUL.
    for (dst, src) in req.ifr_name.iter_mut().zip(c_name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: SIOCGIFHWADDR takes a pointer to an `ifreq`; it reads
    // `ifr_name` (NUL-terminated above) and writes `ifr_hwaddr`, both inside
    // `req`, which is valid and exclusively borrowed for the whole call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) };
    if rc < 0 {
        return Err(os_error(io::Error::last_os_error()));
    }
    // SAFETY: on success SIOCGIFHWADDR has written the `ifru_hwaddr` member
    // of the union; every member is plain data, so reading it is sound in
    // any case.
    let hwaddr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hwaddr.sa_family != libc::ARPHRD_ETHER {
        return Err(PacketError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "interface {name} is not Ethernet (hardware type {})",
                hwaddr.sa_family
            ),
        )));
    }
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok((ifindex, mac))
}

/// Send a burst: `count` rounds, `gap` apart; each round sends, for each
/// IPv4 VIP, the GARP request and reply, and for each IPv6 VIP, the
/// unsolicited NA. The first round goes out immediately (no sleep before
/// it). Returns how many frames were sent, stopping early (returning) if
/// `stop()` becomes true between rounds.
///
/// `stop` is checked before each gap and at least every 50 ms during it, so
/// a long gap does not hold up shutdown; it is not checked before the first
/// round. With `count` 0 or no VIPs nothing is sent and nothing slept. The
/// first failed send ends the burst with its error.
pub fn announce(
    sock: &PacketSocket,
    mac: [u8; 6],
    vips: &[IpAddr],
    count: u32,
    gap: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<usize, PacketError> {
    announce_with(
        &mut |frame| sock.send(frame),
        &mut std::thread::sleep,
        mac,
        vips,
        count,
        gap,
        stop,
    )
}

/// [`announce`] with the sending and the sleeping passed in, so that tests
/// can record them.
fn announce_with(
    send: &mut dyn FnMut(&[u8]) -> Result<(), PacketError>,
    sleep: &mut dyn FnMut(Duration),
    mac: [u8; 6],
    vips: &[IpAddr],
    count: u32,
    gap: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<usize, PacketError> {
    let mut sent = 0;
    if vips.is_empty() {
        return Ok(sent);
    }
    for round in 0..count {
        if round > 0 && pause(gap, stop, sleep) {
            break;
        }
        for vip in vips {
            match *vip {
                IpAddr::V4(ip) => {
                    send(&arp::gratuitous(arp::GarpKind::Request, mac, ip))?;
                    sent += 1;
                    send(&arp::gratuitous(arp::GarpKind::Reply, mac, ip))?;
                    sent += 1;
                }
                IpAddr::V6(ip) => {
                    send(&ndisc::unsolicited_na(mac, ip))?;
                    sent += 1;
                }
            }
        }
    }
    Ok(sent)
}

/// Sleeps for `gap` in slices of at most [`STOP_POLL`], checking `stop`
/// before each slice and at the end. Returns true when `stop` fired.
fn pause(gap: Duration, stop: &dyn Fn() -> bool, sleep: &mut dyn FnMut(Duration)) -> bool {
    let mut left = gap;
    loop {
        if stop() {
            return true;
        }
        if left.is_zero() {
            return false;
        }
        let slice = left.min(STOP_POLL);
        sleep(slice);
        left = left.saturating_sub(slice);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::cell::Cell;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
    const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Send(Vec<u8>),
        Sleep(Duration),
    }

    /// Runs `announce_with` against a recorder; `fail_at` makes the send
    /// with that index fail.
    fn record(
        vips: &[IpAddr],
        count: u32,
        gap: Duration,
        stop: &dyn Fn() -> bool,
        fail_at: Option<usize>,
    ) -> (Result<usize, PacketError>, Vec<Event>) {
        let events = std::cell::RefCell::new(Vec::new());
        let sends = Cell::new(0);
        let result = announce_with(
            &mut |frame| {
                let n = sends.get();
                sends.set(n + 1);
                if Some(n) == fail_at {
                    return Err(PacketError::Io(io::Error::from_raw_os_error(
                        libc::ENETDOWN,
                    )));
                }
                events.borrow_mut().push(Event::Send(frame.to_vec()));
                Ok(())
            },
            &mut |d| events.borrow_mut().push(Event::Sleep(d)),
            MAC,
            vips,
            count,
            gap,
            stop,
        );
        (result, events.into_inner())
    }

    fn round(vips: &[IpAddr]) -> Vec<Event> {
        let mut frames = Vec::new();
        for vip in vips {
            match *vip {
                IpAddr::V4(ip) => {
                    frames.push(Event::Send(
                        arp::gratuitous(arp::GarpKind::Request, MAC, ip).to_vec(),
                    ));
                    frames.push(Event::Send(
                        arp::gratuitous(arp::GarpKind::Reply, MAC, ip).to_vec(),
                    ));
                }
                IpAddr::V6(ip) => {
                    frames.push(Event::Send(ndisc::unsolicited_na(MAC, ip).to_vec()));
                }
            }
        }
        frames
    }

    #[test]
    fn burst_sends_rounds_gap_apart_first_one_at_once() {
        let vips = [IpAddr::V4(V4), IpAddr::V6(V6)];
        let gap = Duration::from_millis(50);
        let (result, events) = record(&vips, 3, gap, &|| false, None);
        assert_eq!(result.unwrap(), 9);
        let mut expected = round(&vips);
        for _ in 1..3 {
            expected.push(Event::Sleep(gap));
            expected.extend(round(&vips));
        }
        assert_eq!(events, expected);
    }

    #[test]
    fn long_gaps_are_sliced_and_add_up() {
        let vips = [IpAddr::V4(V4)];
        let gap = Duration::from_millis(120);
        let (result, events) = record(&vips, 2, gap, &|| false, None);
        assert_eq!(result.unwrap(), 4);
        let sleeps: Vec<Duration> = events
            .iter()
            .filter_map(|e| match e {
                Event::Sleep(d) => Some(*d),
                Event::Send(_) => None,
            })
            .collect();
        assert!(sleeps.iter().all(|d| *d <= STOP_POLL));
        assert_eq!(sleeps.iter().sum::<Duration>(), gap);
        // All the sleeping sits between the two rounds.
        assert!(matches!(events[0], Event::Send(_)));
        assert!(matches!(events[1], Event::Send(_)));
        assert!(matches!(events[events.len() - 1], Event::Send(_)));
    }

    #[test]
    fn zero_gap_sleeps_not_at_all() {
        let vips = [IpAddr::V6(V6)];
        let (result, events) = record(&vips, 4, Duration::ZERO, &|| false, None);
        assert_eq!(result.unwrap(), 4);
        assert!(events.iter().all(|e| matches!(e, Event::Send(_))));
    }

    #[test]
    fn stop_between_rounds_ends_the_burst() {
        let vips = [IpAddr::V4(V4), IpAddr::V6(V6)];
        // Already set: the first round still goes out, no sleep follows.
        let (result, events) = record(&vips, 5, Duration::from_millis(200), &|| true, None);
        assert_eq!(result.unwrap(), 3);
        assert_eq!(events, round(&vips));

        // Set during the second gap: two rounds, then it returns mid-gap.
        let checks = Cell::new(0);
        let stop = || {
            checks.set(checks.get() + 1);
            checks.get() > 6
        };
        let (result, events) = record(&vips, 5, Duration::from_millis(200), &stop, None);
        assert_eq!(result.unwrap(), 6);
        let sends = events
            .iter()
            .filter(|e| matches!(e, Event::Send(_)))
            .count();
        assert_eq!(sends, 6);
        assert!(matches!(events[events.len() - 1], Event::Sleep(_)));
    }

    #[test]
    fn nothing_to_do_means_no_sleep_and_no_frames() {
        let (result, events) = record(&[], 5, Duration::from_secs(10), &|| false, None);
        assert_eq!(result.unwrap(), 0);
        assert!(events.is_empty());
        let (result, events) = record(
            &[IpAddr::V4(V4)],
            0,
            Duration::from_secs(10),
            &|| false,
            None,
        );
        assert_eq!(result.unwrap(), 0);
        assert!(events.is_empty());
    }

    #[test]
    fn a_failed_send_ends_the_burst_with_its_error() {
        let vips = [IpAddr::V4(V4), IpAddr::V6(V6)];
        let (result, events) = record(&vips, 3, Duration::from_millis(1), &|| false, Some(4));
        match result {
            Err(PacketError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN)),
            other => panic!("expected the send error, got {other:?}"),
        }
        // Round one (3 frames), the gap, then the request of round two.
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn interface_rejects_impossible_and_unknown_names() {
        for name in ["", "a-name-longer-than-15", "nul\0name", "hamon-nosuch0"] {
            match interface(name) {
                Err(PacketError::NoSuchInterface(n)) => assert_eq!(n, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn interface_refuses_loopback_as_not_ethernet() {
        // Read-only look-up of the host's loopback; skipped where it is
        // missing, which no Linux host is.
        match interface("lo") {
            Err(PacketError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
            Err(PacketError::NoSuchInterface(_)) => eprintln!("no lo here; skipped"),
            other => panic!("lo: {other:?}"),
        }
    }

    #[test]
    fn open_refuses_impossible_indexes_before_any_syscall() {
        for index in [0, u32::MAX, 1 << 31] {
            assert!(matches!(
                PacketSocket::open(index),
                Err(PacketError::NoSuchInterface(_))
            ));
        }
    }

    #[test]
    fn link_addr_is_a_sockaddr_ll() {
        let addr = link_addr(7, 0x0608, [1, 2, 3, 4, 5, 6]);
        assert_eq!(addr.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(addr.len() as usize, mem::size_of::<libc::sockaddr_ll>());
        // SAFETY: the storage was written as a sockaddr_ll by link_addr and
        // is at least that large.
        let ll = unsafe { &*(addr.as_ptr() as *const libc::sockaddr_ll) };
        assert_eq!(ll.sll_ifindex, 7);
        assert_eq!(ll.sll_protocol, 0x0608);
        assert_eq!(ll.sll_halen, 6);
        assert_eq!(ll.sll_addr, [1, 2, 3, 4, 5, 6, 0, 0]);
    }

    #[test]
    fn error_messages_name_the_cause() {
        assert_eq!(
            PacketError::NoSuchInterface("eth9".into()).to_string(),
            "no such network interface: eth9"
        );
        assert_eq!(
            PacketError::Malformed("x").to_string(),
            "malformed frame: x"
        );
    }
}

/// The root test: a real burst across a veth pair in a private network
/// namespace, captured on the far end.
#[cfg(test)]
mod netns_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;
    use std::time::Instant;

    const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    const ROUNDS: u32 = 3;
    const GAP: Duration = Duration::from_millis(50);

    /// Runs `ip` with `args` from the calling thread, which children
    /// inherit the network namespace of.
    fn ip(args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Moves the calling thread into a fresh network namespace and checks
    /// that it really left the process's one, so that nothing after this
    /// can touch the host's interfaces.
    fn enter_private_netns() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let before = std::fs::read_link("/proc/thread-self/ns/net")
            .map_err(|e| format!("read /proc/thread-self/ns/net: {e}"))?;
        // SAFETY: unshare(CLONE_NEWNET) only changes this thread's network
        // namespace; it takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            ));
        }
        let after = std::fs::read_link("/proc/thread-self/ns/net")
            .map_err(|e| format!("read /proc/thread-self/ns/net: {e}"))?;
        let process = std::fs::read_link("/proc/self/ns/net")
            .map_err(|e| format!("read /proc/self/ns/net: {e}"))?;
        // A failure here is a broken promise, not a missing capability.
        assert_ne!(before, after, "unshare left the thread in its namespace");
        assert_ne!(process, after, "thread shares the process's namespace");
        Ok(())
    }

    /// Opens a capture socket for every EtherType, bound to `ifindex`.
    fn capture(ifindex: u32) -> Socket {
        let all = (libc::ETH_P_ALL as u16).to_be();
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(socket2::Protocol::from(i32::from(all))),
        )
        .unwrap();
        sock.bind(&link_addr(i32::try_from(ifindex).unwrap(), all, [0; 6]))
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        sock
    }

    /// Reads frames until the socket has been quiet for one read timeout.
    fn drain(mut sock: &Socket) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match sock.read(&mut buf) {
                Ok(n) => frames.push(buf[..n].to_vec()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("capture: {e}"),
            }
        }
        frames
    }

    /// The MAC `ip` reports for `dev`, to check [`interface`] against.
    fn mac_from_ip(dev: &str) -> [u8; 6] {
        let out = ip(&["-br", "link", "show", "dev", dev]).unwrap();
        let text = out.split_whitespace().nth(2).unwrap();
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(text.split(':')) {
            *m = u8::from_str_radix(part, 16).unwrap();
        }
        mac
    }

    /// Set-up failures come back as `Err` (nothing could be tested);
    /// failed checks panic.
    fn run() -> Result<(), String> {
        enter_private_netns()?;
        ip(&["link", "add", "hv0", "type", "veth", "peer", "name", "hv1"])?;
        ip(&["link", "set", "hv0", "up"])?;
        ip(&["link", "set", "hv1", "up"])?;

        let (tx_index, tx_mac) = interface("hv0").unwrap();
        let (rx_index, _) = interface("hv1").unwrap();
        assert_eq!(tx_mac, mac_from_ip("hv0"));
        assert_ne!(tx_index, rx_index);

        let rx = capture(rx_index);
        let tx = PacketSocket::open(tx_index).unwrap();
        assert_eq!(tx.ifindex(), tx_index);

        // Error paths that need a real socket.
        assert!(matches!(
            tx.send(&[0xff; 13]),
            Err(PacketError::Malformed(_))
        ));
        assert!(matches!(
            PacketSocket::open(0x7fff_fff0),
            Err(PacketError::NoSuchInterface(_))
        ));

        let vips = [IpAddr::V4(V4), IpAddr::V6(V6)];
        let started = Instant::now();
        let sent = announce(&tx, tx_mac, &vips, ROUNDS, GAP, &|| false).unwrap();
        let took = started.elapsed();
        assert_eq!(sent, 9);
        assert!(took >= GAP * (ROUNDS - 1), "burst took only {took:?}");
        assert!(took < Duration::from_secs(5), "burst took {took:?}");

        let (mut requests, mut replies, mut adverts, mut noise) = (0, 0, 0, 0);
        for frame in drain(&rx) {
            if let Ok(garp) = arp::parse(&frame) {
                if garp.sender_ip != V4 {
                    noise += 1;
                    continue;
                }
                assert_eq!(frame.len(), arp::FRAME_LEN);
                assert_eq!(garp.eth_dst, arp::BROADCAST_MAC);
                assert_eq!(garp.eth_src, tx_mac);
                assert_eq!(garp.sender_mac, tx_mac);
                assert_eq!(garp.target_ip, V4);
                match garp.oper {
                    arp::OPER_REQUEST => {
                        assert_eq!(garp.target_mac, [0; 6]);
                        requests += 1;
                    }
                    arp::OPER_REPLY => {
                        assert_eq!(garp.target_mac, tx_mac);
                        replies += 1;
                    }
                    other => panic!("ARP operation {other}"),
                }
            } else if let Ok(na) = ndisc::parse(&frame) {
                if na.target != V6 {
                    noise += 1;
                    continue;
                }
                assert_eq!(frame.len(), ndisc::FRAME_LEN);
                assert_eq!(na.eth_dst, ndisc::ALL_NODES_MAC);
                assert_eq!(na.eth_src, tx_mac);
                assert_eq!(na.hop_limit, 255);
                assert_eq!(na.src_ip, V6);
                assert_eq!(na.dst_ip, ndisc::ALL_NODES);
                assert_eq!(na.flags, ndisc::FLAG_OVERRIDE);
                assert_eq!(na.target_mac, Some(tx_mac));
                adverts += 1;
            } else {
                // Router solicitations, MLD reports, DAD probes.
                noise += 1;
            }
        }
        eprintln!("captured on hv1: {requests} requests, {replies} replies, {adverts} NAs, {noise} other frames");
        assert_eq!((requests, replies, adverts), (3, 3, 3));
        Ok(())
    }

    #[test]
    fn burst_crosses_a_veth_pair_in_a_private_netns() {
        // A thread of its own: unshare moves only the calling thread, and
        // the namespace with its veth pair goes away when the thread ends
        // and the sockets are closed.
        let outcome = std::thread::Builder::new()
            .name("netns".into())
            .spawn(run)
            .unwrap()
            .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) if std::env::var_os("CI").is_some() => {
                panic!("root veth test cannot run under CI: {why}")
            }
            Ok(Err(why)) => eprintln!("skipped the root veth test: {why}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
