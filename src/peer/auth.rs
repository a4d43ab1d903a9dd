//! Keys and signatures between the two servers.
//!
//! The operator's HA authentication key never travels. Both servers derive
//! two 32-byte keys from it with HKDF-SHA256: one seals heartbeats, the other
//! signs peer API requests and their responses. See `docs/protocol.md`.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the request time (Unix milliseconds).
pub const H_TIME: &str = "x-hamon-time";
/// Header carrying a random 128-bit nonce (hex).
pub const H_NONCE: &str = "x-hamon-nonce";
/// Header carrying the HMAC-SHA256 signature (hex).
pub const H_SIGNATURE: &str = "x-hamon-signature";
/// Header naming the signing scheme's version, so that a later change can
/// be told from this one (and refused with a clear reason) server by server.
pub const H_VERSION: &str = "x-hamon-auth";
/// The signing scheme this build speaks: method, path, query, receiver,
/// body, time and nonce under the API key.
pub const AUTH_VERSION: &str = "2";

/// The rule `hamon ha authkey` enforces, printed when it refuses a key.
pub const PASSWORD_RULE: &str = "the authentication key must be at least 8 characters long and \
     contain an upper-case letter, a lower-case letter and a digit";

/// Check a new authentication key against the password standard.
pub fn check_password_standard(key: &str) -> Result<(), String> {
    let ok = key.chars().count() >= 8
        && key.chars().any(|c| c.is_ascii_uppercase())
        && key.chars().any(|c| c.is_ascii_lowercase())
        && key.chars().any(|c| c.is_ascii_digit())
        && !key.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(PASSWORD_RULE.to_string())
    }
}

/// The working keys: heartbeat MACs, peer API signatures, and the API token scripts send.
/// They derive from the pair secret ([`crate::peer::pair::PairSecret::keys`]); only a pair
/// registered before pair secrets existed still derives them from the operator's key
/// ([`Keys::legacy`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub heartbeat: [u8; 32],
    pub api: [u8; 32],
    /// The API token's bytes (`hamon ha token` prints them in hex).
    pub token: [u8; 32],
    /// Keys also accepted from the peer for a while (never used to send): the old ones
    /// after a key change, the new ones while it is being made, so that no heartbeat or
    /// request in flight is refused (see `peer::rekey`).
    pub also: Vec<Extra>,
}

/// Keys accepted from the peer until `until_ms`.
#[derive(Clone, PartialEq, Eq)]
pub struct Extra {
    pub heartbeat: [u8; 32],
    pub api: [u8; 32],
    pub until_ms: u64,
    /// Keys of a prepared change: the peer using them means it committed it.
    pub staged: bool,
}

impl Keys {
    /// The heartbeat keys a frame may be sealed with at `now_ms`: ours first.
    pub fn heartbeat_keys(&self, now_ms: u64) -> impl Iterator<Item = [u8; 32]> + '_ {
        let extra = self.also.iter().filter(move |e| now_ms < e.until_ms);
        std::iter::once(self.heartbeat).chain(extra.map(|e| e.heartbeat))
    }

    /// True if `key` (a heartbeat or peer API key) belongs to a prepared change.
    pub fn is_staged(&self, key: &[u8; 32]) -> bool {
        self.also
            .iter()
            .any(|e| e.staged && (e.heartbeat == *key || e.api == *key))
    }

    /// The peer API keys a request may be signed with at `now_ms`: ours first.
    pub fn api_keys(&self, now_ms: u64) -> impl Iterator<Item = [u8; 32]> + '_ {
        let extra = self.also.iter().filter(move |e| now_ms < e.until_ms);
        std::iter::once(self.api).chain(extra.map(|e| e.api))
    }

    /// These keys, also accepting `other`'s until `until_ms` (expired extras dropped).
    pub fn also_accepting(self, other: &Keys, until_ms: u64, now_ms: u64) -> Keys {
        self.with_extra(other, until_ms, now_ms, false)
    }

    /// As [`Keys::also_accepting`], for the keys of a prepared change.
    pub fn also_accepting_staged(self, other: &Keys, until_ms: u64, now_ms: u64) -> Keys {
        self.with_extra(other, until_ms, now_ms, true)
    }

    fn with_extra(mut self, other: &Keys, until_ms: u64, now_ms: u64, staged: bool) -> Keys {
        self.also
            .retain(|e| now_ms < e.until_ms && !(staged && e.staged));
        self.also.push(Extra {
            heartbeat: other.heartbeat,
            api: other.api,
            until_ms,
            staged,
        });
        self
    }
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extra(<redacted> until {})", self.until_ms)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// The keys of wave 1, derived from the operator's key alone (HKDF, fixed salt): a
    /// capture lets a guess of the key be checked cheaply. Used only by a pair registered
    /// before pair secrets, until its key is changed (`hamon ha authkey` then gives it a
    /// pair secret), so that upgrading one server at a time keeps its heartbeats and token.
    pub fn legacy(authkey: &str) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(b"hamon-v1"), authkey.as_bytes());
        let mut heartbeat = [0u8; 32];
        let mut api = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit (8160), so expand cannot fail.
        let _ = hk.expand(b"heartbeat", &mut heartbeat);
        let _ = hk.expand(b"peer-api", &mut api);
        let mut token = [0u8; 32];
        // wave 1's token: HMAC-SHA256(key = authkey, label); HMAC takes any key length.
        if let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(authkey.as_bytes()) {
            mac.update(crate::web::ui::session::API_TOKEN_LABEL.as_bytes());
            token.copy_from_slice(&mac.finalize().into_bytes());
        }
        Keys {
            heartbeat,
            api,
            token,
            also: Vec::new(),
        }
    }
}

fn mac(key: &[u8; 32]) -> HmacSha256 {
    crate::peer::wire::keyed_mac(key)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a request's signature covers. `target` is the path with its query
/// (`/a?b=c`); `receiver` is the address of the server the request is for,
/// as the sender knows it, so a request cannot be replayed to the other one.
fn request_message(
    method: &str,
    target: &str,
    receiver: &str,
    body: &[u8],
    time_ms: u64,
    nonce: &str,
) -> Vec<u8> {
    let body_hash = hex(&Sha256::digest(body));
    // One spelling per address (an operator may type `2001:db8:0::12`).
    let receiver = receiver
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| receiver.to_string(), |a| a.to_string());
    format!("hamon-request-v2\n{method}\n{target}\n{receiver}\n{body_hash}\n{time_ms}\n{nonce}")
        .into_bytes()
}

fn response_message(nonce: &str, status: u16, body: &[u8]) -> Vec<u8> {
    let body_hash = hex(&Sha256::digest(body));
    format!("hamon-response-v1\n{nonce}\n{status}\n{body_hash}").into_bytes()
}

fn sign(key: &[u8; 32], message: &[u8]) -> String {
    let mut m = mac(key);
    m.update(message);
    hex(&m.finalize().into_bytes())
}

fn verify(key: &[u8; 32], message: &[u8], signature_hex: &str) -> bool {
    let Some(sig) = unhex(signature_hex) else {
        return false;
    };
    let mut m = mac(key);
    m.update(message);
    m.verify_slice(&sig).is_ok()
}

/// Headers that sign a request for `receiver` (its address): version,
/// time, nonce and signature. `target` is the path with any query.
pub fn sign_request(
    key: &[u8; 32],
    method: &str,
    target: &str,
    receiver: &str,
    body: &[u8],
    time_ms: u64,
    nonce: [u8; 16],
) -> Vec<(&'static str, String)> {
    let nonce = hex(&nonce);
    let sig = sign(
        key,
        &request_message(method, target, receiver, body, time_ms, &nonce),
    );
    vec![
        (H_VERSION, AUTH_VERSION.to_string()),
        (H_TIME, time_ms.to_string()),
        (H_NONCE, nonce),
        (H_SIGNATURE, sig),
    ]
}

/// The signature a server puts on its response to the request with `nonce`.
pub fn sign_response(key: &[u8; 32], nonce: &str, status: u16, body: &[u8]) -> String {
    sign(key, &response_message(nonce, status, body))
}

/// Check a response's signature against the nonce of our request.
pub fn verify_response(
    key: &[u8; 32],
    nonce: &str,
    status: u16,
    body: &[u8],
    signature: Option<&str>,
) -> bool {
    signature.is_some_and(|s| verify(key, &response_message(nonce, status, body), s))
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed {0} header")]
    Missing(&'static str),
    #[error("bad signature: the peers' authentication keys differ")]
    BadSignature,
    #[error("stale request: clocks differ by {skew_ms} ms (limit {limit_ms} ms); check NTP")]
    Stale { skew_ms: u64, limit_ms: u64 },
    #[error("replayed request (nonce already seen)")]
    Replayed,
    #[error("request signed before this server started (its nonces from then are forgotten)")]
    BeforeStart,
    #[error(
        "the peer signs with scheme {0:?}; this server speaks {AUTH_VERSION}: upgrade both servers"
    )]
    Version(String),
}

/// Server side of request signing: checks signatures, freshness and nonces.
#[derive(Debug)]
pub struct Verifier {
    max_skew_ms: u64,
    /// Requests signed before this moment are refused: the nonces seen
    /// before a restart are not remembered, so the window starts again.
    not_before_ms: u64,
    seen: HashMap<String, u64>,
}

/// Upper bound on remembered nonces; older ones expire with the skew window.
const MAX_NONCES: usize = 100_000;

impl Verifier {
    /// A verifier that starts at `started_ms` (Unix milliseconds, now): no
    /// request signed earlier is taken.
    pub fn new(max_skew_ms: u64, started_ms: u64) -> Verifier {
        Verifier {
            max_skew_ms,
            not_before_ms: started_ms,
            seen: HashMap::new(),
        }
    }

    /// Verify one request for `receiver` (this server's address). `target`
    /// is the path with any query, `header` looks a header up by lower-case
    /// name. On success returns the request's nonce (to sign the response
    /// with).
    #[allow(clippy::too_many_arguments)]
    pub fn verify<'a>(
        &mut self,
        key: &[u8; 32],
        method: &str,
        target: &str,
        receiver: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'a str>,
        now_ms: u64,
    ) -> Result<String, AuthError> {
        match header(H_VERSION) {
            Some(AUTH_VERSION) => {}
            Some(other) => return Err(AuthError::Version(other.chars().take(16).collect())),
            None => return Err(AuthError::Version("1".into())),
        }
        let time: u64 = header(H_TIME)
            .and_then(|t| t.parse().ok())
            .ok_or(AuthError::Missing(H_TIME))?;
        let nonce = header(H_NONCE)
            .filter(|n| n.len() == 32 && unhex(n).is_some())
            .ok_or(AuthError::Missing(H_NONCE))?;
        let sig = header(H_SIGNATURE).ok_or(AuthError::Missing(H_SIGNATURE))?;
        if !verify(
            key,
            &request_message(method, target, receiver, body, time, nonce),
            sig,
        ) {
            return Err(AuthError::BadSignature);
        }
        if time < self.not_before_ms {
            return Err(AuthError::BeforeStart);
        }
        let skew_ms = now_ms.abs_diff(time);
        if skew_ms > self.max_skew_ms {
            return Err(AuthError::Stale {
                skew_ms,
                limit_ms: self.max_skew_ms,
            });
        }
        let window = self.max_skew_ms;
        self.seen
            .retain(|_, t| now_ms.abs_diff(*t) <= window.saturating_mul(2));
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= MAX_NONCES {
            // Flooded with valid signatures (only a key holder can): refuse
            // rather than grow without bound.
            return Err(AuthError::Replayed);
        }
        self.seen.insert(nonce.to_string(), time);
        Ok(nonce.to_string())
    }
}

/// A random non-zero id (registration ids).
pub fn random_id() -> u64 {
    let b = random16();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]).max(1)
}

/// `N` random bytes from the OS, for keys, secrets and AEAD nonces: an error, never a
/// weaker fallback, when the OS has no randomness to give.
pub fn random_key<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| std::io::Error::other(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

/// 16 random bytes from the OS, for replay nonces and ids.
pub fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and address entropy; nonces
        // still differ per call, which is what replay protection needs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let local = &b as *const _ as usize as u128;
        b = (t ^ (local << 64)).to_le_bytes();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(h: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn password_standard() {
        assert!(check_password_standard("Abcdefg1").is_ok());
        for bad in [
            "Abcdef1",
            "abcdefg1",
            "ABCDEFG1",
            "Abcdefgh",
            "",
            "Abc\ndef1",
        ] {
            assert_eq!(
                check_password_standard(bad),
                Err(PASSWORD_RULE.to_string()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_distinct_and_deterministic() {
        let a = Keys::legacy("Secret-Key-1");
        assert_eq!(a, Keys::legacy("Secret-Key-1"));
        assert_ne!(a.heartbeat, a.api);
        assert_ne!(a, Keys::legacy("Secret-Key-2"));
        assert_eq!(format!("{a:?}"), "Keys(<redacted>)");
    }

    const ME: &str = "192.0.2.12";

    #[test]
    fn signed_request_verifies_once() {
        let k = Keys::legacy("Secret-Key-1").api;
        let h = sign_request(
            &k,
            "POST",
            "/peer/v1/register",
            ME,
            b"{}",
            1_000_000,
            [7; 16],
        );
        let mut v = Verifier::new(30_000, 990_000);
        let check = |v: &mut Verifier, now| {
            v.verify(&k, "POST", "/peer/v1/register", ME, b"{}", lookup(&h), now)
        };
        assert_eq!(check(&mut v, 1_010_000), Ok(hex(&[7; 16])));
        assert_eq!(check(&mut v, 1_010_001), Err(AuthError::Replayed));
    }

    #[test]
    fn tampering_wrong_key_and_staleness_are_refused() {
        let k = Keys::legacy("Secret-Key-1").api;
        let target = "/peer/v1/sync/file?set=conf";
        let h = sign_request(&k, "POST", target, ME, b"{\"a\":1}", 5_000_000, [1; 16]);
        let mut v = Verifier::new(30_000, 4_000_000);
        let now = 5_000_000;
        let mut check =
            |key: &[u8; 32], method: &str, target: &str, receiver: &str, body: &[u8], now| {
                v.verify(key, method, target, receiver, body, lookup(&h), now)
            };
        let other = Keys::legacy("Secret-Key-2").api;
        let body = b"{\"a\":1}";
        let bad = Err(AuthError::BadSignature);
        assert_eq!(check(&other, "POST", target, ME, body, now), bad);
        assert_eq!(check(&k, "POST", target, ME, b"{\"a\":2}", now), bad);
        assert_eq!(check(&k, "GET", target, ME, body, now), bad);
        // The path, and the query, are signed.
        assert_eq!(check(&k, "POST", "/peer/v1/sync/file", ME, body, now), bad);
        assert_eq!(
            check(&k, "POST", "/peer/v1/sync/file?set=conf&x=1", ME, body, now),
            bad
        );
        // So is the server it is for: the other server will not take it.
        assert_eq!(check(&k, "POST", target, "192.0.2.11", body, now), bad);
        // (written any way that names the same address)
        let v6 = sign_request(&k, "POST", "/p", "2001:db8:0::12", b"", now, [2; 16]);
        let mut v2 = Verifier::new(30_000, 0);
        assert!(v2
            .verify(&k, "POST", "/p", "2001:db8::12", b"", lookup(&v6), now)
            .is_ok());
        assert_eq!(
            check(&k, "POST", target, ME, body, now + 31_000),
            Err(AuthError::Stale {
                skew_ms: 31_000,
                limit_ms: 30_000
            })
        );
        assert_eq!(check(&k, "POST", target, ME, body, now), Ok(hex(&[1; 16])));
        let missing = v.verify(
            &k,
            "POST",
            target,
            ME,
            body,
            |n| (n == H_VERSION).then_some("2"),
            now,
        );
        assert_eq!(missing, Err(AuthError::Missing(H_TIME)));
        // An older scheme is named, not mistaken for a bad key.
        assert_eq!(
            v.verify(&k, "POST", target, ME, body, |_| None, now),
            Err(AuthError::Version("1".into()))
        );
    }

    #[test]
    fn the_documented_example_signature() {
        // docs/protocol.md, "Worked example": computed outside the code base.
        let k = Keys::legacy("Sim-Key-2026").api;
        let h = sign_request(
            &k,
            "POST",
            "/peer/v1/register_commit",
            "192.0.2.12",
            br#"{"op":"register_commit","id":24301}"#,
            1_800_000_000_000,
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ],
        );
        let sig = lookup(&h)(H_SIGNATURE);
        assert_eq!(
            sig,
            Some("59c80ee0faf4113f1aafecb15a79a1cb9090bf21776365a235564032cdec40a0")
        );
        assert_eq!(lookup(&h)(H_VERSION), Some("2"));
    }

    #[test]
    fn a_request_signed_before_a_restart_is_refused() {
        // Captured and replayed after the receiver restarted (its nonce memory
        // is new), within the clock-skew window: refused all the same.
        let k = Keys::legacy("Secret-Key-1").api;
        let h = sign_request(&k, "POST", "/peer/v1/remove", ME, b"{}", 7_000_000, [3; 16]);
        let mut before = Verifier::new(30_000, 6_000_000);
        let verdict = before.verify(
            &k,
            "POST",
            "/peer/v1/remove",
            ME,
            b"{}",
            lookup(&h),
            7_000_100,
        );
        assert!(verdict.is_ok());
        let mut restarted = Verifier::new(30_000, 7_000_500);
        assert_eq!(
            restarted.verify(
                &k,
                "POST",
                "/peer/v1/remove",
                ME,
                b"{}",
                lookup(&h),
                7_001_000
            ),
            Err(AuthError::BeforeStart)
        );
    }

    #[test]
    fn responses_are_bound_to_the_request_nonce() {
        let k = Keys::legacy("Secret-Key-1").api;
        let sig = sign_response(&k, "00ff", 200, b"ok");
        assert!(verify_response(&k, "00ff", 200, b"ok", Some(&sig)));
        assert!(!verify_response(&k, "00fe", 200, b"ok", Some(&sig)));
        assert!(!verify_response(&k, "00ff", 500, b"ok", Some(&sig)));
        assert!(!verify_response(&k, "00ff", 200, b"no", Some(&sig)));
        assert!(!verify_response(&k, "00ff", 200, b"ok", None));
        assert!(!verify_response(&k, "00ff", 200, b"ok", Some("zz")));
    }

    #[test]
    fn random_nonces_differ() {
        assert_ne!(random16(), random16());
    }
}
