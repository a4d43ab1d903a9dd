//! Fuzzes what the arbiter reads from etcd (`hamon::arbiter::etcd::decode`) and the HTTP
//! client's chunked-body decoder (`hamon::web::client::dechunk`): whatever a server (or
//! whoever answers on its address) sends must be an error or a value, never a panic. A
//! body cut into chunks must decode back to itself.
#![no_main]

use hamon::web::client::{dechunk, ClientResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dechunk(data, 64 * 1024);
    for status in [200, 400] {
        let resp = ClientResponse {
            status,
            headers: Vec::new(),
            body: data.to_vec(),
        };
        let _ = hamon::arbiter::etcd::decode(&resp);
    }
    // Round trip: the input as chunks of up to 7 bytes.
    let mut wire = Vec::new();
    for c in data.chunks(7) {
        wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        wire.extend_from_slice(c);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(dechunk(&wire, data.len()), Ok(Some(data.to_vec())));
});
