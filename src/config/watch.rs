//! Validation of what hamon watches: `[[service]]`, `[database]`, `[disk]`
//! and `[nic]`.

use super::raw::{RawDatabase, RawDisk, RawNic, RawService};
use super::{ConfigError, Validator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceHow {
    /// A command hamon spawns and supervises itself.
    Command {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        working_dir: Option<PathBuf>,
        user: Option<String>,
    },
    /// A systemd unit driven through `systemctl`.
    Unit(String),
}

/// `[[service]]`: one of the appliance's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Shown by `hamon status` ("`<name>` is running").
    pub name: String,
    pub how: ServiceHow,
    /// `run_on = "active"` (the default): only on the active server;
    /// `"both"`: on the standby too.
    pub active_only: bool,
    /// A critical service that cannot be restarted fails the active primary.
    pub critical: bool,
    /// Restarts allowed within `restart_window` (default 3 in 60 s).
    pub restart_attempts: u32,
    pub restart_window: Duration,
    /// Delay before the first restart, doubled for each further one (500 ms).
    pub restart_backoff: Duration,
    /// Services started before this one (stopped after it).
    pub after: Vec<String>,
    /// Time between SIGTERM and SIGKILL when stopping (default 10 s).
    pub stop_timeout: Duration,
}

/// `[database]`: is the appliance's database reachable?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub tcp: Option<SocketAddr>,
    pub command: Option<Vec<String>>,
    /// How often the check runs (default 5 s).
    pub interval: Duration,
    /// How long one check may take (default 3 s).
    pub timeout: Duration,
    /// Consecutive failed checks before the database counts as unreachable (2).
    pub failures: u32,
}

/// `[disk]`: free space on the paths that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Paths to check (default: `state_dir`).
    pub paths: Vec<PathBuf>,
    /// How often (default 30 s).
    pub interval: Duration,
    pub warn_used_percent: u8,
    pub critical_used_percent: u8,
    /// 0 turns a free-bytes threshold off.
    pub warn_free_bytes: u64,
    pub critical_free_bytes: u64,
}

/// `[nic]`: network interfaces whose loss matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interfaces watched besides `[node] interface`.
    pub track: Vec<String>,
    /// A link change counts only once it has held this long (default 2 s).
    pub hold: Duration,
}

fn name_ok(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

impl Validator<'_> {
    pub(super) fn services(&self, raw: Vec<RawService>) -> Result<Vec<Service>, ConfigError> {
        let mut out: Vec<Service> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("service[{i}].{k}");
            let name = self.required(&key("name"), r.name)?;
            if !name_ok(&name) {
                return Err(self.invalid(
                    &key("name"),
                    format!("1 to 63 letters, digits, spaces, '-', '_' or '.' (got {name:?})"),
                ));
            }
            if out.iter().any(|s| s.name == name) {
                return Err(self.invalid(&key("name"), format!("{name:?} is used twice")));
            }
            let how = match (r.command, r.unit) {
                (Some(argv), None) => {
                    let argv = self.argv(&key("command"), Some(argv))?.unwrap_or_default();
                    let env = r.env.unwrap_or_default().into_iter().collect();
                    let working_dir = match r.working_dir {
                        Some(d) if d.starts_with('/') => Some(PathBuf::from(d)),
                        Some(d) => {
                            return Err(self.invalid(
                                &key("working_dir"),
                                format!("must be an absolute path (got {d:?})"),
                            ))
                        }
                        None => None,
                    };
                    ServiceHow::Command {
                        argv,
                        env,
                        working_dir,
                        user: r.user,
                    }
                }
                (None, Some(unit)) => {
                    if r.env.is_some() || r.user.is_some() || r.working_dir.is_some() {
                        return Err(self.invalid(
                            &key("unit"),
                            "env, user and working_dir belong in the unit file, not here",
                        ));
                    }
                    if unit.is_empty() || unit.contains(char::is_whitespace) {
                        return Err(
                            self.invalid(&key("unit"), format!("not a unit name: {unit:?}"))
                        );
                    }
                    ServiceHow::Unit(unit)
                }
                _ => {
                    return Err(
                        self.invalid(&key("command"), "give exactly one of command and unit")
                    )
                }
            };
            let active_only = match r.run_on.as_deref().unwrap_or("active") {
                "active" => true,
                "both" => false,
                other => {
                    return Err(self.invalid(
                        &key("run_on"),
                        format!("must be \"active\" or \"both\" (got {other:?})"),
                    ))
                }
            };
            out.push(Service {
                name,
                how,
                active_only,
                critical: r.critical.unwrap_or(false),
                restart_attempts: self.count(
                    &key("restart_attempts"),
                    r.restart_attempts,
                    3,
                    0,
                    1000,
                )?,
                restart_window: Duration::from_secs(self.int(
                    &key("restart_window_secs"),
                    r.restart_window_secs,
                    60,
                    1,
                    Some(86_400),
                )?),
                restart_backoff: self.millis(
                    &key("restart_backoff_ms"),
                    r.restart_backoff_ms,
                    500,
                    0,
                    Some(600_000),
                )?,
                after: r.after.unwrap_or_default(),
                stop_timeout: self.millis(
                    &key("stop_timeout_ms"),
                    r.stop_timeout_ms,
                    10_000,
                    0,
                    Some(600_000),
                )?,
            });
        }
        for (i, s) in out.iter().enumerate() {
            if let Some(a) = s.after.iter().find(|a| !out.iter().any(|o| &o.name == *a)) {
                return Err(self.invalid(
                    &format!("service[{i}].after"),
                    format!("no service is called {a:?}"),
                ));
            }
        }
        Ok(out)
    }

    pub(super) fn database(
        &self,
        raw: Option<RawDatabase>,
    ) -> Result<Option<Database>, ConfigError> {
        let Some(r) = raw else { return Ok(None) };
        let tcp = match r.tcp {
            Some(t) => Some(t.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "database.tcp",
                    format!("must be ADDRESS:PORT, e.g. 127.0.0.1:5432 (got {t:?})"),
                )
            })?),
            None => None,
        };
        let command = self.argv("database.command", r.command)?;
        if tcp.is_none() && command.is_none() {
            return Err(self.invalid("database.tcp", "give tcp, command or both"));
        }
        Ok(Some(Database {
            tcp,
            command,
            interval: self.millis(
                "database.interval_ms",
                r.interval_ms,
                5_000,
                100,
                Some(3_600_000),
            )?,
            timeout: self.millis(
                "database.timeout_ms",
                r.timeout_ms,
                3_000,
                10,
                Some(600_000),
            )?,
            failures: self.count("database.failures", r.failures, 2, 1, 100)?,
        }))
    }

    pub(super) fn disk(
        &self,
        raw: RawDisk,
        state_dir: &std::path::Path,
    ) -> Result<Disk, ConfigError> {
        let paths = match raw.paths {
            None => vec![state_dir.to_path_buf()],
            Some(p) => {
                if let Some(bad) = p.iter().find(|x| !x.starts_with('/')) {
                    return Err(self.invalid(
                        "disk.paths",
                        format!("must be absolute paths (got {bad:?})"),
                    ));
                }
                p.into_iter().map(PathBuf::from).collect()
            }
        };
        let pct = |k: &str, v: Option<i64>, d: u64| -> Result<u8, ConfigError> {
            Ok(self.int(k, v, d, 1, Some(100))? as u8)
        };
        let warn = pct("disk.warn_used_percent", raw.warn_used_percent, 85)?;
        let critical = pct("disk.critical_used_percent", raw.critical_used_percent, 95)?;
        if warn > critical {
            return Err(self.invalid(
                "disk.warn_used_percent",
                format!("must not be above critical_used_percent ({warn} > {critical})"),
            ));
        }
        Ok(Disk {
            paths,
            interval: self.millis(
                "disk.interval_ms",
                raw.interval_ms,
                30_000,
                100,
                Some(3_600_000),
            )?,
            warn_used_percent: warn,
            critical_used_percent: critical,
            warn_free_bytes: self.int("disk.warn_free_bytes", raw.warn_free_bytes, 0, 0, None)?,
            critical_free_bytes: self.int(
                "disk.critical_free_bytes",
                raw.critical_free_bytes,
                0,
                0,
                None,
            )?,
        })
    }

    pub(super) fn nic(&self, raw: RawNic) -> Result<Nic, ConfigError> {
        let track = raw.track.unwrap_or_default();
        if let Some(bad) = track
            .iter()
            .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ']))
        {
            return Err(self.invalid("nic.track", format!("not an interface name: {bad:?}")));
        }
        Ok(Nic {
            track,
            hold: self.millis("nic.hold_ms", raw.hold_ms, 2_000, 0, Some(600_000))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const NODE: &str = "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.11\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{NODE}{extra}"), Path::new("/t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn services_parse_with_defaults_and_order_checks() {
        let c = parse(
            "[[service]]\nname = \"db\"\nunit = \"postgresql.service\"\nrun_on = \"both\"\n\
             [[service]]\nname = \"web\"\ncommand = [\"/usr/bin/web\", \"-p\", \"80\"]\n\
             critical = true\nafter = [\"db\"]\nenv = { MODE = \"prod\" }\n",
        )
        .unwrap();
        assert_eq!(c.services.len(), 2);
        assert!(!c.services[0].active_only && c.services[1].active_only);
        assert!(c.services[1].critical && !c.services[0].critical);
        assert_eq!(c.services[1].restart_attempts, 3);
        assert_eq!(c.services[1].after, ["db"]);
        assert!(
            parse("[[service]]\nname = \"x\"\nafter = [\"nope\"]\nunit = \"x.service\"\n")
                .unwrap_err()
                .contains("service[0].after: no service is called \"nope\"")
        );
        assert!(parse("[[service]]\nname = \"x\"\n")
            .unwrap_err()
            .contains("exactly one of command and unit"));
        assert!(
            parse("[[service]]\nname = \"x\"\nunit = \"u\"\nrun_on = \"standby\"\n")
                .unwrap_err()
                .contains("run_on")
        );
        assert!(parse("[[service]]\nname = \"x\"\ncommand = [\"rel\"]\n")
            .unwrap_err()
            .contains("service[0].command"));
        assert!(parse(
            "[[service]]\nname = \"x\"\nunit = \"u\"\n[[service]]\nname = \"x\"\nunit = \"v\"\n"
        )
        .unwrap_err()
        .contains("used twice"));
    }

    #[test]
    fn watchers_have_documented_defaults_and_checks() {
        let c = parse("").unwrap();
        assert!(c.database.is_none());
        assert_eq!(c.disk.paths, [Path::new("/var/lib/hamon")]);
        assert_eq!(
            (c.disk.warn_used_percent, c.disk.critical_used_percent),
            (85, 95)
        );
        assert_eq!(c.nic.hold.as_millis(), 2000);
        let c = parse("[database]\ntcp = \"127.0.0.1:5432\"\n").unwrap();
        assert_eq!(
            c.database.map(|d| (d.failures, d.interval.as_millis())),
            Some((2, 5000))
        );
        assert!(parse("[database]\n")
            .unwrap_err()
            .contains("give tcp, command or both"));
        assert!(parse("[database]\ntcp = \"localhost\"\n")
            .unwrap_err()
            .contains("database.tcp"));
        assert!(parse("[disk]\nwarn_used_percent = 96\n")
            .unwrap_err()
            .contains("critical_used_percent"));
        assert!(parse("[disk]\npaths = [\"data\"]\n")
            .unwrap_err()
            .contains("disk.paths"));
        assert!(parse("[nic]\ntrack = [\"a/b\"]\n")
            .unwrap_err()
            .contains("nic.track"));
    }
}
