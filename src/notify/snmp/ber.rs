//! BER (X.690) for the subset SNMP uses, in definite, minimal form: DER-like, so every value
//! has exactly one encoding.
//!
//! ```text
//! TLV      tag (1 byte, low-tag-number form) | length | content
//! length   0..=127: one byte; else 0x80|n, then n big-endian bytes without leading zeros
//! INTEGER  two's complement, big-endian, shortest (no leading 0x00/0xff that only repeats
//!          the sign bit); unsigned application types are the same with a sign bit of 0
//! OID      (arc0*40 + arc1), then each further arc; each base-128 big-endian, high bit set
//!          on all but the last byte of an arc, no leading 0x80
//! ```
//!
//! [`decoder`] is a separate strict decoder for tests and fuzzing. It shares no code with the
//! encoder, and accepts exactly what the encoder can produce, so decode-then-encode must give
//! back the same bytes.

use super::{Error, Oid, Value};

/// The tags SNMP messages use.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// SNMPv2-SMI application types.
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIME_TICKS: u8 = 0x43;
    pub const COUNTER64: u8 = 0x46;
    /// SNMPv2-Trap-PDU: context-specific, constructed, 7.
    pub const TRAP_V2: u8 = 0xa7;
}

/// Most arcs an OID may have (RFC 2578 3.5).
pub const MAX_OID_ARCS: usize = 128;

/// Appends a length.
pub fn length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Short form: fits in 7 bits.
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a whole TLV.
pub fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    length(out, content.len());
    out.extend_from_slice(content);
}

/// Drops leading bytes of a big-endian two's complement number that only repeat the sign.
fn shortest(bytes: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < bytes.len()
        && ((bytes[i] == 0x00 && bytes[i + 1] & 0x80 == 0)
            || (bytes[i] == 0xff && bytes[i + 1] & 0x80 != 0))
    {
        i += 1;
    }
    &bytes[i..]
}

/// An INTEGER.
pub fn integer(out: &mut Vec<u8>, value: i64) {
    tlv(out, tag::INTEGER, shortest(&value.to_be_bytes()));
}

/// A non-negative integer under `tag` (Counter32, Gauge32, TimeTicks, Counter64, or INTEGER).
pub fn unsigned(out: &mut Vec<u8>, tag: u8, value: u64) {
    let mut bytes = [0; 9];
    bytes[1..].copy_from_slice(&value.to_be_bytes());
    tlv(out, tag, shortest(&bytes));
}

/// An OCTET STRING.
pub fn octets(out: &mut Vec<u8>, bytes: &[u8]) {
    tlv(out, tag::OCTET_STRING, bytes);
}

fn base128(out: &mut Vec<u8>, value: u64) {
    let groups = (64 - value.leading_zeros()).div_ceil(7).max(1);
    for g in (0..groups).rev() {
        let more = if g > 0 { 0x80 } else { 0 };
        out.push(((value >> (7 * g)) & 0x7f) as u8 | more);
    }
}

/// An OBJECT IDENTIFIER.
///
/// # Errors
///
/// `BadOid` if BER cannot carry it (see [`Oid`]).
pub fn oid(out: &mut Vec<u8>, oid: &Oid) -> Result<(), Error> {
    let arcs = oid.arcs();
    let (first, second, rest) = match arcs {
        [a, b, rest @ ..] if arcs.len() <= MAX_OID_ARCS => (*a, *b, rest),
        _ => return Err(Error::BadOid),
    };
    if first > 2 || (first < 2 && second >= 40) {
        return Err(Error::BadOid);
    }
    let mut content = Vec::with_capacity(arcs.len() + 4);
    base128(&mut content, u64::from(first) * 40 + u64::from(second));
    for arc in rest {
        base128(&mut content, u64::from(*arc));
    }
    tlv(out, tag::OID, &content);
    Ok(())
}

/// A varbind value.
///
/// # Errors
///
/// `BadOid` for an OID value BER cannot carry.
pub fn value(out: &mut Vec<u8>, value: &Value) -> Result<(), Error> {
    match value {
        Value::Integer(v) => integer(out, i64::from(*v)),
        Value::OctetString(v) => octets(out, v),
        Value::Oid(v) => oid(out, v)?,
        Value::IpAddress(v) => tlv(out, tag::IP_ADDRESS, v),
        Value::Counter32(v) => unsigned(out, tag::COUNTER32, u64::from(*v)),
        Value::Gauge32(v) => unsigned(out, tag::GAUGE32, u64::from(*v)),
        Value::TimeTicks(v) => unsigned(out, tag::TIME_TICKS, u64::from(*v)),
        Value::Counter64(v) => unsigned(out, tag::COUNTER64, *v),
    }
    Ok(())
}

/// A VarBindList: SEQUENCE OF SEQUENCE { name OID, value }.
///
/// # Errors
///
/// `BadOid` for a name or value BER cannot carry.
pub fn varbinds<'a>(
    out: &mut Vec<u8>,
    list: impl IntoIterator<Item = (&'a Oid, &'a Value)>,
) -> Result<(), Error> {
    let mut content = Vec::new();
    for (name, v) in list {
        let mut one = Vec::new();
        oid(&mut one, name)?;
        value(&mut one, v)?;
        tlv(&mut content, tag::SEQUENCE, &one);
    }
    tlv(out, tag::SEQUENCE, &content);
    Ok(())
}

/// A strict BER reader for tests and fuzzing; independent of the encoder above.
pub mod decoder {
    use super::super::{Oid, Value};

    /// Nesting deeper than this is refused (SNMP needs 6).
    const MAX_DEPTH: usize = 16;
    const CONSTRUCTED: u8 = 0x20;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Node {
        Primitive { tag: u8, content: Vec<u8> },
        Constructed { tag: u8, children: Vec<Node> },
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        Truncated,
        /// Bytes after the outermost TLV.
        Trailing,
        /// High-tag-number form, or not the tag the caller wanted.
        BadTag,
        /// Indefinite, non-minimal, or over 4 length bytes.
        BadLength,
        TooDeep,
        /// Content not valid (or not minimal) for its type.
        BadValue,
    }

    /// Exactly one TLV filling `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Node, DecodeError> {
        match one(bytes, 0)? {
            (node, []) => Ok(node),
            _ => Err(DecodeError::Trailing),
        }
    }

    fn one(bytes: &[u8], depth: usize) -> Result<(Node, &[u8]), DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DecodeError::BadTag);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(if rest.len() < n {
                    DecodeError::Truncated
                } else {
                    DecodeError::BadLength
                });
            }
            let (digits, after) = rest.split_at(n);
            rest = after;
            let len = digits
                .iter()
                .fold(0usize, |acc, d| (acc << 8) | usize::from(*d));
            if digits[0] == 0 || len < 0x80 {
                return Err(DecodeError::BadLength);
            }
            len
        };
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (content, rest) = rest.split_at(len);
        if tag & CONSTRUCTED == 0 {
            let content = content.to_vec();
            return Ok((Node::Primitive { tag, content }, rest));
        }
        if depth == MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let mut children = Vec::new();
        let mut inner = content;
        while !inner.is_empty() {
            let (child, after) = one(inner, depth + 1)?;
            children.push(child);
            inner = after;
        }
        Ok((Node::Constructed { tag, children }, rest))
    }

    impl Node {
        pub fn tag(&self) -> u8 {
            match self {
                Node::Primitive { tag, .. } | Node::Constructed { tag, .. } => *tag,
            }
        }

        /// The children of a constructed node tagged `want`.
        pub fn children(&self, want: u8) -> Result<&[Node], DecodeError> {
            match self {
                Node::Constructed { tag, children } if *tag == want => Ok(children),
                _ => Err(DecodeError::BadTag),
            }
        }

        /// The content of a primitive node tagged `want`.
        pub fn content(&self, want: u8) -> Result<&[u8], DecodeError> {
            match self {
                Node::Primitive { tag, content } if *tag == want => Ok(content),
                _ => Err(DecodeError::BadTag),
            }
        }

        /// A minimal two's complement integer of at most 8 bytes, tagged `want`.
        pub fn integer(&self, want: u8) -> Result<i64, DecodeError> {
            let c = self.content(want)?;
            let redundant =
                c.len() > 1 && ((c[0] == 0 && c[1] < 0x80) || (c[0] == 0xff && c[1] >= 0x80));
            if c.is_empty() || c.len() > 8 || redundant {
                return Err(DecodeError::BadValue);
            }
            let init: i64 = if c[0] >= 0x80 { -1 } else { 0 };
            Ok(c.iter().fold(init, |acc, b| (acc << 8) | i64::from(*b)))
        }

        /// A minimal non-negative integer of at most 64 bits, tagged `want`.
        pub fn unsigned(&self, want: u8) -> Result<u64, DecodeError> {
            let c = self.content(want)?;
            let digits = match c {
                [0, next, ..] if *next >= 0x80 => &c[1..],
                [0] => c,
                [first, ..] if *first != 0 && *first < 0x80 => c,
                _ => return Err(DecodeError::BadValue),
            };
            if digits.len() > 8 {
                return Err(DecodeError::BadValue);
            }
            Ok(digits.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
        }

        fn unsigned32(&self, want: u8) -> Result<u32, DecodeError> {
            u32::try_from(self.unsigned(want)?).map_err(|_| DecodeError::BadValue)
        }

        pub fn oid(&self) -> Result<Oid, DecodeError> {
            let c = self.content(0x06)?;
            let mut subids = Vec::new();
            let mut acc: u64 = 0;
            let mut fresh = true;
            for b in c {
                if fresh && *b == 0x80 {
                    return Err(DecodeError::BadValue);
                }
                if acc > u64::from(u32::MAX) {
                    return Err(DecodeError::BadValue);
                }
                acc = (acc << 7) | u64::from(b & 0x7f);
                fresh = b & 0x80 == 0;
                if fresh {
                    subids.push(acc);
                    acc = 0;
                }
            }
            let (first, rest) = subids.split_first().ok_or(DecodeError::BadValue)?;
            if !fresh || rest.len() + 2 > 128 {
                return Err(DecodeError::BadValue);
            }
            let (a, b) = match *first {
                f if f < 40 => (0, f),
                f if f < 80 => (1, f - 40),
                f => (2, f - 80),
            };
            let mut arcs = vec![a, u32::try_from(b).map_err(|_| DecodeError::BadValue)?];
            for s in rest {
                arcs.push(u32::try_from(*s).map_err(|_| DecodeError::BadValue)?);
            }
            Ok(Oid::from(arcs))
        }

        /// A varbind value.
        pub fn value(&self) -> Result<Value, DecodeError> {
            Ok(match self.tag() {
                0x02 => Value::Integer(
                    i32::try_from(self.integer(0x02)?).map_err(|_| DecodeError::BadValue)?,
                ),
                0x04 => Value::OctetString(self.content(0x04)?.to_vec()),
                0x06 => Value::Oid(self.oid()?),
                0x40 => Value::IpAddress(
                    self.content(0x40)?
                        .try_into()
                        .map_err(|_| DecodeError::BadValue)?,
                ),
                0x41 => Value::Counter32(self.unsigned32(0x41)?),
                0x42 => Value::Gauge32(self.unsigned32(0x42)?),
                0x43 => Value::TimeTicks(self.unsigned32(0x43)?),
                0x46 => Value::Counter64(self.unsigned(0x46)?),
                _ => return Err(DecodeError::BadTag),
            })
        }

        /// A VarBindList.
        pub fn varbinds(&self) -> Result<Vec<(Oid, Value)>, DecodeError> {
            self.children(0x30)?
                .iter()
                .map(|vb| match vb.children(0x30)? {
                    [name, value] => Ok((name.oid()?, value.value()?)),
                    _ => Err(DecodeError::BadValue),
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::decoder::{parse, DecodeError, Node};
    use super::*;

    fn enc(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn integers() {
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x02, 0x01, 0x00]),
            (1, &[0x02, 0x01, 0x01]),
            (127, &[0x02, 0x01, 0x7f]),
            (128, &[0x02, 0x02, 0x00, 0x80]),
            (256, &[0x02, 0x02, 0x01, 0x00]),
            (-1, &[0x02, 0x01, 0xff]),
            (-128, &[0x02, 0x01, 0x80]),
            (-129, &[0x02, 0x02, 0xff, 0x7f]),
            (i64::from(i32::MAX), &[0x02, 0x04, 0x7f, 0xff, 0xff, 0xff]),
            (i64::from(i32::MIN), &[0x02, 0x04, 0x80, 0x00, 0x00, 0x00]),
            (
                i64::MAX,
                &[0x02, 0x08, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            (i64::MIN, &[0x02, 0x08, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (v, want) in cases {
            let got = enc(|o| integer(o, *v));
            assert_eq!(got, *want, "{v}");
            assert_eq!(parse(&got).unwrap().integer(tag::INTEGER), Ok(*v));
        }
    }

    #[test]
    fn unsigneds() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x41, 0x01, 0x00]),
            (127, &[0x41, 0x01, 0x7f]),
            (128, &[0x41, 0x02, 0x00, 0x80]),
            (
                u64::from(u32::MAX),
                &[0x41, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                u64::MAX,
                &[
                    0x41, 0x09, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
            ),
        ];
        for (v, want) in cases {
            let got = enc(|o| unsigned(o, tag::COUNTER32, *v));
            assert_eq!(got, *want, "{v}");
            assert_eq!(parse(&got).unwrap().unsigned(tag::COUNTER32), Ok(*v));
        }
    }

    #[test]
    fn oids() {
        let oid_of = |arcs: &[u32]| enc(|o| oid(o, &Oid::from(arcs.to_vec())).unwrap());
        assert_eq!(oid_of(&[1, 3, 6, 1, 4, 1]), [0x06, 0x05, 0x2b, 6, 1, 4, 1]);
        // 99999 = 6*128^2 + 13*128 + 31; 128 = 1*128 + 0; 16383 = 127*128 + 127.
        assert_eq!(
            oid_of(&[1, 3, 6, 1, 4, 1, 99999, 128, 16383, 0]),
            [0x06, 0x0d, 0x2b, 6, 1, 4, 1, 0x86, 0x8d, 0x1f, 0x81, 0x00, 0xff, 0x7f, 0x00]
        );
        assert_eq!(
            oid_of(&[1, 2, u32::MAX]),
            [0x06, 0x06, 0x2a, 0x8f, 0xff, 0xff, 0xff, 0x7f]
        );
        // The first two arcs share a sub-identifier: 2.999 is 1079 = 8*128 + 55.
        assert_eq!(oid_of(&[2, 999, 3]), [0x06, 0x03, 0x88, 0x37, 0x03]);
        assert_eq!(oid_of(&[0, 0]), [0x06, 0x01, 0x00]);
        for bad in [&[][..], &[1], &[3, 0], &[0, 40], &[1, 40, 1]] {
            let mut out = Vec::new();
            assert!(matches!(
                oid(&mut out, &Oid::from(bad.to_vec())),
                Err(Error::BadOid)
            ));
        }
        assert!(oid(&mut Vec::new(), &Oid::from(vec![1; 129])).is_err());
        assert!(oid(&mut Vec::new(), &Oid::from(vec![1; 128])).is_ok());
        assert!(oid(&mut Vec::new(), &Oid::from(vec![2, u32::MAX])).is_ok());
    }

    #[test]
    fn lengths() {
        for (n, head) in [
            (0, &[0x04, 0x00][..]),
            (127, &[0x04, 0x7f]),
            (128, &[0x04, 0x81, 0x80]),
            (255, &[0x04, 0x81, 0xff]),
            (256, &[0x04, 0x82, 0x01, 0x00]),
            (65536, &[0x04, 0x83, 0x01, 0x00, 0x00]),
        ] {
            let got = enc(|o| octets(o, &vec![0x61; n]));
            assert_eq!(got[..head.len()], *head, "{n}");
            assert_eq!(got.len(), head.len() + n);
            assert_eq!(
                parse(&got)
                    .unwrap()
                    .content(tag::OCTET_STRING)
                    .unwrap()
                    .len(),
                n
            );
        }
    }

    #[test]
    fn values() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Integer(-2), vec![0x02, 0x01, 0xfe]),
            (Value::string("ab"), vec![0x04, 0x02, b'a', b'b']),
            (Value::Oid(Oid::from(vec![1, 3])), vec![0x06, 0x01, 0x2b]),
            (
                Value::IpAddress([127, 0, 0, 1]),
                vec![0x40, 0x04, 127, 0, 0, 1],
            ),
            (Value::Counter32(1), vec![0x41, 0x01, 0x01]),
            (Value::Gauge32(200), vec![0x42, 0x02, 0x00, 0xc8]),
            (Value::TimeTicks(0x0100), vec![0x43, 0x02, 0x01, 0x00]),
            (
                Value::Counter64(1 << 63),
                vec![0x46, 0x09, 0, 0x80, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (v, want) in cases {
            let got = enc(|o| value(o, &v).unwrap());
            assert_eq!(got, want, "{v:?}");
            assert_eq!(parse(&got).unwrap().value(), Ok(v));
        }
    }

    #[test]
    fn decoder_is_strict() {
        let refused: &[(&[u8], DecodeError)] = &[
            (&[], DecodeError::Truncated),
            (&[0x04], DecodeError::Truncated),
            (&[0x04, 0x02, 0x00], DecodeError::Truncated),
            (&[0x04, 0x00, 0x00], DecodeError::Trailing),
            (&[0x1f, 0x00], DecodeError::BadTag),
            (&[0x04, 0x80], DecodeError::BadLength),
            (&[0x04, 0x81, 0x05, 0, 0, 0, 0, 0], DecodeError::BadLength),
            (&[0x04, 0x82, 0x00, 0x80], DecodeError::BadLength),
            (&[0x04, 0x85, 1, 0, 0, 0, 0], DecodeError::BadLength),
            (&[0x30, 0x02, 0x04], DecodeError::Truncated),
        ];
        for (bytes, want) in refused {
            assert_eq!(parse(bytes), Err(*want), "{bytes:02x?}");
        }
        let bad_values: &[&[u8]] = &[
            &[0x02, 0x00],
            &[0x02, 0x02, 0x00, 0x01],
            &[0x02, 0x02, 0xff, 0x80],
            &[0x02, 0x05, 1, 0, 0, 0, 0],
            &[0x41, 0x01, 0x80],
            &[0x41, 0x05, 1, 0, 0, 0, 0],
            &[0x06, 0x00],
            &[0x06, 0x02, 0x2b, 0x81],
            &[0x06, 0x03, 0x2b, 0x80, 0x01],
            &[0x06, 0x07, 0x2b, 0x90, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x40, 0x03, 1, 2, 3],
        ];
        for bytes in bad_values {
            assert_eq!(
                parse(bytes).unwrap().value(),
                Err(DecodeError::BadValue),
                "{bytes:02x?}"
            );
        }
        let mut deep = vec![0x04, 0x00];
        for _ in 0..20 {
            deep = enc(|o| tlv(o, tag::SEQUENCE, &deep));
        }
        assert_eq!(parse(&deep), Err(DecodeError::TooDeep));
    }

    fn arb_oid() -> impl Strategy<Value = Oid> {
        (0u32..3, 0u32..40, vec(any::<u32>(), 0..20)).prop_map(|(a, b, rest)| {
            let mut arcs = vec![a, b];
            arcs.extend(rest);
            Oid::from(arcs)
        })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            vec(any::<u8>(), 0..300).prop_map(Value::OctetString),
            arb_oid().prop_map(Value::Oid),
            any::<[u8; 4]>().prop_map(Value::IpAddress),
            any::<u32>().prop_map(Value::Counter32),
            any::<u32>().prop_map(Value::Gauge32),
            any::<u32>().prop_map(Value::TimeTicks),
            any::<u64>().prop_map(Value::Counter64),
        ]
    }

    /// Rebuilds a decoded tree with the encoder.
    fn reencode(node: &Node, out: &mut Vec<u8>) {
        match node {
            Node::Primitive { tag, content } => tlv(out, *tag, content),
            Node::Constructed { tag, children } => {
                let mut inner = Vec::new();
                children.iter().for_each(|c| reencode(c, &mut inner));
                tlv(out, *tag, &inner);
            }
        }
    }

    proptest! {
        #[test]
        fn varbinds_round_trip(list in vec((arb_oid(), arb_value()), 0..12)) {
            let bytes = enc(|o| varbinds(o, list.iter().map(|(n, v)| (n, v))).unwrap());
            let node = parse(&bytes).unwrap();
            prop_assert_eq!(node.varbinds().unwrap(), list);
            prop_assert_eq!(enc(|o| reencode(&node, o)), bytes);
        }

        #[test]
        fn integers_round_trip(v in any::<i64>()) {
            prop_assert_eq!(parse(&enc(|o| integer(o, v))).unwrap().integer(tag::INTEGER), Ok(v));
        }

        #[test]
        fn what_decodes_reencodes_identically(bytes in vec(any::<u8>(), 0..64)) {
            if let Ok(node) = parse(&bytes) {
                prop_assert_eq!(enc(|o| reencode(&node, o)), bytes.clone());
                if let Ok(v) = node.value() {
                    prop_assert_eq!(enc(|o| value(o, &v).unwrap()), bytes);
                }
            }
        }
    }
}
