//! Calls to the peer's Health Monitor: the unauthenticated liveness probe and
//! signed peer API requests whose responses are verified too.

use super::auth::{self, Keys};
use super::pair::{self, PairSecret};
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

/// How this server calls its peer's Health Monitor: from which local address (the one the
/// peer knows it by, so that the peer's reserved workers serve it) and whether over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The local address to call from; the kernel picks one when `None`.
    pub from: Option<IpAddr>,
    /// HTTPS (the peer's `[health_monitor] tls`, the same on both servers).
    pub tls: bool,
}

impl Link {
    /// The endpoint for signed calls to `t`: over TLS, only to the certificate pinned at
    /// registration (`t.pin`), so that nobody in the middle reads what the pair exchanges.
    /// A registration made before pinning has no pin: any certificate, as before.
    pub fn endpoint(&self, t: &PeerTarget) -> Result<client::Endpoint, String> {
        let verify = match &t.pin {
            Some(pin) => client::Verify::Pinned(pin.clone()),
            None => client::Verify::AnyCertificate,
        };
        self.endpoint_with(t, verify)
    }

    /// The endpoint for the liveness probe: any certificate. The probe carries nothing and
    /// only asks whether the peer's Health Monitor answers; a server whose certificate
    /// changed is still alive.
    pub fn probe_endpoint(&self, t: &PeerTarget) -> Result<client::Endpoint, String> {
        self.endpoint_with(t, client::Verify::AnyCertificate)
    }

    fn endpoint_with(
        &self,
        t: &PeerTarget,
        verify: client::Verify,
    ) -> Result<client::Endpoint, String> {
        let mut endpoint = client::Endpoint::new(addr(t)?);
        if let Some(from) = self.from {
            endpoint = endpoint.from(from);
        }
        if self.tls {
            endpoint = endpoint.tls(&t.address, verify);
        }
        Ok(endpoint)
    }
}

/// Attempts one probe makes, started a third of the timeout apart.
pub const PROBE_ATTEMPTS: u32 = 3;

/// `GET /healthz`: does the peer's Health Monitor answer at all, within `timeout`?
///
/// [`PROBE_ATTEMPTS`] attempts on fresh connections, started `timeout / PROBE_ATTEMPTS`
/// apart, all ending at `timeout`; the first answer wins. One lost SYN (whose
/// retransmission would come only after a second) or one dropped connection is never the
/// verdict, and the probe takes no longer than before.
pub fn probe(t: &PeerTarget, link: Link, timeout: Duration) -> Result<String, String> {
    let endpoint = link.probe_endpoint(t)?;
    let started = std::time::Instant::now();
    let (tx, rx) = crossbeam_channel::bounded(PROBE_ATTEMPTS as usize);
    let step = timeout / PROBE_ATTEMPTS;
    let mut last = String::from("no attempt made");
    for i in 0..PROBE_ATTEMPTS {
        let wait_until = started + step * i;
        // Before starting the next attempt, see whether an earlier one answered.
        loop {
            let left = wait_until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(e)) => last = e,
                Err(_) => break, // time for the next attempt
            }
        }
        let budget = timeout.saturating_sub(started.elapsed());
        let (endpoint, tx, address) = (endpoint.clone(), tx.clone(), t.address.clone());
        let spawned = std::thread::Builder::new()
            .name("probe-try".into())
            .spawn(move || {
                let answer = endpoint
                    .request("GET", "/healthz", &[], b"", budget, 64 * 1024)
                    .map_err(|e| e.to_string())
                    .and_then(|r| match r.status {
                        200 => Ok(String::from_utf8_lossy(&r.body).into_owned()),
                        s => Err(format!("{address} answered HTTP {s}")),
                    });
                let _ = tx.send(answer);
            });
        if let Err(e) = spawned {
            last = format!("cannot start a probe attempt: {e}");
        }
    }
    drop(tx);
    while let Ok(answer) = rx.recv_timeout(timeout.saturating_sub(started.elapsed())) {
        match answer {
            Ok(body) => return Ok(body),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Agrees on a new pair secret with the peer under the operator's `key` (SPAKE2, see
/// [`crate::peer::pair`]): the secret and the exchange's id, which the next request names
/// so that the peer signs and checks it with the same secret.
pub fn pair(
    t: &PeerTarget,
    key: &str,
    link: Link,
    timeout: Duration,
) -> Result<(PairSecret, String), String> {
    let me = link
        .from
        .map(|ip| ip.to_canonical().to_string())
        .unwrap_or_default();
    let peer = t
        .address
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical().to_string())
        .unwrap_or_else(|_| t.address.clone());
    let (caller, msg_a) = pair::Caller::start(key, &me, &peer);
    let id = auth::hex(&auth::random16()[..8]);
    let body = serde_json::json!({
        "v": pair::PAIR_VERSION,
        "id": id,
        "msg": auth::hex(&msg_a),
    })
    .to_string();
    let r = (link.endpoint(t)?)
        .request(
            "POST",
            "/peer/v1/pair",
            &[("content-type", "application/json")],
            body.as_bytes(),
            timeout,
            64 * 1024,
        )
        .map_err(|e| e.to_string())?;
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    if r.status != 200 {
        let why = answer.get("error").and_then(|e| e.as_str()).unwrap_or("");
        return Err(format!(
            "pairing refused by the peer (HTTP {}): {why}",
            r.status
        ));
    }
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(auth::unhex)
            .ok_or_else(|| format!("malformed pairing answer: no {name}"))
    };
    let secret = caller
        .finish(&field("msg")?, &field("confirm")?)
        .map_err(|e| e.to_string())?;
    Ok((secret, id))
}

/// One signed request to the peer, with its answer's signature checked.
pub fn call(
    t: &PeerTarget,
    request: &PeerRequest,
    keys: &Keys,
    link: Link,
    timeout: Duration,
) -> Result<PeerAnswer, String> {
    call_as(t, request, keys, None, link, timeout)
}

/// As [`call`], signed with the secret of pairing `pairing` when given (the peer finds it
/// by the id).
pub fn call_as(
    t: &PeerTarget,
    request: &PeerRequest,
    keys: &Keys,
    pairing: Option<&str>,
    link: Link,
    timeout: Duration,
) -> Result<PeerAnswer, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let path = format!("/peer/v1/{}", request.op());
    let text = signed_post(t, &path, &body, &keys.api, pairing, link, timeout)?;
    serde_json::from_slice(&text).map_err(|e| format!("malformed answer from peer: {e}"))
}

/// `path` with this build's protocol and release in its query. Requests to the peer are
/// signed over the path and query, so the peer can trust them and refuse a protocol it
/// cannot work with, saying why (`web::app`'s version check).
pub fn versioned(path: &str) -> String {
    let ours = crate::version::Version::ours();
    format!(
        "{path}{}{}",
        if path.contains('?') { '&' } else { '?' },
        form_urlencoded::Serializer::new(String::new())
            .append_pair("protocol", &ours.protocol())
            .append_pair("release", &ours.release)
            .finish()
    )
}

/// POSTs `body` to `path` on the peer, signed with `api` (and naming `pairing`), and
/// returns the answer's body once its signature checks out.
pub fn signed_post(
    t: &PeerTarget,
    path: &str,
    body: &[u8],
    api: &[u8; 32],
    pairing: Option<&str>,
    link: Link,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let path = &versioned(path);
    let nonce = auth::random16();
    let signed = auth::sign_request(api, "POST", path, &t.address, body, unix_ms(), nonce);
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    if let Some(id) = pairing {
        headers.push((pair::H_PAIR, id));
    }
    let r = (link.endpoint(t)?)
        .request("POST", path, &headers, body, timeout, MAX_ANSWER)
        .map_err(|e| e.to_string())?;
    match r.status {
        200 => {
            let sig = r.header(auth::H_SIGNATURE);
            if !auth::verify_response(api, &auth::hex(&nonce), 200, &r.body, sig) {
                return Err("the peer's answer is not signed with our key".into());
            }
            Ok(r.body)
        }
        401 => Err(format!(
            "authentication failed: {}",
            String::from_utf8_lossy(&r.body).trim()
        )),
        s => Err(format!(
            "peer answered HTTP {s}: {}",
            String::from_utf8_lossy(&r.body).trim()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A Health Monitor stand-in that drops the first `drop_first` connections unanswered
    /// (as a lost packet or an overloaded moment would) and answers the rest.
    fn flaky(drop_first: usize) -> (PeerTarget, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n < drop_first {
                    std::thread::spawn(move || {
                        // Holds the connection silently, as if the answer were lost.
                        std::thread::sleep(Duration::from_secs(3));
                        drop(s);
                    });
                    continue;
                }
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        let t = PeerTarget {
            address: "127.0.0.1".into(),
            hm_port: port,
            pin: None,
        };
        (t, seen)
    }

    #[test]
    fn one_lost_attempt_is_not_the_probes_verdict() {
        let link = Link {
            from: None,
            tls: false,
        };
        let timeout = Duration::from_millis(600);
        // The first connection is never answered: a later attempt within the same
        // timeout answers.
        let (t, seen) = flaky(1);
        let started = std::time::Instant::now();
        assert_eq!(probe(&t, link, timeout).as_deref(), Ok("ok"));
        assert!(started.elapsed() < timeout + Duration::from_millis(200));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        // None answers: the probe fails by its timeout, having tried each time.
        let (t, seen) = flaky(usize::MAX);
        let started = std::time::Instant::now();
        assert!(probe(&t, link, timeout).is_err());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(550) && took < timeout + Duration::from_millis(300),
            "{took:?}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), PROBE_ATTEMPTS as usize);
    }
}
