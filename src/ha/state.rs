//! The vocabulary of the pair: roles, HA states, configuration modes, duties,
//! health and the registration both servers share.
//!
//! Everything here is plain data. Numeric codes (`code`/`from_code`) are part
//! of the heartbeat wire format: never renumber an existing variant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which server of the pair this is; chosen at install, never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Secondary,
}

impl Role {
    pub fn code(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Secondary => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<Role> {
        match c {
            1 => Some(Role::Primary),
            2 => Some(Role::Secondary),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
        }
    }
    pub fn other(self) -> Role {
        match self {
            Role::Primary => Role::Secondary,
            Role::Secondary => Role::Primary,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether the secondary takes over on its own when it loses the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverType {
    Manual,
    Automatic,
}

impl FailoverType {
    pub fn code(self) -> u8 {
        match self {
            FailoverType::Manual => 1,
            FailoverType::Automatic => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<FailoverType> {
        match c {
            1 => Some(FailoverType::Manual),
            2 => Some(FailoverType::Automatic),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            FailoverType::Manual => "Manual",
            FailoverType::Automatic => "Automatic",
        }
    }
    pub fn parse(s: &str) -> Option<FailoverType> {
        match s.to_ascii_lowercase().as_str() {
            "manual" => Some(FailoverType::Manual),
            "automatic" | "auto" => Some(FailoverType::Automatic),
            _ => None,
        }
    }
}

impl fmt::Display for FailoverType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

macro_rules! ha_states {
    ($( $variant:ident = $code:literal, $label:literal ;)*) => {
        /// Every HA state a server can be in (see `docs/states.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum HaState { $( $variant, )* }

        impl HaState {
            pub const ALL: &'static [HaState] = &[ $( HaState::$variant, )* ];
            pub fn code(self) -> u8 {
                match self { $( HaState::$variant => $code, )* }
            }
            pub fn from_code(c: u8) -> Option<HaState> {
                match c { $( $code => Some(HaState::$variant), )* _ => None }
            }
            /// The operator-facing name, as printed by `ha status`.
            pub fn label(self) -> &'static str {
                match self { $( HaState::$variant => $label, )* }
            }
        }
    };
}

ha_states! {
    StandAlone = 1, "Stand Alone";
    HaInitializing = 2, "HA Initializing";
    PrimaryAlone = 10, "Primary Alone";
    PrimaryActive = 11, "Primary Active";
    PrimaryDatabaseCopyFailed = 12, "Primary Database Copy Failed";
    PrimaryFailover = 13, "Primary Failover";
    PrimaryFailback = 14, "Primary Failback";
    PrimaryLostSecondary = 15, "Primary Lost Secondary";
    PrimaryPreparingForFailback = 16, "Primary Preparing for Failback";
    PrimarySyncing = 17, "Primary Syncing";
    PrimaryUncertain = 18, "Primary Uncertain";
    SecondaryAlone = 30, "Secondary Alone";
    SecondarySyncing = 31, "Secondary Syncing";
    SecondaryActive = 32, "Secondary Active";
    SecondaryLostPrimary = 33, "Secondary Lost Primary";
    SecondaryFailover = 34, "Secondary Failover";
    SecondaryFailback = 35, "Secondary Failback";
    SecondaryPostFailback = 36, "Secondary Post Failback";
    SecondaryUncertain = 37, "Secondary Uncertain";
}

impl HaState {
    /// The role a state belongs to; `None` for the two shared states.
    pub fn role(self) -> Option<Role> {
        match self.code() {
            10..=29 => Some(Role::Primary),
            30..=49 => Some(Role::Secondary),
            _ => None,
        }
    }

    /// States in which a server reports a failure of its own: the peer treats a
    /// primary in one of these as failed without waiting for missed heartbeats.
    pub fn is_failed(self) -> bool {
        matches!(self, HaState::PrimaryFailover | HaState::PrimaryUncertain)
    }
}

impl fmt::Display for HaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The pair-wide configuration mode (as opposed to the per-server state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigMode {
    #[serde(rename = "HA Not Configured")]
    NotConfigured,
    #[serde(rename = "HA Initializing")]
    Initializing,
    #[serde(rename = "HA Enabled")]
    Enabled,
    #[serde(rename = "HA Alone")]
    Alone,
}

impl ConfigMode {
    pub fn label(self) -> &'static str {
        match self {
            ConfigMode::NotConfigured => "HA Not Configured",
            ConfigMode::Initializing => "HA Initializing",
            ConfigMode::Enabled => "HA Enabled",
            ConfigMode::Alone => "HA Alone",
        }
    }
}

impl fmt::Display for ConfigMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the server's executors must make true: which services run and whether
/// the virtual IP is held. The core decides it; the shell applies it and
/// reports back with `Event::DutyApplied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duty {
    /// Only the agent (the Health Monitor) runs: no services, no VIP.
    Halted,
    /// Not in a pair: every service runs, no VIP.
    Standalone,
    /// The passive server: services marked `both` run, no VIP.
    Standby,
    /// The active server: every service runs and the VIP is held.
    Active,
}

impl Duty {
    pub fn code(self) -> u8 {
        match self {
            Duty::Halted => 0,
            Duty::Standalone => 1,
            Duty::Standby => 2,
            Duty::Active => 3,
        }
    }
    pub fn from_code(c: u8) -> Option<Duty> {
        match c {
            0 => Some(Duty::Halted),
            1 => Some(Duty::Standalone),
            2 => Some(Duty::Standby),
            3 => Some(Duty::Active),
            _ => None,
        }
    }
}

/// One watcher's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Unknown,
    Ok,
    Warning,
    Failed,
}

impl Level {
    pub fn code(self) -> u8 {
        match self {
            Level::Unknown => 0,
            Level::Ok => 1,
            Level::Warning => 2,
            Level::Failed => 3,
        }
    }
    pub fn from_code(c: u8) -> Option<Level> {
        match c {
            0 => Some(Level::Unknown),
            1 => Some(Level::Ok),
            2 => Some(Level::Warning),
            3 => Some(Level::Failed),
            _ => None,
        }
    }
}

/// A server's health as its watchers see it; travels in every heartbeat.
/// `processes` is `Failed` only when a critical service could not be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthSummary {
    pub processes: Level,
    pub database: Level,
    pub disk: Level,
    pub nic: Level,
}

/// The HA registration, identical on both servers once registration commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Random id chosen by the primary at registration; both servers carry it
    /// in heartbeats so a stale pairing is recognised.
    pub id: u64,
    pub failover_type: FailoverType,
    pub primary: Member,
    pub secondary: Member,
    /// Virtual IPs as `ADDR/PREFIX` (at most one IPv4 and one IPv6).
    #[serde(default)]
    pub vips: Vec<String>,
    /// Addresses that receive HA state-change mail.
    #[serde(default)]
    pub emails: Vec<String>,
}

impl Registration {
    pub fn member(&self, role: Role) -> &Member {
        match role {
            Role::Primary => &self.primary,
            Role::Secondary => &self.secondary,
        }
    }

    /// The part an operator may change after registration (`hamon ha set`).
    pub fn settings(&self) -> Settings {
        Settings {
            failover_type: self.failover_type,
            vips: self.vips.clone(),
            emails: self.emails.clone(),
        }
    }

    /// This registration with `s` in place of its settings; the members and the id stay.
    pub fn with_settings(&self, s: &Settings) -> Registration {
        Registration {
            failover_type: s.failover_type,
            vips: s.vips.clone(),
            emails: s.emails.clone(),
            ..self.clone()
        }
    }
}

/// The registration's settings that `hamon ha set` changes on both servers at once:
/// everything but the id and the two members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub failover_type: FailoverType,
    /// Virtual IPs as `ADDR/PREFIX`, normalised as registration stores them.
    pub vips: Vec<String>,
    pub emails: Vec<String>,
}

impl Settings {
    /// What differs from `old` to `self`, one clause per setting, e.g.
    /// `failover type Manual -> Automatic; virtual IPs 192.0.2.10/24 -> 192.0.2.20/24`.
    /// Empty when nothing does.
    pub fn changes_from(&self, old: &Settings) -> String {
        fn list(v: &[String]) -> String {
            if v.is_empty() {
                "(none)".into()
            } else {
                v.join(", ")
            }
        }
        let mut parts = Vec::new();
        if self.failover_type != old.failover_type {
            parts.push(format!(
                "failover type {} -> {}",
                old.failover_type, self.failover_type
            ));
        }
        if self.vips != old.vips {
            parts.push(format!(
                "virtual IPs {} -> {}",
                list(&old.vips),
                list(&self.vips)
            ));
        }
        if self.emails != old.emails {
            parts.push(format!(
                "e-mail {} -> {}",
                list(&old.emails),
                list(&self.emails)
            ));
        }
        parts.join("; ")
    }
}

/// One server as the registration knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Management address (an IP literal).
    pub address: String,
    /// Health Monitor (HTTP) port.
    pub hm_port: u16,
    /// Heartbeat (UDP) port.
    pub hb_port: u16,
    /// SHA-256 fingerprint of its Health Monitor certificate, exchanged inside the
    /// authenticated registration; peer HTTPS is pinned to it. `None` without TLS, and in
    /// registrations made before pinning (their peer HTTPS accepts any certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &s in HaState::ALL {
            assert!(seen.insert(s.code()), "duplicate code for {s:?}");
            assert_eq!(HaState::from_code(s.code()), Some(s));
        }
        assert_eq!(HaState::ALL.len(), 19);
        assert_eq!(HaState::from_code(0), None);
        assert_eq!(HaState::from_code(255), None);
    }

    #[test]
    fn state_roles_follow_code_ranges() {
        assert_eq!(HaState::StandAlone.role(), None);
        assert_eq!(HaState::HaInitializing.role(), None);
        assert_eq!(HaState::PrimaryUncertain.role(), Some(Role::Primary));
        assert_eq!(HaState::SecondaryPostFailback.role(), Some(Role::Secondary));
        for &s in HaState::ALL {
            let name = format!("{s:?}");
            match s.role() {
                Some(Role::Primary) => assert!(name.starts_with("Primary")),
                Some(Role::Secondary) => assert!(name.starts_with("Secondary")),
                None => assert!(!name.starts_with("Primary") && !name.starts_with("Secondary")),
            }
        }
    }

    #[test]
    fn small_enums_round_trip() {
        for r in [Role::Primary, Role::Secondary] {
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        for t in [FailoverType::Manual, FailoverType::Automatic] {
            assert_eq!(FailoverType::from_code(t.code()), Some(t));
            assert_eq!(FailoverType::parse(&t.label().to_lowercase()), Some(t));
        }
        for d in [Duty::Halted, Duty::Standalone, Duty::Standby, Duty::Active] {
            assert_eq!(Duty::from_code(d.code()), Some(d));
        }
        for l in [Level::Unknown, Level::Ok, Level::Warning, Level::Failed] {
            assert_eq!(Level::from_code(l.code()), Some(l));
        }
    }
}
