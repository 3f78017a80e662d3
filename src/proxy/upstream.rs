//! Opening the backend side of a connection: servers tried in order, each within the backend's
//! connect timeout, from a rotated source address when the server is on loopback and its ports
//! run short. A connect that succeeds is timed into the backend's latency histogram and counted
//! on its server.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::backend::{Backend, Lease, Role};
use crate::net::socket::upstream_socket;

/// Connects to the first server of `backend` that accepts, counting each failure on its server.
/// `client_id` is the MQTT client id read from the client's CONNECT, when the listener reads it.
/// The lease counts the connection on its server until it is dropped. `None` when every server
/// refused, was unreachable or timed out.
pub async fn connect(
    backend: &Backend,
    client_id: Option<&str>,
) -> Option<(TcpStream, SocketAddr, Role, Lease)> {
    for server in backend.candidates(client_id) {
        let started = Instant::now();
        let attempt = async {
            let open = server.metrics.active.get();
            let source = backend.loopback.next_for(server.addr, open);
            let connected = upstream_socket(server.addr, source)?
                .connect(server.addr)
                .await;
            match connected {
                // The kernel's choice ran out of ports: once more, from a rotated source.
                Err(error)
                    if source.is_none() && backend.loopback.ran_short(server.addr, &error) =>
                {
                    let source = backend.loopback.next_for(server.addr, open);
                    upstream_socket(server.addr, source)?
                        .connect(server.addr)
                        .await
                }
                connected => connected,
            }
        };
        match tokio::time::timeout(backend.connect_timeout, attempt).await {
            Ok(Ok(stream)) => {
                backend
                    .metrics
                    .connect_duration
                    .observe(started.elapsed().as_secs_f64());
                return Some((stream, server.addr, server.role, server.lease()));
            }
            Ok(Err(error)) => {
                tracing::debug!(backend = %backend.name, server = %server.addr, %error, "connect failed");
            }
            Err(_) => {
                tracing::debug!(backend = %backend.name, server = %server.addr, "connect timed out");
            }
        }
        server.metrics.connect_failures.inc();
    }
    None
}
