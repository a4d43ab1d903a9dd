//! `GET /metrics`: what the agent knows, in Prometheus's text exposition format
//! (version 0.0.4).
//!
//! States are state sets (one sample per possible value, 1 for the current one), so a
//! query never has to parse a label it did not expect. Counters count since the agent
//! started, as Prometheus expects of counters that reset on restart.

use crate::control::HeartbeatCounts;
use crate::db::DbRole;
use crate::ha::{ConfigMode, Duty, HaState, Level, Role, StatusView};
use crate::notify::dispatch::DispatchStats;
use crate::replication::DbSeen;
use crate::sync::progress::Progress;
use crate::version::Version;
use crate::watch::process::{ServiceStatus, State};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the shell counts for `/metrics` and nothing else keeps: probes of the peer, and
/// events by kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    events: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn probe(&self, ok: bool) {
        let c = if ok {
            &self.probes_ok
        } else {
            &self.probes_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn event(&self, kind: &str) {
        if let Ok(mut m) = self.events.lock() {
            *m.entry(kind.to_string()).or_default() += 1;
        }
    }

    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Scrape<'a> {
    pub status: &'a StatusView,
    pub ours: &'a Version,
    pub heartbeats: &'a HeartbeatCounts,
    pub probes: (u64, u64),
    pub events: &'a BTreeMap<String, u64>,
    pub notify: &'a DispatchStats,
    pub sync: &'a Progress,
    pub database: Option<&'a DbSeen>,
    pub services: &'a [ServiceStatus],
}

/// One family after another, each with its `# HELP` and `# TYPE`.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A state set: one sample per value of `label`, 1 for `current`.
    fn set<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = &'v str>,
        current: Option<&str>,
    ) {
        self.family(name, "gauge", help);
        for v in values {
            self.sample(name, &[(label, v)], u8::from(current == Some(v)));
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Unknown => "unknown",
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Failed => "failed",
    }
}

const LEVELS: [&str; 4] = ["unknown", "ok", "warning", "failed"];

fn duty_name(d: Duty) -> &'static str {
    match d {
        Duty::Halted => "halted",
        Duty::Standalone => "standalone",
        Duty::Standby => "standby",
        Duty::Active => "active",
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

/// The whole exposition.
pub fn render(s: &Scrape<'_>) -> String {
    let mut o = Out(String::with_capacity(8192));
    let st = s.status;
    build(&mut o, s);

    o.set(
        "hamon_ha_state",
        "This server's HA state (1 for the current one).",
        "state",
        HaState::ALL.iter().map(|h| h.label()),
        Some(st.state.label()),
    );
    o.set(
        "hamon_ha_role",
        "This server's configured role.",
        "role",
        ["primary", "secondary"],
        Some(role_name(st.role)),
    );
    o.set(
        "hamon_ha_config_mode",
        "The pair's configuration mode.",
        "mode",
        [
            ConfigMode::NotConfigured,
            ConfigMode::Initializing,
            ConfigMode::Enabled,
            ConfigMode::Alone,
        ]
        .map(ConfigMode::label),
        Some(st.mode.label()),
    );
    o.set(
        "hamon_ha_duty",
        "What this server's executors hold: halted, standalone, standby or active.",
        "duty",
        ["halted", "standalone", "standby", "active"],
        Some(duty_name(st.duty)),
    );
    o.one(
        "hamon_ha_active",
        "gauge",
        "1 while this server holds the active duty (services and virtual IPs).",
        u8::from(st.duty == Duty::Active),
    );
    o.one(
        "hamon_ha_registered",
        "gauge",
        "1 while this server is part of a registered pair.",
        u8::from(st.registration.is_some()),
    );
    o.set(
        "hamon_ha_failover_type",
        "The registration's failover type.",
        "type",
        ["manual", "automatic"],
        st.failover_type.map(|t| match t {
            crate::ha::FailoverType::Manual => "manual",
            crate::ha::FailoverType::Automatic => "automatic",
        }),
    );
    o.one(
        "hamon_peer_reachable",
        "gauge",
        "1 while the peer's heartbeats arrive.",
        u8::from(st.peer_reachable),
    );
    o.one(
        "hamon_data_gap",
        "gauge",
        "1 while this primary was out of sync longer than the data-gap limit.",
        u8::from(st.data_gap),
    );

    heartbeats(&mut o, s);
    takeovers(&mut o, s);
    sync(&mut o, s);
    database(&mut o, s.database);
    notifications(&mut o, s.notify);
    health(&mut o, st, s.services);
    o.0
}

fn build(o: &mut Out, s: &Scrape<'_>) {
    o.family(
        "hamon_build_info",
        "gauge",
        "This server's release and protocol (always 1).",
    );
    let protocol = s.ours.protocol();
    o.sample(
        "hamon_build_info",
        &[("release", &s.ours.release), ("protocol", &protocol)],
        1,
    );
    o.family(
        "hamon_peer_build_info",
        "gauge",
        "The peer's release and protocol from its heartbeats (1; absent until heard).",
    );
    if let Some(p) = &s.status.peer_version {
        let protocol = p.protocol();
        o.sample(
            "hamon_peer_build_info",
            &[("release", &p.release), ("protocol", &protocol)],
            1,
        );
    }
    o.one(
        "hamon_version_mismatch",
        "gauge",
        "1 while the peer runs another release than this server.",
        u8::from(
            s.status
                .peer_version
                .as_ref()
                .is_some_and(|p| p.release != s.ours.release || p.minor != s.ours.minor),
        ),
    );
}

fn heartbeats(o: &mut Out, s: &Scrape<'_>) {
    let h = s.heartbeats;
    o.one(
        "hamon_heartbeats_sent_total",
        "counter",
        "Heartbeat datagrams sent (every path counted).",
        h.sent,
    );
    o.one(
        "hamon_heartbeats_accepted_total",
        "counter",
        "Authentic, fresh heartbeats from the registered peer.",
        h.accepted,
    );
    o.family(
        "hamon_heartbeats_rejected_total",
        "counter",
        "Datagrams refused on the heartbeat port, by reason: bad (not a heartbeat, wrong key \
         or malformed), replay (old or repeated sequence), sender (not the registered peer).",
    );
    for (reason, n) in [
        ("bad", h.rejected_bad),
        ("replay", h.rejected_replay),
        ("sender", h.rejected_sender),
    ] {
        o.sample("hamon_heartbeats_rejected_total", &[("reason", reason)], n);
    }
    o.one(
        "hamon_heartbeats_duplicate_total",
        "counter",
        "Copies of an admitted heartbeat (another path, or the latest frame again).",
        h.duplicates,
    );
    o.family(
        "hamon_heartbeat_path_up",
        "gauge",
        "With redundant paths: 1 while the peer is heard that way within the detector's window.",
    );
    for p in &h.paths {
        o.sample(
            "hamon_heartbeat_path_up",
            &[("peer", &p.peer)],
            u8::from(!p.silent),
        );
    }
    o.family(
        "hamon_peer_probes_total",
        "counter",
        "Probes of the peer's Health Monitor after missed heartbeats, by result.",
    );
    o.sample("hamon_peer_probes_total", &[("result", "ok")], s.probes.0);
    o.sample(
        "hamon_peer_probes_total",
        &[("result", "failed")],
        s.probes.1,
    );
}

fn takeovers(o: &mut Out, s: &Scrape<'_>) {
    let count = |kind: &str| s.events.get(kind).copied().unwrap_or(0);
    o.one(
        "hamon_failovers_total",
        "counter",
        "Takeovers this server completed (automatic or by command).",
        count("failover_complete"),
    );
    o.one(
        "hamon_failbacks_total",
        "counter",
        "Failbacks this server completed.",
        count("failback_complete"),
    );
    o.family(
        "hamon_events_total",
        "counter",
        "Events journaled, by kind (docs/events.md).",
    );
    for (kind, n) in s.events {
        o.sample("hamon_events_total", &[("kind", kind)], n);
    }
}

fn sync(o: &mut Out, s: &Scrape<'_>) {
    let classes = [("frequent", &s.sync.frequent), ("batch", &s.sync.batch)];
    o.family(
        "hamon_sync_sets",
        "gauge",
        "Configured file-sync sets, by class.",
    );
    for (class, c) in classes {
        o.sample("hamon_sync_sets", &[("class", class)], c.sets);
    }
    o.family(
        "hamon_sync_lag_seconds",
        "gauge",
        "While this server pulls files: seconds since the class's last complete pass \
         (absent until one completes).",
    );
    for (class, c) in classes {
        if let Some(lag) = c.lag_secs {
            o.sample("hamon_sync_lag_seconds", &[("class", class)], lag);
        }
    }
    o.family(
        "hamon_sync_last_pass_bytes",
        "gauge",
        "Bytes the class's last pass copied.",
    );
    for (class, c) in classes {
        o.sample("hamon_sync_last_pass_bytes", &[("class", class)], c.bytes);
    }
    o.family(
        "hamon_sync_last_pass_files",
        "gauge",
        "Files the class's last pass copied.",
    );
    for (class, c) in classes {
        o.sample("hamon_sync_last_pass_files", &[("class", class)], c.files);
    }
    o.family(
        "hamon_sync_delta_files_total",
        "counter",
        "Large files this server received as deltas (only the blocks its old copy lacked).",
    );
    for (class, c) in classes {
        o.sample(
            "hamon_sync_delta_files_total",
            &[("class", class)],
            c.delta_files,
        );
    }
    o.family(
        "hamon_sync_delta_fetched_bytes_total",
        "counter",
        "Bytes those deltas fetched: block lists and missing blocks.",
    );
    for (class, c) in classes {
        o.sample(
            "hamon_sync_delta_fetched_bytes_total",
            &[("class", class)],
            c.delta_fetched,
        );
    }
    o.family(
        "hamon_sync_errors",
        "gauge",
        "Errors in the class's last pass.",
    );
    for (class, c) in classes {
        o.sample("hamon_sync_errors", &[("class", class)], c.errors.len());
    }
    o.family(
        "hamon_peer_sync_lag_seconds",
        "gauge",
        "While the peer pulls from this server: its lag by class, from its heartbeats.",
    );
    if let Some(p) = s.status.peer_sync {
        for (class, c) in [("frequent", p.frequent), ("batch", p.batch)] {
            if let Some(lag) = c.lag {
                o.sample("hamon_peer_sync_lag_seconds", &[("class", class)], lag);
            }
        }
    }
}

fn database(o: &mut Out, seen: Option<&DbSeen>) {
    o.family(
        "hamon_database_role",
        "gauge",
        "The local database's role (1 for the current one; all 0 when it does not \
         answer; absent without a database driver).",
    );
    let Some(d) = seen else { return };
    let current = d.role.as_ref().ok().map(|r| r.as_str());
    for r in [DbRole::Primary, DbRole::Standby, DbRole::Down] {
        o.sample(
            "hamon_database_role",
            &[("role", r.as_str())],
            u8::from(current == Some(r.as_str())),
        );
    }
    if let Ok(Some(lag)) = &d.lag {
        o.one(
            "hamon_database_lag_bytes",
            "gauge",
            "A standby's change stream received but not yet replayed, in bytes.",
            lag.bytes,
        );
        if let Some(secs) = lag.seconds {
            o.one(
                "hamon_database_lag_seconds",
                "gauge",
                "Age of a standby's newest replayed change.",
                secs,
            );
        }
    }
}

fn notifications(o: &mut Out, n: &DispatchStats) {
    o.family(
        "hamon_notifications_sent_total",
        "counter",
        "Notifications delivered, by channel.",
    );
    for (ch, v) in [
        ("syslog", n.syslog_sent),
        ("snmp", n.snmp_sent),
        ("mail", n.mail.sent),
    ] {
        o.sample("hamon_notifications_sent_total", &[("channel", ch)], v);
    }
    o.family(
        "hamon_notifications_failed_total",
        "counter",
        "Notification sends that failed, by channel (mail: failed delivery attempts).",
    );
    for (ch, v) in [
        ("syslog", n.syslog_failed),
        ("snmp", n.snmp_failed),
        ("mail", n.mail.failed_attempts),
    ] {
        o.sample("hamon_notifications_failed_total", &[("channel", ch)], v);
    }
    o.family(
        "hamon_notifications_dropped_total",
        "counter",
        "Notifications given up: the dispatcher's queue was full, or a mail ran out of \
         attempts or room.",
    );
    o.sample(
        "hamon_notifications_dropped_total",
        &[("channel", "all")],
        n.dropped,
    );
    o.sample(
        "hamon_notifications_dropped_total",
        &[("channel", "mail")],
        n.mail.dropped,
    );
    o.one(
        "hamon_mail_queued",
        "gauge",
        "Mails waiting for delivery.",
        n.mail.queued,
    );
}

fn health(o: &mut Out, st: &StatusView, services: &[ServiceStatus]) {
    let checks = |h: &crate::ha::HealthSummary| {
        [
            ("processes", h.processes),
            ("database", h.database),
            ("disk", h.disk),
            ("nic", h.nic),
        ]
    };
    o.family(
        "hamon_health",
        "gauge",
        "This server's watchers: one sample per check and level, 1 for the current level.",
    );
    for (check, level) in checks(&st.health) {
        for l in LEVELS {
            o.sample(
                "hamon_health",
                &[("check", check), ("level", l)],
                u8::from(level_name(level) == l),
            );
        }
    }
    o.family(
        "hamon_peer_health",
        "gauge",
        "The peer's watchers from its heartbeats, as hamon_health (absent until heard).",
    );
    if let Some(peer) = &st.peer_health {
        for (check, level) in checks(peer) {
            for l in LEVELS {
                o.sample(
                    "hamon_peer_health",
                    &[("check", check), ("level", l)],
                    u8::from(level_name(level) == l),
                );
            }
        }
    }
    o.family(
        "hamon_service_up",
        "gauge",
        "1 while a supervised service runs.",
    );
    for s in services {
        o.sample(
            "hamon_service_up",
            &[("service", &s.name)],
            u8::from(s.state == State::Running),
        );
    }
    o.family(
        "hamon_service_failed",
        "gauge",
        "1 when the supervisor gave up restarting a service.",
    );
    for s in services {
        o.sample(
            "hamon_service_failed",
            &[("service", &s.name)],
            u8::from(matches!(s.state, State::Failed(_))),
        );
    }
    o.family(
        "hamon_service_restarts",
        "gauge",
        "Restarts of a service since the duty last started it.",
    );
    for s in services {
        o.sample(
            "hamon_service_restarts",
            &[("service", &s.name)],
            s.restarts,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{FencePolicy, HealthSummary, Node, NodeConfig};

    fn status() -> StatusView {
        let cfg = NodeConfig {
            name: "ha-a".into(),
            role: Role::Primary,
            address: "192.0.2.11".into(),
            hm_port: 8082,
            hb_port: 8083,
            fingerprint: None,
            timers: crate::ha::sim::fast_timers(),
            witness: false,
            fence: FencePolicy::Off,
            arbiter: None,
        };
        let mut s = Node::new(cfg, None).status();
        s.health = HealthSummary {
            processes: Level::Ok,
            database: Level::Unknown,
            disk: Level::Warning,
            nic: Level::Ok,
        };
        s
    }

    fn scrape_with(status: &StatusView, f: impl FnOnce(&Scrape<'_>) -> String) -> String {
        let ours = Version {
            release: "1.2.3".into(),
            major: 1,
            minor: 1,
        };
        let hb = HeartbeatCounts {
            sent: 10,
            accepted: 9,
            rejected_bad: 3,
            ..HeartbeatCounts::default()
        };
        let mut events = BTreeMap::new();
        events.insert("failover_complete".to_string(), 2);
        events.insert("peer_lost".to_string(), 1);
        let notify = DispatchStats::default();
        let sync = Progress::default();
        let services = vec![ServiceStatus {
            name: "web \"front\"".into(),
            state: State::Running,
            restarts: 1,
            critical: true,
            pid: Some(7),
        }];
        f(&Scrape {
            status,
            ours: &ours,
            heartbeats: &hb,
            probes: (4, 5),
            events: &events,
            notify: &notify,
            sync: &sync,
            database: None,
            services: &services,
        })
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn states_are_state_sets_and_counters_carry_their_values() {
        let st = status();
        let text = scrape_with(&st, render);
        assert_eq!(
            value(&text, "hamon_ha_state{state=\"Stand Alone\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "hamon_ha_state{state=\"Primary Active\"}").as_deref(),
            Some("0")
        );
        let states = text
            .lines()
            .filter(|l| l.starts_with("hamon_ha_state{"))
            .count();
        assert_eq!(states, HaState::ALL.len());
        assert_eq!(
            value(&text, "hamon_heartbeats_rejected_total{reason=\"bad\"}").as_deref(),
            Some("3")
        );
        assert_eq!(value(&text, "hamon_failovers_total").as_deref(), Some("2"));
        assert_eq!(value(&text, "hamon_failbacks_total").as_deref(), Some("0"));
        assert_eq!(
            value(&text, "hamon_peer_probes_total{result=\"failed\"}").as_deref(),
            Some("5")
        );
        assert_eq!(
            value(&text, "hamon_health{check=\"disk\",level=\"warning\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                "hamon_build_info{release=\"1.2.3\",protocol=\"1.1\"}"
            )
            .as_deref(),
            Some("1")
        );
        // A quote in a label value is escaped, not the end of the value.
        assert_eq!(
            value(&text, "hamon_service_up{service=\"web \\\"front\\\"\"}").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn every_family_is_announced_once_before_its_samples() {
        let st = status();
        let text = scrape_with(&st, render);
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or("");
                assert!(announced.insert(name.to_string()), "{name} twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(announced.contains(name), "{name} before its # TYPE");
            }
        }
    }

    #[test]
    fn escape_handles_backslash_quote_and_newline() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
