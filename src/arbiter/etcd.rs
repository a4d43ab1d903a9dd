//! A small synchronous client of etcd v3's JSON gateway (`/v3/...`): the five calls the
//! lease needs, over HTTP or HTTPS, one short connection per call, trying the cluster's
//! endpoints in turn.
//!
//! The gateway speaks protobuf's JSON mapping: keys and values are base64, 64-bit
//! integers are strings, fields at their zero value are left out (a failed transaction
//! has no `succeeded`, a lease that is gone no `TTL`), and the streaming calls
//! (`lease/keepalive`) answer `{"result": ...}` objects in a chunked body.

use crate::config::Endpoint;
use crate::web::client::{self, ClientError, ClientResponse};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest response body read (a range of one key, a lease, a transaction).
const MAX_BODY: usize = 64 * 1024;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered in time.
    #[error("no etcd endpoint answers: {0}")]
    Unreachable(String),
    /// etcd answered with an error (bad auth, a lease not found, ...).
    #[error("etcd refused: {0}")]
    Refused(String),
    /// The answer could not be understood.
    #[error("etcd's answer makes no sense: {0}")]
    Malformed(String),
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub value: Vec<u8>,
    /// The lease the key lives under (0: none).
    pub lease: i64,
}

/// The client: the endpoints, the TLS configuration, the credentials.
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: tried first.
    next: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: Option<(String, String)>,
    token: Option<String>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Etcd {
    pub fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        auth: Option<(String, String)>,
    ) -> Etcd {
        Etcd {
            endpoints,
            next: 0,
            tls,
            auth,
            token: None,
        }
    }

    /// The endpoint that answered last.
    pub fn current(&self) -> String {
        self.endpoints
            .get(self.next)
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// Grants a lease of `ttl_s` seconds: its id, and the TTL etcd gave (it raises one
    /// below its minimum).
    pub fn grant(&mut self, ttl_s: u64, by: Instant) -> Result<(i64, u64), EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s }), by)?;
        let id = int(&v["ID"])
            .filter(|&id| id != 0)
            .ok_or_else(|| EtcdError::Malformed(format!("a granted lease without an ID: {v}")))?;
        let ttl = int(&v["TTL"]).unwrap_or(0);
        if ttl <= 0 {
            return Err(EtcdError::Refused(format!("lease granted with TTL {ttl}")));
        }
        Ok((id, ttl as u64))
    }

    /// Renews lease `id`: the TTL it runs for from now, 0 when the lease is gone.
    pub fn keep_alive(&mut self, id: i64, by: Instant) -> Result<u64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }), by)?;
        let r = &v["result"];
        if r.is_null() {
            return Err(EtcdError::Malformed(format!(
                "a keepalive without a result: {v}"
            )));
        }
        Ok(int(&r["TTL"]).unwrap_or(0).max(0) as u64)
    }

    /// Revokes lease `id` (its keys go with it).
    pub fn revoke(&mut self, id: i64, by: Instant) -> Result<(), EtcdError> {
        match self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }), by) {
            Ok(_) => Ok(()),
            // Already gone: what a revoke wants.
            Err(EtcdError::Refused(e)) if e.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The key, if it exists.
    pub fn get(&mut self, key: &str, by: Instant) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }), by)?;
        first_kv(&v["kvs"])
    }

    /// Creates the key under `lease` if it does not exist: `Ok(None)` when created, else
    /// the key as it is.
    pub fn create(
        &mut self,
        key: &str,
        value: &[u8],
        lease: i64,
        by: Instant,
    ) -> Result<Option<Kv>, EtcdError> {
        let k = B64.encode(key);
        let txn = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let v = self.call("/v3/kv/txn", &txn, by)?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(None);
        }
        let kvs = &v["responses"][0]["response_range"]["kvs"];
        match first_kv(kvs)? {
            Some(kv) => Ok(Some(kv)),
            // Gone between the compare and the range cannot happen in one transaction.
            None => Err(EtcdError::Malformed(format!(
                "a failed create without the key: {v}"
            ))),
        }
    }

    /// Deletes the key if it still holds `value`: whether it did.
    pub fn delete_if(&mut self, key: &str, value: &[u8], by: Instant) -> Result<bool, EtcdError> {
        let k = B64.encode(key);
        let txn = json!({
            "compare": [{ "key": k, "target": "VALUE", "result": "EQUAL", "value": B64.encode(value) }],
            "success": [{ "request_delete_range": { "key": k } }],
        });
        let v = self.call("/v3/kv/txn", &txn, by)?;
        Ok(v["succeeded"].as_bool() == Some(true))
    }

    /// One call, by `by`: the endpoints in turn from the one that answered last, each
    /// given an equal share of the time left. With auth, a token first (and once more if
    /// etcd says it expired).
    fn call(&mut self, path: &str, body: &Value, by: Instant) -> Result<Value, EtcdError> {
        if self.auth.is_some() && self.token.is_none() {
            self.authenticate(by)?;
        }
        match self.call_once(path, body, by) {
            Err(EtcdError::Refused(e)) if self.auth.is_some() && e.contains("token") => {
                self.token = None;
                self.authenticate(by)?;
                self.call_once(path, body, by)
            }
            other => other,
        }
    }

    fn authenticate(&mut self, by: Instant) -> Result<(), EtcdError> {
        let Some((name, password)) = self.auth.clone() else {
            return Ok(());
        };
        let v = self.call_once(
            "/v3/auth/authenticate",
            &json!({ "name": name, "password": password }),
            by,
        )?;
        let token = v["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                EtcdError::Malformed("an authentication answer without a token".into())
            })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    fn call_once(&mut self, path: &str, body: &Value, by: Instant) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let n = self.endpoints.len().max(1);
        let mut errors = Vec::new();
        for k in 0..n {
            let i = (self.next + k) % n;
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                errors.push("out of time".to_string());
                break;
            }
            let share = left / u32::try_from(n - k).unwrap_or(1);
            let Some(ep) = self.endpoints.get(i).cloned() else {
                break;
            };
            match self.exchange(&ep, path, &body, share) {
                Ok(resp) => {
                    self.next = i;
                    return decode(&resp);
                }
                Err(e) => errors.push(format!("{ep}: {e}")),
            }
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    fn exchange(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<ClientResponse, String> {
        let addr: SocketAddr = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", ep.host))?;
        let mut call = client::Endpoint::new(addr);
        if ep.tls {
            let config = self
                .tls
                .clone()
                .ok_or_else(|| "no TLS configuration for an https:// endpoint".to_string())?;
            call = call.tls_config(&ep.host, config);
        }
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(t) = &self.token {
            headers.push(("Authorization", t.as_str()));
        }
        call.request("POST", path, &headers, body.as_bytes(), timeout, MAX_BODY)
            .map_err(|e: ClientError| e.to_string())
    }
}

/// An int64 as the gateway writes it (a string), or as a plain number.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn first_kv(kvs: &Value) -> Result<Option<Kv>, EtcdError> {
    let Some(kv) = kvs.as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    let value = match kv["value"].as_str() {
        None => Vec::new(), // an empty value is left out
        Some(s) => B64
            .decode(s)
            .map_err(|e| EtcdError::Malformed(format!("a value that is not base64: {e}")))?,
    };
    Ok(Some(Kv {
        value,
        lease: int(&kv["lease"]).unwrap_or(0),
    }))
}

/// A gateway response: its JSON (the first object of a streamed body), or etcd's error.
pub fn decode(resp: &ClientResponse) -> Result<Value, EtcdError> {
    // The client has decoded a chunked body already.
    let v = first_json(&resp.body);
    if resp.status != 200 {
        let why = v
            .as_ref()
            .ok()
            .and_then(error_text)
            .unwrap_or_else(|| format!("HTTP {}", resp.status));
        return Err(EtcdError::Refused(why));
    }
    let v = v.map_err(EtcdError::Malformed)?;
    // A stream reports its errors in-band: {"error": {...}}.
    match v.get("error") {
        Some(e) if !e.is_null() => Err(EtcdError::Refused(
            error_text(&json!({ "error": e })).unwrap_or_else(|| e.to_string()),
        )),
        _ => Ok(v),
    }
}

fn error_text(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    let text = e
        .as_str()
        .or_else(|| e["message"].as_str())
        .or_else(|| v["message"].as_str())?;
    Some(text.to_string())
}

/// The first JSON value of a body (a stream holds one per line).
fn first_json(body: &[u8]) -> Result<Value, String> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| "an empty body".to_string())?
        .map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, chunked: bool, body: &[u8]) -> ClientResponse {
        let mut headers = vec![("Content-Type".into(), "application/json".into())];
        let mut body = body.to_vec();
        if chunked {
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            let mut wire = format!("{:x}\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b"\r\n0\r\n\r\n");
            body = client::dechunk(&wire, MAX_BODY).unwrap().unwrap();
        }
        ClientResponse {
            status,
            headers,
            body,
        }
    }

    #[test]
    fn a_streamed_keepalive_is_read() {
        let json = br#"{"result":{"header":{"revision":"2"},"ID":"7587899408011383815","TTL":"3"}}
"#;
        let v = decode(&resp(200, true, json)).unwrap();
        assert_eq!(int(&v["result"]["TTL"]), Some(3));
        assert_eq!(int(&v["result"]["ID"]), Some(7_587_899_408_011_383_815));
    }

    #[test]
    fn a_gone_lease_has_no_ttl_and_a_failed_txn_no_succeeded() {
        let v = decode(&resp(200, false, br#"{"result":{"ID":"123"}}"#)).unwrap();
        assert_eq!(int(&v["result"]["TTL"]).unwrap_or(0), 0);
        let v = decode(&resp(
            200,
            false,
            br#"{"responses":[{"response_range":{"kvs":[{"key":"L2E=","value":"cHJpbWFyeQ==","lease":"42"}],"count":"1"}}]}"#,
        ))
        .unwrap();
        assert_eq!(v["succeeded"].as_bool(), None);
        let kv = first_kv(&v["responses"][0]["response_range"]["kvs"])
            .unwrap()
            .unwrap();
        assert_eq!(kv.value, b"primary");
        assert_eq!(kv.lease, 42);
    }

    #[test]
    fn etcd_errors_are_named() {
        let e = decode(&resp(
            400,
            false,
            br#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            EtcdError::Refused("etcdserver: requested lease not found".into())
        );
        let json = br#"{"error":{"grpc_code":16,"message":"bad token"}}"#;
        let e = decode(&resp(200, true, json)).unwrap_err();
        assert_eq!(e, EtcdError::Refused("bad token".into()));
        assert!(matches!(
            decode(&resp(502, false, b"<html>")),
            Err(EtcdError::Refused(t)) if t == "HTTP 502"
        ));
        assert!(matches!(
            decode(&resp(200, false, b"")),
            Err(EtcdError::Malformed(_))
        ));
    }
}
