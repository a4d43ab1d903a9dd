//! hamon's configuration file: finding it, reading it and validating it.
//!
//! The file is TOML (see `docs/hamon.example.toml`). Loading happens in two
//! steps, in the style of ripgrep's raw/validated arguments:
//!
//! 1. serde reads the text into the structs of `raw`, which mirror the file
//!    key for key, reject unknown keys and wrong value types, and leave every
//!    key optional;
//! 2. [`Config::parse`] checks required keys, ranges and formats, fills in
//!    defaults, and builds a [`Config`] of typed, non-optional values.
//!
//! Every error names the file; a validation error also names the dotted key
//! (such as `heartbeat.interval_ms`) and says what is wrong with it, and a
//! TOML or type error gives the line and column where toml found it.

mod arbiter;
mod notify;
mod raw;
mod replication;
pub mod sandbox;
pub mod seed;
mod watch;

pub use arbiter::{endpoint, Arbiter, Endpoint};
pub use notify::{Notify, Snmp};
pub use replication::{Replication, SyncClass, SyncSet};
pub use watch::{Database, DbDriver, Disk, Nic, Service, ServiceHow};

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::{RawConfig, RawFailback, RawHealthMonitor, RawHeartbeat, RawHooks, RawLog, RawNode};

/// Where the configuration file is read from when neither `--config` nor
/// [`ENV_VAR`] names another.
pub const DEFAULT_PATH: &str = "/etc/hamon/hamon.toml";

/// The environment variable that, when set and non-empty, names the
/// configuration file (a `--config` argument still takes precedence).
pub const ENV_VAR: &str = "HAMON_CONFIG";

/// The file name of the control socket inside [`Node::run_dir`].
pub const SOCKET_NAME: &str = "hamon.sock";

const DEFAULT_STATE_DIR: &str = "/var/lib/hamon";
const DEFAULT_RUN_DIR: &str = "/run/hamon";
const DEFAULT_HEARTBEAT_PORT: u64 = 8083;
const DEFAULT_INTERVAL_MS: u64 = 5_000;
const DEFAULT_MISSED: u64 = 3;
const DEFAULT_GRACE_MS: u64 = 10_000;
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 3_000;
const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 30_000;
const DEFAULT_HEALTH_MONITOR_PORT: u64 = 8082;
const DEFAULT_TLS: bool = true;
const DEFAULT_DATA_GAP_HOURS: u64 = 24;
const DEFAULT_COPY_RETRY_MS: u64 = 300_000;
const DEFAULT_BURST_COUNT: u64 = 5;
const DEFAULT_BURST_GAP_MS: u64 = 200;
const DEFAULT_HOOK_TIMEOUT_MS: u64 = 60_000;

const NODE_NAME_MAX: usize = 63;
/// Linux's IFNAMSIZ (16) less the terminating NUL.
const INTERFACE_MAX: usize = 15;
const SECONDS_PER_HOUR: u64 = 3_600;

const NODE_NAME_RULE: &str = "must be 1 to 63 characters, each a letter, digit, '.', '_' or '-'";
const ADDRESS_RULE: &str = "must be an IPv4 or IPv6 address literal, without brackets or port";
const INTERFACE_RULE: &str =
    "must be a network interface name of 1 to 15 bytes, with no '/' or whitespace";

/// This server's part in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Normally runs the service.
    Primary,
    /// Stands by and takes over when the primary fails.
    Secondary,
}

impl Role {
    /// The spelling used in the configuration file: `primary` or `secondary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much hamon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and notable events.
    Info,
    /// Everything, for debugging.
    Trace,
}

impl LogLevel {
    /// The spelling used in the configuration file: `error`, `info` or `trace`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Info => "info",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (as given, not canonicalized).
    pub path: PathBuf,
    /// `[node]`: who this server is.
    pub node: Node,
    /// `[heartbeat]`: how the peer's liveness is checked.
    pub heartbeat: Heartbeat,
    /// `[health_monitor]`: the health monitor endpoint.
    pub health_monitor: HealthMonitor,
    /// `[failback]`: returning service to a recovered primary.
    pub failback: Failback,
    /// `[hooks]`: operator commands.
    pub hooks: Hooks,
    /// `[log]`: logging.
    pub log: Log,
    /// `[vip]`: how the virtual IP is announced.
    pub vip: Vip,
    /// `[[service]]`: the appliance's services, supervised by hamon.
    pub services: Vec<Service>,
    /// `[database]`: the database health check, if any.
    pub database: Option<Database>,
    /// `[disk]`: free-space thresholds.
    pub disk: Disk,
    /// `[nic]`: interfaces watched besides the HA interface.
    pub nic: Nic,
    /// `[replication]` and `[[sync]]`: what is copied to the standby, and how often.
    pub replication: Replication,
    /// `[notify]`: mail, syslog and SNMP receivers of HA events.
    pub notify: Notify,
    /// `[witness]`: a third party both servers can reach, if any.
    pub witness: Option<Witness>,
    /// `[fencing]`: how the peer is fenced before a takeover, if it is.
    pub fencing: Option<Fencing>,
    /// `[arbiter]`: the etcd lease that decides which server may be active, if any.
    pub arbiter: Option<Arbiter>,
}

/// `[fencing]`: a command that fences the peer (a BMC's power off), run by the server
/// about to take over, which waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fencing {
    /// argv; the peer's node address is in `HAMON_PEER`.
    pub command: Vec<String>,
    /// How long it may run, 100 ms to 10 min (default 30 s).
    pub timeout: Duration,
    /// A failed fencing lets the takeover go ahead (`on_failure = "proceed"`) instead of
    /// withholding it (`"withhold"`, the default).
    pub proceed_on_failure: bool,
}

/// `[witness]`: a third party both servers can reach (the gateway, say), checked by ICMP
/// echo. A secondary that cannot reach it does not take over; a primary of an automatic
/// pair that can reach neither it nor its peer releases the active role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub address: IpAddr,
    /// Time between two echo requests, each also the time its reply may take; 10 ms to
    /// 1 min (default: the heartbeat interval).
    pub interval: Duration,
    /// Unanswered requests in a row before it counts as unreachable, 1 to 100 (default:
    /// `heartbeat.missed`).
    pub missed: u32,
}

/// `[vip]`: announcing the virtual IP on takeover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// Gratuitous ARP / unsolicited NA rounds sent on takeover, 1 to 100 (default 5).
    pub burst_count: u32,
    /// Time between rounds, 0 to 10 s (default 200 ms).
    pub burst_gap: Duration,
    /// While active, re-announce this often; `None` (0, the default) is off.
    pub refresh: Option<Duration>,
}

/// `[node]`: who this server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1-63 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// This server's part in the pair.
    pub role: Role,
    /// This server's own address, on which it talks to the peer.
    pub address: IpAddr,
    /// The NIC name (1-15 bytes, no `/` or whitespace), if configured.
    pub interface: Option<String>,
    /// Absolute path of the persistent state directory (default `/var/lib/hamon`).
    pub state_dir: PathBuf,
    /// Absolute path of the runtime directory (default `/run/hamon`).
    pub run_dir: PathBuf,
}

/// `[heartbeat]`: how the peer's liveness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// UDP port for heartbeats (default 8083).
    pub port: u16,
    /// Time between heartbeats, 10 ms to 10 min (default 5 s).
    pub interval: Duration,
    /// Unanswered heartbeats in a row before the peer is down, 1-100 (default 3).
    pub missed: u32,
    /// Grace period, 0 to 1 h (default 10 s).
    pub grace: Duration,
    /// Timeout of a single probe, 10 ms to 10 min (default 3 s).
    pub probe_timeout: Duration,
    /// Signed peer requests whose timestamp is further than this from the local
    /// clock are refused; 1 s to 1 h (default 30 s).
    pub max_clock_skew: Duration,
    /// Redundant heartbeat paths, besides the node addresses (at most 4). Every heartbeat
    /// goes out on each; the peer counts as silent only when all of them are.
    pub paths: Vec<HeartbeatPath>,
}

/// One redundant heartbeat path: this server's address on it, and the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatPath {
    pub local: IpAddr,
    pub peer: IpAddr,
}

/// The most redundant heartbeat paths a server may have.
pub const MAX_HEARTBEAT_PATHS: usize = 4;

/// `[health_monitor]`: the health monitor endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMonitor {
    /// Port (default 8082).
    pub port: u16,
    /// Whether TLS is used (default true).
    pub tls: bool,
    /// How long an idle login session lives, 1 s to 24 h (default 15 min).
    pub session_ttl: Duration,
    /// Open connections at most, 1 to 100000 (default 256).
    pub max_connections: u32,
    /// Open connections from one client address at most (default 32).
    pub max_connections_per_client: u32,
    /// Addresses that may read `/metrics` without the bearer token (default none).
    pub metrics_scrapers: Vec<Cidr>,
}

/// An address, or a network as `ADDR/PREFIX` (`metrics_scrapers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address, host bits cleared.
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `192.0.2.7`, `198.51.100.0/24`, `2001:db8::/32`; the host bits must be zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or ADDR/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        if !cidr.contains(addr) || cidr.network() != addr {
            return Err(format!("{text:?}: host bits are set past /{prefix}"));
        }
        Ok(cidr)
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self, width: u8) -> u128 {
        let host = u32::from(width - self.prefix.min(width));
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all.checked_shl(host).map_or(0, |m| m & all)
    }

    fn network(&self) -> IpAddr {
        let (bits, width) = Cidr::bits(self.addr);
        let net = bits & self.mask(width);
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4((net as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(net.into()),
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, wa) = Cidr::bits(self.addr);
        let (b, wb) = Cidr::bits(ip);
        wa == wb && (a ^ b) & self.mask(wa) == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[failback]`: returning service to a recovered primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failback {
    /// A primary down at least this long needs a full copy before failback;
    /// whole hours, 1 h to 8760 h (default 24 h).
    pub data_gap: Duration,
    /// How often a failed data-gap copy is retried, at least 1 s (default 5 min).
    pub copy_retry: Duration,
}

/// `[hooks]`: operator commands, each an argv whose `argv[0]` is an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Run when this server takes over the service.
    pub activate: Option<Vec<String>>,
    /// Run when this server gives up the service.
    pub deactivate: Option<Vec<String>>,
    /// Copies the data before failback, until replication exists.
    pub full_copy: Option<Vec<String>>,
    /// How long any one hook may run, at least 100 ms (default 60 s).
    pub timeout: Duration,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// How much is logged (default `info`).
    pub level: LogLevel,
    /// Whether lines are also kept in `state_dir/hamon.log`, for the Health
    /// Monitor's log download (default true).
    pub file: bool,
}

/// Why the configuration could not be loaded. The `Display` form of every
/// variant starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8, ...).
    #[error("{}: cannot read the configuration file: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not valid TOML, or a key is unknown, or a value has the
    /// wrong type. `message` starts with `line L, column C: ` when toml gave
    /// a position, then the dotted key when it could be found.
    #[error("{}: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A value is missing, out of range or malformed.
    #[error("{}: {key}: {reason}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key, such as `heartbeat.interval_ms`.
        key: String,
        /// What is wrong with it, such as `must be between 10 and 600000 (got 5)`.
        reason: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let read = || -> io::Result<(String, u32)> {
            // The mode and the text of the same file, whatever renames it.
            let mut f = std::fs::File::open(path)?;
            let mode = f.metadata()?.permissions().mode() & 0o777;
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok((text, mode))
        };
        let (text, mode) = read().map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_with(&text, path, (mode & 0o077 != 0).then_some(mode))
    }

    /// Parses and validates `text`; `path` is recorded in [`Config::path`] and
    /// used in error messages, but is not read.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, None)
    }

    /// `parse`, for a file whose mode lets group or others read it
    /// (`exposed`): then a secret written inline is refused, naming its key
    /// and the fix.
    fn parse_with(text: &str, path: &Path, exposed: Option<u32>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &err),
        })?;
        Validator { path, exposed }.config(raw)
    }

    /// The configuration file to use: the `--config` argument if given, else
    /// the [`ENV_VAR`] environment variable if set and non-empty, else
    /// [`DEFAULT_PATH`].
    pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
        resolve_path_from(cli, std::env::var_os(ENV_VAR).as_deref())
    }

    /// The control socket: `run_dir/hamon.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.node.run_dir.join(SOCKET_NAME)
    }
}

/// [`Config::resolve_path`] with the environment variable's value passed in.
fn resolve_path_from(cli: Option<&Path>, env: Option<&OsStr>) -> PathBuf {
    match (cli, env) {
        (Some(cli), _) => cli.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        (None, _) => PathBuf::from(DEFAULT_PATH),
    }
}

/// Turns raw values into validated ones; every error it makes names `path`.
struct Validator<'a> {
    path: &'a Path,
    /// The file's mode, when group or others can read it.
    exposed: Option<u32>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node = raw
            .node
            .ok_or_else(|| self.invalid("node", "required section [node] is missing"))?;
        let node = self.node(node)?;
        let health_monitor = self.health_monitor(raw.health_monitor)?;
        let database = self.database(raw.database)?;
        if let Some(watch::DbDriver::Postgres(pg)) = database.as_ref().map(|d| &d.driver) {
            if pg.tls && !health_monitor.tls {
                return Err(self.invalid(
                    "database.postgres.tls",
                    "the database's TLS serves the Health Monitor's certificate: set \
                     [health_monitor] tls = true, or [database.postgres] tls = false",
                ));
            }
        }
        let heartbeat = self.heartbeat(raw.heartbeat)?;
        let raw_heartbeat_defaults = (heartbeat.interval, heartbeat.missed, heartbeat.grace);
        Ok(Config {
            path: self.path.to_path_buf(),
            heartbeat,
            health_monitor,
            failback: self.failback(raw.failback)?,
            hooks: self.hooks(raw.hooks)?,
            log: self.log(raw.log)?,
            vip: self.vip(raw.vip)?,
            services: self.services(raw.service)?,
            database,
            disk: self.disk(raw.disk, &node.state_dir)?,
            nic: self.nic(raw.nic)?,
            replication: self.replication(raw.replication, raw.sync)?,
            notify: self.notify(raw.notify)?,
            fencing: match raw.fencing {
                Some(f) => Some(self.fencing(f)?),
                None => None,
            },
            arbiter: raw.arbiter.map(|a| self.arbiter(a)).transpose()?,
            witness: match raw.witness {
                Some(w) => Some(self.witness(w, &raw_heartbeat_defaults, node.address)?),
                None => None,
            },
            node,
        })
    }

    fn fencing(&self, raw: raw::RawFencing) -> Result<Fencing, ConfigError> {
        let command = self
            .argv("fencing.command", raw.command)?
            .ok_or_else(|| self.invalid("fencing.command", "is required"))?;
        let timeout = self.millis(
            "fencing.timeout_ms",
            raw.timeout_ms,
            30_000,
            100,
            Some(600_000),
        )?;
        let proceed_on_failure = match raw.on_failure.as_deref() {
            None | Some("withhold") => false,
            Some("proceed") => true,
            Some(other) => {
                return Err(self.invalid(
                    "fencing.on_failure",
                    format!("must be \"withhold\" or \"proceed\" (got {other:?})"),
                ))
            }
        };
        Ok(Fencing {
            command,
            timeout,
            proceed_on_failure,
        })
    }

    fn witness(
        &self,
        raw: raw::RawWitness,
        hb: &(Duration, u32, Duration),
        own: IpAddr,
    ) -> Result<Witness, ConfigError> {
        let address = self.required("witness.address", raw.address)?;
        let address = address.parse::<IpAddr>().map_err(|_| {
            self.invalid(
                "witness.address",
                format!("must be an IP address (got {address:?})"),
            )
        })?;
        if address.is_unspecified()
            || address.is_multicast()
            || address.is_loopback()
            || address == own
        {
            return Err(self.invalid(
                "witness.address",
                format!("must be another host's unicast address (got {address})"),
            ));
        }
        let interval = match raw.interval_ms {
            None => hb.0,
            some => self.millis("witness.interval_ms", some, 0, 10, Some(60_000))?,
        };
        let missed = match raw.missed {
            None => hb.1,
            some => self.count("witness.missed", some, 0, 1, 100)?,
        };
        // A cut-off primary must know the witness is gone by the time its peer's takeover
        // may come (the peer's silence plus the grace), or it fences itself too late.
        let verdict = interval.saturating_mul(missed);
        let takeover = hb.0.saturating_mul(hb.1).saturating_add(hb.2);
        if verdict > takeover {
            return Err(self.invalid(
                "witness.interval_ms",
                format!(
                    "the witness's verdict takes interval_ms x missed = {} ms, longer than the \
                     heartbeat's silence and grace ({} ms): a cut-off primary would fence \
                     itself after the secondary took over",
                    verdict.as_millis(),
                    takeover.as_millis()
                ),
            ));
        }
        Ok(Witness {
            address,
            interval,
            missed,
        })
    }

    fn node(&self, raw: RawNode) -> Result<Node, ConfigError> {
        let name = self.required("node.name", raw.name)?;
        let name_ok = (1..=NODE_NAME_MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(self.invalid("node.name", format!("{NODE_NAME_RULE} (got {name:?})")));
        }

        let role = self.required("node.role", raw.role)?;
        let role = match role.as_str() {
            "primary" => Role::Primary,
            "secondary" => Role::Secondary,
            _ => {
                return Err(self.invalid(
                    "node.role",
                    format!("must be \"primary\" or \"secondary\" (got {role:?})"),
                ))
            }
        };

        let address = self.required("node.address", raw.address)?;
        let address = address.parse::<IpAddr>().map_err(|_| {
            self.invalid("node.address", format!("{ADDRESS_RULE} (got {address:?})"))
        })?;

        let interface = match raw.interface {
            None => None,
            Some(nic) => {
                let ok = (1..=INTERFACE_MAX).contains(&nic.len())
                    && !nic
                        .chars()
                        .any(|c| c == '/' || c == '\0' || c.is_whitespace());
                if !ok {
                    return Err(
                        self.invalid("node.interface", format!("{INTERFACE_RULE} (got {nic:?})"))
                    );
                }
                Some(nic)
            }
        };

        Ok(Node {
            name,
            role,
            address,
            interface,
            state_dir: self.absolute_dir("node.state_dir", raw.state_dir, DEFAULT_STATE_DIR)?,
            run_dir: self.absolute_dir("node.run_dir", raw.run_dir, DEFAULT_RUN_DIR)?,
        })
    }

    fn heartbeat(&self, raw: RawHeartbeat) -> Result<Heartbeat, ConfigError> {
        Ok(Heartbeat {
            port: self.port("heartbeat.port", raw.port, DEFAULT_HEARTBEAT_PORT)?,
            interval: self.millis(
                "heartbeat.interval_ms",
                raw.interval_ms,
                DEFAULT_INTERVAL_MS,
                10,
                Some(600_000),
            )?,
            missed: self.count("heartbeat.missed", raw.missed, DEFAULT_MISSED, 1, 100)?,
            grace: self.millis(
                "heartbeat.grace_ms",
                raw.grace_ms,
                DEFAULT_GRACE_MS,
                0,
                Some(3_600_000),
            )?,
            probe_timeout: self.millis(
                "heartbeat.probe_timeout_ms",
                raw.probe_timeout_ms,
                DEFAULT_PROBE_TIMEOUT_MS,
                1,
                Some(600_000),
            )?,
            max_clock_skew: self.millis(
                "heartbeat.max_clock_skew_ms",
                raw.max_clock_skew_ms,
                DEFAULT_MAX_CLOCK_SKEW_MS,
                1_000,
                Some(3_600_000),
            )?,
            paths: self.heartbeat_paths(raw.paths.unwrap_or_default())?,
        })
    }

    fn heartbeat_paths(
        &self,
        raw: Vec<raw::RawHeartbeatPath>,
    ) -> Result<Vec<HeartbeatPath>, ConfigError> {
        if raw.len() > MAX_HEARTBEAT_PATHS {
            return Err(self.invalid(
                "heartbeat.paths",
                format!("at most {MAX_HEARTBEAT_PATHS} paths (got {})", raw.len()),
            ));
        }
        let mut paths: Vec<HeartbeatPath> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let field = |name: &str| format!("heartbeat.paths[{i}].{name}");
            let ip = |name: &str, v: Option<String>| -> Result<IpAddr, ConfigError> {
                let v = v.ok_or_else(|| self.invalid(&field(name), "is required"))?;
                let ip = v.parse::<IpAddr>().map_err(|_| {
                    self.invalid(&field(name), format!("must be an IP address (got {v:?})"))
                })?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(self.invalid(
                        &field(name),
                        format!("must be a unicast address (got {ip})"),
                    ));
                }
                Ok(ip)
            };
            let path = HeartbeatPath {
                local: ip("local", p.local)?,
                peer: ip("peer", p.peer)?,
            };
            if path.local.is_ipv4() != path.peer.is_ipv4() {
                return Err(self.invalid(
                    &field("peer"),
                    format!("must be of the same family as {}", path.local),
                ));
            }
            if path.local == path.peer {
                return Err(self.invalid(&field("peer"), "must differ from local"));
            }
            if paths
                .iter()
                .any(|q| q.local == path.local || q.peer == path.peer)
            {
                return Err(self.invalid(
                    &format!("heartbeat.paths[{i}]"),
                    "repeats an address of an earlier path",
                ));
            }
            paths.push(path);
        }
        Ok(paths)
    }

    fn health_monitor(&self, raw: RawHealthMonitor) -> Result<HealthMonitor, ConfigError> {
        Ok(HealthMonitor {
            port: self.port("health_monitor.port", raw.port, DEFAULT_HEALTH_MONITOR_PORT)?,
            tls: raw.tls.unwrap_or(DEFAULT_TLS),
            session_ttl: Duration::from_secs(self.int(
                "health_monitor.session_ttl_secs",
                raw.session_ttl_secs,
                900,
                1,
                Some(86_400),
            )?),
            max_connections: self.count(
                "health_monitor.max_connections",
                raw.max_connections,
                256,
                1,
                100_000,
            )?,
            max_connections_per_client: self.count(
                "health_monitor.max_connections_per_client",
                raw.max_connections_per_client,
                32,
                1,
                100_000,
            )?,
            metrics_scrapers: raw
                .metrics_scrapers
                .unwrap_or_default()
                .iter()
                .map(|s| Cidr::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|e| self.invalid("health_monitor.metrics_scrapers", e))?,
        })
    }

    fn failback(&self, raw: RawFailback) -> Result<Failback, ConfigError> {
        let hours = self.int(
            "failback.data_gap_hours",
            raw.data_gap_hours,
            DEFAULT_DATA_GAP_HOURS,
            1,
            Some(8_760),
        )?;
        Ok(Failback {
            data_gap: Duration::from_secs(hours * SECONDS_PER_HOUR),
            copy_retry: self.millis(
                "failback.copy_retry_ms",
                raw.copy_retry_ms,
                DEFAULT_COPY_RETRY_MS,
                1_000,
                None,
            )?,
        })
    }

    fn hooks(&self, raw: RawHooks) -> Result<Hooks, ConfigError> {
        Ok(Hooks {
            activate: self.argv("hooks.activate", raw.activate)?,
            deactivate: self.argv("hooks.deactivate", raw.deactivate)?,
            full_copy: self.argv("hooks.full_copy", raw.full_copy)?,
            timeout: self.millis(
                "hooks.timeout_ms",
                raw.timeout_ms,
                DEFAULT_HOOK_TIMEOUT_MS,
                100,
                None,
            )?,
        })
    }

    fn log(&self, raw: RawLog) -> Result<Log, ConfigError> {
        let level = match raw.level.as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("trace") => LogLevel::Trace,
            Some(other) => {
                return Err(self.invalid(
                    "log.level",
                    format!("must be \"error\", \"info\" or \"trace\" (got {other:?})"),
                ))
            }
        };
        Ok(Log {
            level,
            file: raw.file.unwrap_or(true),
        })
    }

    fn required(&self, key: &str, value: Option<String>) -> Result<String, ConfigError> {
        value.ok_or_else(|| self.invalid(key, "is required"))
    }

    /// An integer in `min..=max` (no upper bound when `max` is `None`), or
    /// `default` when the key is absent.
    fn int(
        &self,
        key: &str,
        value: Option<i64>,
        default: u64,
        min: u64,
        max: Option<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(got) = value else {
            return Ok(default);
        };
        u64::try_from(got)
            .ok()
            .filter(|&n| n >= min && max.is_none_or(|max| n <= max))
            .ok_or_else(|| {
                self.invalid(
                    key,
                    match max {
                        Some(max) => format!("must be between {min} and {max} (got {got})"),
                        None => format!("must be at least {min} (got {got})"),
                    },
                )
            })
    }

    fn millis(
        &self,
        key: &str,
        value: Option<i64>,
        default: u64,
        min: u64,
        max: Option<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(key, value, default, min, max)
            .map(Duration::from_millis)
    }

    fn vip(&self, raw: raw::RawVip) -> Result<Vip, ConfigError> {
        let refresh = self.millis("vip.refresh_ms", raw.refresh_ms, 0, 0, Some(3_600_000))?;
        Ok(Vip {
            burst_count: self.count(
                "vip.burst_count",
                raw.burst_count,
                DEFAULT_BURST_COUNT,
                1,
                100,
            )?,
            burst_gap: self.millis(
                "vip.burst_gap_ms",
                raw.burst_gap_ms,
                DEFAULT_BURST_GAP_MS,
                0,
                Some(10_000),
            )?,
            refresh: (!refresh.is_zero()).then_some(refresh),
        })
    }

    fn port(&self, key: &str, value: Option<i64>, default: u64) -> Result<u16, ConfigError> {
        let max = u16::MAX;
        let n = self.int(key, value, default, 1, Some(max.into()))?;
        u16::try_from(n).map_err(|_| self.invalid(key, format!("must be between 1 and {max}")))
    }

    fn count(
        &self,
        key: &str,
        value: Option<i64>,
        default: u64,
        min: u64,
        max: u32,
    ) -> Result<u32, ConfigError> {
        let n = self.int(key, value, default, min, Some(max.into()))?;
        u32::try_from(n).map_err(|_| self.invalid(key, format!("must be between {min} and {max}")))
    }

    fn absolute_dir(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let dir = value.unwrap_or_else(|| default.to_owned());
        if dir.contains('\0') {
            return Err(self.invalid(key, "must not contain a NUL character"));
        }
        if !Path::new(&dir).is_absolute() {
            return Err(self.invalid(key, format!("must be an absolute path (got {dir:?})")));
        }
        Ok(PathBuf::from(dir))
    }

    fn argv(
        &self,
        key: &str,
        value: Option<Vec<String>>,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(argv) = value else {
            return Ok(None);
        };
        let Some(program) = argv.first() else {
            return Err(self.invalid(
                key,
                "must not be empty: give the command as [\"/absolute/path\", \"arg\", ...]",
            ));
        };
        if !Path::new(program).is_absolute() {
            return Err(self.invalid(
                key,
                format!("argv[0] must be an absolute path (got {program:?})"),
            ));
        }
        if let Some(i) = argv.iter().position(|arg| arg.contains('\0')) {
            return Err(self.invalid(key, format!("argv[{i}] must not contain a NUL character")));
        }
        Ok(Some(argv))
    }
}

/// A one-line description of a toml/serde error: `line L, column C: ` when
/// toml gave a position, then the dotted key when it can be found, then
/// toml's own message.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let mut out = String::new();
    if let Some(span) = err.span() {
        let (line, column) = line_column(text, span.start);
        out.push_str(&format!("line {line}, column {column}: "));
        if let Some(key) = locate::key_at(text, span.start) {
            out.push_str(&key);
            out.push_str(": ");
        }
    }
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    out.push_str(&message);
    out
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = before
        .get(line_start..)
        .map_or(0, |rest| String::from_utf8_lossy(rest).chars().count())
        + 1;
    (line, column)
}

/// Finds which dotted key a byte offset of a TOML document belongs to, so that
/// serde errors (wrong type, unknown key) can name it: toml's message for
/// `port = "x"` says only what type was expected. The document is parsed a
/// second time into a tree that keeps every key's and value's span.
mod locate {
    use std::fmt;
    use std::ops::Range;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use toml::Spanned;

    type Entries = Vec<(Spanned<String>, Spanned<Item>)>;

    /// Any TOML value, keeping only what is needed to find keys by position.
    enum Item {
        Table(Entries),
        Array(Vec<Spanned<Item>>),
        Leaf,
    }

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ItemVisitor)
        }
    }

    struct ItemVisitor;

    impl<'de> Visitor<'de> for ItemVisitor {
        type Value = Item;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any TOML value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<Item, E> {
            Ok(Item::Leaf)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Item, E> {
            Ok(Item::Leaf)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Item, E> {
            Ok(Item::Leaf)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Item, E> {
            Ok(Item::Leaf)
        }

        fn visit_str<E>(self, _: &str) -> Result<Item, E> {
            Ok(Item::Leaf)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Spanned<Item>>()? {
                items.push(item);
            }
            Ok(Item::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<Item>>()? {
                entries.push(entry);
            }
            Ok(Item::Table(entries))
        }
    }

    /// The dotted key whose name or value covers `offset`, innermost first;
    /// `None` if there is none or `text` does not parse into the tree. A
    /// document holding a TOML datetime anywhere does not (toml hands a
    /// datetime to serde as a map whose key carries no span), so its errors
    /// keep their line and column but lose the key; no hamon key takes a
    /// datetime, so such a file is wrong already.
    pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
        match toml::from_str::<Item>(text).ok()? {
            Item::Table(root) => find(&root, offset).map(|path| path.join(".")),
            Item::Array(_) | Item::Leaf => None,
        }
    }

    fn find(entries: &Entries, offset: usize) -> Option<Vec<String>> {
        for (key, value) in entries {
            if let Some(mut path) = find_in(value, offset) {
                path.insert(0, key.get_ref().clone());
                return Some(path);
            }
            if covers(key.span(), offset) || covers(value.span(), offset) {
                return Some(vec![key.get_ref().clone()]);
            }
        }
        None
    }

    /// Looks inside tables, also tables inside arrays (array indexes are not
    /// part of the returned path).
    fn find_in(item: &Spanned<Item>, offset: usize) -> Option<Vec<String>> {
        match item.get_ref() {
            Item::Table(entries) => find(entries, offset),
            Item::Array(items) => items.iter().find_map(|item| find_in(item, offset)),
            Item::Leaf => None,
        }
    }

    fn covers(span: Range<usize>, offset: usize) -> bool {
        span.contains(&offset)
    }
}

#[cfg(test)]
mod tests;
