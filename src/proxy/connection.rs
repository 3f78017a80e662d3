//! One client connection from accept to close: inbound PROXY header, backend connect, outbound
//! PROXY header, relay. Every failure ends this connection only, and is counted.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::listener::ListenerShared;
use super::proxy_protocol::{self, Inbound};
use super::relay::{self, Counters, RelayEnd, Side};
use super::socket::{shutdown_write, tune};
use super::upstream;
use crate::config::ProxyProtocol;
use crate::metrics::RefuseReason;
use crate::shutdown::TrackerGuard;

/// Holds a connection's place in the listener's count and the shutdown tracker until it ends.
pub(crate) struct Slot {
    shared: Arc<ListenerShared>,
    _tracker: TrackerGuard,
}

impl Slot {
    pub(crate) fn new(shared: Arc<ListenerShared>, tracker: TrackerGuard) -> Slot {
        shared.metrics.active.inc();
        shared.metrics.total.inc();
        Slot {
            shared,
            _tracker: tracker,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.metrics.active.dec();
    }
}

/// Serves one accepted client until it closes.
pub(crate) async fn serve(mut client: TcpStream, peer: SocketAddr, slot: Slot) {
    let shared = &slot.shared;
    let metrics = &shared.metrics;
    if let Err(error) = tune(&client) {
        tracing::debug!(%peer, %error, "client socket options");
    }
    let Ok(local) = client.local_addr() else {
        return;
    };
    let (src, dst) = if shared.accept_proxy_protocol {
        match tokio::time::timeout(
            shared.proxy_header_timeout,
            proxy_protocol::read_inbound(&mut client),
        )
        .await
        {
            Ok(Ok(Inbound::Proxied { src, dst })) => (src, dst),
            Ok(Ok(Inbound::Local)) => (peer, local),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "bad inbound PROXY header");
                metrics.refused(RefuseReason::ProxyHeader);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no inbound PROXY header in time");
                metrics.refused(RefuseReason::ProxyHeader);
                return;
            }
        }
    } else {
        (peer, local)
    };

    let Some((mut backend, server)) = upstream::connect(&shared.backend).await else {
        tracing::warn!(%peer, backend = %shared.backend.name, "no backend server accepted the connection");
        metrics.refused(RefuseReason::NoBackend);
        close_cleanly(&client);
        return;
    };
    let header = match shared.proxy_protocol {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => Some(proxy_protocol::encode_v1(src, dst)),
        ProxyProtocol::V2 => Some(proxy_protocol::encode_v2(src, dst)),
    };
    if let Some(header) = header
        && let Err(error) = backend.write_all(&header).await
    {
        tracing::debug!(%peer, %server, %error, "writing the PROXY header failed");
        return;
    }

    let counters = Counters {
        to_backend: &metrics.bytes_to_backend,
        to_client: &metrics.bytes_to_client,
    };
    match relay::relay(&client, &backend, shared.idle_timeout, counters).await {
        RelayEnd::Closed => tracing::trace!(%peer, %server, "closed"),
        RelayEnd::IdleTimeout => tracing::debug!(%peer, %server, "idle timeout"),
        RelayEnd::Reset(side) => {
            tracing::debug!(%peer, %server, ?side, "reset");
            match side {
                Side::Client => metrics.reset_by_client.inc(),
                Side::Backend => metrics.reset_by_backend.inc(),
            }
        }
        RelayEnd::Failed(side, error) => {
            tracing::debug!(%peer, %server, ?side, %error, "relay failed")
        }
    }
}

/// Ends a connection that never reached a backend with a FIN rather than a reset: what the
/// client sent is read and dropped first, because closing a socket with unread bytes resets it.
fn close_cleanly(client: &TcpStream) {
    let mut scratch = [0u8; 1024];
    for _ in 0..64 {
        match client.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    shutdown_write(client);
}
