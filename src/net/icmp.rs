//! ICMP and ICMPv6 echo, for the witness check (`[witness]`): requests built and replies
//! parsed on byte-offset constants, and a small pinger on a raw socket.
//!
//! The echo message, after the IPv4 header (which a raw IPv4 socket hands over too) or
//! straight away for ICMPv6:
//!
//! ```text
//! offset  size  field
//! 0       1     type      8 / 0 (IPv4 request / reply), 128 / 129 (ICMPv6)
//! 1       1     code      0
//! 2       2     checksum  IPv4: ones' complement of the message; ICMPv6: the kernel's
//! 4       2     ident     ours, random per pinger
//! 6       2     seq       +1 per request
//! 8       ..    payload
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const TYPE: usize = 0;
const CODE: usize = 1;
const CHECKSUM: usize = 2;
const IDENT: usize = 4;
const SEQ: usize = 6;
const PAYLOAD: usize = 8;

const V4_REQUEST: u8 = 8;
const V4_REPLY: u8 = 0;
const V6_REQUEST: u8 = 128;
const V6_REPLY: u8 = 129;

/// The IPv4 header's version and length byte, and the smallest header.
const V4_VERSION_IHL: usize = 0;
const V4_MIN_HEADER: usize = 20;

/// An echo request carrying `payload` (`v6`: ICMPv6, whose checksum the kernel fills in).
pub fn echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; PAYLOAD + payload.len()];
    m[TYPE] = if v6 { V6_REQUEST } else { V4_REQUEST };
    m[CODE] = 0;
    m[IDENT..IDENT + 2].copy_from_slice(&ident.to_be_bytes());
    m[SEQ..SEQ + 2].copy_from_slice(&seq.to_be_bytes());
    m[PAYLOAD..].copy_from_slice(payload);
    if !v6 {
        let sum = checksum(&m);
        m[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }
    m
}

/// The (ident, seq, payload) of an echo reply as a raw socket hands it over (`v6`: the
/// ICMPv6 message alone; else the IPv4 header first). `None` for anything else, or too
/// short.
pub fn parse_reply(v6: bool, packet: &[u8]) -> Option<(u16, u16, &[u8])> {
    let message = if v6 {
        packet
    } else {
        let first = *packet.get(V4_VERSION_IHL)?;
        let header = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header < V4_MIN_HEADER {
            return None;
        }
        packet.get(header..)?
    };
    let want = if v6 { V6_REPLY } else { V4_REPLY };
    if *message.get(TYPE)? != want || *message.get(CODE)? != 0 {
        return None;
    }
    let ident = u16::from_be_bytes(message.get(IDENT..IDENT + 2)?.try_into().ok()?);
    let seq = u16::from_be_bytes(message.get(SEQ..SEQ + 2)?.try_into().ok()?);
    Some((ident, seq, message.get(PAYLOAD..)?))
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Echo requests to one address, on a raw ICMP socket (CAP_NET_RAW).
#[derive(Debug)]
pub struct Pinger {
    sock: UdpSocket,
    target: IpAddr,
    ident: u16,
    seq: u16,
    /// Random per pinger, echoed back: a reply to someone else's request that happens to
    /// share the ident and seq is not ours.
    nonce: [u8; 8],
}

impl Pinger {
    pub fn new(target: IpAddr) -> io::Result<Pinger> {
        let (domain, protocol) = match target {
            IpAddr::V4(_) => (socket2::Domain::IPV4, socket2::Protocol::ICMPV4),
            IpAddr::V6(_) => (socket2::Domain::IPV6, socket2::Protocol::ICMPV6),
        };
        let sock = socket2::Socket::new(domain, socket2::Type::RAW, Some(protocol))?;
        let mut ident = [0u8; 2];
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut ident).map_err(|e| io::Error::other(e.to_string()))?;
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Pinger {
            // A raw socket read through UdpSocket: datagrams, with the sender's address.
            sock: sock.into(),
            target,
            ident: u16::from_be_bytes(ident),
            seq: 0,
            nonce,
        })
    }

    /// One request; true when the target's reply to it comes within `timeout`. Other
    /// ICMP traffic the raw socket sees (other pingers, other hosts) is skipped.
    pub fn ping(&mut self, timeout: Duration) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let v6 = self.target.is_ipv6();
        let request = echo_request(v6, self.ident, self.seq, &self.nonce);
        self.sock
            .send_to(&request, SocketAddr::new(self.target, 0))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let reply = buf.get(..n).and_then(|p| parse_reply(v6, p));
                    let mine = Some((self.ident, self.seq, &self.nonce[..]));
                    if from.ip() == self.target && reply == mine {
                        return Ok(true);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header of 20 bytes (IHL 5) before `icmp`.
    fn v4(icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 1, 192, 0, 2, 11,
        ];
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn a_v4_request_carries_a_checksum_that_sums_to_zero() {
        let r = echo_request(false, 0xbeef, 7, b"nonce-01");
        assert_eq!(r[TYPE], V4_REQUEST);
        assert_eq!(&r[IDENT..SEQ], &[0xbe, 0xef]);
        assert_eq!(&r[SEQ..PAYLOAD], &[0, 7]);
        // Summed with its checksum in place, a message checks to zero.
        assert_eq!(checksum(&r), 0);
    }

    #[test]
    fn a_v6_request_leaves_the_checksum_to_the_kernel() {
        let r = echo_request(true, 1, 2, b"x");
        assert_eq!(r[TYPE], V6_REQUEST);
        assert_eq!(&r[CHECKSUM..IDENT], &[0, 0]);
    }

    #[test]
    fn replies_are_read_after_the_ipv4_header_of_any_length() {
        let mut reply = echo_request(false, 0x1234, 9, b"abc");
        reply[TYPE] = V4_REPLY;
        assert_eq!(
            parse_reply(false, &v4(&reply)),
            Some((0x1234, 9, &b"abc"[..]))
        );
        // With 4 bytes of IPv4 options (IHL 6).
        let mut long = v4(&[0, 0, 0, 0]);
        long[0] = 0x46;
        long.extend_from_slice(&reply);
        assert_eq!(parse_reply(false, &long), Some((0x1234, 9, &b"abc"[..])));
        let mut reply6 = echo_request(true, 0x1234, 9, b"");
        reply6[TYPE] = V6_REPLY;
        assert_eq!(parse_reply(true, &reply6), Some((0x1234, 9, &b""[..])));
    }

    #[test]
    fn anything_but_an_echo_reply_is_refused() {
        // Our own request, seen on the way out; an unreachable; a truncated reply; a bad
        // header length; not IPv4 at all.
        let request = echo_request(false, 1, 1, b"n");
        assert_eq!(parse_reply(false, &v4(&request)), None);
        assert_eq!(parse_reply(false, &v4(&[3, 1, 0, 0, 0, 0, 0, 0])), None);
        assert_eq!(parse_reply(false, &v4(&[0, 0, 0, 0, 0])), None);
        let mut short = v4(&[0; 8]);
        short[0] = 0x44;
        assert_eq!(parse_reply(false, &short), None);
        assert_eq!(parse_reply(false, &[0x60; 48]), None);
        assert_eq!(parse_reply(false, &[]), None);
        assert_eq!(parse_reply(true, &[V6_REPLY, 1, 0, 0, 0, 0, 0, 0]), None);
    }
}
