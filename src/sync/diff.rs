//! What turns the local copy of a set into the remote one: a pure function of two manifests.

use std::collections::HashMap;

use super::manifest::{Entry, Kind, Manifest};

/// The changes to apply, in this order: `delete`, `mkdirs`, `fetch`, `links`, `meta`.
///
/// Each list is sorted by path (`delete` in reverse, so children come before parents; the
/// others parents first). An entry whose kind changes (a directory becoming a file, ...) is
/// both deleted and created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Directories to create (then given their metadata).
    pub mkdirs: Vec<Entry>,
    /// Files to fetch: new, or content differs (size or hash).
    pub fetch: Vec<Entry>,
    /// Symlinks to create or re-point.
    pub links: Vec<Entry>,
    /// Same content, different mode, owner or mtime.
    pub meta: Vec<Entry>,
    /// Local paths absent remotely, or whose kind changes; children before parents.
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.mkdirs.is_empty()
            && self.fetch.is_empty()
            && self.links.is_empty()
            && self.meta.is_empty()
            && self.delete.is_empty()
    }
}

fn same_kind(a: &Kind, b: &Kind) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The plan turning `local` into `remote`. Both are assumed checked (unique paths).
pub fn diff(local: &Manifest, remote: &Manifest) -> Plan {
    let locals: HashMap<&str, &Entry> =
        local.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let remotes: HashMap<&str, &Entry> = remote
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut plan = Plan::default();

    for l in &local.entries {
        match remotes.get(l.path.as_str()) {
            Some(r) if same_kind(&l.kind, &r.kind) => {}
            // Renaming a file or symlink over a file or symlink replaces it atomically; only a
            // directory, or something where a directory must go, is removed first.
            Some(r) if l.kind != Kind::Dir && r.kind != Kind::Dir => {}
            _ => plan.delete.push(l.path.clone()),
        }
    }
    for r in &remote.entries {
        let l = locals
            .get(r.path.as_str())
            .filter(|l| same_kind(&l.kind, &r.kind));
        let list = match (l, &r.kind) {
            (Some(l), _) if l.content_eq(r) => {
                if l.meta_eq(r) {
                    continue;
                }
                &mut plan.meta
            }
            (_, Kind::Dir) => &mut plan.mkdirs,
            (_, Kind::File) => &mut plan.fetch,
            (_, Kind::Symlink { .. }) => &mut plan.links,
        };
        list.push(r.clone());
    }
    plan.delete.sort_unstable_by(|a, b| b.cmp(a));
    for list in [
        &mut plan.mkdirs,
        &mut plan.fetch,
        &mut plan.links,
        &mut plan.meta,
    ] {
        list.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    }
    plan
}

/// `plan` applied to a model of the local set (path to entry); for tests.
#[cfg(test)]
pub(crate) fn apply_model(local: &mut std::collections::BTreeMap<String, Entry>, plan: &Plan) {
    for p in &plan.delete {
        local.remove(p);
    }
    for e in plan
        .mkdirs
        .iter()
        .chain(&plan.fetch)
        .chain(&plan.links)
        .chain(&plan.meta)
    {
        local.insert(e.path.clone(), e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn e(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.into(),
            hash: (kind == Kind::File).then(|| "0".repeat(64)),
            kind,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_s: 10,
            mtime_ns: 0,
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        e(
            path,
            Kind::Symlink {
                target: target.into(),
            },
        )
    }

    fn m(entries: Vec<Entry>) -> Manifest {
        Manifest {
            version: crate::sync::manifest::VERSION,
            set: "s".into(),
            entries,
        }
    }

    fn paths(v: &[Entry]) -> Vec<&str> {
        v.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn equal_sets_need_nothing() {
        let a = m(vec![
            e("d", Kind::Dir),
            e("d/f", Kind::File),
            link("l", "d"),
        ]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn new_changed_and_gone() {
        let local = m(vec![
            e("d", Kind::Dir),
            e("d/same", Kind::File),
            e("d/bigger", Kind::File),
            e("d/rehash", Kind::File),
            e("d/chmod", Kind::File),
            e("gone", Kind::Dir),
            e("gone/x", Kind::File),
            link("l", "d"),
            link("l2", "d"),
        ]);
        let mut bigger = e("d/bigger", Kind::File);
        bigger.size = 2;
        let mut rehash = e("d/rehash", Kind::File);
        rehash.hash = Some("1".repeat(64));
        let mut chmod = e("d/chmod", Kind::File);
        chmod.mode = 0o600;
        let mut touched_link = link("l2", "d");
        touched_link.mtime_s = 11;
        let remote = m(vec![
            e("d", Kind::Dir),
            e("d/same", Kind::File),
            bigger,
            rehash,
            chmod,
            e("d/new", Kind::File),
            e("n", Kind::Dir),
            e("n/m", Kind::Dir),
            link("l", "d/same"),
            touched_link,
        ]);
        let p = diff(&local, &remote);
        assert_eq!(paths(&p.fetch), ["d/bigger", "d/new", "d/rehash"]);
        assert_eq!(paths(&p.meta), ["d/chmod", "l2"]);
        assert_eq!(paths(&p.mkdirs), ["n", "n/m"]);
        assert_eq!(paths(&p.links), ["l"]);
        assert_eq!(p.delete, ["gone/x", "gone"]);
    }

    #[test]
    fn symlink_mode_is_ignored() {
        let mut l = link("l", "x");
        l.mode = 0o777;
        assert!(diff(&m(vec![l]), &m(vec![link("l", "x")])).is_empty());
    }

    #[test]
    fn kind_changes() {
        let local = m(vec![
            e("a", Kind::Dir),
            e("a/x", Kind::File),
            e("b", Kind::File),
            link("c", "b"),
            e("d", Kind::File),
        ]);
        let remote = m(vec![
            e("a", Kind::File),
            e("b", Kind::Dir),
            e("c", Kind::File),
            link("d", "b"),
        ]);
        let p = diff(&local, &remote);
        // The directory a (and its content) must go before a file takes its place; b is a
        // file where a directory must go; c and d are replaced by renaming over them.
        assert_eq!(p.delete, ["b", "a/x", "a"]);
        assert_eq!(paths(&p.fetch), ["a", "c"]);
        assert_eq!(paths(&p.mkdirs), ["b"]);
        assert_eq!(paths(&p.links), ["d"]);
        assert!(p.meta.is_empty());
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            prop::sample::select(vec!["a", "b", "a/x", "a/y", "b/x", "a/x/z", "c"]),
            0u8..3,
            0u64..3,
            0u8..2,
            0u32..2,
            0i64..2,
        )
            .prop_map(|(path, kind, size, hash, mode, mtime)| {
                let kind = match kind {
                    0 => Kind::File,
                    1 => Kind::Dir,
                    _ => Kind::Symlink {
                        target: format!("t{size}"),
                    },
                };
                let file = kind == Kind::File;
                Entry {
                    path: path.into(),
                    kind,
                    size: if file { size } else { 0 },
                    mode: 0o600 + mode,
                    uid: mode,
                    gid: 0,
                    mtime_s: mtime,
                    mtime_ns: 0,
                    hash: file.then(|| hash.to_string().repeat(64)),
                }
            })
    }

    /// A consistent set: unique paths, every parent of an entry is a directory or absent.
    fn arb_set() -> impl Strategy<Value = BTreeMap<String, Entry>> {
        prop::collection::vec(arb_entry(), 0..8).prop_map(|v| {
            let mut set = BTreeMap::new();
            for e in v {
                set.entry(e.path.clone()).or_insert(e);
            }
            let bad: Vec<String> = set
                .keys()
                .filter(|p| {
                    p.match_indices('/')
                        .any(|(i, _)| set.get(&p[..i]).is_some_and(|e| e.kind != Kind::Dir))
                })
                .cloned()
                .collect();
            for p in bad {
                set.remove(&p);
            }
            set
        })
    }

    proptest! {
        #[test]
        fn plan_turns_local_into_remote(local in arb_set(), remote in arb_set()) {
            let plan = diff(
                &m(local.values().cloned().collect()),
                &m(remote.values().cloned().collect()),
            );
            let mut model = local.clone();
            apply_model(&mut model, &plan);
            prop_assert_eq!(&model, &remote);

            // Children are deleted before their parents.
            for (i, p) in plan.delete.iter().enumerate() {
                for later in &plan.delete[i + 1..] {
                    prop_assert!(!later.starts_with(&format!("{p}/")), "{:?}", plan.delete);
                }
            }
            // Only absent paths or kind changes are deleted; every list holds the right kind.
            for p in &plan.delete {
                prop_assert!(remote.get(p).is_none_or(|r| !same_kind(&r.kind, &local[p].kind)));
            }
            prop_assert!(plan.fetch.iter().all(|e| e.kind == Kind::File));
            prop_assert!(plan.mkdirs.iter().all(|e| e.kind == Kind::Dir));
            let links_ok = plan.links.iter().all(|e| matches!(e.kind, Kind::Symlink { .. }));
            prop_assert!(links_ok);
            // Nothing is planned twice, and a second diff finds nothing.
            let touched = plan.mkdirs.len() + plan.fetch.len() + plan.links.len() + plan.meta.len();
            prop_assert!(touched <= remote.len());
            prop_assert!(diff(&m(model.values().cloned().collect()), &m(remote.values().cloned().collect())).is_empty());
        }
    }
}
