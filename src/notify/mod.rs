//! Notifications: each HA event becomes a [`Notice`], which the agent hands
//! to the configured sinks (mail, syslog). Sinks never block the caller for
//! long: mail is queued for a background thread, syslog is a single datagram
//! or a write with a short timeout.

pub mod catalogue;
pub mod dispatch;
pub mod mail;
pub mod snmp;
pub mod syslog;

use std::fmt;

/// How serious an event is (the alarm levels of ITU-T X.733, which is what
/// network management systems expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeSeverity {
    Critical,
    Major,
    Minor,
    Warning,
    Info,
    /// A condition reported earlier has gone away.
    Cleared,
}

impl NoticeSeverity {
    /// Lower-case name, as shown in mail and syslog (`critical`, `major`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeSeverity::Critical => "critical",
            NoticeSeverity::Major => "major",
            NoticeSeverity::Minor => "minor",
            NoticeSeverity::Warning => "warning",
            NoticeSeverity::Info => "info",
            NoticeSeverity::Cleared => "cleared",
        }
    }
}

impl fmt::Display for NoticeSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HA event, as told to the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Stable id of the kind of event, e.g. `failover_complete`.
    pub id: String,
    pub severity: NoticeSeverity,
    /// This server's name.
    pub node: String,
    /// This server's role (e.g. `primary`).
    pub role: String,
    /// The HA state once the event happened.
    pub state: String,
    /// The HA state before, when the event is a change of state.
    pub previous_state: Option<String>,
    /// One-line human description.
    pub text: String,
    /// When it happened, seconds since the Unix epoch.
    pub time_unix: u64,
    /// The peer's name, when one is known.
    pub peer: Option<String>,
    /// This server's Health Monitor page.
    pub monitor_url: String,
}

/// `time_unix` as RFC 3339 UTC, e.g. `2024-03-01T12:00:00Z`.
pub fn rfc3339_utc(time_unix: u64) -> String {
    let days = time_unix / 86_400;
    let secs = time_unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `time_unix` as ISO 8601 in this machine's local time zone with its offset, e.g.
/// `2024-03-01T13:00:00+01:00` (UTC, `...Z`, when the zone cannot be read).
pub fn iso8601_local(time_unix: u64) -> String {
    let Ok(t) = libc::time_t::try_from(time_unix) else {
        return rfc3339_utc(time_unix);
    };
    // SAFETY: localtime_r only writes the `tm` it is given, which is ours and zeroed; no
    // crate on our card (nix, libc wrappers) offers the time zone conversion, and the
    // zone database is the system's, as the operator set it.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return rfc3339_utc(time_unix);
        }
        tm
    };
    let off = tm.tm_gmtoff;
    if off == 0 {
        return rfc3339_utc(time_unix);
    }
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 3600,
        off / 60 % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, unsigned form).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// This machine's host name (from the kernel), if it has a usable one.
pub(crate) fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_294_400), "2024-03-01T12:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(1_234_567_890), "2009-02-13T23:31:30Z");
    }

    #[test]
    fn sinks_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<mail::Mailer>();
        shared::<syslog::SyslogSink>();
    }

    #[test]
    fn severity_names() {
        assert_eq!(NoticeSeverity::Cleared.to_string(), "cleared");
        assert_eq!(NoticeSeverity::Critical.as_str(), "critical");
    }
}
