//! The pair secret: 256 bits the two servers of a pair share, from which every working key
//! derives (heartbeats, the peer API and file sync, the API token). The operator's key is
//! only ever used to agree on it, through SPAKE2, a password-authenticated key exchange:
//! nothing the two servers send lets anyone check a guess of the key offline, and an active
//! attacker gets one guess per exchange, which the receiver's login throttle counts.
//!
//! The exchange (`POST /peer/v1/pair`, see `docs/protocol.md`):
//!
//! 1. The caller (A) sends SPAKE2's first message, bound to both servers' addresses.
//! 2. The receiver (B) answers with its message and a confirmation, an HMAC of both messages
//!    under a key only a party that knew the operator's key can compute. It keeps the new
//!    secret as pending, for a minute, under the exchange's id.
//! 3. A checks the confirmation (a wrong key on either side fails here, "the keys differ"),
//!    then signs its real request with keys from the new secret and names the exchange.
//!    B installs the secret once that request is accepted.

use super::auth::Keys;
use hkdf::Hkdf;
use hmac::Mac;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use std::fmt;

/// Version of the exchange's messages.
pub const PAIR_VERSION: u32 = 1;
/// Header naming the exchange whose pending secret signs a request.
pub const H_PAIR: &str = "x-hamon-pair";

/// The secret a pair shares. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PairSecret([u8; 32]);

impl fmt::Debug for PairSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairSecret({})", self.id())
    }
}

impl PairSecret {
    /// 256 fresh random bits (a server's own secret before it is paired, or a key
    /// change's); an error if the OS has no randomness.
    pub fn random() -> std::io::Result<PairSecret> {
        super::auth::random_key().map(PairSecret)
    }

    /// The secret as stored (`state_dir/secret`).
    pub fn to_text(&self) -> String {
        format!("hamon-pair-secret 1 {}\n", super::auth::hex(&self.0))
    }

    /// Parses [`PairSecret::to_text`].
    pub fn from_text(text: &str) -> Result<PairSecret, String> {
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("hamon-pair-secret"), Some("1"), Some(hex), None) => {
                match super::auth::unhex(hex).map(<[u8; 32]>::try_from) {
                    Some(Ok(bytes)) => Ok(PairSecret(bytes)),
                    _ => Err("the secret is not 64 hex digits".into()),
                }
            }
            _ => Err("not a hamon pair secret (version 1)".into()),
        }
    }

    /// The working keys. They depend on the secret alone, not on the operator's key.
    pub fn keys(&self) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(b"hamon-pair-v2"), &self.0);
        let mut keys = Keys {
            heartbeat: [0u8; 32],
            api: [0u8; 32],
            token: [0u8; 32],
            also: Vec::new(),
        };
        // 32 bytes is far below HKDF-SHA256's limit (8160), so expand cannot fail.
        let _ = hk.expand(b"heartbeat", &mut keys.heartbeat);
        let _ = hk.expand(b"peer-api", &mut keys.api);
        let _ = hk.expand(b"api-token", &mut keys.token);
        keys
    }

    /// A short public name for the secret (the first 8 bytes of a hash of it), so that the
    /// two servers can tell whether they hold the same one.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"hamon pair secret id")
            .chain_update(self.0)
            .finalize();
        super::auth::hex(&digest[..8])
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The other side's message is not a SPAKE2 message of the right side and length.
    #[error("malformed pairing message: {0}")]
    Malformed(String),
    /// The confirmation did not check out: the two servers' keys differ (or someone in the
    /// middle tried a guess).
    #[error(
        "the peer's authentication key is not the one given here (the pairing did not \
         confirm); set the same key on both servers"
    )]
    KeysDiffer,
}

fn identities(caller: &str, receiver: &str) -> (Identity, Identity) {
    (
        Identity::new(format!("hamon caller {caller}").as_bytes()),
        Identity::new(format!("hamon receiver {receiver}").as_bytes()),
    )
}

/// The new secret and the receiver's confirmation key, from SPAKE2's shared key and both
/// messages.
fn derive(shared: &[u8], msg_a: &[u8], msg_b: &[u8]) -> (PairSecret, [u8; 32]) {
    let transcript = Sha256::new()
        .chain_update((msg_a.len() as u64).to_be_bytes())
        .chain_update(msg_a)
        .chain_update(msg_b)
        .finalize();
    let hk = Hkdf::<Sha256>::new(Some(&transcript), shared);
    let (mut secret, mut confirm) = ([0u8; 32], [0u8; 32]);
    let _ = hk.expand(b"hamon pair secret", &mut secret);
    let _ = hk.expand(b"hamon pair confirm", &mut confirm);
    (PairSecret(secret), confirm)
}

fn confirmation(key: &[u8; 32]) -> Vec<u8> {
    let mut mac = crate::peer::wire::keyed_mac(key);
    mac.update(b"receiver confirms");
    mac.finalize().into_bytes().to_vec()
}

/// The caller's side between its message and the receiver's answer.
pub struct Caller {
    spake: Spake2<Ed25519Group>,
    msg_a: Vec<u8>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Caller(<pairing>)")
    }
}

impl Caller {
    /// Starts an exchange from `caller` (this server's address) to `receiver` with the
    /// operator's `key`; returns the first message.
    pub fn start(key: &str, caller: &str, receiver: &str) -> (Caller, Vec<u8>) {
        let (a, b) = identities(caller, receiver);
        let (spake, msg_a) = Spake2::<Ed25519Group>::start_a(&Password::new(key), &a, &b);
        let first = msg_a.clone();
        (Caller { spake, msg_a }, first)
    }

    /// Takes the receiver's message and confirmation: the new secret, if both servers used
    /// the same key.
    pub fn finish(self, msg_b: &[u8], confirm: &[u8]) -> Result<PairSecret, PairError> {
        let shared = self
            .spake
            .finish(msg_b)
            .map_err(|e| PairError::Malformed(format!("{e:?}")))?;
        let (secret, confirm_key) = derive(&shared, &self.msg_a, msg_b);
        let expected = confirmation(&confirm_key);
        if expected.len() == confirm.len()
            && crate::web::ui::session::same_bytes(&expected, confirm)
        {
            Ok(secret)
        } else {
            Err(PairError::KeysDiffer)
        }
    }
}

/// The receiver's side: from the caller's message, its own message, its confirmation and
/// the new secret (pending until a request signed with it is accepted).
pub fn respond(
    key: &str,
    caller: &str,
    receiver: &str,
    msg_a: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, PairSecret), PairError> {
    let (a, b) = identities(caller, receiver);
    let (spake, msg_b) = Spake2::<Ed25519Group>::start_b(&Password::new(key), &a, &b);
    let shared = spake
        .finish(msg_a)
        .map_err(|e| PairError::Malformed(format!("{e:?}")))?;
    let (secret, confirm_key) = derive(&shared, msg_a, &msg_b);
    Ok((msg_b, confirmation(&confirm_key), secret))
}

/// How long a receiver keeps a secret no request has used yet.
pub const PENDING_TTL_MS: u64 = 60_000;
/// Most pending secrets kept in all; beyond, new exchanges are refused until some expire.
pub const MAX_PENDING: usize = 8;
/// Most pending secrets kept per caller; a caller's new one replaces its oldest.
pub const MAX_PER_CALLER: usize = 2;

/// A receiver's secrets from exchanges whose signed request has not come yet.
#[derive(Debug, Default)]
pub struct Pending {
    entries: Vec<(String, std::net::IpAddr, PairSecret, u64)>,
}

impl Pending {
    /// Keeps `secret` from the exchange `id` with `caller`, made at `now_ms`. One caller
    /// never pushes out another's exchange: a caller over [`MAX_PER_CALLER`] loses its own
    /// oldest, and a full table refuses the newcomer (false) until entries expire.
    pub fn insert(
        &mut self,
        id: String,
        caller: std::net::IpAddr,
        secret: PairSecret,
        now_ms: u64,
    ) -> bool {
        let caller = caller.to_canonical();
        self.entries.retain(|(i, c, _, at)| {
            !(*i == id && *c == caller) && now_ms.saturating_sub(*at) < PENDING_TTL_MS
        });
        let mine = self
            .entries
            .iter()
            .filter(|(_, c, _, _)| *c == caller)
            .count();
        if mine >= MAX_PER_CALLER {
            if let Some(oldest) = self.entries.iter().position(|(_, c, _, _)| *c == caller) {
                self.entries.remove(oldest);
            }
        }
        if self.entries.len() >= MAX_PENDING {
            return false;
        }
        self.entries.push((id, caller, secret, now_ms));
        true
    }

    /// The secret of exchange `id`, if `caller` made it less than a minute ago.
    pub fn get(&self, id: &str, caller: std::net::IpAddr, now_ms: u64) -> Option<PairSecret> {
        self.entries
            .iter()
            .find(|(i, c, _, at)| {
                i == id
                    && *c == caller.to_canonical()
                    && now_ms.saturating_sub(*at) < PENDING_TTL_MS
            })
            .map(|(_, _, s, _)| s.clone())
    }

    /// Forgets exchange `id` of `caller`.
    pub fn remove(&mut self, id: &str, caller: std::net::IpAddr) {
        let caller = caller.to_canonical();
        self.entries
            .retain(|(i, c, _, _)| !(i == id && *c == caller));
    }

    /// As [`Pending::get`], and forgets it: the secret and when the exchange was made.
    pub fn take(
        &mut self,
        id: &str,
        caller: std::net::IpAddr,
        now_ms: u64,
    ) -> Option<(PairSecret, u64)> {
        let at = self
            .entries
            .iter()
            .find(|(i, c, _, _)| i == id && *c == caller.to_canonical())
            .map(|(_, _, _, at)| *at)?;
        let secret = self.get(id, caller, now_ms)?;
        self.remove(id, caller);
        Some((secret, at))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::peer::auth;

    const A: &str = "192.0.2.11";
    const B: &str = "192.0.2.12";

    #[test]
    fn the_same_key_gives_both_sides_one_new_secret_each_time() {
        let (caller, msg_a) = Caller::start("Abcdefg1", A, B);
        let (msg_b, confirm, theirs) = respond("Abcdefg1", A, B, &msg_a).unwrap();
        let ours = caller.finish(&msg_b, &confirm).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.keys(), theirs.keys());
        // Another exchange with the same key: another secret, other keys.
        let (caller, msg_a) = Caller::start("Abcdefg1", A, B);
        let (msg_b, confirm, _) = respond("Abcdefg1", A, B, &msg_a).unwrap();
        let again = caller.finish(&msg_b, &confirm).unwrap();
        assert_ne!(again, ours);
        assert_ne!(again.keys().heartbeat, ours.keys().heartbeat);
        assert_ne!(again.keys().api, ours.keys().api);
        assert_ne!(again.id(), ours.id());
    }

    #[test]
    fn different_keys_addresses_or_a_reflected_message_do_not_confirm() {
        let (caller, msg_a) = Caller::start("Abcdefg1", A, B);
        let (msg_b, confirm, _) = respond("Abcdefg2", A, B, &msg_a).unwrap();
        assert_eq!(caller.finish(&msg_b, &confirm), Err(PairError::KeysDiffer));
        // Bound to the two addresses: the same exchange aimed elsewhere fails.
        let (caller, msg_a) = Caller::start("Abcdefg1", A, B);
        let (msg_b, confirm, _) = respond("Abcdefg1", A, "192.0.2.99", &msg_a).unwrap();
        assert_eq!(caller.finish(&msg_b, &confirm), Err(PairError::KeysDiffer));
        // Our own message back is refused (SPAKE2 sides differ).
        let (caller, msg_a) = Caller::start("Abcdefg1", A, B);
        assert!(matches!(
            caller.finish(&msg_a, &[0u8; 32]),
            Err(PairError::Malformed(_))
        ));
        assert!(matches!(
            respond("Abcdefg1", A, B, b"short"),
            Err(PairError::Malformed(_))
        ));
    }

    /// Everything an observer captures of a registration (both pairing messages, the
    /// confirmation, a request signed with the new secret, a heartbeat key's MAC) gives no
    /// way to check even the right key offline: each check an attacker can compute from a
    /// guess and the capture fails for the right key as for a wrong one.
    #[test]
    fn a_captured_registration_lets_no_guess_be_checked() {
        let key = "Abcdefg1";
        let (caller, msg_a) = Caller::start(key, A, B);
        let (msg_b, confirm, _) = respond(key, A, B, &msg_a).unwrap();
        let secret = caller.finish(&msg_b, &confirm).unwrap();
        let body = br#"{"op":"register"}"#;
        let signed = auth::sign_request(
            &secret.keys().api,
            "POST",
            "/peer/v1/register",
            B,
            body,
            1_700_000_000_000,
            [7u8; 16],
        );
        let sig = signed
            .iter()
            .find(|(n, _)| *n == auth::H_SIGNATURE)
            .map(|(_, v)| v.clone())
            .unwrap();
        let lookup = |name: &str| -> Option<String> {
            signed
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        for guess in [key, "Wrong-guess-2"] {
            // 1. Keys from the key itself (the old derivation) do not verify the request.
            let legacy = Keys::legacy(guess);
            let mut v = auth::Verifier::new(u64::MAX / 4, 0);
            let verdict = v.verify(
                &legacy.api,
                "POST",
                "/peer/v1/register",
                B,
                body,
                |n| lookup(n).map(|s| Box::leak(s.into_boxed_str()) as &str),
                1_700_000_000_000,
            );
            assert!(verdict.is_err(), "{guess}: the key's own keys verified");
            // 2. A fresh caller with the guess reaches another shared key: the captured
            //    confirmation does not check out.
            let (fresh, _) = Caller::start(guess, A, B);
            assert_eq!(fresh.finish(&msg_b, &confirm), Err(PairError::KeysDiffer));
            // 3. Answering the captured first message with the guess gives another secret,
            //    whose keys do not sign as the capture does.
            let (_, _, other) = respond(guess, A, B, &msg_a).unwrap();
            let resigned = auth::sign_request(
                &other.keys().api,
                "POST",
                "/peer/v1/register",
                B,
                body,
                1_700_000_000_000,
                [7u8; 16],
            );
            assert!(resigned.iter().all(|(_, v)| *v != sig));
        }
    }

    #[test]
    fn keys_change_with_the_secret_not_with_the_operators_key() {
        let (s1, s2) = (PairSecret::random().unwrap(), PairSecret::random().unwrap());
        assert_ne!(s1.keys().heartbeat, s2.keys().heartbeat);
        assert_ne!(s1.keys().api, s2.keys().api);
        assert_ne!(s1.keys().token, s2.keys().token);
        // The keys are the secret's alone: the same secret gives the same keys whatever
        // key the operator typed, and none of them is a key derived from the operator's key.
        assert_eq!(s1.keys(), s1.clone().keys());
        let legacy = Keys::legacy("Abcdefg1");
        assert_ne!(s1.keys().heartbeat, legacy.heartbeat);
        // Pinned derivation: these bytes must not change, or paired servers stop hearing
        // each other after an upgrade.
        let fixed = PairSecret([0x42; 32]);
        assert_eq!(
            auth::hex(&fixed.keys().heartbeat)[..16].to_string(),
            PINNED_HEARTBEAT_PREFIX
        );
        assert_eq!(fixed.id().len(), 16);
    }

    const PINNED_HEARTBEAT_PREFIX: &str = "e6f60cc68a26e381";

    #[test]
    fn pending_secrets_are_bound_to_their_caller_and_expire() {
        let mut p = Pending::default();
        let (me, other) = ("192.0.2.11".parse().unwrap(), "192.0.2.66".parse().unwrap());
        let s = PairSecret::random().unwrap();
        assert!(p.insert("ab".into(), me, s.clone(), 1_000));
        assert_eq!(p.get("ab", me, 2_000), Some(s.clone()));
        assert_eq!(p.get("ab", other, 2_000), None, "another caller");
        assert_eq!(p.get("cd", me, 2_000), None);
        assert_eq!(p.get("ab", me, 1_000 + PENDING_TTL_MS), None, "expired");
        // Another caller reusing the id touches nothing of ours.
        assert!(p.insert("ab".into(), other, PairSecret::random().unwrap(), 2_000));
        assert_eq!(p.get("ab", me, 2_000), Some(s.clone()));
        // A caller with many exchanges pushes out only its own.
        for i in 0..MAX_PENDING {
            p.insert(format!("x{i}"), other, PairSecret::random().unwrap(), 3_000);
        }
        assert_eq!(
            p.get("ab", me, 3_000),
            Some(s.clone()),
            "ours survives a flood"
        );
        // Many callers fill the table: newcomers wait, nobody is pushed out.
        for i in 0..MAX_PENDING as u8 {
            let ip = std::net::IpAddr::from([198, 51, 100, i]);
            p.insert(format!("y{i}"), ip, PairSecret::random().unwrap(), 3_000);
        }
        assert_eq!(p.get("ab", me, 3_000), Some(s.clone()));
        assert!(!p.insert(
            "zz".into(),
            "203.0.113.1".parse().unwrap(),
            s.clone(),
            3_000
        ));
        assert_eq!(p.take("ab", me, 3_000).map(|(_, at)| at), Some(1_000));
        assert_eq!(p.get("ab", me, 3_000), None, "taken once");
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_garbage() {
        let s = PairSecret::random().unwrap();
        assert_eq!(PairSecret::from_text(&s.to_text()).unwrap(), s);
        assert!(!format!("{s:?}").contains(&auth::hex(&s.0)));
        for bad in [
            "",
            "hamon-pair-secret 2 00",
            "hamon-pair-secret 1 zz",
            "hamon-pair-secret 1 0011",
            "hamon-pair-secret 1 4242 extra",
        ] {
            assert!(PairSecret::from_text(bad).is_err(), "{bad:?}");
        }
    }
}
