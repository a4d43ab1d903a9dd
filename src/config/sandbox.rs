//! The privileges a configuration needs under the shipped systemd unit.
//!
//! `systemd/hamon.service` grants only what claiming a virtual IP and serving
//! port 8082 need, on a read-only system. Features add to that: writing a
//! `[[sync]]` tree with its owners and modes, switching to a service's
//! `user =`, running PostgreSQL as its own account. No unit file can know an
//! image's sync paths, so hamon works them out from its configuration and the
//! systemd generator (`hamon-generator`, the binary under another name) writes
//! them as a drop-in at every boot and `daemon-reload`.
//!
//! `hamon config check` compares the same answer with what the running unit
//! has, and says what a configured feature would be refused.

use super::{Config, DbDriver, ServiceHow};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the shipped unit grants whatever the configuration says.
pub const BASE_CAPABILITIES: [&str; 3] = ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"];

/// The drop-in's file name under `hamon.service.d/`.
pub const DROPIN_NAME: &str = "50-hamon-features.conf";

/// Extra privileges, each with the features that need it (for the drop-in's
/// comments and `config check`'s warnings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Capability name → why.
    pub capabilities: BTreeMap<&'static str, BTreeSet<String>>,
    /// Writable path → why.
    pub read_write: BTreeMap<PathBuf, BTreeSet<String>>,
    /// Whether PostgreSQL runs under the unit (it needs writable,
    /// executable memory for its JIT).
    pub jit: bool,
}

impl Sandbox {
    /// The privileges `cfg`'s features need beyond the unit's own.
    pub fn for_config(cfg: &Config) -> Sandbox {
        let mut s = Sandbox::default();
        for set in &cfg.replication.sets {
            let why = format!("[[sync]] {}", set.name);
            s.path(&set.path, &why);
            // Owners and modes as on the active server (chown, chmod and
            // utimes on files hamon does not own), and reading and writing
            // trees whose modes leave root without the owner's rights.
            s.caps(&["CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"], &why);
        }
        for svc in &cfg.services {
            if let ServiceHow::Command {
                user: Some(user), ..
            } = &svc.how
            {
                let why = format!("[[service]] {} (user = {user:?})", svc.name);
                // The switch to the user, and signals to its processes.
                s.caps(&["CAP_SETUID", "CAP_SETGID", "CAP_KILL"], &why);
            }
        }
        if let Some(DbDriver::Postgres(pg)) = cfg.database.as_ref().map(|d| &d.driver) {
            let why = "[database] driver = \"postgres\"".to_string();
            // Every tool runs as the cluster's account; hamon prepares its
            // directories (chown, chmod) and reads the 0700 data directory.
            s.caps(
                &[
                    "CAP_SETUID",
                    "CAP_SETGID",
                    "CAP_KILL",
                    "CAP_CHOWN",
                    "CAP_FOWNER",
                    "CAP_DAC_OVERRIDE",
                ],
                &why,
            );
            // The data directory's parent: a base backup may recreate it.
            s.path(pg.data_dir.parent().unwrap_or(&pg.data_dir), &why);
            s.path(&pg.socket_dir, &why);
            if let Some(log_dir) = pg.log_file.parent() {
                s.path(log_dir, &why);
            }
            s.jit = true;
        }
        s
    }

    /// Paths no drop-in can open: the unit hides home directories
    /// (`ProtectHome=yes`) and gives the agent a private /tmp
    /// (`PrivateTmp=yes`), and a path systemd cannot take (a control
    /// character) cannot be listed. One line each, for `config check`.
    pub fn unreachable(&self) -> Vec<String> {
        const HIDDEN: [&str; 5] = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];
        let mut out = Vec::new();
        for (path, why) in &self.read_write {
            if let Some(h) = HIDDEN.iter().find(|h| path.starts_with(h)) {
                out.push(format!(
                    "{} is under {h}, which hamon.service hides (ProtectHome=, PrivateTmp=); \
                     {} cannot work there: move it",
                    path.display(),
                    join(why)
                ));
            } else if unit_path(path).is_none() {
                out.push(format!(
                    "{} cannot be written in a unit file (a control character or not \
                     UTF-8); {} cannot work there: rename it",
                    path.display(),
                    join(why)
                ));
            }
        }
        out
    }

    fn caps(&mut self, caps: &[&'static str], why: &str) {
        for c in caps {
            self.capabilities
                .entry(c)
                .or_default()
                .insert(why.to_string());
        }
    }

    fn path(&mut self, path: &Path, why: &str) {
        self.read_write
            .entry(path.to_path_buf())
            .or_default()
            .insert(why.to_string());
    }

    /// The drop-in for `hamon.service.d/`, or `None` when the unit's own
    /// privileges are enough. `source` names the configuration file.
    pub fn dropin(&self, source: &Path) -> Option<String> {
        if self.capabilities.is_empty() && self.read_write.is_empty() {
            return None;
        }
        let mut out = format!(
            "# Written by hamon-generator from {}: the privileges its configured\n\
             # features need beyond hamon.service's own. Do not edit; change the\n\
             # configuration and run `systemctl daemon-reload`.\n[Service]\n",
            source.display()
        );
        for (path, why) in &self.read_write {
            out.push_str(&format!("# {}\n", join(why)));
            // `-`: a path that does not exist yet is not an error at start.
            match unit_path(path) {
                Some(p) => out.push_str(&format!("ReadWritePaths=\"-{p}\"\n")),
                None => out.push_str("# (not listed: `hamon config check` says why)\n"),
            }
        }
        if !self.capabilities.is_empty() {
            for (cap, why) in &self.capabilities {
                out.push_str(&format!("# {cap}: {}\n", join(why)));
            }
            let caps: Vec<&str> = self.capabilities.keys().copied().collect();
            // Both settings add to the unit's own lists.
            out.push_str(&format!("CapabilityBoundingSet={}\n", caps.join(" ")));
            out.push_str(&format!("AmbientCapabilities={}\n", caps.join(" ")));
        }
        if self.jit {
            // The postmaster inherits the unit's sandbox; its LLVM JIT maps
            // writable, executable memory, which this setting would refuse.
            out.push_str("# PostgreSQL's JIT, in the server hamon starts\n");
            out.push_str("MemoryDenyWriteExecute=no\n");
        }
        Some(out)
    }

    /// What a unit with `bounding` capabilities (as `systemctl show -p
    /// CapabilityBoundingSet` prints them), `writable` paths (as `-p
    /// ReadWritePaths` prints them) and `dropin`, the text of the loaded
    /// `50-hamon-features.conf` if any, would refuse of this sandbox: one
    /// line per missing privilege, naming the features that need it. A path
    /// counts as open when a printed path covers it, or when the loaded
    /// drop-in lists it exactly as it would be written now (systemctl does
    /// not print a path with spaces in a form that can be parsed back).
    pub fn missing_from(&self, bounding: &str, writable: &str, dropin: &str) -> Vec<String> {
        let have: BTreeSet<String> = bounding
            .split_whitespace()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let open: Vec<PathBuf> = writable
            .split_whitespace()
            .map(|p| PathBuf::from(p.trim_start_matches(['-', '+'])))
            .collect();
        let mut out = Vec::new();
        for (cap, why) in &self.capabilities {
            if !have.contains(*cap) {
                out.push(format!("the unit lacks {cap}, needed by {}", join(why)));
            }
        }
        let listed = |path: &Path| {
            unit_path(path).is_some_and(|p| {
                dropin
                    .lines()
                    .any(|l| l == format!("ReadWritePaths=\"-{p}\""))
            })
        };
        for (path, why) in &self.read_write {
            if !open.iter().any(|o| path.starts_with(o)) && !listed(path) {
                out.push(format!(
                    "{} is read-only for the unit, needed by {}",
                    path.display(),
                    join(why)
                ));
            }
        }
        out
    }
}

fn join(why: &BTreeSet<String>) -> String {
    why.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A path as it goes between the double quotes of a unit file's
/// `ReadWritePaths=`: a backslash escapes `\` and `"`, and `%` (systemd's
/// specifier sign) is doubled. `None` for what a unit file cannot hold: a
/// control character (a newline would end the setting) or bytes that are
/// not UTF-8.
fn unit_path(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_control() => return None,
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    Some(out)
}

/// `hamon-generator NORMAL [EARLY LATE]`: write the drop-in for `config`
/// into `NORMAL/hamon.service.d/`. A configuration that is missing or does
/// not load writes nothing (the unit keeps its own privileges, and the agent
/// reports the error when it starts): a generator must not fail the boot.
pub fn generate(config: &Path, normal_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    if !config.exists() {
        return Ok(None);
    }
    let cfg = match Config::load(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            // The boot's log says why the unit keeps its own privileges.
            eprintln!("hamon-generator: no drop-in written: {e}");
            return Ok(None);
        }
    };
    let Some(text) = Sandbox::for_config(&cfg).dropin(config) else {
        return Ok(None);
    };
    let dir = normal_dir.join("hamon.service.d");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(DROPIN_NAME);
    std::fs::write(&path, text)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
[node]
name = "a"
role = "primary"
address = "192.0.2.11"
interface = "eth0"
"#;

    fn cfg(extra: &str) -> Config {
        Config::parse(
            &format!("{NODE}{extra}"),
            Path::new("/etc/hamon/hamon.toml"),
        )
        .expect("valid config")
    }

    #[test]
    fn a_minimal_config_needs_nothing_more() {
        let s = Sandbox::for_config(&cfg(""));
        assert_eq!(s, Sandbox::default());
        assert_eq!(s.dropin(Path::new("/etc/hamon/hamon.toml")), None);
        // A systemd-unit service needs no user switch.
        let s = Sandbox::for_config(&cfg(
            "[[service]]\nname = \"web\"\nunit = \"nginx.service\"\n",
        ));
        assert_eq!(s, Sandbox::default());
    }

    #[test]
    fn sync_sets_get_their_paths_and_owner_capabilities() {
        let s = Sandbox::for_config(&cfg(
            "[[sync]]\nname = \"conf\"\npath = \"/etc/appliance\"\n\
             [[sync]]\nname = \"data\"\npath = \"/var/lib/app data\"\n",
        ));
        let text = s
            .dropin(Path::new("/etc/hamon/hamon.toml"))
            .expect("drop-in");
        assert!(
            text.contains("ReadWritePaths=\"-/etc/appliance\"\n"),
            "{text}"
        );
        assert!(
            text.contains("ReadWritePaths=\"-/var/lib/app data\"\n"),
            "{text}"
        );
        assert!(
            text.contains("CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER\n"),
            "{text}"
        );
        assert!(text.contains("AmbientCapabilities=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER\n"));
        assert!(!text.contains("CAP_SETUID"), "{text}");
        assert!(
            text.contains("# CAP_CHOWN: [[sync]] conf, [[sync]] data\n"),
            "{text}"
        );
    }

    #[test]
    fn user_services_get_the_user_switch_and_kill() {
        let s = Sandbox::for_config(&cfg(
            "[[service]]\nname = \"worker\"\ncommand = [\"/usr/bin/worker\"]\nuser = \"appliance\"\n",
        ));
        let caps: Vec<&str> = s.capabilities.keys().copied().collect();
        assert_eq!(caps, ["CAP_KILL", "CAP_SETGID", "CAP_SETUID"]);
        assert!(s.read_write.is_empty());
        // The same service without a user needs nothing.
        let s = Sandbox::for_config(&cfg(
            "[[service]]\nname = \"worker\"\ncommand = [\"/usr/bin/worker\"]\n",
        ));
        assert!(s.capabilities.is_empty());
    }

    #[test]
    fn postgres_gets_its_directories_and_the_account_switch() {
        let s = Sandbox::for_config(&cfg(
            "[database]\ndriver = \"postgres\"\n[database.postgres]\n\
             data_dir = \"/var/lib/postgresql/15/main\"\npassfile = \"/etc/hamon/pgpass\"\n",
        ));
        let paths: Vec<String> = s
            .read_write
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            paths.contains(&"/var/lib/postgresql/15".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"/var/run/postgresql".to_string()),
            "{paths:?}"
        );
        // The server's log (by default `<data_dir>.log`) is in a writable tree.
        let log = s.missing_from("", "/var/lib/postgresql/15 /var/run/postgresql", "");
        assert!(log.iter().all(|m| m.contains("lacks")), "{log:?}");
        let s2 = Sandbox::for_config(&cfg(
            "[database]\ndriver = \"postgres\"\n[database.postgres]\n\
             data_dir = \"/srv/pg/main\"\nlog_file = \"/var/log/postgresql/main.log\"\n\
             passfile = \"/etc/hamon/pgpass\"\n",
        ));
        assert!(s2.read_write.contains_key(Path::new("/var/log/postgresql")));
        assert!(s2.read_write.contains_key(Path::new("/srv/pg")));
        for cap in [
            "CAP_SETUID",
            "CAP_SETGID",
            "CAP_KILL",
            "CAP_CHOWN",
            "CAP_FOWNER",
            "CAP_DAC_OVERRIDE",
        ] {
            assert!(s.capabilities.contains_key(cap), "{cap}");
        }
    }

    #[test]
    fn odd_paths_are_quoted_for_systemd_or_refused() {
        assert_eq!(
            unit_path(Path::new("/srv/a b")).as_deref(),
            Some("/srv/a b")
        );
        assert_eq!(
            unit_path(Path::new("/srv/50%")).as_deref(),
            Some("/srv/50%%")
        );
        assert_eq!(
            unit_path(Path::new("/srv/q\"b\\c")).as_deref(),
            Some("/srv/q\\\"b\\\\c")
        );
        assert_eq!(unit_path(Path::new("/srv/a\nReadWritePaths=/")), None);
        let s = Sandbox::for_config(&cfg("[[sync]]\nname = \"nl\"\npath = \"/srv/a\\nb\"\n\
             [[sync]]\nname = \"home\"\npath = \"/home/app\"\n\
             [[sync]]\nname = \"ok\"\npath = \"/srv/ok\"\n"));
        let text = s
            .dropin(Path::new("/etc/hamon/hamon.toml"))
            .expect("drop-in");
        // A newline in a path cannot start a setting of its own.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("ReadWritePaths="))
                .count(),
            2,
            "{text}"
        );
        let why = s.unreachable();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why
            .iter()
            .any(|w| w.starts_with("/home/app is under /home")));
        assert!(why.iter().any(|w| w.contains("control character")));
    }

    #[test]
    fn missing_privileges_are_named_with_their_features() {
        let s = Sandbox::for_config(&cfg(
            "[[sync]]\nname = \"conf\"\npath = \"/etc/appliance/x\"\n\
             [[service]]\nname = \"worker\"\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n",
        ));
        // Today's unit: three network capabilities, hamon's state only.
        let missing = s.missing_from(
            "cap_net_admin cap_net_bind_service cap_net_raw",
            "-/var/lib/hamon",
            "",
        );
        assert_eq!(missing.len(), 7, "{missing:?}");
        assert!(missing.contains(
            &"the unit lacks CAP_SETUID, needed by [[service]] worker (user = \"nobody\")"
                .to_string()
        ));
        assert!(missing
            .iter()
            .any(|m| m.starts_with("/etc/appliance/x is read-only")));
        // With the drop-in in force nothing is missing (a parent path covers).
        let all =
            "cap_chown cap_dac_override cap_fowner cap_kill cap_setgid cap_setuid cap_net_admin";
        assert!(s
            .missing_from(all, "/var/lib/hamon -/etc/appliance", "")
            .is_empty());
        // A path systemctl prints in a form that cannot be parsed back is
        // open when the loaded drop-in lists it as it would be written now.
        let odd = Sandbox::for_config(&cfg(
            "[[sync]]\nname = \"odd\"\npath = \"/srv/odd dir 50%\"\n",
        ));
        let text = odd
            .dropin(Path::new("/etc/hamon/hamon.toml"))
            .expect("drop-in");
        let caps = "cap_chown cap_dac_override cap_fowner";
        assert!(odd.missing_from(caps, "[unprintable]", &text).is_empty());
        assert_eq!(odd.missing_from(caps, "[unprintable]", "").len(), 1);
        let stale = text.replace("odd dir", "old dir");
        assert_eq!(odd.missing_from(caps, "", &stale).len(), 1);
    }

    #[test]
    fn the_generator_writes_the_dropin_or_nothing() {
        let dir = std::env::temp_dir().join(format!("hamon-gen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("hamon.toml");
        let out = dir.join("normal");
        // No configuration: nothing, and no error.
        assert_eq!(generate(&conf, &out).expect("gen"), None);
        std::fs::write(&conf, NODE).expect("write");
        assert_eq!(generate(&conf, &out).expect("gen"), None);
        assert!(!out.exists());
        // A broken configuration: nothing either.
        std::fs::write(&conf, "[node\n").expect("write");
        assert_eq!(generate(&conf, &out).expect("gen"), None);
        std::fs::write(
            &conf,
            format!("{NODE}[[sync]]\nname = \"conf\"\npath = \"/etc/appliance\"\n"),
        )
        .expect("write");
        let written = generate(&conf, &out).expect("gen").expect("a drop-in");
        assert_eq!(written, out.join("hamon.service.d").join(DROPIN_NAME));
        let text = std::fs::read_to_string(&written).expect("read");
        assert!(text.contains("ReadWritePaths=\"-/etc/appliance\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
