//! The admin endpoint (:8080 by default): a small HTTP/1.1 server on hyper that the load
//! balancer, Consul, Kubernetes and Prometheus poll. It owns its socket, its connection limit and
//! its header timeout, so that it keeps answering while the relay is saturated; its handlers
//! ([`route`]) only read shared state.

mod admission;
mod health_json;
mod page;
mod routes;
mod stall;
#[cfg(test)]
mod testing;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::Instrument;

use admission::{Admission, Permit};
use stall::StallGuard;

use crate::config::AdminConfig;
use crate::metrics::AdminMetrics;
use crate::net::{ACCEPT_BACKOFF, is_per_connection};
use crate::state::SidecarState;
pub use routes::{Body, route};

/// Serves the admin routes on `listener` until the task is aborted or the runtime stops; the
/// drain does not stop it, since the load balancer must keep reading 503 while the node drains.
/// Aborting the task also closes the connections it serves.
///
/// Returns only if `listener` cannot be registered with the runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<SidecarState>,
    config: AdminConfig,
) -> io::Result<Infallible> {
    // A listener bound elsewhere (a test, a socket handed over) may still be blocking, and a
    // blocking accept would stall a runtime thread.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let admission = Admission::new(config.max_connections);
    let metrics = state.metrics.admin();
    let mut http = http1::Builder::new();
    // The header timer runs from the moment hyper waits for a request head: for the first request
    // as soon as the connection is served, and again after each response. So it cuts a client that
    // sends half a request line, and an idle keep-alive connection, alike. The write-stall guard
    // covers the other way to hold a connection: sending requests and never reading the answers.
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    // Owning the connection tasks in a set means aborting `serve` aborts them too.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "admin accept");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "admin accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                // Closing at once (rather than queueing) keeps the slow clients from delaying the
                // load balancer's next check past its own timeout: it retries on a fresh
                // connection, and its own share is still free.
                tracing::debug!(%peer, reason = refusal.label(), "admin connection refused");
                metrics.refused(refusal.label());
                drop(stream);
                continue;
            }
        };
        let span = tracing::debug_span!("admin", %peer);
        let connection = Connection {
            http: http.clone(),
            stall_timeout: config.header_timeout,
            metrics: metrics.clone(),
            _permit: permit,
        };
        connections.spawn(
            connection
                .serve(stream, peer, Arc::clone(&state))
                .instrument(span),
        );
    }
}

/// One admitted admin connection: how it is served, what it counts, and its slot.
struct Connection {
    http: http1::Builder,
    /// How long a write may wait for the client to read.
    stall_timeout: Duration,
    metrics: AdminMetrics,
    _permit: Permit,
}

impl Connection {
    /// Serves the client's requests until it leaves, errs or times out; holds its slot until
    /// then.
    async fn serve(self, stream: TcpStream, peer: SocketAddr, state: Arc<SidecarState>) {
        // Replies are small and written at once; without NODELAY a keep-alive client could wait
        // on Nagle and delayed ACKs.
        let _ = stream.set_nodelay(true);
        self.metrics.connections.inc();
        let stalled = Arc::new(AtomicBool::new(false));
        let stream = StallGuard::new(stream, self.stall_timeout, Arc::clone(&stalled));
        let metrics = self.metrics.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let (state, metrics) = (Arc::clone(&state), metrics.clone());
            async move {
                // The body is never needed (POST /drain and /reload take none); hyper discards
                // what is left.
                let (parts, _body) = request.into_parts();
                let response =
                    if parts.method == hyper::Method::POST && parts.uri.path() == "/reload" {
                        routes::reload(&parts, peer, &state).await
                    } else {
                        route(&parts, peer, &state)
                    };
                metrics.request(routes::label(parts.uri.path()), response.status().as_u16());
                Ok::<_, Infallible>(response)
            }
        });
        if let Err(error) = self
            .http
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            // Malformed requests (answered 400 by hyper), timeouts and resets end here: they
            // concern this client only.
            if stalled.load(Ordering::Acquire) {
                self.metrics.timed_out("write_stall");
            } else if error.is_timeout() {
                self.metrics.timed_out("header");
            }
            tracing::debug!(%error, "admin connection ended");
        }
        self.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::testing::{self, Reply};
    use super::*;

    /// Starts the admin server on port 0 with `header_timeout` and `max_connections`.
    async fn start(
        state: Arc<SidecarState>,
        header_timeout: Duration,
        max_connections: u32,
    ) -> (SocketAddr, tokio::task::JoinHandle<io::Result<Infallible>>) {
        let config = testing::admin_config(header_timeout, max_connections);
        let listener = crate::net::listen("admin", config.listen, 16).expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        (addr, tokio::spawn(serve(listener, state, config)))
    }

    #[tokio::test]
    async fn every_route_over_http() {
        let (state, server) = testing::state(None);
        let (addr, task) = start(Arc::clone(&state), Duration::from_secs(5), 8).await;

        let reply = testing::request(addr, "GET", "/haproxy_health").await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(
            reply.body,
            format!("backend broker-mqtt: local broker down ({server} not yet checked)\n")
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));

        testing::mark_up(&state);
        for (method, uri, status, body) in [
            ("GET", "/haproxy_health", 200, "OK\n"),
            ("GET", "/readyz", 200, "OK\n"),
            ("GET", "/livez", 200, "OK\n"),
            // Same status, no body (hyper leaves it out, Content-Length stays).
            ("HEAD", "/haproxy_health", 200, ""),
            ("HEAD", "/readyz", 200, ""),
            ("GET", "/peers", 200, "[]\n"),
            ("GET", "/peers?format=nodes", 200, ""),
            (
                "GET",
                "/peers?format=xml",
                400,
                "unknown format: expected `json` or `nodes`\n",
            ),
            ("GET", "/nope", 404, "not found\n"),
            ("DELETE", "/health", 405, "method not allowed\n"),
        ] {
            let reply = testing::request(addr, method, uri).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (status, body),
                "{method} {uri}"
            );
        }
        let head = testing::request(addr, "HEAD", "/readyz").await;
        assert_eq!(head.header("content-length"), Some("3"));
        let wrong = testing::request(addr, "DELETE", "/health").await;
        assert_eq!(wrong.header("allow"), Some("GET, HEAD"));

        let health = testing::request(addr, "GET", "/health").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&health.body).expect("JSON body");
        assert_eq!(json["status"], "ok");
        assert_eq!(json["backends"][0]["servers"][0]["state"], "up");

        let metrics = testing::request(addr, "GET", "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(
            metrics.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(
            metrics
                .body
                .contains("brokerside_connections_active{listener=\"mqtt\"} 0"),
            "{}",
            metrics.body
        );

        task.abort();
    }

    #[tokio::test]
    async fn drain_from_loopback_turns_health_503() {
        let (state, _) = testing::state(None);
        testing::mark_up(&state);
        let (addr, task) = start(Arc::clone(&state), Duration::from_secs(5), 8).await;

        let drain = testing::request(addr, "POST", "/drain").await;
        assert_eq!((drain.status, drain.body.as_str()), (202, "draining\n"));
        let again = testing::request(addr, "POST", "/drain").await;
        assert_eq!(
            (again.status, again.body.as_str()),
            (200, "already draining\n")
        );

        let health = testing::request(addr, "GET", "/haproxy_health").await;
        assert_eq!((health.status, health.body.as_str()), (503, "draining\n"));
        let json: serde_json::Value =
            serde_json::from_str(&testing::request(addr, "GET", "/health").await.body)
                .expect("JSON body");
        assert_eq!(json["draining"], true);
        assert_eq!(json["drain"]["phase"], "grace");
        assert!(
            json["drain"]["why"]
                .as_str()
                .is_some_and(|why| why.starts_with("POST /drain from 127.0.0.1:")),
            "{json}"
        );
        assert!(json["drain"]["started_at"].is_f64(), "{json}");
        task.abort();
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests_on_one_connection() {
        let (state, _) = testing::state(None);
        let (addr, task) = start(state, Duration::from_secs(5), 8).await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
        task.abort();
    }

    #[tokio::test]
    async fn garbage_gets_400_and_the_next_client_is_served() {
        let (state, _) = testing::state(None);
        let (addr, task) = start(state, Duration::from_secs(5), 8).await;

        let mut garbage = TcpStream::connect(addr).await.expect("connect");
        garbage
            .write_all(b"\x16\x03\x01\x00\xa5 not http at all\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );

        let reply = testing::request(addr, "GET", "/livez").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "OK\n"));
        task.abort();
    }

    #[tokio::test]
    async fn a_stalled_client_is_cut_after_the_header_timeout_and_blocks_nobody() {
        let (state, _) = testing::state(None);
        let header_timeout = Duration::from_millis(300);
        let (addr, task) = start(state, header_timeout, 8).await;

        let started = Instant::now();
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        stalled.write_all(b"GET /hea").await.expect("write");

        // Served meanwhile, well inside the stalled client's timeout.
        let reply = testing::request(addr, "GET", "/livez").await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < header_timeout,
            "{:?}",
            started.elapsed()
        );

        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest))
            .await
            .expect("cut by the server");
        let elapsed = started.elapsed();
        // Closed (FIN or reset), with no complete response, after about the header timeout.
        assert!(
            read.is_err() || !rest.starts_with(b"HTTP/1.1 200"),
            "{rest:?}"
        );
        assert!(
            elapsed >= header_timeout && elapsed < header_timeout * 5,
            "{elapsed:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn past_the_connection_limit_clients_are_closed_at_once() {
        let (state, _) = testing::state(None);
        // A long header timeout, so that only the limit decides here.
        let (addr, task) = start(state, Duration::from_secs(30), 2).await;

        let mut first = TcpStream::connect(addr).await.expect("connect");
        first.write_all(b"GET /li").await.expect("write");
        let mut second = TcpStream::connect(addr).await.expect("connect");
        second.write_all(b"GET /li").await.expect("write");

        assert_closed_at_once(addr).await;
        // The two slots are still held: the next one is closed too.
        assert_closed_at_once(addr).await;

        drop(first);
        drop(second);
        // The server frees the slots once it reads their EOF; retry until it has.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match testing::try_request(addr, "GET", "/livez").await {
                Some(Reply { status: 200, .. }) => break,
                other => assert!(Instant::now() < deadline, "never served again: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }

    /// Connects and expects the server to close the connection without a byte.
    async fn assert_closed_at_once(addr: SocketAddr) {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
            .await
            .expect("closed at once, not left waiting");
        // EOF, or a reset if the close raced with the client's own segments.
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
