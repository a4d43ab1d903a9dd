//! SNMPv2-Trap PDUs and the messages that carry them.
//!
//! ```text
//! SNMPv2-Trap-PDU  [7] { request-id INTEGER, error-status 0, error-index 0,
//!                        varbinds { sysUpTime.0 TimeTicks, snmpTrapOID.0 OID, ... } }
//! v2c message      SEQUENCE { version 1, community OCTET STRING, PDU }        (RFC 1901)
//! v3 message       SEQUENCE { version 3,                                      (RFC 3412)
//!                    msgGlobalData SEQUENCE { msgID, msgMaxSize, msgFlags OCTET STRING (1),
//!                                             msgSecurityModel 3 (USM) },
//!                    msgSecurityParameters OCTET STRING containing          (RFC 3414)
//!                      SEQUENCE { engineID, engineBoots, engineTime, userName,
//!                                 authParams OCTET STRING (mac_len), privParams (salt) },
//!                    msgData: ScopedPDU, or OCTET STRING of it encrypted }
//! ScopedPDU        SEQUENCE { contextEngineID = our engine id, contextName "", PDU }
//! ```
//!
//! The MAC covers the whole message with authParams zeroed; it is computed last and written
//! over the zeros. A trap is not reportable, so msgFlags is auth (1) or auth|priv (3).

use super::ber::{self, tag};
use super::usm::{self, AuthProto, PrivProto, SALT_LEN};
use super::{Error, Notification, Oid, Value};

/// Largest UDP payload over IPv4; also the msgMaxSize announced.
pub const MAX_MESSAGE: usize = 65507;
/// SNMPv2-MIB::sysUpTime.0.
pub const SYS_UPTIME_0: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
/// SNMPv2-MIB::snmpTrapOID.0.
pub const SNMP_TRAP_OID_0: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

const VERSION_V2C: i64 = 1;
const VERSION_V3: i64 = 3;
const SECURITY_MODEL_USM: i64 = 3;
const FLAG_AUTH: u8 = 0x01;
const FLAG_PRIV: u8 = 0x02;

/// One trap's PDU fields.
#[derive(Debug)]
pub struct Pdu<'a> {
    pub request_id: u32,
    /// sysUpTime.0 in hundredths of a second.
    pub uptime_centis: u32,
    pub notification: &'a Notification,
}

/// The sending (authoritative) engine.
#[derive(Debug)]
pub struct Engine<'a> {
    pub id: &'a [u8],
    pub boots: u32,
    /// Seconds since `boots` last changed.
    pub time: u32,
}

/// A v3 user with localised keys.
#[derive(Debug)]
pub struct Security<'a> {
    pub user: &'a [u8],
    pub auth: (AuthProto, &'a [u8]),
    /// Protocol, key, and this message's salt.
    pub privacy: Option<(PrivProto, &'a [u8], [u8; SALT_LEN])>,
}

fn seq(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    ber::tlv(out, tag, content);
}

/// The SNMPv2-Trap-PDU.
///
/// # Errors
///
/// `BadOid` for an OID BER cannot carry.
pub fn encode_pdu(pdu: &Pdu<'_>) -> Result<Vec<u8>, Error> {
    let uptime = (
        Oid::from_static(SYS_UPTIME_0),
        Value::TimeTicks(pdu.uptime_centis),
    );
    let trap_oid = (
        Oid::from_static(SNMP_TRAP_OID_0),
        Value::Oid(pdu.notification.trap_oid.clone()),
    );
    let list = [&uptime, &trap_oid]
        .into_iter()
        .chain(&pdu.notification.varbinds)
        .map(|(n, v)| (n, v));
    let mut content = Vec::new();
    ber::integer(&mut content, i64::from(pdu.request_id));
    ber::integer(&mut content, 0);
    ber::integer(&mut content, 0);
    ber::varbinds(&mut content, list)?;
    let mut out = Vec::with_capacity(content.len() + 4);
    seq(&mut out, tag::TRAP_V2, &content);
    Ok(out)
}

fn checked(message: Vec<u8>) -> Result<Vec<u8>, Error> {
    if message.len() > MAX_MESSAGE {
        return Err(Error::TooLong);
    }
    Ok(message)
}

/// An SNMPv2c message.
///
/// # Errors
///
/// `BadOid`, and `TooLong` past [`MAX_MESSAGE`].
pub fn encode_v2c(community: &[u8], pdu: &Pdu<'_>) -> Result<Vec<u8>, Error> {
    let mut content = Vec::new();
    ber::integer(&mut content, VERSION_V2C);
    ber::octets(&mut content, community);
    content.extend(encode_pdu(pdu)?);
    let mut out = Vec::with_capacity(content.len() + 4);
    seq(&mut out, tag::SEQUENCE, &content);
    checked(out)
}

/// An SNMPv3 USM message, authenticated and, with `security.privacy`, encrypted.
///
/// # Errors
///
/// `BadOid`, `BadKeyLength` for keys that do not fit their protocols, and `TooLong`.
pub fn encode_v3(
    msg_id: u32,
    engine: &Engine<'_>,
    security: &Security<'_>,
    pdu: &Pdu<'_>,
) -> Result<Vec<u8>, Error> {
    let mut scoped_content = Vec::new();
    ber::octets(&mut scoped_content, engine.id);
    ber::octets(&mut scoped_content, b"");
    scoped_content.extend(encode_pdu(pdu)?);
    let mut scoped = Vec::new();
    seq(&mut scoped, tag::SEQUENCE, &scoped_content);

    let (flags, msg_data, salt) = match &security.privacy {
        Some((PrivProto::Aes128, key, salt)) => {
            let iv = usm::aes_iv(engine.boots, engine.time, *salt);
            usm::aes_cfb(key, iv, &mut scoped, true)?;
            let mut data = Vec::with_capacity(scoped.len() + 4);
            ber::octets(&mut data, &scoped);
            (FLAG_AUTH | FLAG_PRIV, data, &salt[..])
        }
        None => (FLAG_AUTH, scoped, &[][..]),
    };

    let mut global = Vec::new();
    ber::integer(&mut global, i64::from(msg_id));
    ber::integer(&mut global, MAX_MESSAGE as i64);
    ber::octets(&mut global, &[flags]);
    ber::integer(&mut global, SECURITY_MODEL_USM);

    let (auth_proto, auth_key) = security.auth;
    let mut usm_prefix = Vec::new();
    ber::octets(&mut usm_prefix, engine.id);
    ber::integer(&mut usm_prefix, i64::from(engine.boots));
    ber::integer(&mut usm_prefix, i64::from(engine.time));
    ber::octets(&mut usm_prefix, security.user);
    let mut usm_content = usm_prefix.clone();
    ber::octets(&mut usm_content, &vec![0; auth_proto.mac_len()]);
    ber::octets(&mut usm_content, salt);
    let mut usm_seq = Vec::new();
    seq(&mut usm_seq, tag::SEQUENCE, &usm_content);

    let mut body = Vec::new();
    ber::integer(&mut body, VERSION_V3);
    seq(&mut body, tag::SEQUENCE, &global);
    let before_params = body.len();
    ber::octets(&mut body, &usm_seq);
    let params_header = body.len() - before_params - usm_seq.len();
    body.extend(msg_data);
    let mut message = Vec::with_capacity(body.len() + 4);
    seq(&mut message, tag::SEQUENCE, &body);
    let message = checked(message)?;

    // Where authParams' content starts: each enclosing header, the fields before it, and
    // authParams' own tag and (short-form) length byte.
    let mac_at = (message.len() - body.len())
        + before_params
        + params_header
        + (usm_seq.len() - usm_content.len())
        + usm_prefix.len()
        + 2;
    let mac = usm::authenticate(auth_proto, auth_key, &message)?;
    let mut message = message;
    message[mac_at..mac_at + mac.len()].copy_from_slice(&mac);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::super::ber::decoder::{parse, Node};
    use super::super::{HAMON_FAILOVER, HAMON_NODE_NAME};
    use super::*;

    fn notification() -> Notification {
        Notification {
            trap_oid: Oid::from_static(HAMON_FAILOVER),
            varbinds: vec![(
                Oid::from_static(HAMON_NODE_NAME).child(0),
                Value::string("a"),
            )],
        }
    }

    #[test]
    fn v2c_golden() {
        let n = notification();
        let pdu = Pdu {
            request_id: 1,
            uptime_centis: 100,
            notification: &n,
        };
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x30, 0x53,
              0x02, 0x01, 0x01,                                         // version 2c
              0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c',           // community
              0xa7, 0x46,                                               // SNMPv2-Trap-PDU
                0x02, 0x01, 0x01,                                       // request-id
                0x02, 0x01, 0x00,                                       // error-status
                0x02, 0x01, 0x00,                                       // error-index
                0x30, 0x3b,
                  0x30, 0x0d,                                           // sysUpTime.0
                    0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 3, 0,
                    0x43, 0x01, 100,
                  0x30, 0x18,                                           // snmpTrapOID.0
                    0x06, 0x0a, 0x2b, 6, 1, 6, 3, 1, 1, 4, 1, 0,
                    0x06, 0x0a, 0x2b, 6, 1, 4, 1, 0x86, 0x8d, 0x1f, 0, 2, // hamonFailover
                  0x30, 0x10,                                           // hamonNodeName.0
                    0x06, 0x0b, 0x2b, 6, 1, 4, 1, 0x86, 0x8d, 0x1f, 1, 1, 0,
                    0x04, 0x01, b'a',
        ];
        assert_eq!(encode_v2c(b"public", &pdu).unwrap(), want);
    }

    /// The message's top-level parts, checked for the fixed fields on the way.
    struct V3 {
        msg_id: i64,
        flags: u8,
        params: Vec<Node>,
        data: Node,
    }

    fn split_v3(bytes: &[u8]) -> V3 {
        let msg = parse(bytes).unwrap();
        let [version, global, params, data] = msg.children(tag::SEQUENCE).unwrap() else {
            panic!("not 4 fields");
        };
        assert_eq!(version.integer(tag::INTEGER), Ok(3));
        let [id, max, flags, model] = global.children(tag::SEQUENCE).unwrap() else {
            panic!("msgGlobalData not 4 fields");
        };
        assert_eq!(max.integer(tag::INTEGER), Ok(65507));
        assert_eq!(model.integer(tag::INTEGER), Ok(3));
        let params = parse(params.content(tag::OCTET_STRING).unwrap()).unwrap();
        V3 {
            msg_id: id.integer(tag::INTEGER).unwrap(),
            flags: flags.content(tag::OCTET_STRING).unwrap()[0],
            params: params.children(tag::SEQUENCE).unwrap().to_vec(),
            data: data.clone(),
        }
    }

    fn check_scoped(scoped: &Node, engine_id: &[u8], n: &Notification) {
        let [ctx_engine, ctx_name, pdu] = scoped.children(tag::SEQUENCE).unwrap() else {
            panic!("ScopedPDU not 3 fields");
        };
        assert_eq!(ctx_engine.content(tag::OCTET_STRING).unwrap(), engine_id);
        assert_eq!(ctx_name.content(tag::OCTET_STRING).unwrap(), b"");
        let [id, status, index, list] = pdu.children(tag::TRAP_V2).unwrap() else {
            panic!("PDU not 4 fields");
        };
        assert_eq!(id.integer(tag::INTEGER), Ok(7));
        assert_eq!(status.integer(tag::INTEGER), Ok(0));
        assert_eq!(index.integer(tag::INTEGER), Ok(0));
        let list = list.varbinds().unwrap();
        assert_eq!(
            list[0],
            (Oid::from_static(SYS_UPTIME_0), Value::TimeTicks(4242))
        );
        assert_eq!(
            list[1],
            (
                Oid::from_static(SNMP_TRAP_OID_0),
                Value::Oid(n.trap_oid.clone())
            )
        );
        assert_eq!(list[2..], n.varbinds[..]);
    }

    /// The MAC of `bytes` verifies: zeroing it and recomputing gives it back.
    fn mac_verifies(bytes: &[u8], proto: AuthProto, key: &[u8], mac: &[u8]) -> bool {
        let at = bytes.windows(mac.len()).position(|w| w == mac).unwrap();
        let mut zeroed = bytes.to_vec();
        zeroed[at..at + mac.len()].fill(0);
        usm::authenticate(proto, key, &zeroed).unwrap() == mac
    }

    #[test]
    fn v3_auth_priv() {
        let engine_id = [0x80, 0x01, 0x86, 0x9f, 5, 1, 2, 3, 4, 5, 6, 7, 8];
        let engine = Engine {
            id: &engine_id,
            boots: 3,
            time: 1234,
        };
        let n = notification();
        let pdu = Pdu {
            request_id: 7,
            uptime_centis: 4242,
            notification: &n,
        };
        for proto in [AuthProto::Sha1, AuthProto::Sha256, AuthProto::Sha512] {
            let auth_key = vec![0x11; proto.key_len()];
            let priv_key = vec![0x22; proto.key_len()];
            let salt = [9, 8, 7, 6, 5, 4, 3, 2];
            let security = Security {
                user: b"hamon",
                auth: (proto, &auth_key),
                privacy: Some((PrivProto::Aes128, &priv_key, salt)),
            };
            let bytes = encode_v3(99, &engine, &security, &pdu).unwrap();
            let v3 = split_v3(&bytes);
            assert_eq!((v3.msg_id, v3.flags), (99, 3));
            let [e, boots, time, user, auth, privacy] = &v3.params[..] else {
                panic!("USM parameters not 6 fields");
            };
            assert_eq!(e.content(tag::OCTET_STRING).unwrap(), engine_id);
            assert_eq!(boots.integer(tag::INTEGER), Ok(3));
            assert_eq!(time.integer(tag::INTEGER), Ok(1234));
            assert_eq!(user.content(tag::OCTET_STRING).unwrap(), b"hamon");
            assert_eq!(privacy.content(tag::OCTET_STRING).unwrap(), salt);
            let mac = auth.content(tag::OCTET_STRING).unwrap();
            assert_eq!(mac.len(), proto.mac_len());
            assert!(mac_verifies(&bytes, proto, &auth_key, mac));
            assert!(!mac_verifies(&bytes, proto, &priv_key, mac));

            let mut scoped = v3.data.content(tag::OCTET_STRING).unwrap().to_vec();
            usm::aes_cfb(&priv_key, usm::aes_iv(3, 1234, salt), &mut scoped, false).unwrap();
            check_scoped(&parse(&scoped).unwrap(), &engine_id, &n);
        }
    }

    #[test]
    fn v3_auth_no_priv() {
        let engine = Engine {
            id: b"\x80\x00\x00\x01\x04hamon",
            boots: 1,
            time: 0,
        };
        let n = notification();
        let pdu = Pdu {
            request_id: 7,
            uptime_centis: 4242,
            notification: &n,
        };
        let key = [0x33; 20];
        let security = Security {
            user: b"u",
            auth: (AuthProto::Sha1, &key),
            privacy: None,
        };
        let bytes = encode_v3(1, &engine, &security, &pdu).unwrap();
        let v3 = split_v3(&bytes);
        assert_eq!(v3.flags, 1);
        assert_eq!(v3.params[5].content(tag::OCTET_STRING).unwrap(), b"");
        let mac = v3.params[4].content(tag::OCTET_STRING).unwrap();
        assert!(mac_verifies(&bytes, AuthProto::Sha1, &key, mac));
        check_scoped(&v3.data, engine.id, &n);

        let short = Security {
            auth: (AuthProto::Sha256, &key),
            ..security
        };
        assert!(matches!(
            encode_v3(1, &engine, &short, &pdu),
            Err(Error::BadKeyLength)
        ));
    }

    #[test]
    fn too_long_and_bad_oids_are_refused() {
        let mut n = notification();
        n.varbinds.push((
            Oid::from(vec![1, 3]),
            Value::OctetString(vec![0; MAX_MESSAGE]),
        ));
        let pdu = Pdu {
            request_id: 1,
            uptime_centis: 0,
            notification: &n,
        };
        assert!(matches!(encode_v2c(b"public", &pdu), Err(Error::TooLong)));
        let bad = Notification {
            trap_oid: Oid::from(vec![7, 1]),
            varbinds: vec![],
        };
        let pdu = Pdu {
            request_id: 1,
            uptime_centis: 0,
            notification: &bad,
        };
        assert!(matches!(encode_v2c(b"public", &pdu), Err(Error::BadOid)));
    }
}
