//! Fuzzes the configuration parser: any text gives a Config or a clear
//! error that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = hamon::config::Config::parse(text, Path::new("/fuzz.toml")) {
            assert!(e.to_string().starts_with("/fuzz.toml"));
        }
    }
});
