//! What a large file's rescan costs, per GiB, pass by pass: the figures behind
//! "What the rescan costs" in docs/performance.md. Run by `bench/sync/hashes.sh`:
//!
//!     cargo run --release --example hash-cost -- FILE [RUNS]
//!
//! FILE is read into memory once (use a file of about 1 GiB of random bytes); each pass
//! then runs RUNS times (default 3) over it and the median is printed, in seconds per GiB.
//! One core unless the line says two threads.

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use hamon::sync::delta::{self, LEAF};
use sha2::{Digest, Sha256};

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: hash-cost FILE [RUNS]")?;
    let runs: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let data = std::fs::read(&path)?;
    if data.is_empty() {
        return Err("the file is empty".into());
    }
    let gib = data.len() as f64 / f64::from(1u32 << 30);
    let leaf = LEAF as usize;
    println!(
        "{:.2} GiB from {path}, median of {runs}, seconds per GiB",
        gib
    );
    let time = |name: &str, f: &mut dyn FnMut() -> Result<u64, Failure>| -> Result<(), Failure> {
        let mut took = Vec::with_capacity(runs);
        let mut check = 0;
        for _ in 0..runs {
            let t = Instant::now();
            check = f()?;
            took.push(t.elapsed().as_secs_f64() / gib);
        }
        took.sort_by(f64::total_cmp);
        let median = took.get(took.len() / 2).copied().unwrap_or(f64::NAN);
        println!("{name:<48} {median:7.3}   ({check:x})");
        Ok(())
    };
    time("read from the page cache, 1 MiB reads", &mut || {
        let mut f = File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match f.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    })?;
    let leaves = |part: &[u8]| {
        part.chunks(leaf)
            .fold(0u64, |x, c| x ^ u64::from(blake3::hash(c).as_bytes()[0]))
    };
    time("BLAKE3 over 16 KiB leaves", &mut || Ok(leaves(&data)))?;
    time("BLAKE3 over 16 KiB leaves, two threads", &mut || {
        let (a, b) = data.split_at(data.len() / 2 / leaf * leaf);
        std::thread::scope(|s| {
            let other = s.spawn(|| leaves(b));
            let here = leaves(a);
            Ok(here ^ other.join().map_err(|_| "thread died")?)
        })
    })?;
    time("weak sums of 16 KiB leaves", &mut || {
        Ok(data
            .chunks(leaf)
            .fold(0u64, |x, c| x ^ u64::from(delta::weak_sum(c))))
    })?;
    time("BLAKE3 over the whole file", &mut || {
        Ok(u64::from(blake3::hash(&data).as_bytes()[0]))
    })?;
    time("SHA-256 over the whole file (version-1 peers)", &mut || {
        Ok(u64::from(Sha256::digest(&data)[0]))
    })?;
    time(
        "delta::index (a rescan: leaves, sums, hash; 2 cores)",
        &mut || Ok(delta::index(&data[..])?.blocks.len() as u64),
    )?;
    time(
        "delta::index_file (a rescan, from the page cache)",
        &mut || Ok(delta::index_file(&File::open(&path)?)?.blocks.len() as u64),
    )?;
    Ok(())
}
