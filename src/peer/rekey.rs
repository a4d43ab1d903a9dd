//! Changing the operator's key on a registered pair: both servers take the new key and a new
//! pair secret, or neither does, and no heartbeat or request is refused on the way.
//!
//! The server where the operator runs `hamon ha authkey` (or the page's action):
//!
//! 1. makes a random secret and *prepares* it with the new key: both staged on disk beside
//!    the current ones (a full disk refuses here, nothing changed), and the secret's keys
//!    accepted from the peer beside the current ones;
//! 2. sends both to the peer, sealed (ChaCha20-Poly1305 under a key derived from the
//!    current peer API key) inside a request signed with the current keys; the peer
//!    prepares them the same way and answers;
//! 3. on that answer, *commits*: the staged files are renamed into place and the new keys
//!    sign and seal from then on, the old ones still accepted for [`GRACE_MS`]; then it
//!    tells the peer to commit too (signed with the new keys).
//!
//! A server that holds a prepared change commits it as soon as anything authenticated with
//! the new keys arrives (a heartbeat, a request): that proves the other side committed. So
//! a lost step 3 message costs one heartbeat interval, and a lost step 2 answer leaves the
//! peer with a prepared change nobody uses, dropped after [`GRACE_MS`]. If the peer cannot
//! be reached, or refuses, the change is dropped on this side and the command fails.

use super::auth::{self, Keys};
use super::pair::PairSecret;
use crate::store::{Store, REKEY_TAG};
use hkdf::Hkdf;
use ring::aead;
use sha2::Sha256;
use std::sync::{Arc, RwLock};

/// How long replaced keys stay accepted, and how long a prepared change waits.
pub const GRACE_MS: u64 = 60_000;
/// Version of the rekey messages.
pub const REKEY_VERSION: u64 = 1;

/// One server's keys and where they are kept: what a key change touches.
#[derive(Clone)]
pub struct Keyring {
    pub store: Store,
    pub keys: Arc<RwLock<Option<Keys>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(<keys>)")
    }
}

impl Keyring {
    fn current(&self) -> Option<Keys> {
        self.keys.read().ok().and_then(|k| k.clone())
    }

    fn set(&self, keys: Keys) {
        if let Ok(mut k) = self.keys.write() {
            *k = Some(keys);
        }
    }

    /// Stages `key` and `secret` on disk and accepts the secret's keys from the peer beside
    /// the current ones, until the change is committed, abandoned or replaced (also across
    /// a restart: see `Store::working_keys`). The caller holds [`turn`].
    fn prepare(&self, key: &str, secret: &PairSecret) -> Result<(), String> {
        let current = self
            .current()
            .ok_or("no authentication key is set on this server")?;
        let staged = self
            .store
            .stage_authkey(key)
            .and_then(|()| self.store.stage_secret(secret, REKEY_TAG));
        if let Err(e) = staged {
            self.store.discard_staged_authkey();
            self.store.discard_staged_secret(REKEY_TAG);
            return Err(format!("cannot store the new key: {e}"));
        }
        self.set(current.also_accepting_staged(&secret.keys(), u64::MAX, 0));
        Ok(())
    }

    /// Prepares a change the peer sent: refused while this server makes a change of its
    /// own, so that two changes at once cannot cross.
    pub fn prepare_for_peer(&self, key: &str, secret: &PairSecret) -> Result<(), String> {
        let _turn = turn().ok_or("a key change is under way on this server; try again")?;
        self.prepare(key, secret)
    }

    /// Puts the prepared key and secret in place (the secret first: it is what the pair
    /// runs on) and uses the new keys; the replaced ones stay accepted for [`GRACE_MS`].
    /// Refused if what is staged is not `secret` (another change replaced it).
    fn commit(&self, secret: &PairSecret, now_ms: u64) -> Result<(), String> {
        match self.store.staged_rekey() {
            Ok(Some(staged)) if staged == *secret => {}
            _ => return Err("the staged key is not this change's".into()),
        }
        let old = self.current();
        self.store
            .commit_secret(REKEY_TAG)
            .map_err(|e| format!("putting the new pair secret in place: {e}"))?;
        let new = secret.keys();
        self.set(match old {
            Some(old) => new.also_accepting(&old, now_ms + GRACE_MS, now_ms),
            None => new,
        });
        self.store.commit_authkey().map_err(|e| {
            format!("the new pair secret is in use, but the new key could not be stored: {e}")
        })
    }

    /// Drops a prepared change.
    fn abandon(&self) {
        self.store.discard_staged_authkey();
        self.store.discard_staged_secret(REKEY_TAG);
        if let Some(mut keys) = self.current() {
            keys.also.retain(|e| !e.staged);
            self.set(keys);
        }
    }

    /// Something authenticated with the prepared keys arrived: the peer committed, so this
    /// server commits too. True if it did (false also while a change of this server's own
    /// is being made: the next frame tries again).
    pub fn promote(&self, now_ms: u64) -> bool {
        let Some(_turn) = turn() else {
            return false;
        };
        match self.store.staged_rekey() {
            Ok(Some(secret)) => self.commit(&secret, now_ms).is_ok(),
            _ => false,
        }
    }
}

/// One key change at a time on a server: ours, the peer's, and a promotion.
fn turn() -> Option<std::sync::MutexGuard<'static, ()>> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    match TURN.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// How long each call of a key change may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets the operator's key to `key` (already checked against the password standard).
///
/// Not registered (`peer` is `None`): stored here, with a new secret of this server's own.
/// Registered: changed on both servers as this module describes, or on neither, with the
/// reason (the peer unreachable, refusing, or a disk that cannot take the new key).
pub fn change_key(
    ring: &Keyring,
    key: &str,
    peer: Option<(&crate::ha::PeerTarget, super::client::Link)>,
) -> Result<String, String> {
    let _turn = turn().ok_or("another key change is under way on this server; try again")?;
    let Some((target, link)) = peer else {
        let secret = PairSecret::random().map_err(|e| e.to_string())?;
        ring.store
            .save_authkey(key)
            .and_then(|()| ring.store.save_secret(&secret))
            .map_err(|e| format!("saving the key: {e}"))?;
        ring.set(secret.keys());
        return Ok("authentication key updated".into());
    };
    let current = ring
        .current()
        .ok_or("no authentication key is set on this server")?;
    let secret = PairSecret::random().map_err(|e| e.to_string())?;
    ring.prepare(key, &secret)?;
    let prepared = seal(&current.api, &target.address, key, &secret).and_then(|(nonce, sealed)| {
        let body = serde_json::json!({
            "v": REKEY_VERSION, "phase": "prepare", "nonce": nonce, "sealed": sealed,
        })
        .to_string();
        let path = "/peer/v1/rekey";
        super::client::signed_post(
            target,
            path,
            body.as_bytes(),
            &current.api,
            None,
            link,
            CALL_TIMEOUT,
        )
    });
    if let Err(e) = prepared {
        ring.abandon();
        return Err(format!(
            "the key was not changed: the peer {} did not take it ({e}); both servers keep \
             the key they had",
            target.address
        ));
    }
    if let Err(e) = ring.commit(&secret, super::client::unix_ms()) {
        ring.abandon();
        return Err(format!(
            "the key was not changed: {e}; the peer drops the change it prepared within {} s",
            GRACE_MS / 1000
        ));
    }
    // Best effort: the peer also commits on our next heartbeat.
    let body =
        serde_json::json!({ "v": REKEY_VERSION, "phase": "commit", "id": secret.id() }).to_string();
    let new = secret.keys();
    let committed = super::client::signed_post(
        target,
        "/peer/v1/rekey",
        body.as_bytes(),
        &new.api,
        None,
        link,
        CALL_TIMEOUT,
    );
    let tail = match committed {
        Ok(_) => String::new(),
        Err(_) => " (the peer takes it with the next heartbeat)".to_string(),
    };
    Ok(format!(
        "authentication key changed on both servers; new pair secret {}{tail}",
        secret.id()
    ))
}

/// The sealing key for a change made under the peer API key `api`.
fn sealing_key(api: &[u8; 32]) -> Result<aead::LessSafeKey, String> {
    let hk = Hkdf::<Sha256>::new(Some(b"hamon-rekey-v1"), api);
    let mut key = [0u8; 32];
    let _ = hk.expand(b"seal", &mut key); // 32 bytes: expand cannot fail
    aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key)
        .map(aead::LessSafeKey::new)
        .map_err(|_| "cannot make a sealing key".to_string())
}

/// What a prepare request carries, sealed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    key: String,
    secret: String,
}

/// Seals the new `key` and `secret` for `receiver` under `api`: hex nonce and hex
/// ciphertext.
pub fn seal(
    api: &[u8; 32],
    receiver: &str,
    key: &str,
    secret: &PairSecret,
) -> Result<(String, String), String> {
    let payload = Payload {
        key: key.to_string(),
        secret: secret.to_text(),
    };
    let mut data = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    let nonce: [u8; 12] = auth::random_key().map_err(|e| e.to_string())?;
    let aad = aead::Aad::from(format!("hamon rekey v1 {receiver}"));
    sealing_key(api)?
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aad, &mut data)
        .map_err(|_| "cannot seal the new key".to_string())?;
    Ok((auth::hex(&nonce), auth::hex(&data)))
}

/// Opens what [`seal`] made: the new key and secret.
pub fn open(
    api: &[u8; 32],
    receiver: &str,
    nonce_hex: &str,
    sealed_hex: &str,
) -> Result<(String, PairSecret), String> {
    let nonce: [u8; 12] = auth::unhex(nonce_hex)
        .and_then(|n| n.try_into().ok())
        .ok_or("bad nonce")?;
    let mut data = auth::unhex(sealed_hex).ok_or("bad sealed data")?;
    let aad = aead::Aad::from(format!("hamon rekey v1 {receiver}"));
    let plain = sealing_key(api)?
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aad, &mut data)
        .map_err(|_| "the sealed key does not open".to_string())?;
    let payload: Payload =
        serde_json::from_slice(plain).map_err(|e| format!("malformed sealed key: {e}"))?;
    auth::check_password_standard(&payload.key)?;
    let secret = PairSecret::from_text(&payload.secret)?;
    Ok((payload.key, secret))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ring(tag: &str) -> (Keyring, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("hamon-rekey-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let secret = PairSecret::random().unwrap();
        store.save_secret(&secret).unwrap();
        store.save_authkey("Old-Key-0001").unwrap();
        let keys = Arc::new(RwLock::new(Some(secret.keys())));
        (Keyring { store, keys }, dir)
    }

    #[test]
    fn sealed_keys_open_only_for_the_receiver_under_the_same_key() {
        let api = [7u8; 32];
        let s = PairSecret::random().unwrap();
        let (nonce, sealed) = seal(&api, "192.0.2.12", "New-Key-0001", &s).unwrap();
        let (key, secret) = open(&api, "192.0.2.12", &nonce, &sealed).unwrap();
        assert_eq!((key.as_str(), secret), ("New-Key-0001", s.clone()));
        assert!(open(&[8u8; 32], "192.0.2.12", &nonce, &sealed).is_err());
        assert!(open(&api, "192.0.2.13", &nonce, &sealed).is_err());
        let mut flipped = auth::unhex(&sealed).unwrap();
        flipped[3] ^= 1;
        assert!(open(&api, "192.0.2.12", &nonce, &auth::hex(&flipped)).is_err());
        assert!(!sealed.contains(&auth::hex(b"New-Key-0001")));
    }

    #[test]
    fn prepare_commit_and_abandon_keep_the_keys_that_can_arrive_accepted() {
        let (r, dir) = ring("cycle");
        let old = r.current().unwrap();
        let new = PairSecret::random().unwrap();
        r.prepare_for_peer("New-Key-0001", &new).unwrap();
        let k = r.current().unwrap();
        assert_eq!(k.api, old.api, "still sending with the current keys");
        assert!(
            k.api_keys(2_000).any(|k| k == new.keys().api),
            "new ones accepted"
        );
        assert!(k.heartbeat_keys(2_000).any(|k| k == new.keys().heartbeat));
        assert_eq!(
            r.store.load_authkey().unwrap().as_deref(),
            Some("Old-Key-0001")
        );
        // Abandoned: back to the current keys only, nothing staged.
        r.abandon();
        assert_eq!(
            r.current().unwrap().api_keys(2_000).collect::<Vec<_>>(),
            vec![old.api]
        );
        assert!(r.store.staged_rekey().unwrap().is_none());
        // Prepared, then promoted by what the peer sent with the new keys.
        r.prepare_for_peer("New-Key-0001", &new).unwrap();
        // Still accepted after a restart, and long after: nothing drops it but a commit.
        let again = r.store.working_keys(true, false).unwrap().unwrap();
        assert!(again.api_keys(u64::MAX - 1).any(|k| k == new.keys().api));
        assert!(r.promote(3_000));
        let k = r.current().unwrap();
        assert_eq!(k.api, new.keys().api);
        assert!(
            k.api_keys(3_000).any(|k| k == old.api),
            "old ones still accepted"
        );
        assert!(
            !k.api_keys(3_000 + GRACE_MS).any(|k| k == old.api),
            "for a while"
        );
        assert_eq!(r.store.load_secret().unwrap(), Some(new));
        assert_eq!(
            r.store.load_authkey().unwrap().as_deref(),
            Some("New-Key-0001")
        );
        assert!(!r.promote(4_000), "nothing left to promote");
        let _ = std::fs::remove_dir_all(dir);
    }
}
