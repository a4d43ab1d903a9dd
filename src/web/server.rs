//! Bounded, blocking HTTP/1.1 server: one acceptor thread feeds a fixed pool
//! of worker threads through a bounded queue; one request per connection.

use super::client::{deadline_after, is_timeout, read_more, write_all_by};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Cap on `Limits::queue`: the queue is allocated up front.
const MAX_QUEUE: usize = 1 << 16;
/// Most request headers accepted; more is answered with 431.
const MAX_HEADERS: usize = 32;
/// How long a rejected request's unread bytes are drained before closing,
/// so the client sees our answer instead of a TCP reset.
const LINGER: Duration = Duration::from_millis(250);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// Canned answer the acceptor writes when every worker is busy and the queue is full.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n";

/// Resource limits for one [`Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted, in bytes; more gets 413.
    pub max_body_bytes: usize,
    /// Total time to receive one request, counted from when a worker takes the connection.
    pub request_timeout: Duration,
    /// Number of worker threads (at least one is started).
    pub workers: usize,
    /// Connections that may wait for a worker (capped at 65536); beyond that they get 503.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            workers: 4,
            queue: 64,
        }
    }
}

/// One fully received HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent, e.g. `GET`.
    pub method: String,
    /// Request target up to (not including) the first `?`.
    pub path: String,
    /// Everything after the first `?`; empty when there is none.
    pub query: String,
    /// Headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes, exactly `Content-Length` of them.
    pub body: Vec<u8>,
    /// Address of the connecting client.
    pub peer: SocketAddr,
}

impl Request {
    /// Value of the first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response; `Content-Length` and `Connection: close` are added when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code; anything outside 100..=999 is sent as 500.
    pub status: u16,
    /// Extra headers; framing headers and ones containing CR/LF are dropped when sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes (not sent for 1xx, 204 and 304).
    pub body: Vec<u8>,
}

impl Response {
    /// A response with the given status, `Content-Type` and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let headers = vec![("Content-Type".to_string(), content_type.to_string())];
        Self {
            status,
            headers,
            body: body.into(),
        }
    }

    /// A UTF-8 plain-text response.
    pub fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// A JSON response; `body` must already be serialized JSON.
    pub fn json(status: u16, body: &str) -> Self {
        Self::new(status, "application/json", body)
    }

    /// Adds one header and returns the response.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Serializes status line, headers and body for the wire.
    fn to_bytes(&self) -> Vec<u8> {
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        let body: &[u8] = match status {
            100..=199 | 204 | 304 => &[],
            _ => &self.body,
        };
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in &self.headers {
            let framing = ["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f));
            if !framing && header_ok(name, value) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

/// Application logic: turns one request into one response.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req`; a panic here is caught and answered with 500.
    fn handle(&self, req: &Request) -> Response;
}

impl<F> Handler for F
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: &Request) -> Response {
        self(req)
    }
}

/// A running server; [`Server::shutdown`] stops it and waits, dropping it only signals stop.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr`, then starts the acceptor and `limits.workers` worker threads.
    pub fn bind(addr: SocketAddr, limits: Limits, handler: Arc<dyn Handler>) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<TcpStream>(limits.queue.min(MAX_QUEUE));
        let mut workers = Vec::new();
        for i in 0..limits.workers.max(1) {
            let (rx, stop, handler) = (rx.clone(), Arc::clone(&stop), Arc::clone(&handler));
            let spawned = thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || worker_loop(&rx, &stop, &limits, handler.as_ref()));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    drop(tx); // lets the workers already started see a closed queue
                    join_all(workers);
                    return Err(e);
                }
            }
        }
        let flag = Arc::clone(&stop);
        let acceptor = thread::Builder::new()
            .name("http-acceptor".to_string())
            .spawn(move || accept_loop(&listener, &tx, &flag));
        match acceptor {
            Ok(handle) => Ok(Server {
                addr,
                stop,
                acceptor: Some(handle),
                workers,
            }),
            Err(e) => {
                join_all(workers); // the failed closure owned `tx`, so the queue is closed
                Err(e)
            }
        }
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, answers still-queued connections with 503, finishes
    /// in-flight requests and joins all threads (a handler that never returns blocks this).
    pub fn shutdown(mut self) {
        let woke = self.signal_stop();
        let acceptor = self.acceptor.take();
        if !woke {
            return; // acceptor unreachable: leave threads detached rather than hang
        }
        if let Some(handle) = acceptor {
            let _ = handle.join();
        }
        join_all(std::mem::take(&mut self.workers));
    }

    /// Sets the stop flag and wakes the acceptor with a self-connect; false if that failed.
    fn signal_stop(&self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.signal_stop();
        }
    }
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.join();
    }
}

fn accept_loop(listener: &TcpListener, tx: &Sender<TcpStream>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => match tx.try_send(stream) {
                Ok(()) => {}
                Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => reject_busy(s),
            },
            // e.g. out of file descriptors: back off instead of spinning
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Writes the canned 503 without ever blocking, drains what already arrived, closes.
fn reject_busy(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = stream.write_all(BUSY);
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

fn worker_loop(
    rx: &Receiver<TcpStream>,
    stop: &AtomicBool,
    limits: &Limits,
    handler: &dyn Handler,
) {
    for stream in rx.iter() {
        if stop.load(Ordering::SeqCst) {
            reject_busy(stream);
        } else {
            serve(stream, limits, handler);
        }
    }
}

/// Handles one connection: read one request, answer it, close.
fn serve(mut stream: TcpStream, limits: &Limits, handler: &dyn Handler) {
    let deadline = deadline_after(limits.request_timeout);
    let (response, complete) = match read_request(&mut stream, limits, deadline) {
        Ok(req) => {
            let answer = catch_unwind(AssertUnwindSafe(|| handler.handle(&req)));
            (answer.unwrap_or_else(|_| error_response(500)), true)
        }
        Err(Some(status)) => (error_response(status), false),
        Err(None) => return,
    };
    let written = write_all_by(
        &mut stream,
        &response.to_bytes(),
        deadline_after(limits.request_timeout),
    );
    if written.is_ok() && !complete {
        linger(&mut stream);
    }
}

fn error_response(status: u16) -> Response {
    Response::text(status, &format!("{}\n", reason(status)))
}

/// Half-closes, then briefly discards unread input so closing does not reset the connection.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let (mut sink, mut total) = ([0u8; 4096], 0);
    while total < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// Reads one request; `Err(Some(status))` should be answered, `Err(None)` means just close.
fn read_request(
    stream: &mut TcpStream,
    limits: &Limits,
    deadline: Instant,
) -> Result<Request, Option<u16>> {
    let peer = stream.peer_addr().map_err(|_| None)?;
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let (head_len, mut req) = loop {
        if let Some(head) = parse_head(&buf, peer)? {
            break head;
        }
        if buf.len() > limits.max_header_bytes {
            return Err(Some(431));
        }
        fill(stream, &mut buf, deadline)?;
    };
    if head_len > limits.max_header_bytes {
        return Err(Some(431));
    }
    if req.header("transfer-encoding").is_some() {
        return Err(Some(501));
    }
    let len = content_length(&req.headers).ok_or(Some(400))?;
    if len > limits.max_body_bytes {
        return Err(Some(413));
    }
    req.body = buf.split_off(head_len);
    while req.body.len() < len {
        fill(stream, &mut req.body, deadline)?;
    }
    req.body.truncate(len);
    Ok(req)
}

/// Parses the request head if complete into (head length, request without body);
/// errors carry the status to answer.
pub fn parse_head(buf: &[u8], peer: SocketAddr) -> Result<Option<(usize, Request)>, Option<u16>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Some(431)),
        Err(_) => return Err(Some(400)),
    };
    let target = req.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = req.headers.iter();
    let request = Request {
        method: req.method.unwrap_or_default().to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: headers
            .map(|h| (h.name.to_string(), lossy(h.value)))
            .collect(),
        body: Vec::new(),
        peer,
    };
    Ok(Some((len, request)))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads more request bytes into `buf`, mapping failures to what to answer.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), Option<u16>> {
    match read_more(stream, buf, deadline) {
        Ok(0) if buf.is_empty() => Err(None),
        Ok(0) => Err(Some(400)), // peer stopped sending mid-request
        Ok(_) => Ok(()),
        Err(e) if is_timeout(&e) => Err(Some(408)),
        Err(_) => Err(None),
    }
}

/// Declared body length: `Some(0)` when absent, `None` when invalid or conflicting.
pub fn content_length(headers: &[(String, String)]) -> Option<usize> {
    let mut found = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = value.parse().unwrap_or(usize::MAX); // all digits: only overflow fails
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    Some(found.unwrap_or(0))
}

/// True if the header can be sent verbatim without breaking the message framing.
fn header_ok(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::web::client::{request, ClientError};
    use crossbeam_channel::unbounded;

    const T: Duration = Duration::from_secs(3);

    fn start(limits: Limits, handler: impl Handler) -> Server {
        let addr = "127.0.0.1:0".parse().unwrap();
        Server::bind(addr, limits, Arc::new(handler)).unwrap()
    }

    fn echo(req: &Request) -> Response {
        let body = String::from_utf8_lossy(&req.body);
        let text = format!("{} {} {} {body}", req.method, req.path, req.query);
        Response::text(200, &text).with_header("X-Echo", req.header("x-test").unwrap_or("-"))
    }

    /// Sends raw bytes and returns everything the server sends back until it closes.
    fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out); // a reset after the answer is fine
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status(resp: &str) -> u16 {
        resp.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn get_and_post_round_trip_then_shutdown() {
        let server = start(Limits::default(), echo);
        let addr = server.local_addr();
        let get = request(
            addr,
            "GET",
            "/hello?x=1&y",
            &[("X-Test", "t1")],
            b"",
            T,
            1024,
        )
        .unwrap();
        assert_eq!(get.status, 200);
        assert_eq!(get.body, b"GET /hello x=1&y ");
        assert_eq!(get.header("x-echo"), Some("t1"));
        assert_eq!(get.header("CONNECTION"), Some("close"));
        assert_eq!(get.header("content-length"), Some("17"));
        let post = request(addr, "POST", "/data", &[], b"payload", T, 1024).unwrap();
        assert_eq!(
            (post.status, post.body.as_slice()),
            (200, &b"POST /data  payload"[..])
        );
        server.shutdown();
        let after = request(addr, "GET", "/", &[], b"", T, 1024);
        assert!(
            matches!(after, Err(ClientError::Connect { .. })),
            "{after:?}"
        );
    }

    #[test]
    fn oversized_or_too_many_headers_get_431() {
        let limits = Limits {
            max_header_bytes: 512,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(status(&raw(server.local_addr(), big.as_bytes())), 431);
        let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(&raw(server.local_addr(), many.as_bytes())), 431);
        // Just under the limit still works.
        let ok = format!("GET / HTTP/1.1\r\nX-Ok: {}\r\n\r\n", "a".repeat(400));
        assert_eq!(status(&raw(server.local_addr(), ok.as_bytes())), 200);
    }

    #[test]
    fn oversized_body_gets_413() {
        let limits = Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let ok = request(addr, "POST", "/", &[], &[b'x'; 1024], T, 4096).unwrap();
        assert_eq!(ok.status, 200);
        let small = request(addr, "POST", "/", &[], &[b'x'; 1025], T, 4096).unwrap();
        assert_eq!(small.status, 413);
        // Far larger than socket buffers: the client still sees the early 413.
        let huge = request(addr, "POST", "/", &[], &vec![b'x'; 8 << 20], T, 4096).unwrap();
        assert_eq!(huge.status, 413);
    }

    #[test]
    fn garbage_gets_400_and_chunked_gets_501() {
        let server = start(Limits::default(), echo);
        let addr = server.local_addr();
        assert_eq!(status(&raw(addr, b"\x00\x01\x02 garbage\r\n\r\n")), 400);
        assert_eq!(
            status(&raw(addr, b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")),
            400
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(status(&raw(addr, chunked)), 501);
    }

    #[test]
    fn slowloris_is_cut_at_deadline_while_others_are_served() {
        let limits = Limits {
            request_timeout: Duration::from_millis(300),
            workers: 2,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let started = Instant::now();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        thread::sleep(Duration::from_millis(50)); // let a worker pick it up
        let fast = request(addr, "GET", "/fast", &[], b"", T, 1024).unwrap();
        assert_eq!(fast.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "fast client was delayed"
        );
        slow.set_read_timeout(Some(T)).unwrap();
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(280),
            "closed too early: {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(1500),
            "not closed at deadline: {waited:?}"
        );
        assert_eq!(status(&answer), 408, "{answer:?}");
    }

    #[test]
    fn full_queue_gets_503() {
        let (entered_tx, entered) = unbounded();
        let (release, release_rx) = unbounded::<()>();
        let handler = move |_: &Request| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(T);
            Response::text(200, "done")
        };
        let server = start(
            Limits {
                workers: 1,
                queue: 1,
                ..Limits::default()
            },
            handler,
        );
        let addr = server.local_addr();
        let call = move || request(addr, "GET", "/", &[], b"", T, 1024).map(|r| r.status);
        let first = thread::spawn(call);
        entered.recv_timeout(T).unwrap(); // the only worker is now busy
        let queued = TcpStream::connect(addr).unwrap(); // fills the queue
        queued.set_read_timeout(Some(T)).unwrap();
        let rejected = call().unwrap();
        assert_eq!(rejected, 503);
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 200);
        let queued_answer = raw_on(queued, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(status(&queued_answer), 200);
    }

    fn raw_on(mut s: TcpStream, bytes: &[u8]) -> String {
        s.write_all(bytes).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn handler_panic_gets_500_and_server_keeps_serving() {
        let handler = |req: &Request| {
            if req.path == "/boom" {
                panic!("handler exploded (expected in this test)");
            }
            Response::json(200, "{\"ok\":true}")
        };
        let server = start(
            Limits {
                workers: 1,
                ..Limits::default()
            },
            handler,
        );
        let addr = server.local_addr();
        for _ in 0..2 {
            let boom = request(addr, "GET", "/boom", &[], b"", T, 1024).unwrap();
            assert_eq!(boom.status, 500);
            let ok = request(addr, "GET", "/fine", &[], b"", T, 1024).unwrap();
            assert_eq!(
                (ok.status, ok.header("content-type")),
                (200, Some("application/json"))
            );
        }
        server.shutdown();
    }
}
