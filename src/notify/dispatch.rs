//! From journal entries to notifications: the catalogue gives each event
//! its severity and SNMP notification, the routing picks the channels, and
//! one thread sends. The core's thread only does a `try_send` on a bounded
//! channel: a slow or dead receiver never costs a heartbeat, and when the
//! channel is full the newest event is dropped and counted (the journal on
//! disk still has it).

use super::catalogue::{Category, Channel, Routing};
use super::mail::{MailStats, Mailer};
use super::snmp::{self, HamonEvent, Notification, Oid, Sender as SnmpSender};
use super::syslog::SyslogSink;
use super::{Notice, NoticeSeverity};
use crate::config::Notify;
use crate::ha::{HaState, JournalEntry, Role};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Events waiting for the sender thread.
const QUEUE: usize = 1024;

/// SNMPv2-MIB::coldStart.
const COLD_START: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 5, 1];

/// One journal entry with the context a notification carries.
#[derive(Debug, Clone)]
pub struct Happened {
    pub entry: JournalEntry,
    pub time_unix: u64,
    pub node: String,
    pub role: Role,
    pub peer_address: Option<String>,
    /// The registration's mail recipients.
    pub emails: Vec<String>,
}

/// What the dispatcher has done, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DispatchStats {
    /// Events dropped because the dispatcher's queue was full.
    pub dropped: u64,
    pub syslog_sent: u64,
    pub syslog_failed: u64,
    pub snmp_sent: u64,
    pub snmp_failed: u64,
    pub mail: MailStats,
}

enum Job {
    Event(Box<Happened>),
    /// `hamon notify test`: send a test through `only` (or every configured channel) now,
    /// and answer with each outcome.
    Test {
        only: Option<Channel>,
        from: Box<Happened>,
        reply: Sender<Vec<TestOutcome>>,
    },
    Stop,
}

/// One receiver's answer to a test notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub channel: Channel,
    /// The receiver: `local`, a collector's address, a trap target, the mail recipients.
    pub to: String,
    pub result: Result<(), String>,
}

impl std::fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(()) => write!(f, "{} to {}: sent", self.channel.as_str(), self.to),
            Err(e) => write!(f, "{} to {}: FAILED: {e}", self.channel.as_str(), self.to),
        }
    }
}

/// The notification sender (see the module documentation).
#[derive(Debug)]
pub struct Dispatcher {
    tx: Sender<Job>,
    dropped: AtomicU64,
    shared: Arc<Mutex<DispatchStats>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// The channels, owned by the sender thread.
struct Channels {
    routing: Routing,
    monitor_url: String,
    mail: Option<Mailer>,
    /// The mail settings, for a test sent at once (the mailer queues and retries).
    mail_cfg: Option<super::mail::MailConfig>,
    syslog: Option<SyslogSink>,
    snmp: Option<(SnmpSender, Vec<snmp::Target>)>,
    started: Instant,
    last_state: Option<HaState>,
}

fn notice_severity_code(s: NoticeSeverity) -> i32 {
    match s {
        NoticeSeverity::Critical => snmp::severity::CRITICAL,
        NoticeSeverity::Major => snmp::severity::MAJOR,
        NoticeSeverity::Minor => snmp::severity::MINOR,
        NoticeSeverity::Warning => snmp::severity::WARNING,
        NoticeSeverity::Info => snmp::severity::INFO,
        NoticeSeverity::Cleared => snmp::severity::CLEARED,
    }
}

fn notification_oid(c: Category) -> &'static [u32] {
    match c {
        Category::StateChange => snmp::HAMON_STATE_CHANGE,
        Category::Failover => snmp::HAMON_FAILOVER,
        Category::Failback => snmp::HAMON_FAILBACK,
        Category::Registration => snmp::HAMON_REGISTRATION,
        Category::PeerLost => snmp::HAMON_PEER_LOST,
        Category::PeerFound => snmp::HAMON_PEER_FOUND,
        Category::Alarm => snmp::HAMON_ALARM,
        Category::AlarmCleared => snmp::HAMON_ALARM_CLEARED,
    }
}

/// The SNMP engine id (made once, kept in `state_dir/snmp-engine-id`) and
/// this start's engine boots (`state_dir/snmp-boots`, one more per start).
fn engine(state_dir: &Path) -> Result<(Vec<u8>, u32), String> {
    let id_path = state_dir.join("snmp-engine-id");
    let id = match std::fs::read_to_string(&id_path) {
        Ok(hex) => crate::peer::auth::unhex(hex.trim())
            .ok_or_else(|| format!("{} is not hex", id_path.display()))?,
        Err(_) => {
            let id = snmp::engine_id_random(snmp::ENTERPRISE).map_err(|e| e.to_string())?;
            crate::store::write_atomic(
                &id_path,
                format!("{}\n", crate::peer::auth::hex(&id)).as_bytes(),
                0o600,
            )
            .map_err(|e| format!("{}: {e}", id_path.display()))?;
            id
        }
    };
    let boots_path = state_dir.join("snmp-boots");
    let boots = std::fs::read_to_string(&boots_path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .saturating_add(1)
        .min(2_147_483_647);
    crate::store::write_atomic(&boots_path, format!("{boots}\n").as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", boots_path.display()))?;
    Ok((id, boots))
}

impl DispatchStats {
    /// `hamon status`'s line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "Notifications: mail {} sent, {} queued, {} dropped; syslog {} sent, {} failed; \
             SNMP {} traps sent, {} failed",
            self.mail.sent,
            self.mail.queued,
            self.mail.dropped,
            self.syslog_sent,
            self.syslog_failed,
            self.snmp_sent,
            self.snmp_failed
        );
        if self.dropped > 0 {
            s.push_str(&format!("; {} events dropped (queue full)", self.dropped));
        }
        if let Some(e) = &self.mail.last_error {
            s.push_str(&format!("; last mail error: {e}"));
        }
        s
    }
}

impl Dispatcher {
    /// Starts the sender thread with the configured channels. `monitor_url`
    /// is this server's Health Monitor page, put in every mail.
    pub fn start(
        cfg: &Notify,
        state_dir: &Path,
        monitor_url: String,
    ) -> Result<Dispatcher, String> {
        let mail = match &cfg.mail {
            Some(m) => Some(Mailer::start(m.clone()).map_err(|e| format!("mail: {e}"))?),
            None => None,
        };
        let syslog = match &cfg.syslog {
            Some(s) => Some(SyslogSink::new(s.clone()).map_err(|e| format!("syslog: {e}"))?),
            None => None,
        };
        let snmp = match &cfg.snmp {
            Some(s) if !s.targets.is_empty() => {
                let (id, boots) = engine(state_dir)?;
                let sender =
                    SnmpSender::new(id, boots, Instant::now()).map_err(|e| format!("snmp: {e}"))?;
                for t in &s.targets {
                    // Hash the passwords now, not on the first trap.
                    sender
                        .prepare(t)
                        .map_err(|e| format!("snmp target {}: {e}", t.addr))?;
                }
                Some((sender, s.targets.clone()))
            }
            _ => None,
        };
        let cold_start = cfg.snmp.as_ref().is_some_and(|s| s.cold_start);
        let mut channels = Channels {
            routing: cfg.routing.clone(),
            monitor_url,
            mail,
            mail_cfg: cfg.mail.clone(),
            syslog,
            snmp,
            started: Instant::now(),
            last_state: None,
        };
        let (tx, rx) = bounded(QUEUE);
        let shared = Arc::new(Mutex::new(DispatchStats::default()));
        let stats = shared.clone();
        let worker = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                if cold_start {
                    channels.cold_start(&stats);
                }
                channels.run(&rx, &stats);
            })
            .map_err(|e| format!("notify thread: {e}"))?;
        Ok(Dispatcher {
            tx,
            dropped: AtomicU64::new(0),
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Hands one event to the sender thread; never blocks.
    pub fn send(&self, h: Happened) {
        match self.tx.try_send(Job::Event(Box::new(h))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a test notification through `only` (or every configured channel) now and
    /// waits for the outcomes (at most `wait`). `from` gives the sender's name, role,
    /// state and the registration's recipients. `Err` when the sender thread is busy
    /// or gone.
    pub fn test(
        &self,
        only: Option<Channel>,
        from: Happened,
        wait: std::time::Duration,
    ) -> Result<Vec<TestOutcome>, String> {
        let (tx, rx) = bounded(1);
        let job = Job::Test {
            only,
            from: Box::new(from),
            reply: tx,
        };
        self.tx
            .send_timeout(job, wait)
            .map_err(|_| "the notification sender is busy or stopped".to_string())?;
        rx.recv_timeout(wait)
            .map_err(|_| format!("no answer from the notification sender within {wait:?}"))
    }

    pub fn stats(&self) -> DispatchStats {
        let mut s = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        s.dropped = self.dropped.load(Ordering::Relaxed);
        s
    }

    /// Sends what is queued (mail gets a short grace), then stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Channels {
    fn uptime(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_millis() / 10).unwrap_or(u32::MAX)
    }

    fn cold_start(&self, stats: &Mutex<DispatchStats>) {
        let n = Notification {
            trap_oid: Oid::from_static(COLD_START),
            varbinds: Vec::new(),
        };
        self.trap(&n, stats);
    }

    fn trap(&self, n: &Notification, stats: &Mutex<DispatchStats>) {
        let Some((sender, targets)) = &self.snmp else {
            return;
        };
        for t in targets {
            let ok = sender.send(t, n, self.uptime()).is_ok();
            if let Ok(mut s) = stats.lock() {
                if ok {
                    s.snmp_sent += 1;
                } else {
                    s.snmp_failed += 1;
                }
            }
        }
    }

    fn run(&mut self, rx: &Receiver<Job>, stats: &Mutex<DispatchStats>) {
        for job in rx {
            match job {
                Job::Event(h) => self.deliver(&h, stats),
                Job::Test { only, from, reply } => {
                    let _ = reply.send(self.test(only, &from));
                }
                Job::Stop => break,
            }
            if let (Some(m), Ok(mut s)) = (&self.mail, stats.lock()) {
                s.mail = m.stats();
            }
        }
        if let Some(m) = self.mail.take() {
            m.stop();
        }
    }

    /// Sends the test notification through each configured channel (`only`: one), at
    /// once, whatever the routing; the counters are left alone.
    fn test(&self, only: Option<Channel>, h: &Happened) -> Vec<TestOutcome> {
        let wanted = |c: Channel| only.is_none_or(|o| o == c);
        let notice = Notice {
            id: "notify_test".into(),
            severity: NoticeSeverity::Info,
            node: h.node.clone(),
            role: h.role.label().to_lowercase(),
            state: h.entry.state.label().to_string(),
            previous_state: None,
            text: super::catalogue::lookup("notify_test").message(&h.entry.text),
            time_unix: h.time_unix,
            peer: h.peer_address.clone(),
            monitor_url: self.monitor_url.clone(),
        };
        let mut out = Vec::new();
        let missing = |c: Channel, section: &str| TestOutcome {
            channel: c,
            to: "-".into(),
            result: Err(format!("not configured (no {section} section)")),
        };
        if wanted(Channel::Syslog) {
            out.push(match &self.syslog {
                Some(s) => TestOutcome {
                    channel: Channel::Syslog,
                    to: s.describe(),
                    result: s.send(&notice).map_err(|e| e.to_string()),
                },
                None => missing(Channel::Syslog, "[notify.syslog]"),
            });
        }
        if wanted(Channel::Mail) {
            out.push(match &self.mail_cfg {
                Some(cfg) => {
                    let mut to = cfg.to.clone();
                    to.extend(h.emails.iter().filter(|e| !cfg.to.contains(e)).cloned());
                    TestOutcome {
                        channel: Channel::Mail,
                        to: if to.is_empty() {
                            "-".into()
                        } else {
                            to.join(", ")
                        },
                        result: super::mail::send_once(cfg, &notice, &h.emails),
                    }
                }
                None => missing(Channel::Mail, "[notify.mail]"),
            });
        }
        if wanted(Channel::Snmp) {
            match &self.snmp {
                Some((sender, targets)) => {
                    let ev = HamonEvent {
                        node_name: h.node.clone(),
                        role: match h.role {
                            Role::Primary => snmp::role::PRIMARY,
                            Role::Secondary => snmp::role::SECONDARY,
                        },
                        state: notice.state.clone(),
                        previous_state: String::new(),
                        severity: notice_severity_code(NoticeSeverity::Info),
                        event_id: super::catalogue::lookup("notify_test").snmp_event_id(),
                        description: notice.text.clone(),
                        peer_address: h.peer_address.clone().unwrap_or_default(),
                    };
                    let n = ev.notification(notification_oid(Category::StateChange));
                    for t in targets {
                        out.push(TestOutcome {
                            channel: Channel::Snmp,
                            to: t.addr.to_string(),
                            result: sender
                                .send(t, &n, self.uptime())
                                .map(drop)
                                .map_err(|e| e.to_string()),
                        });
                    }
                }
                None => out.push(missing(Channel::Snmp, "[notify.snmp] target")),
            }
        }
        out
    }

    fn deliver(&mut self, h: &Happened, stats: &Mutex<DispatchStats>) {
        let e = &h.entry;
        let r = self.routing.resolve(&e.kind, e.severity);
        let previous = self.last_state.filter(|s| *s != e.state);
        self.last_state = Some(e.state);
        let notice = Notice {
            id: r.kind.id.to_string(),
            severity: r.severity,
            node: h.node.clone(),
            role: h.role.label().to_lowercase(),
            state: e.state.label().to_string(),
            previous_state: previous.map(|s| s.label().to_string()),
            text: r.kind.message(&e.text),
            time_unix: h.time_unix,
            peer: h.peer_address.clone(),
            monitor_url: self.monitor_url.clone(),
        };
        if self.routing.wants(Channel::Syslog, &e.kind, r.severity) {
            if let Some(s) = &self.syslog {
                let ok = s.send(&notice).is_ok();
                if let Ok(mut st) = stats.lock() {
                    if ok {
                        st.syslog_sent += 1;
                    } else {
                        st.syslog_failed += 1;
                    }
                }
            }
        }
        if self.routing.wants(Channel::Mail, &e.kind, r.severity) {
            if let Some(m) = &self.mail {
                m.send_to(&notice, &h.emails);
            }
        }
        if self.routing.wants(Channel::Snmp, &e.kind, r.severity) && self.snmp.is_some() {
            let ev = HamonEvent {
                node_name: h.node.clone(),
                role: match h.role {
                    Role::Primary => snmp::role::PRIMARY,
                    Role::Secondary => snmp::role::SECONDARY,
                },
                state: notice.state.clone(),
                previous_state: notice.previous_state.clone().unwrap_or_default(),
                severity: notice_severity_code(r.severity),
                event_id: r.event_id,
                description: notice.text.clone(),
                peer_address: h.peer_address.clone().unwrap_or_default(),
            };
            self.trap(&ev.notification(notification_oid(r.category)), stats);
        }
    }
}
