//! Fuzzes the peer API and control socket request decoders (JSON): any
//! bytes decode or are refused, and what decodes re-encodes to itself.
#![no_main]

use hamon::control::Request as ControlRequest;
use hamon::ha::{PeerAnswer, PeerRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<PeerRequest>(data) {
        let again = serde_json::to_vec(&r).expect("encodes");
        assert_eq!(serde_json::from_slice::<PeerRequest>(&again).ok(), Some(r));
    }
    let _ = serde_json::from_slice::<PeerAnswer>(data);
    let _ = serde_json::from_slice::<ControlRequest>(data);
});
