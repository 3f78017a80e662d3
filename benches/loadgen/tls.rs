//! TLS for the benches: one ECDSA P-256 certificate per run, made with rcgen and given to every
//! proxy that terminates TLS, and the [`Connector`] that lets one client serve plain TCP and TLS
//! alike (the idle ladder, the connection loop): `Plain` hands the socket over as it is, `Tls`
//! runs a full TLS handshake on it first, TLS 1.3 or TLS 1.2 ([`TlsVersion`]), and checks that the
//! proxy agreed to the version asked.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::procs::Scratch;

/// The name the certificate is for and the SNI name clients send.
pub const SERVER_NAME: &str = "localhost";

/// The certificate and its key, in the files each proxy wants.
pub struct CertFiles {
    /// The certificate, PEM (brokerside's `cert`, NGINX's `ssl_certificate`).
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM (brokerside's `key`, NGINX's `ssl_certificate_key`).
    pub key: PathBuf,
    /// Both in one file, which is what HAProxy's `crt` reads.
    pub combined: PathBuf,
    der: CertificateDer<'static>,
}

impl CertFiles {
    /// A self-signed ECDSA P-256 certificate for [`SERVER_NAME`] (rcgen's default key type),
    /// written into the scratch directory. Self-signed, so that every server sends the same
    /// one-certificate chain and the client trusts it directly.
    pub fn generate(scratch: &Scratch) -> Result<CertFiles, String> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
                .map_err(|error| format!("cannot make the TLS certificate: {error}"))?;
        let cert_pem = cert.pem();
        let key_pem = signing_key.serialize_pem();
        Ok(CertFiles {
            cert: scratch.write("tls-cert.pem", &cert_pem)?,
            key: scratch.write("tls-key.pem", &key_pem)?,
            combined: scratch.write("tls-combined.pem", &format!("{cert_pem}{key_pem}"))?,
            der: cert.der().clone(),
        })
    }
}

/// The one TLS version a bench's clients offer, and the lowest the proxies in front of them
/// accept (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 only: with the ECDSA P-256 certificate, an ECDHE-ECDSA AES-GCM suite.
    Tls12,
    /// TLS 1.3 only.
    #[default]
    Tls13,
}

impl TlsVersion {
    /// `1.2` or `1.3`, as `--tls-version` takes it.
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        match text.trim() {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            other => Err(format!("--tls-version: {other:?} is neither 1.2 nor 1.3")),
        }
    }

    /// `1.2` or `1.3`: the option's value, and brokerside's `min_version`.
    pub fn number(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    /// `TLS 1.2` or `TLS 1.3`, for labels and text.
    pub fn label(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS 1.2",
            TlsVersion::Tls13 => "TLS 1.3",
        }
    }

    /// HAProxy's `ssl-min-ver`.
    pub fn haproxy_min_ver(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }

    /// NGINX's `ssl_protocols`: this version and the newer one.
    pub fn nginx_protocols(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2 TLSv1.3",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }

    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    fn protocol(self) -> rustls::ProtocolVersion {
        self.rustls().version
    }
}

/// What a proxy in front of a TLS client terminates it with: the certificate, and the lowest
/// version it accepts.
#[derive(Clone, Copy)]
pub struct ServerTls<'a> {
    pub files: &'a CertFiles,
    pub min_version: TlsVersion,
}

/// How a client turns a connected socket into the stream it talks MQTT (or bytes) over.
pub trait Connector: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + StillOpen + Unpin + Send + 'static;

    /// The stream over `tcp`: for TLS, once the handshake is done.
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// How a proxy in front of this client must terminate TLS, if it must.
    fn server_tls(&self) -> Option<ServerTls<'_>>;

    /// The version and suite `stream` negotiated (`TLSv1_2, TLS_ECDHE_...`); `None` for plain.
    fn negotiated(_stream: &Self::Stream) -> Option<String> {
        None
    }
}

/// Whether an idle client's connection is still open, without blocking or consuming anything
/// the stream would need.
pub trait StillOpen {
    fn still_open(&self) -> bool;
}

/// Plain TCP.
#[derive(Clone, Copy)]
pub struct Plain;

impl Connector for Plain {
    type Stream = TcpStream;

    async fn wrap(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }

    fn server_tls(&self) -> Option<ServerTls<'_>> {
        None
    }
}

impl StillOpen for TcpStream {
    /// Nothing may arrive on an idle plain MQTT connection: a byte is as wrong as a close.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// One TLS version only, a full handshake every time: the client keeps no session to resume (no
/// TLS 1.3 tickets, no TLS 1.2 session ids or tickets), so each connection costs the server what
/// a device's first connection costs it.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    files: Arc<CertFiles>,
    version: TlsVersion,
}

impl Tls {
    pub fn new(files: CertFiles, version: TlsVersion) -> Result<Tls, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(files.der.clone())
            .map_err(|error| format!("cannot trust the bench certificate: {error}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version.rustls()])
        .map_err(|error| format!("cannot configure {}: {error}", version.label()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(SERVER_NAME).expect("a valid DNS name"),
            files: Arc::new(files),
            version,
        })
    }

    pub fn version(&self) -> TlsVersion {
        self.version
    }
}

impl Connector for Tls {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;

    /// The handshake, then a check that it is the version asked: offering one version only, the
    /// client cannot end up with another, but the figures would be wrong if it did.
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let connecting = self.connector.connect(self.name.clone(), tcp);
        let asked = self.version;
        async move {
            let stream = connecting.await?;
            let negotiated = stream.get_ref().1.protocol_version();
            if negotiated != Some(asked.protocol()) {
                return Err(io::Error::other(format!(
                    "the handshake negotiated {negotiated:?}, but the bench asked for {} only",
                    asked.label()
                )));
            }
            Ok(stream)
        }
    }

    fn server_tls(&self) -> Option<ServerTls<'_>> {
        Some(ServerTls {
            files: &self.files,
            min_version: self.version,
        })
    }

    fn negotiated(stream: &Self::Stream) -> Option<String> {
        let conn = stream.get_ref().1;
        Some(format!(
            "{:?}, {:?}",
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite()
        ))
    }
}

impl StillOpen for tokio_rustls::client::TlsStream<TcpStream> {
    /// Peeks at the socket. TLS 1.3: records may arrive on an idle connection (session tickets
    /// sent after the handshake), so only a close or an error counts. TLS 1.2 has nothing after
    /// the handshake (a ticket would come inside it, and the client asks for none), so as on
    /// plain TCP a byte is as wrong as a close: it can only be an alert, such as the
    /// close_notify a proxy sends before its FIN, or stray data.
    fn still_open(&self) -> bool {
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        let bytes_allowed =
            self.get_ref().1.protocol_version() != Some(TlsVersion::Tls12.protocol());
        match socket2::SockRef::from(self.get_ref().0).peek(&mut probe) {
            Ok(0) => false,
            Ok(_) => bytes_allowed,
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
        }
    }
}
