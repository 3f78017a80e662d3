//! Shared by the integration tests: an in-process proxy on port 0 with its metrics as a user sees
//! them on /metrics, raw TCP backends (`backends`), and a real MQTT broker with real clients
//! (`mqtt`). Every wait is bounded, so a broken relay fails a test instead of hanging it.
#![allow(dead_code)]

pub mod backends;
pub mod consul_server;
pub mod counting;
pub mod dns_server;
pub mod emqx_api;
pub mod forwarder;
pub mod http;
pub mod mqtt;
pub mod netns;
pub mod observe;
pub mod peers;
pub mod process;
pub mod raw_mqtt;
pub mod sidecar;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use brokerside::config::Config;
use brokerside::metrics::Metrics;
use brokerside::shutdown::{DrainControl, Stopped};
use brokerside::sidecar::Sidecar;
use tokio::task::JoinHandle;

// Not every test file uses both.
#[allow(unused_imports)]
pub use backends::*;
#[allow(unused_imports)]
pub use mqtt::*;

/// The bound on any single wait in these tests: generous, so a slow CI host passes, but finite,
/// so a relay that loses a byte or a FIN fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(15);

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// A proxy serving in the background of the test's runtime.
pub struct TestProxy {
    addrs: HashMap<String, SocketAddr>,
    /// The registry the proxy counts into.
    pub metrics: Metrics,
    drain: Arc<DrainControl>,
    task: Option<JoinHandle<std::io::Result<Stopped>>>,
}

/// Relay threads of a test proxy whose config does not set `[runtime] relay_threads`: the
/// default (one per core) would start dozens of threads per test on a large CI host, where the
/// tests run side by side. Two still spread connections over threads.
pub const TEST_RELAY_THREADS: usize = 2;

/// Validates `toml` (panicking with its problems), capping the relay threads it leaves unset at
/// [`TEST_RELAY_THREADS`].
pub fn test_config(toml: &str) -> Config {
    let mut config = Config::from_toml(toml).unwrap_or_else(|e| panic!("bad test config:\n{e}"));
    if config.runtime.relay_threads.is_none() {
        config.runtime.relay_threads =
            NonZeroUsize::new(config.runtime.relay_threads().min(TEST_RELAY_THREADS));
    }
    config
}

/// Validates `toml`, binds every listener (use port 0) and serves until [`TestProxy::stop`]
/// starts the drain. The whole sidecar runs, its admin endpoint moved to 127.0.0.1:0; these
/// tests read the relay's side of it.
pub fn start_proxy(toml: &str) -> TestProxy {
    let mut config = test_config(toml);
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let sidecar = Sidecar::bind(config.clone()).expect("bind the proxy's listeners");
    let addrs = config
        .listeners
        .iter()
        .map(|l| {
            let addr = sidecar.listener_addr(&l.name).expect("bound listener");
            (l.name.clone(), addr)
        })
        .collect();
    TestProxy {
        addrs,
        metrics: sidecar.metrics(),
        drain: sidecar.drain(),
        task: Some(tokio::spawn(sidecar.run())),
    }
}

impl TestProxy {
    /// The real address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// The value of one series of `metrics.render()`, e.g.
    /// `metric("brokerside_connections_refused_total", &[("reason", "limit")])`. Labels not
    /// given are not constrained; several matching series are summed. Panics when no series
    /// matches, so a renamed metric or label fails loudly instead of reading as zero.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let text = self.metrics.render();
        match metric_value(&text, name, labels) {
            Some(value) => value as u64,
            None => panic!("no series {name} with {labels:?} in /metrics:\n{text}"),
        }
    }

    /// Waits until `metric(name, labels) == want`: for gauges that settle after the client has
    /// already seen its side of a close.
    pub async fn metric_reaches(&self, name: &str, labels: &[(&str, &str)], want: u64) {
        within(&format!("{name}{labels:?} to reach {want}"), async {
            while self.metric(name, labels) != want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// Waits until `metric(name, labels) > floor`: for counters the relay adds to after the
    /// bytes they count have reached the peer.
    pub async fn metric_exceeds(&self, name: &str, labels: &[(&str, &str)], floor: u64) {
        within(&format!("{name}{labels:?} to exceed {floor}"), async {
            while self.metric(name, labels) <= floor {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// Starts the drain, as SIGTERM would: listeners close after `lb_grace`, then open
    /// connections are closed at `close_rate`.
    pub fn stop(&mut self) {
        self.drain.start("test");
    }

    /// Whether `serve` has returned.
    pub fn is_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the proxy if not done yet and waits for `serve` to return.
    pub async fn stopped(&mut self) -> Stopped {
        self.stop();
        let task = self.task.take().expect("stopped() once");
        within("Proxy::serve to return", task)
            .await
            .expect("serve task panicked")
            .expect("serve failed")
    }
}

/// The value of the series `name{labels...}` in Prometheus text `text` (see [`TestProxy::metric`]).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let present: Vec<(&str, &str)> = series_labels
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|want| present.contains(want)) {
            let value: f64 = value.parse().expect("a numeric sample");
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// One `mqtt` listener on 127.0.0.1:0 relaying to a backend `b` with `servers`; `listener_extra`
/// and `backend_extra` are more `key = value` lines for each table.
pub fn relay_config(servers: &[SocketAddr], listener_extra: &str, backend_extra: &str) -> String {
    listener_config(
        "mqtt",
        "127.0.0.1:0",
        servers,
        listener_extra,
        backend_extra,
    )
}

/// As [`relay_config`], the listener named `name` and listening on `listen`.
pub fn listener_config(
    name: &str,
    listen: &str,
    servers: &[SocketAddr],
    listener_extra: &str,
    backend_extra: &str,
) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nbackend = \"b\"\n{listener_extra}\n\n\
         [[backend]]\nname = \"b\"\nservers = [{}]\n{backend_extra}\n",
        servers.join(", ")
    )
}
