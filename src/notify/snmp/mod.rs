//! SNMP notifications: SNMPv2-Trap PDUs sent as SNMPv2c or SNMPv3 (USM) messages over UDP.
//!
//! Traps are unacknowledged, so for SNMPv3 this sender is the authoritative engine: its own
//! engine id, boots and time go into every message, and receivers must be configured with
//! that engine id (`createUser -e 0x<engine id> ...` for net-snmp's snmptrapd).
//!
//! ```text
//! file      what
//! ber.rs    BER encoder for the SNMP subset; a separate strict decoder for tests and fuzzing
//! usm.rs    RFC 3414/7860 keys and HMAC, RFC 3826 AES-128-CFB
//! trap.rs   the PDU and the v2c and v3 messages
//! ```
//!
//! The objects and notifications are those of `docs/mib/HAMON-MIB.txt`; their OIDs are the
//! constants below, and a test checks them against the MIB text.

pub mod ber;
pub mod trap;
pub mod usm;

use std::borrow::Cow;
use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use usm::{AuthProto, PrivProto};

/// IANA Private Enterprise Number under which HAMON-MIB lives.
///
/// PLACEHOLDER: 99999 is not assigned to this project. A vendor replaces it here and in the
/// MIB's `MODULE-IDENTITY`, and nowhere else.
pub const ENTERPRISE: u32 = 99999;

const fn hamon(arcs: [u32; 2]) -> [u32; 9] {
    [1, 3, 6, 1, 4, 1, ENTERPRISE, arcs[0], arcs[1]]
}

/// `hamonMIB`: enterprises.ENTERPRISE.
pub const HAMON_MIB: &[u32] = &[1, 3, 6, 1, 4, 1, ENTERPRISE];

macro_rules! hamon_oids {
    ($($(#[$doc:meta])* $name:ident = ($parent:literal, $n:literal);)*) => {
        $( $(#[$doc])* pub const $name: &[u32] = &hamon([$parent, $n]); )*
        /// Every (MIB descriptor, OID) of HAMON-MIB's objects and notifications.
        pub const HAMON_OIDS: &[(&str, &[u32])] = &[$((stringify!($name), $name)),*];
    };
}

hamon_oids! {
    /// hamonNodeName (DisplayString): the sending server's name.
    HAMON_NODE_NAME = (1, 1);
    /// hamonRole (INTEGER): see [`role`].
    HAMON_ROLE = (1, 2);
    /// hamonState (DisplayString): HA state after the event.
    HAMON_STATE = (1, 3);
    /// hamonPreviousState (DisplayString): HA state before the event.
    HAMON_PREVIOUS_STATE = (1, 4);
    /// hamonSeverity (INTEGER): see [`severity`].
    HAMON_SEVERITY = (1, 5);
    /// hamonEventId (Unsigned32, sent as [`Value::Gauge32`]).
    HAMON_EVENT_ID = (1, 6);
    /// hamonDescription (DisplayString).
    HAMON_DESCRIPTION = (1, 7);
    /// hamonPeerAddress (DisplayString): the peer's address in text form.
    HAMON_PEER_ADDRESS = (1, 8);
    /// hamonStateChange notification.
    HAMON_STATE_CHANGE = (0, 1);
    /// hamonFailover notification.
    HAMON_FAILOVER = (0, 2);
    /// hamonFailback notification.
    HAMON_FAILBACK = (0, 3);
    /// hamonRegistration notification.
    HAMON_REGISTRATION = (0, 4);
    /// hamonPeerLost notification.
    HAMON_PEER_LOST = (0, 5);
    /// hamonPeerFound notification.
    HAMON_PEER_FOUND = (0, 6);
    /// hamonAlarm notification.
    HAMON_ALARM = (0, 7);
    /// hamonAlarmCleared notification.
    HAMON_ALARM_CLEARED = (0, 8);
}

/// Values of hamonRole.
pub mod role {
    pub const PRIMARY: i32 = 1;
    pub const SECONDARY: i32 = 2;
}

/// Values of hamonSeverity.
pub mod severity {
    pub const CRITICAL: i32 = 1;
    pub const MAJOR: i32 = 2;
    pub const MINOR: i32 = 3;
    pub const WARNING: i32 = 4;
    pub const INFO: i32 = 5;
    pub const CLEARED: i32 = 6;
}

/// An OBJECT IDENTIFIER. Any sequence of arcs can be held; the encoder refuses what BER cannot
/// carry (fewer than 2 arcs, more than 128, a first arc above 2, or a second arc of 40 or more
/// under a first arc of 0 or 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Oid(Cow<'static, [u32]>);

impl Oid {
    /// An OID over constant arcs, such as [`HAMON_FAILOVER`].
    pub const fn from_static(arcs: &'static [u32]) -> Oid {
        Oid(Cow::Borrowed(arcs))
    }

    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// This OID with `arc` appended, e.g. `.0` for a scalar instance.
    #[must_use]
    pub fn child(&self, arc: u32) -> Oid {
        let mut arcs = self.0.to_vec();
        arcs.push(arc);
        Oid(Cow::Owned(arcs))
    }
}

impl From<Vec<u32>> for Oid {
    fn from(arcs: Vec<u32>) -> Oid {
        Oid(Cow::Owned(arcs))
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arc) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{arc}")?;
        }
        Ok(())
    }
}

impl FromStr for Oid {
    type Err = Error;

    /// Dotted decimal, with or without a leading dot: `1.3.6.1.4.1` or `.1.3.6.1.4.1`.
    fn from_str(s: &str) -> Result<Oid, Error> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let arcs = s
            .split('.')
            .map(|a| match a.bytes().all(|b| b.is_ascii_digit()) {
                true => a.parse::<u32>().ok(),
                false => None,
            })
            .collect::<Option<Vec<u32>>>()
            .ok_or(Error::BadOid)?;
        Ok(Oid::from(arcs))
    }
}

/// A varbind value: the SMIv2 application types that hamon sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// INTEGER / Integer32 (SMIv2 integers are 32-bit; enumerations too).
    Integer(i32),
    /// OCTET STRING, DisplayString.
    OctetString(Vec<u8>),
    Oid(Oid),
    IpAddress([u8; 4]),
    Counter32(u32),
    /// Gauge32, and Unsigned32 (the same type on the wire).
    Gauge32(u32),
    TimeTicks(u32),
    Counter64(u64),
}

impl Value {
    /// A DisplayString.
    pub fn string(s: &str) -> Value {
        Value::OctetString(s.as_bytes().to_vec())
    }
}

/// What to send: the `snmpTrapOID.0` and the varbinds after it. `sysUpTime.0` is added by the
/// sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub trap_oid: Oid,
    pub varbinds: Vec<(Oid, Value)>,
}

/// The varbinds every HAMON-MIB notification carries, in the MIB's `OBJECTS` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HamonEvent {
    pub node_name: String,
    /// [`role`]`::*`.
    pub role: i32,
    pub state: String,
    pub previous_state: String,
    /// [`severity`]`::*`.
    pub severity: i32,
    pub event_id: u32,
    pub description: String,
    /// Text form; empty when there is no peer.
    pub peer_address: String,
}

impl HamonEvent {
    /// The notification `trap_oid` (one of the `HAMON_*` notification OIDs) with this
    /// event's objects as scalar instances (`.0`).
    pub fn notification(&self, trap_oid: &'static [u32]) -> Notification {
        let var = |oid: &'static [u32], v: Value| (Oid::from_static(oid).child(0), v);
        Notification {
            trap_oid: Oid::from_static(trap_oid),
            varbinds: vec![
                var(HAMON_NODE_NAME, Value::string(&self.node_name)),
                var(HAMON_ROLE, Value::Integer(self.role)),
                var(HAMON_STATE, Value::string(&self.state)),
                var(HAMON_PREVIOUS_STATE, Value::string(&self.previous_state)),
                var(HAMON_SEVERITY, Value::Integer(self.severity)),
                var(HAMON_EVENT_ID, Value::Gauge32(self.event_id)),
                var(HAMON_DESCRIPTION, Value::string(&self.description)),
                var(HAMON_PEER_ADDRESS, Value::string(&self.peer_address)),
            ],
        }
    }
}

/// Where and how to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    V2c { community: Vec<u8> },
    V3(V3User),
}

/// An SNMPv3 USM user: always authenticated, encrypted when `privacy` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3User {
    pub user: Vec<u8>,
    pub auth: (AuthProto, Secret),
    pub privacy: Option<(PrivProto, Secret)>,
}

/// A USM secret. Passwords (at least 8 bytes, as net-snmp requires) and master keys are
/// localised to the sender's engine id with the user's auth protocol (RFC 3414 A.2).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(Vec<u8>),
    /// Ku: the output of the password-to-key algorithm.
    MasterKey(Vec<u8>),
    /// Kul: already localised to this sender's engine id.
    LocalizedKey(Vec<u8>),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Password(..)",
            Secret::MasterKey(_) => "MasterKey(..)",
            Secret::LocalizedKey(_) => "LocalizedKey(..)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OID not encodable (needs 2..=128 arcs, first arc <= 2, second < 40 under 0 and 1)")]
    BadOid,
    #[error("SNMP engine id must be 5..=32 bytes")]
    BadEngineId,
    #[error("USM password shorter than {} bytes", usm::MIN_PASSWORD_LEN)]
    ShortPassword,
    #[error("USM key has the wrong length for its protocol")]
    BadKeyLength,
    #[error("SNMP message longer than {} bytes", trap::MAX_MESSAGE)]
    TooLong,
    #[error("no random bytes: {0}")]
    Random(String),
    #[error("sending SNMP notification: {0}")]
    Io(#[from] std::io::Error),
}

/// RFC 3411 SnmpEngineID format octets (the 5th byte).
const ENGINE_ID_FORMAT_MAC: u8 = 3;
const ENGINE_ID_FORMAT_OCTETS: u8 = 5;

/// An RFC 3411 engine id: `enterprise` with the top bit set, format 3 (MAC address), the MAC.
pub fn engine_id_from_mac(enterprise: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut id = (enterprise | 0x8000_0000).to_be_bytes().to_vec();
    id.push(ENGINE_ID_FORMAT_MAC);
    id.extend_from_slice(&mac);
    id
}

/// An RFC 3411 engine id: `enterprise` with the top bit set, format 5 (octets), 8 random
/// bytes. Persist it: receivers are configured with it.
///
/// # Errors
///
/// `Random` if the OS has no randomness to give.
pub fn engine_id_random(enterprise: u32) -> Result<Vec<u8>, Error> {
    let mut random = [0; 8];
    getrandom::fill(&mut random).map_err(|e| Error::Random(e.to_string()))?;
    let mut id = (enterprise | 0x8000_0000).to_be_bytes().to_vec();
    id.push(ENGINE_ID_FORMAT_OCTETS);
    id.extend_from_slice(&random);
    Ok(id)
}

/// Localised keys kept per (protocol, secret), so a password is hashed once, not per trap.
const KEY_CACHE_MAX: usize = 16;

/// (protocol, password) and the key localised from it.
type CachedKey = ((AuthProto, Secret), Vec<u8>);

/// Sends notifications from one SNMP engine.
#[derive(Debug)]
pub struct Sender {
    /// snmpEngineID, 5..=32 bytes.
    pub engine_id: Vec<u8>,
    /// snmpEngineBoots: the caller persists it and adds one per start.
    pub boots: u32,
    /// snmpEngineTime counts seconds from here.
    pub start: Instant,
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    next_id: AtomicU32,
    keys: Mutex<Vec<CachedKey>>,
}

impl Sender {
    /// A sender with unbound-port UDP sockets (IPv4, and IPv6 where the host has it).
    ///
    /// # Errors
    ///
    /// `BadEngineId`, `Random`, or `Io` if no IPv4 socket can be made.
    pub fn new(engine_id: Vec<u8>, boots: u32, start: Instant) -> Result<Sender, Error> {
        if !(5..=32).contains(&engine_id.len()) {
            return Err(Error::BadEngineId);
        }
        let v4 = UdpSocket::bind("0.0.0.0:0")?;
        v4.set_nonblocking(true)?;
        let v6 = UdpSocket::bind("[::]:0")
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .ok();
        let mut seed = [0; 4];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Sender {
            engine_id,
            boots,
            start,
            v4,
            v6,
            next_id: AtomicU32::new(u32::from_be_bytes(seed)),
            keys: Mutex::new(Vec::new()),
        })
    }

    /// Encodes and sends one trap. Never waits: a full socket buffer is an `Io` error.
    ///
    /// # Errors
    ///
    /// Whatever encoding refuses (`BadOid`, `TooLong`, key errors) and `Io`.
    pub fn send(&self, target: &Target, n: &Notification, uptime_centis: u32) -> Result<(), Error> {
        let bytes = self.encode(target, n, uptime_centis)?;
        let socket = match (target.addr, &self.v6) {
            (SocketAddr::V6(_), Some(v6)) => v6,
            _ => &self.v4,
        };
        socket.send_to(&bytes, target.addr)?;
        Ok(())
    }

    /// The datagram [`Sender::send`] would send.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`], without `Io`.
    pub fn encode(
        &self,
        target: &Target,
        n: &Notification,
        uptime_centis: u32,
    ) -> Result<Vec<u8>, Error> {
        // Request ids and msgIDs are 0..2^31-1.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let pdu = trap::Pdu {
            request_id: id,
            uptime_centis,
            notification: n,
        };
        match &target.version {
            Version::V2c { community } => trap::encode_v2c(community, &pdu),
            Version::V3(user) => {
                let auth_key = self.localized(user.auth.0, &user.auth.1)?;
                let privacy = match &user.privacy {
                    Some((proto, secret)) => Some((*proto, self.localized(user.auth.0, secret)?)),
                    None => None,
                };
                let mut salt = [0; 8];
                getrandom::fill(&mut salt).map_err(|e| Error::Random(e.to_string()))?;
                let engine = trap::Engine {
                    id: &self.engine_id,
                    boots: self.boots.min(usm::MAX_BOOTS),
                    time: u32::try_from(self.start.elapsed().as_secs())
                        .unwrap_or(u32::MAX)
                        .min(usm::MAX_BOOTS),
                };
                let security = trap::Security {
                    user: &user.user,
                    auth: (user.auth.0, &auth_key),
                    privacy: privacy.as_ref().map(|(p, k)| (*p, k.as_slice(), salt)),
                };
                trap::encode_v3(id, &engine, &security, &pdu)
            }
        }
    }

    /// Localises `target`'s passwords now (1 MiB of hashing each), so that later sends to it
    /// take microseconds. Also checks them.
    ///
    /// # Errors
    ///
    /// `ShortPassword`, `BadKeyLength`.
    pub fn prepare(&self, target: &Target) -> Result<(), Error> {
        if let Version::V3(user) = &target.version {
            self.localized(user.auth.0, &user.auth.1)?;
            if let Some((_, secret)) = &user.privacy {
                self.localized(user.auth.0, secret)?;
            }
        }
        Ok(())
    }

    /// `secret` as a key localised to this engine for `proto`, from the cache when it can be.
    fn localized(&self, proto: AuthProto, secret: &Secret) -> Result<Vec<u8>, Error> {
        let password = match secret {
            Secret::LocalizedKey(k) => return Ok(k.clone()),
            Secret::MasterKey(k) => return usm::localize(proto, k, &self.engine_id),
            Secret::Password(p) => p,
        };
        let mut cache = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, key)) = cache.iter().find(|((p, s), _)| *p == proto && s == secret) {
            return Ok(key.clone());
        }
        let key = usm::localize(
            proto,
            &usm::password_to_key(proto, password)?,
            &self.engine_id,
        )?;
        if cache.len() == KEY_CACHE_MAX {
            cache.remove(0);
        }
        cache.push(((proto, secret.clone()), key.clone()));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: &str = include_str!("../../../docs/mib/HAMON-MIB.txt");

    /// The value of every `name ... ::= { parent n }` assignment in `mib`, resolved to arcs
    /// from `enterprises`.
    fn mib_oids(mib: &str) -> Vec<(String, Vec<u32>)> {
        let mut known: Vec<(String, Vec<u32>)> =
            vec![("enterprises".into(), vec![1, 3, 6, 1, 4, 1])];
        let mut name = String::new();
        for line in mib.lines() {
            let line = line.split("--").next().unwrap_or("");
            let first = line.split_whitespace().next().unwrap_or("");
            if first.starts_with(|c: char| c.is_ascii_lowercase()) && !line.starts_with(' ') {
                name = first.to_string();
            }
            if let Some(rest) = line.split("::=").nth(1) {
                let inner = rest.trim().trim_start_matches('{').trim_end_matches('}');
                let mut parts = inner.split_whitespace();
                let (Some(parent), Some(n)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let parent = known.iter().find(|(k, _)| k == parent).unwrap().1.clone();
                let mut arcs = parent;
                arcs.push(n.parse().unwrap());
                known.push((name.clone(), arcs));
            }
        }
        known
    }

    /// `HAMON_PREVIOUS_STATE` -> `hamonPreviousState`.
    fn descriptor(constant: &str) -> String {
        let mut out = String::new();
        for (i, word) in constant.split('_').enumerate() {
            let lower = word.to_ascii_lowercase();
            if i == 0 {
                out.push_str(&lower);
            } else {
                out.push_str(&lower[..1].to_ascii_uppercase());
                out.push_str(&lower[1..]);
            }
        }
        out
    }

    #[test]
    fn rust_oids_match_the_mib() {
        let mib = mib_oids(MIB);
        let find = |n: &str| mib.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(find("hamonMIB").as_deref(), Some(HAMON_MIB));
        for (constant, arcs) in HAMON_OIDS {
            let name = descriptor(constant);
            assert_eq!(find(&name).as_deref(), Some(*arcs), "{name}");
        }
        // And nothing in the MIB's object and notification subtrees lacks a constant.
        for (name, arcs) in &mib {
            let under =
                |sub: u32| arcs.len() == 9 && arcs[..8] == [1, 3, 6, 1, 4, 1, ENTERPRISE, sub];
            if under(0) || under(1) {
                assert!(
                    HAMON_OIDS.iter().any(|(c, _)| descriptor(c) == *name),
                    "{name}"
                );
            }
        }
        assert_eq!(HAMON_OIDS.len(), 16);
    }

    #[test]
    fn oid_text() {
        let oid: Oid = ".1.3.6.1.4.1.99999.0.2".parse().unwrap();
        assert_eq!(oid, Oid::from_static(HAMON_FAILOVER));
        assert_eq!(oid.to_string(), "1.3.6.1.4.1.99999.0.2");
        assert_eq!(oid.child(0).arcs().last(), Some(&0));
        for bad in ["", ".", "1..2", "1.x", "1.4294967296", "1.+2", " 1.2"] {
            assert!(bad.parse::<Oid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn engine_ids() {
        let id = engine_id_from_mac(ENTERPRISE, [2, 0, 0, 0, 0, 1]);
        assert_eq!(id, [0x80, 0x01, 0x86, 0x9f, 3, 2, 0, 0, 0, 0, 1]);
        let a = engine_id_random(ENTERPRISE).unwrap();
        assert_eq!(a.len(), 13);
        assert_eq!(a[..5], [0x80, 0x01, 0x86, 0x9f, 5]);
        assert_ne!(a, engine_id_random(ENTERPRISE).unwrap());
        let now = Instant::now();
        assert!(matches!(
            Sender::new(vec![0; 4], 1, now),
            Err(Error::BadEngineId)
        ));
        assert!(matches!(
            Sender::new(vec![0; 33], 1, now),
            Err(Error::BadEngineId)
        ));
    }

    #[test]
    fn passwords_are_localised_once() {
        let sender =
            Sender::new(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 1, Instant::now()).unwrap();
        let pw = Secret::Password(b"maplesyrup".to_vec());
        let k1 = sender.localized(AuthProto::Sha1, &pw).unwrap();
        assert_eq!(sender.keys.lock().unwrap().len(), 1);
        assert_eq!(sender.localized(AuthProto::Sha1, &pw).unwrap(), k1);
        assert_eq!(sender.keys.lock().unwrap().len(), 1);
        assert_eq!(
            sender
                .localized(AuthProto::Sha1, &Secret::LocalizedKey(k1.clone()))
                .unwrap(),
            k1
        );
        assert_ne!(sender.localized(AuthProto::Sha256, &pw).unwrap(), k1);
        assert!(matches!(
            sender.localized(AuthProto::Sha1, &Secret::Password(b"short".to_vec())),
            Err(Error::ShortPassword)
        ));
    }
}
