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
pub(crate) async fn serve(client: TcpStream, peer: SocketAddr, slot: Slot) {
    let shared = &slot.shared;
    // Set-up runs boxed: its state (the inbound header buffer, the connect attempt, addresses)
    // is freed before the relay starts, so an idle connection's task holds only what relaying needs.
    let Some((client, backend, server)) = Box::pin(open(client, peer, shared)).await else {
        return;
    };
    let metrics = &shared.metrics;
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

/// Everything before the relay: socket options, the inbound PROXY header, the backend connect and
/// the outbound PROXY header. `None` when the connection ends here (counted where it is refused).
async fn open(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: &ListenerShared,
) -> Option<(TcpStream, TcpStream, SocketAddr)> {
    let metrics = &shared.metrics;
    if let Err(error) = tune(&client) {
        tracing::debug!(%peer, %error, "client socket options");
    }
    let local = client.local_addr().ok()?;
    let (src, dst) = if shared.accept_proxy_protocol {
        let read = proxy_protocol::read_inbound(&mut client);
        match tokio::time::timeout(shared.proxy_header_timeout, read).await {
            Ok(Ok(Inbound::Proxied { src, dst })) => (src, dst),
            Ok(Ok(Inbound::Local)) => (peer, local),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "bad inbound PROXY header");
                metrics.refused(RefuseReason::ProxyHeader);
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "no inbound PROXY header in time");
                metrics.refused(RefuseReason::ProxyHeader);
                return None;
            }
        }
    } else {
        (peer, local)
    };

    let Some((mut backend, server)) = upstream::connect(&shared.backend).await else {
        tracing::warn!(%peer, backend = %shared.backend.name, "no backend server accepted the connection");
        metrics.refused(RefuseReason::NoBackend);
        close_cleanly(&client);
        return None;
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
        return None;
    }
    Some((client, backend, server))
}

/// Ends a connection that is refused before relaying with a FIN rather than a reset: what the
/// client sent is read and dropped first, because closing a socket with unread bytes resets it.
pub(crate) fn close_cleanly(client: &TcpStream) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::Backend;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::shutdown::Tracker;

    /// Every idle connection holds one of these futures for its whole life: its size is a
    /// large part of the memory an idle MQTT connection costs, so it is guarded here.
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let config = Config::embedded_default().unwrap();
        let metrics = Metrics::new();
        let backend = Arc::new(Backend::new(&config.backends[0], &metrics));
        let shared = Arc::new(ListenerShared::new(
            &config.listeners[0],
            backend,
            metrics.listener("mqtt"),
        ));
        let slot = Slot::new(shared, Arc::new(Tracker::default()).open());
        let task = serve(client, "127.0.0.1:1".parse().unwrap(), slot);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 448,
            "the per-connection future grew to {size} bytes"
        );
    }
}
