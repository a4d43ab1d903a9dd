//! Fuzzes what a pairing and a key change read from the network or the disk: SPAKE2
//! messages and confirmations (`peer::pair`), the stored pair secret, and sealed keys
//! (`peer::rekey`). Anything is refused or accepted without a panic; a confirmation made
//! up by the fuzzer never confirms, and a sealed key opens only if it was sealed with the
//! same key for the same receiver.
#![no_main]

use hamon::peer::pair::{respond, Caller, PairError, PairSecret};
use hamon::peer::rekey;
use libfuzzer_sys::fuzz_target;

const A: &str = "192.0.2.11";
const B: &str = "192.0.2.12";

fuzz_target!(|data: &[u8]| {
    let (head, tail) = data.split_at(data.len().min(33));
    // The receiver's side with any first message.
    let _ = respond("Fuzz-Key-2026", A, B, head);
    // The caller's side with any answer and confirmation: never confirmed.
    let (caller, _) = Caller::start("Fuzz-Key-2026", A, B);
    match caller.finish(head, tail) {
        Ok(_) => panic!("a made-up answer confirmed"),
        Err(PairError::Malformed(_) | PairError::KeysDiffer) => {}
    }
    // The stored form.
    let text = String::from_utf8_lossy(data);
    if let Ok(s) = PairSecret::from_text(&text) {
        assert_eq!(PairSecret::from_text(&s.to_text()).ok(), Some(s));
    }
    // Sealed keys: any nonce and data.
    let mut parts = text.splitn(2, '\n');
    let (nonce, sealed) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    assert!(rekey::open(&[5u8; 32], B, nonce, sealed).is_err());
});
