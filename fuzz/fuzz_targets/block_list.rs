//! Fuzzes the delta decoders (`hamon::sync::delta`): the summary and the details of a
//! large file, which the standby reads from the active.
//!
//! Any bytes give a summary or an error, never a panic. Whatever decodes re-encodes to
//! the same bytes and its groups add up to its size. The same bytes read as details of
//! that summary must either fail or give blocks that add up to each group's length.
#![no_main]

use hamon::sync::delta::{decode_details, decode_summary, encode_summary, LEAF};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = decode_summary(data) {
        assert_eq!(encode_summary(&s), data);
        let sum: u64 = s.groups.iter().map(|g| g.len).sum();
        assert_eq!(sum, s.size);
        assert!(s.groups.iter().all(|g| g.blocks > 0 && g.len >= u64::from(g.blocks)));
        // Whole leaves but for the file's last.
        let whole = s.groups.len().saturating_sub(1);
        assert!(s.groups[..whole]
            .iter()
            .all(|g| g.len == u64::from(g.blocks) * u64::from(LEAF)));
        let wanted: Vec<u32> = (0..s.groups.len().min(4) as u32).collect();
        // The same bytes as details (the kind byte set to 1), so that the decoder's body
        // is reached, not only its header.
        let mut as_details = data.to_vec();
        as_details[5] = 1;
        if let Ok(details) = decode_details(&as_details, &s, &wanted) {
            for (i, blocks) in details.iter().enumerate() {
                let len: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
                assert_eq!(len, s.groups[i].len);
                assert!(blocks.iter().all(|b| b.len > 0 && b.len <= LEAF));
            }
        }
    }
    // Details against a summary built from the input's first bytes, if any decodes.
    let split = data.len() / 2;
    if let Ok(s) = decode_summary(&data[..split]) {
        let wanted: Vec<u32> = (0..s.groups.len() as u32).collect();
        if let Ok(details) = decode_details(&data[split..], &s, &wanted) {
            assert_eq!(details.len(), s.groups.len());
        }
    }
});
