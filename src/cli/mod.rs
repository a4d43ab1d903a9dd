//! Command-line entry: `argv` -> one command family.

mod demo;
mod ha;

use crate::config::Config;
use std::path::PathBuf;

pub const USAGE: &str = "\
hamon - high-availability agent for a pair of appliance servers

Usage:
  hamon agent                 run the agent (systemd starts this)
  hamon status                Health Monitor and service status
  hamon ha <command>          HA commands (hamon ha --help)
  hamon config check          validate the configuration file
  hamon demo                  run a local demo pair on 127.0.0.2 / 127.0.0.3
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
            println!("hamon {}", env!("CARGO_PKG_VERSION"));
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
                0
            }
            Err(e) => fail(&e),
        },
        ["status"] => ha::status(config.as_deref()),
        ["ha", rest @ ..] => ha::main(config.as_deref(), rest),
        ["demo"] => demo::main(),
        _ => {
            eprint!("hamon: unknown command {:?}\n\n{USAGE}", args.join(" "));
            2
        }
    }
}

pub(crate) fn fail(msg: &str) -> i32 {
    eprintln!("hamon: {msg}");
    1
}
