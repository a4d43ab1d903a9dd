//! Delta transfer of large files: the standby fetches only the blocks it does not have.
//!
//! A large file is cut into content-defined blocks (FastCDC, 32 KiB to 512 KiB, 128 KiB
//! on average), so an insert or a deletion moves the cut points only near the edit and
//! every other block keeps its hash. Each block is named by its SHA-256. The active
//! serves a file's **block list** (this module's binary format, signed like every sync
//! answer); the standby cuts its own old copy the same way, copies the blocks it already
//! has from it, and fetches the rest as byte ranges. The new file is then written as
//! every fetched file is: into a temp file, checked against the manifest's size and
//! SHA-256, fsynced and renamed (`apply::write_file_then`). A kill at any moment leaves
//! the old file as it was.
//!
//! Block list, all integers big-endian:
//!
//! ```text
//! off  len  field
//! 0    4    magic b"HMBL"
//! 4    1    version = 1
//! 5    3    reserved, 0
//! 8    8    size: the file's length
//! 16   32   the file's SHA-256 (the manifest's content hash)
//! 48   4    count: the number of blocks
//! 52   36×count  each block: u32 length (1 ..= 512 KiB), 32-byte SHA-256
//! ```
//!
//! [`decode`] checks that the lengths add up to the size, that no block is empty or
//! longer than the largest cut, and that nothing follows the last block.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Files at least this large are fetched as deltas when the standby has an old copy.
pub const DELTA_MIN: u64 = 4 << 20;
/// The cut sizes: smallest, average and largest block.
pub const MIN_BLOCK: u32 = 32 << 10;
pub const AVG_BLOCK: u32 = 128 << 10;
pub const MAX_BLOCK: u32 = 512 << 10;
/// How much is read at once while cutting (several largest blocks, so a cut always has
/// the look-ahead it would have over the whole file).
const WINDOW: usize = 8 << 20;

const MAGIC: [u8; 4] = *b"HMBL";
const VERSION: u8 = 1;
const HEADER: usize = 52;
const ENTRY: usize = 36;

/// One block: its length and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    pub len: u32,
    pub hash: [u8; 32],
}

/// A file cut into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockList {
    pub size: u64,
    /// SHA-256 of the whole file.
    pub hash: [u8; 32],
    pub blocks: Vec<Block>,
}

/// Why a block list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockListError {
    #[error("block list truncated")]
    Truncated,
    #[error("not a block list (bad magic)")]
    BadMagic,
    #[error("unsupported block list version {0}")]
    Version(u8),
    #[error("block list of {count} blocks, more than a file of {size} bytes can have")]
    TooMany { count: u64, size: u64 },
    #[error("block {0} is empty or longer than the largest block")]
    BadBlock(usize),
    #[error("the blocks add up to {sum} bytes, not the file's {size}")]
    Sum { sum: u64, size: u64 },
    #[error("bytes after the last block")]
    Trailing,
}

/// The block list as sent.
pub fn encode(list: &BlockList) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + ENTRY * list.blocks.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&list.size.to_be_bytes());
    out.extend_from_slice(&list.hash);
    out.extend_from_slice(&(list.blocks.len() as u32).to_be_bytes());
    for b in &list.blocks {
        out.extend_from_slice(&b.len.to_be_bytes());
        out.extend_from_slice(&b.hash);
    }
    out
}

fn take<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], BlockListError> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(BlockListError::Truncated)
}

/// Reads a block list (see the module documentation for what is checked).
pub fn decode(bytes: &[u8]) -> Result<BlockList, BlockListError> {
    if take::<4>(bytes, 0)? != MAGIC {
        return Err(BlockListError::BadMagic);
    }
    let [version] = take::<1>(bytes, 4)?;
    if version != VERSION {
        return Err(BlockListError::Version(version));
    }
    let size = u64::from_be_bytes(take(bytes, 8)?);
    let hash = take::<32>(bytes, 16)?;
    let count = u64::from(u32::from_be_bytes(take(bytes, 48)?));
    // Every block but the last is at least MIN_BLOCK long.
    if count > size / u64::from(MIN_BLOCK) + 1 || (size > 0 && count == 0) {
        return Err(BlockListError::TooMany { count, size });
    }
    let count = count as usize;
    let body = bytes.get(HEADER..).ok_or(BlockListError::Truncated)?;
    if body.len() < count.saturating_mul(ENTRY) {
        return Err(BlockListError::Truncated);
    }
    if body.len() > count * ENTRY {
        return Err(BlockListError::Trailing);
    }
    let mut blocks = Vec::with_capacity(count);
    let mut sum: u64 = 0;
    for i in 0..count {
        let len = u32::from_be_bytes(take(body, i * ENTRY)?);
        if len == 0 || len > MAX_BLOCK {
            return Err(BlockListError::BadBlock(i));
        }
        sum += u64::from(len);
        blocks.push(Block {
            len,
            hash: take(body, i * ENTRY + 4)?,
        });
    }
    if sum != size {
        return Err(BlockListError::Sum { sum, size });
    }
    Ok(BlockList { size, hash, blocks })
}

/// Cuts what `r` yields into blocks, hashing each and the whole in the same read.
pub fn index(mut r: impl Read) -> io::Result<BlockList> {
    let mut buf = vec![0u8; WINDOW];
    let (mut len, mut eof) = (0usize, false);
    let mut whole = Sha256::new();
    let mut blocks = Vec::new();
    let mut size: u64 = 0;
    loop {
        while !eof && len < buf.len() {
            match r.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            break;
        }
        let mut done = 0;
        for c in fastcdc::v2020::FastCDC::new(&buf[..len], MIN_BLOCK, AVG_BLOCK, MAX_BLOCK) {
            // Away from the end of the file a cut needs the largest block's look-ahead, or
            // it could fall elsewhere than over the whole file: keep the rest for later.
            if !eof && len - c.offset < MAX_BLOCK as usize {
                break;
            }
            let data = &buf[c.offset..c.offset + c.length];
            whole.update(data);
            blocks.push(Block {
                len: c.length as u32,
                hash: Sha256::digest(data).into(),
            });
            size += c.length as u64;
            done = c.offset + c.length;
        }
        buf.copy_within(done..len, 0);
        len -= done;
        if eof && len == 0 {
            break;
        }
    }
    Ok(BlockList {
        size,
        hash: whole.finalize().into(),
        blocks,
    })
}

/// Where each block of the new file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Bytes the old file holds at `offset`.
    Local { offset: u64, len: u32 },
    /// Bytes to fetch: the new file's at `offset`.
    Remote { offset: u64, len: u32 },
}

/// The new file (`new`) as pieces of the old one (`old`) and of the remote file.
pub fn plan(old: &BlockList, new: &BlockList) -> Vec<Piece> {
    let mut have: HashMap<&[u8; 32], u64> = HashMap::with_capacity(old.blocks.len());
    let mut at = 0;
    for b in &old.blocks {
        have.entry(&b.hash).or_insert(at);
        at += u64::from(b.len);
    }
    let mut at = 0;
    new.blocks
        .iter()
        .map(|b| {
            let piece = match have.get(&b.hash) {
                Some(&offset) => Piece::Local { offset, len: b.len },
                None => Piece::Remote {
                    offset: at,
                    len: b.len,
                },
            };
            at += u64::from(b.len);
            piece
        })
        .collect()
}

/// The byte ranges of the remote file the pieces need, `(offset, length)`, adjacent ones
/// merged.
pub fn ranges(pieces: &[Piece]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pieces {
        if let Piece::Remote { offset, len } = *p {
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

/// The new file's bytes in order: from the old file (`old`) and from the remote ranges
/// (`fetched`, their bytes one after another, as [`ranges`] lists them). A fetched block
/// whose hash is not the list's fails the read at once; the whole file's hash is the
/// writer's to check.
pub struct Rebuild<'a, F: FileExt, R: Read> {
    old: &'a F,
    fetched: R,
    pieces: std::slice::Iter<'a, Piece>,
    hashes: std::slice::Iter<'a, Block>,
    /// The piece being read out, and how much of it is left in `buf`.
    buf: Vec<u8>,
    at: usize,
}

impl<F: FileExt, R: Read> std::fmt::Debug for Rebuild<'_, F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("pieces_left", &self.pieces.len())
            .finish()
    }
}

impl<'a, F: FileExt, R: Read> Rebuild<'a, F, R> {
    pub fn new(old: &'a F, new: &'a BlockList, pieces: &'a [Piece], fetched: R) -> Self {
        Rebuild {
            old,
            fetched,
            pieces: pieces.iter(),
            hashes: new.blocks.iter(),
            buf: Vec::with_capacity(MAX_BLOCK as usize),
            at: 0,
        }
    }

    /// Loads the next piece into `buf`; false at the end.
    fn next_piece(&mut self) -> io::Result<bool> {
        let Some(piece) = self.pieces.next() else {
            return Ok(false);
        };
        let want = self.hashes.next().map(|b| b.hash);
        match *piece {
            Piece::Local { offset, len } => {
                self.buf.resize(len as usize, 0);
                self.old.read_exact_at(&mut self.buf, offset)?;
            }
            Piece::Remote { len, .. } => {
                self.buf.resize(len as usize, 0);
                self.fetched.read_exact(&mut self.buf)?;
                let got: [u8; 32] = Sha256::digest(&self.buf).into();
                if Some(got) != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a fetched block does not match its hash",
                    ));
                }
            }
        }
        self.at = 0;
        Ok(true)
    }
}

impl<F: FileExt, R: Read> Read for Rebuild<'_, F, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.at == self.buf.len() {
            if !self.next_piece()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like data (a cheap generator: CDC needs variety to cut).
    fn data(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The new file rebuilt from `old` and `new`'s block list, fetching from `new`.
    fn rebuild(old: &[u8], new: &[u8]) -> (Vec<u8>, u64) {
        let old_list = index(old).unwrap();
        let new_list = index(new).unwrap();
        let pieces = plan(&old_list, &new_list);
        let mut fetched = Vec::new();
        for (o, l) in ranges(&pieces) {
            fetched.extend_from_slice(&new[o as usize..(o + l) as usize]);
        }
        let dir = std::env::temp_dir().join(format!("hamon-delta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("old-{}", old.len()));
        std::fs::write(&path, old).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut out = Vec::new();
        Rebuild::new(&f, &new_list, &pieces, &fetched[..])
            .read_to_end(&mut out)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        (out, remote_bytes(&pieces))
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
        assert_eq!(index(&[][..]).unwrap().blocks, Vec::new());
    }

    #[test]
    fn one_changed_byte_fetches_about_one_block() {
        let old = data(2, 20 << 20);
        let mut new = old.clone();
        new[7 << 20] ^= 0xff;
        let (got, fetched) = rebuild(&old, &new);
        assert_eq!(got, new);
        assert!(
            fetched <= 2 * u64::from(MAX_BLOCK),
            "{fetched} bytes fetched"
        );
    }

    #[test]
    fn an_insert_and_an_append_fetch_little_more_than_themselves() {
        let old = data(3, 16 << 20);
        let mut new = old[..5 << 20].to_vec();
        new.extend_from_slice(&data(4, 1 << 20));
        new.extend_from_slice(&old[5 << 20..]);
        let (got, fetched) = rebuild(&old, &new);
        assert_eq!(got, new);
        assert!(fetched < (1 << 20) + 2 * u64::from(MAX_BLOCK), "{fetched}");
        let mut grown = old.clone();
        grown.extend_from_slice(&data(5, 1 << 20));
        let (got, fetched) = rebuild(&old, &grown);
        assert_eq!(got, grown);
        assert!(fetched < (1 << 20) + u64::from(MAX_BLOCK), "{fetched}");
    }

    #[test]
    fn a_fetched_block_that_lies_fails_the_rebuild() {
        let old = data(6, 2 << 20);
        let mut new = old.clone();
        new[100] ^= 1;
        let (old_list, new_list) = (index(&old[..]).unwrap(), index(&new[..]).unwrap());
        let pieces = plan(&old_list, &new_list);
        let need = remote_bytes(&pieces) as usize;
        let lie = vec![0u8; need];
        let path = std::env::temp_dir().join(format!("hamon-delta-lie-{}", std::process::id()));
        std::fs::write(&path, &old).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let err = Rebuild::new(&f, &new_list, &pieces, &lie[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn block_lists_round_trip_and_bad_ones_are_refused() {
        let list = index(&data(7, 3 << 20)[..]).unwrap();
        let bytes = encode(&list);
        assert_eq!(decode(&bytes).unwrap(), list);
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(BlockListError::Truncated)
        );
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(decode(&more), Err(BlockListError::Trailing));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(BlockListError::BadMagic));
        let mut version = bytes.clone();
        version[4] = 2;
        assert_eq!(decode(&version), Err(BlockListError::Version(2)));
        let mut size = bytes.clone();
        size[15] ^= 1;
        assert!(matches!(decode(&size), Err(BlockListError::Sum { .. })));
        let mut zero = bytes.clone();
        zero[HEADER..HEADER + 4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode(&zero), Err(BlockListError::BadBlock(0)));
        let mut many = bytes;
        many[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&many), Err(BlockListError::TooMany { .. })));
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
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }
    }
}
