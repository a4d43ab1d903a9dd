//! Tiny blocking HTTP/1.1 client for peer calls and health probes, plain or over TLS:
//! one request per connection, one deadline for the whole exchange.

use super::tls::{format_fingerprint, parse_fingerprint, provider};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest response head accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;
/// Longest wait honoured; longer timeouts are clamped so deadlines cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Bytes read from the socket (or plaintext taken from TLS) per read.
const CHUNK: usize = 16 * 1024;

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
        /// What was under way: connecting, negotiating TLS, sending the request or
        /// reading the response.
        stage: &'static str,
    },
    /// The connection failed after it was established.
    #[error("request to {addr} failed while {stage}: {}", describe(.source))]
    Io {
        /// Peer address.
        addr: SocketAddr,
        /// What was under way: negotiating TLS, sending the request or reading the response.
        stage: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// TLS failed: the handshake was refused, the certificate did not match the pin,
    /// or the peer sent something that is not valid TLS.
    #[error("TLS with {addr} failed: {detail}")]
    Tls {
        /// Peer address.
        addr: SocketAddr,
        /// What rustls reported.
        detail: String,
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
    /// The method, target, a header, the TLS server name or the pinned fingerprint
    /// cannot be used; nothing was sent.
    #[error("invalid request to {addr}: {detail}")]
    InvalidRequest {
        /// Peer address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
}

/// How [`request_tls`] checks the server's certificate.
///
/// Neither variant consults certificate authorities, names or validity dates. That is safe
/// for hamon's peer API because every peer request and response is authenticated by an
/// HMAC under the pair's shared key: an impostor that completes the TLS handshake still
/// cannot forge or alter a message. TLS adds confidentiality (and, with a pin, peer
/// authentication at the TLS layer too). The handshake signature itself is always
/// verified, so the server must hold the private key of the certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Accept any certificate: the payload is authenticated by other means (HMAC),
    /// TLS only hides it from passive observers.
    AnyCertificate,
    /// Accept only a certificate with this SHA-256 fingerprint, written as
    /// [`crate::web::tls::fingerprint`] prints it (colons optional, case ignored).
    Pinned(String),
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
    Endpoint::new(addr).request(method, path_and_query, headers, body, timeout, max_body)
}

/// As [`request`], over TLS (1.2 or 1.3, ring provider): the handshake counts toward
/// `timeout`, and the server's certificate is checked as `verifier` says.
///
/// `server_name` is sent as SNI when it is a DNS name (an IP literal is allowed and sends
/// none); it is not checked against the certificate (see [`Verify`]).
#[allow(clippy::too_many_arguments)] // `request`'s parameters plus the two TLS ones
pub fn request_tls(
    addr: SocketAddr,
    server_name: &str,
    verifier: Verify,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<ClientResponse, ClientError> {
    Endpoint::new(addr).tls(server_name, verifier).request(
        method,
        path_and_query,
        headers,
        body,
        timeout,
        max_body,
    )
}

/// A server to call: its address, the local address to call from, and TLS.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    from: Option<IpAddr>,
    tls: Option<(String, Verify)>,
    /// A configuration of the caller's own (a CA to trust, a client certificate), used
    /// instead of the one `Verify` makes.
    config: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// Plain HTTP to `addr`, from whatever local address the kernel picks.
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            from: None,
            tls: None,
            config: None,
        }
    }

    /// Connects from `ip` (a peer recognises its partner by the address it calls from).
    pub fn from(mut self, ip: IpAddr) -> Endpoint {
        self.from = Some(ip);
        self
    }

    /// Over TLS, checking the certificate as `verifier` says; see [`request_tls`].
    pub fn tls(mut self, server_name: &str, verifier: Verify) -> Endpoint {
        self.tls = Some((server_name.to_string(), verifier));
        self
    }

    /// Over TLS with the caller's own configuration, which checks the certificate as it
    /// says (a CA of its own, the server's name) and may present a client certificate.
    pub fn tls_config(mut self, server_name: &str, config: Arc<rustls::ClientConfig>) -> Endpoint {
        self.tls = Some((server_name.to_string(), Verify::AnyCertificate));
        self.config = Some(config);
        self
    }

    /// As [`request`], to this endpoint.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
        max_body: usize,
    ) -> Result<ClientResponse, ClientError> {
        let tls = self.tls_setup()?;
        let call = Call {
            addr: self.addr,
            from: self.from,
            timeout,
            max_body,
        };
        call.run(tls, method, path_and_query, headers, body)
    }

    /// A [`Session`] with this endpoint.
    pub fn session(&self, timeout: Duration) -> Result<Session, ClientError> {
        Ok(Session {
            call: Call {
                addr: self.addr,
                from: self.from,
                timeout,
                max_body: 0,
            },
            tls: self.tls_setup()?,
            idle: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    fn tls_setup(&self) -> Result<Option<TlsSetup>, ClientError> {
        let Some((name, verifier)) = &self.tls else {
            return Ok(None);
        };
        match &self.config {
            Some(config) => {
                let server = ServerName::try_from(name.clone()).map_err(|_| {
                    ClientError::InvalidRequest {
                        addr: self.addr,
                        detail: format!("bad TLS server name {name:?}"),
                    }
                })?;
                Ok(Some((config.clone(), server)))
            }
            None => tls_setup(self.addr, name, verifier).map(Some),
        }
    }
}

/// A TLS client configuration and the server name to send.
type TlsSetup = (Arc<rustls::ClientConfig>, ServerName<'static>);

/// A response whose body is read as it arrives, for downloads too large to hold.
#[derive(Debug)]
pub struct StreamingResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received.
    pub headers: Vec<(String, String)>,
    /// Exactly `Content-Length` bytes; a connection that closes early is an error.
    pub body: BodyReader,
}

/// The body of a [`StreamingResponse`]; each read waits at most the call's timeout.
pub struct BodyReader {
    /// `None` once handed back to its [`Session`].
    wire: Option<Wire>,
    /// Bytes read off the wire and not yet handed out, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// Body bytes not yet handed out.
    left: u64,
    idle: Duration,
    /// Where the connection goes once the body is read, to be used again.
    home: Option<Arc<std::sync::Mutex<Option<Wire>>>>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("left", &self.left)
            .finish()
    }
}

impl BodyReader {
    /// Whole body read and nothing beyond it: the connection goes back to its
    /// session for the next request.
    fn release_if_done(&mut self) {
        if self.left == 0 && self.pos == self.buf.len() {
            if let (Some(home), Some(wire)) = (self.home.take(), self.wire.take()) {
                if let Ok(mut slot) = home.lock() {
                    *slot = Some(wire);
                }
            }
        }
    }

    /// Body bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            let Some(wire) = self.wire.as_mut() else {
                return Ok(0);
            };
            if wire.read_more(&mut self.buf, deadline_after(self.idle))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {} body bytes missing", self.left),
                ));
            }
        }
        let ready = &self.buf[self.pos..];
        let n = ready
            .len()
            .min(out.len())
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&ready[..n]);
        self.pos += n;
        self.left -= n as u64;
        self.release_if_done();
        Ok(n)
    }
}

/// Requests to one server over one connection kept alive between them (when
/// the server keeps it): a new connection, and TLS handshake, only when the
/// last one was closed or its answer's body was not read to the end.
pub struct Session {
    call: Call,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    idle: Arc<std::sync::Mutex<Option<Wire>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.call.addr)
            .finish()
    }
}

impl Session {
    /// A session with `addr`, over TLS when `tls` is given: each answer's head
    /// must come within `timeout`, and then every read of its body.
    pub fn new(
        addr: SocketAddr,
        tls: Option<(&str, Verify)>,
        timeout: Duration,
    ) -> Result<Session, ClientError> {
        let endpoint = Endpoint::new(addr);
        match tls {
            None => endpoint,
            Some((server_name, verifier)) => endpoint.tls(server_name, verifier),
        }
        .session(timeout)
    }

    /// Sends one request (on the kept connection when there is one) and
    /// returns the answer with its body left to be read as it arrives. Read
    /// the body to the end to keep the connection for the next request.
    pub fn stream(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<StreamingResponse, ClientError> {
        let out = self
            .call
            .head_and_body(method, path_and_query, headers, body, true)?;
        let kept = self.idle.lock().ok().and_then(|mut w| w.take());
        let answer = match kept {
            // The server may have closed the idle connection: when nothing at
            // all came back, the request was not served; send it afresh.
            Some(wire) => match self.call.exchange_on(wire, &out) {
                Err((_, true)) => None,
                other => Some(other),
            },
            None => None,
        };
        let answer = match answer {
            Some(a) => a,
            None => {
                let wire = self
                    .call
                    .connect(self.tls.clone(), deadline_after(self.call.timeout))?;
                self.call.exchange_on(wire, &out)
            }
        };
        let mut r = answer.map_err(|(e, _)| e)?;
        let closing = r.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
        });
        if !closing {
            r.body.home = Some(self.idle.clone());
            r.body.release_if_done(); // an empty body frees the connection at once
        }
        Ok(r)
    }
}

/// A TCP connection to `addr`, from local address `from` when given.
fn connect_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&addr.into(), timeout)?;
    Ok(sock.into())
}

/// The rustls configuration and server name for one TLS call.
fn tls_setup(
    addr: SocketAddr,
    server_name: &str,
    verifier: &Verify,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), ClientError> {
    let invalid = |detail: String| ClientError::InvalidRequest { addr, detail };
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| invalid(format!("bad TLS server name {server_name:?}")))?;
    let pin = match verifier {
        Verify::AnyCertificate => None,
        Verify::Pinned(text) => Some(parse_fingerprint(text).ok_or_else(|| {
            invalid(format!(
                "pinned fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits)"
            ))
        })?),
    };
    let config = shared_client_config(pin).map_err(|e| ClientError::Tls {
        addr,
        detail: e.to_string(),
    })?;
    Ok((config, name))
}

/// One client configuration per pin for the whole process, so that its session
/// cache lets later connections to the same server resume TLS (no certificate
/// exchange, no signature to verify): file sync makes one request per file.
fn shared_client_config(pin: Option<[u8; 32]>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    type Configs = std::collections::HashMap<Option<[u8; 32]>, Arc<rustls::ClientConfig>>;
    static CONFIGS: std::sync::OnceLock<std::sync::Mutex<Configs>> = std::sync::OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    let mut map = configs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = map.get(&pin) {
        return Ok(c.clone());
    }
    let c = Arc::new(client_config(pin)?);
    map.insert(pin, c.clone());
    Ok(c)
}

/// A client configuration (ring provider, TLS 1.2 and 1.3) whose certificate check is
/// [`Verify::Pinned`] to `pin`, or [`Verify::AnyCertificate`] without one.
/// The ring provider with TLS 1.2 and 1.3, for callers that build their own configuration
/// (`Endpoint::tls_config`).
pub fn tls_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()
}

pub(super) fn client_config(pin: Option<[u8; 32]>) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(CertVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// What every stage of one exchange needs for its errors.
struct Call {
    addr: SocketAddr,
    /// The local address to connect from; the kernel picks one when `None`.
    from: Option<IpAddr>,
    timeout: Duration,
    max_body: usize,
}

impl Call {
    fn run(
        &self,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<ClientResponse, ClientError> {
        let deadline = deadline_after(self.timeout);
        let out = self.head_and_body(method, path_and_query, headers, body, false)?;
        let mut wire = self.connect(tls, deadline)?;
        let head_only = method.eq_ignore_ascii_case("HEAD");
        if let Err(e) = wire.write_all_by(&out, deadline) {
            // The server may have answered early (e.g. 413) and closed: prefer its answer.
            return read_response(&mut wire, head_only, deadline, self.max_body)
                .map_err(|_| self.fail("sending the request", Fail::Io(e)));
        }
        read_response(&mut wire, head_only, deadline, self.max_body)
            .map_err(|f| self.fail("reading the response", f))
    }

    /// Sends `out` on `wire` and reads the response head; the body is left in
    /// the answer's reader. On failure, also whether nothing at all came back
    /// (a kept-alive connection the server had closed: safe to try again).
    fn exchange_on(
        &self,
        mut wire: Wire,
        out: &[u8],
    ) -> Result<StreamingResponse, (ClientError, bool)> {
        let deadline = deadline_after(self.timeout);
        let sent = wire.write_all_by(out, deadline);
        let (status, headers, buf) = match (read_head(&mut wire, deadline), sent) {
            (Ok(head), _) => head,
            (Err(_), Err(e)) => {
                return Err((self.fail("sending the request", Fail::Io(e)), true));
            }
            (Err(f), Ok(())) => {
                let silent = matches!(&f, Fail::Malformed(d) if d.starts_with("connection closed after 0 bytes"))
                    || matches!(&f, Fail::Io(e) if e.kind() == io::ErrorKind::ConnectionReset);
                return Err((self.fail("reading the response", f), silent));
            }
        };
        let left = match content_length(&headers).map_err(Fail::Malformed) {
            Ok(Some(n)) => n as u64,
            Ok(None) => {
                let detail = "a streamed response needs a Content-Length".to_string();
                return Err((
                    self.fail("reading the response", Fail::Malformed(detail)),
                    false,
                ));
            }
            Err(f) => return Err((self.fail("reading the response", f), false)),
        };
        Ok(StreamingResponse {
            status,
            headers,
            body: BodyReader {
                wire: Some(wire),
                buf,
                pos: 0,
                left,
                idle: self.timeout,
                home: None,
            },
        })
    }

    fn head_and_body(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let addr = self.addr;
        let mut out = build_head(
            method,
            path_and_query,
            headers,
            addr,
            body.len(),
            keep_alive,
        )
        .map_err(|detail| ClientError::InvalidRequest { addr, detail })?;
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Connects (and negotiates TLS) by `deadline`.
    fn connect(
        &self,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        deadline: Instant,
    ) -> Result<Wire, ClientError> {
        let (addr, timeout) = (self.addr, self.timeout);
        if timeout.is_zero() {
            return Err(self.timed_out("connecting"));
        }
        let stream = connect_from(self.from, addr, timeout.min(MAX_WAIT)).map_err(|source| {
            if is_timeout(&source) {
                self.timed_out("connecting")
            } else {
                ClientError::Connect { addr, source }
            }
        })?;
        let _ = stream.set_nodelay(true);
        let wire = match tls {
            None => Wire::plain(stream),
            Some((config, name)) => {
                let conn =
                    rustls::ClientConnection::new(config, name).map_err(|e| ClientError::Tls {
                        addr,
                        detail: e.to_string(),
                    })?;
                let mut wire = Wire::tls(stream, conn.into());
                wire.handshake(deadline)
                    .map_err(|e| self.fail("negotiating TLS", Fail::Io(e)))?;
                wire
            }
        };
        Ok(wire)
    }

    fn timed_out(&self, stage: &'static str) -> ClientError {
        ClientError::Timeout {
            addr: self.addr,
            timeout: self.timeout,
            stage,
        }
    }

    fn fail(&self, stage: &'static str, fail: Fail) -> ClientError {
        let addr = self.addr;
        match fail {
            Fail::Io(e) if is_timeout(&e) => self.timed_out(stage),
            Fail::Io(source) => match tls_error(&source) {
                Some(e) => ClientError::Tls {
                    addr,
                    detail: explain_tls(e),
                },
                None => ClientError::Io {
                    addr,
                    stage,
                    source,
                },
            },
            Fail::Malformed(detail) => ClientError::Malformed { addr, detail },
            Fail::TooLarge => ClientError::TooLarge {
                addr,
                limit: self.max_body,
            },
        }
    }
}

/// The rustls error inside an I/O error raised by [`Wire`], if any.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// rustls's wording, with a hint when the peer evidently does not speak TLS.
fn explain_tls(e: &rustls::Error) -> String {
    match e {
        // rustls prints `Other` certificate errors with `Debug`: use the message instead
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            format!("invalid peer certificate: {inner}")
        }
        rustls::Error::InvalidMessage(_) => {
            format!("{e} (does the peer speak plain HTTP on this port?)")
        }
        e => e.to_string(),
    }
}

/// The certificate checks of [`Verify`]; handshake signatures are always verified.
#[derive(Debug)]
struct CertVerifier {
    /// SHA-256 of the only certificate accepted; `None` accepts any.
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The server's certificate does not have the pinned fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("certificate SHA-256 fingerprint {got} does not match the pinned fingerprint {want}")]
struct PinMismatch {
    got: String,
    want: String,
}

impl ServerCertVerifier for CertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if &got == pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            got: format_fingerprint(&got),
            want: format_fingerprint(pin),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Request line and headers, or why they cannot be sent.
fn build_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    addr: SocketAddr,
    body_len: usize,
    keep_alive: bool,
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
    let connection = if keep_alive { "keep-alive" } else { "close" };
    head.push_str(&format!(
        "Content-Length: {body_len}\r\nConnection: {connection}\r\n\r\n"
    ));
    Ok(head.into_bytes())
}

/// A final response head: status, headers, and body bytes read past it.
type FinalHead = (u16, Vec<(String, String)>, Vec<u8>);

/// Reads a final (non-1xx) response head before `deadline`: status, headers, and the
/// body bytes already read past the head.
fn read_head(wire: &mut Wire, deadline: Instant) -> Result<FinalHead, Fail> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (len, status, headers) = loop {
            if let Some(head) = parse_head(&buf)? {
                break head;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(Fail::Malformed(format!(
                    "response head exceeds {MAX_HEAD_BYTES} bytes"
                )));
            }
            if wire.read_more(&mut buf, deadline)? == 0 {
                let got = buf.len();
                return Err(Fail::Malformed(format!(
                    "connection closed after {got} bytes, before the response head was complete"
                )));
            }
        };
        buf.drain(..len);
        if !(100..200).contains(&status) {
            return Ok((status, headers, buf));
        }
    }
}

/// Reads a complete response (skipping 1xx interim ones) before `deadline`.
fn read_response(
    wire: &mut Wire,
    head_only: bool,
    deadline: Instant,
    max_body: usize,
) -> Result<ClientResponse, Fail> {
    let (status, headers, mut buf) = read_head(wire, deadline)?;
    let mut response = ClientResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(response);
    }
    if let Some(te) = response.header("transfer-encoding") {
        if te.trim().eq_ignore_ascii_case("chunked") {
            // A streamed answer (etcd's gateway): read until its last chunk.
            loop {
                if let Some(body) = dechunk(&buf, max_body).map_err(Fail::Malformed)? {
                    response.body = body;
                    return Ok(response);
                }
                if buf.len() > max_body.saturating_mul(2).saturating_add(4096) {
                    return Err(Fail::TooLarge);
                }
                if wire.read_more(&mut buf, deadline)? == 0 {
                    return Err(Fail::Malformed(
                        "connection closed before the last chunk".into(),
                    ));
                }
            }
        }
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
                if wire.read_more(&mut buf, deadline)? == 0 {
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
            if wire.read_more(&mut buf, deadline)? == 0 {
                break;
            }
        },
    }
    response.body = buf;
    Ok(response)
}

/// Decodes a chunked body (RFC 9112, 7.1): `Ok(None)` until the last chunk (and its
/// trailers) are all in `buf`. Chunk extensions and trailers are skipped; a body that
/// decodes to more than `max_body` bytes, or a malformed chunk, is an error.
pub fn dechunk(mut buf: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > 1024 {
                return Err("a chunk-size line over 1 KiB".into());
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| "a chunk size not in ASCII")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .ok()
            .filter(|_| !size.is_empty() && size.len() <= 16)
            .ok_or_else(|| format!("a bad chunk size {size:?}"))?;
        let rest = &buf[eol + 2..];
        if size == 0 {
            // Trailers, each a line, up to an empty one.
            let mut t = rest;
            loop {
                let Some(eol) = t.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(out));
                }
                t = &t[eol + 2..];
            }
        }
        if out.len().saturating_add(size) > max_body {
            return Err(format!("a chunked body over {max_body} bytes"));
        }
        if rest.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err("a chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&rest[..size]);
        buf = &rest[size + 2..];
    }
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

/// A connected socket, plain or TLS, whose every operation ends by a deadline.
///
/// rustls is driven by hand rather than through `rustls::StreamOwned`: its `Read` may call
/// the socket several times per read (each with a fresh socket timeout), so a peer trickling
/// bytes could hold it past the deadline. Here every socket call gets the time left.
#[derive(Debug)]
pub(super) struct Wire {
    sock: TcpStream,
    tls: Option<Box<rustls::Connection>>,
}

impl Wire {
    /// Plain TCP.
    pub(super) fn plain(sock: TcpStream) -> Wire {
        Wire { sock, tls: None }
    }

    /// TLS over `sock`; call [`Wire::handshake`] before anything else.
    pub(super) fn tls(sock: TcpStream, conn: rustls::Connection) -> Wire {
        Wire {
            sock,
            tls: Some(Box::new(conn)),
        }
    }

    /// Turns plain TCP into TLS served by `conn` (after sniffing a ClientHello).
    pub(super) fn start_tls(&mut self, conn: rustls::Connection) {
        self.tls = Some(Box::new(conn));
    }

    /// The underlying socket.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// True for a TLS connection.
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Completes the TLS handshake (nothing for plain TCP). A TLS failure is an
    /// `InvalidData` error wrapping the `rustls::Error`; the alert for it is sent first.
    pub(super) fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        let Some(conn) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        while conn.is_handshaking() {
            flush_tls(conn, &mut self.sock, deadline)?;
            if !conn.is_handshaking() {
                break;
            }
            if read_tls(conn, &mut self.sock, deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        flush_tls(conn, &mut self.sock, deadline)
    }

    /// One read of at most 16 KiB, bounded by `deadline`; appends to `buf`.
    /// `Ok(0)` is the end of the stream (for TLS with or without `close_notify`).
    pub(super) fn read_more(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; CHUNK];
        let n = match self.tls.as_deref_mut() {
            None => {
                set_timeout(&self.sock, deadline, TcpStream::set_read_timeout)?;
                loop {
                    match self.sock.read(&mut chunk) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                }
            }
            Some(conn) => loop {
                match conn.reader().read(&mut chunk) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break 0,
                    Err(e) => return Err(e),
                }
                flush_tls(conn, &mut self.sock, deadline)?; // e.g. a key update reply
                read_tls(conn, &mut self.sock, deadline)?; // at EOF the reader says so next
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Writes all of `data` before `deadline`.
    pub(super) fn write_all_by(&mut self, mut data: &[u8], deadline: Instant) -> io::Result<()> {
        let Some(conn) = self.tls.as_deref_mut() else {
            return write_all_by(&mut self.sock, data, deadline);
        };
        while !data.is_empty() {
            let n = conn.writer().write(data)?;
            if n == 0 && !conn.wants_write() {
                return Err(io::ErrorKind::WriteZero.into()); // only before the handshake
            }
            data = &data[n..];
            flush_tls(conn, &mut self.sock, deadline)?;
        }
        Ok(())
    }

    /// Sends TLS `close_notify` before `deadline`, best effort (nothing for plain TCP).
    pub(super) fn close_notify(&mut self, deadline: Instant) {
        if let Some(conn) = self.tls.as_deref_mut() {
            conn.send_close_notify();
            let _ = flush_tls(conn, &mut self.sock, deadline);
        }
    }

    /// Moves whatever has arrived into `buf` (up to `cap` bytes in it) without blocking; the
    /// socket must be non-blocking. For TLS this also advances the handshake and writes what
    /// rustls has queued (handshake records, alerts) as far as the socket takes it. A TLS
    /// failure is an `InvalidData` error; its alert has been offered to the socket.
    pub(super) fn pump(&mut self, buf: &mut Vec<u8>, cap: usize) -> io::Result<Pumped> {
        let mut chunk = [0u8; CHUNK];
        let mut out = Pumped::default();
        let Some(conn) = self.tls.as_deref_mut() else {
            while buf.len() < cap {
                let want = (cap - buf.len()).min(CHUNK);
                match self.sock.read(&mut chunk[..want]) {
                    Ok(0) => {
                        out.eof = true;
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(out);
        };
        let mut sock_eof = false;
        loop {
            if !conn.is_handshaking() {
                while buf.len() < cap {
                    let want = (cap - buf.len()).min(CHUNK);
                    match conn.reader().read(&mut chunk[..want]) {
                        Ok(0) => {
                            out.eof = true; // close_notify
                            break;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            out.eof = true;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if out.eof || sock_eof || buf.len() >= cap {
                break;
            }
            match conn.read_tls(&mut self.sock) {
                Ok(0) => sock_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = write_tls_now(conn, &mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        out.eof |= sock_eof && conn.is_handshaking();
        out.handshaking = conn.is_handshaking();
        write_tls_now(conn, &mut self.sock)?; // what is left waits for POLLOUT
        Ok(out)
    }

    /// True while rustls holds records it could not yet write to the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.tls.as_deref().is_some_and(|c| c.wants_write())
    }

    /// Queues `data` (an answer small enough for a fresh socket buffer) and, if `close`,
    /// TLS `close_notify`, writing as much as the non-blocking socket takes now.
    pub(super) fn send_now(&mut self, data: &[u8], close: bool) {
        match self.tls.as_deref_mut() {
            None => {
                let mut data = data;
                while !data.is_empty() {
                    match self.sock.write(data) {
                        Ok(0) => break,
                        Ok(n) => data = &data[n..],
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            Some(conn) => {
                let _ = conn.writer().write_all(data);
                if close {
                    conn.send_close_notify();
                }
                let _ = write_tls_now(conn, &mut self.sock);
            }
        }
    }

    /// Sends TLS `close_notify` if the socket takes it right away, never blocking (nothing
    /// during a handshake, which the close itself ends).
    pub(super) fn close_notify_now(&mut self) {
        if let Some(conn) = self.tls.as_deref_mut().filter(|c| !c.is_handshaking()) {
            conn.send_close_notify();
            if self.sock.set_nonblocking(true).is_ok() {
                let _ = conn.write_tls(&mut self.sock);
            }
        }
    }
}

/// What [`Wire::pump`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pumped {
    /// The client closed its side (TCP FIN, or TLS `close_notify`).
    pub eof: bool,
    /// The TLS handshake is not finished yet.
    pub handshaking: bool,
}

/// Writes what rustls has queued until the non-blocking socket is full; true if some is
/// left for later.
fn write_tls_now(conn: &mut rustls::Connection, sock: &mut TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Reads TLS records once before `deadline` and processes them; `Ok(0)` at EOF.
fn read_tls(
    conn: &mut rustls::Connection,
    sock: &mut TcpStream,
    deadline: Instant,
) -> io::Result<usize> {
    set_timeout(sock, deadline, TcpStream::set_read_timeout)?;
    let n = loop {
        match conn.read_tls(sock) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if let Err(e) = conn.process_new_packets() {
        let _ = flush_tls(conn, sock, deadline); // the alert telling the peer why
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    Ok(n)
}

/// Writes out everything rustls has queued, before `deadline`.
fn flush_tls(
    conn: &mut rustls::Connection,
    sock: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    while conn.wants_write() {
        set_timeout(sock, deadline, TcpStream::set_write_timeout)?;
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets a socket timeout to the time left before `deadline`; `TimedOut` if none is left.
fn set_timeout(
    sock: &TcpStream,
    deadline: Instant,
    set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    set(sock, Some(left))
}

/// Writes all of `data` to a plain socket before `deadline`.
fn write_all_by(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        set_timeout(stream, deadline, TcpStream::set_write_timeout)?;
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

    #[test]
    fn chunked_bodies_decode_when_complete() {
        let whole = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(dechunk(whole, 100).unwrap().unwrap(), b"abcde");
        // Every prefix is incomplete, never an error.
        for n in 0..whole.len() {
            assert_eq!(dechunk(&whole[..n], 100), Ok(None), "{n}");
        }
        assert!(dechunk(b"zz\r\nabc", 100).is_err());
        assert!(dechunk(b"\r\n", 100).is_err());
        assert!(dechunk(b"3\r\nabcXY0\r\n\r\n", 100).is_err());
        assert!(dechunk(b"ffffffffffffffffff\r\n", 100).is_err());
        assert!(dechunk(b"65\r\n", 100).is_err(), "over max_body");
    }

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

    #[test]
    fn tls_to_a_silent_server_times_out_while_negotiating() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts
        let addr = listener.local_addr().unwrap();
        let started = Instant::now();
        let timeout = Duration::from_millis(200);
        let verify = Verify::AnyCertificate;
        let err = request_tls(addr, "node-b", verify, "GET", "/", &[], b"", timeout, 10);
        let waited = started.elapsed();
        let err = err.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Timeout {
                    stage: "negotiating TLS",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            waited >= timeout && waited < Duration::from_secs(1),
            "{waited:?}"
        );
    }

    #[test]
    fn bad_tls_parameters_are_refused_before_connecting() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let any = || Verify::AnyCertificate;
        let bad_name = request_tls(addr, "a b", any(), "GET", "/", &[], b"", T, 10);
        assert!(matches!(bad_name, Err(ClientError::InvalidRequest { .. })));
        let pin = Verify::Pinned(format!("{}+1", "0".repeat(62)));
        let err = request_tls(addr, "x", pin, "GET", "/", &[], b"", T, 10).unwrap_err();
        assert!(
            err.to_string().contains("is not a SHA-256 fingerprint"),
            "{err}"
        );
    }
}
