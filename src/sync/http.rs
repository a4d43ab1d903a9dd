//! The peer as a sync [`Source`]: signed requests to its `/peer/v1/sync/*`
//! endpoints over the Health Monitor port (HTTPS unless `tls = false`).
//!
//! Manifests and job answers are signed by the peer like every peer-API answer.
//! File contents are not (they are streamed): each is checked against the
//! hash in the signed manifest before it replaces anything.

use super::{Limits, Source};
use crate::ha::PeerTarget;
use crate::peer::auth::{self, Keys};
use crate::peer::client::{unix_ms, Link};
use crate::web::client;
use std::io::Read;
use std::time::Duration;

/// How long a sync request may wait for the head of the answer, and then for
/// each further piece of a file.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct PeerSource {
    target: PeerTarget,
    keys: Keys,
    link: Link,
    limits: Limits,
    /// One kept-alive connection (made on first use) for all this source's requests.
    session: Option<client::Session>,
}

impl PeerSource {
    pub fn new(target: PeerTarget, keys: Keys, link: Link, limits: Limits) -> PeerSource {
        PeerSource {
            target,
            keys,
            link,
            limits,
            session: None,
        }
    }

    fn open(
        &mut self,
        op: &str,
        body: &[u8],
    ) -> Result<(client::StreamingResponse, String), String> {
        let path = crate::peer::client::versioned(&format!("/peer/v1/sync/{op}"));
        let nonce = auth::random16();
        let signed = auth::sign_request(
            &self.keys.api,
            "POST",
            &path,
            &self.target.address,
            body,
            unix_ms(),
            nonce,
        );
        let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("content-type", "application/json"));
        let session = match &mut self.session {
            Some(s) => s,
            None => {
                let s = (self.link.endpoint(&self.target)?)
                    .session(SYNC_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                self.session.insert(s)
            }
        };
        let r = session
            .stream("POST", &path, &headers, body)
            .map_err(|e| e.to_string())?;
        Ok((r, auth::hex(&nonce)))
    }

    /// A signed call whose (signed) answer is read whole, up to the manifest limit.
    pub fn call(&mut self, op: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let (mut r, nonce) = self.open(op, body)?;
        let limit = self.limits.max_manifest_bytes as u64;
        if r.body.remaining() > limit {
            return Err(format!(
                "the peer's {op} answer is {} bytes, over the {limit}-byte limit",
                r.body.remaining()
            ));
        }
        let mut bytes = Vec::new();
        r.body
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the peer's {op} answer: {e}"))?;
        let sig = r
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(auth::H_SIGNATURE))
            .map(|(_, v)| v.as_str());
        if r.status != 200 {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!(
                "peer answered HTTP {} to {op}: {}",
                r.status,
                text.trim()
            ));
        }
        if !auth::verify_response(&self.keys.api, &nonce, 200, &bytes, sig) {
            return Err(format!("the peer's {op} answer is not signed with our key"));
        }
        Ok(bytes)
    }
}

/// A streamed answer's body, or the peer's refusal with the start of what it said.
fn streamed<'a>(mut r: client::StreamingResponse, what: &str) -> Result<Box<dyn Read + 'a>, String>
where
    client::StreamingResponse: 'a,
{
    if r.status == 200 {
        return Ok(Box::new(r.body));
    }
    let mut text = Vec::new();
    let _ = r.body.by_ref().take(4096).read_to_end(&mut text);
    Err(format!(
        "peer answered HTTP {} for {what}: {}",
        r.status,
        String::from_utf8_lossy(&text).trim()
    ))
}

impl Source for PeerSource {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        let body = serde_json::json!({ "set": set, "version": super::manifest::VERSION });
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        self.call("manifest", &body)
    }

    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        let body = serde_json::to_vec(&serde_json::json!({ "set": set, "path": path }))
            .map_err(|e| e.to_string())?;
        let (r, _) = self.open("file", &body)?;
        streamed(r, path)
    }

    fn blocks(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        let body = serde_json::to_vec(
            &serde_json::json!({ "set": set, "path": path, "hash": hash, "groups": groups }),
        )
        .map_err(|e| e.to_string())?;
        self.call("blocks", &body)
    }

    fn ranges(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        let body = serde_json::to_vec(
            &serde_json::json!({ "set": set, "path": path, "hash": hash, "ranges": ranges }),
        )
        .map_err(|e| e.to_string())?;
        let (r, _) = self.open("ranges", &body)?;
        streamed(r, &format!("ranges of {path}"))
    }

    fn fork(&self) -> Option<Box<dyn Source + Send>> {
        Some(Box::new(PeerSource::new(
            self.target.clone(),
            self.keys.clone(),
            self.link,
            self.limits,
        )))
    }
}
