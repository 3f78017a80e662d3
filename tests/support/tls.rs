//! Real certificates for the TLS tests, made with rcgen: a CA, server certificates for given
//! names and serials, client certificates with a common name, revocation lists, written as PEM
//! files in a directory of the test's own, and rustls client configs that trust the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test certificate authority and the directory its files go to.
pub struct Pki {
    /// Where every file is written.
    pub dir: PathBuf,
    /// The CA certificate's file.
    pub ca: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Pki {
    /// A fresh CA named `name`, in a fresh directory.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "brokerside-tls-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn(&format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem()).expect("write the CA");
        Pki { dir, ca, issuer }
    }

    /// A server certificate for `names` (DNS names or IPs) with `serial`, as `<stem>.pem` and
    /// `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str], serial: u64) -> Issued {
        let mut params = leaf_params(names, serial);
        params.distinguished_name = dn(names.first().copied().unwrap_or("server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params)
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, stem: &str, names: &[&str]) -> Issued {
        let mut params = leaf_params(names, 99);
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params)
    }

    /// A server certificate that expires `days` days from now.
    pub fn server_expiring_in(&self, stem: &str, names: &[&str], days: u64) -> Issued {
        let mut params = leaf_params(names, 98);
        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(days * 86_400);
        let unix = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let date = brokerside::time_text::rfc3339(unix);
        let field = |range: std::ops::Range<usize>| date[range].parse::<u8>().unwrap();
        let year: i32 = date[..4].parse().unwrap();
        params.not_after = date_time_ymd(year, field(5..7), field(8..10));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params)
    }

    /// A client certificate with common name `cn` and `serial`.
    pub fn client(&self, stem: &str, cn: &str, serial: u64) -> Issued {
        let mut params = leaf_params(&[], serial);
        params.distinguished_name = dn(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, params)
    }

    /// A revocation list of this CA listing `serials`, as `<stem>.pem`.
    pub fn crl(&self, stem: &str, serials: &[u64]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign the CRL");
        let path = self.dir.join(format!("{stem}.pem"));
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write the CRL");
        path
    }

    fn issue(&self, stem: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let issued = Issued {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
        issued
    }

    /// The files a listener is configured with (`live.pem`, `live.key`), holding a copy of
    /// `issued` put in place by rename: a test rotates them by renaming others over them.
    pub fn live(&self, issued: &Issued) -> Issued {
        let live = Issued {
            cert: self.dir.join("live.pem"),
            key: self.dir.join("live.key"),
        };
        replace_by_rename(&issued.cert, &live.cert);
        replace_by_rename(&issued.key, &live.key);
        live
    }

    /// A rustls client config trusting this CA, with `client` as its certificate if given.
    pub fn client_config(
        &self,
        client: Option<&Issued>,
        alpn: &[&str],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("read the CA") {
            roots.add(cert.expect("CA PEM")).expect("add the CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(issued) => builder
                .with_client_auth_cert(chain(&issued.cert), key(&issued.key))
                .expect("client certificate"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// Replaces `to` with a copy of `from` by rename, as Vault, cert-manager and Nomad templates
/// replace certificate files.
pub fn replace_by_rename(from: &Path, to: &Path) {
    let next = to.with_extension("next");
    std::fs::copy(from, &next).expect("copy the new file");
    std::fs::rename(&next, to).expect("rename it into place");
}

/// The certificates of a PEM file.
pub fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("read the chain")
        .map(|c| c.expect("certificate PEM"))
        .collect()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("read the key")
}

/// The serial number, in lower-case hex without separators, of the first certificate a server
/// presents.
pub fn serial_of(cert: &CertificateDer<'_>) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("parse");
    parsed.raw_serial_as_string().replace(':', "")
}

/// Connects to `addr` over TLS as `name`, and returns the stream.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn leaf_params(names: &[&str], serial: u64) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}
