//! Opening a probe's connection (TCP connect, then the backend's PROXY header), which every probe
//! kind starts with, and the `tcp` probe, which stops there.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{ProbeError, Step, describe};
use crate::config::ProxyProtocol;
use crate::net::proxy_protocol::header;

/// Connects to `server` and closes again: the server accepts connections.
pub(super) async fn probe(
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<(), ProbeError> {
    // Dropping the stream closes it with a FIN; nothing was left unread to turn it into a reset.
    connect(server, proxy, step).await.map(drop)
}

/// Connects to `server` and writes the PROXY header `proxy` asks for, naming this socket as the
/// source: a broker that requires the header (EMQX `proxy_protocol = true`) drops connections
/// without it, so a probe without one would fail against a healthy broker.
pub(super) async fn connect(
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<TcpStream, ProbeError> {
    step.at("connecting");
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| ProbeError::Connect(describe(&e)))?;
    // Probes exchange a few small packets and wait on each reply: Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let header = match proxy {
        ProxyProtocol::Off => None,
        _ => {
            let local = stream
                .local_addr()
                .map_err(|e| ProbeError::Connect(describe(&e)))?;
            header(proxy, local, server)
        }
    };
    if let Some(header) = header {
        step.at("sending the PROXY header");
        stream.write_all(&header).await.map_err(|e| {
            ProbeError::Connect(format!("{} sending the PROXY header", describe(&e)))
        })?;
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{WAIT, closed_port, error_within, passes, raw_peer};
    use crate::config::{CheckKind, ProxyProtocol};

    #[tokio::test]
    async fn passes_against_a_listener_and_sends_nothing() {
        let (addr, seen) = raw_peer(b"", None, false).await;
        passes(&CheckKind::Tcp, addr, ProxyProtocol::Off).await;
        assert_eq!(seen.await.unwrap(), b"");
    }

    #[tokio::test]
    async fn fails_against_a_closed_port() {
        let addr = closed_port().await;
        assert_eq!(
            error_within(&CheckKind::Tcp, addr, WAIT).await,
            "connection refused"
        );
    }

    #[tokio::test]
    async fn sends_the_proxy_header_first() {
        let (addr, seen) = raw_peer(b"", None, true).await;
        passes(&CheckKind::Tcp, addr, ProxyProtocol::V1).await;
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
            "{seen:?}"
        );
        assert!(seen.ends_with(&format!(" {}\r\n", addr.port())), "{seen:?}");

        let (addr, seen) = raw_peer(b"", None, true).await;
        passes(&CheckKind::Tcp, addr, ProxyProtocol::V2).await;
        let seen = seen.await.unwrap();
        assert!(seen.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{seen:?}");
        // Signature, version/command, family, length 12, then the IPv4 addresses and ports.
        assert_eq!(seen.len(), 16 + 12);
        assert_eq!(&seen[26..28], &addr.port().to_be_bytes());
    }
}
