//! Unsolicited IPv6 Neighbor Advertisements (RFC 4861 s4.4 and s7.2.6).
//!
//! The IPv6 counterpart of a gratuitous ARP: sent to all nodes with the
//! Override flag set, it makes neighbours replace their cached link-layer
//! address for the VIP with ours.
//!
//! Frame layout, with offsets from the start of the Ethernet frame:
//!
//! ```text
//!  0  Ethernet destination 33:33:00:00:00:01 (6)
//!  6  Ethernet source (6)
//! 12  EtherType 0x86dd (2)
//! 14  IPv6: version 6, traffic class 0, flow label 0 (4)
//! 18        payload length 32 (2)
//! 20        next header 58 (1)
//! 21        hop limit 255 (1)
//! 22        source address = the VIP (16)
//! 38        destination address ff02::1 (16)
//! 54  ICMPv6: type 136 (1), code 0 (1)
//! 56          checksum (2)
//! 58          flags R|S|O (1) and reserved (3)
//! 62          target address = the VIP (16)
//! 78          option type 2 (1), length 1 (1)
//! 80          target link-layer address (6)
//! ```

use std::net::Ipv6Addr;

use super::packet::{
    get, get_u16, PacketError, ETH_DST_OFFSET, ETH_HEADER_LEN, ETH_SRC_OFFSET, ETH_TYPE_OFFSET,
};

/// Length of the frame: Ethernet 14 + IPv6 40 + ICMPv6 32.
pub const FRAME_LEN: usize = 86;

/// Ethernet address of the IPv6 all-nodes group ff02::1 (RFC 2464 s7).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
/// The IPv6 link-local all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv6 next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// Hop limit every Neighbor Discovery message must carry (RFC 4861 s7.1.2).
pub const ND_HOP_LIMIT: u8 = 255;
/// ICMPv6 type of a Neighbor Advertisement.
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// ND option type: Target Link-Layer Address.
pub const OPT_TARGET_LL_ADDR: u8 = 2;

/// Router flag, in the first flags byte.
pub const FLAG_ROUTER: u8 = 0x80;
/// Solicited flag, in the first flags byte.
pub const FLAG_SOLICITED: u8 = 0x40;
/// Override flag, in the first flags byte.
pub const FLAG_OVERRIDE: u8 = 0x20;

const IPV6_HEADER_LEN: usize = 40;
const TRUNCATED: &str = "truncated Neighbor Advertisement";
/// Neighbor Advertisement without options: type, code, checksum, flags and
/// reserved, target.
const NA_FIXED_LEN: usize = 24;
/// ICMPv6 length of our advertisement: fixed part plus one 8-octet option.
const NA_LEN: usize = NA_FIXED_LEN + 8;

// IPv6 header offsets, counted from the start of the frame.
const IP_VERSION_OFFSET: usize = ETH_HEADER_LEN;
const IP_PAYLOAD_LEN_OFFSET: usize = ETH_HEADER_LEN + 4;
const IP_NEXT_HEADER_OFFSET: usize = ETH_HEADER_LEN + 6;
const IP_HOP_LIMIT_OFFSET: usize = ETH_HEADER_LEN + 7;
const IP_SRC_OFFSET: usize = ETH_HEADER_LEN + 8;
const IP_DST_OFFSET: usize = ETH_HEADER_LEN + 24;

// ICMPv6 offsets, counted from the start of the frame.
const ICMP_OFFSET: usize = ETH_HEADER_LEN + IPV6_HEADER_LEN;
const ICMP_TYPE_OFFSET: usize = ICMP_OFFSET;
const ICMP_CODE_OFFSET: usize = ICMP_OFFSET + 1;
const ICMP_CHECKSUM_OFFSET: usize = ICMP_OFFSET + 2;
const NA_FLAGS_OFFSET: usize = ICMP_OFFSET + 4;
const NA_TARGET_OFFSET: usize = ICMP_OFFSET + 8;
const NA_OPT_TYPE_OFFSET: usize = ICMP_OFFSET + NA_FIXED_LEN;
const NA_OPT_LEN_OFFSET: usize = NA_OPT_TYPE_OFFSET + 1;
const NA_OPT_MAC_OFFSET: usize = NA_OPT_TYPE_OFFSET + 2;

/// The fields of an Ethernet/IPv6 Neighbor Advertisement, as decoded by
/// [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaInfo {
    /// Ethernet destination address.
    pub eth_dst: [u8; 6],
    /// Ethernet source address.
    pub eth_src: [u8; 6],
    /// IPv6 hop limit (255 for a valid ND message; not enforced here).
    pub hop_limit: u8,
    /// IPv6 source address.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination address.
    pub dst_ip: Ipv6Addr,
    /// First byte of the flags word: [`FLAG_ROUTER`], [`FLAG_SOLICITED`],
    /// [`FLAG_OVERRIDE`]; the other five bits are reserved.
    pub flags: u8,
    /// The advertised target address.
    pub target: Ipv6Addr,
    /// The first Target Link-Layer Address option, if any (it is optional
    /// in RFC 4861).
    pub target_mac: Option<[u8; 6]>,
}

/// Writes `bytes` at `offset`.
fn put<const N: usize>(frame: &mut [u8; FRAME_LEN], offset: usize, bytes: [u8; N]) {
    frame[offset..offset + N].copy_from_slice(&bytes);
}

/// Unsolicited Neighbor Advertisement for `ip` owned by `mac`, to all nodes,
/// with R=0, S=0, O=1 and a Target Link-Layer Address option carrying `mac`.
///
/// The IPv6 source is `ip` itself: RFC 4861 s7.2.6 has unsolicited
/// advertisements come from an address assigned to the interface, and the
/// VIP is one once we own it.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    put(&mut frame, ETH_DST_OFFSET, ALL_NODES_MAC);
    put(&mut frame, ETH_SRC_OFFSET, mac);
    put(&mut frame, ETH_TYPE_OFFSET, ETHERTYPE_IPV6.to_be_bytes());

    // Version 6 in the top nibble; traffic class and flow label zero.
    frame[IP_VERSION_OFFSET] = 0x60;
    put(
        &mut frame,
        IP_PAYLOAD_LEN_OFFSET,
        (NA_LEN as u16).to_be_bytes(),
    );
    frame[IP_NEXT_HEADER_OFFSET] = NEXT_HEADER_ICMPV6;
    frame[IP_HOP_LIMIT_OFFSET] = ND_HOP_LIMIT;
    put(&mut frame, IP_SRC_OFFSET, ip.octets());
    put(&mut frame, IP_DST_OFFSET, ALL_NODES.octets());

    frame[ICMP_TYPE_OFFSET] = ICMPV6_NEIGHBOR_ADVERT;
    frame[ICMP_CODE_OFFSET] = 0;
    frame[NA_FLAGS_OFFSET] = FLAG_OVERRIDE;
    put(&mut frame, NA_TARGET_OFFSET, ip.octets());
    frame[NA_OPT_TYPE_OFFSET] = OPT_TARGET_LL_ADDR;
    frame[NA_OPT_LEN_OFFSET] = 1; // in units of 8 octets
    put(&mut frame, NA_OPT_MAC_OFFSET, mac);

    // The checksum field is still zero here, as the computation requires.
    let sum = icmpv6_checksum(&ip, &ALL_NODES, &frame[ICMP_OFFSET..]);
    put(&mut frame, ICMP_CHECKSUM_OFFSET, sum.to_be_bytes());
    frame
}

/// Adds `bytes` to a one's-complement accumulator as big-endian 16-bit
/// words, padding an odd tail with a zero byte.
fn add_words(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// ICMPv6 checksum (RFC 4443 s2.3) over the IPv6 pseudo-header
/// (RFC 8200 s8.1: source, destination, upper-layer length, next header 58)
/// followed by `icmp`, taken exactly as given.
///
/// To fill the checksum in, call it with bytes 2..4 of `icmp` zeroed and
/// store the result there, big-endian. To verify a received message, call
/// it on the message as received: a correct checksum gives 0.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    // The pseudo-header length field is 32 bits; no ICMPv6 message comes
    // near that, so saturating is only there to avoid a panic path.
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    let mut sum = add_words(0, &src.octets());
    sum = add_words(sum, &dst.octets());
    sum = add_words(sum, &len.to_be_bytes());
    sum += u64::from(NEXT_HEADER_ICMPV6);
    sum = add_words(sum, icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Decoder for tests and captures.
///
/// Accepts an untagged Ethernet frame carrying IPv6 with ICMPv6 directly
/// after the fixed header (no extension headers), an ICMPv6 type 136 code 0
/// message of at least 24 bytes with a correct checksum, and well-formed
/// options (no zero-length option, none running past the payload). Bytes
/// after the IPv6 payload, such as Ethernet padding, are ignored. Validity
/// rules beyond the format (hop limit 255, S=0 for multicast) are left to
/// the caller, who gets the values. Never panics.
pub fn parse(frame: &[u8]) -> Result<NaInfo, PacketError> {
    if get_u16(frame, ETH_TYPE_OFFSET).ok_or(PacketError::Malformed(TRUNCATED))? != ETHERTYPE_IPV6 {
        return Err(PacketError::Malformed("EtherType is not IPv6"));
    }
    if frame.len() < ICMP_OFFSET {
        return Err(PacketError::Malformed("truncated IPv6 header"));
    }
    if frame[IP_VERSION_OFFSET] >> 4 != 6 {
        return Err(PacketError::Malformed("IP version is not 6"));
    }
    if frame[IP_NEXT_HEADER_OFFSET] != NEXT_HEADER_ICMPV6 {
        return Err(PacketError::Malformed("next header is not ICMPv6"));
    }
    let payload_len =
        get_u16(frame, IP_PAYLOAD_LEN_OFFSET).ok_or(PacketError::Malformed(TRUNCATED))?;
    let icmp = frame
        .get(ICMP_OFFSET..ICMP_OFFSET + usize::from(payload_len))
        .ok_or(PacketError::Malformed("IPv6 payload runs past the frame"))?;
    if icmp.len() < NA_FIXED_LEN {
        return Err(PacketError::Malformed(
            "ICMPv6 too short for a Neighbor Advertisement",
        ));
    }
    if icmp[0] != ICMPV6_NEIGHBOR_ADVERT || icmp[1] != 0 {
        return Err(PacketError::Malformed("not a Neighbor Advertisement"));
    }
    let ip = |offset| {
        get::<16>(frame, offset)
            .map(Ipv6Addr::from)
            .ok_or(PacketError::Malformed(TRUNCATED))
    };
    let mac = |offset| get::<6>(frame, offset).ok_or(PacketError::Malformed(TRUNCATED));
    let src_ip = ip(IP_SRC_OFFSET)?;
    let dst_ip = ip(IP_DST_OFFSET)?;
    if icmpv6_checksum(&src_ip, &dst_ip, icmp) != 0 {
        return Err(PacketError::Malformed("bad ICMPv6 checksum"));
    }

    // Options: type (1), length in 8-octet units (1), data.
    let mut target_mac = None;
    let mut rest = &icmp[NA_FIXED_LEN..];
    while let [opt_type, opt_len, ..] = *rest {
        let len = usize::from(opt_len) * 8;
        if len == 0 {
            return Err(PacketError::Malformed("zero-length ND option"));
        }
        let (option, tail) = rest
            .split_at_checked(len)
            .ok_or(PacketError::Malformed("ND option runs past the payload"))?;
        if opt_type == OPT_TARGET_LL_ADDR && target_mac.is_none() {
            target_mac = get::<6>(option, 2);
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(PacketError::Malformed("trailing byte after ND options"));
    }

    Ok(NaInfo {
        eth_dst: mac(ETH_DST_OFFSET)?,
        eth_src: mac(ETH_SRC_OFFSET)?,
        hop_limit: frame[IP_HOP_LIMIT_OFFSET],
        src_ip,
        dst_ip,
        flags: icmp[4],
        target: ip(NA_TARGET_OFFSET)?,
        target_mac,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
    use pnet_packet::icmpv6::ndp::{NdpOptionTypes, NeighborAdvertFlags, NeighborAdvertPacket};
    use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
    use pnet_packet::ip::IpNextHeaderProtocols;
    use pnet_packet::ipv6::Ipv6Packet;
    use pnet_packet::Packet;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
    const IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0x10);
    const VIP_BYTES: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// Checksum of the reference frame, worked out by hand. The nonzero
    /// 16-bit words are, in the pseudo-header, 2001+0db8+0010 (source),
    /// ff02+0001 (destination), 0020 (length) and 003a (next header), and in
    /// the message 8800 (type, code), 2000 (flags), 2001+0db8+0010 (target)
    /// and 0201+0200+000b (option). They add up to 0x2_06fb; folding the
    /// carry gives 0x06fd, whose complement is 0xf902.
    const EXPECTED_CHECKSUM: [u8; 2] = [0xf9, 0x02];

    #[test]
    fn na_fields_at_offsets() {
        let f = unsolicited_na(MAC, IP);
        assert_eq!(f.len(), 14 + 40 + 32);
        // Ethernet
        assert_eq!(f[0..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[ETH_SRC_OFFSET..ETH_SRC_OFFSET + 6], MAC);
        assert_eq!(f[ETH_TYPE_OFFSET..ETH_TYPE_OFFSET + 2], [0x86, 0xdd]);
        // IPv6
        assert_eq!(f[IP_VERSION_OFFSET..IP_VERSION_OFFSET + 4], [0x60, 0, 0, 0]);
        assert_eq!(f[IP_PAYLOAD_LEN_OFFSET..IP_PAYLOAD_LEN_OFFSET + 2], [0, 32]);
        assert_eq!(f[IP_NEXT_HEADER_OFFSET], 58);
        assert_eq!(f[IP_HOP_LIMIT_OFFSET], 255);
        assert_eq!(f[IP_SRC_OFFSET..IP_SRC_OFFSET + 16], VIP_BYTES);
        let mut ff02_1 = [0u8; 16];
        ff02_1[0] = 0xff;
        ff02_1[1] = 0x02;
        ff02_1[15] = 0x01;
        assert_eq!(f[IP_DST_OFFSET..IP_DST_OFFSET + 16], ff02_1);
        // ICMPv6
        assert_eq!(ICMP_OFFSET, 54);
        assert_eq!(f[ICMP_TYPE_OFFSET], 136);
        assert_eq!(f[ICMP_CODE_OFFSET], 0);
        assert_eq!(
            f[ICMP_CHECKSUM_OFFSET..ICMP_CHECKSUM_OFFSET + 2],
            EXPECTED_CHECKSUM
        );
        assert_eq!(f[NA_FLAGS_OFFSET..NA_FLAGS_OFFSET + 4], [0x20, 0, 0, 0]);
        assert_eq!(f[NA_TARGET_OFFSET..NA_TARGET_OFFSET + 16], VIP_BYTES);
        assert_eq!(f[NA_OPT_TYPE_OFFSET], 2);
        assert_eq!(f[NA_OPT_LEN_OFFSET], 1);
        assert_eq!(f[NA_OPT_MAC_OFFSET..NA_OPT_MAC_OFFSET + 6], MAC);
        assert_eq!(NA_OPT_MAC_OFFSET + 6, FRAME_LEN);
    }

    #[test]
    fn checksum_verifies_to_zero_and_detects_damage() {
        let f = unsolicited_na(MAC, IP);
        assert_eq!(icmpv6_checksum(&IP, &ALL_NODES, &f[ICMP_OFFSET..]), 0);
        for i in ICMP_OFFSET..FRAME_LEN {
            let mut bad = f;
            bad[i] ^= 0x01;
            assert_ne!(icmpv6_checksum(&IP, &ALL_NODES, &bad[ICMP_OFFSET..]), 0);
        }
        // Wrong pseudo-header addresses fail too.
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
        assert_ne!(icmpv6_checksum(&other, &ALL_NODES, &f[ICMP_OFFSET..]), 0);
    }

    #[test]
    fn checksum_pads_odd_lengths() {
        // One byte 0xab is the word 0xab00.
        let a = Ipv6Addr::UNSPECIFIED;
        let odd = icmpv6_checksum(&a, &a, &[0xab]);
        let even = icmpv6_checksum(&a, &a, &[0xab, 0x00]);
        // The lengths in the pseudo-header differ by one, so the sums do too.
        assert_eq!(u32::from(!odd) + 1, u32::from(!even));
    }

    #[test]
    fn pnet_decodes_the_advertisement() {
        let frame = unsolicited_na(MAC, IP);
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination().octets(), [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(eth.get_source().octets(), MAC);
        assert_eq!(eth.get_ethertype(), EtherTypes::Ipv6);

        let ip6 = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip6.get_version(), 6);
        assert_eq!(ip6.get_traffic_class(), 0);
        assert_eq!(ip6.get_flow_label(), 0);
        assert_eq!(ip6.get_payload_length(), 32);
        assert_eq!(ip6.get_next_header(), IpNextHeaderProtocols::Icmpv6);
        assert_eq!(ip6.get_hop_limit(), 255);
        assert_eq!(ip6.get_source(), IP);
        assert_eq!(ip6.get_destination(), ALL_NODES);
        assert_eq!(ip6.payload().len(), 32);

        let icmp = Icmpv6Packet::new(ip6.payload()).unwrap();
        assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
        assert_eq!(icmp.get_icmpv6_code(), Icmpv6Code(0));
        let theirs = icmpv6::checksum(&icmp, &IP, &ALL_NODES);
        assert_eq!(theirs, icmp.get_checksum());
        assert_eq!(theirs.to_be_bytes(), EXPECTED_CHECKSUM);

        let na = NeighborAdvertPacket::new(ip6.payload()).unwrap();
        assert_eq!(na.get_flags(), NeighborAdvertFlags::Override);
        assert_eq!(na.get_reserved(), 0);
        assert_eq!(na.get_target_addr(), IP);
        let options = na.get_options();
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].option_type, NdpOptionTypes::TargetLLAddr);
        assert_eq!(options[0].length, 1);
        assert_eq!(options[0].data, MAC);
    }

    #[test]
    fn checksum_agrees_with_pnet_on_many_inputs() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let src = Ipv6Addr::from(u128::from(next()) << 64 | u128::from(next()));
            let dst = Ipv6Addr::from(u128::from(next()) << 64 | u128::from(next()));
            let len = 4 + (next() % 61) as usize; // odd and even lengths
            let mut msg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let pkt = Icmpv6Packet::new(&msg).unwrap();
            let theirs = icmpv6::checksum(&pkt, &src, &dst);
            // pnet skips the checksum field; we sum it, so zero it first.
            msg[2] = 0;
            msg[3] = 0;
            assert_eq!(icmpv6_checksum(&src, &dst, &msg), theirs);
        }
    }

    #[test]
    fn parse_round_trips() {
        let info = parse(&unsolicited_na(MAC, IP)).unwrap();
        assert_eq!(
            info,
            NaInfo {
                eth_dst: ALL_NODES_MAC,
                eth_src: MAC,
                hop_limit: 255,
                src_ip: IP,
                dst_ip: ALL_NODES,
                flags: FLAG_OVERRIDE,
                target: IP,
                target_mac: Some(MAC),
            }
        );
        assert_eq!(info.flags & (FLAG_ROUTER | FLAG_SOLICITED), 0);
    }

    #[test]
    fn parse_ignores_ethernet_padding() {
        let mut padded = [0u8; 100];
        padded[..FRAME_LEN].copy_from_slice(&unsolicited_na(MAC, IP));
        assert_eq!(parse(&padded).unwrap().target, IP);
    }

    #[test]
    fn parse_accepts_an_advertisement_without_options() {
        let mut f = unsolicited_na(MAC, IP);
        f[IP_PAYLOAD_LEN_OFFSET + 1] = NA_FIXED_LEN as u8;
        f[ICMP_CHECKSUM_OFFSET] = 0;
        f[ICMP_CHECKSUM_OFFSET + 1] = 0;
        let icmp = &f[ICMP_OFFSET..ICMP_OFFSET + NA_FIXED_LEN];
        let sum = icmpv6_checksum(&IP, &ALL_NODES, icmp);
        f[ICMP_CHECKSUM_OFFSET..ICMP_CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
        let info = parse(&f[..ICMP_OFFSET + NA_FIXED_LEN]).unwrap();
        assert_eq!(info.target_mac, None);
        assert_eq!(info.target, IP);
    }

    #[test]
    fn parse_refuses_every_truncation() {
        let frame = unsolicited_na(MAC, IP);
        for len in 0..FRAME_LEN {
            assert!(
                matches!(parse(&frame[..len]), Err(PacketError::Malformed(_))),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn parse_refuses_bad_checksum_and_wrong_headers() {
        let good = unsolicited_na(MAC, IP);
        for (offset, value) in [
            (ETH_TYPE_OFFSET + 1, 0x00),     // EtherType 0x8600
            (IP_VERSION_OFFSET, 0x40),       // version 4
            (IP_NEXT_HEADER_OFFSET, 0),      // hop-by-hop options header
            (IP_PAYLOAD_LEN_OFFSET + 1, 33), // payload past the frame
            (ICMP_TYPE_OFFSET, 135),         // Neighbor Solicitation
            (ICMP_CODE_OFFSET, 1),           // nonzero code
            (ICMP_CHECKSUM_OFFSET, 0x00),    // damaged checksum
            (NA_TARGET_OFFSET + 15, 0x11),   // damaged body
            (IP_SRC_OFFSET + 15, 0x11),      // damaged pseudo-header
        ] {
            let mut bad = good;
            bad[offset] = value;
            assert!(parse(&bad).is_err(), "byte {offset} = {value:#x} accepted");
        }
    }

    /// Rewrites the option length byte and fixes the checksum, so that
    /// only the option check can reject the frame.
    fn with_option_len(opt_len: u8) -> [u8; FRAME_LEN] {
        let mut f = unsolicited_na(MAC, IP);
        f[NA_OPT_LEN_OFFSET] = opt_len;
        f[ICMP_CHECKSUM_OFFSET] = 0;
        f[ICMP_CHECKSUM_OFFSET + 1] = 0;
        let sum = icmpv6_checksum(&IP, &ALL_NODES, &f[ICMP_OFFSET..]);
        f[ICMP_CHECKSUM_OFFSET..ICMP_CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn parse_refuses_malformed_options() {
        assert!(parse(&with_option_len(1)).is_ok());
        assert!(matches!(
            parse(&with_option_len(0)),
            Err(PacketError::Malformed("zero-length ND option"))
        ));
        assert!(matches!(
            parse(&with_option_len(2)),
            Err(PacketError::Malformed("ND option runs past the payload"))
        ));
        assert!(parse(&with_option_len(255)).is_err());
    }

    #[test]
    fn parse_survives_random_input() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = unsolicited_na(MAC, IP);
        for _ in 0..20_000 {
            let len = (next() % 128) as usize;
            let mut buf = vec![0u8; len];
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
                // Anything accepted passed the checksum.
                let icmp_len = usize::from(u16::from_be_bytes([buf[18], buf[19]]));
                let icmp = &buf[ICMP_OFFSET..ICMP_OFFSET + icmp_len];
                assert_eq!(icmpv6_checksum(&info.src_ip, &info.dst_ip, icmp), 0);
            }
        }
    }
}
