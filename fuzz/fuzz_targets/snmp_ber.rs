//! Fuzzes the strict BER decoder of `hamon::notify::snmp::ber` against the encoder.
//!
//! The decoder accepts only what the encoder can produce (definite, minimal lengths; minimal
//! integers and OID sub-identifiers), so whatever decodes must re-encode to the very same
//! bytes: as a TLV tree through `ber::tlv`, as a varbind value through `ber::value`, and as a
//! VarBindList through `ber::varbinds`. Nothing may panic, however deep or long the input.
#![no_main]

use hamon::notify::snmp::ber::decoder::{parse, Node};
use hamon::notify::snmp::ber::{tlv, value, varbinds};
use libfuzzer_sys::fuzz_target;

/// Rebuilds a decoded tree with the encoder (the decoder bounds its depth).
fn reencode(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Primitive { tag, content } => tlv(out, *tag, content),
        Node::Constructed { tag, children } => {
            let mut inner = Vec::new();
            for child in children {
                reencode(child, &mut inner);
            }
            tlv(out, *tag, &inner);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(node) = parse(data) else {
        return;
    };
    let mut again = Vec::new();
    reencode(&node, &mut again);
    assert_eq!(again, data, "the tree re-encodes differently");

    if let Ok(v) = node.value() {
        let mut out = Vec::new();
        value(&mut out, &v).expect("a decoded value re-encodes");
        assert_eq!(out, data, "{v:?} re-encodes differently");
    }
    if let Ok(list) = node.varbinds() {
        let mut out = Vec::new();
        varbinds(&mut out, list.iter().map(|(n, v)| (n, v))).expect("a decoded list re-encodes");
        assert_eq!(out, data, "{list:?} re-encodes differently");
    }
});
