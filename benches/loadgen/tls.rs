//! TLS for the benches: one ECDSA P-256 certificate per run, made with rcgen and given to every
//! proxy that terminates TLS, and the [`Connector`] that lets one client serve plain TCP and TLS
//! alike (the idle ladder, the connection loop): `Plain` hands the socket over as it is, `Tls`
//! runs a full TLS 1.3 handshake on it first.
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

/// How a client turns a connected socket into the stream it talks MQTT (or bytes) over.
pub trait Connector: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + StillOpen + Unpin + Send + 'static;

    /// The stream over `tcp`: for TLS, once the handshake is done.
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// The certificate a proxy in front of this client must terminate TLS with, if any.
    fn cert(&self) -> Option<&CertFiles>;
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

    fn cert(&self) -> Option<&CertFiles> {
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

/// TLS 1.3 only, a full handshake every time: the client keeps no session to resume, so each
/// connection costs the server what a device's first connection costs it.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    files: Arc<CertFiles>,
}

impl Tls {
    pub fn new(files: CertFiles) -> Result<Tls, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(files.der.clone())
            .map_err(|error| format!("cannot trust the bench certificate: {error}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| format!("cannot configure TLS 1.3: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(SERVER_NAME).expect("a valid DNS name"),
            files: Arc::new(files),
        })
    }
}

impl Connector for Tls {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;

    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.connector.connect(self.name.clone(), tcp)
    }

    fn cert(&self) -> Option<&CertFiles> {
        Some(&self.files)
    }
}

impl StillOpen for tokio_rustls::client::TlsStream<TcpStream> {
    /// Peeks at the socket: TLS records may arrive on an idle connection (TLS 1.3 session
    /// tickets sent after the handshake), so only a close or an error counts.
    fn still_open(&self) -> bool {
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.get_ref().0).peek(&mut probe) {
            Ok(0) => false,
            Ok(_) => true,
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
        }
    }
}
