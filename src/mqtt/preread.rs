//! Reading a client's CONNECT off its stream before a server is chosen, bounded in size and
//! time, keeping the exact bytes so they can be forwarded to the broker unchanged.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::connect::{self, ConnectError, ConnectInfo, Parse};

/// The most a single read asks for. A client that declares a large CONNECT and sends it slowly
/// makes the buffer grow with what arrives, not with what it declared.
const READ_CHUNK: usize = 4096;

/// Why no CONNECT could be read. Each closes that connection only; messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum PrereadError {
    /// The bytes are not a valid CONNECT (any [`ConnectError`] but `TooLarge`).
    #[error("{0}")]
    Malformed(ConnectError),
    /// The fixed header declares a CONNECT larger than allowed.
    #[error("CONNECT of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The declared size, fixed header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The whole CONNECT did not arrive in time.
    #[error("no complete CONNECT within {after:?} ({received} bytes received)")]
    TimedOut {
        /// The time allowed.
        after: Duration,
        /// The bytes that had arrived.
        received: usize,
    },
    /// The client closed its side before the whole CONNECT arrived.
    #[error("the client closed the connection after {received} bytes, before a complete CONNECT")]
    Closed {
        /// The bytes that had arrived.
        received: usize,
    },
    /// Reading from the client failed.
    #[error("reading the CONNECT: {0}")]
    Io(#[from] io::Error),
}

impl From<ConnectError> for PrereadError {
    fn from(error: ConnectError) -> PrereadError {
        match error {
            ConnectError::TooLarge { size, max } => PrereadError::TooLarge { size, max },
            error => PrereadError::Malformed(error),
        }
    }
}

/// Where the bytes of a CONNECT come from: a plain stream, or TLS decrypted by the caller.
pub trait ConnectSource {
    /// Appends more of the client's bytes to `buf`: at most `want` from a stream, which is what
    /// keeps a plain read from taking a byte past the CONNECT; a decrypting source may append a
    /// whole record. Resolves to the number appended, 0 once the client has closed. Must only
    /// lengthen `buf` by what arrived, also when cancelled (the timeout drops it).
    fn read_more(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;
}

/// A plain stream as a [`ConnectSource`].
pub struct Plain<'a, S>(pub &'a mut S);

impl<S: AsyncRead + Unpin + Send> ConnectSource for Plain<'_, S> {
    async fn read_more(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        buf.reserve(want);
        // read_buf only lengthens `buf` by what arrived, so when the timeout cancels this read,
        // `buf` still holds exactly the bytes received.
        (&mut *self.0).take(want as u64).read_buf(buf).await
    }
}

/// Reads the client's first packet, which must be a CONNECT of at most `max_size` bytes, all of
/// it within `timeout`. Returns the bytes read, to be forwarded to the broker exactly, and what
/// the CONNECT says.
///
/// Never reads a byte past the CONNECT: each read asks for no more than the parser says is still
/// missing, so the bytes returned are exactly the CONNECT, and a client's next packets (clients
/// may send SUBSCRIBE or PUBLISH before the CONNACK) stay in the stream for the relay. A CONNECT
/// split into any number of segments is read the same. On error the bytes read are dropped and
/// the connection should be closed.
pub async fn read_connect<S: AsyncRead + Unpin + Send>(
    stream: &mut S,
    max_size: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, ConnectInfo), PrereadError> {
    let mut buf = Vec::new();
    let info = read_connect_from(&mut Plain(stream), &mut buf, max_size, timeout).await?;
    Ok((buf, info))
}

/// Reads from `source` into `buf` (which may hold the first bytes already, such as data that
/// came with a TLS handshake) until `buf` starts with a complete CONNECT of at most `max_size`
/// bytes, all within `timeout`. What a decrypting source appended past the CONNECT stays in
/// `buf`, to be forwarded with it.
pub async fn read_connect_from<S: ConnectSource>(
    source: &mut S,
    buf: &mut Vec<u8>,
    max_size: usize,
    timeout: Duration,
) -> Result<ConnectInfo, PrereadError> {
    let read = tokio::time::timeout(timeout, read_until_complete(source, max_size, &mut *buf));
    match read.await {
        Ok(result) => result,
        Err(_elapsed) => Err(PrereadError::TimedOut {
            after: timeout,
            received: buf.len(),
        }),
    }
}

/// Reads into `buf` until it starts with a complete CONNECT.
async fn read_until_complete<S: ConnectSource>(
    source: &mut S,
    max_size: usize,
    buf: &mut Vec<u8>,
) -> Result<ConnectInfo, PrereadError> {
    loop {
        let needed = match connect::parse(buf, max_size)? {
            Parse::Complete { connect, .. } => return Ok(ConnectInfo::from(connect)),
            Parse::Incomplete { needed } => needed,
        };
        if source.read_more(buf, needed.min(READ_CHUNK)).await? == 0 {
            return Err(PrereadError::Closed {
                received: buf.len(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::mqtt::DEFAULT_MAX_CONNECT_SIZE as MAX;
    use crate::mqtt::testing::{self, Sample};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A connected pair of real TCP sockets: (client, the proxy's side).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        (client, accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn a_connect_sent_one_byte_at_a_time_is_read_whole() {
        for Sample { name, bytes, info } in testing::samples() {
            let (mut client, mut proxy) = socket_pair().await;
            let sent = bytes.clone();
            let writer = tokio::spawn(async move {
                for byte in sent {
                    client.write_all(&[byte]).await.expect("write");
                    client.flush().await.expect("flush");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                client
            });
            let (read, got) = read_connect(&mut proxy, MAX, TIMEOUT)
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!((read, got), (bytes, info), "{name}");
            writer.await.expect("writer");
        }
    }

    #[tokio::test]
    async fn the_packets_after_the_connect_stay_in_the_socket() {
        let (mut client, mut proxy) = socket_pair().await;
        let connect = testing::v4_with_everything();
        let subscribe = [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01];
        let mut sent = connect.clone();
        sent.extend_from_slice(&subscribe);
        client.write_all(&sent).await.expect("write");
        client.shutdown().await.expect("shutdown");

        let (read, info) = read_connect(&mut proxy, MAX, TIMEOUT)
            .await
            .expect("CONNECT");
        assert_eq!(read, connect);
        assert_eq!(info.username.as_deref(), Some("zoë"));
        let mut rest = Vec::new();
        proxy.read_to_end(&mut rest).await.expect("read the rest");
        assert_eq!(rest, subscribe);
    }

    #[tokio::test]
    async fn garbage_is_refused_without_waiting() {
        let (mut client, mut proxy) = socket_pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        let error = read_connect(&mut proxy, MAX, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(
                error,
                PrereadError::Malformed(ConnectError::NotConnect { first: b'G' })
            ),
            "{error}"
        );
        assert!(started.elapsed() < TIMEOUT / 2);
    }

    #[tokio::test]
    async fn a_wrong_protocol_name_is_refused() {
        let (mut client, mut proxy) = socket_pair().await;
        let mut packet = testing::v4_with_everything();
        packet[4..8].copy_from_slice(b"MQTX");
        client.write_all(&packet).await.expect("write");
        let error = read_connect(&mut proxy, MAX, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(
                error,
                PrereadError::Malformed(ConnectError::WrongProtocolName)
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_remaining_length_over_the_limit_is_refused_from_the_fixed_header() {
        let (mut client, mut proxy) = socket_pair().await;
        // 2 MiB declared; only the fixed header is sent, so nothing waits for the rest.
        client
            .write_all(&[0x10, 0x80, 0x80, 0x80, 0x01])
            .await
            .expect("write");
        let error = read_connect(&mut proxy, MAX, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(error, PrereadError::TooLarge { size, max } if size == 5 + (1 << 21) && max == MAX),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "CONNECT of 2097157 bytes is over the 65536-byte limit"
        );
    }

    #[tokio::test]
    async fn a_truncated_connect_then_silence_times_out() {
        let (mut client, mut proxy) = socket_pair().await;
        let packet = testing::v4_with_everything();
        client.write_all(&packet[..20]).await.expect("write");
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let error = read_connect(&mut proxy, MAX, timeout).await.unwrap_err();
        assert!(
            matches!(error, PrereadError::TimedOut { after, received: 20 } if after == timeout),
            "{error}"
        );
        assert!(started.elapsed() >= timeout);
        assert_eq!(
            error.to_string(),
            "no complete CONNECT within 300ms (20 bytes received)"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_connect_is_told_apart() {
        let (mut client, mut proxy) = socket_pair().await;
        let packet = testing::v4_with_everything();
        client.write_all(&packet[..11]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let error = read_connect(&mut proxy, MAX, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(error, PrereadError::Closed { received: 11 }),
            "{error}"
        );
    }
}
