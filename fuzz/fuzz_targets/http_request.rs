//! Fuzzes the HTTP/1.1 request head parser of the built-in server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    if let Ok(Some((len, req))) = hamon::web::server::parse_head(data, peer) {
        assert!(len <= data.len());
        let _ = hamon::web::server::content_length(&req.headers);
        let _ = req.header("content-type");
    }
});
