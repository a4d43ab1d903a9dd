//! Validation of what hamon watches: `[[service]]`, `[database]`, `[disk]`
//! and `[nic]`.

use super::raw::{RawDatabase, RawDisk, RawNic, RawPostgres, RawService};
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

/// Which database driver replicates the appliance's database.
#[derive(Debug, Clone, PartialEq)]
pub enum DbDriver {
    /// No database: only files are replicated.
    None,
    /// PostgreSQL streaming replication, driven through its own tools.
    Postgres(Box<crate::db::postgres::PgConfig>),
    /// An operator script for any other database.
    Command(crate::db::command::CommandConfig),
}

/// `[database]`: is the appliance's database reachable, and how is it replicated?
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub driver: DbDriver,
    /// Automatic failover promotes only a standby at most this far behind (16 MiB).
    pub max_failover_lag_bytes: u64,
    /// The peer's database port (default: the same as ours).
    pub peer_port: Option<u16>,
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
        // One limit for the check and for the command driver's short operations.
        let timeout = self.millis(
            "database.timeout_ms",
            r.timeout_ms,
            3_000,
            10,
            Some(600_000),
        )?;
        let copy_timeout = self.millis(
            "database.copy_timeout_ms",
            r.copy_timeout_ms,
            4 * 3_600_000,
            1_000,
            Some(48 * 3_600_000),
        )?;
        let driver = match r.driver.as_deref() {
            None | Some("none") => DbDriver::None,
            Some("postgres") => DbDriver::Postgres(Box::new(
                self.postgres(r.postgres.unwrap_or_default(), copy_timeout)?,
            )),
            Some("command") => match self.argv("database.ops", r.ops)? {
                Some(argv) => DbDriver::Command(crate::db::command::CommandConfig {
                    argv,
                    timeout,
                    copy_timeout,
                }),
                None => {
                    return Err(self.invalid(
                        "database.ops",
                        "the command driver needs ops = [\"/path/to/script\", ...]",
                    ))
                }
            },
            Some(other) => {
                return Err(self.invalid(
                    "database.driver",
                    format!("must be \"postgres\", \"command\" or \"none\" (got {other:?})"),
                ))
            }
        };
        if tcp.is_none() && command.is_none() && driver == DbDriver::None {
            return Err(self.invalid(
                "database.tcp",
                "give tcp, command, a driver, or a combination",
            ));
        }
        let peer_port = match r.peer_port {
            Some(_) => Some(self.port("database.peer_port", r.peer_port, 5432)?),
            None => None,
        };
        Ok(Some(Database {
            driver,
            max_failover_lag_bytes: self.int(
                "database.max_failover_lag_bytes",
                r.max_failover_lag_bytes,
                16 * 1024 * 1024,
                0,
                None,
            )?,
            peer_port,
            tcp,
            command,
            interval: self.millis(
                "database.interval_ms",
                r.interval_ms,
                5_000,
                100,
                Some(3_600_000),
            )?,
            timeout,
            failures: self.count("database.failures", r.failures, 2, 1, 100)?,
        }))
    }

    fn postgres(
        &self,
        r: RawPostgres,
        copy_timeout: Duration,
    ) -> Result<crate::db::postgres::PgConfig, ConfigError> {
        let key = |k: &str| format!("database.postgres.{k}");
        let data_dir = self.required(&key("data_dir"), r.data_dir)?;
        let port = self.port(&key("port"), r.port, 5432)?;
        let mut c = crate::db::postgres::PgConfig::new(
            self.absolute_dir(&key("data_dir"), Some(data_dir), "/")?,
            port,
        );
        if let Some(d) = r.bin_dir {
            c.bin_dir = self.absolute_dir(&key("bin_dir"), Some(d), "/")?;
        }
        if let Some(f) = r.config_file {
            c.config_file = Some(self.absolute_dir(&key("config_file"), Some(f), "/")?);
        }
        if let Some(f) = r.log_file {
            c.log_file = self.absolute_dir(&key("log_file"), Some(f), "/")?;
        }
        if let Some(d) = r.socket_dir {
            c.socket_dir = self.absolute_dir(&key("socket_dir"), Some(d), "/")?;
        }
        if let Some(f) = r.passfile {
            c.passfile = self.absolute_dir(&key("passfile"), Some(f), "/")?;
        }
        if let Some(tls) = r.tls {
            c.tls = tls;
        }
        if let Some(synchronous) = r.synchronous {
            c.synchronous = synchronous;
        }
        // pg_ctl runs the server through /bin/sh with these paths inside
        // double quotes, where `$`, a backquote or `"` would be the shell's:
        // only plain path characters are accepted.
        let mut paths = vec![
            ("data_dir", c.data_dir.clone()),
            ("log_file", c.log_file.clone()),
            ("socket_dir", c.socket_dir.clone()),
            ("bin_dir", c.bin_dir.clone()),
        ];
        paths.extend(c.config_file.clone().map(|f| ("config_file", f)));
        for (k, path) in paths {
            let plain = path.to_str().is_some_and(|p| {
                p.chars().all(|ch| {
                    ch.is_ascii_alphanumeric()
                        || matches!(ch, '/' | '.' | '_' | '-' | '+' | '@' | ',')
                })
            });
            if !plain {
                return Err(self.invalid(
                    &key(k),
                    format!(
                        "may hold only letters, digits and / . _ - + @ , (the server is started \
                         through a shell; got {:?})",
                        path.display().to_string()
                    ),
                ));
            }
        }
        let word = |k: &str, v: Option<String>, into: &mut String| -> Result<(), ConfigError> {
            if let Some(v) = v {
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    return Err(self.invalid(
                        &key(k),
                        format!("1 to 63 letters, digits, '_', '-' or '.' (got {v:?})"),
                    ));
                }
                *into = v;
            }
            Ok(())
        };
        word("os_user", r.os_user, &mut c.os_user)?;
        word("superuser", r.superuser, &mut c.superuser)?;
        word("dbname", r.dbname, &mut c.dbname)?;
        word(
            "replication_user",
            r.replication_user,
            &mut c.replication_user,
        )?;
        if let Some(slot) = r.slot {
            let ok = (1..=63).contains(&slot.len())
                && slot
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(self.invalid(
                    &key("slot"),
                    format!("1 to 63 lowercase letters, digits or '_' (got {slot:?})"),
                ));
            }
            c.slot = slot;
        }
        if let Some(l) = r.listen {
            if l.is_empty() || l.contains(['\'', '\0', '\n']) {
                return Err(self.invalid(&key("listen"), "addresses, comma-separated"));
            }
            c.listen = l;
        }
        c.timeout = self.millis(&key("timeout_ms"), r.timeout_ms, 10_000, 100, Some(600_000))?;
        c.start_timeout = self.millis(
            &key("start_timeout_ms"),
            r.start_timeout_ms,
            60_000,
            1_000,
            Some(3_600_000),
        )?;
        c.copy_timeout = copy_timeout;
        Ok(c)
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
            .contains("give tcp, command, a driver"));
        let pg = parse(
            "[database]\ndriver = \"postgres\"\nmax_failover_lag_bytes = 1024\n\
             [database.postgres]\ndata_dir = \"/var/lib/postgresql/15/main\"\nport = 5433\n\
             slot = \"hamon_b\"\npassfile = \"/etc/hamon/pgpass\"\n",
        )
        .unwrap()
        .database
        .unwrap();
        assert_eq!(pg.max_failover_lag_bytes, 1024);
        match pg.driver {
            super::DbDriver::Postgres(c) => {
                assert_eq!(c.port, 5433);
                assert!(c.tls, "TLS to the peer's cluster by default");
                assert!(!c.synchronous, "asynchronous replication by default");
                assert_eq!(c.slot, "hamon_b");
                assert_eq!(c.passfile, Path::new("/etc/hamon/pgpass"));
                assert_eq!(c.bin_dir, Path::new("/usr/lib/postgresql/15/bin"));
            }
            other => panic!("expected postgres, got {other:?}"),
        }
        for (text, words) in [
            ("driver = \"mysql\"", "database.driver"),
            ("driver = \"postgres\"", "database.postgres.data_dir"),
            ("driver = \"command\"", "database.ops"),
            (
                "driver = \"postgres\"\n[database.postgres]\ndata_dir = \"/d\"\nslot = \"Bad-Slot\"",
                "database.postgres.slot",
            ),
            (
                "driver = \"postgres\"\n[database.postgres]\ndata_dir = \"/d/$(touch /tmp/x)\"",
                "database.postgres.data_dir",
            ),
            (
                "driver = \"postgres\"\n[database.postgres]\ndata_dir = \"/d\"\n\
                 log_file = \"/var/log/pg `id`.log\"",
                "database.postgres.log_file",
            ),
            (
                "driver = \"postgres\"\n[database.postgres]\ndata_dir = \"/d\"\n\
                 socket_dir = \"/run/pg\\\"x\"",
                "database.postgres.socket_dir",
            ),
        ] {
            let e = parse(&format!("[database]\n{text}\n")).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
        // The database's TLS serves the Health Monitor's certificate.
        let pg = "[database]\ndriver = \"postgres\"\n[database.postgres]\ndata_dir = \"/d\"\n";
        let e = parse(&format!("[health_monitor]\ntls = false\n{pg}")).unwrap_err();
        assert!(e.contains("database.postgres.tls"), "{e}");
        assert!(parse(&format!("[health_monitor]\ntls = false\n{pg}tls = false\n")).is_ok());
        let sync = parse(&format!("{pg}synchronous = true\n"))
            .unwrap()
            .database
            .unwrap();
        assert!(matches!(sync.driver, super::DbDriver::Postgres(c) if c.synchronous));
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
