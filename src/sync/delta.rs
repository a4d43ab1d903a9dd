//! Delta transfer of large files: the standby fetches only the blocks it does not have.
//!
//! A large file is cut into content-defined blocks (FastCDC, 2 KiB to 32 KiB, 4 KiB on
//! average), so an insert or a deletion moves the cut points only near the edit and
//! every other block keeps its hash (BLAKE3: several times faster than SHA-256 here, and
//! only ever compared with itself). Runs of blocks form **groups**, cut where a
//! block's hash says so (about 64 blocks, at most 256), so the groups too resynchronise
//! right after an edit.
//!
//! Version 3 halved the blocks of version 2 (8 KiB on average): an edit costs about a
//! block on each side of it, and at 8 KiB a file with 10 % of its 64 KiB regions
//! rewritten moved 1.24 times rsync's bytes; at 4 KiB, 1.16 times. The larger minimum
//! (half the average) makes the cutting skip more bytes, so the scan is no slower.
//! Peers of different versions refuse each other's lists, and the file comes whole.
//!
//! The exchange, each answer signed like every sync answer:
//!
//! 1. The standby asks for the file's **summary**: per group its block count, length and
//!    hash (BLAKE3 over its blocks' lengths and hashes). A 2 GiB file has about 8 000
//!    groups: 360 KB.
//! 2. It cuts its own old copy the same way. Every group it also has is copied from the
//!    old copy whole; for the others it asks the **details** (their blocks) and checks
//!    them against the summary's group hashes.
//! 3. It fetches the blocks it lacks as byte ranges and builds the new file in a temp
//!    file beside the old one ([`assemble`]): each fetched block checked against its
//!    hash and written at its place, each unchanged run copied from the old copy with
//!    `copy_file_range(2)`, which on XFS or btrfs shares the old file's extents instead
//!    of writing them again. The temp file is checked against the manifest's size,
//!    fsynced and renamed, as every fetched file is. A kill at any moment leaves the old
//!    file as it was.
//!
//! The new file is not read back for the manifest's SHA-256: the summary that carries
//! that hash is signed, the details must hash to its groups, every fetched block to its
//! details, and the old runs are the blocks the standby's own list of its copy names,
//! which `pull` checks did not change (size, mtime, ctime) while the file was built.
//! The times can miss a write through a shared mapping, so `pull` does not remember a
//! delta-built file as verified: the next scan reads it, off the delta's path.
//!
//! Wire format, all integers big-endian; both start with magic `b"HMBL"`, version 3 and
//! a kind byte:
//!
//! ```text
//! summary (kind 0)                      details (kind 1)
//! off  len  field                       off  len  field
//! 0    4    magic                       0    4    magic
//! 4    1    version = 3                 4    1    version = 3
//! 5    1    kind = 0                    5    1    kind = 1
//! 6    2    reserved, 0                 6    2    reserved, 0
//! 8    8    the file's size             8    4    count of groups
//! 16   32   the file's SHA-256          12   ..   per group: u32 index, u32 blocks,
//! 48   4    count of groups                       then per block u32 length, 32-byte
//! 52   44×count  per group: u32 blocks,           BLAKE3 hash
//!           u64 length, 32-byte hash
//! ```
//!
//! The decoders check everything they can: lengths that add up, no empty group or
//! block, nothing longer than the cuts allow, no bytes left over, and details that hash
//! to the summary's groups.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Files at least this large are fetched as deltas when the standby has an old copy.
pub const DELTA_MIN: u64 = 4 << 20;
/// The cut sizes: smallest, average and largest block.
pub const MIN_BLOCK: u32 = 2 << 10;
pub const AVG_BLOCK: u32 = 4 << 10;
pub const MAX_BLOCK: u32 = 32 << 10;
/// A group ends after a block whose hash's first two bytes are 0 modulo this (so about
/// this many blocks), or at `MAX_GROUP` blocks.
const GROUP_EVERY: u16 = 64;
pub const MAX_GROUP: u32 = 256;
/// How much is read at once while cutting (many largest blocks, so a cut always has the
/// look-ahead it would have over the whole file).
const WINDOW: usize = 8 << 20;
/// How much of a copied run of the old file is read at once.
const COPY_CHUNK: u64 = 1 << 20;

const MAGIC: [u8; 4] = *b"HMBL";
const VERSION: u8 = 3;
const SUMMARY: u8 = 0;
const DETAILS: u8 = 1;
const SUMMARY_HEADER: usize = 52;
const SUMMARY_ENTRY: usize = 44;
const BLOCK_ENTRY: usize = 36;

/// One block: its length and BLAKE3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    pub len: u32,
    pub hash: [u8; 32],
}

/// A file cut into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockList {
    pub size: u64,
    /// SHA-256 of the whole file (the manifest's content hash); all zero from
    /// [`index_blocks`], which does not compute it.
    pub hash: [u8; 32],
    pub blocks: Vec<Block>,
}

/// A run of blocks as the summary gives it. Only the hash says what the blocks are: a
/// group of the old copy stands for one of the summary's only if all three fields agree
/// (a summary's count and length are not covered by its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group {
    pub blocks: u32,
    pub len: u64,
    pub hash: [u8; 32],
}

/// A file's groups: what the standby asks for first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub size: u64,
    pub hash: [u8; 32],
    pub groups: Vec<Group>,
}

/// Why a summary or details were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockListError {
    #[error("block list truncated")]
    Truncated,
    #[error("not a block list (bad magic)")]
    BadMagic,
    #[error("unsupported block list version {0}")]
    Version(u8),
    #[error("a block list of kind {0} where another was expected")]
    Kind(u8),
    #[error("{count} groups, more than a file of {size} bytes can have")]
    TooMany { count: u64, size: u64 },
    #[error("group {0} is empty or longer than its blocks allow")]
    BadGroup(usize),
    #[error("block {0} is empty or longer than the largest block")]
    BadBlock(usize),
    #[error("the groups add up to {sum} bytes, not the file's {size}")]
    Sum { sum: u64, size: u64 },
    #[error("details of group {0} that are not the summary's")]
    Detail(u32),
    #[error("bytes after the last entry")]
    Trailing,
}

fn take<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], BlockListError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(BlockListError::Truncated)
}

fn header(bytes: &[u8], kind: u8) -> Result<(), BlockListError> {
    if take::<4>(bytes, 0)? != MAGIC {
        return Err(BlockListError::BadMagic);
    }
    let [version, got] = take::<2>(bytes, 4)?;
    if version != VERSION {
        return Err(BlockListError::Version(version));
    }
    if got != kind {
        return Err(BlockListError::Kind(got));
    }
    Ok(())
}

fn start(kind: u8) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, kind, 0, 0]);
    out
}

/// The hash that names a group: BLAKE3 over its blocks' lengths and hashes.
fn group_hash(blocks: &[Block]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for b in blocks {
        h.update(&b.len.to_be_bytes());
        h.update(&b.hash);
    }
    *h.finalize().as_bytes()
}

fn block_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

impl BlockList {
    /// The groups: each as (index of its first block, its blocks, offset in the file).
    pub fn runs(&self) -> Vec<(usize, &[Block], u64)> {
        let mut out = Vec::new();
        let (mut first, mut offset, mut at) = (0usize, 0u64, 0u64);
        for (i, b) in self.blocks.iter().enumerate() {
            at += u64::from(b.len);
            let n = i + 1 - first;
            let ends = u16::from_be_bytes([b.hash[0], b.hash[1]]) % GROUP_EVERY == 0
                || n == MAX_GROUP as usize
                || i + 1 == self.blocks.len();
            if ends {
                out.push((first, &self.blocks[first..=i], offset));
                first = i + 1;
                offset = at;
            }
        }
        out
    }

    /// The summary of this list.
    pub fn summary(&self) -> Summary {
        Summary {
            size: self.size,
            hash: self.hash,
            groups: self
                .runs()
                .into_iter()
                .map(|(_, blocks, _)| Group {
                    blocks: blocks.len() as u32,
                    len: blocks.iter().map(|b| u64::from(b.len)).sum(),
                    hash: group_hash(blocks),
                })
                .collect(),
        }
    }
}

/// The summary as sent.
pub fn encode_summary(s: &Summary) -> Vec<u8> {
    let mut out = start(SUMMARY);
    out.reserve(SUMMARY_HEADER + SUMMARY_ENTRY * s.groups.len());
    out.extend_from_slice(&s.size.to_be_bytes());
    out.extend_from_slice(&s.hash);
    out.extend_from_slice(&(s.groups.len() as u32).to_be_bytes());
    for g in &s.groups {
        out.extend_from_slice(&g.blocks.to_be_bytes());
        out.extend_from_slice(&g.len.to_be_bytes());
        out.extend_from_slice(&g.hash);
    }
    out
}

/// Reads a summary (see the module documentation for what is checked).
pub fn decode_summary(bytes: &[u8]) -> Result<Summary, BlockListError> {
    header(bytes, SUMMARY)?;
    let size = u64::from_be_bytes(take(bytes, 8)?);
    let hash = take::<32>(bytes, 16)?;
    let count = u64::from(u32::from_be_bytes(take(bytes, 48)?));
    // Every group but the last holds at least one block of at least MIN_BLOCK bytes.
    if count > size / u64::from(MIN_BLOCK) + 1 || (size > 0) != (count > 0) {
        return Err(BlockListError::TooMany { count, size });
    }
    let count = count as usize;
    let body = bytes
        .get(SUMMARY_HEADER..)
        .ok_or(BlockListError::Truncated)?;
    if body.len() < count * SUMMARY_ENTRY {
        return Err(BlockListError::Truncated);
    }
    if body.len() > count * SUMMARY_ENTRY {
        return Err(BlockListError::Trailing);
    }
    let mut groups = Vec::with_capacity(count);
    let mut sum: u64 = 0;
    for i in 0..count {
        let at = i * SUMMARY_ENTRY;
        let blocks = u32::from_be_bytes(take(body, at)?);
        let len = u64::from_be_bytes(take(body, at + 4)?);
        if blocks == 0
            || blocks > MAX_GROUP
            || len < u64::from(blocks)
            || len > u64::from(blocks) * u64::from(MAX_BLOCK)
        {
            return Err(BlockListError::BadGroup(i));
        }
        sum = sum.saturating_add(len);
        groups.push(Group {
            blocks,
            len,
            hash: take(body, at + 12)?,
        });
    }
    if sum != size {
        return Err(BlockListError::Sum { sum, size });
    }
    Ok(Summary { size, hash, groups })
}

/// The blocks of groups `wanted` (indices into the summary), as sent; `None` if one is
/// not a group of this list.
pub fn encode_details(list: &BlockList, wanted: &[u32]) -> Option<Vec<u8>> {
    let runs = list.runs();
    let mut out = start(DETAILS);
    out.extend_from_slice(&(wanted.len() as u32).to_be_bytes());
    for &i in wanted {
        let (_, blocks, _) = runs.get(i as usize)?;
        out.extend_from_slice(&i.to_be_bytes());
        out.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
        for b in *blocks {
            out.extend_from_slice(&b.len.to_be_bytes());
            out.extend_from_slice(&b.hash);
        }
    }
    Some(out)
}

/// Reads the details of groups `wanted` of `summary`: the blocks of each, in that order,
/// each group's blocks checked against the summary (count, length and hash).
pub fn decode_details(
    bytes: &[u8],
    summary: &Summary,
    wanted: &[u32],
) -> Result<Vec<Vec<Block>>, BlockListError> {
    header(bytes, DETAILS)?;
    let count = u32::from_be_bytes(take(bytes, 8)?) as usize;
    if count != wanted.len() {
        return Err(BlockListError::TooMany {
            count: count as u64,
            size: summary.size,
        });
    }
    let mut at = 12;
    let mut out = Vec::with_capacity(count);
    for &want in wanted {
        let index = u32::from_be_bytes(take(bytes, at)?);
        let n = u32::from_be_bytes(take(bytes, at + 4)?);
        at += 8;
        let group = summary
            .groups
            .get(want as usize)
            .filter(|g| index == want && g.blocks == n)
            .ok_or(BlockListError::Detail(index))?;
        let mut blocks = Vec::with_capacity(n as usize);
        for j in 0..n as usize {
            let len = u32::from_be_bytes(take(bytes, at)?);
            if len == 0 || len > MAX_BLOCK {
                return Err(BlockListError::BadBlock(j));
            }
            blocks.push(Block {
                len,
                hash: take(bytes, at + 4)?,
            });
            at += BLOCK_ENTRY;
        }
        let len: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
        if len != group.len || group_hash(&blocks) != group.hash {
            return Err(BlockListError::Detail(index));
        }
        out.push(blocks);
    }
    if at != bytes.len() {
        return Err(BlockListError::Trailing);
    }
    Ok(out)
}

/// What the serving side answers a `sync/blocks` request with: the summary of `list`
/// (`groups` `None`) or the details of those groups.
pub fn serve(list: &BlockList, groups: Option<&[u32]>) -> Result<Vec<u8>, String> {
    match groups {
        None => Ok(encode_summary(&list.summary())),
        Some(g) => encode_details(list, g).ok_or_else(|| "no such group".to_string()),
    }
}

/// The BLAKE3 hashes of `buf`'s blocks at `cuts`.
fn hash_all(buf: &[u8], cuts: &[Range<usize>]) -> Vec<[u8; 32]> {
    cuts.iter()
        .map(|c| block_hash(buf.get(c.clone()).unwrap_or_default()))
        .collect()
}

/// Cuts `buf` with `cut_points` here while another thread runs `aside`, then hashes the
/// blocks: the first `tenths` tenths of them here, the rest on the other thread once
/// `aside` is done. `None` for `aside`'s result if its thread died (its blocks are then
/// hashed here).
fn cut_and_hash<T: Send>(
    buf: &[u8],
    cut_points: impl FnOnce() -> Vec<Range<usize>>,
    tenths: usize,
    aside: impl FnOnce() -> T + Send,
) -> (Vec<Range<usize>>, Vec<[u8; 32]>, Option<T>) {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Range<usize>>>();
        let other = s.spawn(move || {
            let t = aside();
            let theirs = rx.recv().unwrap_or_default();
            (t, hash_all(buf, &theirs))
        });
        let cuts = cut_points();
        let split = cuts.len() * tenths / 10;
        let (mine, theirs) = cuts.split_at(split);
        let sent = tx.send(theirs.to_vec()).is_ok();
        let mut hashes = hash_all(buf, mine);
        match other.join() {
            Ok((t, h)) if sent => {
                hashes.extend(h);
                (cuts, hashes, Some(t))
            }
            Ok((t, _)) => {
                hashes.extend(hash_all(buf, theirs));
                (cuts, hashes, Some(t))
            }
            Err(_) => {
                hashes.extend(hash_all(buf, theirs));
                (cuts, hashes, None)
            }
        }
    })
}

/// Cuts what `r` yields into blocks, hashing each and the whole (SHA-256) in the same
/// read: what the serving side keeps.
pub fn index(r: impl Read) -> io::Result<BlockList> {
    cut(r, true)
}

/// As [`index`], without the whole file's SHA-256 (left zero): the standby's view of its
/// old copy, which only the blocks matter for.
pub fn index_blocks(r: impl Read) -> io::Result<BlockList> {
    cut(r, false)
}

fn cut(mut r: impl Read, whole_hash: bool) -> io::Result<BlockList> {
    let mut ix = Indexer::new(whole_hash);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return ix.finish(),
            Ok(n) => ix.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Cuts bytes into blocks as they are pushed: the same cuts as over the whole file.
/// [`index`] reads a file into one; a whole fetch feeds one with the bytes it writes
/// ([`Tee`]), so the standby knows the blocks of what it fetched without reading it again.
#[derive(Debug)]
pub struct Indexer {
    buf: Vec<u8>,
    whole: Option<Sha256>,
    /// How much of `buf` the whole-file hash has taken in.
    hashed: usize,
    /// The whole-file hash was lost (its thread died): `finish` fails.
    lost: bool,
    blocks: Vec<Block>,
    size: u64,
}

impl Indexer {
    /// `whole_hash`: also compute the whole file's SHA-256.
    pub fn new(whole_hash: bool) -> Indexer {
        Indexer {
            buf: Vec::with_capacity(WINDOW + (1 << 20)),
            whole: whole_hash.then(Sha256::new),
            hashed: 0,
            lost: false,
            blocks: Vec::new(),
            size: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WINDOW {
            self.cut(false);
        }
    }

    /// Cuts what the buffer holds; away from the end of the file a cut needs the largest
    /// block's look-ahead, or it could fall elsewhere than over the whole file, so the
    /// rest waits for more bytes.
    ///
    /// On two threads, since a large file's scan is the active's whole cost of a delta
    /// and the machine has the cores: the cut points beside the whole file's SHA-256 of
    /// the new bytes, then the blocks' hashes, split so that both threads end together.
    fn cut(&mut self, eof: bool) {
        let len = self.buf.len();
        let buf = &self.buf;
        let cut_points = || {
            let mut cuts = Vec::new();
            for c in fastcdc::v2020::FastCDC::new(buf, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK) {
                if !eof && len - c.offset < MAX_BLOCK as usize {
                    break;
                }
                cuts.push(c.offset..c.offset + c.length);
            }
            cuts
        };
        let fresh = &buf[self.hashed.min(len)..];
        let (cuts, hashes) = match self.whole.take() {
            Some(mut w) if fresh.len() >= 1 << 20 => {
                // The other thread hashes the whole file's new bytes, then the last
                // third of the blocks, which by then are cut: the two threads finish
                // about together (SHA-256 costs a bit more than the cutting here).
                let (cuts, hashes, w) = cut_and_hash(buf, cut_points, 7, move || {
                    w.update(fresh);
                    w
                });
                match w {
                    Some(w) => self.whole = Some(w),
                    None => self.lost = true,
                }
                (cuts, hashes)
            }
            Some(mut w) => {
                w.update(fresh);
                self.whole = Some(w);
                let cuts = cut_points();
                let hashes = hash_all(buf, &cuts);
                (cuts, hashes)
            }
            None => {
                let (cuts, hashes, _) = cut_and_hash(buf, cut_points, 5, || ());
                (cuts, hashes)
            }
        };
        let mut done = 0;
        for (c, hash) in cuts.iter().zip(hashes) {
            let len = (c.end - c.start) as u32;
            self.blocks.push(Block { len, hash });
            self.size += u64::from(len);
            done = c.end;
        }
        self.hashed = len - done;
        self.buf.drain(..done);
    }

    pub fn finish(mut self) -> io::Result<BlockList> {
        self.cut(true);
        if self.lost {
            return Err(io::Error::other("the whole-file hash was lost"));
        }
        Ok(BlockList {
            size: self.size,
            hash: self.whole.map_or([0; 32], |w| w.finalize().into()),
            blocks: self.blocks,
        })
    }
}

/// Passes a reader's bytes on, feeding them to an [`Indexer`] on the way.
#[derive(Debug)]
pub struct Tee<'a, R: Read> {
    pub inner: R,
    pub indexer: &'a mut Indexer,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.indexer.push(&out[..n]);
        Ok(n)
    }
}

/// Where each part of the new file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Bytes the old file holds at `offset`.
    Local { offset: u64, len: u64 },
    /// A block to fetch: the new file's bytes at `offset`, whose BLAKE3 hash is `hash`.
    Remote {
        offset: u64,
        len: u32,
        hash: [u8; 32],
    },
}

/// The groups of `summary` that `mine` (the old copy's list) does not hold: the ones to
/// ask the details of.
pub fn unknown_groups(mine: &BlockList, summary: &Summary) -> Vec<u32> {
    let have: std::collections::HashSet<Group> = mine.summary().groups.into_iter().collect();
    summary
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !have.contains(g))
        .map(|(i, _)| i as u32)
        .collect()
}

/// The new file as pieces of the old one (`mine`) and blocks to fetch, given the summary
/// and the details of its `unknown` groups (from [`decode_details`]); and the new file's
/// full block list.
pub fn plan(
    mine: &BlockList,
    summary: &Summary,
    unknown: &[u32],
    details: &[Vec<Block>],
) -> (Vec<Piece>, BlockList) {
    let mut group_at: HashMap<[u8; 32], (u64, &[Block])> = HashMap::new();
    let mut block_at: HashMap<[u8; 32], u64> = HashMap::with_capacity(mine.blocks.len());
    for (_, blocks, offset) in mine.runs() {
        group_at
            .entry(group_hash(blocks))
            .or_insert((offset, blocks));
        let mut at = offset;
        for b in blocks {
            block_at.entry(b.hash).or_insert(at);
            at += u64::from(b.len);
        }
    }
    let detail: HashMap<u32, &Vec<Block>> = unknown.iter().copied().zip(details).collect();
    let mut pieces: Vec<Piece> = Vec::new();
    let local = |pieces: &mut Vec<Piece>, offset: u64, len: u64| match pieces.last_mut() {
        Some(Piece::Local { offset: o, len: l }) if *o + *l == offset => *l += len,
        _ => pieces.push(Piece::Local { offset, len }),
    };
    let mut blocks = Vec::new();
    let mut at = 0u64;
    for (i, g) in summary.groups.iter().enumerate() {
        let same = |&&(_, b): &&(u64, &[Block])| {
            b.len() as u64 == u64::from(g.blocks)
                && b.iter().map(|b| u64::from(b.len)).sum::<u64>() == g.len
        };
        if let Some(&(offset, mine)) = group_at.get(&g.hash).filter(same) {
            local(&mut pieces, offset, g.len);
            blocks.extend_from_slice(mine);
            at += g.len;
            continue;
        }
        for b in detail
            .get(&(i as u32))
            .map(|d| d.as_slice())
            .unwrap_or_default()
        {
            match block_at.get(&b.hash) {
                Some(&offset) => local(&mut pieces, offset, u64::from(b.len)),
                None => pieces.push(Piece::Remote {
                    offset: at,
                    len: b.len,
                    hash: b.hash,
                }),
            }
            blocks.push(*b);
            at += u64::from(b.len);
        }
    }
    let list = BlockList {
        size: summary.size,
        hash: summary.hash,
        blocks,
    };
    (pieces, list)
}

/// The byte ranges of the remote file the pieces need, `(offset, length)`, adjacent ones
/// merged.
pub fn ranges(pieces: &[Piece]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pieces {
        if let Piece::Remote { offset, len, .. } = *p {
            match out.last_mut() {
                Some((o, l)) if *o + *l == offset => *l += u64::from(len),
                _ => out.push((offset, u64::from(len))),
            }
        }
    }
    out
}

/// Bytes the pieces fetch.
pub fn remote_bytes(pieces: &[Piece]) -> u64 {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Remote { len, .. } => u64::from(*len),
            Piece::Local { .. } => 0,
        })
        .sum()
}

/// Writes the new file into `out`, an empty file, and returns its length: the old file's
/// runs copied from `old` with `copy_file_range(2)`, the fetched blocks read from `fetched`
/// (their bytes one after another, as [`ranges`] lists them), each checked against its
/// hash before it is written. A fetched block that does not match fails at once
/// (`InvalidData`).
///
/// On a file system with reflinks (XFS, btrfs) the kernel shares the old file's extents
/// instead of copying them, so an unchanged run costs neither a write now nor a flush at
/// the fsync; elsewhere it copies them without a trip through this process. Runs are
/// aligned to the file system's blocks first where the old and new offsets allow it,
/// since only whole blocks can be shared.
pub fn assemble(
    old: &File,
    out: &File,
    pieces: &[Piece],
    mut fetched: impl Read,
) -> io::Result<u64> {
    let mut how = Copy {
        align: block_size(out),
        kernel: true,
    };
    let mut block = Vec::new();
    let mut fresh = Fresh::new(out);
    let mut at = 0u64;
    for p in pieces {
        match *p {
            Piece::Local { offset, len } => {
                fresh.flush()?;
                copy_run(old, offset, out, at, len, &mut how)?;
                // Copied runs leave dirty pages too where the extents are not shared.
                fresh.wrote(len);
                at += len;
            }
            Piece::Remote { offset, len, hash } => {
                if offset != at {
                    return Err(io::Error::other("the pieces leave a gap"));
                }
                block.resize(len as usize, 0);
                fetched.read_exact(&mut block)?;
                if block_hash(&block) != hash {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a fetched block does not match its hash",
                    ));
                }
                fresh.add(at, &block)?;
                at += u64::from(len);
            }
        }
    }
    fresh.flush()?;
    Ok(at)
}

/// Checked blocks on their way into the new file: adjacent ones written together, and
/// the file's writeback started every few MiB, so that the fsync at the end finds
/// little left to write.
struct Fresh<'a> {
    out: &'a File,
    buf: Vec<u8>,
    /// Where `buf` goes in the file.
    at: u64,
    /// Bytes written since the last writeback started.
    unflushed: u64,
}

impl<'a> Fresh<'a> {
    /// Bytes gathered for one write, and written before a writeback starts.
    const WRITE: usize = 1 << 20;
    const WRITEBACK: u64 = 8 << 20;

    fn new(out: &'a File) -> Self {
        Fresh {
            out,
            buf: Vec::with_capacity(Self::WRITE),
            at: 0,
            unflushed: 0,
        }
    }

    fn add(&mut self, at: u64, block: &[u8]) -> io::Result<()> {
        if self.at + self.buf.len() as u64 != at || self.buf.len() >= Self::WRITE {
            self.flush()?;
            self.at = at;
        }
        self.buf.extend_from_slice(block);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.wrote(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    /// Counts `n` bytes written to the file, and starts its writeback every few MiB.
    fn wrote(&mut self, n: u64) {
        self.unflushed += n;
        if self.unflushed >= Self::WRITEBACK {
            super::apply::start_writeback(self.out);
            self.unflushed = 0;
        }
    }
}

/// How runs are copied into one new file.
struct Copy {
    /// The file system's block size: only whole blocks can be shared.
    align: u64,
    /// Whether `copy_file_range(2)` works here; once it has failed, runs are copied by
    /// hand for the rest of the file.
    kernel: bool,
}

/// The fundamental block size of `f`'s file system (4096 if it cannot be known).
fn block_size(f: &File) -> u64 {
    nix::sys::statvfs::fstatvfs(f)
        .map(|v| v.fragment_size())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(4096)
}

/// Copies `len` bytes of `old` at `from` to `out` at `to`: first up to the next block
/// boundary of both when they share one (so the rest can be shared whole), then the rest.
fn copy_run(
    old: &File,
    from: u64,
    out: &File,
    to: u64,
    len: u64,
    how: &mut Copy,
) -> io::Result<()> {
    let align = how.align;
    let head = if from % align == to % align {
        ((align - to % align) % align).min(len)
    } else {
        0
    };
    kernel_copy(old, from, out, to, head, how)?;
    kernel_copy(old, from + head, out, to + head, len - head, how)
}

/// `copy_file_range(2)` in a loop; by reading and writing here where the kernel cannot
/// do it (an old kernel, a file system without support, a seccomp filter that refuses
/// the call).
fn kernel_copy(
    old: &File,
    mut from: u64,
    out: &File,
    mut to: u64,
    mut len: u64,
    how: &mut Copy,
) -> io::Result<()> {
    use nix::errno::Errno;
    while len > 0 {
        if !how.kernel {
            return user_copy(old, from, out, to, len);
        }
        let (mut off_in, mut off_out) = (offset(from)?, offset(to)?);
        let want = usize::try_from(len.min(COPY_MAX)).unwrap_or(usize::MAX);
        match nix::fcntl::copy_file_range(old, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the old file is shorter than its block list",
                ))
            }
            Ok(n) => {
                from += n as u64;
                to += n as u64;
                len -= n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(
                Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::EPERM,
            ) => {
                how.kernel = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One `copy_file_range(2)` call's most (under the kernel's own cap of 2 GiB less a page).
const COPY_MAX: u64 = 1 << 30;

fn offset(at: u64) -> io::Result<i64> {
    i64::try_from(at).map_err(|_| io::Error::other("offset beyond the largest file"))
}

fn user_copy(old: &File, mut from: u64, out: &File, mut to: u64, mut len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK.min(len) as usize];
    while len > 0 {
        let n = len.min(COPY_CHUNK) as usize;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        old.read_exact_at(chunk, from)?;
        out.write_all_at(chunk, to)?;
        (from, to, len) = (from + n as u64, to + n as u64, len - n as u64);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::sync::noise as data;

    /// The new file rebuilt from `old` and `new` through the wire formats, fetching from
    /// `new`; and the bytes that crossed: summary, details and blocks.
    fn rebuild(old: &[u8], new: &[u8]) -> (Vec<u8>, u64) {
        let old_list = index(old).unwrap();
        let new_list = index(new).unwrap();
        let summary_bytes = encode_summary(&new_list.summary());
        let summary = decode_summary(&summary_bytes).unwrap();
        let unknown = unknown_groups(&old_list, &summary);
        let detail_bytes = encode_details(&new_list, &unknown).unwrap();
        let details = decode_details(&detail_bytes, &summary, &unknown).unwrap();
        let (pieces, rebuilt_list) = plan(&old_list, &summary, &unknown, &details);
        assert_eq!(rebuilt_list, new_list, "the new list is assembled exactly");
        let mut fetched = Vec::new();
        for (o, l) in ranges(&pieces) {
            fetched.extend_from_slice(&new[o as usize..(o + l) as usize]);
        }
        let (f, out) = (scratch("old", old), scratch("new", &[]));
        let n = assemble(&f, &out, &pieces, &fetched[..]).unwrap();
        let mut got = Vec::new();
        (&out).read_to_end(&mut got).unwrap();
        assert_eq!(n, got.len() as u64);
        let crossed = (summary_bytes.len() + detail_bytes.len()) as u64 + remote_bytes(&pieces);
        (got, crossed)
    }

    /// An unlinked file holding `bytes`, open for reading and writing at its start.
    fn scratch(what: &str, bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "hamon-delta-{what}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn the_index_is_the_same_whatever_the_reads_and_windows() {
        let d = data(1, 3 * WINDOW + 12_345);
        let whole = index(&d[..]).unwrap();
        assert_eq!(whole.size, d.len() as u64);
        assert_eq!(whole.hash, <[u8; 32]>::from(Sha256::digest(&d)));
        let over_slice: Vec<usize> =
            fastcdc::v2020::FastCDC::new(&d, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK)
                .map(|c| c.length)
                .collect();
        let ours: Vec<usize> = whole.blocks.iter().map(|b| b.len as usize).collect();
        assert_eq!(
            ours, over_slice,
            "cuts differ from FastCDC over the whole file"
        );
        /// A reader that hands out at most 1000 bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(1000).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(index(Trickle(&d)).unwrap(), whole);
        // Pushed in uneven pieces, as a whole fetch writes them: the same cuts.
        let mut ix = Indexer::new(true);
        let mut rest = &d[..];
        let mut step = 1;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            ix.push(&rest[..n]);
            rest = &rest[n..];
            step = step * 7 % 300_007 + 1;
        }
        assert_eq!(ix.finish().unwrap(), whole);
        assert_eq!(index(&[][..]).unwrap().blocks, Vec::new());
        // Groups: about GROUP_EVERY blocks each, none over MAX_GROUP.
        let runs = whole.runs();
        assert!(runs.iter().all(|(_, b, _)| b.len() <= MAX_GROUP as usize));
        let per = whole.blocks.len() / runs.len();
        assert!((16..=256).contains(&per), "{per} blocks per group");
    }

    #[test]
    fn one_changed_byte_crosses_as_the_summary_and_about_one_block() {
        let old = data(2, 32 << 20);
        let mut new = old.clone();
        new[7 << 20] ^= 0xff;
        let (got, crossed) = rebuild(&old, &new);
        assert_eq!(got, new);
        // Summary: 32 MiB / 4 KiB / 64 groups x 44 bytes; one group's details; a block.
        assert!(crossed < 48 << 10, "{crossed} bytes crossed");
    }

    #[test]
    fn an_insert_and_an_append_fetch_little_more_than_themselves() {
        let old = data(3, 16 << 20);
        let mut new = old[..5 << 20].to_vec();
        new.extend_from_slice(&data(4, 1 << 20));
        new.extend_from_slice(&old[5 << 20..]);
        let (got, crossed) = rebuild(&old, &new);
        assert_eq!(got, new);
        assert!(crossed < (1 << 20) + (64 << 10), "{crossed}");
        let mut grown = old.clone();
        grown.extend_from_slice(&data(5, 1 << 20));
        let (got, crossed) = rebuild(&old, &grown);
        assert_eq!(got, grown);
        assert!(crossed < (1 << 20) + (64 << 10), "{crossed}");
    }

    #[test]
    fn a_fetched_block_that_lies_fails_the_rebuild() {
        let old = data(6, 2 << 20);
        let mut new = old.clone();
        new[100] ^= 1;
        let (old_list, new_list) = (index(&old[..]).unwrap(), index(&new[..]).unwrap());
        let summary = new_list.summary();
        let unknown = unknown_groups(&old_list, &summary);
        let details = decode_details(
            &encode_details(&new_list, &unknown).unwrap(),
            &summary,
            &unknown,
        )
        .unwrap();
        let (pieces, _) = plan(&old_list, &summary, &unknown, &details);
        let lie = vec![0u8; remote_bytes(&pieces) as usize];
        let (f, out) = (scratch("old", &old), scratch("new", &[]));
        let err = assemble(&f, &out, &pieces, &lie[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn runs_copy_the_same_bytes_in_the_kernel_and_here() {
        let old = data(8, (3 << 20) + 777);
        let f = scratch("old", &old);
        // Offsets that share a block boundary, that do not, and a head longer than the run.
        for (from, to, len) in [
            (4096 + 5, 5, 2 << 20),
            (1, 2, (2 << 20) + 3),
            (100, 100, 10),
        ] {
            let (a, b) = (scratch("kernel", &[]), scratch("user", &[]));
            let mut kernel = Copy {
                align: 4096,
                kernel: true,
            };
            copy_run(&f, from, &a, to, len, &mut kernel).unwrap();
            assert!(
                kernel.kernel,
                "copy_file_range failed on the temp dir's file system"
            );
            let mut user = Copy {
                align: 4096,
                kernel: false,
            };
            copy_run(&f, from, &b, to, len, &mut user).unwrap();
            let (mut x, mut y) = (Vec::new(), Vec::new());
            (&a).read_to_end(&mut x).unwrap();
            (&b).read_to_end(&mut y).unwrap();
            assert_eq!(x.len() as u64, to + len);
            assert!(x == y, "copies differ at {from} -> {to}, {len} bytes");
            assert!(x[to as usize..] == old[from as usize..(from + len) as usize]);
        }
        let short = scratch("short", &[]);
        let mut how = Copy {
            align: 4096,
            kernel: true,
        };
        let err = copy_run(&f, old.len() as u64 - 10, &short, 0, 20, &mut how).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_group_of_the_old_copy_stands_for_one_only_if_count_and_length_agree() {
        let old = data(9, 2 << 20);
        let list = index(&old[..]).unwrap();
        let mut summary = list.summary();
        assert!(unknown_groups(&list, &summary).is_empty());
        // A summary whose first two groups trade 100 bytes of length: same total, same
        // hashes, but the old copy's groups no longer stand for them.
        summary.groups[0].len += 100;
        summary.groups[1].len -= 100;
        assert_eq!(unknown_groups(&list, &summary), vec![0, 1]);
        let (pieces, _) = plan(&list, &summary, &[], &[]);
        let local: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Local { len, .. } => *len,
                Piece::Remote { .. } => 0,
            })
            .sum();
        let whole = list.summary();
        assert_eq!(
            local,
            list.size - whole.groups[0].len - whole.groups[1].len,
            "only the agreeing groups are copied from the old copy"
        );
    }

    #[test]
    fn summaries_and_details_round_trip_and_bad_ones_are_refused() {
        let list = index(&data(7, 3 << 20)[..]).unwrap();
        let summary = list.summary();
        let bytes = encode_summary(&summary);
        assert_eq!(decode_summary(&bytes).unwrap(), summary);
        assert_eq!(
            decode_summary(&bytes[..bytes.len() - 1]),
            Err(BlockListError::Truncated)
        );
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode_summary(&more), Err(BlockListError::Trailing));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode_summary(&magic), Err(BlockListError::BadMagic));
        let mut version = bytes.clone();
        version[4] = 1;
        assert_eq!(decode_summary(&version), Err(BlockListError::Version(1)));
        let mut size = bytes.clone();
        size[15] ^= 1;
        assert!(matches!(
            decode_summary(&size),
            Err(BlockListError::Sum { .. })
        ));
        let mut empty = bytes.clone();
        empty[SUMMARY_HEADER..SUMMARY_HEADER + 4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode_summary(&empty), Err(BlockListError::BadGroup(0)));
        let mut many = bytes;
        many[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_summary(&many),
            Err(BlockListError::TooMany { .. })
        ));

        let wanted = [0u32, 2];
        let details = encode_details(&list, &wanted).unwrap();
        let got = decode_details(&details, &summary, &wanted).unwrap();
        let runs = list.runs();
        assert_eq!(got[0], runs[0].1);
        assert_eq!(got[1], runs[2].1);
        assert_eq!(
            decode_summary(&details),
            Err(BlockListError::Kind(DETAILS)),
            "details are not a summary"
        );
        // Another group's blocks under this index, or a block changed: refused.
        assert!(decode_details(&details, &summary, &[0, 1]).is_err());
        let mut changed = details.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(
            decode_details(&changed, &summary, &wanted),
            Err(BlockListError::Detail(2))
        );
        assert!(encode_details(&list, &[u32::MAX]).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any old file plus any edit (a replace, an insert and a cut, anywhere) rebuilds
        /// byte for byte.
        #[test]
        fn any_old_file_plus_any_edit_rebuilds_byte_for_byte(
            seed in any::<u64>(),
            len in 0usize..(3 << 20),
            at in any::<prop::sample::Index>(),
            insert in prop::collection::vec(any::<u8>(), 0..70_000),
            cut in 0usize..100_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let old = data(seed, len);
            let mut new = old.clone();
            if !new.is_empty() {
                let i = flip.index(new.len());
                new[i] ^= 0x5a;
            }
            let i = at.index(new.len() + 1);
            let end = (i + cut).min(new.len());
            new.splice(i..end, insert);
            let (got, _) = rebuild(&old, &new);
            prop_assert_eq!(got, new);
        }

        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(s) = decode_summary(&bytes) {
                let _ = decode_details(&bytes, &s, &[0]);
            }
        }
    }
}
