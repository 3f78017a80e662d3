//! One client connection from accept to close: inbound PROXY header, backend connect, outbound
//! PROXY header, relay. Every failure ends this connection only, and is counted.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::held::Held;
use super::pacing::Pacer;
use super::registry::Registry;
use super::relay::{Counters, Relay, RelayEnd, Side, Timeouts};
use super::tls::{self, Handshaken, TlsRelay};
use super::upstream;
use crate::backend::OutageLine;
use crate::config::ProxyProtocol;
use crate::metrics::{HandshakeFailure, ListenerMetrics, RefuseReason};
use crate::mqtt;
use crate::net::proxy_protocol::{self, Inbound, SslInfo};
use crate::net::socket::shutdown_write;
use crate::runtime::{ListenerId, ListenerPlan, Runtime};
use crate::tls::Terminator;

/// What every connection of one listener on one relay thread shares. One copy per thread keeps
/// the reference count that every connection takes in that thread's core.
pub(crate) struct ListenerShared {
    pub(crate) id: ListenerId,
    pub(crate) name: String,
    pub(crate) metrics: ListenerMetrics,
    pub(crate) registry: Arc<Registry>,
    /// Where each new connection finds its listener's current plan.
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    /// Connections of this listener open now, on every relay thread: the count the limit is
    /// checked against and taken from in one step, so that threads accepting at once cannot
    /// overshoot it (the gauge in `metrics` follows it, for `/metrics`).
    pub(crate) open: Arc<AtomicU32>,
    /// The listener's admission pacing, shared by its relay threads like `open`.
    pub(crate) pacer: Arc<Pacer>,
}

/// Holds a connection's place in the listener's count and the registry until it ends.
pub(crate) struct Slot {
    shared: Arc<ListenerShared>,
}

impl Slot {
    /// Takes one of the listener's `limit` places; `None` when all are taken.
    pub(crate) fn acquire(shared: &Arc<ListenerShared>, limit: u32) -> Option<Slot> {
        shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()?;
        shared.metrics.active.inc();
        shared.metrics.total.inc();
        Some(Slot {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The gauge first, so that it never reads above the count the limit is checked on.
        self.shared.metrics.active.dec();
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        // Runs inside the connection's task, also when the drain aborts it.
        self.shared.registry.closed_current();
    }
}

/// What set-up hands to the relay: the client, the backend, the timeouts of the plan the
/// connection started with, and the TLS session when the listener terminates TLS. Nothing else
/// of the plan is needed once bytes flow, so an idle connection holds no reference to any
/// runtime snapshot.
pub(crate) struct Open {
    client: TcpStream,
    backend: TcpStream,
    timeouts: Timeouts,
    tls: Option<Handshaken>,
}

pub(crate) type Opened = Option<Open>;

/// One client connection as a task. Written by hand rather than as an `async fn` because an
/// idle connection holds this for its whole life: set-up state lives in a box that is freed
/// when the relay starts, and the relaying state is the two sockets and a few words.
pub(crate) enum Connection {
    /// Held by admission pacing until its turn; nothing read yet.
    Held(Box<Held>, Slot),
    /// PROXY header, backend connect, PROXY header out.
    Opening(Pin<Box<dyn Future<Output = Opened> + Send>>, Slot),
    /// Relaying bytes.
    Relaying(Relay, Slot),
    /// Relaying bytes through TLS terminated here.
    RelayingTls(Box<TlsRelay>, Slot),
    /// Ended; polled no more.
    Done,
}

impl Connection {
    /// The task that serves one accepted client until it closes.
    pub(crate) fn new(
        client: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        plan: Arc<ListenerPlan>,
    ) -> Connection {
        let open = open(client, peer, Arc::clone(&slot.shared), plan);
        Connection::Opening(Box::pin(open), slot)
    }

    /// The task of a client that admission pacing holds first.
    pub(crate) fn held(held: Held, slot: Slot) -> Connection {
        Connection::Held(Box::new(held), slot)
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Nothing here is self-referential (the set-up future is pinned in its own box).
        let this = self.get_mut();
        loop {
            match this {
                Connection::Held(held, slot) => match ready!(held.poll_turn(cx, &slot.shared)) {
                    Some((client, peer, plan)) => {
                        if let Connection::Held(_, slot) = std::mem::replace(this, Connection::Done)
                        {
                            *this = Connection::new(client, peer, slot, plan);
                        }
                    }
                    None => {
                        *this = Connection::Done;
                        return Poll::Ready(());
                    }
                },
                Connection::Opening(open, _) => match ready!(open.as_mut().poll(cx)) {
                    Some(open) => {
                        if let Connection::Opening(_, slot) =
                            std::mem::replace(this, Connection::Done)
                        {
                            *this = match open.tls {
                                None => Connection::Relaying(
                                    Relay::new(open.client, open.backend, open.timeouts),
                                    slot,
                                ),
                                Some(session) => match TlsRelay::new(
                                    open.client,
                                    open.backend,
                                    session,
                                    open.timeouts,
                                ) {
                                    Ok(relay) => Connection::RelayingTls(Box::new(relay), slot),
                                    Err((error, client, backend)) => {
                                        let end = RelayEnd::Failed(Side::Client, error);
                                        log_end(&client, &backend, end, &slot.shared.metrics);
                                        return Poll::Ready(());
                                    }
                                },
                            };
                        }
                    }
                    None => {
                        *this = Connection::Done;
                        return Poll::Ready(());
                    }
                },
                Connection::Relaying(relay, slot) => {
                    let metrics = &slot.shared.metrics;
                    let end = ready!(relay.poll_relay(cx, counters(metrics)));
                    log_end(relay.client(), relay.backend(), end, metrics);
                    *this = Connection::Done;
                    return Poll::Ready(());
                }
                Connection::RelayingTls(relay, slot) => {
                    let metrics = &slot.shared.metrics;
                    let end = ready!(relay.poll_relay(cx, counters(metrics)));
                    log_end(relay.client(), relay.backend(), end, metrics);
                    *this = Connection::Done;
                    return Poll::Ready(());
                }
                Connection::Done => return Poll::Ready(()),
            }
        }
    }
}

/// The byte counters of a listener's relays.
fn counters(metrics: &ListenerMetrics) -> Counters<'_> {
    Counters {
        to_backend: &metrics.bytes_to_backend,
        to_client: &metrics.bytes_to_client,
    }
}

/// Counts and logs how a relay ended. Addresses are read back from the sockets here rather than
/// kept for the connection's whole life.
fn log_end(client: &TcpStream, backend: &TcpStream, end: RelayEnd, metrics: &ListenerMetrics) {
    // Two system calls per connection that only a debug log needs.
    let (peer, server) = if tracing::enabled!(tracing::Level::DEBUG) {
        (client.peer_addr().ok(), backend.peer_addr().ok())
    } else {
        (None, None)
    };
    match end {
        RelayEnd::Closed => tracing::trace!(?peer, ?server, "closed"),
        RelayEnd::IdleTimeout => {
            tracing::debug!(?peer, ?server, "idle timeout");
            metrics.idle_timeouts.inc();
        }
        RelayEnd::HalfCloseTimeout => {
            tracing::debug!(?peer, ?server, "half-closed and silent: closed");
            metrics.half_close_timeouts.inc();
        }
        RelayEnd::Reset(side) => {
            tracing::debug!(?peer, ?server, ?side, "reset");
            match side {
                Side::Client => metrics.reset_by_client.inc(),
                Side::Backend => metrics.reset_by_backend.inc(),
            }
        }
        RelayEnd::Failed(side, error) => {
            tracing::debug!(?peer, ?server, ?side, %error, "relay failed");
            match side {
                Side::Client => metrics.failed_on_client.inc(),
                Side::Backend => metrics.failed_on_backend.inc(),
            }
        }
    }
}

/// Everything before the relay: socket options, the inbound PROXY header, the backend connect and
/// the outbound PROXY header. `None` when the connection ends here (counted where it is refused).
async fn open(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    plan: Arc<ListenerPlan>,
) -> Opened {
    let metrics = &shared.metrics;
    // TCP_NODELAY and keepalive came with the socket from the listener (Linux copies them on
    // accept): no system call here. The original addresses come from an inbound PROXY header,
    // or from the socket only if a header goes out.
    let inbound = if plan.accept_proxy_protocol {
        let read = proxy_protocol::read_inbound(&mut client);
        match tokio::time::timeout(plan.proxy_header_timeout, read).await {
            Ok(Ok(Inbound::Proxied { src, dst })) => Some((src, dst)),
            Ok(Ok(Inbound::Local)) => None,
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
        None
    };
    let mut tls = match &plan.tls {
        None => None,
        Some(terminator) => Some(terminate(&mut client, peer, terminator).await?),
    };
    // The client's first bytes for the broker: its CONNECT when the listener reads it, and on a
    // terminating listener whatever came with the handshake.
    let mut first = tls.as_mut().map(Handshaken::take_early).unwrap_or_default();
    let connect = match plan.preread {
        None => None,
        Some(preread) => {
            let read = match &mut tls {
                None => {
                    let source = &mut mqtt::Plain(&mut client);
                    mqtt::read_connect_from(source, &mut first, preread.max_size, preread.timeout)
                        .await
                }
                Some(session) => {
                    let source = &mut session.plaintext(&mut client);
                    mqtt::read_connect_from(source, &mut first, preread.max_size, preread.timeout)
                        .await
                }
            };
            match read {
                Ok(info) => Some(info),
                Err(error) => {
                    tracing::debug!(%peer, %error, "no valid MQTT CONNECT");
                    metrics.refused(RefuseReason::MqttConnect);
                    close_cleanly(&client);
                    return None;
                }
            }
        }
    };
    let client_id = connect
        .as_ref()
        .map(|info| info.client_id.as_str())
        .filter(|id| !id.is_empty());

    let Some((mut backend, server, role, lease)) =
        upstream::connect(&plan.backend, client_id).await
    else {
        tracing::debug!(%peer, backend = %plan.backend.name, "no backend server accepted the connection");
        metrics.refused(RefuseReason::NoBackend);
        log_outage(
            &plan,
            plan.backend.outage.refused(std::time::Instant::now()),
        );
        close_cleanly(&client);
        return None;
    };
    log_outage(&plan, plan.backend.outage.accepted());
    if let Some(info) = &connect {
        tracing::debug!(
            %peer,
            client_id = %info.client_id,
            protocol = info.protocol.level(),
            username = info.username.as_deref(),
            %server,
            role = role.as_str(),
            "relaying an MQTT client"
        );
    } else {
        tracing::debug!(%peer, %server, role = role.as_str(), "relaying");
    }
    shared
        .registry
        .relaying_current(plan.backend.id, role, lease);
    let addresses = match (plan.proxy_protocol, inbound) {
        (ProxyProtocol::Off, _) => None,
        (_, Some(addresses)) => Some(addresses),
        (_, None) => match client.local_addr() {
            Ok(local) => Some((peer, local)),
            Err(error) => {
                tracing::debug!(%peer, %error, "the client left before relaying began");
                metrics.refused(RefuseReason::ClientGone);
                return None;
            }
        },
    };
    // The PROXY header and the client's first bytes go out in one write.
    let client_bytes = first.len();
    if let Some((src, dst)) = addresses
        && let Some(mut header) = proxy_protocol::header(plan.proxy_protocol, src, dst)
    {
        if let (ProxyProtocol::V2, Some(session)) = (plan.proxy_protocol, &tls) {
            let ssl = SslInfo {
                version: session.version_name(),
                client_cert: session.conn.peer_certificates().is_some(),
                common_name: session.client_cn(),
                resumed: session.resumed(),
            };
            proxy_protocol::append_ssl_tlv(&mut header, &ssl);
        }
        header.append(&mut first);
        first = header;
    }
    if !first.is_empty() {
        if let Err(error) = backend.write_all(&first).await {
            tracing::debug!(%peer, %server, %error, "sending the PROXY header or the client's first bytes failed");
            metrics.refused(RefuseReason::BackendError);
            close_cleanly(&client);
            return None;
        }
        metrics.bytes_to_backend.inc_by(client_bytes as u64);
    }
    let timeouts = Timeouts {
        idle: plan.idle_timeout,
        half_close: plan.half_close_timeout,
    };
    Some(Open {
        client,
        backend,
        timeouts,
        tls,
    })
}

/// The TLS handshake of a terminating listener, within its `handshake_timeout`, counted either
/// way. `None` when it failed: that connection ends here.
async fn terminate(
    client: &mut TcpStream,
    peer: SocketAddr,
    terminator: &Terminator,
) -> Option<Handshaken> {
    let server = Arc::clone(&terminator.material().server);
    let metrics = &terminator.metrics;
    let timeout = terminator.config.handshake_timeout;
    match tokio::time::timeout(timeout, tls::handshake(client, server)).await {
        Ok(Ok(session)) => {
            metrics.handshake(session.conn.protocol_version(), session.resumed());
            Some(session)
        }
        Ok(Err(failed)) => {
            tracing::debug!(%peer, reason = failed.reason.label(), error = %failed.error, "TLS handshake failed");
            metrics.failed(failed.reason);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            metrics.failed(HandshakeFailure::Timeout);
            None
        }
    }
}

/// Logs what an outage of the plan's backend asks for: its start, a summary now and then, its end.
fn log_outage(plan: &ListenerPlan, line: OutageLine) {
    let backend = &plan.backend.name;
    match line {
        OutageLine::None => {}
        OutageLine::Started => tracing::warn!(
            %backend,
            "no backend server accepts connections: refusing clients (counted in brokerside_connections_refused_total{{reason=\"no_backend\"}})"
        ),
        OutageLine::Summary { refused, total } => {
            tracing::warn!(%backend, refused, total, "still refusing clients: no backend server accepts connections")
        }
        OutageLine::Ended { total, lasted } => {
            tracing::info!(%backend, refused = total, ?lasted, "a backend server accepts connections again")
        }
    }
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
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::runtime::testing::unbound_runtime;

    /// Every idle connection holds one of these for its whole life: its size is a large part of
    /// the memory an idle MQTT connection costs, so it is guarded here.
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let metrics = Metrics::new();
        let runtime = unbound_runtime(Config::embedded_default().unwrap(), &metrics);
        let plan = Arc::clone(&runtime.listeners[0].plan);
        let shared = Arc::new(ListenerShared {
            id: runtime.listeners[0].id,
            name: "mqtt".to_string(),
            metrics: metrics.listener("mqtt"),
            registry: Arc::default(),
            runtime: Arc::new(arc_swap::ArcSwap::from_pointee(runtime)),
            open: Arc::default(),
            pacer: Arc::new(Pacer::new("mqtt", metrics.listener("mqtt").admission)),
        });
        let slot = Slot::acquire(&shared, 1).expect("a free place");
        assert!(
            Slot::acquire(&shared, 1).is_none(),
            "a limit of 1 gave two places"
        );
        let task = Connection::new(client, "127.0.0.1:1".parse().unwrap(), slot, plan);
        // tokio rounds a task up to 128-byte steps; at most 128 bytes of future keeps it at 256.
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 128,
            "the per-connection future grew to {size} bytes"
        );
    }

    /// The limit is taken in one step: threads that accept at once never hold more places than
    /// it allows (checking a shared count and then raising it lets them overshoot).
    #[test]
    fn racing_threads_never_take_more_places_than_the_limit() {
        const LIMIT: u32 = 2;
        let metrics = Metrics::new();
        let runtime = unbound_runtime(Config::embedded_default().unwrap(), &metrics);
        let shared = Arc::new(ListenerShared {
            id: runtime.listeners[0].id,
            name: "mqtt".to_string(),
            metrics: metrics.listener("mqtt"),
            registry: Arc::new(Registry::default()),
            runtime: Arc::new(arc_swap::ArcSwap::from_pointee(runtime)),
            open: Arc::default(),
            pacer: Arc::new(Pacer::new("mqtt", metrics.listener("mqtt").admission)),
        });
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    let mut most = 0;
                    for _ in 0..100_000 {
                        if let Some(slot) = Slot::acquire(&shared, LIMIT) {
                            most = most.max(shared.open.load(Ordering::Acquire));
                            drop(slot);
                        }
                    }
                    most
                })
            })
            .collect();
        let most = threads.into_iter().map(|t| t.join().unwrap()).max();
        assert_eq!(
            most,
            Some(LIMIT),
            "places held at once with a limit of {LIMIT}"
        );
        assert_eq!(shared.metrics.active.get(), 0);
    }
}
