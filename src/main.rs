//! `hamon`: the HA agent and its operator commands. Called as
//! `hamon-generator` (a symlink systemd runs at boot and `daemon-reload`), it
//! writes the unit's drop-in for the configured features instead.

fn main() {
    let mut args = std::env::args();
    let called = args.next().unwrap_or_default();
    let args: Vec<String> = args.collect();
    let code = if called.rsplit('/').next() == Some("hamon-generator") {
        hamon::cli::generator(&args)
    } else {
        hamon::cli::main(&args)
    };
    std::process::exit(code);
}
