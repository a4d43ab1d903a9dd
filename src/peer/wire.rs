//! The heartbeat wire format (version 1): one authenticated UDP datagram per heartbeat.
//!
//! All integers are big-endian.
//!
//! ```text
//! off          len  field
//! 0            4    magic b"HMHB"
//! 4            1    version = 1
//! 5            1    flags (reserved: 0 on send, ignored on receive)
//! 6            2    body_len (u16)
//! 8            16   boot_id    random per agent start
//! 24           8    seq        +1 per frame within a boot
//! 32           16   echo_boot  boot_id of the latest authentic frame received from the peer
//!                              (all zero = none)
//! 48           8    echo_seq   that frame's seq
//! 56           ..   body       body_len bytes of TLVs: type u8, len u8, value[len]
//! 56+body_len  32   HMAC-SHA256(key, bytes[0 .. 56+body_len])
//! ```
//!
//! Body TLVs: 1 name (UTF-8, 1..=63 bytes), 2 role (u8), 3 state (u8), 4 flags (u8: bit0
//! active, bit1 registered, bit2 `shutting_down`, bit3 `asks`, bit4 `was_active`), 5 registration (u64 id, u8 failover type),
//! 6 health (4 x u8 levels: processes, database, disk, nic), 7 `hm_port` (u16), 8 sync lag
//! (frequent then batch: u32 seconds since the last complete pass, `u32::MAX` = not yet;
//! u32 files and u64 bytes that pass copied), 9 version (u8 protocol major, u8 protocol
//! minor, then the release as UTF-8, 1..=32 bytes; see [`crate::version`]). All but 5, 8
//! and 9 are required; 5 is present exactly when the sender is registered, 8 while it
//! pulls files, 9 from protocol 1.1 on (a frame without it comes from a release before
//! versions were sent). A known type appearing twice is an error; unknown types are
//! skipped.
//!
//! [`decode`] checks length, magic, version and the MAC (in constant time) before it looks at
//! a single body byte, so nothing unauthenticated reaches the TLV parser.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ha::state::{FailoverType, HaState, HealthSummary, Level, Role};
use crate::version::{Version, RELEASE_MAX};

/// First four bytes of every heartbeat.
pub const MAGIC: [u8; 4] = *b"HMHB";
/// The only version this codec speaks.
pub const VERSION: u8 = 1;
/// Largest datagram, MAC included, that is sent or accepted.
pub const MAX_FRAME: usize = 512;
/// Length of the trailing HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

/// The pre-shared HMAC-SHA256 key of a pair.
pub type Key = [u8; 32];

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 4;
const FLAGS_OFFSET: usize = 5;
const BODY_LEN_OFFSET: usize = 6;
const BOOT_ID_OFFSET: usize = 8;
const SEQ_OFFSET: usize = 24;
const ECHO_BOOT_OFFSET: usize = 32;
const ECHO_SEQ_OFFSET: usize = 48;
/// Where the body starts; also the length of the fixed header.
const BODY_OFFSET: usize = 56;
/// Smallest well-formed datagram: a header, an empty body and the MAC.
const MIN_FRAME: usize = BODY_OFFSET + MAC_LEN;

const TLV_NAME: u8 = 1;
const TLV_ROLE: u8 = 2;
const TLV_STATE: u8 = 3;
const TLV_FLAGS: u8 = 4;
const TLV_REGISTRATION: u8 = 5;
const TLV_HEALTH: u8 = 6;
const TLV_HM_PORT: u8 = 7;
const TLV_SYNC: u8 = 8;
const TLV_VERSION: u8 = 9;
/// `TLV_SYNC`'s "not yet synced".
const SYNC_NONE: u32 = u32::MAX;
/// `TLV_SYNC`: per class (frequent, then batch) u32 lag, u32 files, u64 bytes.
const SYNC_LEN: usize = 32;

const FLAG_ACTIVE: u8 = 1 << 0;
const FLAG_REGISTERED: u8 = 1 << 1;
const FLAG_SHUTTING_DOWN: u8 = 1 << 2;
const FLAG_ASKS: u8 = 1 << 3;
const FLAG_WAS_ACTIVE: u8 = 1 << 4;

const NAME_MAX: usize = 63;
const REGISTRATION_LEN: usize = 9;

/// SHA-256's block size: HMAC zero-pads shorter keys to it.
const SHA256_BLOCK_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Random per agent start.
    pub boot_id: [u8; 16],
    /// +1 per frame within a boot.
    pub seq: u64,
    /// `(boot_id, seq)` of the latest authentic frame received from the peer, if any.
    /// An all-zero boot id means "none" on the wire, so it cannot be echoed.
    pub echo: Option<([u8; 16], u64)>,
    pub body: Body,
    /// The sender's release and protocol (`None`: a release from before versions were sent).
    pub version: Option<Version>,
}

/// What a server says about itself in a heartbeat: the core's `Beacon`.
pub use crate::ha::Beacon as Body;

/// Why a datagram is not an acceptable heartbeat, or a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header plus MAC, or than `body_len` says.
    #[error("heartbeat truncated")]
    Truncated,
    /// Longer than `MAX_FRAME`.
    #[error("heartbeat longer than {MAX_FRAME} bytes")]
    TooLong,
    #[error("not a heartbeat (bad magic)")]
    BadMagic,
    #[error("unsupported heartbeat version {0}")]
    UnsupportedVersion(u8),
    /// Wrong key, or the datagram was altered.
    #[error("heartbeat MAC does not verify")]
    BadMac,
    /// A length field disagrees with the bytes: trailing bytes after the MAC, a TLV running
    /// past the body, or a fixed-size TLV of the wrong size.
    #[error("heartbeat length field inconsistent")]
    BadLength,
    #[error("heartbeat lacks required field {0}")]
    MissingField(&'static str),
    #[error("heartbeat repeats field type {0}")]
    DuplicateField(u8),
    #[error("heartbeat field {0} has an invalid value")]
    BadValue(&'static str),
}

/// Encodes and authenticates `frame`.
///
/// # Errors
///
/// Fails with `BadValue("name")` if the name is empty or longer than 63 bytes,
/// `BadValue("echo")` if the echo carries the all-zero boot id (which means "no echo" on the
/// wire), and `TooLong` if the result would exceed `MAX_FRAME`.
pub fn encode(frame: &Frame, key: &Key) -> Result<Vec<u8>, WireError> {
    let body = encode_body(&frame.body, frame.version.as_ref())?;
    if body.len() > MAX_FRAME - MIN_FRAME {
        return Err(WireError::TooLong);
    }
    let body_len = u16::try_from(body.len()).map_err(|_| WireError::TooLong)?;
    let (echo_boot, echo_seq) = match frame.echo {
        Some((boot, _)) if boot == [0; 16] => return Err(WireError::BadValue("echo")),
        Some(echo) => echo,
        None => ([0; 16], 0),
    };

    let mut header = [0u8; BODY_OFFSET];
    put(&mut header, MAGIC_OFFSET, &MAGIC);
    put(&mut header, VERSION_OFFSET, &[VERSION]);
    put(&mut header, FLAGS_OFFSET, &[0]);
    put(&mut header, BODY_LEN_OFFSET, &body_len.to_be_bytes());
    put(&mut header, BOOT_ID_OFFSET, &frame.boot_id);
    put(&mut header, SEQ_OFFSET, &frame.seq.to_be_bytes());
    put(&mut header, ECHO_BOOT_OFFSET, &echo_boot);
    put(&mut header, ECHO_SEQ_OFFSET, &echo_seq.to_be_bytes());

    let mut out = Vec::with_capacity(MAX_FRAME);
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);

    let mut mac = keyed_mac(key);
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Authenticates and decodes one datagram.
///
/// Length, magic, version and the MAC are checked (the MAC in constant time) before the body
/// is parsed. The header's flags byte is ignored, as are unknown TLV types and unknown bits of
/// the flags TLV. An all-zero `echo_boot` decodes as `echo: None` whatever `echo_seq` says.
///
/// # Errors
///
/// In the order checked: `Truncated` (shorter than header plus MAC, or than `body_len`
/// announces), `TooLong`, `BadMagic`, `UnsupportedVersion`, `BadLength` (bytes after the MAC),
/// `BadMac`; then from the body: `BadLength` (a TLV overruns the body or a fixed-size TLV has
/// the wrong size), `BadValue` (bad name, unknown role/state/level/failover code, registered
/// flag disagreeing with TLV 5), `DuplicateField` (a known type twice) and `MissingField`.
pub fn decode(bytes: &[u8], key: &Key) -> Result<Frame, WireError> {
    if bytes.len() < MIN_FRAME {
        return Err(WireError::Truncated);
    }
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLong);
    }
    if array::<4>(bytes, MAGIC_OFFSET)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let [version] = array::<1>(bytes, VERSION_OFFSET)?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }

    let body_len = usize::from(u16::from_be_bytes(array(bytes, BODY_LEN_OFFSET)?));
    // At most 56 + 65535; cannot overflow.
    let mac_offset = BODY_OFFSET + body_len;
    let authenticated = bytes.get(..mac_offset).ok_or(WireError::Truncated)?;
    let tag = bytes.get(mac_offset..).ok_or(WireError::Truncated)?;
    if tag.len() < MAC_LEN {
        return Err(WireError::Truncated);
    }
    if tag.len() > MAC_LEN {
        return Err(WireError::BadLength);
    }
    let mut mac = keyed_mac(key);
    mac.update(authenticated);
    mac.verify_slice(tag).map_err(|_| WireError::BadMac)?;

    // Authentic from here on.
    let echo_boot: [u8; 16] = array(bytes, ECHO_BOOT_OFFSET)?;
    let echo_seq = u64::from_be_bytes(array(bytes, ECHO_SEQ_OFFSET)?);
    let body = authenticated
        .get(BODY_OFFSET..)
        .ok_or(WireError::Truncated)?;
    let (body, version) = decode_body(body)?;
    Ok(Frame {
        boot_id: array(bytes, BOOT_ID_OFFSET)?,
        seq: u64::from_be_bytes(array(bytes, SEQ_OFFSET)?),
        echo: (echo_boot != [0; 16]).then_some((echo_boot, echo_seq)),
        body,
        version,
    })
}

/// An HMAC-SHA256 instance keyed with `key`.
pub(crate) fn keyed_mac(key: &Key) -> HmacSha256 {
    // HMAC zero-pads a key shorter than the hash block (RFC 2104, section 2), exactly as
    // `new_from_slice` would; padding here lets us use the infallible constructor.
    let mut block = [0u8; SHA256_BLOCK_LEN];
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// Copies `value` into `buf` at `offset` (the header offsets all fit `BODY_OFFSET`).
fn put(buf: &mut [u8], offset: usize, value: &[u8]) {
    for (b, v) in buf.iter_mut().skip(offset).zip(value) {
        *b = *v;
    }
}

/// `N` bytes of `bytes` at `offset`, or `Truncated`.
fn array<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], WireError> {
    offset
        .checked_add(N)
        .and_then(|end| bytes.get(offset..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated)
}

fn encode_body(body: &Body, version: Option<&Version>) -> Result<Vec<u8>, WireError> {
    if body.name.is_empty() || body.name.len() > NAME_MAX {
        return Err(WireError::BadValue("name"));
    }
    let mut flags = 0;
    if body.active {
        flags |= FLAG_ACTIVE;
    }
    if body.registered.is_some() {
        flags |= FLAG_REGISTERED;
    }
    if body.shutting_down {
        flags |= FLAG_SHUTTING_DOWN;
    }
    if body.asks {
        flags |= FLAG_ASKS;
    }
    if body.was_active {
        flags |= FLAG_WAS_ACTIVE;
    }
    let h = &body.health;

    let mut out = Vec::with_capacity(128);
    push_tlv(&mut out, TLV_NAME, body.name.as_bytes())?;
    push_tlv(&mut out, TLV_ROLE, &[body.role.code()])?;
    push_tlv(&mut out, TLV_STATE, &[body.state.code()])?;
    push_tlv(&mut out, TLV_FLAGS, &[flags])?;
    if let Some((id, failover)) = body.registered {
        let mut value = Vec::with_capacity(REGISTRATION_LEN);
        value.extend_from_slice(&id.to_be_bytes());
        value.push(failover.code());
        push_tlv(&mut out, TLV_REGISTRATION, &value)?;
    }
    let health = [h.processes, h.database, h.disk, h.nic].map(Level::code);
    push_tlv(&mut out, TLV_HEALTH, &health)?;
    push_tlv(&mut out, TLV_HM_PORT, &body.hm_port.to_be_bytes())?;
    if let Some(s) = body.sync {
        let mut value = Vec::with_capacity(SYNC_LEN);
        for c in [s.frequent, s.batch] {
            value.extend_from_slice(&c.lag.unwrap_or(SYNC_NONE).to_be_bytes());
            value.extend_from_slice(&c.files.to_be_bytes());
            value.extend_from_slice(&c.bytes.to_be_bytes());
        }
        push_tlv(&mut out, TLV_SYNC, &value)?;
    }
    if let Some(v) = version {
        if v.release.is_empty() || v.release.len() > RELEASE_MAX {
            return Err(WireError::BadValue("version"));
        }
        let mut value = vec![v.major, v.minor];
        value.extend_from_slice(v.release.as_bytes());
        push_tlv(&mut out, TLV_VERSION, &value)?;
    }
    Ok(out)
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> Result<(), WireError> {
    let len = u8::try_from(value.len()).map_err(|_| WireError::TooLong)?;
    out.push(kind);
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

/// Fields seen so far while walking the TLVs.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    role: Option<Role>,
    state: Option<HaState>,
    flags: Option<u8>,
    registration: Option<(u64, FailoverType)>,
    health: Option<HealthSummary>,
    hm_port: Option<u16>,
    sync: Option<crate::ha::SyncBeat>,
    version: Option<Version>,
}

/// Stores `value` in `slot`, or fails if the field was already seen.
fn set_once<T>(slot: &mut Option<T>, kind: u8, value: T) -> Result<(), WireError> {
    if slot.is_some() {
        return Err(WireError::DuplicateField(kind));
    }
    *slot = Some(value);
    Ok(())
}

/// A one-byte TLV value.
fn single(value: &[u8]) -> Result<u8, WireError> {
    match value {
        [b] => Ok(*b),
        _ => Err(WireError::BadLength),
    }
}

fn level(code: u8) -> Result<Level, WireError> {
    Level::from_code(code).ok_or(WireError::BadValue("health"))
}

fn decode_body(mut rest: &[u8]) -> Result<(Body, Option<Version>), WireError> {
    let mut f = Fields::default();
    while !rest.is_empty() {
        let [kind, len, tail @ ..] = rest else {
            return Err(WireError::BadLength);
        };
        let (value, next) = tail
            .split_at_checked(usize::from(*len))
            .ok_or(WireError::BadLength)?;
        rest = next;
        let kind = *kind;
        match kind {
            TLV_NAME => {
                if value.is_empty() || value.len() > NAME_MAX {
                    return Err(WireError::BadValue("name"));
                }
                let name = std::str::from_utf8(value).map_err(|_| WireError::BadValue("name"))?;
                set_once(&mut f.name, kind, name.to_owned())?;
            }
            TLV_ROLE => {
                let role = Role::from_code(single(value)?).ok_or(WireError::BadValue("role"))?;
                set_once(&mut f.role, kind, role)?;
            }
            TLV_STATE => {
                let state =
                    HaState::from_code(single(value)?).ok_or(WireError::BadValue("state"))?;
                set_once(&mut f.state, kind, state)?;
            }
            TLV_FLAGS => set_once(&mut f.flags, kind, single(value)?)?,
            TLV_REGISTRATION => {
                let [i0, i1, i2, i3, i4, i5, i6, i7, ft] = value else {
                    return Err(WireError::BadLength);
                };
                let id = u64::from_be_bytes([*i0, *i1, *i2, *i3, *i4, *i5, *i6, *i7]);
                let failover =
                    FailoverType::from_code(*ft).ok_or(WireError::BadValue("failover_type"))?;
                set_once(&mut f.registration, kind, (id, failover))?;
            }
            TLV_HEALTH => {
                let [processes, database, disk, nic] = value else {
                    return Err(WireError::BadLength);
                };
                let health = HealthSummary {
                    processes: level(*processes)?,
                    database: level(*database)?,
                    disk: level(*disk)?,
                    nic: level(*nic)?,
                };
                set_once(&mut f.health, kind, health)?;
            }
            TLV_HM_PORT => {
                let [hi, lo] = value else {
                    return Err(WireError::BadLength);
                };
                set_once(&mut f.hm_port, kind, u16::from_be_bytes([*hi, *lo]))?;
            }
            TLV_SYNC => {
                if value.len() != SYNC_LEN {
                    return Err(WireError::BadLength);
                }
                let class = |at: usize| {
                    let word = |o: usize| {
                        let mut b = [0u8; 4];
                        b.copy_from_slice(&value[at + o..at + o + 4]);
                        u32::from_be_bytes(b)
                    };
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&value[at + 8..at + 16]);
                    crate::ha::ClassBeat {
                        lag: Some(word(0)).filter(|v| *v != SYNC_NONE),
                        files: word(4),
                        bytes: u64::from_be_bytes(b),
                    }
                };
                let beat = crate::ha::SyncBeat {
                    frequent: class(0),
                    batch: class(16),
                };
                set_once(&mut f.sync, kind, beat)?;
            }
            TLV_VERSION => {
                let [major, minor, release @ ..] = value else {
                    return Err(WireError::BadLength);
                };
                if release.is_empty() || release.len() > RELEASE_MAX {
                    return Err(WireError::BadValue("version"));
                }
                let release =
                    std::str::from_utf8(release).map_err(|_| WireError::BadValue("version"))?;
                let version = Version {
                    release: release.to_owned(),
                    major: *major,
                    minor: *minor,
                };
                set_once(&mut f.version, kind, version)?;
            }
            // Forward compatibility: a newer peer may send types we do not know.
            _ => {}
        }
    }

    // Reported in type order, so the first missing field is named.
    let name = f.name.ok_or(WireError::MissingField("name"))?;
    let role = f.role.ok_or(WireError::MissingField("role"))?;
    let state = f.state.ok_or(WireError::MissingField("state"))?;
    let flags = f.flags.ok_or(WireError::MissingField("flags"))?;
    let health = f.health.ok_or(WireError::MissingField("health"))?;
    let hm_port = f.hm_port.ok_or(WireError::MissingField("hm_port"))?;
    // The registered bit and TLV 5 say the same thing; a frame where they disagree is bad.
    if (flags & FLAG_REGISTERED != 0) != f.registration.is_some() {
        return Err(WireError::BadValue("registered"));
    }
    let body = Body {
        name,
        role,
        state,
        active: flags & FLAG_ACTIVE != 0,
        registered: f.registration,
        shutting_down: flags & FLAG_SHUTTING_DOWN != 0,
        asks: flags & FLAG_ASKS != 0,
        was_active: flags & FLAG_WAS_ACTIVE != 0,
        health,
        hm_port,
        sync: f.sync,
    };
    Ok((body, f.version))
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    use super::*;

    const KEY: Key = [0x42; 32];

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The frame of the golden vector below.
    fn sample() -> Frame {
        Frame {
            boot_id: [
                0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
                0x1e, 0x1f,
            ],
            seq: 0x0102_0304_0506_0708,
            echo: Some((
                [
                    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec,
                    0xed, 0xee, 0xef,
                ],
                41,
            )),
            body: Body {
                name: "appliance-a".to_owned(),
                role: Role::Primary,
                state: HaState::PrimaryActive,
                active: true,
                registered: Some((0xa1a2_a3a4_a5a6_a7a8, FailoverType::Automatic)),
                shutting_down: false,
                asks: false,
                was_active: false,
                health: HealthSummary {
                    processes: Level::Ok,
                    database: Level::Warning,
                    disk: Level::Failed,
                    nic: Level::Unknown,
                },
                hm_port: 8080,
                sync: None,
            },
            version: None,
        }
    }

    /// `sample()` encoded with `KEY`, built independently (Python's struct and hmac modules).
    const GOLDEN: &str = "484d48420100002b101112131415161718191a1b1c1d1e1f0102030405060708\
        e0e1e2e3e4e5e6e7e8e9eaebecedeeef0000000000000029010b6170706c69616e63652d610201010301\
        0b0401030509a1a2a3a4a5a6a7a80206040102030007021f9065f6023e1c03373548bae0dff61891a1d7\
        edfef24da87e30a322a5e9d3eeef5b";

    fn unhex(s: &str) -> Result<Vec<u8>, std::num::ParseIntError> {
        let digits: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(&p.iter().collect::<String>(), 16))
            .collect()
    }

    /// HMAC-SHA256 through the crate's documented fallible constructor, as a reference for
    /// `keyed_mac`.
    fn reference_mac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(key) {
            Ok(mac) => mac,
            Err(e) => panic!("HMAC accepts any key length: {e}"),
        };
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, u8::try_from(value.len()).unwrap_or(u8::MAX)];
        out.extend_from_slice(value);
        out
    }

    /// The TLVs of a valid, unregistered body, in encoding order.
    fn standard_tlvs() -> Vec<(u8, Vec<u8>)> {
        vec![
            (TLV_NAME, b"node-b".to_vec()),
            (TLV_ROLE, vec![Role::Secondary.code()]),
            (TLV_STATE, vec![HaState::SecondaryActive.code()]),
            (TLV_FLAGS, vec![FLAG_ACTIVE]),
            (TLV_HEALTH, vec![1, 1, 1, 1]),
            (TLV_HM_PORT, 9443u16.to_be_bytes().to_vec()),
        ]
    }

    /// What `standard_tlvs()` decodes to.
    fn standard_body() -> Body {
        Body {
            name: "node-b".to_owned(),
            role: Role::Secondary,
            state: HaState::SecondaryActive,
            active: true,
            registered: None,
            shutting_down: false,
            asks: false,
            was_active: false,
            health: HealthSummary {
                processes: Level::Ok,
                database: Level::Ok,
                disk: Level::Ok,
                nic: Level::Ok,
            },
            hm_port: 9443,
            sync: None,
        }
    }

    /// `standard_tlvs()` with a registration (flag bit and TLV 5).
    fn registered_tlvs() -> Vec<(u8, Vec<u8>)> {
        let mut tlvs = standard_tlvs();
        for (kind, value) in tlvs.iter_mut() {
            if *kind == TLV_FLAGS {
                *value = vec![FLAG_ACTIVE | FLAG_REGISTERED];
            }
        }
        let mut reg = 77u64.to_be_bytes().to_vec();
        reg.push(FailoverType::Manual.code());
        tlvs.insert(4, (TLV_REGISTRATION, reg));
        tlvs
    }

    fn body_of(tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        tlvs.iter().flat_map(|(k, v)| tlv(*k, v)).collect()
    }

    /// A valid header (boot 0x11.., seq 7, no echo) announcing `body_len` body bytes.
    fn header(body_len: usize) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"HMHB");
        h.push(1);
        h.push(0);
        h.extend_from_slice(&u16::try_from(body_len).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(&[0x11; 16]);
        h.extend_from_slice(&7u64.to_be_bytes());
        h.extend_from_slice(&[0; 24]);
        h
    }

    /// Appends the MAC of everything in `unsealed`.
    fn seal(mut unsealed: Vec<u8>, key: &Key) -> Vec<u8> {
        let tag = reference_mac(key, &unsealed);
        unsealed.extend_from_slice(&tag);
        unsealed
    }

    /// A correctly sealed datagram around `body`.
    fn with_body(body: &[u8]) -> Vec<u8> {
        let mut unsealed = header(body.len());
        unsealed.extend_from_slice(body);
        seal(unsealed, &KEY)
    }

    fn decode_tlvs(tlvs: &[(u8, Vec<u8>)]) -> Result<Frame, WireError> {
        decode(&with_body(&body_of(tlvs)), &KEY)
    }

    /// The frame that `header()` plus `body` decodes to.
    fn standard_frame(body: Body) -> Frame {
        Frame {
            boot_id: [0x11; 16],
            seq: 7,
            echo: None,
            body,
            version: None,
        }
    }

    #[test]
    fn keyed_mac_matches_reference_and_known_answer() -> TestResult {
        let mut mac = keyed_mac(&KEY);
        mac.update(b"hamon heartbeat");
        let tag = mac.finalize().into_bytes().to_vec();
        // Python: hmac.new(b"\x42" * 32, b"hamon heartbeat", hashlib.sha256).hexdigest()
        let expected = unhex("58c948ea533536527ba30d201f4d57ac9203d6a1e072ed291ba0802c1e68153d")?;
        assert_eq!(tag, expected);
        assert_eq!(tag, reference_mac(&KEY, b"hamon heartbeat"));
        Ok(())
    }

    #[test]
    fn sync_lag_travels_as_an_optional_field() {
        let mut frame = sample();
        frame.body.sync = Some(crate::ha::SyncBeat {
            frequent: crate::ha::ClassBeat {
                lag: Some(3),
                files: 12,
                bytes: 5 << 32,
            },
            batch: crate::ha::ClassBeat::default(),
        });
        let bytes = encode(&frame, &KEY).unwrap();
        assert_eq!(decode(&bytes, &KEY).unwrap(), frame);
        let without = encode(&sample(), &KEY).unwrap();
        assert_eq!(bytes.len(), without.len() + 2 + SYNC_LEN);
        // The field has one fixed size: anything else is refused.
        assert_eq!(
            decode_tlvs(&[(TLV_SYNC, vec![0; SYNC_LEN - 1])]).unwrap_err(),
            WireError::BadLength
        );
    }

    #[test]
    fn encoded_bytes_field_by_field() -> TestResult {
        let f = sample();
        let b = encode(&f, &KEY)?;

        assert_eq!(&b[0..4], b"HMHB");
        assert_eq!(&b[MAGIC_OFFSET..VERSION_OFFSET], &MAGIC);
        assert_eq!(b[4], VERSION);
        assert_eq!(b[5], 0, "flags are sent as 0");
        let body_len = usize::from(u16::from_be_bytes([b[6], b[7]]));
        assert_eq!(body_len, 43);
        assert_eq!(b.len(), 56 + body_len + 32);
        assert_eq!(&b[8..24], &f.boot_id);
        assert_eq!(&b[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &b[32..48],
            &[
                0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed,
                0xee, 0xef
            ]
        );
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0, 0, 41]);

        let body = &b[56..56 + body_len];
        let expected_body = [
            &[1, 11][..],
            b"appliance-a",
            &[2, 1, 1],                                                 // role Primary
            &[3, 1, 11],                                                // state PrimaryActive
            &[4, 1, 0b011],                                             // active | registered
            &[5, 9, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 2], // id, Automatic
            &[6, 4, 1, 2, 3, 0], // Ok, Warning, Failed, Unknown
            &[7, 2, 0x1f, 0x90], // 8080
        ]
        .concat();
        assert_eq!(body, &expected_body[..]);

        assert_eq!(
            &b[56 + body_len..],
            &reference_mac(&KEY, &b[..56 + body_len])[..]
        );
        assert_eq!(b, unhex(GOLDEN)?);
        Ok(())
    }

    #[test]
    fn flag_bits_and_absent_echo_encode_as_specified() -> TestResult {
        let mut f = sample();
        f.echo = None;
        f.body.active = false;
        f.body.registered = None;
        f.body.shutting_down = true;
        let b = encode(&f, &KEY)?;
        assert_eq!(&b[32..56], &[0; 24]);
        // name, role, state, then flags with only bit 2, and no TLV 5.
        assert_eq!(&b[56 + 13 + 3 + 3..][..3], &[4, 1, 0b100]);
        assert_eq!(&b[56 + 13 + 3 + 3 + 3..][..2], &[6, 4]);
        assert_eq!(decode(&b, &KEY)?, f);
        Ok(())
    }

    #[test]
    fn golden_vector_decodes() -> TestResult {
        assert_eq!(decode(&unhex(GOLDEN)?, &KEY)?, sample());
        Ok(())
    }

    #[test]
    fn round_trip() -> TestResult {
        let mut f = sample();
        assert_eq!(decode(&encode(&f, &KEY)?, &KEY)?, f);
        f.echo = None;
        f.body.registered = None;
        f.body.shutting_down = true;
        f.body.name = "é".repeat(31) + "x"; // 63 bytes, multi-byte UTF-8
        assert_eq!(decode(&encode(&f, &KEY)?, &KEY)?, f);
        Ok(())
    }

    #[test]
    fn standard_helpers_decode() -> TestResult {
        assert_eq!(
            decode_tlvs(&standard_tlvs())?,
            standard_frame(standard_body())
        );
        let mut registered = standard_body();
        registered.registered = Some((77, FailoverType::Manual));
        assert_eq!(decode_tlvs(&registered_tlvs())?, standard_frame(registered));
        Ok(())
    }

    #[test]
    fn truncated_at_every_length() -> TestResult {
        let full = encode(&sample(), &KEY)?;
        for n in 0..full.len() {
            assert_eq!(
                decode(&full[..n], &KEY),
                Err(WireError::Truncated),
                "length {n}"
            );
        }
        Ok(())
    }

    #[test]
    fn max_frame_accepted_one_more_byte_too_long() -> TestResult {
        // Pad a valid body with unknown TLVs to exactly MAX_FRAME.
        let mut body = body_of(&standard_tlvs());
        let room = MAX_FRAME - MIN_FRAME - body.len();
        body.extend(tlv(200, &[0xaa; 200]));
        body.extend(tlv(201, &vec![0xbb; room - 204]));
        let exact = with_body(&body);
        assert_eq!(exact.len(), MAX_FRAME);
        assert_eq!(decode(&exact, &KEY)?, standard_frame(standard_body()));

        body.push(0);
        let over = with_body(&body);
        assert_eq!(over.len(), MAX_FRAME + 1);
        assert_eq!(decode(&over, &KEY), Err(WireError::TooLong));
        assert_eq!(decode(&[0; 4096], &KEY), Err(WireError::TooLong));
        Ok(())
    }

    #[test]
    fn bad_magic() -> TestResult {
        let good = encode(&sample(), &KEY)?;
        for i in 0..4 {
            let mut b = good.clone();
            b[i] ^= 0x20;
            assert_eq!(decode(&b, &KEY), Err(WireError::BadMagic));
        }
        Ok(())
    }

    #[test]
    fn the_version_field_round_trips_and_a_bad_one_is_refused() -> TestResult {
        let mut f = sample();
        f.version = Some(Version {
            release: "2.7.1-rc1".into(),
            major: 1,
            minor: 2,
        });
        assert_eq!(decode(&encode(&f, &KEY)?, &KEY)?, f);
        // The TLV as the module documentation gives it: 9, len, major, minor, release.
        let mut tlvs = standard_tlvs();
        tlvs.push((TLV_VERSION, b"\x01\x03next".to_vec()));
        let got = decode_tlvs(&tlvs)?;
        assert_eq!(
            got.version,
            Some(Version {
                release: "next".into(),
                major: 1,
                minor: 3
            })
        );
        for bad in [&b"\x01"[..], b"\x01\x01", b"\x01\x01\xff\xfe"] {
            let mut tlvs = standard_tlvs();
            tlvs.push((TLV_VERSION, bad.to_vec()));
            assert!(decode_tlvs(&tlvs).is_err(), "{bad:?} accepted");
        }
        let mut long = standard_tlvs();
        long.push((TLV_VERSION, [&[1u8, 1][..], &[b'x'; 33]].concat()));
        assert_eq!(decode_tlvs(&long), Err(WireError::BadValue("version")));
        f.version = Some(Version {
            release: String::new(),
            major: 1,
            minor: 1,
        });
        assert_eq!(encode(&f, &KEY), Err(WireError::BadValue("version")));
        Ok(())
    }

    #[test]
    fn unsupported_version() -> TestResult {
        for v in [0, 2, 255] {
            let mut unsealed = header(0);
            unsealed[VERSION_OFFSET] = v;
            // Sealed correctly: the version is refused for itself, not for the MAC.
            assert_eq!(
                decode(&seal(unsealed, &KEY), &KEY),
                Err(WireError::UnsupportedVersion(v))
            );
        }
        Ok(())
    }

    #[test]
    fn every_flipped_authenticated_bit_is_bad_mac() -> TestResult {
        let good = encode(&sample(), &KEY)?;
        // Byte 5 (flags) and everything from the boot id on, MAC included. (Magic, version and
        // body_len have their own errors, checked before the MAC.)
        let positions = std::iter::once(FLAGS_OFFSET).chain(BOOT_ID_OFFSET..good.len());
        for i in positions {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert_eq!(
                    decode(&b, &KEY),
                    Err(WireError::BadMac),
                    "byte {i} bit {bit}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn wrong_key_is_bad_mac() -> TestResult {
        let b = encode(&sample(), &KEY)?;
        let mut other = KEY;
        other[31] ^= 1;
        assert_eq!(decode(&b, &other), Err(WireError::BadMac));
        assert_eq!(decode(&b, &[0; 32]), Err(WireError::BadMac));
        Ok(())
    }

    #[test]
    fn body_len_mismatch() -> TestResult {
        let good = encode(&sample(), &KEY)?;
        let body_len = u16::from_be_bytes([good[6], good[7]]);

        // Announces less than is there: bytes left over after the MAC.
        let mut short = good.clone();
        short[6..8].copy_from_slice(&(body_len - 1).to_be_bytes());
        assert_eq!(decode(&short, &KEY), Err(WireError::BadLength));

        // A valid frame with trailing garbage.
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing, &KEY), Err(WireError::BadLength));

        // Announces more than is there.
        let mut long = good.clone();
        long[6..8].copy_from_slice(&(body_len + 1).to_be_bytes());
        assert_eq!(decode(&long, &KEY), Err(WireError::Truncated));
        long[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&long, &KEY), Err(WireError::Truncated));
        Ok(())
    }

    #[test]
    fn header_flags_are_ignored_on_receive() -> TestResult {
        let body = body_of(&standard_tlvs());
        let mut unsealed = header(body.len());
        unsealed[FLAGS_OFFSET] = 0xff;
        unsealed.extend(body);
        assert_eq!(
            decode(&seal(unsealed, &KEY), &KEY)?,
            standard_frame(standard_body())
        );
        Ok(())
    }

    #[test]
    fn zero_echo_boot_means_no_echo() -> TestResult {
        let body = body_of(&standard_tlvs());
        let mut unsealed = header(body.len());
        unsealed[ECHO_SEQ_OFFSET..BODY_OFFSET].copy_from_slice(&99u64.to_be_bytes());
        unsealed.extend(body);
        assert_eq!(decode(&seal(unsealed, &KEY), &KEY)?.echo, None);
        Ok(())
    }

    #[test]
    fn encode_rejects_unrepresentable_frames() {
        let mut f = sample();
        f.echo = Some(([0; 16], 5));
        assert_eq!(encode(&f, &KEY), Err(WireError::BadValue("echo")));

        for name in [String::new(), "x".repeat(64), "é".repeat(32)] {
            let mut f = sample();
            f.body.name = name;
            assert_eq!(encode(&f, &KEY), Err(WireError::BadValue("name")));
        }
    }

    #[test]
    fn missing_each_required_field() {
        let required = [
            (TLV_NAME, "name"),
            (TLV_ROLE, "role"),
            (TLV_STATE, "state"),
            (TLV_FLAGS, "flags"),
            (TLV_HEALTH, "health"),
            (TLV_HM_PORT, "hm_port"),
        ];
        for (kind, field) in required {
            let mut tlvs = standard_tlvs();
            tlvs.retain(|(k, _)| *k != kind);
            assert_eq!(decode_tlvs(&tlvs), Err(WireError::MissingField(field)));
        }
        assert_eq!(decode_tlvs(&[]), Err(WireError::MissingField("name")));
    }

    #[test]
    fn duplicate_known_field() {
        for kind in 1..=7 {
            let mut tlvs = registered_tlvs();
            let copy = tlvs.iter().find(|(k, _)| *k == kind).cloned();
            assert!(copy.is_some(), "type {kind} in registered_tlvs");
            tlvs.extend(copy);
            assert_eq!(decode_tlvs(&tlvs), Err(WireError::DuplicateField(kind)));
        }
    }

    /// `standard_tlvs()` with the value of `kind` replaced.
    fn replaced(kind: u8, value: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut tlvs = standard_tlvs();
        for (k, v) in tlvs.iter_mut() {
            if *k == kind {
                *v = value.to_vec();
            }
        }
        tlvs
    }

    #[test]
    fn bad_codes_are_bad_values() {
        for code in [0, 3, 255] {
            assert_eq!(
                decode_tlvs(&replaced(TLV_ROLE, &[code])),
                Err(WireError::BadValue("role"))
            );
        }
        for code in [0, 3, 9, 29, 38, 255] {
            assert_eq!(
                decode_tlvs(&replaced(TLV_STATE, &[code])),
                Err(WireError::BadValue("state"))
            );
        }
        for i in 0..4 {
            let mut health = [1; 4];
            health[i] = 4;
            assert_eq!(
                decode_tlvs(&replaced(TLV_HEALTH, &health)),
                Err(WireError::BadValue("health"))
            );
        }
        for code in [0, 3] {
            let mut tlvs = registered_tlvs();
            for (k, v) in tlvs.iter_mut() {
                if *k == TLV_REGISTRATION {
                    v[8] = code;
                }
            }
            assert_eq!(
                decode_tlvs(&tlvs),
                Err(WireError::BadValue("failover_type"))
            );
        }
    }

    #[test]
    fn bad_names() -> TestResult {
        for name in [&[0xff, 0xfe][..], b"ok\xc3", &[], &[b'n'; 64]] {
            assert_eq!(
                decode_tlvs(&replaced(TLV_NAME, name)),
                Err(WireError::BadValue("name"))
            );
        }
        let longest = decode_tlvs(&replaced(TLV_NAME, &[b'n'; 63]))?;
        assert_eq!(longest.body.name, "n".repeat(63));
        Ok(())
    }

    #[test]
    fn wrong_tlv_sizes_are_bad_length() {
        let cases: [(u8, &[u8]); 9] = [
            (TLV_ROLE, &[1, 1]),
            (TLV_STATE, &[]),
            (TLV_FLAGS, &[0, 0]),
            (TLV_HEALTH, &[1, 1, 1]),
            (TLV_HEALTH, &[1, 1, 1, 1, 1]),
            (TLV_HM_PORT, &[1]),
            (TLV_HM_PORT, &[1, 2, 3]),
            (TLV_REGISTRATION, &[0; 8]),
            (TLV_REGISTRATION, &[1; 10]),
        ];
        for (kind, value) in cases {
            let mut tlvs = standard_tlvs();
            tlvs.retain(|(k, _)| *k != kind);
            tlvs.push((kind, value.to_vec()));
            assert_eq!(decode_tlvs(&tlvs), Err(WireError::BadLength), "type {kind}");
        }
    }

    #[test]
    fn tlv_overrunning_body_is_bad_length() {
        let mut body = body_of(&standard_tlvs());
        body.extend_from_slice(&[9, 5, 0, 0]); // announces 5, carries 2
        assert_eq!(decode(&with_body(&body), &KEY), Err(WireError::BadLength));

        let mut body = body_of(&standard_tlvs());
        body.push(9); // a type byte with no length
        assert_eq!(decode(&with_body(&body), &KEY), Err(WireError::BadLength));
    }

    #[test]
    fn registered_flag_must_match_registration_tlv() {
        let mut without_tlv = registered_tlvs();
        without_tlv.retain(|(k, _)| *k != TLV_REGISTRATION);
        assert_eq!(
            decode_tlvs(&without_tlv),
            Err(WireError::BadValue("registered"))
        );

        let mut without_flag = registered_tlvs();
        for (k, v) in without_flag.iter_mut() {
            if *k == TLV_FLAGS {
                *v = vec![FLAG_ACTIVE];
            }
        }
        assert_eq!(
            decode_tlvs(&without_flag),
            Err(WireError::BadValue("registered"))
        );
    }

    #[test]
    fn reserved_body_flag_bits_are_ignored() -> TestResult {
        let got = decode_tlvs(&replaced(TLV_FLAGS, &[0b1110_0000 | FLAG_SHUTTING_DOWN]))?;
        let mut expected = standard_body();
        expected.active = false;
        expected.shutting_down = true;
        assert_eq!(got.body, expected);
        Ok(())
    }

    #[test]
    fn unknown_tlvs_are_skipped() -> TestResult {
        let mut tlvs = standard_tlvs();
        tlvs.insert(0, (10, b"from the future".to_vec()));
        tlvs.insert(3, (0, vec![]));
        tlvs.insert(5, (255, vec![0xff; 255]));
        tlvs.push((10, vec![1, 2, 3])); // an unknown type may repeat
        assert_eq!(decode_tlvs(&tlvs)?, standard_frame(standard_body()));
        Ok(())
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            WireError::UnsupportedVersion(2).to_string(),
            "unsupported heartbeat version 2"
        );
        assert_eq!(
            WireError::MissingField("role").to_string(),
            "heartbeat lacks required field role"
        );
    }

    fn level() -> impl Strategy<Value = Level> {
        select(vec![
            Level::Unknown,
            Level::Ok,
            Level::Warning,
            Level::Failed,
        ])
    }

    /// Up to 63 bytes of arbitrary (often multi-byte) UTF-8, never empty.
    fn name() -> impl Strategy<Value = String> {
        vec(any::<char>(), 1..=NAME_MAX).prop_map(|chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > NAME_MAX {
                    break;
                }
                s.push(c);
            }
            s
        })
    }

    fn class_beat() -> impl Strategy<Value = crate::ha::ClassBeat> {
        (
            proptest::option::of(0..u32::MAX),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(lag, files, bytes)| crate::ha::ClassBeat { lag, files, bytes })
    }

    fn body() -> impl Strategy<Value = Body> {
        (
            name(),
            select(vec![Role::Primary, Role::Secondary]),
            select(HaState::ALL),
            any::<bool>(),
            proptest::option::of((
                any::<u64>(),
                select(vec![FailoverType::Manual, FailoverType::Automatic]),
            )),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (level(), level(), level(), level()),
            any::<u16>(),
            proptest::option::of((class_beat(), class_beat())),
        )
            .prop_map(
                |(name, role, state, active, registered, flags, h, hm_port, sync)| Body {
                    name,
                    role,
                    state,
                    active,
                    registered,
                    shutting_down: flags.0,
                    asks: flags.1,
                    was_active: flags.2,
                    health: HealthSummary {
                        processes: h.0,
                        database: h.1,
                        disk: h.2,
                        nic: h.3,
                    },
                    hm_port,
                    sync: sync.map(|(frequent, batch)| crate::ha::SyncBeat { frequent, batch }),
                },
            )
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let echo_boot = any::<[u8; 16]>().prop_filter("all zero means no echo", |b| *b != [0; 16]);
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            proptest::option::of((echo_boot, any::<u64>())),
            body(),
            proptest::option::of(("[ -~]{1,32}", any::<u8>(), any::<u8>()).prop_map(
                |(release, major, minor)| Version {
                    release,
                    major,
                    minor,
                },
            )),
        )
            .prop_map(|(boot_id, seq, echo, body, version)| Frame {
                boot_id,
                seq,
                echo,
                body,
                version,
            })
    }

    /// Errors only the body parser produces.
    fn is_body_error(e: &WireError) -> bool {
        matches!(
            e,
            WireError::BadLength
                | WireError::MissingField(_)
                | WireError::DuplicateField(_)
                | WireError::BadValue(_)
        )
    }

    proptest! {
        #[test]
        fn prop_round_trip(f in frame()) {
            let bytes = encode(&f, &KEY)?;
            prop_assert!(bytes.len() <= MAX_FRAME);
            prop_assert_eq!(decode(&bytes, &KEY)?, f);
        }

        #[test]
        fn prop_arbitrary_bytes_are_rejected(bytes in vec(any::<u8>(), 0..=600)) {
            // Without the key nothing authenticates, and nothing panics.
            prop_assert!(decode(&bytes, &KEY).is_err());
        }

        #[test]
        fn prop_arbitrary_sealed_body_never_panics(
            head in any::<[u8; 48]>(),
            flags in any::<u8>(),
            body in vec(any::<u8>(), 0..=MAX_FRAME - MIN_FRAME),
        ) {
            let mut unsealed = header(body.len());
            unsealed[FLAGS_OFFSET] = flags;
            unsealed[BOOT_ID_OFFSET..BODY_OFFSET].copy_from_slice(&head);
            unsealed.extend_from_slice(&body);
            match decode(&seal(unsealed, &KEY), &KEY) {
                Ok(f) => prop_assert_eq!(decode(&encode(&f, &KEY)?, &KEY)?, f),
                Err(e) => prop_assert!(is_body_error(&e), "{:?}", e),
            }
        }

        /// Extra TLVs spliced into a valid body: unknown types change nothing, known types
        /// (all of which are then duplicated or inconsistent) are rejected by the body parser.
        #[test]
        fn prop_spliced_tlvs(
            f in frame(),
            extras in vec((any::<u8>(), vec(any::<u8>(), 0..=16), any::<Index>()), 0..=6),
        ) {
            let encoded = encode(&f, &KEY)?;
            let mut tlvs: Vec<Vec<u8>> = Vec::new();
            let mut rest = &encoded[BODY_OFFSET..encoded.len() - MAC_LEN];
            while let [_, len, ..] = rest {
                let (one, next) = rest.split_at(2 + usize::from(*len));
                tlvs.push(one.to_vec());
                rest = next;
            }
            // The optional sync and version fields are known types only when the frame has
            // them (then a second one is a duplicate); otherwise they could be valid.
            let absent = |k: u8| {
                (k == TLV_SYNC && f.body.sync.is_none())
                    || (k == TLV_VERSION && f.version.is_none())
            };
            let extras: Vec<_> = extras
                .into_iter()
                .map(|(k, v, at)| (if absent(k) { 10 } else { k }, v, at))
                .collect();
            let any_known = extras.iter().any(|(k, _, _)| (1..=9).contains(k));
            for (kind, value, at) in extras {
                let at = at.index(tlvs.len() + 1);
                tlvs.insert(at, tlv(kind, &value));
            }
            let body = tlvs.concat();
            let mut unsealed = encoded[..BODY_OFFSET].to_vec();
            unsealed[BODY_LEN_OFFSET..BOOT_ID_OFFSET]
                .copy_from_slice(&u16::try_from(body.len())?.to_be_bytes());
            unsealed.extend_from_slice(&body);
            match decode(&seal(unsealed, &KEY), &KEY) {
                Ok(g) => {
                    prop_assert!(!any_known);
                    prop_assert_eq!(g, f);
                }
                Err(e) => {
                    prop_assert!(any_known, "{:?}", e);
                    prop_assert!(is_body_error(&e), "{:?}", e);
                }
            }
        }
    }
}
