//! TLS identity for the built-in HTTP server: a self-signed certificate kept on disk,
//! the rustls server configuration built from it, and its SHA-256 fingerprint for pinning.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Folder under the state directory that holds the identity.
const SUBDIR: &str = "tls";
/// Certificate file name inside [`SUBDIR`].
const CERT_FILE: &str = "cert.pem";
/// Private key file name inside [`SUBDIR`].
const KEY_FILE: &str = "key.pem";
/// Common name of the self-signed certificates created here.
const COMMON_NAME: &str = "hamon";

/// A certificate and its private key, both PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate (the first `CERTIFICATE` block is the server's own).
    pub cert_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &fingerprint(self))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Why a TLS identity could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or folder could not be read, written or created.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was attempted, e.g. "read" or "create".
        action: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A certificate or key is not usable PEM.
    #[error("{what}: {detail}")]
    Pem {
        /// The file, or "certificate" / "private key" for PEM given in memory.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// Only the certificate is on disk; creating a new key would change the fingerprint.
    #[error(
        "{} exists but {} is missing; restore the key, or remove both files \
         to create a new identity (its fingerprint will change)",
        .cert.display(), .key.display()
    )]
    MissingKey {
        /// The certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The self-signed certificate could not be generated (e.g. a name is not a valid DNS name).
    #[error("cannot create a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (e.g. the key does not belong to the certificate).
    #[error("the certificate and key are not usable for TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads the identity kept in `dir/tls/{cert,key}.pem`, or creates a self-signed one there.
///
/// A new certificate names every entry of `names` as a subject alternative name: IP literals
/// become IP SANs, anything else a DNS SAN. An existing identity is kept as it is even if
/// `names` changed, so a fingerprint pinned by the peer stays valid. Files are written
/// atomically (temporary file, fsync, rename, fsync of the folder) with mode 0600, the key
/// before the certificate: the certificate's presence marks a complete identity.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
    let tls_dir = dir.join(SUBDIR);
    let (cert_path, key_path) = (tls_dir.join(CERT_FILE), tls_dir.join(KEY_FILE));
    if exists(&cert_path)? {
        if !exists(&key_path)? {
            return Err(TlsError::MissingKey {
                cert: cert_path,
                key: key_path,
            });
        }
        let id = Identity {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        };
        parse_cert(&id.cert_pem, &cert_path.display().to_string())?;
        parse_key(&id.key_pem, &key_path.display().to_string())?;
        server_config(&id)?; // the key must belong to the certificate
        return Ok(id);
    }
    let id = generate(names)?;
    if !exists(&tls_dir)? {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tls_dir)
            .map_err(io_err("create", &tls_dir))?;
        sync_dir(dir)?;
    }
    write_atomic(&tls_dir, KEY_FILE, &id.key_pem)?;
    write_atomic(&tls_dir, CERT_FILE, &id.cert_pem)?;
    Ok(id)
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
/// certificates, ALPN `http/1.1`) serving `id`.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert = parse_cert(&id.cert_pem, "certificate")?;
    let key = parse_key(&id.key_pem, "private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// SHA-256 of the DER certificate as colon-separated upper-case hex (`AB:CD:…`, 95
/// characters); empty if `cert_pem` holds no parsable certificate.
pub fn fingerprint(id: &Identity) -> String {
    parse_cert(&id.cert_pem, "certificate")
        .map(|der| fingerprint_der(der.as_ref()))
        .unwrap_or_default()
}

/// SHA-256 fingerprint of DER bytes, formatted as [`fingerprint`] does.
pub(crate) fn fingerprint_der(der: &[u8]) -> String {
    format_fingerprint(&Sha256::digest(der).into())
}

/// Colon-separated upper-case hex of a SHA-256 digest.
pub(crate) fn format_fingerprint(digest: &[u8; 32]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Parses a fingerprint written as hex digits, colons optional, case ignored.
pub(crate) fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The ring crypto provider, built once.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

fn generate(names: &[String]) -> Result<Identity, TlsError> {
    let key = rcgen::KeyPair::generate()?; // ECDSA P-256
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, COMMON_NAME);
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn parse_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, TlsError> {
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(cert)) => Ok(cert),
        Some(Err(e)) => Err(bad_pem(what, format!("bad certificate PEM: {e}"))),
        None => Err(bad_pem(what, "no CERTIFICATE block found".to_string())),
    }
}

fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            bad_pem(what, "no PRIVATE KEY block found".to_string())
        }
        e => bad_pem(what, format!("bad private key PEM: {e}")),
    })
}

fn bad_pem(what: &str, detail: String) -> TlsError {
    TlsError::Pem {
        what: what.to_string(),
        detail,
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io {
        action,
        path,
        source,
    }
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_err("inspect", path))
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

/// Replaces `dir/name` with `text` atomically and durably, mode 0600.
fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), TlsError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o600)) // whatever the umask
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename into place", &target)(e));
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

/// A fresh self-signed identity for 127.0.0.1 and localhost (tests elsewhere).
#[cfg(test)]
pub(crate) fn test_identity() -> Identity {
    match generate(&["127.0.0.1".to_string(), "localhost".to_string()]) {
        Ok(id) => id,
        Err(e) => panic!("cannot generate a test identity: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A fresh, empty folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir().join(format!("hamon-{tag}-{}-{n}", std::process::id()));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_then_reloads_the_same_identity_with_private_files() {
        let dir = TempDir::new("tls-id");
        let names = vec!["127.0.0.1".to_string(), "node-a.example".to_string()];
        let first = load_or_create(&dir.0, &names).unwrap();
        let fp = fingerprint(&first);
        assert_eq!(fp.len(), 95, "{fp}");
        assert!(fp
            .bytes()
            .all(|b| b == b':' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_eq!(mode(&dir.0.join("tls/cert.pem")), 0o600);
        assert_eq!(mode(&dir.0.join("tls/key.pem")), 0o600);
        assert_eq!(mode(&dir.0.join("tls")), 0o700);
        assert!(!dir.0.join("tls/.cert.pem.tmp").exists());
        // Reloading (even with other names) keeps the identity, so pins stay valid.
        let again = load_or_create(&dir.0, &["other".to_string()]).unwrap();
        assert_eq!(again, first);
        assert_eq!(fingerprint(&again), fp);
        assert!(server_config(&again).is_ok());
        assert!(!format!("{again:?}").contains("PRIVATE KEY"));
        assert_eq!(parse_fingerprint(&fp.to_lowercase().replace(':', "")), {
            let der = parse_cert(&first.cert_pem, "c").unwrap();
            Some(Sha256::digest(der.as_ref()).into())
        });
    }

    #[test]
    fn broken_identities_get_clear_errors() {
        let dir = TempDir::new("tls-bad");
        let id = load_or_create(&dir.0, &[]).unwrap();
        let other = generate(&["x".to_string()]).unwrap();
        let mixed = Identity {
            cert_pem: id.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        let err = server_config(&mixed).unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err}");
        let garbage = Identity {
            cert_pem: "nothing here".into(),
            key_pem: id.key_pem.clone(),
        };
        let err = server_config(&garbage).unwrap_err().to_string();
        assert_eq!(err, "certificate: no CERTIFICATE block found");
        assert_eq!(fingerprint(&garbage), "");
        fs::remove_file(dir.0.join("tls/key.pem")).unwrap();
        let err = load_or_create(&dir.0, &[]).unwrap_err().to_string();
        assert!(err.contains("key.pem is missing"), "{err}");
        fs::write(dir.0.join("tls/key.pem"), "junk").unwrap();
        let err = load_or_create(&dir.0, &[]).unwrap_err().to_string();
        assert!(
            err.ends_with("key.pem: no PRIVATE KEY block found"),
            "{err}"
        );
        let bad_name = load_or_create(&dir.0.join("n"), &["bad name\u{e9}".to_string()]);
        assert!(matches!(bad_name, Err(TlsError::Generate(_))));
    }
}
