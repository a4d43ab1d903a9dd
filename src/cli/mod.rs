//! Command-line entry: `argv` -> one command family.

mod demo;
mod ha;

use crate::config::sandbox::{self, Sandbox};
use crate::config::Config;
use std::path::PathBuf;

pub const USAGE: &str = "\
hamon - high-availability agent for a pair of appliance servers

Usage:
  hamon agent                 run the agent (systemd starts this)
  hamon status [--json]       Health Monitor and service status (--json: the HTTP
                              API's /api/v1/status fields, and the CLI's own); with
                              the agent down, the state it last saved (exit 3)
  hamon ha <command>          HA commands (hamon ha --help)
  hamon config check          validate the configuration file, and say what the
                              running unit's sandbox would refuse of it
  hamon config init --seed F [--force]
                              write the configuration from a seed file (name,
                              role, address, interface); the first boot runs it
  hamon config dropin         print the systemd drop-in the configured features
                              need (hamon-generator writes it at boot)
  hamon vip release           remove this server's virtual IPs (systemd runs it
                              after the agent exits, however it exited)
  hamon nic-event ACTION DEV  tell the agent a NIC was added or removed (udev)
  hamon notify test [--channel mail|snmp|syslog]
                              send a test notification through each configured
                              channel (or one) now, and say what each receiver did
  hamon demo [--loopback]     run a local demo pair: in network namespaces with a
                              virtual IP as root, else on 127.0.0.2 / 127.0.0.3
  hamon --version | --help

Options:
  --config PATH               configuration file (default /etc/hamon/hamon.toml,
                              or $HAMON_CONFIG)
";

/// Pull `--config PATH` out of the arguments.
fn take_config(args: &mut Vec<String>) -> Result<Option<PathBuf>, String> {
    let Some(i) = args
        .iter()
        .position(|a| a == "--config" || a.starts_with("--config="))
    else {
        return Ok(None);
    };
    let a = args.remove(i);
    if let Some(v) = a.strip_prefix("--config=") {
        return Ok(Some(PathBuf::from(v)));
    }
    if i < args.len() {
        Ok(Some(PathBuf::from(args.remove(i))))
    } else {
        Err("--config needs a path".into())
    }
}

fn load(cli: Option<&std::path::Path>) -> Result<Config, String> {
    Config::load(&Config::resolve_path(cli)).map_err(|e| e.to_string())
}

/// Run the CLI; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let mut args = args.to_vec();
    let config = match take_config(&mut args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["--help"] | ["-h"] | ["help"] => {
            print!("{USAGE}");
            0
        }
        ["--version"] | ["-V"] | ["version"] => {
            println!("hamon {}", crate::version::Version::ours());
            0
        }
        ["agent"] => match load(config.as_deref()) {
            Ok(cfg) => match crate::agent::run(cfg) {
                Ok(()) => 0,
                Err(e) => fail(&e.to_string()),
            },
            Err(e) => fail(&e),
        },
        ["config", "check"] => match load(config.as_deref()) {
            Ok(cfg) => {
                println!("{}: OK", cfg.path.display());
                for warning in sandbox_warnings(&cfg) {
                    println!("warning: {warning}");
                }
                0
            }
            Err(e) => fail(&e),
        },
        ["config", "dropin"] => match load(config.as_deref()) {
            Ok(cfg) => {
                match Sandbox::for_config(&cfg).dropin(&cfg.path) {
                    Some(text) => print!("{text}"),
                    None => println!("# hamon.service's own privileges are enough"),
                }
                0
            }
            Err(e) => fail(&e),
        },
        ["config", "init", "--seed", seed, rest @ ..] => {
            let force = match rest {
                [] => false,
                ["--force"] => true,
                _ => return fail("usage: hamon config init --seed FILE [--force]"),
            };
            let out = Config::resolve_path(config.as_deref());
            match crate::config::seed::init(std::path::Path::new(seed), &out, force) {
                Ok(()) => {
                    println!("wrote {} from {seed}", out.display());
                    0
                }
                Err(e) => fail(&e),
            }
        }
        ["status"] => ha::status(config.as_deref(), false),
        ["status", "--json"] => ha::status(config.as_deref(), true),
        ["vip", "release"] => vip_release(config.as_deref()),
        ["nic-event", action, interface] => nic_event(config.as_deref(), action, interface),
        ["ha", rest @ ..] => ha::main(config.as_deref(), rest),
        ["notify", "test"] => ha::notify_test(config.as_deref(), None),
        ["notify", "test", "--channel", c] => ha::notify_test(config.as_deref(), Some(c)),
        ["demo", rest @ ..] => demo::main(rest),
        _ => {
            eprint!("hamon: unknown command {:?}\n\n{USAGE}", args.join(" "));
            2
        }
    }
}

/// systemd's generator protocol: `hamon-generator NORMAL EARLY LATE`.
/// Always succeeds: a generator that fails is reported at every boot and
/// helps nobody; a configuration that does not load is the agent's error to
/// report.
pub fn generator(args: &[String]) -> i32 {
    let Some(normal) = args.first() else {
        eprintln!("hamon-generator: usage: hamon-generator NORMAL-DIR [EARLY-DIR LATE-DIR]");
        return 0;
    };
    let config = Config::resolve_path(None);
    if let Err(e) = sandbox::generate(&config, std::path::Path::new(normal)) {
        eprintln!("hamon-generator: {e}");
    }
    0
}

/// What the running `hamon.service` would refuse of `cfg`, from systemctl's
/// view of the unit; nothing when systemd or the unit is not there to ask.
fn sandbox_warnings(cfg: &Config) -> Vec<String> {
    let wanted = Sandbox::for_config(cfg);
    let mut warnings = wanted.unreachable();
    if wanted == Sandbox::default() {
        return warnings;
    }
    let shown = std::process::Command::new("systemctl")
        .args([
            "show",
            "hamon.service",
            "-p",
            "LoadState",
            "-p",
            "CapabilityBoundingSet",
            "-p",
            "ReadWritePaths",
            "-p",
            "DropInPaths",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = shown else { return warnings };
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    if !out.status.success() || value("LoadState") != "loaded" {
        return warnings;
    }
    let dropin = value("DropInPaths")
        .split_whitespace()
        .find(|p| p.ends_with(sandbox::DROPIN_NAME))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let missing = wanted.missing_from(
        &value("CapabilityBoundingSet"),
        &value("ReadWritePaths"),
        &dropin,
    );
    if !missing.is_empty() {
        warnings.extend(missing);
        warnings.push(
            "the drop-in from hamon-generator adds these: run `systemctl daemon-reload` and \
             restart hamon (`hamon config dropin` prints it)"
                .to_string(),
        );
    }
    warnings
}

pub(crate) fn fail(msg: &str) -> i32 {
    eprintln!("hamon: {msg}");
    1
}

/// `hamon vip release`: remove the registration's VIPs from this server's
/// interface. Safe to run at any time; nothing to remove is not an error.
fn vip_release(cli: Option<&std::path::Path>) -> i32 {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let Some(iface) = cfg.node.interface.as_deref() else {
        println!("no interface configured: no virtual IP to release");
        return 0;
    };
    let state = match crate::store::Store::at(&cfg.node.state_dir).load_state() {
        Ok(s) => s,
        Err(e) => return fail(&format!("reading the HA state: {e}")),
    };
    let listed = state
        .and_then(|s| s.registration)
        .map(|r| r.vips)
        .unwrap_or_default();
    let vips = match crate::net::vip::parse_vips(&listed) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    match crate::net::vip::release_on(iface, &vips) {
        Ok(gone) if gone.is_empty() => {
            println!("no virtual IP held on {iface}");
            0
        }
        Ok(gone) => {
            let list: Vec<String> = gone.iter().map(|v| v.to_string()).collect();
            println!("released {} from {iface}", list.join(", "));
            0
        }
        Err(errors) => fail(&errors.join("; ")),
    }
}

/// `hamon nic-event ACTION DEV` (run by udev): ask the agent to re-read its
/// interfaces. Quiet and successful when no agent runs.
fn nic_event(cli: Option<&std::path::Path>, action: &str, interface: &str) -> i32 {
    let Ok(cfg) = load(cli) else { return 0 };
    let req = crate::control::Request::NicEvent {
        action: action.to_string(),
        interface: interface.to_string(),
    };
    match crate::control::call(
        &cfg.socket_path(),
        &req,
        Some(std::time::Duration::from_secs(5)),
    ) {
        Ok(_) | Err(crate::control::ControlError::NotRunning(_)) => 0,
        Err(e) => fail(&e.to_string()),
    }
}
