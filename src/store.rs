//! Everything hamon keeps on disk under `state_dir`, written durably:
//! temp file, fsync, rename over the old file, fsync of the directory.
//!
//! - `ha.state`: the persisted HA state (registration, state), in two fixed slots
//!   written in place, so that saving it never needs a free block (see [`StateFile`]);
//!   `ha.json`, its wave-1 form, is read once and replaced
//! - `authkey`: the HA authentication key (mode 0600)
//! - `in-sync`: Unix time this server last recorded being in sync
//! - `events.jsonl`: the event journal (appended; the newest lines are read back)

use crate::ha::{JournalEntry, Persisted};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A journal entry with its wall-clock time, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    /// Unix seconds.
    pub time: u64,
    #[serde(flatten)]
    pub entry: JournalEntry,
}

/// Write `bytes` to `path` atomically and durably, with file mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call, so two threads writing the same file never share a temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The tag under which a key change stages its secret (`secret.new`).
pub const REKEY_TAG: &str = "new";

/// The state file's name.
const STATE_FILE: &str = "ha.state";
/// The wave-1 state file, read once and replaced by [`STATE_FILE`].
const LEGACY_STATE: &str = "ha.json";
/// Bytes in one slot of the state file.
const SLOT: usize = 64 * 1024;
/// A slot's head: magic (4), version (1), reserved (3), sequence (8), length (4), CRC-32
/// of the payload (4).
const SLOT_HEAD: usize = 24;
const SLOT_MAGIC: &[u8; 4] = b"HMST";
const SLOT_VERSION: u8 = 1;

/// The HA state file: two slots of [`SLOT`] bytes, each a head and a JSON payload. A save
/// writes the older slot in place with the next sequence number and syncs it; a load takes
/// the valid slot with the highest sequence. The file is filled with zeros when made, so
/// a save only overwrites blocks the file already owns: it needs no free space on ext4,
/// xfs or tmpfs (a copy-on-write file system such as btrfs allocates anyway). A save torn
/// by a crash fails its CRC, and the other slot, the state before, is used.
#[derive(Debug)]
pub struct StateFile {
    file: File,
}

impl StateFile {
    fn open(path: &Path) -> io::Result<Option<StateFile>> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) if file.metadata()?.len() >= (2 * SLOT) as u64 => Ok(Some(StateFile { file })),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is shorter than its two slots", path.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new, zero-filled state file (temporary file, fsync, rename, directory fsync).
    fn create(path: &Path) -> io::Result<StateFile> {
        write_atomic(path, &vec![0u8; 2 * SLOT], 0o600)?;
        StateFile::open(path)?.ok_or_else(|| io::Error::other("state file vanished"))
    }

    /// The newest valid payload in the file at `path`; `None` if there is no file, or
    /// nothing was saved in it yet (both slots still zero: made, then stopped before a save).
    fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = StateFile::open(path)? else {
            return Ok(None);
        };
        if let Some((_, _, payload)) = file.newest()? {
            return Ok(Some(payload));
        }
        if file.never_written()? {
            return Ok(None);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no valid slot", path.display()),
        ))
    }

    /// True if both slots' heads are still all zero.
    fn never_written(&self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut head = [0u8; SLOT_HEAD];
        for slot in 0..2 {
            self.file.read_exact_at(&mut head, (slot * SLOT) as u64)?;
            if head.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// (slot, sequence, payload) of the newest valid slot.
    fn newest(&self) -> io::Result<Option<(usize, u64, Vec<u8>)>> {
        use std::os::unix::fs::FileExt;
        let mut best: Option<(usize, u64, Vec<u8>)> = None;
        let mut buf = vec![0u8; SLOT];
        for slot in 0..2 {
            self.file.read_exact_at(&mut buf, (slot * SLOT) as u64)?;
            if let Some((seq, payload)) = decode_slot(&buf) {
                if best.as_ref().is_none_or(|(_, s, _)| seq > *s) {
                    best = Some((slot, seq, payload.to_vec()));
                }
            }
        }
        Ok(best)
    }

    /// Writes `payload` into the older slot, in place, and syncs it.
    pub fn write(&self, payload: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (slot, seq) = match self.newest()? {
            Some((newest, seq, _)) => (1 - newest, seq + 1),
            None => (0, 1),
        };
        let bytes = encode_slot(seq, payload)?;
        self.file.write_all_at(&bytes, (slot * SLOT) as u64)?;
        self.file.sync_data()
    }
}

/// One slot's head and payload.
fn encode_slot(seq: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| (*l as usize) <= SLOT - SLOT_HEAD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the HA state is {} bytes, over the slot's {}",
                    payload.len(),
                    SLOT - SLOT_HEAD
                ),
            )
        })?;
    let mut out = Vec::with_capacity(SLOT_HEAD + payload.len());
    out.extend_from_slice(SLOT_MAGIC);
    out.extend_from_slice(&[SLOT_VERSION, 0, 0, 0]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A slot's sequence number and payload, if the slot holds a whole, intact one.
fn decode_slot(slot: &[u8]) -> Option<(u64, &[u8])> {
    let head = slot.get(..SLOT_HEAD)?;
    if &head[..4] != SLOT_MAGIC || head[4] != SLOT_VERSION {
        return None;
    }
    let seq = u64::from_be_bytes(head[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(head[16..20].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(head[20..24].try_into().ok()?);
    let payload = slot.get(SLOT_HEAD..SLOT_HEAD.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((seq, payload))
}

/// The state directory and the files in it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Open (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// A store over an existing directory, without touching it (CLI reads).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_optional(&self, name: &str) -> io::Result<Option<String>> {
        match fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The persisted HA state: the newest valid slot of `ha.state`, or a wave-1 `ha.json`.
    pub fn load_state(&self) -> io::Result<Option<Persisted>> {
        let path = self.dir.join(STATE_FILE);
        let (json, shown) = match StateFile::read(&path)? {
            Some(json) => (json, path),
            None => match self.read_optional(LEGACY_STATE)? {
                Some(text) => (text.into_bytes(), self.dir.join(LEGACY_STATE)),
                None => return Ok(None),
            },
        };
        serde_json::from_slice(&json).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", shown.display()),
            )
        })
    }

    /// Saves the HA state into the older slot of `ha.state`, in place (see [`StateFile`]).
    pub fn save_state(&self, p: &Persisted) -> io::Result<()> {
        let json = serde_json::to_vec(p).map_err(io::Error::other)?;
        self.reserve_state()?.write(&json)
    }

    /// Makes `ha.state` if it is missing (carrying over a wave-1 `ha.json`), so that its
    /// blocks are held from the start: the agent calls it when it starts, before any
    /// state change might meet a full disk.
    pub fn reserve_state(&self) -> io::Result<StateFile> {
        let path = self.dir.join(STATE_FILE);
        let file = match StateFile::open(&path)? {
            Some(file) if !file.never_written()? => return Ok(file),
            Some(file) => file, // made, but stopped before anything was carried over
            None => StateFile::create(&path)?,
        };
        if let Some(old) = self.read_optional(LEGACY_STATE)? {
            file.write(old.as_bytes())?;
            fs::remove_file(self.dir.join(LEGACY_STATE))?;
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(file)
    }

    pub fn load_authkey(&self) -> io::Result<Option<String>> {
        Ok(self
            .read_optional("authkey")?
            .map(|s| s.trim_end_matches('\n').to_string()))
    }

    pub fn save_authkey(&self, key: &str) -> io::Result<()> {
        write_atomic(
            &self.dir.join("authkey"),
            format!("{key}\n").as_bytes(),
            0o600,
        )
    }

    /// The pair secret (`secret`, mode 0600); `None` if there is none yet.
    pub fn load_secret(&self) -> io::Result<Option<crate::peer::pair::PairSecret>> {
        match self.read_optional("secret")? {
            None => Ok(None),
            Some(text) => crate::peer::pair::PairSecret::from_text(&text)
                .map(Some)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", self.dir.join("secret").display()),
                    )
                }),
        }
    }

    /// Replaces the pair secret, durably (temporary file, fsync, rename, directory fsync).
    pub fn save_secret(&self, secret: &crate::peer::pair::PairSecret) -> io::Result<()> {
        write_atomic(&self.dir.join("secret"), secret.to_text().as_bytes(), 0o600)
    }

    /// Writes `secret` beside the current one (`secret.<tag>`, fsynced), ready to replace
    /// it by [`Store::commit_secret`]: what can fail for a full disk fails here, before
    /// anything depends on it. Each purpose stages under its own tag: [`REKEY_TAG`] for a
    /// key change, `pair-<id>` for a pairing.
    pub fn stage_secret(
        &self,
        secret: &crate::peer::pair::PairSecret,
        tag: &str,
    ) -> io::Result<()> {
        write_atomic(
            &self.dir.join(format!("secret.{tag}")),
            secret.to_text().as_bytes(),
            0o600,
        )
    }

    /// The secret staged under `tag`, if there is one.
    pub fn staged_secret(&self, tag: &str) -> io::Result<Option<crate::peer::pair::PairSecret>> {
        match self.read_optional(&format!("secret.{tag}"))? {
            None => Ok(None),
            Some(text) => crate::peer::pair::PairSecret::from_text(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Puts the secret staged under `tag` in place: a rename and a directory fsync,
    /// nothing to allocate.
    pub fn commit_secret(&self, tag: &str) -> io::Result<()> {
        fs::rename(
            self.dir.join(format!("secret.{tag}")),
            self.dir.join("secret"),
        )?;
        File::open(&self.dir)?.sync_all()
    }

    /// Drops the secret staged under `tag`.
    pub fn discard_staged_secret(&self, tag: &str) {
        let _ = fs::remove_file(self.dir.join(format!("secret.{tag}")));
    }

    /// The secret of a key change this server prepared and has not committed, if any.
    pub fn staged_rekey(&self) -> io::Result<Option<crate::peer::pair::PairSecret>> {
        self.staged_secret(REKEY_TAG)
    }

    /// As [`Store::stage_secret`], for the operator's key (`authkey.new`).
    pub fn stage_authkey(&self, key: &str) -> io::Result<()> {
        write_atomic(
            &self.dir.join("authkey.new"),
            format!("{key}\n").as_bytes(),
            0o600,
        )
    }

    /// Puts a staged key in place (nothing if none is staged).
    pub fn commit_authkey(&self) -> io::Result<()> {
        match self.commit("authkey") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Drops a staged key.
    pub fn discard_staged_authkey(&self) {
        let _ = fs::remove_file(self.dir.join("authkey.new"));
    }

    fn commit(&self, name: &str) -> io::Result<()> {
        fs::rename(self.dir.join(format!("{name}.new")), self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }

    /// The working keys: the pair secret's. A server with a key but no secret gets one: a
    /// random secret of its own when it is not registered (and `create`), or, when it is
    /// registered (a pair from before pair secrets), the keys derived from the key itself
    /// as before, so that servers upgraded one at a time keep hearing each other. `None`
    /// without a key.
    pub fn working_keys(
        &self,
        registered: bool,
        create: bool,
    ) -> io::Result<Option<crate::peer::auth::Keys>> {
        if let Some(secret) = self.load_secret()? {
            // A key change prepared before a restart stays accepted from the peer until it
            // is used (which commits it) or replaced: dropping it could split the pair.
            let keys = match self.staged_rekey().ok().flatten() {
                Some(next) => secret
                    .keys()
                    .also_accepting_staged(&next.keys(), u64::MAX, 0),
                None => secret.keys(),
            };
            return Ok(Some(keys));
        }
        let Some(key) = self.load_authkey()? else {
            return Ok(None);
        };
        if registered {
            return Ok(Some(crate::peer::auth::Keys::legacy(&key)));
        }
        if !create {
            return Ok(None);
        }
        let secret = crate::peer::pair::PairSecret::random()?;
        self.save_secret(&secret)?;
        Ok(Some(secret.keys()))
    }

    pub fn load_in_sync(&self) -> io::Result<Option<u64>> {
        Ok(self
            .read_optional("in-sync")?
            .and_then(|s| s.trim().parse().ok()))
    }

    pub fn save_in_sync(&self, unix_secs: u64) -> io::Result<()> {
        write_atomic(
            &self.dir.join("in-sync"),
            format!("{unix_secs}\n").as_bytes(),
            0o600,
        )
    }

    /// Append journal entries (a JSON line each) in one write, flushed to disk once.
    pub fn append_journal(&self, entries: &[Stamped]) -> io::Result<()> {
        let mut line = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut line, e).map_err(io::Error::other)?;
            line.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join("events.jsonl"))?;
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The newest `limit` journal entries, oldest first. Unreadable lines
    /// (a torn last write) are skipped.
    pub fn read_journal(&self, limit: usize) -> io::Result<Vec<Stamped>> {
        let f = match File::open(self.dir.join("events.jsonl")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = std::collections::VecDeque::with_capacity(limit.min(4096));
        for line in io::BufReader::new(f).lines() {
            if let Ok(e) = serde_json::from_str::<Stamped>(&line?) {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(e);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Remove replicated HA data (`ha remove` answered "yes" to purging).
    pub fn purge_data(&self) -> io::Result<()> {
        match fs::remove_dir_all(self.dir.join("data")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{HaState, Severity};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamon-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_round_trips_and_files_are_private() -> io::Result<()> {
        let d = tempdir("state");
        let s = Store::open(&d)?;
        assert_eq!(s.load_state()?, None);
        let p = Persisted {
            registration: None,
            state: HaState::PrimaryActive,
            prior: None,
            settings_pending: None,
        };
        s.save_state(&p)?;
        assert_eq!(s.load_state()?, Some(p));
        s.save_authkey("Abcdefg1")?;
        assert_eq!(s.load_authkey()?.as_deref(), Some("Abcdefg1"));
        let mode = fs::metadata(d.join("authkey"))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&d)?.permissions().mode() & 0o777, 0o700);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(&d)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().contains(".tmp.")),
            "{names:?}"
        );
        fs::remove_dir_all(&d)
    }

    #[test]
    fn state_slots_alternate_survive_a_torn_write_and_carry_over_ha_json() -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let d = tempdir("slots");
        let s = Store::open(&d)?;
        let state = |n: usize| Persisted {
            state: crate::ha::HaState::ALL[n],
            registration: None,
            prior: None,
            settings_pending: None,
        };
        // A wave-1 ha.json is read, then replaced by the slot file when it is reserved.
        fs::write(d.join("ha.json"), serde_json::to_vec(&state(7))?)?;
        assert_eq!(s.load_state()?, Some(state(7)));
        s.reserve_state()?;
        assert!(!d.join("ha.json").exists());
        assert_eq!(fs::metadata(d.join("ha.state"))?.len(), (2 * SLOT) as u64);
        assert_eq!(s.load_state()?, Some(state(7)));
        for n in 8..=10 {
            s.save_state(&state(n))?;
            assert_eq!(s.load_state()?, Some(state(n)));
        }
        // Saving never grows the file: it overwrites what it owns.
        assert_eq!(fs::metadata(d.join("ha.state"))?.len(), (2 * SLOT) as u64);
        // A save torn in the newest slot: the one before is used.
        let file = OpenOptions::new().write(true).open(d.join("ha.state"))?;
        let newest = StateFile::open(&d.join("ha.state"))?
            .and_then(|f| f.newest().ok().flatten())
            .map(|(slot, _, _)| slot)
            .unwrap_or(9);
        file.write_all_at(b"X", (newest * SLOT + SLOT_HEAD + 3) as u64)?;
        assert_eq!(s.load_state()?, Some(state(9)));
        // Both slots broken is an error that names the file, not a reset.
        file.write_all_at(b"X", ((1 - newest) * SLOT + SLOT_HEAD + 3) as u64)?;
        let err = s
            .load_state()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("ha.state") && err.contains("no valid slot"),
            "{err}"
        );
        // A state too large for a slot is refused, nothing overwritten.
        assert!(encode_slot(1, &vec![b' '; SLOT]).is_err());
        fs::remove_dir_all(&d)
    }

    #[test]
    fn a_state_file_never_written_is_no_state_not_an_error() -> io::Result<()> {
        let d = tempdir("unwritten");
        let s = Store::open(&d)?;
        // Made at start, stopped before the first save.
        StateFile::create(&d.join(STATE_FILE))?;
        assert_eq!(s.load_state()?, None);
        // Stopped between making it and carrying a wave-1 ha.json over: ha.json counts.
        let old = Persisted {
            state: crate::ha::HaState::PrimaryActive,
            registration: None,
            prior: None,
            settings_pending: None,
        };
        fs::write(d.join(LEGACY_STATE), serde_json::to_vec(&old)?)?;
        assert_eq!(s.load_state()?, Some(old));
        fs::remove_dir_all(&d)
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() -> io::Result<()> {
        let d = tempdir("corrupt");
        let s = Store::open(&d)?;
        fs::write(d.join("ha.json"), b"{not json")?;
        let err = s
            .load_state()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ha.json"), "{err}");
        fs::remove_dir_all(&d)
    }

    #[test]
    fn journal_keeps_the_newest_and_skips_torn_lines() -> io::Result<()> {
        let d = tempdir("journal");
        let s = Store::open(&d)?;
        for i in 0..10 {
            let entry = JournalEntry {
                kind: "state_changed".into(),
                severity: Severity::Info,
                state: HaState::StandAlone,
                text: format!("entry {i}"),
            };
            s.append_journal(&[Stamped {
                time: 100 + i,
                entry,
            }])?;
        }
        OpenOptions::new()
            .append(true)
            .open(d.join("events.jsonl"))?
            .write_all(b"{\"time\":1,")?;
        let tail = s.read_journal(3)?;
        let texts: Vec<_> = tail.iter().map(|e| e.entry.text.as_str()).collect();
        assert_eq!(texts, ["entry 7", "entry 8", "entry 9"]);
        fs::remove_dir_all(&d)
    }
}
