//! Fuzzes the first-boot seed and the sandbox checks: any seed text gives a
//! configuration the agent accepts, or an error, never a panic; and any
//! `systemctl show` output and drop-in text give a list of warnings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

const FEATURES: &str = "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.11\"\n\
    [[sync]]\nname = \"odd\"\npath = \"/srv/odd dir 50%\"\n\
    [[service]]\nname = \"w\"\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let out = Path::new("/etc/hamon/hamon.toml");
    if let Ok(config) = hamon::config::seed::config_text(text, out) {
        // Whatever the seed held, the result is one the agent loads.
        assert!(hamon::config::Config::parse(&config, out).is_ok());
    }
    let cfg = hamon::config::Config::parse(FEATURES, out).expect("a valid config");
    let sandbox = hamon::config::sandbox::Sandbox::for_config(&cfg);
    let mut parts = text.splitn(3, '\n');
    let (bounding, writable, dropin) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let missing = sandbox.missing_from(bounding, writable, dropin);
    assert!(missing.len() <= sandbox.capabilities.len() + sandbox.read_write.len());
});
