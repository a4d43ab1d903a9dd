//! Tiny blocking HTTP/1.1 client for peer calls and health probes:
//! one request per connection, one deadline for the whole exchange.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;
/// Longest wait honoured; longer timeouts are clamped so deadlines cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// Value of the first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request failed; every message names the peer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be established.
    #[error("connect to {addr}: {}", describe(.source))]
    Connect {
        /// Peer address.
        addr: SocketAddr,
        /// Underlying error.
        source: io::Error,
    },
    /// The exchange did not finish within the caller's timeout.
    #[error("request to {addr} timed out after {timeout:?} while {stage}")]
    Timeout {
        /// Peer address.
        addr: SocketAddr,
        /// The caller's timeout for the whole exchange.
        timeout: Duration,
        /// What was under way: connecting, sending the request or reading the response.
        stage: &'static str,
    },
    /// The connection failed after it was established.
    #[error("request to {addr} failed while {stage}: {}", describe(.source))]
    Io {
        /// Peer address.
        addr: SocketAddr,
        /// What was under way: sending the request or reading the response.
        stage: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The peer's answer is not HTTP/1.x as understood here.
    #[error("request to {addr}: malformed response: {detail}")]
    Malformed {
        /// Peer address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// The response body is larger than the caller allows.
    #[error("request to {addr}: response body exceeds the {limit}-byte limit")]
    TooLarge {
        /// Peer address.
        addr: SocketAddr,
        /// The caller's `max_body`.
        limit: usize,
    },
    /// The method, target or a header cannot be sent safely; nothing was sent.
    #[error("invalid request to {addr}: {detail}")]
    InvalidRequest {
        /// Peer address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
}

/// Internal failure while reading, mapped to [`ClientError`] with context.
enum Fail {
    Io(io::Error),
    Malformed(String),
    TooLarge,
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

/// Sends one request and reads the whole response, all within `timeout`.
///
/// `Host` (unless given), `Content-Length` and `Connection: close` are added;
/// given `Content-Length`, `Connection` and `Transfer-Encoding` headers are ignored.
/// The body is read by `Content-Length`, or to EOF without one, and capped at `max_body`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<ClientResponse, ClientError> {
    let deadline = deadline_after(timeout);
    let mut out = build_head(method, path_and_query, headers, addr, body.len())
        .map_err(|detail| ClientError::InvalidRequest { addr, detail })?;
    out.extend_from_slice(body);
    let fail = |stage: &'static str, fail: Fail| match fail {
        Fail::Io(e) if is_timeout(&e) => ClientError::Timeout {
            addr,
            timeout,
            stage,
        },
        Fail::Io(source) => ClientError::Io {
            addr,
            stage,
            source,
        },
        Fail::Malformed(detail) => ClientError::Malformed { addr, detail },
        Fail::TooLarge => ClientError::TooLarge {
            addr,
            limit: max_body,
        },
    };
    if timeout.is_zero() {
        return Err(ClientError::Timeout {
            addr,
            timeout,
            stage: "connecting",
        });
    }
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout.min(MAX_WAIT)).map_err(|source| {
            if is_timeout(&source) {
                ClientError::Timeout {
                    addr,
                    timeout,
                    stage: "connecting",
                }
            } else {
                ClientError::Connect { addr, source }
            }
        })?;
    let _ = stream.set_nodelay(true);
    let head_only = method.eq_ignore_ascii_case("HEAD");
    if let Err(e) = write_all_by(&mut stream, &out, deadline) {
        // The server may have answered early (e.g. 413) and closed: prefer its answer.
        return read_response(&mut stream, head_only, deadline, max_body)
            .map_err(|_| fail("sending the request", Fail::Io(e)));
    }
    read_response(&mut stream, head_only, deadline, max_body)
        .map_err(|f| fail("reading the response", f))
}

/// Request line and headers, or why they cannot be sent.
fn build_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    addr: SocketAddr,
    body_len: usize,
) -> Result<Vec<u8>, String> {
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("bad method {method:?}"));
    }
    if !(target.starts_with('/') || target == "*") || !target.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "bad request target {target:?} (must start with '/', no spaces)"
        ));
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        if ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            continue;
        }
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(format!("bad header {name:?}: {value:?}"));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    ));
    Ok(head.into_bytes())
}

/// Reads a complete response (skipping 1xx interim ones) before `deadline`.
fn read_response(
    stream: &mut TcpStream,
    head_only: bool,
    deadline: Instant,
    max_body: usize,
) -> Result<ClientResponse, Fail> {
    let mut buf = Vec::with_capacity(4096);
    let (status, headers) = loop {
        let (len, status, headers) = loop {
            if let Some(head) = parse_head(&buf)? {
                break head;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(Fail::Malformed(format!(
                    "response head exceeds {MAX_HEAD_BYTES} bytes"
                )));
            }
            if read_more(stream, &mut buf, deadline)? == 0 {
                let got = buf.len();
                return Err(Fail::Malformed(format!(
                    "connection closed after {got} bytes, before the response head was complete"
                )));
            }
        };
        buf.drain(..len);
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    let mut response = ClientResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(response);
    }
    if let Some(te) = response.header("transfer-encoding") {
        if !te.trim().eq_ignore_ascii_case("identity") {
            return Err(Fail::Malformed(format!(
                "unsupported Transfer-Encoding {te:?}"
            )));
        }
    }
    match content_length(&response.headers).map_err(Fail::Malformed)? {
        Some(len) if len > max_body => return Err(Fail::TooLarge),
        Some(len) => {
            while buf.len() < len {
                if read_more(stream, &mut buf, deadline)? == 0 {
                    let got = buf.len();
                    return Err(Fail::Malformed(format!(
                        "connection closed after {got} of {len} body bytes"
                    )));
                }
            }
            buf.truncate(len);
        }
        None => loop {
            if buf.len() > max_body {
                return Err(Fail::TooLarge);
            }
            if read_more(stream, &mut buf, deadline)? == 0 {
                break;
            }
        },
    }
    response.body = buf;
    Ok(response)
}

/// A parsed response head: (its length in bytes, status, headers).
type Head = (usize, u16, Vec<(String, String)>);

/// Parses a response head if complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Fail> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((len, resp.code.unwrap_or_default(), headers)))
        }
        Err(e) => Err(Fail::Malformed(format!(
            "not an HTTP/1.x response head ({e})"
        ))),
    }
}

/// Declared body length (`None` when absent), or why it is unusable.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, String> {
    let mut found = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let n = value
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("bad Content-Length {value:?}"))?;
        if found.is_some_and(|f| f != n) {
            return Err("conflicting Content-Length headers".to_string());
        }
        found = Some(n);
    }
    Ok(found)
}

/// The instant `wait` (at most one day) from now.
pub(super) fn deadline_after(wait: Duration) -> Instant {
    Instant::now() + wait.min(MAX_WAIT)
}

/// True for the error kinds a socket timeout produces.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Short lowercase wording for the errors an operator sees most.
fn describe(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let text = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by peer",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe => "connection closed by peer",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::TimedOut | K::WouldBlock => "timed out",
        _ => return e.to_string(),
    };
    text.to_string()
}

/// One read of at most 16 KiB, bounded by `deadline`; appends to `buf`.
pub(super) fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 16 * 1024];
    let n = loop {
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Writes all of `data` before `deadline`.
pub(super) fn write_all_by(
    stream: &mut TcpStream,
    mut data: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpListener};
    use std::thread;

    const T: Duration = Duration::from_secs(3);

    /// A one-shot server that reads the request, writes `answer` verbatim and closes.
    fn canned(answer: impl Into<Vec<u8>>) -> SocketAddr {
        let answer = answer.into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(&answer);
            let _ = s.shutdown(Shutdown::Write);
            let _ = s.read_to_end(&mut Vec::new());
        });
        addr
    }

    fn get(addr: SocketAddr, max_body: usize) -> Result<ClientResponse, ClientError> {
        request(addr, "GET", "/probe", &[("X-Req", "1")], b"", T, max_body)
    }

    #[test]
    fn closed_port_is_a_connect_error_naming_the_peer() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = get(addr, 1024).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("connect to {addr}: connection refused")
        );
    }

    #[test]
    fn silent_server_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let timeout = Duration::from_millis(200);
        let err = request(addr, "GET", "/", &[], b"", timeout, 1024).unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(
            err,
            ClientError::Timeout {
                stage: "reading the response",
                ..
            }
        ));
        assert!(
            waited >= timeout && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("timed out after 200ms"),
            "{msg}"
        );
    }

    #[test]
    fn body_without_length_is_read_to_eof_and_interim_responses_skipped() {
        let answer =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: b\r\n\r\nhello world";
        let resp = get(canned(answer), 1024).unwrap();
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (201, &b"hello world"[..])
        );
        assert_eq!(resp.header("x-a"), Some("b"));
        assert_eq!(resp.header("missing"), None);
    }

    #[test]
    fn oversized_bodies_are_too_large() {
        let declared = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let err = get(canned(declared), 1024).unwrap_err();
        assert!(
            matches!(err, ClientError::TooLarge { limit: 1024, .. }),
            "{err:?}"
        );
        let undeclared = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(5000));
        let err = get(canned(undeclared), 1024).unwrap_err();
        assert!(matches!(err, ClientError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn malformed_answers_are_reported() {
        let err = get(canned("SSH-2.0-OpenSSH_9.2\r\n\r\n"), 1024).unwrap_err();
        assert!(matches!(err, ClientError::Malformed { .. }), "{err:?}");
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let err = get(canned(short), 1024).unwrap_err();
        assert!(
            err.to_string().contains("after 3 of 10 body bytes"),
            "{err}"
        );
        let err = get(canned("HTTP/1.1 200 OK\r\nContent-Le"), 1024).unwrap_err();
        assert!(
            err.to_string()
                .contains("before the response head was complete"),
            "{err}"
        );
    }

    #[test]
    fn unsafe_requests_are_refused_before_connecting() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let bad_header = request(addr, "GET", "/", &[("X", "a\r\nEvil: 1")], b"", T, 10);
        assert!(matches!(
            bad_header,
            Err(ClientError::InvalidRequest { .. })
        ));
        let bad_path = request(addr, "GET", "/a b", &[], b"", T, 10);
        assert!(matches!(bad_path, Err(ClientError::InvalidRequest { .. })));
        let bad_method = request(addr, "G T", "/", &[], b"", T, 10);
        assert!(matches!(
            bad_method,
            Err(ClientError::InvalidRequest { .. })
        ));
    }
}
