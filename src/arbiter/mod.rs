//! The arbiter's shell side (`[arbiter]`): one thread that holds the pair's lease in etcd
//! while the core asks for it (`Action::Lease`), and tells the core when it won it and when
//! it could not renew it in time (`Event::Lease`). The decisions are the core's
//! (`ha/arbiter.rs`); the timing is here.
//!
//! - The key is `<prefix>/<pair id>/active`, its value names the server
//!   (`"<role> <name> <address>"`), and it lives under a lease of `ttl`.
//! - To win, the thread creates the key in a transaction that succeeds only if the key
//!   does not exist, that is once the other server released it or its lease expired on
//!   etcd's clock. A key that already names this server (an earlier run of the agent,
//!   restarted) is taken over by renewing its lease.
//! - While held, the lease is renewed every quarter of its TTL. Each renewal that etcd
//!   confirms makes the lease safe until `sent + ttl - margin`, where `sent` is when the
//!   request left: etcd restarts the TTL when it handles the request, which is later. No
//!   request is allowed to run past that point. Once it passes without a renewal, the
//!   core hears that the lease is lost, `margin` before etcd can let anyone else win it.
//! - Every call has a deadline and tries the endpoints in turn.

pub mod etcd;
#[cfg(test)]
mod tests;

use crate::config;
use crate::ha::{ArbiterView, Event, Severity};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use etcd::{Etcd, EtcdError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The handle the shell keeps: orders go to the thread, the view comes back.
#[derive(Debug)]
pub struct Arbiter {
    orders: Sender<Order>,
    view: Arc<Mutex<ArbiterView>>,
    done: Receiver<()>,
}

#[derive(Debug, Clone, Copy)]
struct Order {
    hold: bool,
    pair: u64,
    gen: u64,
}

impl Arbiter {
    /// Starts the thread. `me` is this server's identity as written in the key; `send`
    /// takes events to the core.
    pub fn start(
        cfg: &config::Arbiter,
        me: String,
        send: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> Result<Arbiter, String> {
        let tls = if cfg.endpoints.iter().any(|e| e.tls) {
            Some(Arc::new(tls_config(cfg)?))
        } else {
            None
        };
        let etcd = Etcd::new(cfg.endpoints.clone(), tls, cfg.auth.clone());
        let view = Arc::new(Mutex::new(ArbiterView {
            endpoints: cfg.endpoints.iter().map(|e| e.to_string()).collect(),
            ttl_ms: cfg.ttl.as_millis() as u64,
            ..ArbiterView::default()
        }));
        let (orders, rx) = unbounded();
        let (finished, done) = crossbeam_channel::bounded(1);
        let mut holder = Holder {
            etcd,
            ttl: cfg.ttl,
            margin: cfg.margin,
            prefix: cfg.prefix.clone(),
            me: me.into_bytes(),
            send,
            view: view.clone(),
            want: None,
            pair: None,
            held: None,
            reachable: None,
            next_check: Instant::now(),
        };
        std::thread::Builder::new()
            .name("arbiter".into())
            .spawn(move || {
                holder.run(&rx);
                let _ = finished.send(());
            })
            .map_err(|e| format!("cannot start the arbiter thread: {e}"))?;
        Ok(Arbiter { orders, view, done })
    }

    /// Carries out `Action::Lease`.
    pub fn order(&self, hold: bool, pair: u64, gen: u64) {
        let _ = self.orders.send(Order { hold, pair, gen });
    }

    pub fn view(&self) -> ArbiterView {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the thread, which gives a held lease up first, waiting at most `wait`.
    pub fn finish(self, wait: Duration) {
        drop(self.orders);
        let _ = self.done.recv_timeout(wait);
    }
}

/// The TLS configuration for `https://` endpoints: the CA given, and
/// the client certificate if any.
fn tls_config(cfg: &config::Arbiter) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = cfg
        .ca_file
        .as_ref()
        .ok_or("https:// endpoints need arbiter.ca_file")?;
    for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", ca.display()));
    }
    let builder = crate::web::client::tls_builder()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match &cfg.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("the client certificate: {e}"))
        }
    }
}

/// The lease as held: for which pair and generation, under which etcd lease, safe until
/// when, and when to renew it.
#[derive(Debug, Clone, Copy)]
struct Held {
    pair: u64,
    lease: i64,
    ttl: Duration,
    safe_until: Instant,
    renew_at: Instant,
    /// The generation the core was last told about.
    told: Option<u64>,
}

struct Holder {
    etcd: Etcd,
    ttl: Duration,
    margin: Duration,
    prefix: String,
    me: Vec<u8>,
    send: Arc<dyn Fn(Event) + Send + Sync>,
    view: Arc<Mutex<ArbiterView>>,
    want: Option<(u64, u64)>,
    /// The pair last ordered about (for the idle check).
    pair: Option<u64>,
    held: Option<Held>,
    reachable: Option<bool>,
    next_check: Instant,
}

impl Holder {
    fn run(&mut self, orders: &Receiver<Order>) {
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            match orders.recv_timeout(wait) {
                Ok(o) => {
                    self.take(o);
                    while let Ok(o) = orders.try_recv() {
                        self.take(o);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.want = None;
                    self.work();
                    return;
                }
            }
            self.work();
        }
    }

    fn take(&mut self, o: Order) {
        self.pair = Some(o.pair);
        self.want = o.hold.then_some((o.pair, o.gen));
    }

    /// How long a call may take: a quarter of the TTL, at most 2 s, never past the time
    /// a held lease is safe until.
    fn deadline(&self, now: Instant) -> Instant {
        let by = now + (self.ttl / 4).min(Duration::from_secs(2));
        match self.held {
            Some(h) => by.min(h.safe_until),
            None => by,
        }
    }

    /// How often a lease not held is tried for: a twentieth of the TTL, 50 to 500 ms.
    fn poll(&self) -> Duration {
        (self.ttl / 20).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        match (self.want, self.held) {
            (Some(_), Some(h)) => h.renew_at.min(h.safe_until),
            (Some(_), None) => now + self.poll(),
            (None, Some(_)) => now,
            (None, None) => self.next_check.max(now),
        }
    }

    fn key(&self, pair: u64) -> String {
        format!("{}/{pair:016x}/active", self.prefix)
    }

    fn work(&mut self) {
        let now = Instant::now();
        match self.want {
            None => {
                if let Some(h) = self.held.take() {
                    self.release(h, now);
                } else if now >= self.next_check {
                    self.check(now);
                }
            }
            Some((pair, gen)) => {
                if self.held.is_some_and(|h| h.pair != pair) {
                    if let Some(h) = self.held.take() {
                        self.release(h, now);
                    }
                }
                match self.held {
                    Some(h) if now >= h.renew_at => self.renew(h, gen, now),
                    Some(_) => {}
                    None => self.acquire(pair, gen, now),
                }
                self.check_safe(gen);
                let key = self.key(pair);
                // The view first: whoever hears of the lease may look at it at once.
                self.publish();
                if let Some(h) = self.held.as_mut() {
                    if h.told != Some(gen) {
                        h.told = Some(gen);
                        let detail = format!("key {key}, {} ms TTL", h.ttl.as_millis());
                        (self.send)(Event::Lease {
                            gen,
                            held: true,
                            detail,
                        });
                    }
                }
            }
        }
        self.publish();
    }

    /// Idle: read who holds the key, so that the view is current and an unreachable
    /// arbiter is noticed before it is needed.
    fn check(&mut self, now: Instant) {
        self.next_check = now + self.ttl;
        let Some(pair) = self.pair else {
            // Not registered yet: a lease on a key of no pair proves nothing; just reach.
            let r = self
                .etcd
                .get(&format!("{}/", self.prefix), self.deadline(now));
            self.reached(r.map(|_| ()));
            return;
        };
        let key = self.key(pair);
        let r = self.etcd.get(&key, self.deadline(now));
        if let Ok(kv) = &r {
            self.set_holder(kv.as_ref().map(|kv| kv.value.as_slice()));
        }
        self.reached(r.map(|_| ()));
    }

    fn acquire(&mut self, pair: u64, gen: u64, now: Instant) {
        let _ = gen;
        let key = self.key(pair);
        let by = self.deadline(now);
        let found = self.etcd.get(&key, by);
        let found = match found {
            Ok(f) => f,
            Err(e) => return self.reached(Err(e)),
        };
        self.reached(Ok(()));
        match found {
            // An earlier run of this agent holds it: carry on with its lease.
            Some(kv) if kv.value == self.me && kv.lease != 0 => {
                let sent = Instant::now();
                match self.etcd.keep_alive(kv.lease, self.deadline(sent)) {
                    Ok(ttl) if ttl > 0 => self.hold(pair, kv.lease, ttl, sent),
                    Ok(_) => {} // expired meanwhile: the key goes with it; next poll
                    Err(e) => self.reached(Err(e)),
                }
            }
            Some(kv) => self.set_holder(Some(&kv.value)),
            None => {
                let sent = Instant::now();
                let ttl_s = self.ttl.as_secs().max(1);
                let (lease, ttl) = match self.etcd.grant(ttl_s, self.deadline(sent)) {
                    Ok(g) => g,
                    Err(e) => return self.reached(Err(e)),
                };
                match self.etcd.create(&key, &self.me, lease, self.deadline(sent)) {
                    Ok(None) => self.hold(pair, lease, ttl, sent),
                    Ok(Some(kv)) => {
                        // The other server won the race.
                        self.set_holder(Some(&kv.value));
                        let _ = self.etcd.revoke(lease, self.deadline(Instant::now()));
                    }
                    Err(e) => {
                        // Maybe created, maybe not: the lease is ours alone and, revoked
                        // or expired, takes a key it made with it.
                        let _ = self.etcd.revoke(lease, self.deadline(Instant::now()));
                        self.reached(Err(e));
                    }
                }
            }
        }
    }

    fn hold(&mut self, pair: u64, lease: i64, ttl_s: u64, sent: Instant) {
        let ttl = Duration::from_secs(ttl_s);
        self.held = Some(Held {
            pair,
            lease,
            ttl,
            safe_until: sent + ttl.saturating_sub(self.margin),
            renew_at: sent + ttl / 4,
            told: None,
        });
        let me = self.me.clone();
        self.set_holder(Some(&me));
    }

    fn renew(&mut self, h: Held, gen: u64, now: Instant) {
        let _ = gen;
        let sent = now;
        match self.etcd.keep_alive(h.lease, self.deadline(now)) {
            Ok(ttl) if ttl > 0 => {
                self.reached(Ok(()));
                // Renewed: but is the key still ours? (Deleted by hand, say.)
                let key = self.key(h.pair);
                match self.etcd.get(&key, self.deadline(Instant::now())) {
                    Ok(Some(kv)) if kv.value == self.me && kv.lease == h.lease => {
                        let ttl = Duration::from_secs(ttl);
                        self.held = Some(Held {
                            ttl,
                            safe_until: sent + ttl.saturating_sub(self.margin),
                            renew_at: sent + ttl / 4,
                            ..h
                        });
                    }
                    Ok(other) => {
                        self.set_holder(other.as_ref().map(|kv| kv.value.as_slice()));
                        self.lost(h, gen, "the key no longer names this server");
                    }
                    // Renewed all the same: the lease is safe; the key is read next time.
                    Err(_) => {
                        let ttl = Duration::from_secs(ttl);
                        self.held = Some(Held {
                            ttl,
                            safe_until: sent + ttl.saturating_sub(self.margin),
                            renew_at: sent + ttl / 4,
                            ..h
                        });
                    }
                }
            }
            Ok(_) => {
                self.reached(Ok(()));
                self.lost(h, gen, "etcd says the lease is gone");
            }
            Err(e) => {
                self.reached(Err(e));
                // Try again soon, until the lease is no longer safe.
                let again = Instant::now() + self.poll();
                if let Some(held) = self.held.as_mut() {
                    held.renew_at = again;
                }
            }
        }
    }

    /// A held lease whose safe time has passed is lost.
    fn check_safe(&mut self, gen: u64) {
        if let Some(h) = self.held {
            if Instant::now() >= h.safe_until {
                let why = format!(
                    "not renewed within its TTL less the {} ms margin",
                    self.margin.as_millis()
                );
                self.lost(h, gen, &why);
            }
        }
    }

    fn lost(&mut self, h: Held, gen: u64, why: &str) {
        self.held = None;
        self.publish();
        if h.told.is_some() {
            let error = self
                .view
                .lock()
                .ok()
                .and_then(|v| v.error.clone())
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            (self.send)(Event::Lease {
                gen,
                held: false,
                detail: format!("{why}{error}"),
            });
        }
    }

    fn release(&mut self, h: Held, now: Instant) {
        let key = self.key(h.pair);
        let by = self.deadline(now);
        let r = self.etcd.delete_if(&key, &self.me, by);
        let _ = self.etcd.revoke(h.lease, self.deadline(Instant::now()));
        if r.is_ok() {
            self.set_holder(None);
        }
        self.reached(r.map(|_| ()));
    }

    fn set_holder(&mut self, value: Option<&[u8]>) {
        if let Ok(mut v) = self.view.lock() {
            v.holder = value.map(|b| String::from_utf8_lossy(b).into_owned());
        }
    }

    /// Notes whether etcd answered, and journals a change.
    fn reached(&mut self, r: Result<(), EtcdError>) {
        let (now, error) = match &r {
            Ok(()) => (true, None),
            // etcd answered, with a refusal: it is reachable.
            Err(EtcdError::Refused(e)) | Err(EtcdError::Malformed(e)) => (true, Some(e.clone())),
            Err(e @ EtcdError::Unreachable(_)) => (false, Some(e.to_string())),
        };
        if let Ok(mut v) = self.view.lock() {
            v.error = error.clone();
            v.reachable = Some(now);
            if now {
                v.answering = Some(self.etcd.current());
            }
        }
        if self.reachable == Some(now) {
            return;
        }
        let was = self.reachable.replace(now);
        let (kind, severity, text) = if now {
            if was.is_none() {
                return;
            }
            (
                "arbiter_reachable",
                Severity::Info,
                format!("etcd answers again at {}", self.etcd.current()),
            )
        } else {
            (
                "arbiter_unreachable",
                Severity::Error,
                error.unwrap_or_else(|| "no etcd endpoint answers".into()),
            )
        };
        (self.send)(Event::Observation {
            kind: kind.into(),
            severity,
            text,
        });
    }

    fn publish(&self) {
        if let Ok(mut v) = self.view.lock() {
            v.held = self.held.is_some();
            if let Some(h) = self.held {
                v.ttl_ms = h.ttl.as_millis() as u64;
            }
        }
    }
}
