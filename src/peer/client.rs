//! Calls to the peer's Health Monitor: the unauthenticated liveness probe and
//! signed peer API requests whose responses are verified too.

use super::auth::{self, Keys};
use crate::ha::{PeerAnswer, PeerRequest, PeerTarget};
use crate::web::client;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest peer answer accepted.
const MAX_ANSWER: usize = 1024 * 1024;

fn addr(t: &PeerTarget) -> Result<SocketAddr, String> {
    let ip: IpAddr = t
        .address
        .parse()
        .map_err(|_| format!("bad peer address {:?}", t.address))?;
    Ok(SocketAddr::new(ip, t.hm_port))
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One exchange with the peer's Health Monitor, over TLS when `tls`.
/// Any certificate is accepted: what matters is authenticated by the
/// requests' and responses' HMAC signatures; TLS keeps it private.
#[allow(clippy::too_many_arguments)]
fn exchange(
    t: &PeerTarget,
    tls: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max: usize,
) -> Result<client::ClientResponse, String> {
    let a = addr(t)?;
    let r = if tls {
        let verify = client::Verify::AnyCertificate;
        client::request_tls(
            a, &t.address, verify, method, path, headers, body, timeout, max,
        )
    } else {
        client::request(a, method, path, headers, body, timeout, max)
    };
    r.map_err(|e| e.to_string())
}

/// `GET /healthz`: does the peer's Health Monitor answer at all?
pub fn probe(t: &PeerTarget, tls: bool, timeout: Duration) -> Result<String, String> {
    let r = exchange(t, tls, "GET", "/healthz", &[], b"", timeout, 64 * 1024)?;
    if r.status == 200 {
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    } else {
        Err(format!("{} answered HTTP {}", t.address, r.status))
    }
}

/// One signed request to the peer, with its answer's signature checked.
pub fn call(
    t: &PeerTarget,
    request: &PeerRequest,
    keys: &Keys,
    tls: bool,
    timeout: Duration,
) -> Result<PeerAnswer, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let path = format!("/peer/v1/{}", request.op());
    let nonce = auth::random16();
    let signed = auth::sign_request(
        &keys.api,
        "POST",
        &path,
        &t.address,
        &body,
        unix_ms(),
        nonce,
    );
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let r = exchange(t, tls, "POST", &path, &headers, &body, timeout, MAX_ANSWER)?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    match r.status {
        200 => {
            let sig = r.header(auth::H_SIGNATURE);
            if !auth::verify_response(&keys.api, &auth::hex(&nonce), 200, &r.body, sig) {
                return Err("the peer's answer is not signed with our key".into());
            }
            serde_json::from_str(&text).map_err(|e| format!("malformed answer from peer: {e}"))
        }
        401 => Err(format!("authentication failed: {}", text.trim())),
        s => Err(format!("peer answered HTTP {s}: {}", text.trim())),
    }
}
