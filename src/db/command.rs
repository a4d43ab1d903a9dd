//! The command driver: every operation runs one operator script.
//!
//! The script (`argv`, run directly, not through a shell) learns what to do
//! from its environment:
//! - `HAMON_DB_OP`: `health`, `role`, `lag`, `initial_copy`, `follow`,
//!   `promote`, `stop_writes`, `received`, `caught_up` or `stop`;
//! - `HAMON_PEER_HOST`, `HAMON_PEER_PORT`: for `initial_copy` and `follow`;
//! - `HAMON_DB_LSN`: for `caught_up`.
//!
//! Exit status 0 is success; otherwise the operation fails with the last
//! lines of stderr (or stdout) as the reason. Answers are read from stdout:
//! - `role`: `primary`, `standby` or `down`;
//! - `lag`: empty or `none` for no lag (a primary), else `BYTES` or
//!   `BYTES SECONDS` (seconds may be fractional);
//! - `stop_writes`: the final position (any non-empty word);
//! - `received`: empty or `none` on a primary, else the position;
//! - `caught_up`: `yes`/`true`/`1` or `no`/`false`/`0`.
//!
//! The script runs with a clean environment (PATH, HOME, LC_ALL=C and the
//! variables above) in a process group of its own that is killed at the
//! operation's deadline: `copy_timeout` for `initial_copy` and `follow`,
//! `timeout` for everything else.

use std::path::Path;
use std::time::Duration;

use super::exec;
use super::{Database, DbRole, Lag, PeerDb};

/// Settings of the command driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// Program and arguments.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Limit for `initial_copy` and `follow`.
    pub copy_timeout: Duration,
}

/// The command driver. See the module documentation.
#[derive(Debug, Clone)]
pub struct CommandDb {
    cfg: CommandConfig,
}

impl CommandDb {
    pub fn new(cfg: CommandConfig) -> Result<CommandDb, String> {
        if cfg.argv.first().is_none_or(|p| p.is_empty()) {
            return Err("database command is empty".into());
        }
        Ok(CommandDb { cfg })
    }

    /// Run the script for `op`: its trimmed stdout on exit status 0.
    fn call(&self, op: &str, env: &[(&str, String)]) -> Result<String, String> {
        let Some((program, args)) = self.cfg.argv.split_first() else {
            return Err("database command is empty".into());
        };
        let mut cmd = exec::command(Path::new(program), None);
        cmd.args(args).env("HAMON_DB_OP", op);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let timeout = match op {
            "initial_copy" | "follow" => self.cfg.copy_timeout,
            _ => self.cfg.timeout,
        };
        let out = exec::run(&mut cmd, timeout).map_err(|e| format!("{op}: {e}"))?;
        let name = exec::program_name(&cmd);
        out.into_stdout(&name)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{op}: {e}"))
    }

    fn call_peer(&self, op: &str, peer: &PeerDb) -> Result<(), String> {
        self.call(
            op,
            &[
                ("HAMON_PEER_HOST", peer.host.clone()),
                ("HAMON_PEER_PORT", peer.port.to_string()),
            ],
        )
        .map(drop)
    }
}

fn is_none(text: &str) -> bool {
    text.is_empty() || text.eq_ignore_ascii_case("none")
}

/// "BYTES" or "BYTES SECONDS"; empty or "none" is no lag.
fn parse_lag(text: &str) -> Result<Option<Lag>, String> {
    if is_none(text) {
        return Ok(None);
    }
    let bad = || format!("lag: cannot understand {text:?} (want BYTES [SECONDS])");
    let mut words = text.split_whitespace();
    let bytes = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let seconds = match words.next() {
        None => None,
        Some(s) => {
            let v: f64 = s.parse().map_err(|_| bad())?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad());
            }
            Some(v)
        }
    };
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(Some(Lag { bytes, seconds }))
}

impl Database for CommandDb {
    fn name(&self) -> &'static str {
        "command"
    }

    fn health(&self) -> Result<(), String> {
        self.call("health", &[]).map(drop)
    }

    fn role(&self) -> Result<DbRole, String> {
        let text = self.call("role", &[])?;
        DbRole::parse(&text).ok_or_else(|| {
            format!("role: cannot understand {text:?} (want primary, standby or down)")
        })
    }

    fn lag(&self) -> Result<Option<Lag>, String> {
        parse_lag(&self.call("lag", &[])?)
    }

    fn initial_copy(&self, from: &PeerDb) -> Result<(), String> {
        self.call_peer("initial_copy", from)
    }

    fn follow(&self, from: &PeerDb) -> Result<(), String> {
        self.call_peer("follow", from)
    }

    fn promote(&self) -> Result<(), String> {
        self.call("promote", &[]).map(drop)
    }

    fn stop_writes(&self) -> Result<String, String> {
        let text = self.call("stop_writes", &[])?;
        if text.is_empty() || text.split_whitespace().count() != 1 {
            return Err(format!("stop_writes: want one position, got {text:?}"));
        }
        Ok(text)
    }

    fn received(&self) -> Result<Option<String>, String> {
        let text = self.call("received", &[])?;
        Ok((!is_none(&text)).then_some(text))
    }

    fn caught_up(&self, lsn: &str) -> Result<bool, String> {
        let text = self.call("caught_up", &[("HAMON_DB_LSN", lsn.to_string())])?;
        match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Ok(true),
            "no" | "false" | "0" => Ok(false),
            _ => Err(format!(
                "caught_up: cannot understand {text:?} (want yes or no)"
            )),
        }
    }

    fn stop(&self) -> Result<(), String> {
        self.call("stop", &[]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A driver whose script is `script` for /bin/sh.
    fn sh(script: &str) -> CommandDb {
        CommandDb::new(CommandConfig {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(5),
            copy_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    const SCRIPT: &str = r#"
case "$HAMON_DB_OP" in
  health) exit 0 ;;
  role) echo standby ;;
  lag) echo "1024 0.5" ;;
  received) echo 0/3000060 ;;
  stop_writes) echo 0/3000028 ;;
  caught_up) [ "$HAMON_DB_LSN" = 0/3000028 ] && echo yes || echo no ;;
  follow|initial_copy) [ "$HAMON_PEER_HOST:$HAMON_PEER_PORT" = "127.0.0.5:5433" ] || { echo "bad peer" >&2; exit 1; } ;;
  promote|stop) : ;;
  *) echo "unknown op $HAMON_DB_OP" >&2; exit 2 ;;
esac
"#;

    #[test]
    fn operations_and_answers() {
        let db = sh(SCRIPT);
        let peer = PeerDb {
            host: "127.0.0.5".into(),
            port: 5433,
        };
        assert_eq!(db.name(), "command");
        assert_eq!(db.health(), Ok(()));
        assert_eq!(db.role(), Ok(DbRole::Standby));
        assert_eq!(
            db.lag(),
            Ok(Some(Lag {
                bytes: 1024,
                seconds: Some(0.5)
            }))
        );
        assert_eq!(db.received(), Ok(Some("0/3000060".into())));
        assert_eq!(db.stop_writes(), Ok("0/3000028".into()));
        assert_eq!(db.caught_up("0/3000028"), Ok(true));
        assert_eq!(db.caught_up("0/3"), Ok(false));
        assert_eq!(db.follow(&peer), Ok(()));
        assert_eq!(db.initial_copy(&peer), Ok(()));
        let other = PeerDb {
            host: "127.0.0.6".into(),
            port: 1,
        };
        assert_eq!(
            db.follow(&other),
            Err("follow: sh exited with status 1: bad peer".into())
        );
        assert_eq!(db.promote(), Ok(()));
        assert_eq!(db.stop(), Ok(()));
    }

    #[test]
    fn bad_answers_are_errors() {
        let db = sh("echo leader");
        assert!(db
            .role()
            .unwrap_err()
            .contains("cannot understand \"leader\""));
        assert!(db.lag().unwrap_err().contains("want BYTES"));
        assert!(db.caught_up("0/1").unwrap_err().contains("want yes or no"));
        assert_eq!(sh("echo none").received(), Ok(None));
        assert_eq!(sh("true").lag(), Ok(None));
        assert!(sh("true").stop_writes().is_err());
        assert!(CommandDb::new(CommandConfig {
            argv: vec![],
            timeout: Duration::from_secs(1),
            copy_timeout: Duration::from_secs(1),
        })
        .is_err());
    }

    #[test]
    fn lag_text() {
        assert_eq!(
            parse_lag("7"),
            Ok(Some(Lag {
                bytes: 7,
                seconds: None
            }))
        );
        assert_eq!(parse_lag("none"), Ok(None));
        for bad in ["x", "1 2 3", "-1", "1 -2", "1 nan"] {
            assert!(parse_lag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hanging_script_times_out() {
        let mut db = sh("sleep 5");
        db.cfg.timeout = Duration::from_millis(200);
        let started = Instant::now();
        assert_eq!(db.health(), Err("health: sh timed out after 200ms".into()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
