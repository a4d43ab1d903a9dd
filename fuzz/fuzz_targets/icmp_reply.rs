//! Fuzzes the witness's ICMP echo reply parser (`hamon::net::icmp`): whatever a raw
//! socket hands over, as IPv4 (header first) and as ICMPv6, must never panic. A reply
//! built from the input's ident, seq and payload must parse back to them.
#![no_main]

use hamon::net::icmp::{echo_request, parse_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_reply(false, data);
    let _ = parse_reply(true, data);
    if let [a, b, c, d, ref payload @ ..] = *data {
        let (ident, seq) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        let mut reply = echo_request(true, ident, seq, payload);
        reply[0] = 129;
        assert_eq!(parse_reply(true, &reply), Some((ident, seq, payload)));
    }
});
