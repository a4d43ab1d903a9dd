//! Fuzzes the sync manifest decoder (`hamon::sync::manifest`), the standby's trust boundary.
//!
//! Any bytes give a manifest or an error, never a panic. Whatever decodes must satisfy
//! decode(encode(m)) == m, hold only relative paths without `.`/`..`/empty components, and
//! diff against itself to nothing; a diff against the empty set must neither panic nor plan
//! anything but creations.
#![no_main]

use hamon::sync::{decode, diff, encode, Kind, Limits, Manifest};
use libfuzzer_sys::fuzz_target;

/// Small enough that the size and count limits are reached too.
const LIMITS: Limits = Limits {
    max_entries: 64,
    max_manifest_bytes: 64 << 10,
    max_file_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data, &LIMITS) else {
        return;
    };
    let again = decode(&encode(&m), &LIMITS).expect("a decoded manifest re-encodes");
    assert_eq!(again, m);

    for e in &m.entries {
        assert!(!e.path.is_empty() && !e.path.starts_with('/'));
        assert!(e
            .path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."));
        assert!(!e.path.contains('\0') && !e.path.contains('\\'));
        match &e.kind {
            Kind::File => assert!(e.hash.as_ref().is_some_and(|h| h.len() == 64)),
            Kind::Dir => assert!(e.hash.is_none()),
            Kind::Symlink { target } => assert!(!target.starts_with('/')),
        }
    }

    assert!(diff(&m, &m).is_empty());
    let empty = Manifest {
        version: m.version,
        set: m.set.clone(),
        entries: Vec::new(),
    };
    let plan = diff(&empty, &m);
    assert!(plan.delete.is_empty() && plan.meta.is_empty());
    assert_eq!(
        plan.mkdirs.len() + plan.fetch.len() + plan.links.len(),
        m.entries.len()
    );
    assert_eq!(diff(&m, &empty).delete.len(), m.entries.len());
});
