//! Database drivers: what the HA logic may ask of, and do to, the local
//! database of an active/passive pair.
//!
//! [`Database`] is the interface; the drivers are:
//! - [`postgres::Postgres`]: a local PostgreSQL (streaming replication,
//!   `pg_basebackup`, `pg_rewind`, promotion), run through its own tools;
//! - [`command::CommandDb`]: every operation delegated to an operator script;
//! - [`NoneDb`]: no database (health fine, always primary, nothing to do).
//!
//! Every method blocks, and every external program it runs has a deadline.
//! Errors are readable one-line texts.

pub mod command;
pub(crate) mod exec;
pub mod postgres;

use std::fmt;

pub use exec::Account;

/// Where the peer's database listens (TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDb {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PeerDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the local database currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRole {
    /// Accepts writes.
    Primary,
    /// Replays changes from elsewhere (read-only at most).
    Standby,
    /// Not running.
    Down,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Standby => "standby",
            DbRole::Down => "down",
        }
    }

    /// "primary", "standby", "down" (any case, surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<DbRole> {
        match text.trim().to_ascii_lowercase().as_str() {
            "primary" => Some(DbRole::Primary),
            "standby" => Some(DbRole::Standby),
            "down" => Some(DbRole::Down),
            _ => None,
        }
    }
}

impl fmt::Display for DbRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a standby is behind. What exactly the numbers measure is up to
/// the driver; see [`postgres::Postgres`] for PostgreSQL's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Bytes of change stream known to exist but not yet applied locally.
    pub bytes: u64,
    /// Age of the newest applied change, 0 when nothing known is pending;
    /// `None` when it cannot be told (nothing applied yet).
    pub seconds: Option<f64>,
}

/// One local database under HA control.
///
/// Position strings ("LSNs") are opaque to the caller except for being
/// passed back: [`Database::stop_writes`] on one side returns one, and
/// [`Database::caught_up`] on the other side compares against it.
pub trait Database: Send + Sync + fmt::Debug {
    /// The driver's name: "postgres", "command", "none".
    fn name(&self) -> &'static str;
    /// The database is running and answers a trivial query.
    fn health(&self) -> Result<(), String>;
    /// Primary, standby, or down (not running). `Err`: running but the role
    /// cannot be told (not answering, starting up).
    fn role(&self) -> Result<DbRole, String>;
    /// A standby's lag; `None` on a primary.
    fn lag(&self) -> Result<Option<Lag>, String>;
    /// Throw the local data away and rebuild it as a copy of `from`,
    /// running as its standby.
    fn initial_copy(&self, from: &PeerDb) -> Result<(), String>;
    /// Make the local database a running standby of `from`, rewinding a
    /// diverged former primary (or copying afresh when rewinding fails). A
    /// no-op when it already is a standby of `from`.
    fn follow(&self, from: &PeerDb) -> Result<(), String>;
    /// Make the local database a primary (starting it first if it is down).
    /// A no-op when it already is one.
    fn promote(&self) -> Result<(), String>;
    /// Switchover, step 1 on the active side: stop the database cleanly so
    /// that every change has been sent to the standby. Returns the final
    /// position, for [`Database::caught_up`] on the standby.
    fn stop_writes(&self) -> Result<String, String>;
    /// A standby's received position; `None` on a primary.
    fn received(&self) -> Result<Option<String>, String>;
    /// The standby has applied everything up to `lsn`.
    fn caught_up(&self, lsn: &str) -> Result<bool, String>;
    /// Stop the database (a no-op when it is down).
    fn stop(&self) -> Result<(), String>;
    /// The database is down because hamon stopped it (a server that demoted itself), and
    /// no change has started it since: its check does not count that as a failure.
    fn stopped_on_purpose(&self) -> bool {
        false
    }
}

/// A shared driver is a driver (the agent hands one to several threads).
impl<D: Database + ?Sized> Database for std::sync::Arc<D> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn health(&self) -> Result<(), String> {
        (**self).health()
    }
    fn role(&self) -> Result<DbRole, String> {
        (**self).role()
    }
    fn lag(&self) -> Result<Option<Lag>, String> {
        (**self).lag()
    }
    fn initial_copy(&self, from: &PeerDb) -> Result<(), String> {
        (**self).initial_copy(from)
    }
    fn follow(&self, from: &PeerDb) -> Result<(), String> {
        (**self).follow(from)
    }
    fn promote(&self) -> Result<(), String> {
        (**self).promote()
    }
    fn stop_writes(&self) -> Result<String, String> {
        (**self).stop_writes()
    }
    fn received(&self) -> Result<Option<String>, String> {
        (**self).received()
    }
    fn caught_up(&self, lsn: &str) -> Result<bool, String> {
        (**self).caught_up(lsn)
    }
    fn stop(&self) -> Result<(), String> {
        (**self).stop()
    }
    fn stopped_on_purpose(&self) -> bool {
        (**self).stopped_on_purpose()
    }
}

/// No database: healthy, always primary, every action a no-op.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoneDb;

impl Database for NoneDb {
    fn name(&self) -> &'static str {
        "none"
    }
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    fn role(&self) -> Result<DbRole, String> {
        Ok(DbRole::Primary)
    }
    fn lag(&self) -> Result<Option<Lag>, String> {
        Ok(None)
    }
    fn initial_copy(&self, _from: &PeerDb) -> Result<(), String> {
        Ok(())
    }
    fn follow(&self, _from: &PeerDb) -> Result<(), String> {
        Ok(())
    }
    fn promote(&self) -> Result<(), String> {
        Ok(())
    }
    fn stop_writes(&self) -> Result<String, String> {
        Ok("0/0".into())
    }
    fn received(&self) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn caught_up(&self, _lsn: &str) -> Result<bool, String> {
        Ok(true)
    }
    fn stop(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A PostgreSQL log sequence number, "16/B374D848": two hex numbers of at
/// most 8 digits, the high and low 32 bits. Returns the 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// The text form of a 64-bit position: "16/B374D848".
pub fn show_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_driver_is_an_always_primary_no_op() {
        let db: Box<dyn Database> = Box::new(NoneDb);
        let peer = PeerDb {
            host: "127.0.0.1".into(),
            port: 5432,
        };
        assert_eq!(db.name(), "none");
        assert_eq!(db.health(), Ok(()));
        assert_eq!(db.role(), Ok(DbRole::Primary));
        assert_eq!(db.lag(), Ok(None));
        assert_eq!(db.initial_copy(&peer), Ok(()));
        assert_eq!(db.follow(&peer), Ok(()));
        assert_eq!(db.promote(), Ok(()));
        assert_eq!(db.stop_writes(), Ok("0/0".into()));
        assert_eq!(db.received(), Ok(None));
        assert_eq!(db.caught_up("0/0"), Ok(true));
        assert_eq!(db.stop(), Ok(()));
    }

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(" 1/a \n"), Some((1 << 32) | 0xa));
        for bad in [
            "",
            "1",
            "/1",
            "1/",
            "x/1",
            "1/2/3",
            "123456789/0",
            "1/0'; drop",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
        assert_eq!(show_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(show_lsn(0), "0/0");
    }

    #[test]
    fn roles_and_peers_as_text() {
        for r in [DbRole::Primary, DbRole::Standby, DbRole::Down] {
            assert_eq!(
                DbRole::parse(&format!(" {}\n", r.as_str().to_uppercase())),
                Some(r)
            );
        }
        assert_eq!(DbRole::parse("leader"), None);
        let p = PeerDb {
            host: "::1".into(),
            port: 5,
        };
        assert_eq!(p.to_string(), "[::1]:5");
    }
}
