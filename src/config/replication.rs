//! Validation of what hamon replicates: `[replication]` (timing and limits)
//! and the `[[sync]]` file sets.

use super::raw::{RawReplication, RawSync};
use super::{ConfigError, Validator};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// How often a set is compared with the active server's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncClass {
    /// Frequently updated files (every `frequent_interval`, 11 s by default),
    /// and within about a second of a change through inotify hints.
    Frequent,
    /// Rarely updated files (every `batch_interval`, 500 s by default).
    Batch,
}

impl SyncClass {
    pub fn label(self) -> &'static str {
        match self {
            SyncClass::Frequent => "frequent",
            SyncClass::Batch => "batch",
        }
    }
}

/// `[[sync]]`: one directory tree kept identical on both servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSet {
    /// Names the set in the peer API, logs and status (`[A-Za-z0-9_.-]`, 1–63).
    pub name: String,
    /// The tree's root, absolute; the same path on both servers.
    pub path: PathBuf,
    /// Globs on the path relative to `path`; empty means everything.
    pub include: Vec<String>,
    /// Globs excluded even when included.
    pub exclude: Vec<String>,
    pub class: SyncClass,
    /// Keep setuid/setgid bits on files (default false: cleared, so that a
    /// peer cannot plant a set-id program through the sync).
    pub keep_setid: bool,
}

/// `[replication]` plus the `[[sync]]` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub frequent_interval: Duration,
    pub batch_interval: Duration,
    /// Pause after a change on the active before the standby is told (200 ms),
    /// so a burst of writes becomes one pull.
    pub hint_delay: Duration,
    /// A manifest with more entries, or more bytes, is refused (and logged).
    pub max_manifest_entries: usize,
    pub max_manifest_bytes: usize,
    /// A larger file is refused.
    pub max_file_bytes: u64,
    /// Longest a full copy (registration, failback, data gap) may take.
    pub copy_timeout: Duration,
    pub sets: Vec<SyncSet>,
}

fn set_name_ok(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A glob is checked again when the set is built; here only what can never work.
fn glob_ok(g: &str) -> Result<(), String> {
    if g.is_empty() {
        return Err("an empty glob matches nothing".into());
    }
    if g.contains('\0') {
        return Err("a glob must not contain NUL".into());
    }
    if g.starts_with('/') {
        return Err(format!(
            "globs match paths relative to the set's path, so {g:?} must not start with '/'"
        ));
    }
    glob::Pattern::new(g)
        .map(drop)
        .map_err(|e| format!("{g:?} is not a valid glob: {}", e.msg))
}

impl Validator<'_> {
    pub(super) fn replication(
        &self,
        raw: RawReplication,
        sets: Vec<RawSync>,
    ) -> Result<Replication, ConfigError> {
        let mut out: Vec<SyncSet> = Vec::new();
        for (i, r) in sets.into_iter().enumerate() {
            let key = |k: &str| format!("sync[{i}].{k}");
            let name = self.required(&key("name"), r.name)?;
            if !set_name_ok(&name) {
                return Err(self.invalid(
                    &key("name"),
                    format!("1 to 63 letters, digits, '-', '_' or '.' (got {name:?})"),
                ));
            }
            if out.iter().any(|s| s.name == name) {
                return Err(self.invalid(&key("name"), format!("{name:?} is used twice")));
            }
            let path = self.required(&key("path"), r.path)?;
            let p = Path::new(&path);
            let normal = p
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !p.is_absolute() || !normal || p.parent().is_none() || path.contains('\0') {
                return Err(self.invalid(
                    &key("path"),
                    format!("must be an absolute directory other than / (got {path:?})"),
                ));
            }
            let p = PathBuf::from(&path);
            if let Some(other) = out
                .iter()
                .find(|s| s.path.starts_with(&p) || p.starts_with(&s.path))
            {
                return Err(self.invalid(
                    &key("path"),
                    format!(
                        "overlaps the set {:?} ({})",
                        other.name,
                        other.path.display()
                    ),
                ));
            }
            let globs = |k: &str, v: Option<Vec<String>>| -> Result<Vec<String>, ConfigError> {
                let v = v.unwrap_or_default();
                for g in &v {
                    glob_ok(g).map_err(|e| self.invalid(&key(k), e))?;
                }
                Ok(v)
            };
            let include = globs("include", r.include)?;
            let exclude = globs("exclude", r.exclude)?;
            let class = match r.class.as_deref() {
                None | Some("frequent") => SyncClass::Frequent,
                Some("batch") => SyncClass::Batch,
                Some(other) => {
                    return Err(self.invalid(
                        &key("class"),
                        format!("must be \"frequent\" or \"batch\" (got {other:?})"),
                    ))
                }
            };
            out.push(SyncSet {
                name,
                path: p,
                include,
                exclude,
                class,
                keep_setid: r.keep_setid.unwrap_or(false),
            });
        }
        let hour = 3_600_000;
        Ok(Replication {
            frequent_interval: self.millis(
                "replication.frequent_interval_ms",
                raw.frequent_interval_ms,
                11_000,
                100,
                Some(hour),
            )?,
            batch_interval: self.millis(
                "replication.batch_interval_ms",
                raw.batch_interval_ms,
                500_000,
                100,
                Some(24 * hour),
            )?,
            hint_delay: self.millis(
                "replication.hint_delay_ms",
                raw.hint_delay_ms,
                200,
                0,
                Some(60_000),
            )?,
            max_manifest_entries: self.int(
                "replication.max_manifest_entries",
                raw.max_manifest_entries,
                1_000_000,
                1,
                Some(50_000_000),
            )? as usize,
            max_manifest_bytes: self.int(
                "replication.max_manifest_bytes",
                raw.max_manifest_bytes,
                256 * 1024 * 1024,
                1024,
                Some(4 * 1024 * 1024 * 1024),
            )? as usize,
            max_file_bytes: self.int(
                "replication.max_file_bytes",
                raw.max_file_bytes,
                1 << 40,
                1,
                None,
            )?,
            copy_timeout: self.millis(
                "replication.copy_timeout_ms",
                raw.copy_timeout_ms,
                4 * hour,
                1_000,
                Some(48 * hour),
            )?,
            sets: out,
        })
    }
}
