//! The first-boot seed: one appliance image is cloned to both servers, and
//! each gets a small seed file (who it is, where it listens) from whoever
//! installs it. `hamon config init --seed` turns the seed into
//! `/etc/hamon/hamon.toml`; `hamon-firstboot.service` runs it once, before
//! the agent's first start.

use super::Config;
use serde::Deserialize;
use std::path::Path;

/// `/etc/hamon/seed.toml`: the four facts that differ between the servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    name: String,
    role: String,
    address: String,
    interface: String,
}

/// A TOML basic string: quoted, with `"` and `\` and control characters
/// escaped, so that no seed value can add a key of its own.
fn quoted(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The configuration text for `seed`: the seed's `[node]`, every other
/// setting at its default (`docs/hamon.example.toml` lists them).
fn render(seed: &Seed) -> String {
    format!(
        "# Written by `hamon config init` from the first-boot seed.\n\
         # Every key is documented in /etc/hamon/hamon.example.toml.\n\
         [node]\n\
         name = {}\n\
         role = {}\n\
         address = {}\n\
         interface = {}\n\
         state_dir = \"/var/lib/hamon\"\n\
         run_dir = \"/run/hamon\"\n",
        quoted(&seed.name),
        quoted(&seed.role),
        quoted(&seed.address),
        quoted(&seed.interface),
    )
}

/// The configuration text for a seed's text, validated as the agent will
/// read it from `out`; or why the seed cannot give one.
pub fn config_text(seed: &str, out: &Path) -> Result<String, String> {
    let parsed: Seed = toml::from_str(seed).map_err(|e| e.message().to_string())?;
    let config = render(&parsed);
    Config::parse(&config, out).map_err(|e| format!("gives an invalid configuration: {e}"))?;
    Ok(config)
}

/// Write the configuration at `out` from the seed file at `seed`. The result
/// is validated as the agent will read it before anything is written; an
/// existing configuration is kept unless `force`. The file is written 0600
/// through a temporary file, fsync and rename, so a crash leaves either no
/// configuration (and the next boot tries again) or a whole one.
pub fn init(seed: &Path, out: &Path, force: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(seed)
        .map_err(|e| format!("{}: cannot read the seed: {e}", seed.display()))?;
    let config = config_text(&text, out).map_err(|e| format!("{}: {e}", seed.display()))?;
    // A dangling symlink is something in the way too.
    if std::fs::symlink_metadata(out).is_ok() && !force {
        return Err(format!(
            "{} exists; it is kept (use --force to replace it)",
            out.display()
        ));
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    }
    crate::store::write_atomic(out, config.as_bytes(), 0o600)
        .map_err(|e| format!("{}: cannot write: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hamon-seed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    const SEED: &str = "name = \"appliance-b\"\nrole = \"secondary\"\n\
                        address = \"192.0.2.12\"\ninterface = \"eth0\"\n";

    #[test]
    fn a_seed_becomes_a_valid_private_config() {
        let d = scratch("ok");
        std::fs::write(d.join("seed.toml"), SEED).expect("seed");
        let out = d.join("hamon.toml");
        init(&d.join("seed.toml"), &out, false).expect("init");
        let cfg = Config::load(&out).expect("loads");
        assert_eq!(cfg.node.name, "appliance-b");
        assert_eq!(cfg.node.role, crate::config::Role::Secondary);
        assert_eq!(cfg.node.address.to_string(), "192.0.2.12");
        assert_eq!(cfg.node.interface.as_deref(), Some("eth0"));
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let temps = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .count();
        assert_eq!(temps, 0, "a temporary file was left");
        // A second run keeps the operator's file.
        std::fs::write(&out, "# edited\n").expect("edit");
        let e = init(&d.join("seed.toml"), &out, false).expect_err("kept");
        assert!(e.contains("exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "# edited\n");
        init(&d.join("seed.toml"), &out, true).expect("forced");
        assert!(Config::load(&out).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_bad_seed_writes_nothing_and_says_why() {
        let d = scratch("bad");
        let out = d.join("hamon.toml");
        for (seed, why) in [
            (
                "name = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.1\"\n",
                "interface",
            ),
            (&SEED.replace("secondary", "tertiary"), "role"),
            (&SEED.replace("192.0.2.12", "not-an-ip"), "address"),
            (&format!("{SEED}extra = 1\n"), "extra"),
            // A value cannot smuggle in a key of its own.
            (
                &SEED.replace("appliance-b", "x\\\"\\nstate_dir = \\\"/tmp"),
                "name",
            ),
        ] {
            std::fs::write(d.join("seed.toml"), seed).expect("seed");
            let e = init(&d.join("seed.toml"), &out, false).expect_err(seed);
            assert!(e.contains(why), "{seed}: {e}");
            assert!(!out.exists(), "{seed}");
        }
        let e = init(&d.join("missing.toml"), &out, false).expect_err("missing");
        assert!(e.contains("cannot read the seed"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
