//! Fuzzes the HTTP/1.1 request head parser of the built-in server, and the poller's
//! verdict on a connection's bytes: complete, not yet (and how many bytes it needs), or
//! never (and the status to answer).
#![no_main]

use hamon::web::server::{check, Check, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let parsed = hamon::web::server::parse_head(data, peer);
    if let Ok(Some((len, req))) = &parsed {
        assert!(*len <= data.len());
        let _ = hamon::web::server::content_length(&req.headers);
        let _ = req.header("content-type");
    }
    let limits = Limits {
        max_header_bytes: 512,
        max_body_bytes: 1024,
        ..Limits::default()
    };
    match check(data, peer, &limits) {
        Check::Complete => {
            // A whole head within the limit, and all of its body.
            let Ok(Some((len, req))) = parsed else {
                panic!("complete without a head")
            };
            let body = hamon::web::server::content_length(&req.headers).expect("a length");
            assert!(len <= 512 && body <= 1024 && len + body <= data.len());
        }
        Check::Partial(need) => assert!(need > data.len(), "{need} <= {}", data.len()),
        Check::Bad(status) => assert!([400, 413, 431, 501].contains(&status), "{status}"),
    }
});
