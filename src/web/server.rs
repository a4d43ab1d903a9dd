//! Bounded, blocking HTTP/1.1 server, plain or TLS, with persistent connections.
//!
//! One acceptor thread admits connections (at most `max_connections` open in all and
//! `max_per_client` per source address; beyond that, 503 and close) and feeds a fixed pool of
//! worker threads through a bounded queue. A worker serves a connection's requests while
//! they keep coming, pipelined ones included. A keep-alive connection that goes quiet is
//! handed to a single idle thread that waits on all such connections with poll(2) and queues
//! each again when its next request arrives (or closes it after `idle_timeout`), so idle
//! clients never hold a worker. Threads: acceptor, idle poller and `workers`, no others.
//! Every socket operation is bounded by a deadline, so a slow client costs a worker at most
//! `request_timeout` per request.

use super::client::{deadline_after, is_timeout, Wire};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
/// Canned answer written, without blocking, to a connection that cannot be served now.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n";
/// First byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;
/// Body of the 400 answering plain HTTP sent to a TLS port.
const NEEDS_TLS: &str = "This port speaks HTTPS (TLS) only.\n";
/// Longest the idle poller sleeps without looking at the stop flag.
const POLL_MAX: Duration = Duration::from_secs(1);

/// Resource limits for one [`Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted, in bytes; more gets 413.
    pub max_body_bytes: usize,
    /// Total time to receive one request, counted from when a worker takes the connection
    /// (a TLS handshake counts toward the first request's); sending the response has as long.
    pub request_timeout: Duration,
    /// Number of worker threads (at least one is started).
    pub workers: usize,
    /// Connections that may wait for a worker, new ones and kept-alive ones whose next request
    /// is arriving (capped at 65536); beyond that they get 503 (on TLS: are closed).
    pub queue: usize,
    /// How long a keep-alive connection may stay quiet between requests before it is closed.
    pub idle_timeout: Duration,
    /// Most requests answered on one connection (at least one); the last answer says
    /// `Connection: close`.
    pub max_requests_per_connection: usize,
    /// Most connections open at once (waiting, being served or idle between requests, at
    /// least one); one more gets 503 and is closed.
    pub max_connections: usize,
    /// Most connections open at once from one source IP address (at least one); one more
    /// gets 503 and is closed.
    pub max_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            workers: 4,
            queue: 64,
            idle_timeout: Duration::from_secs(5),
            max_requests_per_connection: 100,
            max_connections: 256,
            max_per_client: 32,
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

/// An HTTP response; `Content-Length` and `Connection` are added when it is sent.
///
/// A `Connection: close` header from the handler is honoured: the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code; anything outside 100..=999 is sent as 500.
    pub status: u16,
    /// Extra headers; framing headers and ones containing CR/LF are dropped when sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes (not sent for 1xx, 204 and 304).
    pub body: Vec<u8>,
    /// A file sent instead of `body`, read from its current offset as it is sent.
    pub file: Option<FileBody>,
}

/// A file streamed as a response body: `len` bytes from the file's current offset.
#[derive(Debug, Clone)]
pub struct FileBody {
    pub file: Arc<std::fs::File>,
    pub len: u64,
}

impl PartialEq for FileBody {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.len == other.len
    }
}

impl Eq for FileBody {}

impl Response {
    /// A response with the given status, `Content-Type` and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let headers = vec![("Content-Type".to_string(), content_type.to_string())];
        Self {
            status,
            headers,
            body: body.into(),
            file: None,
        }
    }

    /// A response whose body is `len` bytes of `file`, streamed as it is sent.
    pub fn file(status: u16, content_type: &str, file: std::fs::File, len: u64) -> Self {
        let mut r = Self::new(status, content_type, Vec::new());
        r.file = Some(FileBody {
            file: Arc::new(file),
            len,
        });
        r
    }

    /// A UTF-8 plain-text response.
    pub fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// A JSON response; `body` must already be serialized JSON.
    pub fn json(status: u16, body: &str) -> Self {
        Self::new(status, "application/json", body)
    }

    /// The file sent as the body: only when there is no byte body and the
    /// status may carry one (not 1xx, 204 or 304).
    fn file_body(&self) -> Option<&FileBody> {
        let status_ok = !matches!(self.status, 100..=199 | 204 | 304);
        self.file
            .as_ref()
            .filter(|_| status_ok && self.body.is_empty())
    }

    /// Adds one header and returns the response.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Serializes status line, headers and body for the wire; `head_request` leaves the
    /// body out (its length is still announced), `keep_alive` picks the `Connection` value.
    fn to_bytes(&self, head_request: bool, keep_alive: bool) -> Vec<u8> {
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
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let length = match self.file_body() {
            Some(f) => f.len,
            None => body.len() as u64,
        };
        head.push_str(&format!(
            "Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
        ));
        let mut out = head.into_bytes();
        if !head_request {
            out.extend_from_slice(body);
        }
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
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    idler: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.shared.tls.is_some())
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` for plain HTTP, then starts the acceptor, the idle poller and
    /// `limits.workers` worker threads.
    pub fn bind(addr: SocketAddr, limits: Limits, handler: Arc<dyn Handler>) -> io::Result<Server> {
        Self::start(addr, limits, handler, None)
    }

    /// As [`Server::bind`], serving HTTPS with `tls` (see [`crate::web::tls::server_config`]).
    ///
    /// Plain HTTP sent to this port is answered with a plain-text 400 and closed; a failed
    /// handshake just closes the connection.
    pub fn bind_tls(
        addr: SocketAddr,
        limits: Limits,
        handler: Arc<dyn Handler>,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<Server> {
        Self::start(addr, limits, handler, Some(tls))
    }

    fn start(
        addr: SocketAddr,
        limits: Limits,
        handler: Arc<dyn Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (idle_tx, idle_rx) = unbounded::<Conn>(); // bounded by max_connections
        let shared = Arc::new(Shared {
            limits,
            handler,
            tls,
            stop: AtomicBool::new(false),
            counts: Arc::default(),
            idle_tx,
            wake_tx,
        });
        let mut server = Server {
            addr,
            shared,
            acceptor: None,
            idler: None,
            workers: Vec::new(),
        };
        let (tx, rx) = bounded::<Job>(limits.queue.min(MAX_QUEUE));
        for i in 0..limits.workers.max(1) {
            let (rx, shared) = (rx.clone(), Arc::clone(&server.shared));
            match spawn(format!("http-worker-{i}"), move || {
                worker_loop(&rx, &shared)
            }) {
                Ok(handle) => server.workers.push(handle),
                Err(e) => {
                    drop(tx); // lets the workers already started see a closed queue
                    server.abort();
                    return Err(e);
                }
            }
        }
        let (jobs, shared) = (tx.clone(), Arc::clone(&server.shared));
        let idler = spawn("http-idle".to_string(), move || {
            idle_loop(&idle_rx, &wake_rx, &jobs, &shared);
        });
        match idler {
            Ok(handle) => server.idler = Some(handle),
            Err(e) => {
                drop(tx);
                server.abort();
                return Err(e);
            }
        }
        let shared = Arc::clone(&server.shared);
        match spawn("http-acceptor".to_string(), move || {
            accept_loop(&listener, &tx, &shared);
        }) {
            Ok(handle) => {
                server.acceptor = Some(handle);
                Ok(server)
            }
            Err(e) => {
                server.abort(); // the failed closure owned `tx`; the idle poller holds the rest
                Err(e)
            }
        }
    }

    /// Stops the idle poller and joins what was started (startup failed).
    fn abort(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(handle) = self.idler.take() {
            let _ = handle.join();
        }
        join_all(std::mem::take(&mut self.workers));
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, answers still-queued connections with 503 (a TLS port just closes
    /// them), closes idle ones, finishes in-flight requests (answering them with
    /// `Connection: close`) and joins all threads (a handler that never returns blocks this).
    pub fn shutdown(mut self) {
        let woke = self.signal_stop();
        let acceptor = self.acceptor.take();
        if !woke {
            return; // acceptor unreachable: leave threads detached rather than hang
        }
        if let Some(handle) = acceptor {
            let _ = handle.join();
        }
        if let Some(handle) = self.idler.take() {
            let _ = handle.join();
        }
        join_all(std::mem::take(&mut self.workers));
    }

    /// Sets the stop flag, wakes the idle poller, and wakes the acceptor with a
    /// self-connect; false if that failed.
    fn signal_stop(&self) -> bool {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
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

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.join();
    }
}

/// State every thread of one server shares.
struct Shared {
    limits: Limits,
    handler: Arc<dyn Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: AtomicBool,
    counts: Arc<Mutex<Counts>>,
    /// Quiet keep-alive connections, to the idle poller.
    idle_tx: Sender<Conn>,
    /// Written to (one byte, never blocking) to wake the idle poller.
    wake_tx: UnixStream,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]); // a full pipe means a wake-up is pending anyway
    }

    /// Hands a quiet keep-alive connection to the idle poller (if it is gone, closes it).
    fn park(&self, conn: Conn) {
        if self.idle_tx.send(conn).is_ok() {
            self.wake();
        }
    }
}

/// Open connections, in all and per source address.
#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in [`Counts`]; given back when dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Slot {
    /// A place for a connection from `ip`, unless a limit is reached.
    fn take(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.open >= limits.max_connections.max(1) || from_ip >= limits.max_per_client.max(1) {
            return None;
        }
        c.open += 1;
        c.per_ip.insert(ip, from_ip + 1);
        Some(Slot {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.open = c.open.saturating_sub(1);
        let left = match c.per_ip.get_mut(&self.ip) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            c.per_ip.remove(&self.ip);
        }
    }
}

/// Work for a worker: a new connection, or a kept-alive one whose next request is arriving.
enum Job {
    New(TcpStream, SocketAddr, Slot),
    Ready(Conn),
}

/// A connection between requests.
struct Conn {
    wire: Wire,
    peer: SocketAddr,
    /// Bytes received past the previous request (pipelining).
    carry: Vec<u8>,
    /// Requests answered so far.
    served: usize,
    _slot: Slot,
}

fn accept_loop(listener: &TcpListener, tx: &Sender<Job>, shared: &Shared) {
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => match Slot::take(&shared.counts, peer.ip(), &shared.limits) {
                Some(slot) => {
                    if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
                        tx.try_send(Job::New(stream, peer, slot))
                    {
                        reject(job, shared);
                    }
                }
                None => reject_busy(&stream, shared.tls.is_some()),
            },
            // e.g. out of file descriptors: back off instead of spinning
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Turns away a job that cannot be served now.
fn reject(job: Job, shared: &Shared) {
    match job {
        Job::New(stream, _, _slot) => reject_busy(&stream, shared.tls.is_some()),
        Job::Ready(mut conn) => {
            conn.wire.close_notify_now();
            reject_busy(conn.wire.socket(), conn.wire.is_tls());
        }
    }
}

/// Writes the canned 503 (not on TLS, where it would be garbage) without ever blocking,
/// drains what already arrived; the caller then closes.
fn reject_busy(stream: &TcpStream, tls: bool) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut stream = stream;
    if !tls {
        let _ = stream.write_all(BUSY);
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

fn worker_loop(rx: &Receiver<Job>, shared: &Shared) {
    for job in rx.iter() {
        if shared.stopping() {
            reject(job, shared);
            continue;
        }
        let request_timeout = shared.limits.request_timeout;
        match job {
            Job::New(stream, peer, slot) => {
                let deadline = deadline_after(request_timeout);
                if let Some(wire) = open(stream, shared, deadline) {
                    let conn = Conn {
                        wire,
                        peer,
                        carry: Vec::new(),
                        served: 0,
                        _slot: slot,
                    };
                    serve(conn, deadline, shared);
                }
            }
            Job::Ready(conn) => serve(conn, deadline_after(request_timeout), shared),
        }
    }
}

/// Readies a new connection: on a TLS port, answers plain HTTP with 400 or completes
/// the handshake by `deadline`. `None` when the connection is done with.
fn open(stream: TcpStream, shared: &Shared, deadline: Instant) -> Option<Wire> {
    let _ = stream.set_nodelay(true);
    let Some(config) = &shared.tls else {
        return Some(Wire::plain(stream));
    };
    match first_byte(&stream, deadline)? {
        TLS_HANDSHAKE => {}
        _ => {
            let mut wire = Wire::plain(stream);
            let answer = Response::text(400, NEEDS_TLS).to_bytes(false, false);
            let limit = deadline_after(shared.limits.request_timeout);
            if wire.write_all_by(&answer, limit).is_ok() {
                linger(wire.socket());
            }
            return None;
        }
    }
    let conn = rustls::ServerConnection::new(Arc::clone(config)).ok()?;
    let mut wire = Wire::tls(stream, conn.into());
    wire.handshake(deadline).ok()?; // a TLS failure's alert is already sent
    Some(wire)
}

/// The first byte the client sent, left unread; `None` if it closed or `deadline` passed.
fn first_byte(stream: &TcpStream, deadline: Instant) -> Option<u8> {
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.peek(&mut byte) {
            Ok(1) => return Some(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}

/// Serves requests on `conn` while they come without a pause (the first by `deadline`),
/// then closes it or hands it to the idle poller.
fn serve(mut conn: Conn, mut deadline: Instant, shared: &Shared) {
    let limits = &shared.limits;
    loop {
        let (req, wants_keep_alive) = match read_request(&mut conn, limits, deadline) {
            Ok(read) => read,
            Err(Some(status)) => {
                let answer = error_response(status).to_bytes(false, false);
                let written = conn
                    .wire
                    .write_all_by(&answer, deadline_after(limits.request_timeout));
                if written.is_ok() {
                    conn.wire.close_notify(deadline_after(LINGER));
                    linger(conn.wire.socket());
                }
                return;
            }
            Err(None) => {
                conn.wire.close_notify(deadline_after(LINGER));
                return;
            }
        };
        conn.served += 1;
        let answer = catch_unwind(AssertUnwindSafe(|| shared.handler.handle(&req)));
        let response = answer.unwrap_or_else(|_| error_response(500));
        let keep_alive = wants_keep_alive
            && conn.served < limits.max_requests_per_connection.max(1)
            && !shared.stopping()
            && !has_token(&response.headers, "connection", "close");
        let head = req.method.eq_ignore_ascii_case("HEAD");
        let written = conn.wire.write_all_by(
            &response.to_bytes(head, keep_alive),
            deadline_after(limits.request_timeout),
        );
        if written.is_err() {
            return;
        }
        if let (Some(f), false) = (response.file_body(), head) {
            if !send_file(&mut conn.wire, f, limits.request_timeout) {
                return; // the client cannot get a complete body on this connection
            }
        }
        if !keep_alive {
            conn.wire.close_notify(deadline_after(LINGER));
            if !conn.carry.is_empty() {
                linger(conn.wire.socket()); // unread pipelined requests: avoid a reset
            }
            return;
        }
        if conn.carry.is_empty() && !conn.wire.has_buffered() {
            shared.park(conn);
            return;
        }
        deadline = deadline_after(limits.request_timeout);
    }
}

/// Sends `f.len` bytes of the file, each chunk within `timeout`; false when the file
/// ended early or the client stopped reading.
fn send_file(wire: &mut Wire, f: &FileBody, timeout: Duration) -> bool {
    let mut left = f.len;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match (&*f.file).read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if wire
            .write_all_by(&chunk[..n], deadline_after(timeout))
            .is_err()
        {
            return false;
        }
        left -= n as u64;
    }
    true
}

fn error_response(status: u16) -> Response {
    Response::text(status, &format!("{}\n", reason(status)))
}

/// Half-closes, then briefly discards unread input so closing does not reset the connection.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let (mut sink, mut total, mut stream) = ([0u8; 4096], 0, stream);
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

/// A quiet keep-alive connection and when it will be closed.
struct Idle {
    conn: Conn,
    until: Instant,
}

/// The idle poller: waits for quiet keep-alive connections to become readable and queues
/// them for a worker again; closes them after `idle_timeout`, and all of them on stop.
fn idle_loop(idle_rx: &Receiver<Conn>, wake_rx: &UnixStream, jobs: &Sender<Job>, shared: &Shared) {
    let mut idle: Vec<Idle> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !shared.stopping() {
        let now = Instant::now();
        let until = now + shared.limits.idle_timeout;
        idle.extend(idle_rx.try_iter().map(|conn| Idle { conn, until }));
        fds.clear();
        fds.push(readable(wake_rx.as_raw_fd()));
        fds.extend(
            idle.iter()
                .map(|i| readable(i.conn.wire.socket().as_raw_fd())),
        );
        let wait = idle
            .iter()
            .map(|i| i.until.saturating_duration_since(now))
            .fold(POLL_MAX, Duration::min);
        let wait_ms = i32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(1000);
        if !poll(&mut fds, wait_ms) {
            thread::sleep(Duration::from_millis(10)); // unexpected: do not spin
        }
        if fds[0].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&*wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        let now = Instant::now();
        for (entry, fd) in std::mem::take(&mut idle).into_iter().zip(&fds[1..]) {
            if fd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                drop(entry); // broken: just close
            } else if fd.revents != 0 {
                // the next request (or the client's close) is arriving
                if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
                    jobs.try_send(Job::Ready(entry.conn))
                {
                    reject(job, shared);
                }
            } else if entry.until <= now {
                close_idle(entry.conn);
            } else {
                idle.push(entry);
            }
        }
    }
    for entry in idle {
        close_idle(entry.conn);
    }
    for conn in idle_rx.try_iter() {
        close_idle(conn);
    }
}

fn close_idle(mut conn: Conn) {
    conn.wire.close_notify_now();
}

fn readable(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout_ms` pass; false on an error other than
/// EINTR. Every `revents` is zero unless poll(2) reported readiness.
fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> bool {
    let count = fds.len() as libc::nfds_t;
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `count` initialized `pollfd`
    // structs for the whole call; poll(2) reads them and writes only their `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) };
    if rc >= 0 {
        return true;
    }
    let interrupted = io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
    for fd in fds.iter_mut() {
        fd.revents = 0;
    }
    interrupted
}

/// Reads one request; `Err(Some(status))` should be answered, `Err(None)` means just close.
/// Also says whether the client wants the connection kept open afterwards.
fn read_request(
    conn: &mut Conn,
    limits: &Limits,
    deadline: Instant,
) -> Result<(Request, bool), Option<u16>> {
    let mut buf = std::mem::take(&mut conn.carry);
    let (head_len, mut req, version) = loop {
        if let Some(head) = parse_request_head(&buf, conn.peer)? {
            break head;
        }
        if buf.len() > limits.max_header_bytes {
            return Err(Some(431));
        }
        fill(&mut conn.wire, &mut buf, deadline)?;
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
    let mut body = buf.split_off(head_len);
    while body.len() < len {
        fill(&mut conn.wire, &mut body, deadline)?;
    }
    conn.carry = body.split_off(len); // the start of the next request, if pipelined
    req.body = body;
    let keep_alive = if has_token(&req.headers, "connection", "close") {
        false
    } else {
        version >= 1 || has_token(&req.headers, "connection", "keep-alive")
    };
    Ok((req, keep_alive))
}

/// True if a header named `name` lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses the request head if complete into (head length, request without body);
/// errors carry the status to answer.
pub fn parse_head(buf: &[u8], peer: SocketAddr) -> Result<Option<(usize, Request)>, Option<u16>> {
    Ok(parse_request_head(buf, peer)?.map(|(len, req, _)| (len, req)))
}

/// As [`parse_head`], with the HTTP minor version (0 for HTTP/1.0).
fn parse_request_head(
    buf: &[u8],
    peer: SocketAddr,
) -> Result<Option<(usize, Request, u8)>, Option<u16>> {
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
    Ok(Some((len, request, req.version.unwrap_or(0))))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads more request bytes into `buf`, mapping failures to what to answer.
fn fill(wire: &mut Wire, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), Option<u16>> {
    match wire.read_more(buf, deadline) {
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
    use crate::web::client::{client_config, request, request_tls, ClientError, Verify};
    use crate::web::tls;
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
        let ok = format!(
            "GET / HTTP/1.1\r\nConnection: close\r\nX-Ok: {}\r\n\r\n",
            "a".repeat(400)
        );
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
        let queued_answer = raw_on(queued, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
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

    /// One response read off a kept-open connection.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads exactly one response (framed by Content-Length), keeping extra bytes in `buf`.
    fn read_reply(s: &mut impl Read, buf: &mut Vec<u8>, head_only: bool) -> Reply {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(buf).unwrap() {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), lossy(h.value)))
                    .collect();
                let declared = content_length(&headers).unwrap();
                let end = len + if head_only { 0 } else { declared };
                while buf.len() < end {
                    more(s, buf);
                }
                let body = buf[len..end].to_vec();
                buf.drain(..end);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            more(s, buf);
        }
    }

    fn more(s: &mut impl Read, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed early; got {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }

    /// True if the server closed the connection (EOF or reset) within the read timeout.
    fn is_closed(s: &mut impl Read) -> bool {
        match s.read(&mut [0u8; 64]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e),
        }
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s
    }

    fn get_on(s: &mut TcpStream, buf: &mut Vec<u8>, path: &str, extra: &str) -> Reply {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).unwrap();
        read_reply(s, buf, false)
    }

    fn start_tls(limits: Limits, handler: impl Handler, id: &tls::Identity) -> Server {
        let addr = "127.0.0.1:0".parse().unwrap();
        let config = tls::server_config(id).unwrap();
        Server::bind_tls(addr, limits, Arc::new(handler), config).unwrap()
    }

    fn get_tls(
        addr: SocketAddr,
        verify: Verify,
    ) -> Result<crate::web::client::ClientResponse, ClientError> {
        request_tls(addr, "localhost", verify, "GET", "/t?q", &[], b"", T, 1024)
    }

    #[test]
    fn keep_alive_serves_several_requests_until_close() {
        let server = start(Limits::default(), echo);
        let (mut s, mut buf) = (connect(server.local_addr()), Vec::new());
        let first = get_on(&mut s, &mut buf, "/1", "");
        assert_eq!(
            (first.status, first.body.as_slice()),
            (200, &b"GET /1  "[..])
        );
        assert_eq!(first.header("connection"), Some("keep-alive"));
        thread::sleep(Duration::from_millis(50)); // the connection goes quiet and is parked
        let second = get_on(&mut s, &mut buf, "/2", "");
        assert_eq!(
            (second.status, second.header("connection")),
            (200, Some("keep-alive"))
        );
        let last = get_on(&mut s, &mut buf, "/3", "Connection: close\r\n");
        assert_eq!(
            (last.status, last.header("connection")),
            (200, Some("close"))
        );
        assert!(is_closed(&mut s));
        assert!(buf.is_empty());
        // HTTP/1.0 closes unless it asks for keep-alive; HEAD gets no body.
        let mut s = connect(server.local_addr());
        s.write_all(b"HEAD /h HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap();
        let head = read_reply(&mut s, &mut buf, true);
        assert_eq!(head.header("connection"), Some("keep-alive"));
        assert_eq!(head.header("content-length"), Some("9"));
        s.write_all(b"GET /g HTTP/1.0\r\n\r\n").unwrap();
        let plain = read_reply(&mut s, &mut buf, false);
        assert_eq!(
            (plain.body.as_slice(), plain.header("connection")),
            (&b"GET /g  "[..], Some("close"))
        );
        assert!(is_closed(&mut s));
    }

    #[test]
    fn idle_timeout_and_request_cap_close_kept_alive_connections() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            max_requests_per_connection: 2,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let (mut s, mut buf) = (connect(server.local_addr()), Vec::new());
        assert_eq!(
            get_on(&mut s, &mut buf, "/", "").header("connection"),
            Some("keep-alive")
        );
        let quiet = Instant::now();
        assert!(is_closed(&mut s));
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
        let mut s = connect(server.local_addr());
        assert_eq!(
            get_on(&mut s, &mut buf, "/", "").header("connection"),
            Some("keep-alive")
        );
        assert_eq!(
            get_on(&mut s, &mut buf, "/", "").header("connection"),
            Some("close")
        );
        assert!(is_closed(&mut s));
    }

    #[test]
    fn pipelined_requests_in_one_write_are_all_answered_in_order() {
        let server = start(Limits::default(), echo);
        let (mut s, mut buf) = (connect(server.local_addr()), Vec::new());
        s.write_all(
            b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz\
              GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let bodies: Vec<Vec<u8>> = (0..3)
            .map(|_| read_reply(&mut s, &mut buf, false).body)
            .collect();
        assert_eq!(bodies, [&b"GET /a  "[..], b"POST /b  xyz", b"GET /c  "]);
        assert!(is_closed(&mut s));
        // Two in one write, the connection then stays open.
        let mut s = connect(server.local_addr());
        s.write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_reply(&mut s, &mut buf, false).body, b"GET /1  ");
        assert_eq!(read_reply(&mut s, &mut buf, false).body, b"GET /2  ");
        assert_eq!(get_on(&mut s, &mut buf, "/3", "").status, 200);
    }

    #[test]
    fn idle_connections_hold_no_worker_and_are_closed_on_shutdown() {
        let limits = Limits {
            workers: 1,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let mut idle = Vec::new();
        for _ in 0..3 {
            let (mut s, mut buf) = (connect(addr), Vec::new());
            assert_eq!(get_on(&mut s, &mut buf, "/", "").status, 200);
            idle.push(s);
        }
        let started = Instant::now();
        assert_eq!(
            request(addr, "GET", "/", &[], b"", T, 1024).unwrap().status,
            200
        );
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        server.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        for mut s in idle {
            assert!(is_closed(&mut s));
        }
    }

    #[test]
    fn per_client_and_total_connection_limits_answer_503() {
        let limits = Limits {
            max_per_client: 2,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut s, mut buf) = (connect(addr), Vec::new());
            assert_eq!(get_on(&mut s, &mut buf, "/", "").status, 200);
            held.push(s);
        }
        assert_eq!(status(&raw(addr, b"GET / HTTP/1.1\r\n\r\n")), 503);
        drop(held.pop()); // its slot comes back once the server sees the close
        let deadline = Instant::now() + T;
        loop {
            let answer = status(&raw(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
            if answer == 200 {
                break;
            }
            assert!(answer == 503 && Instant::now() < deadline, "{answer}");
            thread::sleep(Duration::from_millis(20));
        }
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let server = start(limits, echo);
        let (mut s, mut buf) = (connect(server.local_addr()), Vec::new());
        assert_eq!(get_on(&mut s, &mut buf, "/", "").status, 200);
        let busy = request(server.local_addr(), "GET", "/", &[], b"", T, 1024).unwrap();
        assert_eq!(busy.status, 503);
    }

    #[test]
    fn tls_round_trip_with_any_certificate_and_pins() {
        let id = tls::test_identity();
        let server = start_tls(Limits::default(), echo, &id);
        let addr = server.local_addr();
        let any = get_tls(addr, Verify::AnyCertificate).unwrap();
        assert_eq!((any.status, any.body.as_slice()), (200, &b"GET /t q "[..]));
        let post = request_tls(
            addr,
            "127.0.0.1",
            Verify::AnyCertificate,
            "POST",
            "/p",
            &[("X-Test", "v")],
            b"secret",
            T,
            1024,
        )
        .unwrap();
        assert_eq!(
            (post.body.as_slice(), post.header("x-echo")),
            (&b"POST /p  secret"[..], Some("v"))
        );
        let fp = tls::fingerprint(&id);
        assert_eq!(
            get_tls(addr, Verify::Pinned(fp.clone())).unwrap().status,
            200
        );
        let loose = fp.replace(':', "").to_lowercase();
        assert_eq!(get_tls(addr, Verify::Pinned(loose)).unwrap().status, 200);
        let wrong = tls::fingerprint(&tls::test_identity());
        let err = get_tls(addr, Verify::Pinned(wrong.clone())).unwrap_err();
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "TLS with {addr} failed: invalid peer certificate: certificate SHA-256 \
                 fingerprint {fp} does not match the pinned fingerprint {wrong}"
            )
        );
        let bad = get_tls(addr, Verify::Pinned("12:34".into())).unwrap_err();
        assert!(matches!(bad, ClientError::InvalidRequest { .. }), "{bad}");
        assert_eq!(get_tls(addr, Verify::AnyCertificate).unwrap().status, 200);
        server.shutdown();
    }

    #[test]
    fn tls_connection_is_kept_alive_across_requests() {
        let id = tls::test_identity();
        let server = start_tls(Limits::default(), echo, &id);
        let name = "localhost".try_into().unwrap();
        let conn =
            rustls::ClientConnection::new(Arc::new(client_config(None).unwrap()), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, connect(server.local_addr()));
        let mut buf = Vec::new();
        for (i, pause) in [0, 50, 0].into_iter().enumerate() {
            thread::sleep(Duration::from_millis(pause));
            let req = format!("GET /{i} HTTP/1.1\r\n\r\nGET /{i}b HTTP/1.1\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            for suffix in ["", "b"] {
                let reply = read_reply(&mut s, &mut buf, false);
                assert_eq!(reply.body, format!("GET /{i}{suffix}  ").as_bytes());
                assert_eq!(reply.header("connection"), Some("keep-alive"));
            }
        }
        s.write_all(b"GET /end HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).header("connection"),
            Some("close")
        );
        assert!(is_closed(&mut s)); // close_notify: a clean TLS end of stream
    }

    #[test]
    fn wrong_protocol_on_either_port_is_refused_and_others_still_served() {
        let id = tls::test_identity();
        let secure = start_tls(Limits::default(), echo, &id);
        let answer = raw(secure.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status(&answer), 400, "{answer}");
        assert!(answer.ends_with(NEEDS_TLS), "{answer}");
        let plain_client = request(secure.local_addr(), "GET", "/", &[], b"", T, 1024).unwrap();
        assert_eq!(plain_client.status, 400);
        assert_eq!(
            get_tls(secure.local_addr(), Verify::AnyCertificate)
                .unwrap()
                .status,
            200
        );

        let plain = start(Limits::default(), echo);
        let name = "localhost".try_into().unwrap();
        let config = Arc::new(client_config(None).unwrap());
        let mut hello = Vec::new();
        rustls::ClientConnection::new(config, name)
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        assert_eq!(hello[0], TLS_HANDSHAKE);
        assert_eq!(status(&raw(plain.local_addr(), &hello)), 400);
        let err = get_tls(plain.local_addr(), Verify::AnyCertificate).unwrap_err();
        assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("plain HTTP"), "{err}");
        assert_eq!(
            request(plain.local_addr(), "GET", "/", &[], b"", T, 1024)
                .unwrap()
                .status,
            200
        );
        // A client that connects and never finishes its handshake is cut at the deadline.
        let quick = start_tls(
            Limits {
                request_timeout: Duration::from_millis(200),
                ..Limits::default()
            },
            echo,
            &id,
        );
        let mut stalled = connect(quick.local_addr());
        stalled.write_all(&hello[..10]).unwrap();
        let started = Instant::now();
        assert!(is_closed(&mut stalled));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            get_tls(quick.local_addr(), Verify::AnyCertificate)
                .unwrap()
                .status,
            200
        );
    }

    /// A file of `len` bytes whose content depends on the position.
    fn patterned_file(tag: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let path = std::env::temp_dir().join(format!("hamon-stream-{tag}-{}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    #[test]
    fn a_file_body_streams_to_a_streaming_client_over_tls_and_plain() {
        use crate::web::client::Session;
        let (path, data) = patterned_file("ok", 3 * 1024 * 1024 + 17);
        let handler = {
            let path = path.clone();
            move |_: &Request| {
                let f = std::fs::File::open(&path).unwrap();
                let len = f.metadata().unwrap().len();
                Response::file(200, "application/octet-stream", f, len)
            }
        };
        let id = tls::test_identity();
        let tls_server = start_tls(Limits::default(), handler.clone(), &id);
        let plain = start(Limits::default(), handler);
        for (addr, tls) in [
            (
                tls_server.local_addr(),
                Some(("localhost", Verify::AnyCertificate)),
            ),
            (plain.local_addr(), None),
        ] {
            let mut session = Session::new(addr, tls, T).unwrap();
            let mut r = session.stream("GET", "/f", &[], b"").unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body.remaining(), data.len() as u64);
            let mut got = Vec::new();
            r.body.read_to_end(&mut got).unwrap();
            assert!(got == data, "streamed body differs ({} bytes)", got.len());
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_while_sent_is_an_error_for_the_client_not_a_short_body() {
        use crate::web::client::Session;
        let (path, _) = patterned_file("short", 200_000);
        let handler = {
            let path = path.clone();
            move |_: &Request| {
                let f = std::fs::File::open(&path).unwrap();
                // Announce more than the file holds, as if it was truncated meanwhile.
                Response::file(200, "application/octet-stream", f, 300_000)
            }
        };
        let server = start(Limits::default(), handler);
        let mut session = Session::new(server.local_addr(), None, T).unwrap();
        let mut r = session.stream("GET", "/f", &[], b"").unwrap();
        let mut got = Vec::new();
        let err = r.body.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(got.len(), 200_000);
        std::fs::remove_file(&path).unwrap();
    }

    /// Answers with the client's port, so a test can tell connections apart.
    fn whose_port(req: &Request) -> Response {
        Response::text(200, &req.peer.port().to_string())
    }

    fn port_via(session: &mut crate::web::client::Session) -> String {
        let mut r = session.stream("GET", "/p", &[], b"").unwrap();
        let mut body = String::new();
        r.body.read_to_string(&mut body).unwrap();
        body
    }

    #[test]
    fn a_session_keeps_one_connection_for_many_requests_over_tls() {
        use crate::web::client::Session;
        let id = tls::test_identity();
        let server = start_tls(Limits::default(), whose_port, &id);
        let tls = Some(("localhost", Verify::AnyCertificate));
        let mut session = Session::new(server.local_addr(), tls, T).unwrap();
        let ports: Vec<String> = (0..5).map(|_| port_via(&mut session)).collect();
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_session_reconnects_when_the_server_closes_the_connection() {
        use crate::web::client::Session;
        // The server closes after every request, and an idle one after 100 ms.
        let limits = Limits {
            max_requests_per_connection: 1,
            ..Limits::default()
        };
        let server = start(limits, whose_port);
        let mut session = Session::new(server.local_addr(), None, T).unwrap();
        let (a, b) = (port_via(&mut session), port_via(&mut session));
        assert_ne!(a, b, "a closed connection was used again");
        let idle = Limits {
            idle_timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let server = start(idle, whose_port);
        let mut session = Session::new(server.local_addr(), None, T).unwrap();
        let first = port_via(&mut session);
        thread::sleep(Duration::from_millis(400)); // the server drops the idle connection
        let second = port_via(&mut session);
        assert_ne!(first, second);
        assert_eq!(port_via(&mut session), second, "the new connection is kept");
    }

    #[test]
    fn a_file_goes_out_only_with_a_status_that_has_a_body() {
        let (path, _) = patterned_file("204", 10);
        let file = |status| {
            let f = std::fs::File::open(&path).unwrap();
            Response::file(status, "application/octet-stream", f, 10)
        };
        let no_content = file(204);
        assert!(no_content.file_body().is_none());
        let head = String::from_utf8(no_content.to_bytes(false, true)).unwrap();
        assert!(head.contains("Content-Length: 0\r\n"), "{head}");
        let ok = file(200);
        assert_eq!(ok.file_body().map(|f| f.len), Some(10));
        let head = String::from_utf8(ok.to_bytes(false, true)).unwrap();
        assert!(head.contains("Content-Length: 10\r\n"), "{head}");
        std::fs::remove_file(&path).unwrap();
    }
}
