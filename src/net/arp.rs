//! Gratuitous ARP frames (Ethernet + ARP for IPv4, RFC 826 / RFC 5227).
//!
//! A gratuitous ARP tells the segment that `ip` now lives at `mac`, so that
//! switches relearn the port and neighbours refresh their ARP caches after a
//! failover. Two forms are built, and an agent sends both, as keepalived does:
//! a request (the RFC 5227 "ARP Announcement") and a broadcast reply, because
//! some hosts only update their caches from one of them.
//!
//! Frame layout, with offsets from the start of the Ethernet frame:
//!
//! ```text
//!  0  destination MAC (6)        20  operation (2)
//!  6  source MAC (6)             22  sender hardware address (6)
//! 12  EtherType 0x0806 (2)       28  sender protocol address (4)
//! 14  hardware type 1 (2)        32  target hardware address (6)
//! 16  protocol type 0x0800 (2)   38  target protocol address (4)
//! 18  hw len 6 (1), proto len 4 (1)
//! ```

use std::net::Ipv4Addr;

use super::packet::{
    get, get_u16, PacketError, ETH_DST_OFFSET, ETH_HEADER_LEN, ETH_SRC_OFFSET, ETH_TYPE_OFFSET,
};

/// Length of a gratuitous ARP frame: 14 bytes of Ethernet header plus a
/// 28-byte ARP body. No trailing padding is added; drivers pad to the
/// 60-byte minimum on the wire.
pub const FRAME_LEN: usize = 42;

/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4, used as the ARP protocol type.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// ARP operation: request.
pub const OPER_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const OPER_REPLY: u16 = 2;

// ARP body offsets, counted from the start of the frame.
const HTYPE_OFFSET: usize = ETH_HEADER_LEN;
const PTYPE_OFFSET: usize = ETH_HEADER_LEN + 2;
const HLEN_OFFSET: usize = ETH_HEADER_LEN + 4;
const PLEN_OFFSET: usize = ETH_HEADER_LEN + 5;
const OPER_OFFSET: usize = ETH_HEADER_LEN + 6;
const SHA_OFFSET: usize = ETH_HEADER_LEN + 8;
const SPA_OFFSET: usize = ETH_HEADER_LEN + 14;
const THA_OFFSET: usize = ETH_HEADER_LEN + 18;
const TPA_OFFSET: usize = ETH_HEADER_LEN + 24;

const MAC_LEN: u8 = 6;
const IPV4_LEN: u8 = 4;

/// Which of the two gratuitous ARP forms to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarpKind {
    /// Operation 1, target hardware address all zeros (RFC 5227 announcement).
    Request,
    /// Operation 2, target hardware address equal to the sender's.
    Reply,
}

/// The fields of an Ethernet/IPv4 ARP frame, as decoded by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpInfo {
    /// Ethernet destination address.
    pub eth_dst: [u8; 6],
    /// Ethernet source address.
    pub eth_src: [u8; 6],
    /// ARP operation: [`OPER_REQUEST`] or [`OPER_REPLY`].
    pub oper: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpInfo {
    /// True when sender and target protocol addresses are equal, which is
    /// what makes an ARP packet gratuitous.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// Writes `value` in network byte order at `offset`.
fn put_u16(frame: &mut [u8; FRAME_LEN], offset: usize, value: u16) {
    frame[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes `bytes` at `offset`.
fn put<const N: usize>(frame: &mut [u8; FRAME_LEN], offset: usize, bytes: [u8; N]) {
    frame[offset..offset + N].copy_from_slice(&bytes);
}

/// Gratuitous ARP for `ip` owned by `mac`: sender = target = ip, sender hw = mac.
///
/// Request: dst broadcast ff:ff:ff:ff:ff:ff, oper 1, target hw 00:00:00:00:00:00.
/// Reply: dst broadcast, oper 2, target hw = mac (RFC 5227 / keepalived style:
/// both forms are sent). The Ethernet source is `mac` in both.
pub fn gratuitous(kind: GarpKind, mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let (oper, target_mac) = match kind {
        GarpKind::Request => (OPER_REQUEST, [0u8; 6]),
        GarpKind::Reply => (OPER_REPLY, mac),
    };
    let mut frame = [0u8; FRAME_LEN];
    put(&mut frame, ETH_DST_OFFSET, BROADCAST_MAC);
    put(&mut frame, ETH_SRC_OFFSET, mac);
    put_u16(&mut frame, ETH_TYPE_OFFSET, ETHERTYPE_ARP);
    put_u16(&mut frame, HTYPE_OFFSET, HTYPE_ETHERNET);
    put_u16(&mut frame, PTYPE_OFFSET, ETHERTYPE_IPV4);
    frame[HLEN_OFFSET] = MAC_LEN;
    frame[PLEN_OFFSET] = IPV4_LEN;
    put_u16(&mut frame, OPER_OFFSET, oper);
    put(&mut frame, SHA_OFFSET, mac);
    put(&mut frame, SPA_OFFSET, ip.octets());
    put(&mut frame, THA_OFFSET, target_mac);
    put(&mut frame, TPA_OFFSET, ip.octets());
    frame
}

/// Minimal decoder for tests and captures.
///
/// Accepts an untagged Ethernet frame carrying an Ethernet/IPv4 ARP request
/// or reply (trailing bytes, such as the padding to 60 bytes seen on real
/// links, are ignored) and returns its fields. Anything else, including
/// VLAN-tagged frames and ARP operations other than 1 and 2, is
/// [`PacketError::Malformed`]. Never panics.
pub fn parse(frame: &[u8]) -> Result<ArpInfo, PacketError> {
    if frame.len() < FRAME_LEN {
        return Err(PacketError::Malformed(
            "frame too short for Ethernet/IPv4 ARP",
        ));
    }
    let field = |offset| get_u16(frame, offset).ok_or(PacketError::Malformed("truncated ARP"));
    if field(ETH_TYPE_OFFSET)? != ETHERTYPE_ARP {
        return Err(PacketError::Malformed("EtherType is not ARP"));
    }
    if field(HTYPE_OFFSET)? != HTYPE_ETHERNET || frame[HLEN_OFFSET] != MAC_LEN {
        return Err(PacketError::Malformed("ARP hardware type is not Ethernet"));
    }
    if field(PTYPE_OFFSET)? != ETHERTYPE_IPV4 || frame[PLEN_OFFSET] != IPV4_LEN {
        return Err(PacketError::Malformed("ARP protocol type is not IPv4"));
    }
    let oper = field(OPER_OFFSET)?;
    if oper != OPER_REQUEST && oper != OPER_REPLY {
        return Err(PacketError::Malformed(
            "ARP operation is not request or reply",
        ));
    }
    let mac = |offset| get::<6>(frame, offset).ok_or(PacketError::Malformed("truncated ARP"));
    let ip = |offset| {
        get::<4>(frame, offset)
            .map(Ipv4Addr::from)
            .ok_or(PacketError::Malformed("truncated ARP"))
    };
    Ok(ArpInfo {
        eth_dst: mac(ETH_DST_OFFSET)?,
        eth_src: mac(ETH_SRC_OFFSET)?,
        oper,
        sender_mac: mac(SHA_OFFSET)?,
        sender_ip: ip(SPA_OFFSET)?,
        target_mac: mac(THA_OFFSET)?,
        target_ip: ip(TPA_OFFSET)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket};
    use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
    use pnet_packet::Packet;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    /// The request, written out byte by byte from RFC 826 / RFC 5227.
    const EXPECTED_REQUEST: [u8; FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, // Ethernet source
        0x08, 0x06, // EtherType ARP
        0x00, 0x01, // hardware type Ethernet
        0x08, 0x00, // protocol type IPv4
        0x06, 0x04, // address lengths
        0x00, 0x01, // operation: request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0b, // sender hardware address
        192, 0, 2, 10, // sender protocol address
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target hardware address
        192, 0, 2, 10, // target protocol address
    ];

    #[test]
    fn request_matches_hand_written_bytes() {
        assert_eq!(gratuitous(GarpKind::Request, MAC, IP), EXPECTED_REQUEST);
    }

    #[test]
    fn request_fields_at_offsets() {
        let f = gratuitous(GarpKind::Request, MAC, IP);
        assert_eq!(f[ETH_DST_OFFSET..ETH_DST_OFFSET + 6], [0xff; 6]);
        assert_eq!(f[ETH_SRC_OFFSET..ETH_SRC_OFFSET + 6], MAC);
        assert_eq!(f[ETH_TYPE_OFFSET..ETH_TYPE_OFFSET + 2], [0x08, 0x06]);
        assert_eq!(f[HTYPE_OFFSET..HTYPE_OFFSET + 2], [0x00, 0x01]);
        assert_eq!(f[PTYPE_OFFSET..PTYPE_OFFSET + 2], [0x08, 0x00]);
        assert_eq!(f[HLEN_OFFSET], 6);
        assert_eq!(f[PLEN_OFFSET], 4);
        assert_eq!(f[OPER_OFFSET..OPER_OFFSET + 2], [0x00, 0x01]);
        assert_eq!(f[SHA_OFFSET..SHA_OFFSET + 6], MAC);
        assert_eq!(f[SPA_OFFSET..SPA_OFFSET + 4], [192, 0, 2, 10]);
        assert_eq!(f[THA_OFFSET..THA_OFFSET + 6], [0; 6]);
        assert_eq!(f[TPA_OFFSET..TPA_OFFSET + 4], [192, 0, 2, 10]);
        assert_eq!(TPA_OFFSET + 4, FRAME_LEN);
    }

    #[test]
    fn reply_fields_at_offsets() {
        let f = gratuitous(GarpKind::Reply, MAC, IP);
        assert_eq!(f[ETH_DST_OFFSET..ETH_DST_OFFSET + 6], [0xff; 6]);
        assert_eq!(f[ETH_SRC_OFFSET..ETH_SRC_OFFSET + 6], MAC);
        assert_eq!(f[ETH_TYPE_OFFSET..ETH_TYPE_OFFSET + 2], [0x08, 0x06]);
        assert_eq!(f[OPER_OFFSET..OPER_OFFSET + 2], [0x00, 0x02]);
        assert_eq!(f[SHA_OFFSET..SHA_OFFSET + 6], MAC);
        assert_eq!(f[SPA_OFFSET..SPA_OFFSET + 4], [192, 0, 2, 10]);
        assert_eq!(f[THA_OFFSET..THA_OFFSET + 6], MAC);
        assert_eq!(f[TPA_OFFSET..TPA_OFFSET + 4], [192, 0, 2, 10]);
        // Only the operation and the target hardware address differ.
        let mut expected = EXPECTED_REQUEST;
        expected[OPER_OFFSET + 1] = 2;
        expected[THA_OFFSET..THA_OFFSET + 6].copy_from_slice(&MAC);
        assert_eq!(f, expected);
    }

    #[test]
    fn pnet_decodes_both_forms() {
        for (kind, oper, tha) in [
            (GarpKind::Request, ArpOperations::Request, [0; 6]),
            (GarpKind::Reply, ArpOperations::Reply, MAC),
        ] {
            let frame = gratuitous(kind, MAC, IP);
            let eth = EthernetPacket::new(&frame).unwrap();
            assert_eq!(eth.get_destination().octets(), [0xff; 6]);
            assert_eq!(eth.get_source().octets(), MAC);
            assert_eq!(eth.get_ethertype(), EtherTypes::Arp);
            let arp = ArpPacket::new(eth.payload()).unwrap();
            assert_eq!(arp.get_hardware_type(), ArpHardwareTypes::Ethernet);
            assert_eq!(arp.get_protocol_type(), EtherTypes::Ipv4);
            assert_eq!(arp.get_hw_addr_len(), 6);
            assert_eq!(arp.get_proto_addr_len(), 4);
            assert_eq!(arp.get_operation(), oper);
            assert_eq!(arp.get_sender_hw_addr().octets(), MAC);
            assert_eq!(arp.get_sender_proto_addr(), IP);
            assert_eq!(arp.get_target_hw_addr().octets(), tha);
            assert_eq!(arp.get_target_proto_addr(), IP);
            assert_eq!(arp.packet().len(), FRAME_LEN - ETH_HEADER_LEN);
        }
    }

    #[test]
    fn parse_round_trips() {
        let req = parse(&gratuitous(GarpKind::Request, MAC, IP)).unwrap();
        assert_eq!(
            req,
            ArpInfo {
                eth_dst: BROADCAST_MAC,
                eth_src: MAC,
                oper: OPER_REQUEST,
                sender_mac: MAC,
                sender_ip: IP,
                target_mac: [0; 6],
                target_ip: IP,
            }
        );
        assert!(req.is_gratuitous());
        let rep = parse(&gratuitous(GarpKind::Reply, MAC, IP)).unwrap();
        assert_eq!(rep.oper, OPER_REPLY);
        assert_eq!(rep.target_mac, MAC);
        assert!(rep.is_gratuitous());
    }

    #[test]
    fn parse_accepts_trailing_padding() {
        let mut padded = [0u8; 60];
        padded[..FRAME_LEN].copy_from_slice(&gratuitous(GarpKind::Reply, MAC, IP));
        assert_eq!(parse(&padded).unwrap().oper, OPER_REPLY);
    }

    #[test]
    fn parse_refuses_every_truncation() {
        for kind in [GarpKind::Request, GarpKind::Reply] {
            let frame = gratuitous(kind, MAC, IP);
            for len in 0..FRAME_LEN {
                assert!(
                    matches!(parse(&frame[..len]), Err(PacketError::Malformed(_))),
                    "prefix of {len} bytes accepted"
                );
            }
        }
    }

    #[test]
    fn parse_refuses_wrong_header_fields() {
        let good = gratuitous(GarpKind::Request, MAC, IP);
        for (offset, value) in [
            (ETH_TYPE_OFFSET, 0x86),     // EtherType 0x8606
            (ETH_TYPE_OFFSET + 1, 0x00), // EtherType 0x0800 (IPv4)
            (HTYPE_OFFSET + 1, 6),       // IEEE 802 hardware type
            (PTYPE_OFFSET, 0x86),        // protocol 0x8600
            (HLEN_OFFSET, 8),            // odd hardware length
            (PLEN_OFFSET, 16),           // IPv6-sized protocol length
            (OPER_OFFSET + 1, 3),        // RARP request
            (OPER_OFFSET + 1, 0),        // no operation
        ] {
            let mut bad = good;
            bad[offset] = value;
            assert!(parse(&bad).is_err(), "byte {offset} = {value:#x} accepted");
        }
    }

    #[test]
    fn parse_survives_random_input() {
        // xorshift64 with a fixed seed: reproducible, no extra dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = gratuitous(GarpKind::Request, MAC, IP);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut buf = vec![0u8; len];
            // Half the inputs start from a valid frame with a few bytes
            // flipped, so the checks past the EtherType get exercised too.
            if next() % 2 == 0 {
                let n = len.min(FRAME_LEN);
                buf[..n].copy_from_slice(&template[..n]);
                for _ in 0..(next() % 3) {
                    if len > 0 {
                        let i = (next() % len as u64) as usize;
                        buf[i] ^= next() as u8;
                    }
                }
            } else {
                buf.iter_mut().for_each(|b| *b = next() as u8);
            }
            if let Ok(info) = parse(&buf) {
                accepted += 1;
                assert!(buf.len() >= FRAME_LEN);
                assert!(info.oper == OPER_REQUEST || info.oper == OPER_REPLY);
            }
        }
        assert!(
            accepted > 0,
            "the mutation half never produced a valid frame"
        );
    }
}
