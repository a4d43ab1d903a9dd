//! Syslog notifications: to the local syslog socket (`/dev/log`), and/or to
//! a remote collector over UDP or TCP.
//!
//! Severity mapping: critical→crit, major→err, minor→warning,
//! warning→warning, info→info, cleared→notice. Every message text reads
//! `[<id> <severity>] <text>`, e.g. `[failover_complete critical] took over`.
//!
//! Local messages use the `syslog` crate (its `Formatter3164` over the unix
//! socket, without a host name, as glibc's `syslog(3)` does), so journald and
//! rsyslog file them under the app name.
//!
//! Remote messages are RFC 5424 with the event id as MSGID, the notice's
//! time as TIMESTAMP and its node as HOSTNAME; over UDP one datagram each
//! (RFC 5426), over TCP with RFC 6587 octet-counting framing. Both are
//! formatted here, not by the crate: its `Formatter5424` takes a numeric
//! MSGID (`u32`) and always stamps the current time, and its TCP writer sends
//! messages without any framing, never times out and never reconnects.
//!
//! `send` never blocks for long: UDP and local datagrams do not wait for the
//! receiver (the local socket has a write timeout in case syslog is stuck);
//! TCP connects and writes with [`SyslogConfig::timeout`], drops the
//! connection on any error and reconnects on the next message. After a
//! connect that timed out, TCP sends are skipped for [`TCP_HOLDOFF`].

use super::{rfc3339_utc, Notice, NoticeSeverity};
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use syslog::{Facility, Formatter3164, Logger, LoggerBackend, Severity};

/// The local syslog socket.
pub const DEFAULT_LOCAL_PATH: &str = "/dev/log";
/// Longest UDP message sent (RFC 5426 asks receivers for at least 2048).
pub const MAX_UDP_LEN: usize = 2048;
/// How long TCP sends are skipped after a connect timed out.
pub const TCP_HOLDOFF: Duration = Duration::from_secs(30);

/// Transport to a remote collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProto {
    Udp,
    Tcp,
}

/// Syslog settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Log to the local syslog socket.
    pub local: bool,
    /// The local syslog socket ([`DEFAULT_LOCAL_PATH`]; other paths for tests).
    pub local_path: PathBuf,
    /// A remote collector.
    pub remote: Option<(SyslogProto, SocketAddr)>,
    /// `daemon`, `user`, `local0`..`local7`, ... (case-insensitive).
    pub facility: String,
    /// APP-NAME / tag; `hamon`.
    pub app_name: String,
    /// Bound on a TCP connect or write, and on a local write.
    pub timeout: Duration,
}

impl Default for SyslogConfig {
    /// Local only, facility `daemon`.
    fn default() -> Self {
        SyslogConfig {
            local: true,
            local_path: PathBuf::from(DEFAULT_LOCAL_PATH),
            remote: None,
            facility: "daemon".into(),
            app_name: "hamon".into(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Settings the sink cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("unknown syslog facility {0:?} (use e.g. daemon, user or local0..local7)")]
    Facility(String),
    #[error("the syslog app name must be 1 to 48 printable ASCII characters without spaces")]
    AppName,
    #[error("cannot open a UDP socket for syslog: {0}")]
    Socket(#[source] io::Error),
}

/// Counters since [`SyslogSink::new`], one per message and destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyslogStats {
    pub sent: u64,
    pub failed: u64,
}

/// Sends notices to syslog.
pub struct SyslogSink {
    facility: Facility,
    app_name: String,
    timeout: Duration,
    local: Option<Local>,
    remote: Option<Remote>,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyslogSink")
            .field("facility", &self.facility)
            .field("app_name", &self.app_name)
            .field("local", &self.local.as_ref().map(|l| &l.path))
            .field("remote", &self.remote)
            .finish()
    }
}

struct Local {
    path: PathBuf,
    /// Connected lazily, and again after an error (syslog restarted).
    logger: Mutex<Option<Logger<LoggerBackend, Formatter3164>>>,
}

#[derive(Debug)]
enum Remote {
    Udp {
        socket: UdpSocket,
        addr: SocketAddr,
    },
    Tcp {
        addr: SocketAddr,
        conn: Mutex<TcpConn>,
    },
}

#[derive(Debug, Default)]
struct TcpConn {
    stream: Option<TcpStream>,
    /// No connect attempts before this (after a connect timed out).
    holdoff_until: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The syslog severity for a notice severity.
pub fn syslog_severity(s: NoticeSeverity) -> Severity {
    match s {
        NoticeSeverity::Critical => Severity::LOG_CRIT,
        NoticeSeverity::Major => Severity::LOG_ERR,
        NoticeSeverity::Minor | NoticeSeverity::Warning => Severity::LOG_WARNING,
        NoticeSeverity::Info => Severity::LOG_INFO,
        NoticeSeverity::Cleared => Severity::LOG_NOTICE,
    }
}

/// The syslog facility named `name` (`daemon`, `local3`, `LOG_USER`...).
pub fn parse_facility(name: &str) -> Result<Facility, SyslogError> {
    Facility::from_str(name.trim()).map_err(|()| SyslogError::Facility(name.to_owned()))
}

/// The MSG part: `[<id> <severity>] <text>`, on one line.
pub fn message_text(n: &Notice) -> String {
    let text: String = n
        .text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("[{} {}] {}", header_field(&n.id, 32), n.severity, text)
}

/// `s` as an RFC 5424 header field: printable ASCII without spaces (others
/// become `_`), at most `max` characters, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl SyslogSink {
    /// Checks `cfg`. Sockets to syslog are connected on first use (and again
    /// after errors), so a syslog daemon that starts later is fine.
    pub fn new(cfg: SyslogConfig) -> Result<SyslogSink, SyslogError> {
        let facility = parse_facility(&cfg.facility)?;
        let app_ok = !cfg.app_name.is_empty()
            && cfg.app_name.len() <= 48
            && cfg.app_name.chars().all(|c| c.is_ascii_graphic());
        if !app_ok {
            return Err(SyslogError::AppName);
        }
        let remote = match cfg.remote {
            None => None,
            Some((SyslogProto::Udp, addr)) => {
                let any: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(any).map_err(SyslogError::Socket)?;
                socket.set_nonblocking(true).map_err(SyslogError::Socket)?;
                Some(Remote::Udp { socket, addr })
            }
            Some((SyslogProto::Tcp, addr)) => Some(Remote::Tcp {
                addr,
                conn: Mutex::new(TcpConn::default()),
            }),
        };
        let local = cfg.local.then(|| Local {
            path: cfg.local_path,
            logger: Mutex::new(None),
        });
        Ok(SyslogSink {
            facility,
            app_name: cfg.app_name,
            timeout: cfg.timeout,
            local,
            remote,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Where it sends: `local (PATH)` and the remote collector, for `hamon notify test`.
    pub fn describe(&self) -> String {
        let mut to = Vec::new();
        if let Some(l) = &self.local {
            to.push(format!("local ({})", l.path.display()));
        }
        match &self.remote {
            Some(Remote::Udp { addr, .. }) => to.push(format!("udp://{addr}")),
            Some(Remote::Tcp { addr, .. }) => to.push(format!("tcp://{addr}")),
            None => {}
        }
        if to.is_empty() {
            "-".into()
        } else {
            to.join(" and ")
        }
    }

    /// The RFC 5424 line for `n` (no framing, no trailing newline).
    pub fn format_5424(&self, n: &Notice) -> String {
        let pri = self.facility as u8 | syslog_severity(n.severity) as u8;
        format!(
            "<{pri}>1 {} {} {} {} {} - {}",
            rfc3339_utc(n.time_unix),
            header_field(&n.node, 255),
            self.app_name,
            std::process::id(),
            header_field(&n.id, 32),
            message_text(n)
        )
    }

    /// Sends `n` to every destination. Failures are counted; the last one is
    /// returned (for the caller to log), after all destinations were tried.
    pub fn send(&self, n: &Notice) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(local) = &self.local {
            self.count(self.send_local(local, n), &mut result);
        }
        if let Some(remote) = &self.remote {
            let line = self.format_5424(n);
            let r = match remote {
                Remote::Udp { socket, addr } => {
                    let mut line = line;
                    truncate(&mut line, MAX_UDP_LEN);
                    socket.send_to(line.as_bytes(), addr).map(drop)
                }
                Remote::Tcp { addr, conn } => self.send_tcp(*addr, &mut lock(conn), &line),
            };
            self.count(r, &mut result);
        }
        result
    }

    /// Counters so far.
    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, r: io::Result<()>, result: &mut io::Result<()>) {
        match r {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *result = Err(e);
            }
        }
    }

    fn send_local(&self, local: &Local, n: &Notice) -> io::Result<()> {
        let mut logger = lock(&local.logger);
        let text = message_text(n);
        // Once with the socket we have; once more on a fresh one if that
        // failed (syslog restarted and the old socket went stale).
        let mut last = None;
        for _ in 0..2 {
            if logger.is_none() {
                *logger = Some(self.connect_local(&local.path)?);
            }
            if let Some(l) = logger.as_mut() {
                match log_at(l, n.severity, &text) {
                    Ok(()) => return Ok(()),
                    // Syslog is stuck, not gone: a new socket would not help.
                    Err(e) if is_timeout(&e) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            *logger = None;
        }
        Err(last.unwrap_or_else(|| io::Error::other("local syslog failed")))
    }

    fn connect_local(
        &self,
        path: &std::path::Path,
    ) -> io::Result<Logger<LoggerBackend, Formatter3164>> {
        let formatter = Formatter3164 {
            facility: self.facility,
            hostname: None,
            process: self.app_name.clone(),
            pid: std::process::id(),
        };
        let logger = syslog::unix_custom(formatter, path).map_err(syslog_io)?;
        match &logger.backend {
            LoggerBackend::Unix(s) => s.set_write_timeout(Some(self.timeout))?,
            LoggerBackend::UnixStream(s) => s.get_ref().set_write_timeout(Some(self.timeout))?,
            _ => {}
        }
        Ok(logger)
    }

    fn send_tcp(&self, addr: SocketAddr, conn: &mut TcpConn, line: &str) -> io::Result<()> {
        // RFC 6587 3.4.1 octet counting: "<length> <message>".
        let frame = format!("{} {line}", line.len());
        let mut last = None;
        for _ in 0..2 {
            if conn.stream.as_ref().is_some_and(|s| !still_open(s)) {
                conn.stream = None;
            }
            if conn.stream.is_none() {
                if conn.holdoff_until.is_some_and(|t| Instant::now() < t) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "syslog collector unreachable; waiting before reconnecting",
                    ));
                }
                conn.stream = Some(self.connect_tcp(addr, conn)?);
            }
            if let Some(s) = conn.stream.as_mut() {
                match s.write_all(frame.as_bytes()) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        // A half-written frame would garble the stream: start
                        // over. Try a new connection at once unless the
                        // collector is merely slow.
                        conn.stream = None;
                        if is_timeout(&e) {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot write to the syslog collector")))
    }

    fn connect_tcp(&self, addr: SocketAddr, conn: &mut TcpConn) -> io::Result<TcpStream> {
        let s = match TcpStream::connect_timeout(&addr, self.timeout) {
            Ok(s) => s,
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    conn.holdoff_until = Some(Instant::now() + TCP_HOLDOFF);
                }
                return Err(e);
            }
        };
        conn.holdoff_until = None;
        s.set_write_timeout(Some(self.timeout))?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether the collector has not closed its end (it never sends, so
/// readable means closed or reset).
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 1];
    let open = matches!(s.peek(&mut buf), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).is_ok() && open
}

fn log_at(
    l: &mut Logger<LoggerBackend, Formatter3164>,
    severity: NoticeSeverity,
    text: &str,
) -> io::Result<()> {
    let r = match syslog_severity(severity) {
        Severity::LOG_CRIT => l.crit(text),
        Severity::LOG_ERR => l.err(text),
        Severity::LOG_WARNING => l.warning(text),
        Severity::LOG_NOTICE => l.notice(text),
        Severity::LOG_INFO => l.info(text),
        Severity::LOG_EMERG => l.emerg(text),
        Severity::LOG_ALERT => l.alert(text),
        Severity::LOG_DEBUG => l.debug(text),
    };
    r.map_err(syslog_io)
}

fn syslog_io(e: syslog::Error) -> io::Error {
    match e {
        syslog::Error::Io(e) | syslog::Error::Write(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(severity: NoticeSeverity) -> Notice {
        Notice {
            id: "peer_lost".into(),
            severity,
            node: "alpha".into(),
            role: "primary".into(),
            state: "active".into(),
            previous_state: None,
            text: "no beacon\nfrom beta".into(),
            time_unix: 1_709_294_400,
            peer: Some("beta".into()),
            monitor_url: "https://alpha/".into(),
        }
    }

    fn sink(facility: &str) -> SyslogSink {
        SyslogSink::new(SyslogConfig {
            local: false,
            facility: facility.into(),
            ..SyslogConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn pri_is_facility_times_8_plus_severity() {
        let cases = [
            (NoticeSeverity::Critical, 2),
            (NoticeSeverity::Major, 3),
            (NoticeSeverity::Minor, 4),
            (NoticeSeverity::Warning, 4),
            (NoticeSeverity::Info, 6),
            (NoticeSeverity::Cleared, 5),
        ];
        for (facility, code) in [("daemon", 3u8), ("local0", 16), ("LOCAL7", 23)] {
            let s = sink(facility);
            for (sev, num) in cases {
                let line = s.format_5424(&notice(sev));
                let want = format!("<{}>1 ", code * 8 + num);
                assert!(line.starts_with(&want), "{line} vs {want}");
            }
        }
    }

    #[test]
    fn rfc5424_fields() {
        let line = sink("daemon").format_5424(&notice(NoticeSeverity::Major));
        let pid = std::process::id();
        assert_eq!(
            line,
            format!(
                "<27>1 2024-03-01T12:00:00Z alpha hamon {pid} peer_lost - \
                 [peer_lost major] no beacon from beta"
            )
        );
    }

    #[test]
    fn bad_settings() {
        let bad = |c: SyslogConfig| SyslogSink::new(c).is_err();
        assert!(bad(SyslogConfig {
            facility: "local8".into(),
            ..SyslogConfig::default()
        }));
        assert!(bad(SyslogConfig {
            app_name: "ha mon".into(),
            ..SyslogConfig::default()
        }));
        assert!(!bad(SyslogConfig::default()));
    }

    #[test]
    fn header_fields_are_sanitised() {
        assert_eq!(header_field("", 32), "-");
        assert_eq!(header_field("a b\u{e9}", 32), "a_b_");
        assert_eq!(header_field(&"x".repeat(40), 32).len(), 32);
        let mut s = "\u{e9}\u{e9}".to_string();
        truncate(&mut s, 3);
        assert_eq!(s, "\u{e9}");
    }
}
