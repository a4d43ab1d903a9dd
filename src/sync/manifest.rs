//! The manifest of a set: what the active holds, as JSON.
//!
//! ```text
//! {"version":2,"set":"www","entries":[
//!   {"path":"a","kind":"dir","size":0,"mode":493,"uid":0,"gid":0,"mtime_s":1700000000,"mtime_ns":0},
//!   {"path":"a/f","kind":"file","size":3,"mode":420,...,"hash":"<64 lower-hex>"},
//!   {"path":"a/l","kind":{"symlink":{"target":"f"}},"size":0,...}]}
//! ```
//!
//! [`decode`] is the trust boundary of the standby: whatever it returns has only relative,
//! normalised, unique paths whose ancestors are all listed as directories (a parent created
//! implicitly would be deleted by the next pass), files with a well-formed
//! hash within the size limit, and symlinks whose target stays inside the set (see
//! [`super::check_target`]). Unknown fields are ignored, for forward compatibility.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{check_rel, check_target, Limits};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink { target: String },
}

/// One file, directory or symlink of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the set's root, `/`-separated.
    pub path: String,
    pub kind: Kind,
    /// Bytes of a file; 0 for directories and symlinks.
    pub size: u64,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// A file's content hash, 64 lower-hex digits ([`super::delta::content_hash`]; the
    /// SHA-256 in version 1); absent for directories and symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Entry {
    /// Same owner, mode (not for symlinks: Linux ignores it) and mtime.
    pub fn meta_eq(&self, other: &Entry) -> bool {
        let mode_eq = matches!(self.kind, Kind::Symlink { .. }) || self.mode == other.mode;
        mode_eq
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime_s == other.mtime_s
            && self.mtime_ns == other.mtime_ns
    }

    /// Same kind and content: size and hash for files, target for symlinks.
    pub fn content_eq(&self, other: &Entry) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::File, Kind::File) => self.size == other.size && self.hash == other.hash,
            (Kind::Dir, Kind::Dir) => true,
            (Kind::Symlink { target: a }, Kind::Symlink { target: b }) => a == b,
            _ => false,
        }
    }
}

/// The manifest version this build writes. Version 2 names every file by its content
/// hash of [`super::delta`] (BLAKE3 over its 16 KiB leaves); version 1 (no `version`
/// field) named every file by its SHA-256.
pub const VERSION: u32 = 2;
/// The oldest version this build still reads and serves, so that a pair keeps syncing
/// through a rolling upgrade: a version-1 peer's manifest is compared with this server's
/// files hashed its way, and a version-1 standby is served one (see [`by_leaves`]).
pub const OLDEST: u32 = 1;

/// Whether a manifest of `version` names files by their leaves' hash (else by their
/// SHA-256). Only such manifests' large files can come as deltas.
pub fn by_leaves(version: u32) -> bool {
    version >= 2
}

fn version_1() -> u32 {
    1
}

/// Everything a set holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`] when written by this build.
    #[serde(default = "version_1")]
    pub version: u32,
    pub set: String,
    pub entries: Vec<Entry>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("manifest is not valid: {0}")]
    Json(String),
    #[error("manifest has {count} entries, more than the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("manifest has an empty set name")]
    EmptySet,
    #[error(
        "the peer's manifest is version {0}, this server reads {OLDEST} to {VERSION}: run \
         releases next to each other on the two servers"
    )]
    Version(u32),
    #[error("{path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("{path:?}: listed twice")]
    Duplicate { path: String },
    #[error("{path:?}: {reason}")]
    BadEntry { path: String, reason: &'static str },
    #[error("{path:?}: symlink target {target:?} {reason}")]
    BadTarget {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("{path:?}: {size} bytes, more than the limit of {max}")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("{path:?}: its parent {parent:?} is not a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("{path:?}: its parent {parent:?} is not listed")]
    ParentMissing { path: String, parent: String },
}

/// The manifest as JSON.
pub fn encode(m: &Manifest) -> Vec<u8> {
    // Serialising these plain structs (string keys, no maps) cannot fail.
    serde_json::to_vec(m).unwrap_or_default()
}

/// Whether `s` is a 32-byte hash in lower hex.
fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks one entry on its own (not against the others).
pub(crate) fn check_entry(e: &Entry, limits: &Limits) -> Result<(), ManifestError> {
    let bad = |reason| ManifestError::BadEntry {
        path: e.path.clone(),
        reason,
    };
    check_rel(&e.path).map_err(|reason| ManifestError::BadPath {
        path: e.path.clone(),
        reason,
    })?;
    if e.mode & !0o7777 != 0 {
        return Err(bad("mode has bits beyond 0o7777"));
    }
    if e.mtime_ns >= 1_000_000_000 {
        return Err(bad("mtime_ns is not below one second"));
    }
    match &e.kind {
        Kind::File => {
            match &e.hash {
                None => return Err(bad("file without a hash")),
                Some(h) if !is_hash_hex(h) => {
                    return Err(bad("hash is not 64 lower-case hex digits"))
                }
                Some(_) => {}
            }
            if e.size > limits.max_file_bytes {
                return Err(ManifestError::FileTooLarge {
                    path: e.path.clone(),
                    size: e.size,
                    max: limits.max_file_bytes,
                });
            }
        }
        Kind::Dir | Kind::Symlink { .. } => {
            if e.hash.is_some() {
                return Err(bad("hash on a directory or symlink"));
            }
            if e.size != 0 {
                return Err(bad("non-zero size on a directory or symlink"));
            }
        }
    }
    if let Kind::Symlink { target } = &e.kind {
        check_target(&e.path, target).map_err(|reason| ManifestError::BadTarget {
            path: e.path.clone(),
            target: target.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Decodes and checks a manifest; see the module documentation for what is refused.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Manifest, ManifestError> {
    if bytes.len() > limits.max_manifest_bytes {
        return Err(ManifestError::TooLarge {
            len: bytes.len(),
            max: limits.max_manifest_bytes,
        });
    }
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    if !(OLDEST..=VERSION).contains(&m.version) {
        return Err(ManifestError::Version(m.version));
    }
    if m.entries.len() > limits.max_entries {
        return Err(ManifestError::TooManyEntries {
            count: m.entries.len(),
            max: limits.max_entries,
        });
    }
    if m.set.is_empty() {
        return Err(ManifestError::EmptySet);
    }
    let mut kinds: HashMap<&str, &Kind> = HashMap::with_capacity(m.entries.len());
    for e in &m.entries {
        check_entry(e, limits)?;
        if kinds.insert(&e.path, &e.kind).is_some() {
            return Err(ManifestError::Duplicate {
                path: e.path.clone(),
            });
        }
    }
    for e in &m.entries {
        for (i, _) in e.path.match_indices('/') {
            let parent = &e.path[..i];
            let (path, parent) = (e.path.clone(), parent.to_string());
            match kinds.get(parent.as_str()) {
                Some(Kind::Dir) => {}
                Some(_) => return Err(ManifestError::ParentNotDir { path, parent }),
                None => return Err(ManifestError::ParentMissing { path, parent }),
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn entry(path: &str, kind: Kind) -> Entry {
        let file = kind == Kind::File;
        Entry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_s: 1_700_000_000,
            mtime_ns: 5,
            hash: file.then(|| H.to_string()),
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        entry(
            path,
            Kind::Symlink {
                target: target.into(),
            },
        )
    }

    fn good() -> Manifest {
        Manifest {
            version: VERSION,
            set: "www".into(),
            entries: vec![
                entry("a", Kind::Dir),
                entry("a/f", Kind::File),
                link("a/l", "f"),
                link("a/up", "../top"),
                entry("top", Kind::File),
            ],
        }
    }

    fn dec(m: &Manifest) -> Result<Manifest, ManifestError> {
        decode(&encode(m), &Limits::default())
    }

    #[test]
    fn versions_one_and_two_are_read_and_others_refused() {
        // Version 1 had no field: its hashes were all SHA-256.
        let old = br#"{"set":"s","entries":[]}"#;
        assert_eq!(decode(old, &Limits::default()).unwrap().version, 1);
        let mut m = good();
        m.version = 1;
        assert_eq!(dec(&m), Ok(m.clone()));
        for v in [0, 3] {
            m.version = v;
            assert_eq!(dec(&m), Err(ManifestError::Version(v)));
        }
        let why = ManifestError::Version(3).to_string();
        assert!(why.contains("reads 1 to 2"), "{why}");
        assert!(by_leaves(2) && !by_leaves(1));
    }

    #[test]
    fn round_trips() {
        let m = good();
        assert_eq!(dec(&m), Ok(m));
    }

    #[test]
    fn wire_format_is_stable() {
        let m = Manifest {
            version: VERSION,
            set: "s".into(),
            entries: vec![entry("f", Kind::File), link("l", "f")],
        };
        let text = String::from_utf8(encode(&m)).unwrap();
        assert_eq!(
            text,
            format!(
                concat!(
                    r#"{{"version":2,"set":"s","entries":[{{"path":"f","kind":"file","size":0,"mode":420,"#,
                    r#""uid":0,"gid":0,"mtime_s":1700000000,"mtime_ns":5,"hash":"{}"}},"#,
                    r#"{{"path":"l","kind":{{"symlink":{{"target":"f"}}}},"size":0,"mode":420,"#,
                    r#""uid":0,"gid":0,"mtime_s":1700000000,"mtime_ns":5}}]}}"#
                ),
                H
            )
        );
    }

    /// `good()` with `f` applied must be refused with an error whose text contains `want`.
    fn refused(f: impl FnOnce(&mut Manifest), want: &str) {
        let mut m = good();
        f(&mut m);
        let err = dec(&m).expect_err(want);
        assert!(err.to_string().contains(want), "{err} (wanted {want:?})");
    }

    #[test]
    fn hostile_paths_refused() {
        for (path, why) in [
            ("/etc/passwd", "absolute"),
            ("a/../../x", "'..'"),
            ("..", "'..'"),
            ("a/./f2", "'.'"),
            ("a//f2", "empty path component"),
            ("", "empty path"),
            ("a/f2/", "empty path component"),
            ("a\\..\\x", "backslash"),
            ("a/f\0x", "NUL"),
            ("a/.f.hamon-tmp.1.2", "temp-file"),
        ] {
            refused(|m| m.entries.push(entry(path, Kind::File)), why);
        }
    }

    #[test]
    fn structure_refused() {
        refused(|m| m.entries.push(entry("a/f", Kind::File)), "listed twice");
        refused(|m| m.entries.push(entry("a", Kind::File)), "listed twice");
        refused(
            |m| m.entries.push(entry("a/f/x", Kind::File)),
            "parent \"a/f\"",
        );
        refused(
            |m| m.entries.push(entry("a/l/x", Kind::File)),
            "parent \"a/l\"",
        );
        refused(
            |m| m.entries.push(entry("top/x/y", Kind::Dir)),
            "parent \"top\"",
        );
        refused(
            |m| m.entries.push(entry("b/x", Kind::File)),
            "parent \"b\" is not listed",
        );
        refused(|m| drop(m.entries.remove(0)), "parent \"a\" is not listed");
        refused(|m| m.set.clear(), "empty set name");
    }

    #[test]
    fn bad_entries_refused() {
        refused(|m| m.entries[1].hash = None, "file without a hash");
        refused(
            |m| m.entries[1].hash = Some(H.to_uppercase()),
            "64 lower-case",
        );
        refused(
            |m| m.entries[1].hash = Some(H[..63].into()),
            "64 lower-case",
        );
        refused(
            |m| m.entries[1].hash = Some(format!("{}g", &H[..63])),
            "64 lower-case",
        );
        refused(
            |m| m.entries[0].hash = Some(H.into()),
            "hash on a directory",
        );
        refused(|m| m.entries[2].size = 3, "non-zero size");
        refused(|m| m.entries[1].mode = 0o10644, "mode");
        refused(|m| m.entries[1].mtime_ns = 1_000_000_000, "mtime_ns");
        let mut m = good();
        m.entries[1].size = 11;
        let limits = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };
        let err = decode(&encode(&m), &limits).unwrap_err();
        assert!(
            matches!(err, ManifestError::FileTooLarge { size: 11, .. }),
            "{err}"
        );
    }

    #[test]
    fn hostile_symlinks_refused() {
        for (target, why) in [
            ("/etc/passwd", "absolute"),
            ("../../x", "outside"),
            ("../..", "outside"),
            ("f/../../..", "not normalised"),
            ("", "empty"),
            ("a\0b", "NUL"),
        ] {
            refused(|m| m.entries.push(link("a/evil", target)), why);
        }
        refused(|m| m.entries.push(link("evil", "../x")), "outside");
        refused(|m| m.entries.push(link("evil", "..")), "outside");
    }

    #[test]
    fn limits_refused() {
        let m = good();
        let bytes = encode(&m);
        let small = Limits {
            max_manifest_bytes: bytes.len() - 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&bytes, &small),
            Err(ManifestError::TooLarge { .. })
        ));
        let few = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&bytes, &few),
            Err(ManifestError::TooManyEntries { count: 5, max: 4 })
        ));
    }

    #[test]
    fn malformed_json_refused() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"{\"set\":\"s\"}",
            b"{\"set\":\"s\",\"entries\":[{\"path\":\"x\"}]}",
            b"{\"set\":\"s\",\"entries\":[{\"path\":\"x\",\"kind\":\"fifo\",\"size\":0,\"mode\":0,\
               \"uid\":0,\"gid\":0,\"mtime_s\":0,\"mtime_ns\":0}]}",
            b"{\"set\":\"s\",\"entries\":[{\"path\":\"x\",\"kind\":\"dir\",\"size\":-1,\"mode\":0,\
               \"uid\":0,\"gid\":0,\"mtime_s\":0,\"mtime_ns\":0}]}",
            b"\xff\xfe",
        ] {
            assert!(matches!(
                decode(bad, &Limits::default()),
                Err(ManifestError::Json(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &Limits::default());
        }

        #[test]
        fn decode_never_panics_on_near_manifests(
            path in "[a./\\\\]{0,12}",
            target in "[a./]{0,12}",
            kind in 0u8..3,
        ) {
            let mut m = good();
            m.entries.push(match kind {
                0 => entry(&path, Kind::File),
                1 => entry(&path, Kind::Dir),
                _ => link(&path, &target),
            });
            if let Ok(d) = dec(&m) {
                prop_assert_eq!(&d, &m);
                for e in &d.entries {
                    prop_assert!(check_rel(&e.path).is_ok());
                }
            }
        }
    }
}
