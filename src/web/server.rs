//! Bounded HTTP/1.1 server, plain or TLS, with persistent connections, built so that a
//! flood of slow or idle clients cannot silence it.
//!
//! One poller thread owns every connection that is not being answered. With poll(2) and
//! non-blocking sockets it accepts, tells TLS from plain HTTP, runs TLS handshakes and reads
//! requests, for all of them at once. A worker gets a connection only with a complete request
//! (head and body) in hand, answers it (blocking, by a deadline), and gives the connection
//! back for the next request. So a client that connects and sends nothing, or stalls halfway
//! through a handshake or a request, costs a file descriptor and a few bytes, never a worker.
//!
//! Limits: at most `max_connections` open in all and `max_per_client` per client (an IPv4
//! address or an IPv6 /64). When the server is full, a newcomer may take the place of a
//! waiting connection of a client that holds far more, or of one that has waited a second
//! without finishing a request ([`evict`]); otherwise it gets 503. One client address can be
//! reserved ([`Server::reserved`], the registered peer): it has its own workers and queue, is
//! held only to the per-client limit, and is never evicted.
//!
//! Threads: the poller, `workers` and `reserved_workers`, no others.

use super::client::{deadline_after, is_timeout, Wire};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
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
/// Longest the poller sleeps without looking at the stop flag.
const POLL_MAX: Duration = Duration::from_secs(1);
/// Complete requests from the reserved client that may wait for a reserved worker.
const RESERVED_QUEUE: usize = 64;
/// Most connections accepted in one turn of the poller.
const ACCEPT_BATCH: usize = 1024;
/// Evictions made for clients that already hold connections, in one turn of the poller.
const EVICTIONS_PER_TURN: usize = 32;
/// The listen backlog (the kernel caps it at `net.core.somaxconn`). A flood of connects
/// must not fill the accept queue between two turns of the poller: a full queue drops the
/// peer's SYN too, and its retransmission comes only a second later.
const BACKLOG: i32 = 4096;

/// Resource limits for one [`Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted, in bytes; more gets 413.
    pub max_body_bytes: usize,
    /// Total time to receive one request: for a new connection counted from its accept (the
    /// TLS handshake included), for a kept-alive one from the request's first byte; sending
    /// the response has as long.
    pub request_timeout: Duration,
    /// Number of worker threads (at least one is started).
    pub workers: usize,
    /// Complete requests that may wait for a worker (capped at 65536); beyond that they get
    /// 503. Connections still in their handshake or request never wait here.
    pub queue: usize,
    /// Worker threads kept for the reserved client ([`Server::reserved`]), at least one.
    pub reserved_workers: usize,
    /// Most request bytes buffered for connections whose request is incomplete; beyond it
    /// they are not read (so their deadline runs) until some are consumed. The reserved
    /// client is not held to it.
    pub max_buffered_bytes: usize,
    /// How long a connection may wait for its next request (or the rest of it) before a
    /// newcomer may take its place when the server is full, whoever holds it.
    pub evict_after: Duration,
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
            reserved_workers: 2,
            max_buffered_bytes: 32 << 20,
            evict_after: Duration::from_secs(1),
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
    /// Byte ranges `(offset, length)` sent one after another (`len` is their sum); empty:
    /// the file from its current position.
    pub ranges: Vec<(u64, u64)>,
}

impl PartialEq for FileBody {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.len == other.len && self.ranges == other.ranges
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
            ranges: Vec::new(),
        });
        r
    }

    /// Byte ranges of a file, one after another, streamed from disk.
    pub fn file_ranges(
        status: u16,
        content_type: &str,
        file: std::fs::File,
        ranges: Vec<(u64, u64)>,
    ) -> Self {
        let mut r = Self::new(status, content_type, Vec::new());
        let len = ranges.iter().map(|(_, l)| *l).sum();
        r.file = Some(FileBody {
            file: Arc::new(file),
            len,
            ranges,
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
    poller: Option<JoinHandle<()>>,
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

/// The one client address served by the reserved workers, outside the total connection
/// limit and never evicted: the registered peer, whose probe and peer API calls must get
/// through while strangers flood the port. Shared with whoever learns the peer's address.
#[derive(Debug, Clone, Default)]
pub struct Reserved(Arc<Mutex<Option<IpAddr>>>);

impl Reserved {
    /// Reserves capacity for `ip` (or for nobody).
    pub fn set(&self, ip: Option<IpAddr>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = ip.map(|ip| ip.to_canonical());
    }

    fn is(&self, ip: IpAddr) -> bool {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) == Some(ip.to_canonical())
    }
}

impl Server {
    /// Binds `addr` for plain HTTP, then starts the poller, `limits.workers` workers and
    /// `limits.reserved_workers` reserved workers.
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
        let listener = listen(addr)?;
        let addr = listener.local_addr()?;
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (park_tx, park_rx) = unbounded::<Conn>(); // bounded by the connection limits
        let shared = Arc::new(Shared {
            limits,
            handler,
            tls,
            stop: AtomicBool::new(false),
            counts: Arc::default(),
            park_tx,
            wake_tx,
            reserved: Reserved::default(),
        });
        let mut server = Server {
            addr,
            shared,
            poller: None,
            workers: Vec::new(),
        };
        let (tx, rx) = bounded::<Conn>(limits.queue.clamp(1, MAX_QUEUE));
        let (reserved_tx, reserved_rx) = bounded::<Conn>(RESERVED_QUEUE);
        let pools = [
            ("http-worker", rx, limits.workers.max(1)),
            ("http-peer", reserved_rx, limits.reserved_workers.max(1)),
        ];
        for (name, rx, count) in pools {
            for i in 0..count {
                let (rx, shared) = (rx.clone(), Arc::clone(&server.shared));
                match spawn(format!("{name}-{i}"), move || worker_loop(&rx, &shared)) {
                    Ok(handle) => server.workers.push(handle),
                    Err(e) => {
                        drop((tx, reserved_tx)); // the workers started see closed queues
                        server.abort();
                        return Err(e);
                    }
                }
            }
        }
        let queues = Queues {
            general: tx,
            reserved: reserved_tx,
        };
        let shared = Arc::clone(&server.shared);
        match spawn("http-poll".to_string(), move || {
            poll_loop(&listener, &wake_rx, &park_rx, &queues, &shared);
        }) {
            Ok(handle) => {
                server.poller = Some(handle);
                Ok(server)
            }
            Err(e) => {
                server.abort(); // the failed closure owned the queues
                Err(e)
            }
        }
    }

    /// Stops and joins what was started.
    fn abort(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(handle) = self.poller.take() {
            let _ = handle.join();
        }
        join_all(std::mem::take(&mut self.workers));
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle that names the client served by the reserved workers.
    pub fn reserved(&self) -> Reserved {
        self.shared.reserved.clone()
    }

    /// Stops accepting, closes every connection not being served, answers complete requests
    /// still queued with 503 (a TLS port just closes them), finishes in-flight requests
    /// (answering them with `Connection: close`) and joins all threads (a handler that never
    /// returns blocks this).
    pub fn shutdown(mut self) {
        self.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.poller.is_some() {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.wake();
        }
    }
}

/// A non-blocking listener on `addr` with [`BACKLOG`] (std's `bind` gives 128).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
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
    /// Kept-alive connections going back from the workers to the poller.
    park_tx: Sender<Conn>,
    /// Written to (one byte, never blocking) to wake the poller.
    wake_tx: UnixStream,
    reserved: Reserved,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]); // a full pipe means a wake-up is pending anyway
    }

    /// Hands a kept-alive connection back to the poller (if it is gone, closes it).
    fn park(&self, conn: Conn) {
        if self.park_tx.send(conn).is_ok() {
            self.wake();
        }
    }
}

/// The queues from the poller to the two worker pools.
struct Queues {
    general: Sender<Conn>,
    reserved: Sender<Conn>,
}

/// Open connections: in all (but the reserved client's, which are outside that limit) and
/// per client (see [`client_key`]).
#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Counts {
    fn of(&self, key: IpAddr) -> usize {
        self.per_client.get(&key).copied().unwrap_or(0)
    }
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Client,
    Total,
}

/// One admitted connection's place in [`Counts`]; given back when dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    key: IpAddr,
    /// Counted in `Counts::open` (not the reserved client's).
    in_total: bool,
}

impl Slot {
    /// A place for a connection from client `key`, unless a limit is reached; the reserved
    /// client is held only to the per-client limit.
    fn take(
        counts: &Arc<Mutex<Counts>>,
        key: IpAddr,
        limits: &Limits,
        reserved: bool,
    ) -> Result<Slot, Full> {
        let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_client = c.of(key);
        if from_client >= limits.max_per_client.max(1) {
            return Err(Full::Client);
        }
        if !reserved && c.open >= limits.max_connections.max(1) {
            return Err(Full::Total);
        }
        if !reserved {
            c.open += 1;
        }
        c.per_client.insert(key, from_client + 1);
        Ok(Slot {
            counts: Arc::clone(counts),
            key,
            in_total: !reserved,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if self.in_total {
            c.open = c.open.saturating_sub(1);
        }
        let left = match c.per_client.get_mut(&self.key) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            c.per_client.remove(&self.key);
        }
    }
}

/// What limits count as one client: an IPv4 address, or an IPv6 /64 (one host's usual share).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// A connection. The poller holds it while it waits for bytes; a worker holds it while it
/// answers one complete request.
struct Conn {
    wire: Wire,
    peer: SocketAddr,
    /// Bytes received and not yet consumed: the next request, complete when a worker gets it.
    carry: Vec<u8>,
    /// Requests answered so far.
    served: usize,
    /// Since when it waits for its next request: its accept, or its return to the poller.
    since: Instant,
    /// From the reserved client: reserved workers, never evicted.
    reserved: bool,
    slot: Slot,
}

/// Where a connection held by the poller stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// On a TLS port, before the first byte says TLS or plain HTTP.
    Sniff,
    /// In the TLS handshake.
    Handshake,
    /// Waiting for (the rest of) a request.
    Read,
    /// Answered and half-closed; unread input is drained so the close sends no reset.
    Linger,
}

/// A connection held by the poller, and when it must have moved on.
struct Entry {
    conn: Conn,
    stage: Stage,
    until: Instant,
}

/// What to do with an entry after looking at it.
enum Next {
    Keep,
    Dispatch,
    Close,
    Answer(Response),
}

/// The poller: accepts, sniffs TLS, runs handshakes and reads requests for every connection
/// at once with poll(2), without blocking; a worker gets a connection only with a complete
/// request. Deadlines: a new connection has `request_timeout` to deliver its first request,
/// a kept-alive one `idle_timeout` to start the next and `request_timeout` to finish it.
fn poll_loop(
    listener: &TcpListener,
    wake_rx: &UnixStream,
    park_rx: &Receiver<Conn>,
    queues: &Queues,
    shared: &Shared,
) {
    let limits = &shared.limits;
    let mut entries: Vec<Entry> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut accept_after = Instant::now();
    while !shared.stopping() {
        let now = Instant::now();
        for mut conn in park_rx.try_iter() {
            if conn.wire.socket().set_nonblocking(true).is_err() {
                continue;
            }
            conn.since = now;
            let mut entry = Entry {
                conn,
                stage: Stage::Read,
                until: now + limits.idle_timeout,
            };
            // Pipelined bytes may already be here (in `carry` or inside TLS).
            let next = advance(&mut entry, shared, now);
            settle(entry, next, &mut entries, queues, now);
        }
        let mut buffered: usize = entries.iter().map(|e| e.conn.carry.len()).sum();
        let may_read = buffered < limits.max_buffered_bytes;
        fds.clear();
        fds.push(readable(wake_rx.as_raw_fd()));
        let accepting = accept_after <= now;
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: if accepting { libc::POLLIN } else { 0 },
            revents: 0,
        });
        fds.extend(entries.iter().map(|e| {
            let reads = may_read || e.conn.reserved || e.stage != Stage::Read;
            let mut events = if reads { libc::POLLIN } else { 0 };
            // Not while lingering: the write side is shut, and POLLOUT would fire for ever.
            if e.conn.wire.wants_write() && e.stage != Stage::Linger {
                events |= libc::POLLOUT;
            }
            libc::pollfd {
                fd: e.conn.wire.socket().as_raw_fd(),
                events,
                revents: 0,
            }
        }));
        let mut wait = entries
            .iter()
            .map(|e| e.until.saturating_duration_since(now))
            .fold(POLL_MAX, Duration::min);
        if !accepting {
            wait = wait.min(accept_after.saturating_duration_since(now));
        }
        let wait_ms = i32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(1000);
        if !poll(&mut fds, wait_ms) {
            thread::sleep(Duration::from_millis(10)); // unexpected: do not spin
        }
        if fds[0].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&*wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        let now = Instant::now();
        for (mut entry, fd) in std::mem::take(&mut entries).into_iter().zip(&fds[2..]) {
            // The budget is spent as this turn reads, not only checked before it.
            let over = !entry.conn.reserved
                && entry.stage == Stage::Read
                && buffered >= limits.max_buffered_bytes;
            let next = if fd.revents & libc::POLLNVAL != 0 {
                Next::Close
            } else if fd.revents != 0 && !over {
                let before = entry.conn.carry.len();
                let next = advance(&mut entry, shared, now);
                buffered += entry.conn.carry.len().saturating_sub(before);
                next
            } else if entry.until <= now {
                expire(&entry)
            } else {
                Next::Keep
            };
            settle(entry, next, &mut entries, queues, now);
        }
        if fds[1].revents != 0 && accept_new(listener, &mut entries, shared, now).is_err() {
            // e.g. out of file descriptors: back off instead of spinning
            accept_after = now + Duration::from_millis(10);
        }
    }
    for entry in entries {
        close(entry.conn);
    }
    for conn in park_rx.try_iter() {
        close(conn);
    }
}

/// Applies `next` to `entry`: keeps it in `entries`, queues it for a worker, answers it
/// (then lingers) or closes it.
fn settle(mut entry: Entry, next: Next, entries: &mut Vec<Entry>, queues: &Queues, now: Instant) {
    let answer = match next {
        Next::Keep if entry.until > now => return entries.push(entry),
        Next::Keep => match expire(&entry) {
            Next::Answer(r) => r,
            _ => return close(entry.conn),
        },
        Next::Close => return close(entry.conn),
        Next::Answer(r) => r,
        Next::Dispatch => {
            let queue = if entry.conn.reserved {
                &queues.reserved
            } else {
                &queues.general
            };
            match queue.try_send(entry.conn) {
                Ok(()) => return,
                Err(TrySendError::Full(conn) | TrySendError::Disconnected(conn)) => {
                    entry.conn = conn;
                    error_response(503)
                }
            }
        }
    };
    if entry.stage == Stage::Linger {
        return close(entry.conn);
    }
    entry
        .conn
        .wire
        .send_now(&answer.to_bytes(false, false), true);
    let _ = entry.conn.wire.socket().shutdown(Shutdown::Write);
    entry.stage = Stage::Linger;
    entry.until = now + LINGER;
    entries.push(entry);
}

/// What a connection whose deadline passed gets: 408 if a request had started, else a close.
fn expire(entry: &Entry) -> Next {
    if entry.stage == Stage::Read && !entry.conn.carry.is_empty() {
        Next::Answer(error_response(408))
    } else {
        Next::Close
    }
}

/// Moves a connection on with whatever arrived, never blocking.
fn advance(entry: &mut Entry, shared: &Shared, now: Instant) -> Next {
    let (limits, tls) = (&shared.limits, shared.tls.as_ref());
    let conn = &mut entry.conn;
    match entry.stage {
        Stage::Linger => return drain(conn.wire.socket()),
        Stage::Sniff => {
            let mut byte = [0u8; 1];
            match conn.wire.socket().peek(&mut byte) {
                Ok(1) if byte[0] == TLS_HANDSHAKE => {}
                Ok(1) => return Next::Answer(Response::text(400, NEEDS_TLS)),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => return Next::Keep,
                _ => return Next::Close,
            }
            let tls = tls.map(|config| rustls::ServerConnection::new(Arc::clone(config)));
            let Some(Ok(tls)) = tls else {
                return Next::Close;
            };
            conn.wire.start_tls(tls.into());
            entry.stage = Stage::Handshake;
        }
        Stage::Handshake | Stage::Read => {}
    }
    let was_empty = conn.carry.is_empty();
    let mut cap = limits.max_header_bytes + 1;
    loop {
        let pumped = match conn.wire.pump(&mut conn.carry, cap) {
            Ok(p) => p,
            Err(_) => return Next::Close, // a TLS failure's alert is already offered
        };
        if pumped.handshaking {
            return if pumped.eof { Next::Close } else { Next::Keep };
        }
        entry.stage = Stage::Read;
        if was_empty && !conn.carry.is_empty() && conn.served > 0 {
            entry.until = now + limits.request_timeout; // the next request has begun
        }
        match check(&conn.carry, conn.peer, limits) {
            Check::Complete => return Next::Dispatch,
            Check::Bad(status) => return Next::Answer(error_response(status)),
            Check::Partial(need) if need > cap && !pumped.eof => cap = need, // read on
            Check::Partial(_) if pumped.eof => {
                return if conn.carry.is_empty() {
                    Next::Close
                } else {
                    Next::Answer(error_response(400)) // stopped sending mid-request
                };
            }
            Check::Partial(_) => return Next::Keep,
        }
    }
}

/// How far the bytes received go toward a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A whole request: head and `Content-Length` bytes of body.
    Complete,
    /// Not yet; this many bytes are needed at least (or one more than the head limit while
    /// the head is incomplete).
    Partial(usize),
    /// Never: answer with this status and close.
    Bad(u16),
}

/// Whether `carry` holds a whole request under `limits`: what the poller decides before a
/// worker sees anything.
pub fn check(carry: &[u8], peer: SocketAddr, limits: &Limits) -> Check {
    let (head_len, req) = match parse_request_head(carry, peer) {
        Ok(Some((len, req, _))) => (len, req),
        Ok(None) if carry.len() > limits.max_header_bytes => return Check::Bad(431),
        Ok(None) => return Check::Partial(limits.max_header_bytes + 1),
        Err(status) => return Check::Bad(status.unwrap_or(400)),
    };
    if head_len > limits.max_header_bytes {
        return Check::Bad(431);
    }
    if req.header("transfer-encoding").is_some() {
        return Check::Bad(501);
    }
    let Some(len) = content_length(&req.headers) else {
        return Check::Bad(400);
    };
    if len > limits.max_body_bytes {
        return Check::Bad(413);
    }
    if carry.len() >= head_len + len {
        Check::Complete
    } else {
        Check::Partial(head_len + len)
    }
}

/// Discards what a lingering connection sends; closes at its end.
fn drain(stream: &TcpStream) -> Next {
    let (mut sink, mut stream) = ([0u8; 4096], stream);
    for _ in 0..LINGER_BYTES / sink.len() {
        match stream.read(&mut sink) {
            Ok(0) => return Next::Close,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    Next::Close // more than a rejected request should carry
}

fn close(mut conn: Conn) {
    conn.wire.close_notify_now();
}

/// Accepts what the listener has. When the total limit is reached, a newcomer may take the
/// place of a waiting connection (see [`evict`]); otherwise it gets 503. `Err` when accept
/// failed for another reason than an empty backlog.
fn accept_new(
    listener: &TcpListener,
    entries: &mut Vec<Entry>,
    shared: &Shared,
    now: Instant,
) -> io::Result<()> {
    let limits = &shared.limits;
    let mut evictions = EVICTIONS_PER_TURN;
    for _ in 0..ACCEPT_BATCH {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let reserved = shared.reserved.is(peer.ip());
        // The reserved client counts alone, not with the rest of its /64.
        let key = if reserved {
            peer.ip().to_canonical()
        } else {
            client_key(peer.ip())
        };
        let mut slot = Slot::take(&shared.counts, key, limits, reserved);
        if slot.as_ref().err() == Some(&Full::Total) {
            // A client that holds nothing yet always gets a try; one that already holds
            // connections only while this turn's evictions last (a scan each: a churning
            // flood must not make the accept loop the bottleneck for everyone else).
            let holds = shared.counts.lock().map(|c| c.of(key) > 0).unwrap_or(true);
            if (!holds || evictions > 0) && evict(entries, key, shared, now) {
                evictions = evictions.saturating_sub(usize::from(holds));
                slot = Slot::take(&shared.counts, key, limits, reserved);
            }
        }
        let Ok(slot) = slot else {
            reject_busy(&stream, shared.tls.is_some());
            continue;
        };
        entries.push(Entry {
            conn: Conn {
                wire: Wire::plain(stream),
                peer,
                carry: Vec::new(),
                served: 0,
                since: now,
                reserved,
                slot,
            },
            stage: if shared.tls.is_some() {
                Stage::Sniff
            } else {
                Stage::Read
            },
            until: now + limits.request_timeout,
        });
    }
    Ok(())
}

/// Closes one waiting connection to make room for a newcomer from client `key`. Fair game:
/// a connection already lingering; one of a client holding at least two more connections
/// than the newcomer's; or one that has waited `evict_after` for its next request (or for
/// the rest of it). Among those: lingering first, then the client holding the most, then
/// one that never finished a request, the longest waiting first. Connections being served
/// and the reserved client's are never evicted. True if one was closed.
fn evict(entries: &mut Vec<Entry>, key: IpAddr, shared: &Shared, now: Instant) -> bool {
    let victim = {
        let counts = shared.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.of(key);
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                !e.conn.reserved
                    && (e.stage == Stage::Linger
                        || counts.of(e.conn.slot.key) > mine + 1
                        || now.duration_since(e.conn.since) >= shared.limits.evict_after)
            })
            .max_by_key(|(_, e)| {
                (
                    e.stage == Stage::Linger,
                    counts.of(e.conn.slot.key),
                    e.conn.served == 0,
                    std::cmp::Reverse(e.conn.since),
                )
            })
            .map(|(i, _)| i)
    }; // the lock is released before the victim's slot is given back
    match victim {
        Some(i) => {
            close(entries.swap_remove(i).conn);
            true
        }
        None => false,
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

fn worker_loop(rx: &Receiver<Conn>, shared: &Shared) {
    for mut conn in rx.iter() {
        if shared.stopping() {
            conn.wire.close_notify_now();
            reject_busy(conn.wire.socket(), conn.wire.is_tls());
            continue;
        }
        if conn.wire.socket().set_nonblocking(false).is_ok() {
            serve(conn, shared);
        }
    }
}

/// Answers the complete request at the front of `conn.carry`, then closes the connection or
/// hands it back to the poller for the next one.
fn serve(mut conn: Conn, shared: &Shared) {
    let limits = &shared.limits;
    let deadline = deadline_after(limits.request_timeout);
    let (req, wants_keep_alive) = match read_request(&mut conn, limits, deadline) {
        Ok(read) => read,
        Err(Some(status)) => {
            let answer = error_response(status).to_bytes(false, false);
            if conn.wire.write_all_by(&answer, deadline).is_ok() {
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
    shared.park(conn);
}

/// Sends `f.len` bytes of the file, each chunk within `timeout`; false when the file
/// ended early or the client stopped reading.
fn send_file(wire: &mut Wire, f: &FileBody, timeout: Duration) -> bool {
    if !f.ranges.is_empty() {
        return send_ranges(wire, f, timeout);
    }
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

fn send_ranges(wire: &mut Wire, f: &FileBody, timeout: Duration) -> bool {
    use std::os::unix::fs::FileExt;
    let mut chunk = vec![0u8; 256 * 1024];
    for &(mut at, len) in &f.ranges {
        let end = at.saturating_add(len);
        while at < end {
            let want = chunk
                .len()
                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
            let n = match f.file.read_at(&mut chunk[..want], at) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if wire
                .write_all_by(&chunk[..n], deadline_after(timeout))
                .is_err()
            {
                return false;
            }
            at += n as u64;
        }
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
    fn full_queue_gets_503_and_idle_connections_take_no_place_in_it() {
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
        let idle: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
        let mut queued = connect(addr); // a complete request fills the queue
        queued
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(100)); // let the poller queue it
        assert_eq!(call().unwrap(), 503);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        assert_eq!(first.join().unwrap().unwrap(), 200);
        let mut answer = String::new();
        queued.read_to_string(&mut answer).unwrap();
        assert_eq!(status(&answer), 200);
        for s in idle {
            let answer = raw_on(s, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
            assert_eq!(status(&answer), 200);
            release.send(()).unwrap();
        }
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

    /// A TCP connection to `addr` from the loopback address `from`.
    fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local = SocketAddr::from((from, 0));
        sock.bind(&local.into()).unwrap();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(T)).unwrap();
        s
    }

    /// The first bytes of a genuine ClientHello.
    fn client_hello() -> Vec<u8> {
        let config = Arc::new(client_config(None).unwrap());
        let mut hello = Vec::new();
        rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        hello
    }

    #[test]
    fn silent_connections_and_stalled_handshakes_hold_no_worker() {
        let id = tls::test_identity();
        let limits = Limits {
            workers: 1,
            reserved_workers: 1,
            ..Limits::default()
        };
        let server = start_tls(limits, echo, &id);
        let addr = server.local_addr();
        let hello = client_hello();
        let mut held = Vec::new();
        for i in 0..120u8 {
            let mut s = connect_from([127, 0, 0, 10 + i % 8], addr); // 15 from each address
            match i % 3 {
                0 => {}                                               // says nothing
                1 => s.write_all(&hello[..hello.len() / 2]).unwrap(), // half a ClientHello
                _ => s.write_all(&hello).unwrap(), // a ClientHello, then never the Finished
            }
            held.push(s);
        }
        thread::sleep(Duration::from_millis(100)); // every one is with the server now
                                                   // Were any of them holding the single worker, this would wait for the 10 s deadline.
        let started = Instant::now();
        let answer = get_tls(addr, Verify::AnyCertificate).unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let plain = request(addr, "GET", "/", &[], b"", T, 1024).unwrap();
        assert_eq!(plain.status, 400, "plain HTTP still gets its answer");
    }

    #[test]
    fn a_full_server_makes_room_by_evicting_from_the_heaviest_client_only() {
        let limits = Limits {
            max_connections: 4,
            max_per_client: 10,
            evict_after: Duration::from_secs(60), // only the fairness rule here
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        // Client A holds every place with kept-alive connections that each finished a request.
        let mut a = Vec::new();
        for _ in 0..4 {
            let (mut s, mut buf) = (connect_from([127, 0, 0, 2], addr), Vec::new());
            assert_eq!(get_on(&mut s, &mut buf, "/", "").status, 200);
            a.push(s);
        }
        // A itself gets no more: it would only take its own place.
        let mut more = connect_from([127, 0, 0, 2], addr);
        assert_eq!(status(&raw_on_stream(&mut more)), 503);
        // B, holding nothing, takes one of A's places.
        let mut b = connect_from([127, 0, 0, 3], addr);
        assert_eq!(status(&raw_on_stream(&mut b)), 200);
        let closed = a
            .iter_mut()
            .map(|s| {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                is_closed(s)
            })
            .filter(|closed| *closed)
            .count();
        assert_eq!(closed, 1, "exactly one of A's connections made room");

        // Connections that wait for their next request too long lose their place, even
        // to a newcomer from their own address.
        let limits = Limits {
            max_connections: 3,
            evict_after: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = start(limits, echo);
        let addr = server.local_addr();
        let silent: Vec<TcpStream> = (0..3).map(|_| connect_from([127, 0, 0, 2], addr)).collect();
        thread::sleep(Duration::from_millis(500));
        let mut late = connect_from([127, 0, 0, 2], addr);
        assert_eq!(status(&raw_on_stream(&mut late)), 200);
        drop(silent);
    }

    #[test]
    fn the_reserved_client_is_served_while_every_worker_and_place_is_taken() {
        let (entered_tx, entered) = unbounded();
        let (release, release_rx) = unbounded::<()>();
        let handler = move |req: &Request| {
            if req.path == "/block" {
                let _ = entered_tx.send(());
                let _ = release_rx.recv_timeout(T);
            }
            Response::text(200, "done")
        };
        let limits = Limits {
            workers: 1,
            queue: 1,
            max_connections: 3,
            max_per_client: 3,
            ..Limits::default()
        };
        let server = start(limits, handler);
        let addr = server.local_addr();
        server.reserved().set(Some(IpAddr::from([127, 0, 0, 4])));
        let mut blocker = connect_from([127, 0, 0, 2], addr);
        blocker
            .write_all(b"GET /block HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        entered.recv_timeout(T).unwrap(); // the only general worker is stuck
        let mut queued = connect_from([127, 0, 0, 2], addr);
        queued
            .write_all(b"GET /q HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let _silent = connect_from([127, 0, 0, 2], addr); // every place taken
        thread::sleep(Duration::from_millis(100));
        let mut stranger = connect_from([127, 0, 0, 3], addr);
        assert_eq!(status(&raw_on_stream(&mut stranger)), 503);
        for _ in 0..3 {
            let mut peer = connect_from([127, 0, 0, 4], addr);
            assert_eq!(status(&raw_on_stream(&mut peer)), 200);
        }
        release.send(()).unwrap();
        let mut answer = String::new();
        blocker.read_to_string(&mut answer).unwrap();
        assert_eq!(status(&answer), 200);
    }

    /// Sends one `GET /` that closes the connection and returns the whole answer.
    fn raw_on_stream(s: &mut TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
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
