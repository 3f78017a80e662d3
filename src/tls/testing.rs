//! TLS 1.3 and 1.2 connections in memory, for the tests and the fuzz target of [`Records`]: rustls'
//! unbuffered client and server handshake through byte vectors, then each side is taken over
//! by the record layer, as the relay takes its server side over.
//!
//! Not used by the relay: the client here trusts any certificate (see [`client_config`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{DigitallySignedStruct, Error, SignatureScheme, SupportedCipherSuite};

use super::record::Records;
use crate::config::Config;

/// Both ends of one connection: the server as the relay holds it, and its client.
pub type Pair = (Records<ServerConnectionData>, Records<ClientConnectionData>);

/// The server config a TLS listener gets from `cert_pem` and `key_pem` (PEM text): the files
/// are written to a fresh temporary directory and read by [`super::load_listeners`], so the
/// config is the one the relay would serve (secret extraction on, ALPN `mqtt`).
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    static DIRS: AtomicUsize = AtomicUsize::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "brokerside-tls-testing-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, cert_pem).map_err(|e| e.to_string())?;
    std::fs::write(&key, key_pem).map_err(|e| e.to_string())?;
    let config = Config::from_toml(&format!(
        "[[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\
         [listener.tls]\ncert = \"{}\"\nkey = \"{}\"\nalpn = [\"mqtt\"]\n\
         [[backend]]\nname = \"b\"\nservers = [\"127.0.0.1:1\"]\n",
        cert.display(),
        key.display()
    ))
    .map_err(|e| e.to_string())?;
    let loaded = super::load_listeners(&config);
    let _ = std::fs::remove_dir_all(&dir);
    let (loaded, _) = loaded.map_err(|e| format!("{e:?}"))?;
    Ok(Arc::clone(&loaded["t"].server))
}

/// A client config that offers only `suite` (one of ring's suites, e.g.
/// `rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256`) and its TLS version (1.2 or
/// 1.3), with secret extraction
/// enabled so that it can be taken over. Its one key exchange is X25519, the cheapest (the
/// records after the handshake do not depend on it).
///
/// It accepts any server certificate, without checking its chain, name or dates: these
/// connections test the record layer, not authentication. The server's handshake signature is
/// still checked against the certificate it sent.
pub fn client_config(suite: SupportedCipherSuite) -> Result<Arc<ClientConfig>, Error> {
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..rustls::crypto::ring::default_provider()
    };
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[match suite {
            SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
            SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        }])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate; checks handshake signatures with these algorithms.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Handshakes a client of `client` with a server of `server` in memory, then takes both over.
///
/// Both sides are driven until neither has anything left to send or read and both may write
/// application data: by then any NewSessionTicket the server sends has been taken by the client
/// (a ticket arriving after the client is taken over would be a handshake message its record
/// layer refuses), and rustls lets a connection with nothing queued be converted.
#[allow(clippy::result_large_err)]
pub fn pair(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<Pair, Error> {
    let mut server = UnbufferedServerConnection::new(server)?;
    let name = ServerName::try_from("localhost").map_err(|e| Error::General(e.to_string()))?;
    let mut client = UnbufferedClientConnection::new(client, name)?;
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    // A handshake takes a few flights; a loop that goes on is a bug here, not a slow peer.
    for _ in 0..64 {
        let client_ready = loop {
            let status = client.process_tls_records(&mut to_client);
            match step(status, &mut to_server)? {
                (discard, None) => _ = to_client.drain(..discard),
                (discard, Some(ready)) => {
                    to_client.drain(..discard);
                    break ready;
                }
            }
        };
        let server_ready = loop {
            let status = server.process_tls_records(&mut to_server);
            match step(status, &mut to_client)? {
                (discard, None) => _ = to_server.drain(..discard),
                (discard, Some(ready)) => {
                    to_server.drain(..discard);
                    break ready;
                }
            }
        };
        if client_ready && server_ready && to_server.is_empty() && to_client.is_empty() {
            let server = Records::take_over(server).map_err(|_| {
                Error::General("the server negotiated a suite not sealed here".into())
            })??;
            let (secrets, kernel) = client.dangerous_into_kernel_connection()?;
            return Ok((server, Records::new(secrets, kernel)?));
        }
    }
    Err(Error::General(
        "the in-memory handshake did not finish".into(),
    ))
}

/// Does what one state of an unbuffered connection asks, writing what it sends to `out`.
/// Returns the input bytes it is done with, and, once the connection waits for its peer,
/// whether it may send application data (None: call again).
fn step<D>(
    status: UnbufferedStatus<'_, '_, D>,
    out: &mut Vec<u8>,
) -> Result<(usize, Option<bool>), Error> {
    let discard = status.discard;
    let waiting = match status.state? {
        ConnectionState::EncodeTlsData(mut encode) => {
            let start = out.len();
            out.resize(start + 64 * 1024, 0);
            let written = encode.encode(&mut out[start..]).map_err(|e| match e {
                EncodeError::InsufficientSize(_) => Error::General("a flight over 64 KiB".into()),
                e => Error::General(e.to_string()),
            });
            out.truncate(start + written.as_ref().map_or(0, |n| *n));
            written?;
            None
        }
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            None
        }
        ConnectionState::WriteTraffic(_) => Some(true),
        ConnectionState::BlockedHandshake => Some(false),
        other => {
            return Err(Error::General(format!(
                "unexpected during the handshake: {other:?}"
            )));
        }
    };
    Ok((discard, waiting))
}

/// How feeding a side's records has ended so far.
#[derive(Debug)]
pub enum Ended {
    /// All the bytes were read; this many (the start of a record) are carried.
    Waiting(usize),
    /// close_notify arrived; this many bytes after it were not consumed.
    Closed(usize),
    /// `open` refused a record.
    Failed(Error),
}

/// What feeding bytes to one side got out of them, and the bytes it carries between reads.
#[derive(Debug)]
pub struct Fed {
    /// The application data, in order.
    pub plain: Vec<u8>,
    /// What the receiving side sealed in answer (key updates, an alert).
    pub tls: Vec<u8>,
    /// How it has ended; [`Fed::read`] does nothing once it is not `Waiting`.
    pub ended: Ended,
    /// The carried bytes, then the current read.
    buf: Vec<u8>,
}

impl Default for Fed {
    fn default() -> Fed {
        Fed {
            plain: Vec::new(),
            tls: Vec::new(),
            ended: Ended::Waiting(0),
            buf: Vec::new(),
        }
    }
}

impl Fed {
    /// One read of `bytes` as the relay does it: after the bytes carried from the read before,
    /// which are what [`Records::open`] did not consume. Returns whether more may be read (no
    /// error, no close_notify).
    pub fn read<D>(&mut self, records: &mut Records<D>, bytes: &[u8]) -> bool {
        if !matches!(self.ended, Ended::Waiting(_)) {
            return false;
        }
        self.buf.extend_from_slice(bytes);
        match records.open(&mut self.buf, &mut self.plain, &mut self.tls) {
            Ok(opened) => {
                self.buf.drain(..opened.consumed);
                if opened.closed {
                    self.ended = Ended::Closed(self.buf.len());
                    return false;
                }
                self.ended = Ended::Waiting(self.buf.len());
                true
            }
            Err(error) => {
                self.ended = Ended::Failed(error);
                false
            }
        }
    }

    /// Reads `wire` in reads of the sizes `read_size` gives (0 counts as 1), until it is all
    /// read or an error or close_notify ends it (then `Closed` counts the unread bytes too).
    pub fn read_all<D>(
        &mut self,
        records: &mut Records<D>,
        wire: &[u8],
        mut read_size: impl FnMut() -> usize,
    ) {
        let mut read = 0;
        while read < wire.len() {
            let n = read_size().max(1).min(wire.len() - read);
            read += n;
            if !self.read(records, &wire[read - n..read]) {
                break;
            }
        }
        if let Ended::Closed(rest) = &mut self.ended {
            *rest += wire.len() - read;
        }
    }
}

/// Feeds `wire` to `records` as the relay feeds a client's bytes, in reads of the sizes
/// `read_size` gives: see [`Fed::read_all`].
pub fn feed<D>(records: &mut Records<D>, wire: &[u8], read_size: impl FnMut() -> usize) -> Fed {
    let mut fed = Fed::default();
    fed.read_all(records, wire, read_size);
    fed
}
