//! Who may use the page: browser sessions with a CSRF token each, the login
//! throttle, and the bearer token scripts use instead of a session.
//!
//! Pure: the caller passes the time (`now`, Unix seconds) and the randomness.

use super::hex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "hm_session";
/// Most sessions kept at once; creating one more evicts the least recently used.
pub const MAX_SESSIONS: usize = 1024;

/// One live session. The map key is the SHA-256 of its id, so a lookup's
/// timing says nothing useful about the ids held.
struct Live {
    csrf: String,
    /// Unix second from which the session is dead unless refreshed before.
    expires: u64,
    /// Last use, as a counter (not the clock): the smallest is evicted first.
    used: u64,
}

/// The in-memory session table (lost on restart, which only means logging in
/// again).
pub struct Sessions {
    ttl: u64,
    live: HashMap<[u8; 32], Live>,
    uses: u64,
}

impl fmt::Debug for Sessions {
    // Never print ids or tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("live", &self.live.len())
            .finish()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Sessions {
    /// Sessions that die after `ttl_secs` without use.
    pub fn new(ttl_secs: u64) -> Sessions {
        Sessions {
            ttl: ttl_secs,
            live: HashMap::new(),
            uses: 0,
        }
    }

    /// How many sessions are held (expired ones may linger until the next
    /// `create` or `check` of them).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn tick(&mut self) -> u64 {
        self.uses = self.uses.wrapping_add(1);
        self.uses
    }

    /// A new session: returns (session id for the cookie, CSRF token), each
    /// the hex of one half of `random` (128 bits apiece).
    pub fn create(&mut self, now: u64, random: [u8; 32]) -> (String, String) {
        let id = hex(&random[..16]);
        let csrf = hex(&random[16..]);
        self.live.retain(|_, s| now < s.expires);
        while self.live.len() >= MAX_SESSIONS {
            let oldest = self
                .live
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.live.remove(&k),
                None => break,
            };
        }
        let used = self.tick();
        self.live.insert(
            digest(&id),
            Live {
                csrf: csrf.clone(),
                expires: now.saturating_add(self.ttl),
                used,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session (refreshing its idle expiry), `None`
    /// if the id is unknown or the session expired (it is then dropped).
    pub fn check(&mut self, id: &str, now: u64) -> Option<String> {
        let key = digest(id);
        let expires = self.live.get(&key)?.expires;
        if now >= expires {
            self.live.remove(&key);
            return None;
        }
        let used = self.tick();
        let ttl = self.ttl;
        let s = self.live.get_mut(&key)?;
        s.expires = now.saturating_add(ttl);
        s.used = used;
        Some(s.csrf.clone())
    }

    /// End a session (logout). Unknown ids are ignored.
    pub fn remove(&mut self, id: &str) {
        self.live.remove(&digest(id));
    }
}

fn cookie_attributes(value: &str, max_age: u64, secure: bool) -> String {
    let mut c =
        format!("{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The `Set-Cookie` value for a new session; `secure` when served over TLS.
pub fn cookie(id: &str, secure: bool, ttl_secs: u64) -> String {
    cookie_attributes(id, ttl_secs, secure)
}

/// The `Set-Cookie` value that deletes the session cookie (logout).
pub fn clear_cookie(secure: bool) -> String {
    cookie_attributes("", 0, secure)
}

/// The session id in a `Cookie` request header: the first non-empty
/// `hm_session` value.
pub fn session_from_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.trim() == COOKIE_NAME)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .find(|value| !value.is_empty())
}

/// Compare two secrets (CSRF tokens, keys) in time independent of where they
/// differ and of their lengths: both are hashed, and the digests compared
/// without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    let (x, y) = (digest(a), digest(b));
    let mut diff = 0u8;
    for (p, q) in x.iter().zip(y.iter()) {
        diff |= p ^ q;
    }
    std::hint::black_box(diff) == 0
}

/// Longest wait imposed after failed logins.
pub const MAX_DELAY_SECS: u64 = 60;
/// Most clients tracked; a new one evicts the one whose last failure is oldest.
pub const MAX_CLIENTS: usize = 4096;
/// A client with no failure for this long starts over from a 1 s delay.
pub const FORGET_AFTER_SECS: u64 = 15 * 60;
/// Failed logins allowed in any `GLOBAL_WINDOW_SECS`, from all addresses
/// together: the guess rate an attacker with many addresses gets.
pub const GLOBAL_FAILURES: usize = 20;
pub const GLOBAL_WINDOW_SECS: u64 = 60;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: u64,
}

impl Failures {
    fn stale(&self, now: u64) -> bool {
        now.saturating_sub(self.last) >= FORGET_AFTER_SECS
    }
}

/// The delay after `count` consecutive failures: 1, 2, 4 ... capped at 60 s.
fn delay(count: u32) -> u64 {
    match count {
        0 => 0,
        n => 1u64
            .checked_shl(n - 1)
            .unwrap_or(MAX_DELAY_SECS)
            .min(MAX_DELAY_SECS),
    }
}

/// Who a failure counts against: IPv4 addresses one by one (IPv4-mapped IPv6
/// as IPv4), IPv6 by /64, since one host usually holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Failed-login throttle per client address: after each failure the client
/// waits 1 s, 2 s, 4 s ... up to 60 s before the next try; a success clears it.
/// Beside it, a budget for all addresses together: once `GLOBAL_FAILURES`
/// failures fall within `GLOBAL_WINDOW_SECS`, every login waits until the
/// oldest leaves the window (the CLI and the API token are not affected).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    clients: HashMap<IpAddr, Failures>,
    /// When the recent failures happened, oldest first.
    recent: std::collections::VecDeque<u64>,
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Seconds `client` must still wait before trying again (0: may try now).
    /// Never more than the delay itself, even if the clock went back.
    pub fn wait(&self, client: IpAddr, now: u64) -> u64 {
        self.client_wait(client, now).max(self.global_wait(now))
    }

    /// The wait from `client`'s own failures alone.
    pub fn client_wait(&self, client: IpAddr, now: u64) -> u64 {
        match self.clients.get(&client_key(client)) {
            Some(f) if !f.stale(now) => {
                let d = delay(f.count);
                f.last.saturating_add(d).saturating_sub(now).min(d)
            }
            _ => 0,
        }
    }

    /// When the oldest of the last `GLOBAL_FAILURES` failures happened, if
    /// all of them fall within the window: the budget is used up until then
    /// plus the window. (`recent` never holds more than that many.)
    fn full_since(&self, now: u64) -> Option<u64> {
        let oldest = *self.recent.front()?;
        (self.recent.len() >= GLOBAL_FAILURES && now.saturating_sub(oldest) < GLOBAL_WINDOW_SECS)
            .then_some(oldest)
    }

    /// Seconds until the global budget has room again (0: it has).
    fn global_wait(&self, now: u64) -> u64 {
        self.full_since(now).map_or(0, |oldest| {
            oldest
                .saturating_add(GLOBAL_WINDOW_SECS)
                .saturating_sub(now)
                .min(GLOBAL_WINDOW_SECS)
        })
    }

    /// True when the global budget is used up. Called right after a failure
    /// is recorded, it says that failure used it up: while it stays used up
    /// every login waits, so no further failure is recorded (the journal
    /// hears of it once per burst).
    pub fn budget_exhausted_now(&self, now: u64) -> bool {
        self.full_since(now).is_some()
    }

    /// Record a failed login from `client` at `now`.
    pub fn failed(&mut self, client: IpAddr, now: u64) {
        let key = client_key(client);
        if !self.clients.contains_key(&key) && self.clients.len() >= MAX_CLIENTS {
            self.clients.retain(|_, f| !f.stale(now));
            while self.clients.len() >= MAX_CLIENTS {
                let oldest = self
                    .clients
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => self.clients.remove(&k),
                    None => break,
                };
            }
        }
        let f = self.clients.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if f.stale(now) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        self.recent.push_back(now);
        while self.recent.len() > GLOBAL_FAILURES {
            self.recent.pop_front();
        }
    }

    /// A successful login: `client` starts over.
    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&client_key(client));
    }

    /// An attempt recorded as failed at `at` turned out genuine (a pairing whose secret
    /// signed an accepted request): `client` starts over, and that failure leaves the
    /// global budget.
    pub fn forgive(&mut self, client: IpAddr, at: u64) {
        self.succeeded(client);
        if let Some(i) = self.recent.iter().rposition(|t| *t == at) {
            self.recent.remove(i);
        }
    }

    /// How many clients are tracked.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// What the API token is the MAC of.
pub const API_TOKEN_LABEL: &str = "hamon-api-token-v1";

/// The bearer token scripts send: the hex of the keys' token bytes (from the pair secret;
/// for a wave-1 pair, HMAC-SHA256(key = authkey, "hamon-api-token-v1") as before).
/// `hamon ha token` prints it. With no key set there are no keys and no token.
pub fn api_token(keys: &crate::peer::auth::Keys) -> String {
    hex(&keys.token)
}

/// Compares two byte strings as [`same`] does.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let (x, y): ([u8; 32], [u8; 32]) = (Sha256::digest(a).into(), Sha256::digest(b).into());
    let mut diff = 0u8;
    for (p, q) in x.iter().zip(y.iter()) {
        diff |= p ^ q;
    }
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header value (the scheme
/// is case-insensitive); `None` for other schemes or an empty token.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Distinct, deterministic "randomness" for test sessions.
    fn rnd(n: u32) -> [u8; 32] {
        let mut r = [0u8; 32];
        r[..4].copy_from_slice(&n.to_be_bytes());
        r[16..20].copy_from_slice(&(!n).to_be_bytes());
        r
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn create_gives_hex_id_and_token_from_the_randomness() {
        let mut s = Sessions::new(900);
        let mut random = [0u8; 32];
        random[0] = 0xab;
        random[31] = 0x01;
        let (id, csrf) = s.create(1_000, random);
        assert_eq!(id, format!("ab{}", "0".repeat(30)));
        assert_eq!(csrf, format!("{}01", "0".repeat(30)));
        assert_ne!(id, csrf);
        assert_eq!(s.check(&id, 1_000).as_deref(), Some(csrf.as_str()));
        assert_eq!(s.check(&csrf, 1_000), None, "the token is not a session id");
        assert_eq!(s.check("nope", 1_000), None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn create_with_real_randomness() {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("getrandom");
        let mut s = Sessions::new(60);
        let (id, csrf) = s.create(5, random);
        assert_eq!(id.len(), 32);
        assert_eq!(csrf.len(), 32);
        assert!(id
            .chars()
            .chain(csrf.chars())
            .all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.check(&id, 6), Some(csrf));
    }

    #[test]
    fn idle_expiry_is_refreshed_by_use() {
        let mut s = Sessions::new(100);
        let (id, csrf) = s.create(1_000, rnd(1));
        assert_eq!(s.check(&id, 1_099).as_deref(), Some(csrf.as_str()));
        // Refreshed at 1_099: alive until 1_199.
        assert_eq!(s.check(&id, 1_198).as_deref(), Some(csrf.as_str()));
        assert_eq!(s.check(&id, 1_298), None, "idle for the whole ttl");
        assert!(s.is_empty(), "an expired session is dropped when seen");
        // Even an earlier time does not bring it back.
        assert_eq!(s.check(&id, 1_200), None);
    }

    #[test]
    fn expired_sessions_are_purged_on_create() {
        let mut s = Sessions::new(10);
        let (a, _) = s.create(0, rnd(1));
        let (b, _) = s.create(5, rnd(2));
        s.create(12, rnd(3));
        assert_eq!(s.len(), 2, "a (expired at 10) is gone, b (until 15) stays");
        assert_eq!(s.check(&a, 12), None);
        assert!(s.check(&b, 12).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let mut s = Sessions::new(1_000_000);
        let ids: Vec<String> = (0..MAX_SESSIONS as u32)
            .map(|n| s.create(1, rnd(n)).0)
            .collect();
        assert_eq!(s.len(), MAX_SESSIONS);
        // Use the oldest: the second oldest becomes the eviction candidate.
        assert!(s.check(&ids[0], 2).is_some());
        let (newest, _) = s.create(3, rnd(99_999));
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.check(&ids[0], 4).is_some(), "recently used survives");
        assert_eq!(s.check(&ids[1], 4), None, "least recently used evicted");
        assert!(s.check(&ids[2], 4).is_some());
        assert!(s.check(&newest, 4).is_some());
        s.create(5, rnd(100_000));
        assert_eq!(s.check(&ids[3], 6), None, "next in line");
    }

    #[test]
    fn remove_ends_a_session() {
        let mut s = Sessions::new(100);
        let (a, _) = s.create(0, rnd(1));
        let (b, _) = s.create(0, rnd(2));
        s.remove(&a);
        s.remove("unknown");
        assert_eq!(s.check(&a, 1), None);
        assert!(s.check(&b, 1).is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let mut s = Sessions::new(100);
        let (id, csrf) = s.create(0, rnd(7));
        let d = format!("{s:?}");
        assert!(!d.contains(&id) && !d.contains(&csrf), "{d}");
    }

    #[test]
    fn cookie_attributes_are_strict() {
        let c = cookie("abc123", false, 900);
        assert_eq!(
            c,
            "hm_session=abc123; Path=/; HttpOnly; SameSite=Strict; Max-Age=900"
        );
        assert!(!c.contains("Secure"));
        let c = cookie("abc123", true, 900);
        assert!(c.starts_with("hm_session=abc123; "));
        assert!(c.contains("; HttpOnly"));
        assert!(c.contains("; SameSite=Strict"));
        assert!(c.ends_with("; Secure"));
        assert_eq!(
            clear_cookie(true),
            "hm_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
        assert!(!clear_cookie(false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn session_id_is_found_in_a_cookie_header() {
        assert_eq!(session_from_cookie("hm_session=abc"), Some("abc"));
        assert_eq!(
            session_from_cookie("theme=dark; hm_session=abc; lang=en"),
            Some("abc")
        );
        assert_eq!(session_from_cookie(" hm_session = \"abc\" "), Some("abc"));
        assert_eq!(
            session_from_cookie("hm_session=; hm_session=def"),
            Some("def")
        );
        assert_eq!(
            session_from_cookie("xhm_session=abc; hm_sessionx=def"),
            None
        );
        assert_eq!(session_from_cookie("hm_session"), None);
        assert_eq!(session_from_cookie(""), None);
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("token", "token"));
        assert!(same("", ""));
        assert!(!same("token", "tokem"));
        assert!(!same("token", "token "));
        assert!(!same("token", ""));
        assert!(!same("Token", "token"));
    }

    #[test]
    fn throttle_doubles_to_a_minute_and_resets_on_success() {
        let mut t = LoginThrottle::new();
        let ip = v4(192, 0, 2, 7);
        let mut now = 1_000;
        assert_eq!(t.wait(ip, now), 0);
        let mut seen = Vec::new();
        for _ in 0..9 {
            t.failed(ip, now);
            let w = t.wait(ip, now);
            seen.push(w);
            assert_eq!(t.wait(ip, now + w - 1), 1, "one second left");
            now += w;
            assert_eq!(t.wait(ip, now), 0, "may try again after the delay");
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        t.succeeded(ip);
        assert_eq!(t.wait(ip, now), 0);
        t.failed(ip, now);
        assert_eq!(t.wait(ip, now), 1, "starts over after a success");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn throttle_is_per_client() {
        let mut t = LoginThrottle::new();
        let (a, b) = (v4(192, 0, 2, 1), v4(192, 0, 2, 2));
        t.failed(a, 0);
        t.failed(a, 1);
        assert_eq!(t.wait(a, 1), 2);
        assert_eq!(t.wait(b, 1), 0);
        // IPv4-mapped IPv6 is the same client; an IPv6 /64 is one client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(t.wait(mapped, 1), 2);
        let x: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2:aaaa::9".parse().expect("ip");
        let z: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        t.failed(x, 10);
        assert_eq!(t.wait(y, 10), 1);
        assert_eq!(t.wait(z, 10), 0);
    }

    #[test]
    fn throttle_forgets_after_a_quiet_period_and_survives_clock_steps() {
        let mut t = LoginThrottle::new();
        let ip = v4(198, 51, 100, 1);
        for i in 0..8 {
            t.failed(ip, 100 * i);
        }
        assert_eq!(t.wait(ip, 700), 60);
        // The clock stepped back an hour: still at most the delay itself.
        assert_eq!(t.wait(ip, 0), 60);
        let later = 700 + FORGET_AFTER_SECS;
        assert_eq!(t.wait(ip, later), 0);
        t.failed(ip, later);
        assert_eq!(t.wait(ip, later), 1, "counting starts over");
    }

    #[test]
    fn a_global_budget_caps_failures_from_many_addresses() {
        let mut t = LoginThrottle::new();
        // Twenty addresses, one failure each, within the window.
        for n in 0..GLOBAL_FAILURES as u8 {
            assert!(!t.budget_exhausted_now(100));
            t.failed(v4(198, 51, 100, n), 100 + u64::from(n / 10));
        }
        assert!(t.budget_exhausted_now(101));
        // Everyone waits now, a new address (and the operator) too, until
        // the oldest failure leaves the window.
        let fresh = v4(192, 0, 2, 200);
        assert_eq!(t.client_wait(fresh, 101), 0);
        assert_eq!(t.wait(fresh, 101), 59);
        assert_eq!(t.wait(fresh, 159), 1);
        assert_eq!(t.wait(fresh, 160), 0);
        // One more failure then is back under the budget, and not reported again.
        t.failed(v4(198, 51, 100, 99), 160);
        assert!(!t.budget_exhausted_now(160));
        assert_eq!(t.wait(fresh, 160), 0);
        // A success does not refill it: only time does.
        t.succeeded(v4(198, 51, 100, 1));
        assert_eq!(t.wait(fresh, 300), 0);
    }

    #[test]
    fn throttle_map_is_bounded_and_evicts_the_oldest_failure() {
        let mut t = LoginThrottle::new();
        for n in 0..MAX_CLIENTS as u32 {
            let [_, b, c, d] = n.to_be_bytes();
            t.failed(v4(10, b, c, d), u64::from(n / 8));
        }
        assert_eq!(t.len(), MAX_CLIENTS);
        let now = u64::from(MAX_CLIENTS as u32 / 8);
        t.failed(v4(172, 16, 0, 1), now);
        assert_eq!(t.len(), MAX_CLIENTS);
        assert_eq!(t.client_wait(v4(172, 16, 0, 1), now), 1);
        // One of the clients that failed at time 0 made room.
        let gone = (0..8)
            .filter(|d| t.client_wait(v4(10, 0, 0, *d), 0) == 0)
            .count();
        assert_eq!(gone, 1);
        assert_eq!(
            t.client_wait(v4(10, 0, 0, 8), 1),
            1,
            "a newer client is kept"
        );
        // A full map of stale clients is cleared in one go.
        t.failed(v4(172, 16, 0, 2), now + FORGET_AFTER_SECS);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn api_token_of_a_wave_1_pair_is_still_the_hmac_of_its_key() {
        use crate::peer::auth::Keys;
        let a = api_token(&Keys::legacy("Abcdefg1"));
        assert_eq!(a, api_token(&Keys::legacy("Abcdefg1")));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, api_token(&Keys::legacy("Abcdefg2")));
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"Abcdefg1",
        //   b"hamon-api-token-v1",hashlib.sha256).hexdigest())'
        assert_eq!(
            a,
            "2bbfe0b743177e5bf626cbbf8bdeca9c276cbca372753143f2ebcf3acaba9d07"
        );
        // With a pair secret, the token is the secret's.
        let s = crate::peer::pair::PairSecret::random().unwrap();
        assert_eq!(api_token(&s.keys()), hex(&s.keys().token));
        assert_ne!(api_token(&s.keys()), a);
    }

    #[test]
    fn bearer_header_is_parsed() {
        assert_eq!(bearer("Bearer abc123"), Some("abc123"));
        assert_eq!(bearer("bearer   abc123  "), Some("abc123"));
        assert_eq!(bearer("BEARER\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Basic YWxhZGRpbjpvcGVuc2VzYW1l"), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer(""), None);
        // An empty expected token (no key) never matches a real bearer.
        let t = bearer("Bearer x").unwrap_or("");
        assert!(!same("", t));
    }
}
