//! Discovery as an operator sees it on the admin endpoint: the `GET /peers` JSON, the
//! `?format=nodes` seed list, a metric scraped from `/metrics`, bounded waits for them to show
//! what a test expects; and a broker reachable at another loopback address, as a peer on
//! another host is.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use super::sidecar::TestSidecar;
use super::{WAIT, metric_value};

/// How long discovery may take to show a change: many refresh intervals of the tests' sources.
pub const FOLLOW: Duration = Duration::from_secs(10);

/// One entry of `GET /peers`; unknown or missing fields fail the parse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRow {
    /// The peer's IP address.
    pub address: String,
    /// Its port as discovered.
    pub port: u16,
    /// Its node name.
    pub node: String,
    /// The discovery source that found it.
    pub source: String,
    /// Whether it passes a backend's checks; `None` when no backend checks it.
    pub healthy: Option<bool>,
}

/// The row `/peers` shows for a peer at `address:port` named `emqx@<address>`, unchecked.
pub fn row(source: &str, address: &str, port: u16) -> PeerRow {
    PeerRow {
        address: address.to_string(),
        port,
        node: format!("emqx@{address}"),
        source: source.to_string(),
        healthy: None,
    }
}

impl TestSidecar {
    /// `GET /peers`, sorted by source, address and port.
    pub async fn peers(&self) -> Vec<PeerRow> {
        let reply = self.get("/peers").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let mut rows: Vec<PeerRow> = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("/peers is not the peer list ({e}): {}", reply.body));
        rows.sort();
        rows
    }

    /// `GET /peers?format=nodes`: the seed list, one node name a line.
    pub async fn seed_list(&self) -> String {
        let reply = self.get("/peers?format=nodes").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    /// Polls `/peers` until it equals `want` (in any order), for at most [`FOLLOW`].
    pub async fn until_peers(&self, want: &[PeerRow]) {
        let mut want = want.to_vec();
        want.sort();
        let what = format!("/peers to become {want:#?}");
        poll_until(FOLLOW, &what, || self.peers(), |rows| *rows == want).await;
    }

    /// One series scraped from `GET /metrics`, `None` when absent (see [`metric_value`]).
    pub async fn scrape(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        metric_value(&reply.body, name, labels)
    }

    /// `brokerside_discovery_errors_total{source}` from `/metrics`.
    pub async fn discovery_errors(&self, source: &str) -> f64 {
        self.scrape("brokerside_discovery_errors_total", &[("source", source)])
            .await
            .unwrap_or_else(|| panic!("no brokerside_discovery_errors_total{{source={source}}}"))
    }

    /// Polls `/metrics` until `brokerside_discovery_errors_total{source}` exceeds `above`, for at
    /// most [`WAIT`] (a refresh against a server that does not answer takes its timeouts, about
    /// 6 s); returns the new value.
    pub async fn until_discovery_errors_above(&self, source: &str, above: f64) -> f64 {
        let what = format!("brokerside_discovery_errors_total{{source={source}}} above {above}");
        let errors = || self.discovery_errors(source);
        poll_until(WAIT, &what, errors, |errors| *errors > above).await
    }
}

/// Calls `probe` every 50 ms until `done` accepts its value, and returns that value; fails the
/// test with `what` and the last value if that takes longer than `bound`.
pub async fn poll_until<T: std::fmt::Debug, F: Future<Output = T>>(
    bound: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let polled = tokio::time::timeout(bound, async {
        loop {
            let value = probe().await;
            if done(&value) {
                return value;
            }
            last = Some(value);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    polled.unwrap_or_else(|_| panic!("not within {bound:?}: {what}; last: {last:#?}"))
}

/// Makes `target` (a broker on 127.0.0.1) reachable at `ip` on a free port as well, as a peer
/// on another host is reached at its own address: each connection to the returned address is
/// forwarded to `target` until the test's runtime ends.
pub async fn alias(ip: Ipv4Addr, target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    let addr = listener.local_addr().expect("alias address");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut broker) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });
    addr
}
