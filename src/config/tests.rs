//! Tests of the configuration parser and validator.
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const PATH: &str = "/etc/hamon/hamon.toml";
const MINIMAL: &str = "[node]\nname = \"ha-a\"\nrole = \"primary\"\naddress = \"192.0.2.11\"\n";
const EXAMPLE: &str = include_str!("../../docs/hamon.example.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(err) => panic!("expected the config to be valid, got: {err}\n--- text ---\n{text}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}\n--- text ---\n{text}"),
        Err(err) => err,
    }
}

/// The (key, reason) of an `Invalid` error; panics on any other outcome.
fn invalid(text: &str) -> (String, String) {
    match err(text) {
        ConfigError::Invalid { path, key, reason } => {
            assert_eq!(path, Path::new(PATH));
            (key, reason)
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

/// The message of a `Syntax` error; panics on any other outcome.
fn syntax(text: &str) -> String {
    match err(text) {
        ConfigError::Syntax { path, message } => {
            assert_eq!(path, Path::new(PATH));
            message
        }
        other => panic!("expected ConfigError::Syntax, got {other:?}"),
    }
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// `[node]` with the three required keys, one of them replaced or removed.
fn node_with(name: Option<&str>, role: Option<&str>, address: Option<&str>) -> String {
    let mut text = String::from("[node]\n");
    for (key, value) in [("name", name), ("role", role), ("address", address)] {
        if let Some(value) = value {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

fn defaults_for(path: &str) -> Config {
    Config {
        path: PathBuf::from(path),
        node: Node {
            name: "ha-a".into(),
            role: Role::Primary,
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            interface: None,
            state_dir: PathBuf::from("/var/lib/hamon"),
            run_dir: PathBuf::from("/run/hamon"),
        },
        heartbeat: Heartbeat {
            port: 8083,
            interval: Duration::from_millis(5000),
            missed: 3,
            grace: Duration::from_millis(10_000),
            probe_timeout: Duration::from_millis(3000),
            max_clock_skew: Duration::from_millis(30_000),
            paths: Vec::new(),
        },
        health_monitor: HealthMonitor {
            port: 8082,
            tls: true,
            session_ttl: Duration::from_secs(900),
            max_connections: 256,
            max_connections_per_client: 32,
            metrics_scrapers: Vec::new(),
        },
        failback: Failback {
            data_gap: Duration::from_secs(24 * 3600),
            copy_retry: Duration::from_millis(300_000),
        },
        hooks: Hooks {
            activate: None,
            deactivate: None,
            full_copy: None,
            timeout: Duration::from_millis(60_000),
        },
        log: Log {
            level: LogLevel::Info,
            file: true,
        },
        vip: Vip {
            burst_count: 5,
            burst_gap: Duration::from_millis(200),
            refresh: None,
        },
        services: Vec::new(),
        database: None,
        disk: Disk {
            paths: vec![PathBuf::from("/var/lib/hamon")],
            interval: Duration::from_millis(30_000),
            warn_used_percent: 85,
            critical_used_percent: 95,
            warn_free_bytes: 0,
            critical_free_bytes: 0,
        },
        nic: Nic {
            track: Vec::new(),
            hold: Duration::from_millis(2_000),
        },
        replication: default_replication(),
        notify: Notify::default(),
        witness: None,
        fencing: None,
        arbiter: None,
    }
}

#[test]
fn minimal_file_gives_all_defaults() {
    assert_eq!(ok(MINIMAL), defaults_for(PATH));
}

#[test]
fn empty_sections_give_defaults() {
    let text = with("[heartbeat]\n[health_monitor]\n[failback]\n[hooks]\n[log]\n");
    assert_eq!(ok(&text), defaults_for(PATH));
}

#[test]
fn example_file_parses_to_expected_values() {
    let mut expected = defaults_for(PATH);
    expected.node.interface = Some("eth0".into());
    expected.hooks.activate = Some(vec!["/usr/lib/hamon/activate".into()]);
    expected.hooks.deactivate = Some(vec!["/usr/lib/hamon/deactivate".into()]);
    expected.hooks.full_copy = Some(vec!["/usr/lib/hamon/full-copy".into()]);
    assert_eq!(ok(EXAMPLE), expected);
}

#[test]
fn example_file_sets_every_key() {
    // Each key of the schema must appear (uncommented) in the example.
    let keys = [
        "name",
        "role",
        "address",
        "interface",
        "state_dir",
        "run_dir",
        "port",
        "interval_ms",
        "missed",
        "grace_ms",
        "probe_timeout_ms",
        "max_clock_skew_ms",
        "tls",
        "data_gap_hours",
        "copy_retry_ms",
        "activate",
        "deactivate",
        "full_copy",
        "timeout_ms",
        "level",
    ];
    for key in keys {
        let prefix = format!("{key} = ");
        assert!(
            EXAMPLE.lines().any(|line| line.starts_with(&prefix)),
            "example file does not set {key}"
        );
    }
    for section in [
        "node",
        "heartbeat",
        "health_monitor",
        "failback",
        "hooks",
        "log",
        "vip",
    ] {
        let header = format!("[{section}]");
        assert!(EXAMPLE.lines().any(|line| line == header), "no {header}");
    }
}

#[test]
fn every_key_is_read_into_its_own_field() {
    let text = r#"
[node]
name = "node_2.b-c"
role = "secondary"
address = "2001:db8::2"
interface = "bond0.100"
state_dir = "/srv/hamon/state"
run_dir = "/var/run/hamon2"

[heartbeat]
port = 9001
interval_ms = 1001
missed = 7
grace_ms = 2002
probe_timeout_ms = 503
max_clock_skew_ms = 4004

[health_monitor]
port = 9443
tls = false
session_ttl_secs = 120
max_connections = 300
max_connections_per_client = 7

[vip]
burst_count = 9
burst_gap_ms = 33
refresh_ms = 10000

[failback]
data_gap_hours = 3
copy_retry_ms = 60006

[hooks]
activate = ["/opt/hook", "up", "--fast"]
deactivate = ["/opt/hook", "down"]
full_copy = ["/usr/bin/rsync", "-a", "peer:/data/", "/data/"]
timeout_ms = 7007

[log]
level = "trace"
file = false
"#;
    let expected = Config {
        path: PathBuf::from(PATH),
        node: Node {
            name: "node_2.b-c".into(),
            role: Role::Secondary,
            address: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            interface: Some("bond0.100".into()),
            state_dir: PathBuf::from("/srv/hamon/state"),
            run_dir: PathBuf::from("/var/run/hamon2"),
        },
        heartbeat: Heartbeat {
            port: 9001,
            interval: Duration::from_millis(1001),
            missed: 7,
            grace: Duration::from_millis(2002),
            probe_timeout: Duration::from_millis(503),
            max_clock_skew: Duration::from_millis(4004),
            paths: Vec::new(),
        },
        health_monitor: HealthMonitor {
            port: 9443,
            tls: false,
            session_ttl: Duration::from_secs(120),
            max_connections: 300,
            max_connections_per_client: 7,
            metrics_scrapers: Vec::new(),
        },
        failback: Failback {
            data_gap: Duration::from_secs(3 * 3600),
            copy_retry: Duration::from_millis(60_006),
        },
        hooks: Hooks {
            activate: Some(vec!["/opt/hook".into(), "up".into(), "--fast".into()]),
            deactivate: Some(vec!["/opt/hook".into(), "down".into()]),
            full_copy: Some(vec![
                "/usr/bin/rsync".into(),
                "-a".into(),
                "peer:/data/".into(),
                "/data/".into(),
            ]),
            timeout: Duration::from_millis(7007),
        },
        log: Log {
            level: LogLevel::Trace,
            file: false,
        },
        vip: Vip {
            burst_count: 9,
            burst_gap: Duration::from_millis(33),
            refresh: Some(Duration::from_millis(10_000)),
        },
        services: Vec::new(),
        database: None,
        disk: Disk {
            paths: vec![PathBuf::from("/srv/hamon/state")],
            interval: Duration::from_millis(30_000),
            warn_used_percent: 85,
            critical_used_percent: 95,
            warn_free_bytes: 0,
            critical_free_bytes: 0,
        },
        nic: Nic {
            track: Vec::new(),
            hold: Duration::from_millis(2_000),
        },
        replication: default_replication(),
        notify: Notify::default(),
        witness: None,
        fencing: None,
        arbiter: None,
    };
    assert_eq!(ok(text), expected);
    assert_eq!(
        ok(text).socket_path(),
        PathBuf::from("/var/run/hamon2/hamon.sock")
    );
}

type Getter = fn(&Config) -> u128;

/// (section, key, min, max, how to read the accepted value back).
const RANGES: &[(&str, &str, i64, Option<i64>, Getter)] = &[
    ("heartbeat", "port", 1, Some(65535), |c| {
        c.heartbeat.port.into()
    }),
    ("heartbeat", "interval_ms", 10, Some(600_000), |c| {
        c.heartbeat.interval.as_millis()
    }),
    ("heartbeat", "missed", 1, Some(100), |c| {
        c.heartbeat.missed.into()
    }),
    ("heartbeat", "grace_ms", 0, Some(3_600_000), |c| {
        c.heartbeat.grace.as_millis()
    }),
    ("heartbeat", "probe_timeout_ms", 1, Some(600_000), |c| {
        c.heartbeat.probe_timeout.as_millis()
    }),
    (
        "heartbeat",
        "max_clock_skew_ms",
        1000,
        Some(3_600_000),
        |c| c.heartbeat.max_clock_skew.as_millis(),
    ),
    ("health_monitor", "port", 1, Some(65535), |c| {
        c.health_monitor.port.into()
    }),
    ("failback", "data_gap_hours", 1, Some(8760), |c| {
        u128::from(c.failback.data_gap.as_secs() / 3600)
    }),
    ("failback", "copy_retry_ms", 1000, None, |c| {
        c.failback.copy_retry.as_millis()
    }),
    ("hooks", "timeout_ms", 100, None, |c| {
        c.hooks.timeout.as_millis()
    }),
];

#[test]
fn range_bounds_are_accepted_and_read_back() {
    for &(section, key, min, max, get) in RANGES {
        let mut bounds = vec![min];
        bounds.extend(max);
        for value in bounds {
            let config = ok(&with(&format!("[{section}]\n{key} = {value}\n")));
            assert_eq!(get(&config), value as u128, "{section}.{key} = {value}");
        }
    }
}

#[test]
fn unbounded_keys_accept_large_values() {
    let text = with("[failback]\ncopy_retry_ms = 86400000\n[hooks]\ntimeout_ms = 3600000\n");
    let config = ok(&text);
    assert_eq!(config.failback.copy_retry, Duration::from_secs(86_400));
    assert_eq!(config.hooks.timeout, Duration::from_secs(3_600));
}

#[test]
fn range_bounds_are_rejected_with_the_right_key() {
    for &(section, key, min, max, _) in RANGES {
        let mut outside = vec![min - 1, -1, i64::MIN];
        if let Some(max) = max {
            outside.extend([max + 1, i64::MAX]);
        }
        outside.sort_unstable();
        outside.dedup();
        for value in outside {
            let (got_key, reason) = invalid(&with(&format!("[{section}]\n{key} = {value}\n")));
            assert_eq!(
                got_key,
                format!("{section}.{key}"),
                "{section}.{key} = {value}"
            );
            let expected = match max {
                Some(max) => format!("must be between {min} and {max} (got {value})"),
                None => format!("must be at least {min} (got {value})"),
            };
            assert_eq!(reason, expected, "{section}.{key} = {value}");
        }
    }
}

#[test]
fn invalid_error_display_names_file_key_and_reason() {
    let err = err(&with("[heartbeat]\ninterval_ms = 5\n"));
    assert_eq!(
        err.to_string(),
        "/etc/hamon/hamon.toml: heartbeat.interval_ms: must be between 10 and 600000 (got 5)"
    );
    assert_eq!(err.path(), Path::new(PATH));
}

#[test]
fn unknown_keys_are_rejected_naming_them() {
    let cases = [
        (
            "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.1\"\nbogus = 1\n",
            "node.bogus",
            (5, 1),
        ),
        (
            "[heartbeat]\nintervall_ms = 10\n",
            "heartbeat.intervall_ms",
            (6, 1),
        ),
        (
            "[health_monitor]\nTLS = true\n",
            "health_monitor.TLS",
            (6, 1),
        ),
        ("[failback]\ndata_gap = 1\n", "failback.data_gap", (6, 1)),
        ("[hooks]\nstart = [\"/bin/true\"]\n", "hooks.start", (6, 1)),
        ("[log]\npath = \"/var/log/hamon\"\n", "log.path", (6, 1)),
        ("[logging]\nlevel = \"info\"\n", "logging", (5, 2)),
    ];
    for (extra, key, (line, column)) in cases {
        let text = if extra.starts_with("[node]") {
            extra.to_owned()
        } else {
            with(extra)
        };
        let message = syntax(&text);
        let bare = key.rsplit('.').next().unwrap_or(key);
        assert!(
            message.starts_with(&format!(
                "line {line}, column {column}: {key}: unknown field `{bare}`"
            )),
            "{message}"
        );
    }
    // A top-level key outside any table.
    let message = syntax(&format!("debug = true\n{MINIMAL}"));
    assert!(
        message.starts_with("line 1, column 1: debug: unknown field `debug`"),
        "{message}"
    );
}

#[test]
fn syntax_error_display_names_file_and_line() {
    let err = err("[node]\nname = \"ha-a\"\nrole = = \"primary\"\n");
    let shown = err.to_string();
    assert!(
        shown.starts_with("/etc/hamon/hamon.toml: line 3, column 8: "),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "message should be one line: {shown}");
}

#[test]
fn syntax_errors_report_their_line() {
    // Unterminated string on line 4.
    let message = syntax("[node]\nname = \"ha-a\"\nrole = \"primary\"\naddress = \"192.0.2.1\n");
    assert!(message.starts_with("line 4, "), "{message}");
    // Duplicate key on line 5.
    let message = syntax(&with("name = \"again\"\n"));
    assert!(message.starts_with("line 5, "), "{message}");
    assert!(message.contains("name"), "{message}");
    // Unclosed table header on line 5.
    let message = syntax(&with("[heartbeat\nport = 1\n"));
    assert!(message.starts_with("line 5, "), "{message}");
}

#[test]
fn wrong_types_are_rejected_naming_the_key_and_line() {
    let cases = [
        ("[health_monitor]\ntls = \"yes\"\n", "health_monitor.tls"),
        ("[heartbeat]\nport = \"8083\"\n", "heartbeat.port"),
        ("[heartbeat]\ninterval_ms = 5.5\n", "heartbeat.interval_ms"),
        ("[hooks]\nactivate = \"/bin/true\"\n", "hooks.activate"),
        ("[hooks]\nactivate = [\"/bin/echo\", 5]\n", "hooks.activate"),
        ("[log]\nlevel = 3\n", "log.level"),
    ];
    for (extra, key) in cases {
        let message = syntax(&with(extra));
        assert!(
            message.starts_with("line 6, column ")
                && message.contains(&format!(": {key}: invalid type")),
            "{message}"
        );
    }
    let message = syntax("[node]\nname = 7\nrole = \"primary\"\naddress = \"192.0.2.1\"\n");
    assert!(
        message.starts_with("line 2, column 8: node.name: invalid type"),
        "{message}"
    );
    let message = syntax("node = \"ha-a\"\n");
    assert!(
        message.starts_with("line 1, column 8: node: invalid type"),
        "{message}"
    );
}

#[test]
fn missing_required_keys_are_rejected() {
    let name = Some("\"ha-a\"");
    let role = Some("\"primary\"");
    let address = Some("\"192.0.2.11\"");
    for (text, key) in [
        (node_with(None, role, address), "node.name"),
        (node_with(name, None, address), "node.role"),
        (node_with(name, role, None), "node.address"),
    ] {
        assert_eq!(invalid(&text), (key.to_owned(), "is required".to_owned()));
    }
    let (key, reason) = invalid("[heartbeat]\nport = 1\n");
    assert_eq!(key, "node");
    assert_eq!(reason, "required section [node] is missing");
    assert_eq!(invalid("").0, "node");
}

#[test]
fn bad_role_is_rejected() {
    for role in ["Primary", "master", "", "primary "] {
        let text = node_with(
            Some("\"a\""),
            Some(&format!("{role:?}")),
            Some("\"192.0.2.1\""),
        );
        let (key, reason) = invalid(&text);
        assert_eq!(key, "node.role");
        assert_eq!(
            reason,
            format!("must be \"primary\" or \"secondary\" (got {role:?})")
        );
    }
    let text = node_with(Some("\"a\""), Some("\"secondary\""), Some("\"192.0.2.1\""));
    assert_eq!(ok(&text).node.role, Role::Secondary);
}

#[test]
fn bad_address_is_rejected() {
    for address in [
        "ha-b.example.com",
        "192.0.2.300",
        "192.0.2",
        "192.0.2.11:8083",
        "[2001:db8::1]",
        "fe80::1%eth0",
        "",
    ] {
        let text = node_with(
            Some("\"a\""),
            Some("\"primary\""),
            Some(&format!("{address:?}")),
        );
        let (key, reason) = invalid(&text);
        assert_eq!(key, "node.address");
        assert!(reason.contains(&format!("(got {address:?})")), "{reason}");
    }
    let text = node_with(Some("\"a\""), Some("\"primary\""), Some("\"::1\""));
    assert_eq!(ok(&text).node.address, IpAddr::V6(Ipv6Addr::LOCALHOST));
}

#[test]
fn node_name_is_checked() {
    let longest = "n".repeat(63);
    let text = node_with(
        Some(&format!("{longest:?}")),
        Some("\"primary\""),
        Some("\"192.0.2.1\""),
    );
    assert_eq!(ok(&text).node.name, longest);
    for name in [
        "n".repeat(64),
        String::new(),
        "ha a".into(),
        "ha/a".into(),
        "hä".into(),
        "ha:a".into(),
    ] {
        let text = node_with(
            Some(&format!("{name:?}")),
            Some("\"primary\""),
            Some("\"192.0.2.1\""),
        );
        let (key, reason) = invalid(&text);
        assert_eq!(key, "node.name");
        assert!(reason.starts_with("must be 1 to 63 characters"), "{reason}");
        assert!(reason.ends_with(&format!("(got {name:?})")), "{reason}");
    }
}

#[test]
fn interface_is_checked() {
    let longest = "e".repeat(15);
    let config = ok(&format!("{MINIMAL}interface = {longest:?}\n"));
    assert_eq!(config.node.interface.as_deref(), Some(longest.as_str()));
    for nic in [
        "e".repeat(16),
        String::new(),
        "eth/0".into(),
        "eth 0".into(),
        "eth0\t".into(),
    ] {
        let (key, reason) = invalid(&format!("{MINIMAL}interface = {nic:?}\n"));
        assert_eq!(key, "node.interface");
        assert!(reason.ends_with(&format!("(got {nic:?})")), "{reason}");
    }
}

#[test]
fn relative_directories_are_rejected() {
    for key in ["state_dir", "run_dir"] {
        for dir in ["var/lib/hamon", "./hamon", "", "~/hamon"] {
            let (got_key, reason) = invalid(&format!("{MINIMAL}{key} = {dir:?}\n"));
            assert_eq!(got_key, format!("node.{key}"));
            assert_eq!(reason, format!("must be an absolute path (got {dir:?})"));
        }
        let (got_key, reason) = invalid(&format!("{MINIMAL}{key} = \"/a\\u0000b\"\n"));
        assert_eq!(got_key, format!("node.{key}"));
        assert_eq!(reason, "must not contain a NUL character");
    }
}

#[test]
fn socket_path_is_in_run_dir() {
    assert_eq!(
        ok(MINIMAL).socket_path(),
        PathBuf::from("/run/hamon/hamon.sock")
    );
}

#[test]
fn hook_argv_must_be_non_empty_with_absolute_program() {
    for hook in ["activate", "deactivate", "full_copy"] {
        let key = format!("hooks.{hook}");

        let (got_key, reason) = invalid(&with(&format!("[hooks]\n{hook} = []\n")));
        assert_eq!(got_key, key);
        assert!(reason.starts_with("must not be empty"), "{reason}");

        for program in ["usr/lib/hamon/x", "activate", "./x", ""] {
            let (got_key, reason) = invalid(&with(&format!(
                "[hooks]\n{hook} = [{program:?}, \"arg\"]\n"
            )));
            assert_eq!(got_key, key);
            assert_eq!(
                reason,
                format!("argv[0] must be an absolute path (got {program:?})")
            );
        }

        let (got_key, reason) = invalid(&with(&format!(
            "[hooks]\n{hook} = [\"/bin/x\", \"a\\u0000\"]\n"
        )));
        assert_eq!(got_key, key);
        assert_eq!(reason, "argv[1] must not contain a NUL character");

        let config = ok(&with(&format!(
            "[hooks]\n{hook} = [\"/bin/x\", \"\", \"two words\"]\n"
        )));
        let argv = match hook {
            "activate" => config.hooks.activate,
            "deactivate" => config.hooks.deactivate,
            _ => config.hooks.full_copy,
        };
        assert_eq!(
            argv,
            Some(vec![
                "/bin/x".to_owned(),
                String::new(),
                "two words".to_owned()
            ])
        );
    }
}

#[test]
fn log_level_is_checked() {
    for (level, expected) in [
        ("error", LogLevel::Error),
        ("info", LogLevel::Info),
        ("trace", LogLevel::Trace),
    ] {
        let config = ok(&with(&format!("[log]\nlevel = {level:?}\n")));
        assert_eq!(config.log.level, expected);
        assert_eq!(expected.to_string(), level);
    }
    for level in ["debug", "INFO", "warn", ""] {
        let (key, reason) = invalid(&with(&format!("[log]\nlevel = {level:?}\n")));
        assert_eq!(key, "log.level");
        assert_eq!(
            reason,
            format!("must be \"error\", \"info\" or \"trace\" (got {level:?})")
        );
    }
}

#[test]
fn resolve_path_precedence() {
    let cli = Path::new("/tmp/cli.toml");
    let env = OsStr::new("/tmp/env.toml");
    assert_eq!(
        resolve_path_from(Some(cli), Some(env)),
        PathBuf::from("/tmp/cli.toml")
    );
    assert_eq!(
        resolve_path_from(Some(cli), None),
        PathBuf::from("/tmp/cli.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some(env)),
        PathBuf::from("/tmp/env.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some(OsStr::new(""))),
        PathBuf::from(DEFAULT_PATH)
    );
    assert_eq!(resolve_path_from(None, None), PathBuf::from(DEFAULT_PATH));
    assert_eq!(DEFAULT_PATH, "/etc/hamon/hamon.toml");
}

/// A file in the temp dir that is removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("hamon-config-test-{}-{name}", std::process::id()));
        if let Err(err) = std::fs::write(&path, contents) {
            panic!("cannot write {}: {err}", path.display());
        }
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_the_file_and_records_its_path() {
    let file = TempFile::new("load.toml", MINIMAL.as_bytes());
    let path = file.0.to_string_lossy().into_owned();
    match Config::load(&file.0) {
        Ok(config) => assert_eq!(config, defaults_for(&path)),
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn load_errors_name_the_file() {
    let missing = Path::new("/nonexistent/hamon/hamon.toml");
    match Config::load(missing) {
        Err(err @ ConfigError::Read { .. }) => {
            let shown = err.to_string();
            assert!(
                shown.starts_with(
                    "/nonexistent/hamon/hamon.toml: cannot read the configuration file: "
                ),
                "{shown}"
            );
            assert!(std::error::Error::source(&err).is_some());
        }
        other => panic!("expected ConfigError::Read, got {other:?}"),
    }

    let not_utf8 = TempFile::new("latin1.toml", b"[node]\nname = \"h\xe4\"\n");
    assert!(matches!(
        Config::load(&not_utf8.0),
        Err(ConfigError::Read { .. })
    ));

    let bad = TempFile::new("bad.toml", b"[heartbeat]\nmissed = 0\n");
    match Config::load(&bad.0) {
        Err(err) => assert_eq!(err.path(), bad.0.as_path()),
        Ok(config) => panic!("expected an error, got {config:?}"),
    }
}

fn default_replication() -> Replication {
    Replication {
        frequent_interval: Duration::from_secs(11),
        batch_interval: Duration::from_secs(500),
        hint_delay: Duration::from_millis(200),
        max_manifest_entries: 1_000_000,
        max_manifest_bytes: 256 * 1024 * 1024,
        max_file_bytes: 1 << 40,
        copy_timeout: Duration::from_secs(4 * 3600),
        sets: Vec::new(),
    }
}

#[test]
fn sync_sets_are_read_with_their_class_and_globs() {
    let text = format!(
        "{MINIMAL}\n[replication]\nfrequent_interval_ms = 2000\n\n\
         [[sync]]\nname = \"conf\"\npath = \"/etc/appliance\"\ninclude = [\"**/*.conf\"]\n\
         exclude = [\"tmp/**\"]\n\n\
         [[sync]]\nname = \"reports\"\npath = \"/var/lib/appliance/reports\"\nclass = \"batch\"\n\
         keep_setid = true\n"
    );
    let r = ok(&text).replication;
    assert_eq!(r.frequent_interval, Duration::from_secs(2));
    assert_eq!(r.batch_interval, Duration::from_secs(500));
    assert_eq!(
        r.sets,
        vec![
            SyncSet {
                name: "conf".into(),
                path: "/etc/appliance".into(),
                include: vec!["**/*.conf".into()],
                exclude: vec!["tmp/**".into()],
                class: SyncClass::Frequent,
                keep_setid: false,
            },
            SyncSet {
                name: "reports".into(),
                path: "/var/lib/appliance/reports".into(),
                include: Vec::new(),
                exclude: Vec::new(),
                class: SyncClass::Batch,
                keep_setid: true,
            },
        ]
    );
}

#[test]
fn bad_sync_sets_are_refused_naming_the_key() {
    let set = |body: &str| format!("{MINIMAL}\n[[sync]]\n{body}\n");
    for (body, key, words) in [
        ("path = \"/data\"", "sync[0].name", "required"),
        (
            "name = \"a/b\"\npath = \"/data\"",
            "sync[0].name",
            "letters",
        ),
        ("name = \"a\"", "sync[0].path", "required"),
        ("name = \"a\"\npath = \"data\"", "sync[0].path", "absolute"),
        ("name = \"a\"\npath = \"/\"", "sync[0].path", "other than /"),
        (
            "name = \"a\"\npath = \"/data/../etc\"",
            "sync[0].path",
            "absolute",
        ),
        (
            "name = \"a\"\npath = \"/data\"\nclass = \"daily\"",
            "sync[0].class",
            "frequent",
        ),
        (
            "name = \"a\"\npath = \"/data\"\ninclude = [\"/abs\"]",
            "sync[0].include",
            "relative",
        ),
        (
            "name = \"a\"\npath = \"/data\"\nexclude = [\"[z-a\"]",
            "sync[0].exclude",
            "glob",
        ),
    ] {
        let (k, reason) = invalid(&set(body));
        assert!(k.starts_with(key), "{body}: key {k} (reason {reason})");
        assert!(reason.contains(words), "{body}: {reason}");
    }
    let twice = format!(
        "{MINIMAL}\n[[sync]]\nname = \"a\"\npath = \"/data\"\n[[sync]]\nname = \"a\"\npath = \"/other\"\n"
    );
    assert_eq!(invalid(&twice).0, "sync[1].name");
    let nested = format!(
        "{MINIMAL}\n[[sync]]\nname = \"a\"\npath = \"/data\"\n[[sync]]\nname = \"b\"\npath = \"/data/x\"\n"
    );
    let (k, reason) = invalid(&nested);
    assert_eq!(k, "sync[1].path");
    assert!(reason.contains("overlaps"), "{reason}");
}

#[test]
fn notify_channels_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}\n[notify.severity]\ndatabase_unreachable = \"major\"\n\
         [notify.syslog]\nremote = \"tcp://192.0.2.50:6514\"\nfacility = \"local4\"\n\
         min_severity = \"warning\"\n\
         [notify.mail]\nsmtp = \"192.0.2.25:2525\"\nfrom = \"ha@example.com\"\n\
         to = [\"ops@example.com\"]\nuser = \"ha\"\npassword = \"secret\"\n\
         [[notify.snmp.target]]\naddress = \"192.0.2.162\"\n\
         [[notify.snmp.target]]\naddress = \"192.0.2.163:1162\"\nversion = \"v3\"\n\
         user = \"ops\"\nauth = \"sha1\"\nauth_password = \"authpass1\"\n\
         privacy_password = \"privpass1\"\n"
    );
    let n = ok(&text).notify;
    let syslog = n.syslog.unwrap();
    assert_eq!(syslog.facility, "local4");
    assert_eq!(
        syslog.remote.map(|(_, a)| a.to_string()),
        Some("192.0.2.50:6514".into())
    );
    match n.mail.unwrap().transport {
        crate::notify::mail::MailTransport::Smtp(s) => {
            assert_eq!((s.host.as_str(), s.port), ("192.0.2.25", 2525));
            assert_eq!(s.auth.map(|a| a.user), Some("ha".into()));
        }
        other => panic!("{other:?}"),
    }
    let snmp = n.snmp.unwrap();
    assert_eq!(snmp.targets[0].addr.port(), 162);
    assert!(matches!(
        snmp.targets[1].version,
        crate::notify::snmp::Version::V3(_)
    ));
    assert!(snmp.cold_start);
    assert_eq!(
        n.routing.severity("database_unreachable"),
        crate::notify::NoticeSeverity::Major
    );
    for (body, key) in [
        ("[notify.severity]\nno_such_event = \"major\"", "notify.severity.no_such_event"),
        ("[notify.syslog]\nremote = \"192.0.2.50:514\"", "notify.syslog.remote"),
        ("[notify.syslog]\nfacility = \"kitchen\"", "notify.syslog.facility"),
        ("[notify.mail]\nto = [\"a@example.com\"]", "notify.mail.from"),
        (
            "[notify.mail]\nfrom = \"a@example.com\"\nsecurity = \"none\"\nuser = \"u\"\npassword = \"p\"",
            "notify.mail.security",
        ),
        ("[[notify.snmp.target]]\naddress = \"192.0.2.1\"\nversion = \"v1\"", "notify.snmp.target[0].version"),
        (
            "[[notify.snmp.target]]\naddress = \"192.0.2.1\"\nversion = \"v3\"\nuser = \"u\"\nauth_password = \"short\"",
            "notify.snmp.target[0].auth_password",
        ),
    ] {
        let (k, reason) = invalid(&format!("{MINIMAL}\n{body}\n"));
        assert_eq!(k, key, "{body}: {reason}");
    }
}

#[test]
fn inline_secrets_need_a_file_only_root_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("hamon-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hamon.toml");
    let chmod = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    let mail = "[notify.mail]\nsmtp = \"192.0.2.25:587\"\nfrom = \"ha@example.com\"\n\
                to = [\"ops@example.com\"]\nuser = \"u\"\n";
    // Inline, in a file others can read: refused, with the key and the fix.
    std::fs::write(&file, with(&format!("{mail}password = \"Mail-Pass-1\"\n"))).unwrap();
    chmod(&file, 0o644).unwrap();
    let e = Config::load(&file)
        .expect_err("an exposed password")
        .to_string();
    assert!(e.contains("notify.mail.password"), "{e}");
    assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    assert!(e.contains("notify.mail.password_file"), "{e}");
    assert!(
        !e.contains("Mail-Pass-1"),
        "the error shows the secret: {e}"
    );
    // Group-readable is no better; root only is fine.
    chmod(&file, 0o640).unwrap();
    assert!(Config::load(&file).is_err());
    chmod(&file, 0o600).unwrap();
    assert!(Config::load(&file).is_ok());
    // In a file of its own, the configuration may be world-readable.
    let secret = dir.join("mail-pass");
    std::fs::write(&secret, "Mail-Pass-1\n").unwrap();
    chmod(&secret, 0o600).unwrap();
    std::fs::write(
        &file,
        with(&format!("{mail}password_file = \"{}\"\n", secret.display())),
    )
    .unwrap();
    chmod(&file, 0o644).unwrap();
    assert!(Config::load(&file).is_ok());
    // SNMP v3 passwords likewise, and they have `_file` keys too.
    let snmp = |auth: &str| {
        format!(
            "[notify.snmp]\n[[notify.snmp.target]]\naddress = \"192.0.2.162\"\nversion = \"v3\"\n\
             user = \"ops\"\n{auth}\n"
        )
    };
    std::fs::write(&file, with(&snmp("auth_password = \"Auth-Pass-1\""))).unwrap();
    let e = Config::load(&file).expect_err("exposed").to_string();
    assert!(e.contains("notify.snmp.target[0].auth_password"), "{e}");
    std::fs::write(
        &file,
        with(&snmp(&format!(
            "auth_password_file = \"{}\"",
            secret.display()
        ))),
    )
    .unwrap();
    assert!(Config::load(&file).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn heartbeat_paths_are_read_and_checked() {
    let c = ok(&with(
        "[heartbeat]\npaths = [{ local = \"198.51.100.11\", peer = \"198.51.100.12\" }, \
         { local = \"2001:db8:1::11\", peer = \"2001:db8:1::12\" }]\n",
    ));
    assert_eq!(c.heartbeat.paths.len(), 2);
    assert_eq!(c.heartbeat.paths[0].peer.to_string(), "198.51.100.12");
    assert!(defaults_for(PATH).heartbeat.paths.is_empty());
    for (paths, key, reason) in [
        (
            "[{ local = \"198.51.100.11\" }]",
            "heartbeat.paths[0].peer",
            "is required",
        ),
        (
            "[{ local = \"198.51.100.11\", peer = \"2001:db8::12\" }]",
            "heartbeat.paths[0].peer",
            "same family",
        ),
        (
            "[{ local = \"198.51.100.11\", peer = \"198.51.100.11\" }]",
            "heartbeat.paths[0].peer",
            "differ",
        ),
        (
            "[{ local = \"0.0.0.0\", peer = \"198.51.100.12\" }]",
            "heartbeat.paths[0].local",
            "unicast",
        ),
        (
            "[{ local = \"eth1\", peer = \"198.51.100.12\" }]",
            "heartbeat.paths[0].local",
            "IP address",
        ),
        (
            "[{ local = \"198.51.100.11\", peer = \"198.51.100.12\" }, \
             { local = \"198.51.100.21\", peer = \"198.51.100.12\" }]",
            "heartbeat.paths[1]",
            "repeats",
        ),
        (
            "[{ local = \"198.51.100.1\", peer = \"198.51.100.2\" }, \
             { local = \"198.51.100.3\", peer = \"198.51.100.4\" }, \
             { local = \"198.51.100.5\", peer = \"198.51.100.6\" }, \
             { local = \"198.51.100.7\", peer = \"198.51.100.8\" }, \
             { local = \"198.51.100.9\", peer = \"198.51.100.10\" }]",
            "heartbeat.paths",
            "at most 4",
        ),
    ] {
        let (got_key, got_reason) = invalid(&with(&format!("[heartbeat]\npaths = {paths}\n")));
        assert_eq!(got_key, key, "{paths}");
        assert!(got_reason.contains(reason), "{paths}: {got_reason}");
    }
    let unknown = syntax(&with(
        "[heartbeat]\npaths = [{ local = \"198.51.100.11\", peer = \"198.51.100.12\", nic = \"eth1\" }]\n",
    ));
    assert!(unknown.contains("nic"), "{unknown}");
}

#[test]
fn witness_is_read_and_checked() {
    assert!(defaults_for(PATH).witness.is_none());
    let w = ok(&with(
        "[heartbeat]\ninterval_ms = 200\nmissed = 4\n[witness]\naddress = \"192.0.2.1\"\n",
    ))
    .witness
    .unwrap();
    assert_eq!(w.address.to_string(), "192.0.2.1");
    // Its timing follows the heartbeat's unless it is given.
    assert_eq!((w.interval.as_millis(), w.missed), (200, 4));
    let w = ok(&with(
        "[witness]\naddress = \"2001:db8::1\"\ninterval_ms = 500\nmissed = 2\n",
    ))
    .witness
    .unwrap();
    assert_eq!((w.interval.as_millis(), w.missed), (500, 2));
    for (text, key) in [
        ("[witness]\n", "witness.address"),
        ("[witness]\naddress = \"gateway\"\n", "witness.address"),
        ("[witness]\naddress = \"127.0.0.1\"\n", "witness.address"),
        (
            "[witness]\naddress = \"192.0.2.1\"\ninterval_ms = 5\n",
            "witness.interval_ms",
        ),
        (
            "[witness]\naddress = \"192.0.2.1\"\nmissed = 0\n",
            "witness.missed",
        ),
        // Slower than the heartbeat's silence and grace (the defaults: 15 s + 10 s).
        (
            "[witness]\naddress = \"192.0.2.1\"\ninterval_ms = 60000\nmissed = 3\n",
            "witness.interval_ms",
        ),
        // This server itself (MINIMAL's address).
        ("[witness]\naddress = \"192.0.2.11\"\n", "witness.address"),
    ] {
        assert_eq!(invalid(&with(text)).0, key, "{text}");
    }
}

#[test]
fn fencing_is_read_and_checked() {
    assert!(defaults_for(PATH).fencing.is_none());
    let f = ok(&with(
        "[fencing]\ncommand = [\"/usr/bin/ipmitool\", \"chassis\", \"power\", \"off\"]\n",
    ))
    .fencing
    .unwrap();
    assert_eq!(f.command[0], "/usr/bin/ipmitool");
    assert_eq!(f.timeout.as_millis(), 30_000);
    assert!(!f.proceed_on_failure, "withhold by default");
    let f = ok(&with(
        "[fencing]\ncommand = [\"/bin/true\"]\ntimeout_ms = 500\non_failure = \"proceed\"\n",
    ))
    .fencing
    .unwrap();
    assert!(f.proceed_on_failure && f.timeout.as_millis() == 500);
    for (text, key) in [
        ("[fencing]\n", "fencing.command"),
        ("[fencing]\ncommand = [\"ipmitool\"]\n", "fencing.command"),
        (
            "[fencing]\ncommand = [\"/bin/true\"]\ntimeout_ms = 5\n",
            "fencing.timeout_ms",
        ),
        (
            "[fencing]\ncommand = [\"/bin/true\"]\non_failure = \"maybe\"\n",
            "fencing.on_failure",
        ),
    ] {
        assert_eq!(invalid(&with(text)).0, key, "{text}");
    }
}

#[test]
fn metrics_scrapers_are_addresses_or_networks_and_bad_ones_are_named() {
    let net = |t: &str| Cidr::parse(t);
    let ip = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
    let one = net("192.0.2.7").unwrap();
    assert!(one.contains(ip("192.0.2.7")));
    assert!(!one.contains(ip("192.0.2.8")));
    let lan = net("198.51.100.0/24").unwrap();
    assert!(lan.contains(ip("198.51.100.200")));
    assert!(
        lan.contains(ip("::ffff:198.51.100.9")),
        "IPv4-mapped counts as IPv4"
    );
    assert!(!lan.contains(ip("198.51.101.1")));
    let v6 = net("2001:db8::/32").unwrap();
    assert!(v6.contains(ip("2001:db8:1::5")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(!v6.contains(ip("192.0.2.7")));
    assert!(net("0.0.0.0/0").unwrap().contains(ip("203.0.113.1")));
    assert!(net("::/0").unwrap().contains(ip("2001:db8::1")));
    for bad in [
        "198.51.100.1/24",
        "192.0.2.0/33",
        "example.org",
        "2001:db8::/129",
        "",
    ] {
        assert!(net(bad).is_err(), "{bad} accepted");
    }
    let err = parse(
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.1\"\n\
         [health_monitor]\nmetrics_scrapers = [\"192.0.2.9\", \"198.51.100.1/24\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("health_monitor.metrics_scrapers"), "{err}");
    assert!(err.contains("198.51.100.1/24"), "{err}");
}
