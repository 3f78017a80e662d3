//! Raw TCP peers: backends the test scripts connection by connection (to record exact bytes,
//! half-close, or kill one socket mid-stream), an echo backend, a port nobody listens on, and
//! small client-side helpers with bounded waits.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::within;

/// A port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An address where nothing listens: connecting to it is refused.
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A backend that hands every accepted connection to the test, which scripts it.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
}

impl RawBackend {
    /// Listens on `bind` (e.g. `"127.0.0.1:0"`).
    pub async fn start(bind: &str) -> RawBackend {
        let listener = TcpListener::bind(bind).await.expect("bind raw backend");
        let addr = listener.local_addr().expect("raw backend address");
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(conn) = listener.accept().await {
                if tx.send(conn).is_err() {
                    break;
                }
            }
        });
        RawBackend { addr, accepted }
    }

    /// The next connection the proxy opened to this backend, and its source address.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        within("the proxy to connect to the backend", self.accepted.recv())
            .await
            .expect("raw backend accept loop ended")
    }
}

/// A backend that echoes every byte and passes a FIN back once the client's FIN arrives.
pub async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                    let _ = write.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects to `addr` within [`super::WAIT`].
pub async fn connect(addr: SocketAddr) -> TcpStream {
    within(&format!("connect to {addr}"), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Reads exactly `n` bytes.
pub async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    within(&format!("{n} bytes to arrive"), stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads until the peer's FIN; the result is the bytes, or the error that ended the stream.
pub async fn read_to_eof(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    within("the stream to end", stream.read_to_end(&mut buf))
        .await
        .map(|_| buf)
}

/// Writes `bytes` and waits for them to come back (through an echo backend).
pub async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    within("write", stream.write_all(bytes))
        .await
        .expect("write to the proxy");
    assert_eq!(read_n(stream, bytes.len()).await, bytes);
}

/// Closes `stream` with a TCP reset instead of a FIN (SO_LINGER 0).
pub fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// `len` bytes of a pattern that makes a shifted or dropped chunk show up as a mismatch.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}
