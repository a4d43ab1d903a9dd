//! The configuration file exactly as written, before validation.
//!
//! Every struct here mirrors one table of the TOML file key for key, so that
//! serde rejects unknown keys (`deny_unknown_fields`) and wrong value types.
//! Every key is optional at this level: required keys, ranges, defaults and
//! cross-checks are the business of the parent module, which turns a
//! [`RawConfig`] into a validated [`super::Config`].
//!
//! Integers are read as `i64` (TOML's own integer type) so that an
//! out-of-range number, negative or too large, reaches validation and gets a
//! "must be between" message naming the key, instead of a serde type error.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[node]`: required, but checked during validation for a clearer message.
    pub node: Option<RawNode>,
    /// `[heartbeat]`.
    #[serde(default)]
    pub heartbeat: RawHeartbeat,
    /// `[health_monitor]`.
    #[serde(default)]
    pub health_monitor: RawHealthMonitor,
    /// `[failback]`.
    #[serde(default)]
    pub failback: RawFailback,
    /// `[hooks]`.
    #[serde(default)]
    pub hooks: RawHooks,
    /// `[log]`.
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub vip: RawVip,
    #[serde(default)]
    pub service: Vec<RawService>,
    pub database: Option<RawDatabase>,
    #[serde(default)]
    pub disk: RawDisk,
    #[serde(default)]
    pub nic: RawNic,
    /// `[replication]`.
    #[serde(default)]
    pub replication: RawReplication,
    /// `[[sync]]`.
    #[serde(default)]
    pub sync: Vec<RawSync>,
    /// `[notify]`.
    #[serde(default)]
    pub notify: RawNotify,
    /// `[witness]`.
    pub witness: Option<RawWitness>,
    /// `[fencing]`.
    pub fencing: Option<RawFencing>,
    /// `[arbiter]`.
    pub arbiter: Option<RawArbiter>,
}

/// `[arbiter]`: an etcd lease decides which server may be active.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArbiter {
    pub endpoints: Option<Vec<String>>,
    pub ttl_s: Option<i64>,
    pub margin_ms: Option<i64>,
    pub on_arbiter_loss: Option<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
}

/// `[fencing]`: the peer is fenced before this server takes over.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFencing {
    pub command: Option<Vec<String>>,
    pub timeout_ms: Option<i64>,
    pub on_failure: Option<String>,
}

/// `[witness]`: a third party both servers can reach.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWitness {
    pub address: Option<String>,
    pub interval_ms: Option<i64>,
    pub missed: Option<i64>,
}

/// `[node]`: who this server is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// `name`: required.
    pub name: Option<String>,
    /// `role`: required, `primary` or `secondary`.
    pub role: Option<String>,
    /// `address`: required, an IP address literal.
    pub address: Option<String>,
    /// `interface`: optional NIC name.
    pub interface: Option<String>,
    /// `state_dir`: absolute path.
    pub state_dir: Option<String>,
    /// `run_dir`: absolute path.
    pub run_dir: Option<String>,
}

/// `[heartbeat]`: peer liveness checking.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// `port`: UDP port.
    pub port: Option<i64>,
    /// `interval_ms`.
    pub interval_ms: Option<i64>,
    /// `missed`.
    pub missed: Option<i64>,
    /// `grace_ms`.
    pub grace_ms: Option<i64>,
    /// `probe_timeout_ms`.
    pub probe_timeout_ms: Option<i64>,
    /// `max_clock_skew_ms`.
    pub max_clock_skew_ms: Option<i64>,
    /// `paths`: redundant heartbeat paths.
    pub paths: Option<Vec<RawHeartbeatPath>>,
}

/// `[health_monitor]`: the local health monitor endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthMonitor {
    /// `port`.
    pub port: Option<i64>,
    /// `tls`.
    pub tls: Option<bool>,
    /// `session_ttl_secs`.
    pub session_ttl_secs: Option<i64>,
    /// `max_connections`.
    pub max_connections: Option<i64>,
    /// `max_connections_per_client`.
    pub max_connections_per_client: Option<i64>,
    /// `metrics_scrapers`.
    pub metrics_scrapers: Option<Vec<String>>,
}

/// `[failback]`: returning service to a recovered primary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailback {
    /// `data_gap_hours`.
    pub data_gap_hours: Option<i64>,
    /// `copy_retry_ms`.
    pub copy_retry_ms: Option<i64>,
}

/// `[hooks]`: operator commands, each an argv array.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    /// `activate`.
    pub activate: Option<Vec<String>>,
    /// `deactivate`.
    pub deactivate: Option<Vec<String>>,
    /// `full_copy`.
    pub full_copy: Option<Vec<String>>,
    /// `timeout_ms`.
    pub timeout_ms: Option<i64>,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `level`: `error`, `info` or `trace`.
    pub level: Option<String>,
    /// `file`: also write `state_dir/hamon.log`.
    pub file: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub burst_count: Option<i64>,
    pub burst_gap_ms: Option<i64>,
    pub refresh_ms: Option<i64>,
}

/// One `[heartbeat] paths` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeatPath {
    pub local: Option<String>,
    pub peer: Option<String>,
}

/// One `[[service]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub unit: Option<String>,
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub run_on: Option<String>,
    pub critical: Option<bool>,
    pub restart_attempts: Option<i64>,
    pub restart_window_secs: Option<i64>,
    pub restart_backoff_ms: Option<i64>,
    pub after: Option<Vec<String>>,
    pub stop_timeout_ms: Option<i64>,
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub tcp: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub failures: Option<i64>,
    /// `postgres`, `command` or `none`.
    pub driver: Option<String>,
    pub max_failover_lag_bytes: Option<i64>,
    pub peer_port: Option<i64>,
    /// The `command` driver's script.
    pub ops: Option<Vec<String>>,
    pub copy_timeout_ms: Option<i64>,
    pub postgres: Option<RawPostgres>,
}

/// `[database.postgres]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    pub bin_dir: Option<String>,
    pub data_dir: Option<String>,
    pub config_file: Option<String>,
    pub log_file: Option<String>,
    pub port: Option<i64>,
    pub listen: Option<String>,
    pub socket_dir: Option<String>,
    pub os_user: Option<String>,
    pub superuser: Option<String>,
    pub dbname: Option<String>,
    pub replication_user: Option<String>,
    pub passfile: Option<String>,
    pub slot: Option<String>,
    pub timeout_ms: Option<i64>,
    pub start_timeout_ms: Option<i64>,
    pub tls: Option<bool>,
    pub synchronous: Option<bool>,
}

/// `[disk]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub paths: Option<Vec<String>>,
    pub interval_ms: Option<i64>,
    pub warn_used_percent: Option<i64>,
    pub critical_used_percent: Option<i64>,
    pub warn_free_bytes: Option<i64>,
    pub critical_free_bytes: Option<i64>,
}

/// `[nic]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNic {
    pub track: Option<Vec<String>>,
    pub hold_ms: Option<i64>,
}

/// `[replication]`: file sync timing and limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplication {
    pub frequent_interval_ms: Option<i64>,
    pub batch_interval_ms: Option<i64>,
    pub hint_delay_ms: Option<i64>,
    pub max_manifest_entries: Option<i64>,
    pub max_manifest_bytes: Option<i64>,
    pub max_file_bytes: Option<i64>,
    pub copy_timeout_ms: Option<i64>,
}

/// One `[[sync]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub name: Option<String>,
    pub path: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub class: Option<String>,
    pub keep_setid: Option<bool>,
}

/// `[notify]`: where HA events go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// `[notify.severity]`: kind = "severity" overrides.
    #[serde(default)]
    pub severity: std::collections::BTreeMap<String, String>,
    pub mail: Option<RawMail>,
    pub syslog: Option<RawSyslog>,
    pub snmp: Option<RawSnmp>,
}

/// `[notify.mail]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    /// `HOST:PORT` of the SMTP server.
    pub smtp: Option<String>,
    /// `starttls` (default), `tls` or `none`.
    pub security: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub accept_invalid_certs: Option<bool>,
    /// Use this sendmail program instead of SMTP.
    pub sendmail: Option<String>,
    pub queue_len: Option<i64>,
    pub retry_ms: Option<i64>,
    pub retry_max_ms: Option<i64>,
    pub attempts: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub min_severity: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// `[notify.syslog]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    pub local: Option<bool>,
    pub local_path: Option<String>,
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`.
    pub remote: Option<String>,
    pub facility: Option<String>,
    pub min_severity: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// `[notify.snmp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnmp {
    /// Send the standard coldStart trap when the agent starts.
    pub cold_start: Option<bool>,
    #[serde(default)]
    pub target: Vec<RawSnmpTarget>,
    pub min_severity: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// One `[[notify.snmp.target]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnmpTarget {
    /// `HOST:PORT` (port 162 when left out).
    pub address: Option<String>,
    /// `v2c` or `v3`.
    pub version: Option<String>,
    pub community: Option<String>,
    pub user: Option<String>,
    /// `sha1`, `sha224`, `sha256`, `sha384`, `sha512`.
    pub auth: Option<String>,
    pub auth_password: Option<String>,
    pub auth_password_file: Option<String>,
    /// `aes128` or absent (authNoPriv).
    pub privacy: Option<String>,
    pub privacy_password: Option<String>,
    pub privacy_password_file: Option<String>,
}
