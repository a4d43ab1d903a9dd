//! The Health Monitor: health endpoints, the signed peer API, the operator's
//! page and the JSON API, all on the one HTTP(S) port.
//!
//! Reads are served from a snapshot the core publishes after every step, so
//! web load never queues behind the core loop; only actions reach the core.
//! Nothing unauthenticated changes anything: the page needs a session (cookie
//! plus a CSRF token on every form), the API a session plus an `X-CSRF-Token`
//! header, or a bearer token.

use super::server::{Handler, Request, Response};
use super::ui::{page, session, zip};
use crate::ha::{
    Command, Duty, FailoverType, PeerAnswer, PeerRequest, Reply, Secret, Severity, StatusView,
};
use crate::peer::auth::{check_password_standard, Keys, Verifier};
use crate::store::{Stamped, Store};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Events per page on the page and in the API.
const PER_PAGE: usize = 25;
/// Most journal entries read for paging.
const JOURNAL_WINDOW: usize = 10_000;

/// How the web side reaches the core (implemented by the agent).
pub trait CoreLink: Send + Sync {
    /// An operator command; `None` when the core did not answer in `wait`.
    fn command(&self, command: Command, wait: Duration) -> Option<Reply>;
    /// A verified peer request; `None` when the core did not answer in time.
    fn peer(&self, request: PeerRequest) -> Option<PeerAnswer>;
    /// Something the Health Monitor saw, for the journal and notifications.
    fn observe(&self, kind: &str, severity: crate::ha::Severity, text: String);
}

/// Log levels as stored (`log-level` under `state_dir`) and shown.
pub const LEVELS: [&str; 3] = ["error", "info", "trace"];

/// What the core publishes after each step, read by every web worker.
#[derive(Debug)]
pub struct Published {
    pub status: RwLock<StatusView>,
    /// Index into `LEVELS`; changed by the page and the API, read by the logger.
    pub log_level: AtomicU8,
}

/// `/healthz`: what the peer's probe and load balancers read.
#[derive(Debug, Serialize)]
struct Health<'a> {
    name: &'a str,
    role: crate::ha::Role,
    state: crate::ha::HaState,
    mode: crate::ha::ConfigMode,
    active: bool,
}

pub struct App {
    pub core: Arc<dyn CoreLink>,
    pub published: Arc<Published>,
    pub store: Store,
    pub keys: Arc<RwLock<Option<Keys>>>,
    pub verifier: Mutex<Verifier>,
    /// This server's address: peer requests are signed for it.
    pub address: String,
    /// The VIP interface, to check a registration's VIPs against.
    pub interface: Option<String>,
    pub hm_port: u16,
    pub tls: bool,
    pub fingerprint: Option<String>,
    pub sessions: Mutex<session::Sessions>,
    /// Idle lifetime of a session (seconds), also the cookie's Max-Age.
    pub session_ttl: u64,
    pub throttle: Mutex<session::LoginThrottle>,
    /// The result of the last action started from the page.
    pub flash: Arc<Mutex<Option<String>>>,
    /// File sync: serves manifests, files and copy jobs to the peer.
    pub sync: Option<Arc<crate::sync::service::SyncService>>,
    /// Secrets from pairing exchanges whose signed request has not come yet.
    pub pairings: Mutex<crate::peer::pair::Pending>,
    /// `/metrics`' text (`None`: no metrics, or the status is unreadable).
    pub metrics: Option<MetricsFn>,
    /// Who may read `/metrics` without the bearer token.
    pub metrics_scrapers: Vec<crate::config::Cidr>,
}

/// Renders `/metrics` (`None` when the status cannot be read).
pub type MetricsFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("hm_port", &self.hm_port)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The tag a pairing's secret is staged under.
pub(crate) fn pair_tag(secret: &crate::peer::pair::PairSecret) -> String {
    format!("pair-{}", secret.id())
}

fn now_secs() -> u64 {
    crate::peer::client::unix_ms() / 1000
}

fn json_error(status: u16, msg: &str) -> Response {
    Response::json(status, &serde_json::json!({ "error": msg }).to_string())
}

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => Response::json(status, &s),
        Err(e) => json_error(500, &e.to_string()),
    }
}

fn html(status: u16, body: String) -> Response {
    Response::new(status, "text/html; charset=utf-8", body)
        .with_header("cache-control", "no-store")
        .with_header("x-frame-options", "DENY")
        .with_header("content-security-policy", &page::content_security_policy())
}

fn redirect(to: &str) -> Response {
    Response::new(303, "text/plain", "").with_header("location", to)
}

/// `application/x-www-form-urlencoded` or a query string, decoded.
fn form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Who is asking.
enum Caller {
    /// A browser session: its id and CSRF token.
    Session {
        id: String,
        csrf: String,
    },
    /// A script with the bearer token.
    Token,
    Nobody,
}

/// Result of an action, for the page's flash line and the API.
#[derive(Debug, Serialize)]
struct Outcome {
    ok: bool,
    message: String,
}

impl From<Option<Reply>> for Outcome {
    fn from(r: Option<Reply>) -> Outcome {
        match r {
            Some(Reply::Done { message }) => Outcome { ok: true, message },
            Some(Reply::Refused { message }) => Outcome { ok: false, message },
            Some(Reply::Status { .. }) => Outcome {
                ok: true,
                message: String::new(),
            },
            None => Outcome {
                ok: false,
                message: "the agent did not answer in time".into(),
            },
        }
    }
}

/// A registration request, from the page's form or the API's JSON.
#[derive(Debug, Default, serde::Deserialize)]
struct RegisterForm {
    secondary: String,
    failover_type: String,
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    emails: Vec<String>,
    key: String,
}

impl Handler for App {
    fn handle(&self, req: &Request) -> Response {
        let m = req.method.as_str();
        let p = req.path.as_str();
        match (m, p) {
            ("GET", "/healthz") => self.healthz(),
            ("GET", "/metrics") => self.metrics(req),
            ("GET", "/active") | ("GET", "/standby") => {
                let active = self.snapshot().is_some_and(|s| s.duty == Duty::Active);
                let up = active == (p == "/active");
                Response::text(
                    if up { 200 } else { 503 },
                    if active { "active\n" } else { "standby\n" },
                )
            }
            ("POST", "/peer/v1/pair") => self.pair(req),
            ("POST", "/peer/v1/rekey") => self.peer_rekey(req),
            ("POST", _) if p.starts_with("/peer/v1/sync/") => self.peer_sync(req),
            ("POST", _) if p.starts_with("/peer/v1/") => self.peer(req),
            (_, _) if p.starts_with("/api/v1/") => self.api(req),
            ("GET", "/") => self.main_page(req),
            ("POST", "/login") => self.login(req),
            ("GET", "/logs.zip") => match self.caller(req) {
                Caller::Nobody => redirect("/"),
                _ => self.logs_zip(),
            },
            ("POST", _) => self.form_action(req),
            _ => json_error(404, "not found"),
        }
    }
}

impl App {
    fn snapshot(&self) -> Option<StatusView> {
        self.published.status.read().ok().map(|s| s.clone())
    }

    fn level(&self) -> &'static str {
        LEVELS
            .get(self.published.log_level.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or("info")
    }

    fn healthz(&self) -> Response {
        let Some(s) = self.snapshot() else {
            return json_error(500, "status unavailable");
        };
        let h = Health {
            name: &s.name,
            role: s.role,
            state: s.state,
            mode: s.mode,
            active: s.duty == Duty::Active,
        };
        json(200, &h)
    }

    /// `/metrics`, for the bearer token, a logged-in session, or a listed scraper address.
    fn metrics(&self, req: &Request) -> Response {
        let ip = Self::client_ip(req);
        let listed = self.metrics_scrapers.iter().any(|c| c.contains(ip));
        if !listed && matches!(self.caller(req), Caller::Nobody) {
            return Response::text(
                401,
                "metrics need the bearer token (hamon ha token), or this address listed in \
                 [health_monitor] metrics_scrapers\n",
            )
            .with_header("www-authenticate", "Bearer realm=\"hamon\"");
        }
        match self.metrics.as_ref().and_then(|m| m()) {
            Some(text) => Response::new(200, crate::web::metrics::CONTENT_TYPE, text),
            None => json_error(503, "metrics unavailable"),
        }
    }

    fn caller(&self, req: &Request) -> Caller {
        if let Some(t) = req.header("authorization").and_then(session::bearer) {
            let expected = self
                .keys
                .read()
                .ok()
                .and_then(|k| k.as_ref().map(session::api_token));
            if expected.is_some_and(|e| session::same(&e, t)) {
                return Caller::Token;
            }
            return Caller::Nobody;
        }
        let Some(id) = req.header("cookie").and_then(session::session_from_cookie) else {
            return Caller::Nobody;
        };
        match self
            .sessions
            .lock()
            .ok()
            .and_then(|mut s| s.check(id, now_secs()))
        {
            Some(csrf) => Caller::Session {
                id: id.to_string(),
                csrf,
            },
            None => Caller::Nobody,
        }
    }

    // ----- the page -------------------------------------------------------

    fn main_page(&self, req: &Request) -> Response {
        let Caller::Session { csrf, .. } = self.caller(req) else {
            return html(200, page::login_page(None, 0));
        };
        let Some(status) = self.snapshot() else {
            return json_error(500, "status unavailable");
        };
        let q = form(req.query.as_bytes());
        let want: usize = field(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let (events, pageno, pages) = self.events_page(want);
        let flash = self.flash.lock().ok().and_then(|f| f.clone());
        let model = page::PageModel {
            status: &status,
            version: env!("CARGO_PKG_VERSION"),
            csrf: &csrf,
            log_level: self.level(),
            events: &events,
            page: pageno,
            pages,
            message: flash.as_deref(),
            tls_fingerprint: self.fingerprint.as_deref(),
        };
        html(200, page::main_page(&model))
    }

    fn events_page(&self, want: usize) -> (Vec<Stamped>, usize, usize) {
        let mut all = self.store.read_journal(JOURNAL_WINDOW).unwrap_or_default();
        all.reverse();
        let pages = all.len().div_ceil(PER_PAGE).max(1);
        let pageno = want.clamp(1, pages);
        let start = (pageno - 1) * PER_PAGE;
        let events = all.into_iter().skip(start).take(PER_PAGE).collect();
        (events, pageno, pages)
    }

    fn client_ip(req: &Request) -> IpAddr {
        req.peer.ip()
    }

    fn login(&self, req: &Request) -> Response {
        let ip = Self::client_ip(req);
        let now = now_secs();
        let wait = self.throttle.lock().map(|t| t.wait(ip, now)).unwrap_or(0);
        if wait > 0 {
            return html(
                429,
                page::login_page(Some("too many failed attempts"), wait),
            )
            .with_header("retry-after", &wait.to_string());
        }
        let f = form(&req.body);
        let given = field(&f, "key").unwrap_or("");
        let key = self.store.load_authkey().ok().flatten();
        let ok = key
            .as_deref()
            .is_some_and(|k| !given.is_empty() && session::same(k, given));
        if !ok {
            let (wait, exhausted) = match self.throttle.lock() {
                Ok(mut t) => {
                    t.failed(ip, now);
                    (t.wait(ip, now), t.budget_exhausted_now(now))
                }
                Err(_) => (0, false),
            };
            if exhausted {
                self.core.observe(
                    "login_failures",
                    Severity::Warning,
                    format!(
                        "{} failed logins on the Health Monitor within {} s (the last from {ip}): \
                         every login now waits; someone may be guessing the key",
                        session::GLOBAL_FAILURES,
                        session::GLOBAL_WINDOW_SECS
                    ),
                );
            }
            let why = if key.is_none() {
                "no authentication key is set on this server (hamon ha authkey)"
            } else {
                "wrong authentication key"
            };
            return html(401, page::login_page(Some(why), wait));
        }
        if let Ok(mut t) = self.throttle.lock() {
            t.succeeded(ip);
        }
        let mut random = [0u8; 32];
        random[..16].copy_from_slice(&crate::peer::auth::random16());
        random[16..].copy_from_slice(&crate::peer::auth::random16());
        let (id, _) = match self.sessions.lock() {
            Ok(mut s) => s.create(now, random),
            Err(_) => return json_error(500, "sessions unavailable"),
        };
        redirect("/").with_header(
            "set-cookie",
            &session::cookie(&id, self.tls, self.session_ttl),
        )
    }

    /// A POST from the page: session and CSRF token required.
    fn form_action(&self, req: &Request) -> Response {
        let Caller::Session { id, csrf } = self.caller(req) else {
            return html(401, page::login_page(Some("please log in"), 0));
        };
        let f = form(&req.body);
        if !field(&f, "csrf").is_some_and(|t| session::same(t, &csrf)) {
            return json_error(403, "missing or wrong CSRF token");
        }
        match req.path.as_str() {
            "/logout" => {
                if let Ok(mut s) = self.sessions.lock() {
                    s.remove(&id);
                }
                return redirect("/").with_header("set-cookie", &session::clear_cookie(self.tls));
            }
            "/action/failover" => self.in_background(Command::Failover),
            "/action/failback" => self.in_background(Command::Failback),
            "/log-level" => {
                let o = self.set_level(field(&f, "level").unwrap_or(""));
                self.set_flash(o.message);
            }
            "/authkey" => {
                let (new, confirm) = (field(&f, "new_key"), field(&f, "confirm_key"));
                match (new, confirm) {
                    (Some(n), Some(c)) if n == c => match check_password_standard(n) {
                        Ok(()) => self.change_key_in_background(n.to_string()),
                        Err(rule) => self.set_flash(format!("key refused: {rule}")),
                    },
                    _ => self.set_flash("the two keys differ; nothing was changed".into()),
                }
            }
            "/remove" => {
                let purge = field(&f, "purge").is_some();
                self.in_background(Command::Remove { purge });
            }
            "/settings" => {
                // The form holds the whole of the settings: what it submits replaces them.
                let vips = ["vip4", "vip6"]
                    .iter()
                    .filter_map(|k| field(&f, k))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let emails = field(&f, "emails")
                    .unwrap_or("")
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                let failover_type = field(&f, "failover_type").unwrap_or("");
                let edit = match FailoverType::parse(failover_type) {
                    Some(t) => Ok(crate::control::SettingsEdit {
                        failover_type: Some(t),
                        emails: Some(emails),
                        vips: Some(vips),
                        ..Default::default()
                    }),
                    None => Err(format!(
                        "failover type must be manual or automatic, not {failover_type:?}"
                    )),
                };
                let by = format!("the Health Monitor page from {}", Self::client_ip(req));
                match edit.and_then(|e| self.settings_command(&e, by)) {
                    Ok(c) => self.in_background(c),
                    Err(e) => self.set_flash(format!("settings not changed: {e}")),
                }
            }
            "/register" => {
                let mut vips = Vec::new();
                if field(&f, "vip").is_some() {
                    for k in ["vip4", "vip6"] {
                        if let Some(v) = field(&f, k).filter(|v| !v.trim().is_empty()) {
                            vips.push(v.trim().to_string());
                        }
                    }
                }
                let emails = field(&f, "emails")
                    .unwrap_or("")
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                let r = RegisterForm {
                    secondary: field(&f, "secondary").unwrap_or("").to_string(),
                    failover_type: field(&f, "failover_type").unwrap_or("").to_string(),
                    vips,
                    emails,
                    key: field(&f, "key").unwrap_or("").to_string(),
                };
                match self.register_command(r) {
                    Ok(c) => self.in_background(c),
                    Err(e) => self.set_flash(e),
                }
            }
            _ => return json_error(404, "not found"),
        }
        redirect("/")
    }

    fn set_flash(&self, message: String) {
        if let Ok(mut f) = self.flash.lock() {
            *f = Some(message);
        }
    }

    /// Start a command and come back at once; its outcome becomes the flash
    /// line, and the page (refreshing itself) shows the progress meanwhile.
    fn in_background(&self, command: Command) {
        self.set_flash("working...".into());
        let (core, flash) = (self.core.clone(), self.flash.clone());
        let _ = std::thread::Builder::new()
            .name("web-action".into())
            .spawn(move || {
                let o = Outcome::from(core.command(command, Duration::from_secs(24 * 3600)));
                if let Ok(mut f) = flash.lock() {
                    *f = Some(o.message);
                }
            });
    }

    /// Changes the authentication key (on both servers when registered: see
    /// `peer::rekey`), reporting the outcome on the page.
    fn change_key_in_background(&self, key: String) {
        self.set_flash("changing the key...".into());
        let ring = self.keyring();
        let link = crate::peer::client::Link {
            from: self.address.parse().ok(),
            tls: self.tls,
        };
        let peer = self
            .snapshot()
            .as_ref()
            .and_then(crate::sync::direction::peer_of);
        let flash = self.flash.clone();
        let _ = std::thread::Builder::new()
            .name("web-authkey".into())
            .spawn(move || {
                let peer = peer.as_ref().map(|t| (t, link));
                let message = match crate::peer::rekey::change_key(&ring, &key, peer) {
                    Ok(m) => m,
                    Err(e) => e,
                };
                if let Ok(mut f) = flash.lock() {
                    *f = Some(message);
                }
            });
    }

    fn set_level(&self, level: &str) -> Outcome {
        let Some(i) = LEVELS.iter().position(|l| *l == level) else {
            return Outcome {
                ok: false,
                message: format!("unknown level {level:?}"),
            };
        };
        let path = self.store.dir().join("log-level");
        if let Err(e) = crate::store::write_atomic(&path, format!("{level}\n").as_bytes(), 0o600) {
            return Outcome {
                ok: false,
                message: format!("saving the level: {e}"),
            };
        }
        self.published.log_level.store(i as u8, Ordering::Relaxed);
        Outcome {
            ok: true,
            message: format!("message level set to {level}"),
        }
    }

    fn register_command(&self, r: RegisterForm) -> Result<Command, String> {
        let failover_type = FailoverType::parse(&r.failover_type).ok_or_else(|| {
            format!(
                "failover type must be manual or automatic, not {:?}",
                r.failover_type
            )
        })?;
        if r.key.is_empty() {
            return Err("the secondary's authentication key is required".into());
        }
        let secondary = r.secondary.trim();
        let (host, port) = match secondary.parse::<IpAddr>() {
            Ok(ip) => (ip.to_string(), self.hm_port),
            Err(_) => match secondary.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (
                    h.trim_matches(['[', ']']).to_string(),
                    p.parse().unwrap_or(self.hm_port),
                ),
                _ => (secondary.to_string(), self.hm_port),
            },
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or_else(|| format!("cannot resolve secondary {secondary:?}"))?,
        };
        let vips = crate::net::vip::checked(&r.vips, self.interface.as_deref())?;
        crate::notify::mail::checked_recipients(&r.emails)?;
        let id = crate::peer::auth::random_id();
        Ok(Command::Register {
            id,
            secondary_address: ip.to_string(),
            secondary_hm_port: port,
            failover_type,
            vips,
            emails: r.emails,
            key: Secret::new(r.key),
        })
    }

    /// `hamon ha set` from the page or the API: the edit applied to the settings in force
    /// and validated as registration validates them.
    fn settings_command(
        &self,
        edit: &crate::control::SettingsEdit,
        by: String,
    ) -> Result<Command, String> {
        let Some(reg) = self.snapshot().and_then(|s| s.registration) else {
            return Err(
                "HA is not configured on this server: the settings are given at \
                        registration"
                    .into(),
            );
        };
        let expected = reg.settings();
        let new = edit.apply(&expected, self.interface.as_deref())?;
        Ok(Command::Settings {
            change_id: crate::peer::auth::random_id(),
            expected,
            new,
            by,
        })
    }

    fn logs_zip(&self) -> Response {
        let dir = self.store.dir();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for name in ["hamon.log.1", "hamon.log", "events.jsonl"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                files.push((name.to_string(), bytes));
            }
        }
        if let Some(s) = self.snapshot() {
            files.push((
                "status.json".into(),
                serde_json::to_vec_pretty(&s).unwrap_or_default(),
            ));
        }
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        Response::new(200, "application/zip", zip::zip_at(&refs, now_secs())).with_header(
            "content-disposition",
            "attachment; filename=\"hamon-logs.zip\"",
        )
    }

    // ----- the JSON API ---------------------------------------------------

    fn api(&self, req: &Request) -> Response {
        let caller = self.caller(req);
        let reading = req.method == "GET";
        match &caller {
            Caller::Nobody => {
                return json_error(401, "authentication required: a session or a bearer token")
            }
            Caller::Session { csrf, .. }
                if !reading
                    && !req
                        .header("x-csrf-token")
                        .is_some_and(|t| session::same(t, csrf)) =>
            {
                return json_error(403, "missing or wrong X-CSRF-Token header");
            }
            _ => {}
        }
        let route = req.path.trim_start_matches("/api/v1/");
        let body: serde_json::Value = if req.body.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return json_error(400, &format!("malformed JSON: {e}")),
            }
        };
        let long = Duration::from_secs(24 * 3600);
        let outcome = |o: Outcome| json(if o.ok { 200 } else { 409 }, &o);
        match (req.method.as_str(), route) {
            ("GET", "status") => match self.snapshot() {
                Some(s) => json(
                    200,
                    &serde_json::json!({ "status": s, "log_level": self.level(),
                        "tls_fingerprint": self.fingerprint, "version": env!("CARGO_PKG_VERSION"),
                        "sync": self.sync.as_ref().map(|sync| sync.progress(Some(&s))) }),
                ),
                None => json_error(500, "status unavailable"),
            },
            ("GET", "events") => {
                let q = form(req.query.as_bytes());
                let want = field(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let (events, page, pages) = self.events_page(want);
                json(
                    200,
                    &serde_json::json!({ "events": events, "page": page, "pages": pages }),
                )
            }
            ("POST", "failover") => outcome(self.core.command(Command::Failover, long).into()),
            ("POST", "failback") => outcome(self.core.command(Command::Failback, long).into()),
            ("GET", "log-level") => json(200, &serde_json::json!({ "level": self.level() })),
            ("PUT", "log-level") | ("POST", "log-level") => {
                outcome(self.set_level(body.get("level").and_then(|l| l.as_str()).unwrap_or("")))
            }
            ("POST", "register") => match serde_json::from_value::<RegisterForm>(body) {
                Ok(r) => match self.register_command(r) {
                    Ok(c) => outcome(self.core.command(c, long).into()),
                    Err(e) => json(
                        400,
                        &Outcome {
                            ok: false,
                            message: e,
                        },
                    ),
                },
                Err(e) => json_error(400, &format!("register: {e}")),
            },
            ("POST", "settings") => {
                let how = match caller {
                    Caller::Token => "bearer token",
                    _ => "session",
                };
                let by = format!("the API ({how}) from {}", Self::client_ip(req));
                let edit = match serde_json::from_value::<crate::control::SettingsEdit>(body) {
                    Ok(e) => e,
                    Err(e) => return json_error(400, &format!("settings: {e}")),
                };
                if self.snapshot().is_none_or(|s| s.registration.is_none()) {
                    // Not a bad request: this server is not in a pair (yet).
                    return outcome(Outcome {
                        ok: false,
                        message: "HA is not configured on this server: the settings are given \
                                  at registration"
                            .into(),
                    });
                }
                match self.settings_command(&edit, by) {
                    Ok(c) => outcome(self.core.command(c, long).into()),
                    Err(e) => json(
                        400,
                        &Outcome {
                            ok: false,
                            message: e,
                        },
                    ),
                }
            }
            ("POST", "remove") => {
                let purge = body.get("purge").and_then(|p| p.as_bool()).unwrap_or(false);
                outcome(self.core.command(Command::Remove { purge }, long).into())
            }
            ("GET", "logs.zip") => self.logs_zip(),
            _ => json_error(404, "no such endpoint"),
        }
    }

    // ----- the peer API ---------------------------------------------------

    /// `/peer/v1/pair`: the receiver's side of a pairing exchange (`peer::pair`). Each
    /// exchange is one guess of the key for whoever started it, so it goes through the
    /// login throttle, and counts as a failure until a request signed with its secret is
    /// accepted.
    fn pair(&self, req: &Request) -> Response {
        let ip = Self::client_ip(req);
        let now = now_secs();
        let wait = self.throttle.lock().map(|t| t.wait(ip, now)).unwrap_or(0);
        if wait > 0 {
            return json_error(429, &format!("too many attempts; wait {wait} s"))
                .with_header("retry-after", &wait.to_string());
        }
        let Some(key) = self.store.load_authkey().ok().flatten() else {
            return json_error(
                409,
                "no authentication key is set on this server (hamon ha authkey)",
            );
        };
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let version = body.get("v").and_then(|v| v.as_u64());
        let id = body.get("id").and_then(|v| v.as_str()).unwrap_or("");
        let msg = body
            .get("msg")
            .and_then(|v| v.as_str())
            .and_then(crate::peer::auth::unhex);
        let (Some(1), Some(msg)) = (version, msg) else {
            return json_error(400, "malformed pairing request (version 1 expected)");
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return json_error(400, "malformed pairing request: bad id");
        }
        // A registered server pairs only with its peer (a failback to a replacement).
        let peer = self
            .snapshot()
            .as_ref()
            .and_then(crate::sync::direction::peer_of)
            .and_then(|t| t.address.parse::<std::net::IpAddr>().ok());
        if peer.is_some_and(|p| p.to_canonical() != req.peer.ip().to_canonical()) {
            return json_error(
                403,
                "this server is registered; only its peer may pair with it",
            );
        }
        if let Ok(mut t) = self.throttle.lock() {
            t.failed(ip, now);
        }
        let caller = req.peer.ip().to_canonical().to_string();
        match crate::peer::pair::respond(&key, &caller, &self.address, &msg) {
            Ok((msg_b, confirm, secret)) => {
                let kept = self
                    .pairings
                    .lock()
                    .is_ok_and(|mut p| p.insert(id.to_string(), req.peer.ip(), secret, now * 1000));
                if !kept {
                    return json_error(503, "too many pairings under way; try again in a minute");
                }
                json(
                    200,
                    &serde_json::json!({
                        "v": crate::peer::pair::PAIR_VERSION,
                        "msg": crate::peer::auth::hex(&msg_b),
                        "confirm": crate::peer::auth::hex(&confirm),
                    }),
                )
            }
            Err(e) => json_error(400, &e.to_string()),
        }
    }

    /// The keys that sign `req`: those of the pairing it names, else the server's own.
    fn keys_for(&self, req: &Request) -> Result<(Keys, Option<String>), Response> {
        if let Some(id) = req.header(crate::peer::pair::H_PAIR) {
            let secret = self
                .pairings
                .lock()
                .ok()
                .and_then(|p| p.get(id, req.peer.ip(), now_secs() * 1000));
            return match secret {
                Some(s) => Ok((s.keys(), Some(id.to_string()))),
                None => Err(json_error(
                    401,
                    "no such pairing (it expired, or came from elsewhere)",
                )),
            };
        }
        match self.keys.read().ok().and_then(|k| k.clone()) {
            Some(keys) => Ok((keys, None)),
            None => Err(json_error(
                401,
                "no authentication key is set on this server (hamon ha authkey)",
            )),
        }
    }

    /// The peer API key that checked out and the request's nonce, once its signature does.
    fn verified(&self, req: &Request) -> Result<([u8; 32], String), Response> {
        if req.header(crate::peer::pair::H_PAIR).is_some() {
            return Err(json_error(
                401,
                "a pairing signs only registration requests",
            ));
        }
        self.verified_with(req)
            .map(|(keys, nonce, _)| (keys, nonce))
    }

    /// As [`App::verified`], also for a request signed with a pairing's secret, whose id
    /// comes back too.
    fn verified_with(&self, req: &Request) -> Result<([u8; 32], String, Option<String>), Response> {
        let (keys, pairing) = self.keys_for(req)?;
        // What was signed: the path with its query, exactly as sent.
        let target = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        // Ours first, then any also accepted during a key change; the answer is signed
        // with the key that checked out.
        let now = crate::peer::client::unix_ms();
        let Ok(mut verifier) = self.verifier.lock() else {
            return Err(json_error(500, "verifier unavailable"));
        };
        let mut verdict = Err(crate::peer::auth::AuthError::BadSignature);
        for key in keys.api_keys(now) {
            verdict = verifier
                .verify(
                    &key,
                    &req.method,
                    &target,
                    &self.address,
                    &req.body,
                    |name| req.header(name),
                    now,
                )
                .map(|nonce| (key, nonce));
            if !matches!(verdict, Err(crate::peer::auth::AuthError::BadSignature)) {
                break;
            }
        }
        drop(verifier);
        if verdict.is_ok() {
            if let Some(why) = Self::incompatible_caller(req) {
                return Err(json_error(409, &why));
            }
        }
        match verdict {
            Ok((key, nonce)) => {
                if keys.is_staged(&key) {
                    // The peer signs with the keys of a change we prepared: it committed.
                    self.keyring().promote(now);
                }
                Ok((key, nonce, pairing))
            }
            Err(e) => Err(json_error(401, &e.to_string())),
        }
    }

    /// Why this server cannot work with the build that signed `req`, from the protocol
    /// and release in its (signed) query; `None` when it can, or when the caller sends
    /// none (a release from before versions were sent: protocol minor 0).
    fn incompatible_caller(req: &Request) -> Option<String> {
        let q = form(req.query.as_bytes());
        let (major, minor) = field(&q, "protocol")?.split_once('.')?;
        let (Ok(major), Ok(minor)) = (major.parse::<u8>(), minor.parse::<u8>()) else {
            return Some("malformed protocol version in the request".to_string());
        };
        let theirs = crate::version::Version {
            release: field(&q, "release").unwrap_or("unknown").to_string(),
            major,
            minor,
        };
        let ours = crate::version::Version::ours();
        ours.incompatible_with(&theirs)
            .map(|why| format!("this server runs {ours}, the caller {theirs}: refused, {why}"))
    }

    fn keyring(&self) -> crate::peer::rekey::Keyring {
        crate::peer::rekey::Keyring {
            store: self.store.clone(),
            keys: self.keys.clone(),
        }
    }

    /// `/peer/v1/rekey`: the receiving side of a key change (`peer::rekey`). `prepare`
    /// must be signed with the current keys and carries the new key and secret sealed
    /// under them; `commit` is signed with the new ones, which commits the change by
    /// itself (see `verified_with`).
    fn peer_rekey(&self, req: &Request) -> Response {
        let (key, nonce) = match self.verified(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let text = |name: &str| body.get(name).and_then(|v| v.as_str()).unwrap_or("");
        if body.get("v").and_then(|v| v.as_u64()) != Some(crate::peer::rekey::REKEY_VERSION) {
            return json_error(400, "malformed key change (version 1 expected)");
        }
        let current = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.api));
        let answer = match text("phase") {
            "prepare" if current != Some(key) => Err((
                409,
                "a key change must be signed with this server's current keys".to_string(),
            )),
            "prepare" => {
                crate::peer::rekey::open(&key, &self.address, text("nonce"), text("sealed"))
                    .map_err(|e| (400, e))
                    .and_then(|(new_key, secret)| {
                        self.keyring()
                            .prepare_for_peer(&new_key, &secret)
                            .map_err(|e| (409, e))
                            .map(|()| "prepared")
                    })
            }
            "commit" => Ok("committed"),
            _ => Err((400, "unknown key change phase".to_string())),
        };
        match answer {
            Ok(result) => {
                let body = serde_json::json!({ "result": result }).to_string();
                Self::signed(&key, &nonce, body.into_bytes())
            }
            Err((status, msg)) => json_error(status, &msg),
        }
    }

    fn signed(key: &[u8; 32], nonce: &str, body: Vec<u8>) -> Response {
        let sig = crate::peer::auth::sign_response(key, nonce, 200, &body);
        Response::new(200, "application/json", body)
            .with_header(crate::peer::auth::H_SIGNATURE, &sig)
    }

    /// `/peer/v1/sync/*`: file sync between the two servers.
    fn peer_sync(&self, req: &Request) -> Response {
        let (keys, nonce) = match self.verified(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(sync) = &self.sync else {
            return json_error(404, "file sync is not running on this server");
        };
        let op = req.path.trim_start_matches("/peer/v1/sync/");
        let answer = match op {
            "manifest" => sync.serve_manifest(&req.body),
            "blocks" => sync.serve_blocks(&req.body),
            "ranges" => {
                return match sync.serve_ranges(&req.body) {
                    Ok((file, ranges)) => {
                        Response::file_ranges(200, "application/octet-stream", file, ranges)
                    }
                    Err((status, msg)) => json_error(status, &msg),
                };
            }
            "hint" => sync.hint(&req.body),
            "job" => sync.job_state(&req.body),
            "pull" => sync.start_job(&req.body),
            "file" => {
                return match sync.serve_file(&req.body) {
                    Ok((file, len)) => Response::file(200, "application/octet-stream", file, len),
                    Err((status, msg)) => json_error(status, &msg),
                }
            }
            _ => Err((404, "no such sync endpoint".to_string())),
        };
        match answer {
            Ok(body) => Self::signed(&keys, &nonce, body),
            Err((status, msg)) => json_error(status, &msg),
        }
    }

    fn peer(&self, req: &Request) -> Response {
        let (keys, nonce, pairing) = match self.verified_with(req) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let request: PeerRequest = match serde_json::from_slice(&req.body) {
            Ok(r) => r,
            Err(e) => return json_error(400, &format!("malformed peer request: {e}")),
        };
        if req.path.strip_prefix("/peer/v1/") != Some(request.op()) {
            return json_error(400, "the path does not match the operation");
        }
        let pairs = matches!(
            request,
            PeerRequest::Register { .. }
                | PeerRequest::RegisterAbort { .. }
                | PeerRequest::FailbackBegin { .. }
        );
        if pairing.is_some() && !pairs {
            return json_error(401, "a pairing signs only registration requests");
        }
        let staged = match &pairing {
            Some(id) => match self.stage_pairing(id, req) {
                Ok(staged) => Some(staged),
                Err(e) => return json_error(503, &e),
            },
            None => None,
        };
        let checked = match &request {
            PeerRequest::Register { registration } => {
                crate::net::vip::checked(&registration.vips, self.interface.as_deref()).map(drop)
            }
            _ => Ok(()),
        };
        let answer = match checked {
            Err(reason) => PeerAnswer::Refused { reason },
            Ok(()) => match self.core.peer(request) {
                Some(a) => a,
                None => return json_error(503, "no answer from the core in time"),
            },
        };
        if let Some((secret, at_ms)) = staged {
            let accepted = matches!(answer, PeerAnswer::Accepted { .. });
            self.settle_pairing(secret, at_ms, accepted, req);
        }
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        Self::signed(&keys, &nonce, body)
    }

    /// Takes the secret of pairing `id` and writes it beside the current one, before the
    /// core hears the request: a disk that cannot take it refuses the request, so the core
    /// never accepts a pairing this server could not keep.
    fn stage_pairing(
        &self,
        id: &str,
        req: &Request,
    ) -> Result<(crate::peer::pair::PairSecret, u64), String> {
        let taken = self
            .pairings
            .lock()
            .ok()
            .and_then(|mut p| p.take(id, req.peer.ip(), now_secs() * 1000));
        let (secret, at_ms) = taken.ok_or("the pairing expired")?;
        self.store
            .stage_secret(&secret, &pair_tag(&secret))
            .map_err(|e| format!("cannot store the new pair secret: {e}"))?;
        Ok((secret, at_ms))
    }

    /// The core answered a request signed with a pairing's secret: if it accepted, that
    /// secret is the pair's now (put in place, then used); else it is dropped.
    fn settle_pairing(
        &self,
        secret: crate::peer::pair::PairSecret,
        at_ms: u64,
        accepted: bool,
        req: &Request,
    ) {
        let tag = pair_tag(&secret);
        if !accepted {
            self.store.discard_staged_secret(&tag);
            return;
        }
        // The exchange was genuine: it leaves the login budget it was charged to.
        if let Ok(mut t) = self.throttle.lock() {
            t.forgive(Self::client_ip(req), at_ms / 1000);
        }
        if let Err(e) = self.store.commit_secret(&tag) {
            self.core.observe(
                "agent_secret_failed",
                Severity::Error,
                format!(
                    "the new pair secret ({}) is in use but could not be put in place: {e}; \
                     after a restart this server will not hear its peer until `hamon ha \
                     authkey` is run",
                    secret.id()
                ),
            );
        }
        if let Ok(mut k) = self.keys.write() {
            *k = Some(secret.keys());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signed_query(query: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/peer/v1/register".into(),
            query: query.into(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: "192.0.2.12:40000".parse().unwrap(),
        }
    }

    #[test]
    fn a_caller_more_than_one_protocol_minor_away_is_refused_naming_both() {
        let ours = crate::version::Version::ours();
        let at = |minor: u8| {
            format!(
                "protocol={}.{minor}&release=9.9.9",
                crate::peer::wire::VERSION
            )
        };
        // No version (a release from before versions were sent), the same, one apart.
        assert_eq!(App::incompatible_caller(&signed_query("")), None);
        for minor in [ours.minor, ours.minor + 1, ours.minor.saturating_sub(1)] {
            assert_eq!(App::incompatible_caller(&signed_query(&at(minor))), None);
        }
        let why = App::incompatible_caller(&signed_query(&at(ours.minor + 2))).unwrap();
        assert!(why.contains(&ours.to_string()), "{why}");
        assert!(
            why.contains(&format!("9.9.9 (protocol 1.{})", ours.minor + 2)),
            "{why}"
        );
        let other_major = format!("protocol={}.{}", crate::peer::wire::VERSION + 1, ours.minor);
        assert!(App::incompatible_caller(&signed_query(&other_major)).is_some());
        assert!(App::incompatible_caller(&signed_query("protocol=1.x")).is_some());
    }
}
