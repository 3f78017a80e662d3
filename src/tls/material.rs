//! Reading a listener's TLS files into a rustls server config: certificate chains and keys
//! (checked to match, and not expired), the SNI table, the client CA and its revocation lists.
//! Every problem names its field (`listener[1].tls.sni[0].key: ...`); a certificate that expires
//! within [`EXPIRY_WARNING`] is a warning, not a refusal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::resolver::SniResolver;
use crate::config::{CertFiles, ClientAuth, ConfigError, TlsConfig, TlsVersion};

/// A certificate that expires sooner than this is reported when it is loaded.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The crypto provider every TLS listener uses (ring: no C build, AES-GCM and P-256 in
/// assembly). Given to each config explicitly, so nothing depends on a process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One configured certificate, as `/health` and the expiry metric show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its label in metrics and `/health`: the certificate's file.
    pub label: String,
    /// The leaf's subject, e.g. `CN=broker.example.com`.
    pub subject: String,
    /// The leaf's serial number in hex.
    pub serial: String,
    /// When the leaf expires, Unix seconds.
    pub not_after: i64,
    /// The SNI names it is served for (the default certificate: its own DNS names).
    pub names: Vec<String>,
}

/// A listener's TLS material, loaded and checked: what new handshakes use.
pub struct TlsMaterial {
    /// The rustls server config built from the files.
    pub server: Arc<ServerConfig>,
    /// The configured certificates, default first.
    pub certificates: Vec<CertificateInfo>,
    /// Whether client certificates are asked for, and how.
    pub client_auth: Option<ClientAuth>,
    /// SHA-256 over every file's bytes, in order: equal digests mean equal material.
    pub digest: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("certificates", &self.certificates)
            .field("client_auth", &self.client_auth)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsMaterial {
    fn eq(&self, other: &TlsMaterial) -> bool {
        self.digest == other.digest
    }
}

/// What loading found that is worth a warning but not a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The field, e.g. `listener[1].tls.cert`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Reads the files one listener's `tls` names. `path` is the table's field path
/// (`listener[1].tls`).
pub fn load(tls: &TlsConfig, path: &str) -> Result<(TlsMaterial, Vec<Warning>), Vec<ConfigError>> {
    let mut loader = Loader {
        problems: Vec::new(),
        warnings: Vec::new(),
        hash: Sha256::new(),
        now: unix_now(),
        provider: provider(),
    };
    let default = loader.certified(&tls.cert, path);
    let mut sni = Vec::new();
    for (i, entry) in tls.sni.iter().enumerate() {
        let entry_path = format!("{path}.sni[{i}]");
        if let Some((key, mut info)) = loader.certified(&entry.files, &entry_path) {
            if !entry.names.is_empty() {
                info.names.clone_from(&entry.names);
            } else if info.names.is_empty() {
                loader.problem(
                    format!("{entry_path}.names"),
                    "the certificate lists no DNS names: give the names it is served for"
                        .to_string(),
                );
            }
            sni.push((key, info));
        }
    }
    let verifier = tls
        .client_ca
        .as_deref()
        .and_then(|ca| loader.client_verifier(ca, &tls.crl, tls.client_auth, path));
    let Loader {
        problems,
        warnings,
        hash,
        provider,
        ..
    } = loader;
    let Some((default_key, default_info)) = default else {
        return Err(problems);
    };
    if !problems.is_empty() || (tls.client_ca.is_some() && verifier.is_none()) {
        return Err(problems);
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&version::TLS13, &version::TLS12],
        TlsVersion::V1_3 => &[&version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| {
            vec![ConfigError {
                path: format!("{path}.min_version"),
                message: e.to_string(),
            }]
        })?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut certificates = vec![default_info];
    let mut names = Vec::new();
    for (key, info) in sni {
        for name in &info.names {
            names.push((name.clone(), Arc::clone(&key)));
        }
        certificates.push(info);
    }
    let mut server = builder.with_cert_resolver(Arc::new(SniResolver::new(default_key, names)));
    // After the handshake, the relay seals and opens TLS records itself (tls/record.rs).
    server.enable_secret_extraction = true;
    // rustls' default keeps the last 256 sessions in memory and sends two tickets per TLS 1.3
    // handshake: about a tenth of a full handshake's CPU, for resumptions that a node with
    // hundreds of thousands of clients would almost never honour. Nothing is kept per session
    // here: with `session_tickets` a client gets one stateless ticket (ChaCha20-Poly1305 under
    // keys of this material, rotated every 6 hours), so new material (a rotated certificate, a
    // new CRL) also ends every resumption of sessions verified against the old.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    if tls.session_tickets {
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| {
            vec![ConfigError {
                path: format!("{path}.session_tickets"),
                message: format!("no ticket key: {e}"),
            }]
        })?;
        server.send_tls13_tickets = 1;
    } else {
        server.send_tls13_tickets = 0;
    }
    server.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let digest = hex(&hash.finalize());
    Ok((
        TlsMaterial {
            server: Arc::new(server),
            certificates,
            client_auth: tls.client_ca.as_ref().map(|_| tls.client_auth),
            digest,
        },
        warnings,
    ))
}

/// SHA-256 over the bytes of every file `tls` names, in the order [`load`] reads them: the
/// watcher compares it with the running material's digest to see whether anything changed.
pub fn digest_files(tls: &TlsConfig) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    for file in files(tls) {
        hash.update(std::fs::read(file)?);
    }
    Ok(hex(&hash.finalize()))
}

/// Every file `tls` names, in the order they are read.
fn files(tls: &TlsConfig) -> Vec<&Path> {
    let mut files = vec![tls.cert.cert.as_path(), tls.cert.key.as_path()];
    for sni in &tls.sni {
        files.push(&sni.files.cert);
        files.push(&sni.files.key);
    }
    if let Some(ca) = &tls.client_ca {
        files.push(ca);
        files.extend(tls.crl.iter().map(PathBuf::as_path));
    }
    files
}

struct Loader {
    problems: Vec<ConfigError>,
    warnings: Vec<Warning>,
    hash: Sha256,
    now: i64,
    provider: Arc<CryptoProvider>,
}

impl Loader {
    fn problem(&mut self, path: String, message: String) {
        self.problems.push(ConfigError { path, message });
    }

    /// A file's bytes, hashed in reading order; a problem at `path` when it cannot be read.
    fn read(&mut self, file: &Path, path: String) -> Option<Vec<u8>> {
        match crate::config::read_file_bytes(file) {
            Ok(bytes) => {
                self.hash.update(&bytes);
                Some(bytes)
            }
            Err(message) => {
                self.problem(path, message);
                None
            }
        }
    }

    /// A chain and its key: parsed, matched, and checked for expiry.
    fn certified(
        &mut self,
        files: &CertFiles,
        path: &str,
    ) -> Option<(Arc<CertifiedKey>, CertificateInfo)> {
        let cert_bytes = self.read(&files.cert, format!("{path}.cert"));
        let key_bytes = self.read(&files.key, format!("{path}.key"));
        let chain = cert_bytes.and_then(|bytes| {
            let chain: Result<Vec<CertificateDer<'static>>, _> =
                CertificateDer::pem_slice_iter(&bytes).collect();
            match chain {
                Ok(chain) if !chain.is_empty() => Some(chain),
                Ok(_) => {
                    self.problem(
                        format!("{path}.cert"),
                        format!("{}: no PEM certificate in the file", files.cert.display()),
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        format!("{path}.cert"),
                        format!("{}: the chain does not parse: {e}", files.cert.display()),
                    );
                    None
                }
            }
        });
        let key = key_bytes.and_then(|bytes| match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(key) => Some(key),
            Err(e) => {
                self.problem(
                    format!("{path}.key"),
                    format!("{}: no private key found: {e}", files.key.display()),
                );
                None
            }
        });
        let chain = chain?;
        let info = match leaf_info(&chain[0], &files.cert.display().to_string()) {
            Ok(info) => info,
            Err(message) => {
                self.problem(
                    format!("{path}.cert"),
                    format!("{}: {message}", files.cert.display()),
                );
                return None;
            }
        };
        if info.not_after < self.now {
            self.problem(
                format!("{path}.cert"),
                format!(
                    "{}: the certificate ({}) expired at {}",
                    files.cert.display(),
                    info.subject,
                    crate::time_text::rfc3339(info.not_after)
                ),
            );
            return None;
        }
        if info.not_after - self.now < EXPIRY_WARNING.as_secs() as i64 {
            self.warnings.push(Warning {
                path: format!("{path}.cert"),
                message: format!(
                    "{}: the certificate ({}) expires soon, at {}",
                    files.cert.display(),
                    info.subject,
                    crate::time_text::rfc3339(info.not_after)
                ),
            });
        }
        let key = key?;
        match CertifiedKey::from_der(chain, key, &self.provider) {
            Ok(certified) => Some((Arc::new(certified), info)),
            Err(e) => {
                let message = match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "{} does not match the certificate in {}",
                        files.key.display(),
                        files.cert.display()
                    ),
                    other => format!("{}: {other}", files.key.display()),
                };
                self.problem(format!("{path}.key"), message);
                None
            }
        }
    }

    /// The verifier of client certificates: the CA's certificates and the revocation lists.
    fn client_verifier(
        &mut self,
        ca: &Path,
        crls: &[PathBuf],
        auth: ClientAuth,
        path: &str,
    ) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let ca_bytes = self.read(ca, format!("{path}.client_ca"));
        let mut roots = RootCertStore::empty();
        if let Some(bytes) = ca_bytes {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                match cert
                    .map_err(|e| e.to_string())
                    .and_then(|cert| roots.add(cert).map_err(|e| e.to_string()))
                {
                    Ok(()) => added += 1,
                    Err(e) => {
                        self.problem(
                            format!("{path}.client_ca"),
                            format!("{}: a CA certificate does not parse: {e}", ca.display()),
                        );
                        return None;
                    }
                }
            }
            if added == 0 {
                self.problem(
                    format!("{path}.client_ca"),
                    format!("{}: no PEM certificate in the file", ca.display()),
                );
            }
        }
        let mut lists = Vec::new();
        for (i, file) in crls.iter().enumerate() {
            let field = format!("{path}.crl[{i}]");
            let Some(bytes) = self.read(file, field.clone()) else {
                continue;
            };
            match parse_crls(&bytes) {
                Ok(parsed) => lists.extend(parsed),
                Err(message) => self.problem(field, format!("{}: {message}", file.display())),
            }
        }
        if roots.is_empty() || !self.problems.is_empty() {
            return None;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .with_crls(lists)
        // A CRL whose next update has passed still lists what it revoked.
        .allow_unknown_revocation_status();
        let builder = match auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        match builder.build() {
            Ok(verifier) => Some(verifier),
            Err(e) => {
                self.problem(format!("{path}.client_ca"), e.to_string());
                None
            }
        }
    }
}

/// The revocation lists in a file, PEM (any number) or DER (one).
fn parse_crls(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let lists: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the revocation list does not parse: {e}"))?
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    if lists.is_empty() {
        return Err("no revocation list in the file".to_string());
    }
    for list in &lists {
        x509_parser::parse_x509_crl(list.as_ref())
            .map_err(|e| format!("the revocation list does not parse: {e}"))?;
    }
    Ok(lists)
}

/// Subject, serial, expiry and DNS names of a leaf certificate.
fn leaf_info(leaf: &CertificateDer<'_>, label: &str) -> Result<CertificateInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertificateInfo {
        label: label.to_string(),
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_after: cert.validity().not_after.timestamp(),
        names,
    })
}

/// The common name of a (verified) client certificate, for the PROXY v2 SSL TLV.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
