//! Which release this build is and which protocol it speaks, and which protocols it
//! works with.
//!
//! The protocol is `MAJOR.MINOR`. The major is the heartbeat frame's version byte
//! ([`crate::peer::wire::VERSION`]): a frame of another major does not even decode. The
//! minor grows with every change both servers must understand (a heartbeat field, a peer
//! request); a build works with its own minor and the one either side of it, so that a
//! pair can be upgraded one server at a time. Builds from before versions were sent
//! (wave 1) send none and count as minor 0.
//!
//! A build for the rolling-upgrade test sets `HAMON_PROTOCOL_MINOR` and `HAMON_RELEASE`
//! when it is compiled; nothing reads them at run time.

use serde::{Deserialize, Serialize};
use std::fmt;

/// This build's release (the crate's version unless the build set `HAMON_RELEASE`).
pub const RELEASE: &str = match option_env!("HAMON_RELEASE") {
    Some(r) => r,
    None => env!("CARGO_PKG_VERSION"),
};

/// This build's protocol minor (`HAMON_PROTOCOL_MINOR` at build time, else the current one).
pub const PROTOCOL_MINOR: u8 = match option_env!("HAMON_PROTOCOL_MINOR") {
    Some(text) => parse_minor(text),
    None => CURRENT_MINOR,
};

/// The protocol minor of this source tree. 1: heartbeats and registrations carry versions.
const CURRENT_MINOR: u8 = 1;

/// The longest release string sent (a heartbeat has little room).
pub const RELEASE_MAX: usize = 32;

/// A decimal `u8`, at compile time (a bad value fails the build).
const fn parse_minor(text: &str) -> u8 {
    let bytes = text.as_bytes();
    assert!(!bytes.is_empty(), "HAMON_PROTOCOL_MINOR is empty");
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        assert!(b.is_ascii_digit(), "HAMON_PROTOCOL_MINOR is not a number");
        value = value * 10 + (b - b'0') as u32;
        assert!(value <= 255, "HAMON_PROTOCOL_MINOR is over 255");
        i += 1;
    }
    value as u8
}

/// What a server runs: its release and its protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    pub release: String,
    pub major: u8,
    pub minor: u8,
}

impl Version {
    /// This build's.
    pub fn ours() -> Version {
        Version {
            release: RELEASE.chars().take(RELEASE_MAX).collect(),
            major: crate::peer::wire::VERSION,
            minor: PROTOCOL_MINOR,
        }
    }

    /// What a peer that sends no version runs: a release from before versions were sent
    /// (protocol minor 0).
    pub fn before_versions() -> Version {
        Version {
            release: "unknown (sends no version)".to_string(),
            major: crate::peer::wire::VERSION,
            minor: 0,
        }
    }

    /// `1.2`.
    pub fn protocol(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Why a server running `self` cannot work with one running `peer`; `None` when it can.
    pub fn incompatible_with(&self, peer: &Version) -> Option<String> {
        if self.major != peer.major || self.minor.abs_diff(peer.minor) > 1 {
            Some(format!(
                "{self} and {peer} do not work together: a pair works only across one \
                 protocol minor at a time (upgrade one release at a time)"
            ))
        } else {
            None
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (protocol {})", self.release, self.protocol())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u8) -> Version {
        Version {
            release: format!("0.{minor}.0"),
            major: 1,
            minor,
        }
    }

    #[test]
    fn adjacent_minors_work_together_and_others_are_refused_with_both_versions() {
        assert_eq!(v(1).incompatible_with(&v(1)), None);
        assert_eq!(v(1).incompatible_with(&v(2)), None);
        assert_eq!(v(2).incompatible_with(&v(1)), None);
        assert_eq!(v(1).incompatible_with(&v(0)), None);
        let why = v(1).incompatible_with(&v(3)).unwrap_or_default();
        assert!(why.contains("0.3.0 (protocol 1.3)"), "{why}");
        assert!(why.contains("0.1.0 (protocol 1.1)"), "{why}");
        let other_major = Version { major: 2, ..v(1) };
        assert!(v(1).incompatible_with(&other_major).is_some());
    }

    #[test]
    fn the_minor_parses_at_build_time() {
        assert_eq!(parse_minor("0"), 0);
        assert_eq!(parse_minor("2"), 2);
        assert_eq!(parse_minor("255"), 255);
    }
}
