//! Mail notifications: one background thread per [`Mailer`] turns queued
//! [`Notice`]s into mails and hands them to an SMTP relay or to a local
//! `sendmail`.
//!
//! [`Mailer::send`] never blocks: it puts the notice on a bounded queue and
//! returns. When the queue is full the *oldest* notice is dropped (the newest
//! state of the pair matters most) and counted. The thread delivers in order;
//! a mail that fails is retried with exponential backoff before the next one
//! is tried, and dropped (and counted) once its attempts are used up or the
//! relay rejects it permanently (a 5xx answer).
//!
//! Subject: `[hamon] <node>: <state> — <id>`, e.g.
//! `[hamon] alpha: active — failover_complete`. The body lists the
//! description, state, previous state, severity, role, peer, time (UTC,
//! RFC 3339) and the link to this server's Health Monitor page.
//!
//! Limits: SMTP has one connection per mail (no pool: mails are rare), each
//! step bounded by [`SmtpConfig::timeout`]; the `sendmail` transport has no
//! timeout of its own (lettre waits for the child), so a hung `sendmail`
//! holds the queue until it exits.

use super::{rfc3339_utc, system_hostname, Notice};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SendmailTransport, SmtpTransport, Transport};
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Default number of mails waiting to be delivered.
pub const DEFAULT_QUEUE_LEN: usize = 100;
/// How long [`Mailer::stop`] keeps delivering what is queued.
pub const STOP_DRAIN: Duration = Duration::from_secs(2);

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (refused if the server does not offer it).
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    Tls,
    /// No encryption (a relay on localhost or a trusted network).
    None,
}

/// SMTP login. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for SmtpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// An SMTP relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub auth: Option<SmtpAuth>,
    /// Bound on connecting and on each SMTP command.
    pub timeout: Duration,
    /// Accept any server certificate (tests with self-signed certificates only).
    pub accept_invalid_certs: bool,
    /// Name given in EHLO; `None` uses this machine's host name.
    pub hello_name: Option<String>,
}

impl SmtpConfig {
    /// A relay with the usual port for `security` (587, 465 or 25), no login,
    /// a 10 s timeout and certificate checking on.
    pub fn new(host: impl Into<String>, security: SmtpSecurity) -> SmtpConfig {
        let port = match security {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        };
        SmtpConfig {
            host: host.into(),
            port,
            security,
            auth: None,
            timeout: Duration::from_secs(10),
            accept_invalid_certs: false,
            hello_name: None,
        }
    }
}

/// Where mails go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    Smtp(SmtpConfig),
    /// A `sendmail`-compatible program (called with `-i -f <from> <to>...`).
    Sendmail {
        path: PathBuf,
    },
}

/// Retries of one mail: waits `base`, `2*base`, `4*base`... capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    /// Attempts per mail, the first one included (at least 1).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Mail settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// Sender, e.g. `hamon <hamon@example.com>`.
    pub from: String,
    /// Recipients (at least one).
    pub to: Vec<String>,
    /// Mails waiting at most (at least 1); beyond it the oldest is dropped.
    pub queue_len: usize,
    pub retry: RetryPolicy,
}

impl MailConfig {
    /// Settings with the default queue length and retry policy.
    pub fn new(transport: MailTransport, from: impl Into<String>, to: Vec<String>) -> MailConfig {
        MailConfig {
            transport,
            from: from.into(),
            to,
            queue_len: DEFAULT_QUEUE_LEN,
            retry: RetryPolicy::default(),
        }
    }
}

/// Counters since [`Mailer::start`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailStats {
    /// Mails accepted by the relay or by `sendmail`.
    pub sent: u64,
    /// Mails given up: pushed out of a full queue, out of attempts, or rejected for good.
    pub dropped: u64,
    /// Delivery attempts that failed.
    pub failed_attempts: u64,
    /// Mails waiting (the one being delivered included).
    pub queued: usize,
    /// The last delivery error, for the operator.
    pub last_error: Option<String>,
}

/// Settings the mailer cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail address {address:?}: {detail}")]
    Address { address: String, detail: String },
    #[error("no mail recipients configured")]
    NoRecipients,
    #[error("the mail queue length must be at least 1")]
    QueueLen,
    #[error("the mail retry policy needs at least 1 attempt")]
    Attempts,
    #[error("cannot set up TLS for the mail relay: {0}")]
    Tls(#[source] lettre::transport::smtp::Error),
    #[error("cannot start the mail thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The subject of the mail for `notice`: `[hamon] <node>: <state> — <id>`.
pub fn subject(notice: &Notice) -> String {
    one_line(&format!(
        "[hamon] {}: {} \u{2014} {}",
        notice.node, notice.state, notice.id
    ))
}

/// The plain-text body of the mail for `notice`.
pub fn body(notice: &Notice) -> String {
    let dash = "-";
    format!(
        "hamon on {node} reports {id}.\n\
         \n\
         Description:     {text}\n\
         State:           {state}\n\
         Previous state:  {prev}\n\
         Severity:        {sev}\n\
         Role:            {role}\n\
         Peer:            {peer}\n\
         Time (UTC):      {time}\n\
         Event id:        {id}\n\
         \n\
         Health Monitor:  {url}\n",
        node = notice.node,
        id = notice.id,
        text = notice.text,
        state = notice.state,
        prev = notice.previous_state.as_deref().unwrap_or(dash),
        sev = notice.severity,
        role = notice.role,
        peer = notice.peer.as_deref().unwrap_or(dash),
        time = rfc3339_utc(notice.time_unix),
        url = notice.monitor_url,
    )
}

/// `s` with control characters (newlines included) turned into spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Sends notices by mail from a background thread.
#[derive(Debug)]
pub struct Mailer {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    queue_len: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    next_seq: u64,
    stats: MailStats,
    /// Set by `stop`: deliver what is queued until then, then exit.
    stop_by: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    notice: Notice,
    /// Recipients besides the configured ones (the registration's list).
    extra: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Mailer {
    /// Checks `cfg` and starts the delivery thread.
    pub fn start(cfg: MailConfig) -> Result<Mailer, MailError> {
        if cfg.queue_len == 0 {
            return Err(MailError::QueueLen);
        }
        if cfg.retry.max_attempts == 0 {
            return Err(MailError::Attempts);
        }
        let sender = Outgoing::new(&cfg)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            queue_len: cfg.queue_len,
        });
        let worker = {
            let shared = Arc::clone(&shared);
            let retry = cfg.retry;
            std::thread::Builder::new()
                .name("mail".into())
                .spawn(move || run(&shared, &sender, retry))
                .map_err(MailError::Spawn)?
        };
        Ok(Mailer {
            shared,
            worker: Some(worker),
        })
    }

    /// Queues a mail for `notice`; returns at once. When the queue is full
    /// the oldest waiting mail is dropped.
    pub fn send(&self, notice: &Notice) {
        self.send_to(notice, &[]);
    }

    /// As [`Mailer::send`], to `extra` recipients as well as the configured ones.
    pub fn send_to(&self, notice: &Notice, extra: &[String]) {
        let mut st = self.shared.lock();
        while st.queue.len() >= self.shared.queue_len {
            st.queue.pop_front();
            st.stats.dropped += 1;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue.push_back(Entry {
            seq,
            notice: notice.clone(),
            extra: extra.to_vec(),
        });
        drop(st);
        self.shared.wake.notify_all();
    }

    /// Counters so far.
    pub fn stats(&self) -> MailStats {
        let st = self.shared.lock();
        let mut stats = st.stats.clone();
        stats.queued = st.queue.len();
        stats
    }

    /// Keeps delivering what is queued for up to [`STOP_DRAIN`] (plus at most
    /// one SMTP timeout for a delivery under way), then stops the thread.
    pub fn stop(mut self) {
        self.stop_within(STOP_DRAIN);
    }

    fn stop_within(&mut self, drain: Duration) {
        self.shared.lock().stop_by = Some(Instant::now() + drain);
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                eprintln!("mail: the delivery thread panicked");
            }
        }
    }
}

impl Drop for Mailer {
    fn drop(&mut self) {
        if self.worker.is_some() {
            // Not stopped explicitly: let the thread go without waiting.
            self.shared.lock().stop_by = Some(Instant::now());
            self.shared.wake.notify_all();
        }
    }
}

/// Why one delivery failed.
struct Failure {
    /// Retrying cannot help (the relay answered 5xx).
    permanent: bool,
    detail: String,
}

/// The configured transport, with the parsed addresses.
enum Sender {
    Smtp(Box<SmtpTransport>),
    Sendmail(SendmailTransport),
}

struct Outgoing {
    sender: Sender,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// Right-hand side of generated Message-IDs.
    domain: String,
    /// Start time, so that Message-IDs differ across restarts.
    nonce: u64,
}

impl Outgoing {
    fn new(cfg: &MailConfig) -> Result<Outgoing, MailError> {
        let from = parse_mailbox(&cfg.from)?;
        let to = cfg
            .to
            .iter()
            .map(|a| parse_mailbox(a))
            .collect::<Result<Vec<_>, _>>()?;
        let hello = match &cfg.transport {
            MailTransport::Smtp(s) => s.hello_name.clone(),
            MailTransport::Sendmail { .. } => None,
        }
        .or_else(system_hostname);
        let sender = match &cfg.transport {
            MailTransport::Smtp(s) => Sender::Smtp(Box::new(smtp_transport(s, hello.clone())?)),
            MailTransport::Sendmail { path } => {
                Sender::Sendmail(SendmailTransport::new_with_command(path.as_os_str()))
            }
        };
        let domain = hello
            .as_deref()
            .map(message_id_domain)
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "hamon.invalid".to_owned());
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(Outgoing {
            sender,
            from,
            to,
            domain,
            nonce,
        })
    }
}

/// Sends one mail now, in this thread, with no queue and no retry (`hamon notify test`):
/// to the configured `to` and `extra`. `Err` says why it did not go.
pub fn send_once(cfg: &MailConfig, notice: &Notice, extra: &[String]) -> Result<(), String> {
    let out = Outgoing::new(cfg).map_err(|e| e.to_string())?;
    let msg = out.message(notice, extra, 0).map_err(|f| f.detail)?;
    out.deliver(&msg).map_err(|f| f.detail)
}

/// The registration's mail recipients, checked: every address must parse as one, or the
/// whole list is refused with each malformed address named (a registration that kept a
/// malformed address would drop its mail later, in silence).
pub fn checked_recipients(addresses: &[String]) -> Result<(), String> {
    let bad: Vec<String> = addresses
        .iter()
        .filter_map(|a| match a.parse::<lettre::Address>() {
            Ok(_) => None,
            Err(e) => Some(format!("{a:?} ({e})")),
        })
        .collect();
    match bad.as_slice() {
        [] => Ok(()),
        [one] => Err(format!("not an e-mail address: {one}")),
        many => Err(format!("not e-mail addresses: {}", many.join(", "))),
    }
}

fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_owned(),
            detail: e.to_string(),
        })
}

fn smtp_transport(s: &SmtpConfig, hello: Option<String>) -> Result<SmtpTransport, MailError> {
    let tls = |host: &str| {
        TlsParameters::builder(host.to_owned())
            .dangerous_accept_invalid_certs(s.accept_invalid_certs)
            .build()
            .map_err(MailError::Tls)
    };
    let tls = match s.security {
        SmtpSecurity::StartTls => Tls::Required(tls(&s.host)?),
        SmtpSecurity::Tls => Tls::Wrapper(tls(&s.host)?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = SmtpTransport::builder_dangerous(s.host.as_str())
        .port(s.port)
        .tls(tls)
        .timeout(Some(s.timeout));
    if let Some(name) = hello {
        builder = builder.hello_name(ClientId::Domain(name));
    }
    if let Some(auth) = &s.auth {
        builder = builder.credentials(Credentials::new(auth.user.clone(), auth.password.clone()));
    }
    Ok(builder.build())
}

/// `name` reduced to what a Message-ID's right-hand side may hold.
fn message_id_domain(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect::<String>()
        .trim_matches('.')
        .to_owned()
}

impl Outgoing {
    fn message(&self, notice: &Notice, extra: &[String], seq: u64) -> Result<Message, Failure> {
        let mut to = self.to.clone();
        for a in extra {
            let Ok(m) = parse_mailbox(a) else { continue };
            if !to.contains(&m) {
                to.push(m);
            }
        }
        if to.is_empty() {
            return Err(Failure {
                permanent: true,
                detail: MailError::NoRecipients.to_string(),
            });
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(notice))
            .date(SystemTime::UNIX_EPOCH + Duration::from_secs(notice.time_unix))
            .message_id(Some(format!(
                "<hamon.{:x}.{}.{seq}@{}>",
                self.nonce,
                std::process::id(),
                self.domain
            )))
            .header(ContentType::TEXT_PLAIN);
        for to in to {
            builder = builder.to(to);
        }
        builder.body(body(notice)).map_err(|e| Failure {
            permanent: true,
            detail: format!("cannot build the mail: {e}"),
        })
    }

    fn deliver(&self, msg: &Message) -> Result<(), Failure> {
        match &self.sender {
            Sender::Smtp(t) => t.send(msg).map(drop).map_err(|e| Failure {
                permanent: e.is_permanent(),
                detail: format!("SMTP: {}", error_chain(&e)),
            }),
            Sender::Sendmail(t) => t.send(msg).map_err(|e| Failure {
                permanent: false,
                detail: format!("sendmail: {}", error_chain(&e)),
            }),
        }
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// The delivery thread.
fn run(shared: &Shared, out: &Outgoing, retry: RetryPolicy) {
    // Failed attempts of the mail at the head of the queue, by sequence number.
    let mut failures: (u64, u32) = (u64::MAX, 0);
    loop {
        let (seq, notice, extra) = {
            let mut st = shared.lock();
            loop {
                if st.stop_by.is_some_and(|by| Instant::now() >= by) {
                    return;
                }
                if let Some(head) = st.queue.front() {
                    break (head.seq, head.notice.clone(), head.extra.clone());
                }
                if st.stop_by.is_some() {
                    return;
                }
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        if failures.0 != seq {
            failures = (seq, 0);
        }
        let result = out
            .message(&notice, &extra, seq)
            .and_then(|m| out.deliver(&m));
        let mut st = shared.lock();
        let at_head = st.queue.front().is_some_and(|h| h.seq == seq);
        match result {
            Ok(()) => {
                st.stats.sent += 1;
                if at_head {
                    st.queue.pop_front();
                } else {
                    // Pushed out of a full queue while it was being delivered,
                    // and counted as dropped then: it was not lost after all.
                    st.stats.dropped = st.stats.dropped.saturating_sub(1);
                }
            }
            Err(f) => {
                failures.1 += 1;
                st.stats.failed_attempts += 1;
                st.stats.last_error = Some(f.detail.clone());
                if !at_head {
                    continue; // already dropped
                }
                if f.permanent || failures.1 >= retry.max_attempts {
                    eprintln!(
                        "mail: giving up on {} after {} attempt(s): {}",
                        notice.id, failures.1, f.detail
                    );
                    st.queue.pop_front();
                    st.stats.dropped += 1;
                    continue;
                }
                // Wait before retrying; wake early to stop, or when the mail
                // is pushed out of the queue.
                let until = Instant::now() + retry.backoff(failures.1);
                loop {
                    let now = Instant::now();
                    let deadline = st.stop_by.map_or(until, |by| by.min(until));
                    if now >= deadline || st.queue.front().is_none_or(|h| h.seq != seq) {
                        break;
                    }
                    st = shared
                        .wake
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_recipients_are_checked_and_each_bad_one_named() {
        let list = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            checked_recipients(&list(&["ops@example.com", "a.b+c@example.org"])),
            Ok(())
        );
        assert_eq!(checked_recipients(&[]), Ok(()));
        let one = checked_recipients(&list(&["ops@example.com", "not-an-email"])).unwrap_err();
        assert!(
            one.starts_with("not an e-mail address: \"not-an-email\""),
            "{one}"
        );
        let two = checked_recipients(&list(&["x@", "@example.com"])).unwrap_err();
        assert!(
            two.starts_with("not e-mail addresses: \"x@\"") && two.contains("\"@example.com\""),
            "{two}"
        );
    }
    use crate::notify::NoticeSeverity;

    fn notice() -> Notice {
        Notice {
            id: "failover_complete".into(),
            severity: NoticeSeverity::Critical,
            node: "alpha".into(),
            role: "primary".into(),
            state: "active".into(),
            previous_state: Some("standby".into()),
            text: "took over from beta".into(),
            time_unix: 1_709_294_400,
            peer: Some("beta".into()),
            monitor_url: "https://alpha.example:8443/".into(),
        }
    }

    #[test]
    fn subject_and_body() {
        let n = notice();
        assert_eq!(
            subject(&n),
            "[hamon] alpha: active \u{2014} failover_complete"
        );
        let b = body(&n);
        for want in [
            "State:           active\n",
            "Previous state:  standby\n",
            "Description:     took over from beta\n",
            "Severity:        critical\n",
            "Time (UTC):      2024-03-01T12:00:00Z\n",
            "Health Monitor:  https://alpha.example:8443/\n",
        ] {
            assert!(b.contains(want), "{want:?} not in {b}");
        }
        let mut n = n;
        n.state = "a\r\nBcc: x@y".into();
        assert!(!subject(&n).contains('\n'));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
            max_attempts: 5,
        };
        assert_eq!(r.backoff(1), Duration::from_millis(100));
        assert_eq!(r.backoff(2), Duration::from_millis(200));
        assert_eq!(r.backoff(3), Duration::from_millis(350));
        assert_eq!(r.backoff(60), Duration::from_millis(350));
    }

    #[test]
    fn bad_settings_are_refused() {
        let t = MailTransport::Sendmail {
            path: "/bin/false".into(),
        };
        let ok = MailConfig::new(
            t.clone(),
            "hamon <ha@example.com>",
            vec!["ops@example.com".into()],
        );
        let mut c = ok.clone();
        c.from = "not an address".into();
        assert!(matches!(Mailer::start(c), Err(MailError::Address { .. })));
        // No configured recipient is fine: the registration's list may follow.
        let mut c = ok.clone();
        c.to.clear();
        Mailer::start(c).unwrap().stop();
        let mut c = ok.clone();
        c.queue_len = 0;
        assert!(matches!(Mailer::start(c), Err(MailError::QueueLen)));
        Mailer::start(ok).unwrap().stop();
    }

    #[test]
    fn auth_debug_hides_password() {
        let a = SmtpAuth {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
