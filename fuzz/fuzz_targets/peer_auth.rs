//! Fuzzes the peer API's request signatures: any headers and request parts
//! are refused or verified without a panic; what verifies is exactly what a
//! key holder signed for that method, target, receiver and body; and what a
//! key holder signs verifies once, then never again.
#![no_main]

use hamon::peer::auth::{self, Keys, Verifier, H_NONCE, H_SIGNATURE, H_TIME, H_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let mut next = || parts.next().unwrap_or("");
    let (version, time, nonce, sig) = (next(), next(), next(), next());
    let (method, target, receiver, body) = (next(), next(), next(), next());
    let key = Keys::legacy("Fuzz-Key-2026").api;
    let header = |name: &str| match name {
        n if n == H_VERSION => Some(version),
        n if n == H_TIME => Some(time),
        n if n == H_NONCE => Some(nonce),
        n if n == H_SIGNATURE => Some(sig),
        _ => None,
    };
    let now = 1_800_000_000_000;
    let mut v = Verifier::new(30_000, 0);
    if v.verify(&key, method, target, receiver, body.as_bytes(), header, now).is_ok() {
        // Only the signature a key holder makes for these parts verifies.
        let mut raw = [0u8; 16];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = u8::from_str_radix(&nonce[2 * i..2 * i + 2], 16).expect("hex nonce");
        }
        let time: u64 = time.parse().expect("a number");
        let signed = auth::sign_request(&key, method, target, receiver, body.as_bytes(), time, raw);
        let want = signed.iter().find(|(k, _)| *k == H_SIGNATURE).map(|(_, s)| s.as_str());
        assert_eq!(want, Some(sig));
    }
    // A genuine signature over the fuzzed parts verifies once.
    let signed = auth::sign_request(&key, method, target, receiver, body.as_bytes(), now, [7; 16]);
    let lookup = |name: &str| signed.iter().find(|(k, _)| *k == name).map(|(_, s)| s.as_str());
    let mut fresh = Verifier::new(30_000, 0);
    assert!(fresh
        .verify(&key, method, target, receiver, body.as_bytes(), lookup, now)
        .is_ok());
    assert!(fresh
        .verify(&key, method, target, receiver, body.as_bytes(), lookup, now)
        .is_err());
});
