//! Fuzzes the delta block-list decoder (`hamon::sync::delta`), which reads what the active
//! serves for a large file.
//!
//! Any bytes give a block list or an error, never a panic. Whatever decodes re-encodes to
//! the same bytes, its blocks add up to its size and none is empty or over the largest
//! cut, and planning it against itself or against nothing stays within the file.
#![no_main]

use hamon::sync::delta::{decode, encode, plan, ranges, remote_bytes, BlockList, Piece, MAX_BLOCK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = decode(data) else {
        return;
    };
    assert_eq!(encode(&list), data);
    let sum: u64 = list.blocks.iter().map(|b| u64::from(b.len)).sum();
    assert_eq!(sum, list.size);
    assert!(list.blocks.iter().all(|b| b.len > 0 && b.len <= MAX_BLOCK));

    // Against itself: every block is local, nothing to fetch.
    let same = plan(&list, &list);
    assert_eq!(same.len(), list.blocks.len());
    assert_eq!(remote_bytes(&same), 0);
    assert!(same.iter().all(|p| match *p {
        Piece::Local { offset, len } => offset + u64::from(len) <= list.size,
        Piece::Remote { .. } => false,
    }));
    // Against nothing: everything is fetched, in ranges inside the file.
    let empty = BlockList {
        size: 0,
        hash: [0; 32],
        blocks: Vec::new(),
    };
    let all = plan(&empty, &list);
    assert_eq!(remote_bytes(&all), list.size);
    let merged = ranges(&all);
    assert!(merged.len() <= 1);
    assert!(merged.iter().all(|&(o, l)| o + l <= list.size));
});
