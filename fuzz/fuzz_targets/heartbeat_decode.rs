//! Fuzzes the heartbeat decoder (`hamon::peer::wire`).
//!
//! Every input is decoded as it is: it must never panic, and with a fixed key it will
//! practically never authenticate. Inputs at least as long as the fixed header are also given a
//! well-formed header (magic, version, body_len), a body of at most what fits `MAX_FRAME`, and
//! a valid MAC under the key, so the body parser sees fuzzer-chosen bytes; such a frame may only
//! be refused by the body parser. Whatever decodes must satisfy decode(encode(f)) == f.
#![no_main]

use hamon::peer::wire::{decode, encode, Key, WireError, MAC_LEN, MAGIC, MAX_FRAME, VERSION};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: Key = [0x5a; 32];

/// Offsets of wire format version 1.
const VERSION_OFFSET: usize = 4;
const BODY_LEN_OFFSET: usize = 6;
const BODY_OFFSET: usize = 56;

/// Decodes `bytes`; a frame that decodes must re-encode to something that decodes to it.
fn check(bytes: &[u8]) -> Result<(), WireError> {
    let frame = decode(bytes, &KEY)?;
    let again = encode(&frame, &KEY).expect("a decoded frame re-encodes");
    assert_eq!(decode(&again, &KEY), Ok(frame));
    Ok(())
}

/// `data` with header fields fixed up, body capped and a valid MAC appended.
fn sealed(data: &[u8]) -> Vec<u8> {
    let (head, body) = data.split_at(BODY_OFFSET);
    let body = &body[..body.len().min(MAX_FRAME - BODY_OFFSET - MAC_LEN)];
    let body_len = u16::try_from(body.len()).expect("capped below MAX_FRAME");

    let mut out = head.to_vec();
    out[..MAGIC.len()].copy_from_slice(&MAGIC);
    out[VERSION_OFFSET] = VERSION;
    out[BODY_LEN_OFFSET..BODY_LEN_OFFSET + 2].copy_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(body);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&KEY).expect("HMAC takes any key");
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = check(data);

    if data.len() >= BODY_OFFSET {
        if let Err(e) = check(&sealed(data)) {
            assert!(
                matches!(
                    e,
                    WireError::BadLength
                        | WireError::MissingField(_)
                        | WireError::DuplicateField(_)
                        | WireError::BadValue(_)
                ),
                "a well-formed, authentic frame was refused before its body: {e:?}"
            );
        }
    }
});
