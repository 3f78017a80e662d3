//! Test helpers for the admin module: a sidecar state with one listener and one checked backend
//! (a local server and a backup), health reports to publish, and a raw HTTP/1.1 client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use arc_swap::ArcSwap;

use crate::config::{AdminConfig, Config};
use crate::health::{CheckOutcome, HealthReport, ServerState};
use crate::metrics::Metrics;
use crate::runtime::testing::unbound_runtime_with;
use crate::runtime::{Reloader, Secrets};
use crate::shutdown::DrainControl;
use crate::state::SidecarState;

const CONFIG: &str = r#"
[[listener]]
name = "mqtt"
listen = "127.0.0.1:0"
backend = "broker-mqtt"

[[backend]]
name = "broker-mqtt"
servers = ["127.0.0.1:21883"]
backup = ["10.0.0.6:1883"]
[backend.check]
kind = "tcp"
"#;

/// The state of a node with the config above; also the local server's address. No probe runs:
/// tests publish reports with [`mark_up`] and [`mark_down`].
pub(super) fn state(drain_token: Option<&str>) -> (Arc<SidecarState>, SocketAddr) {
    let config = Config::from_toml(CONFIG).expect("the test config is valid");
    let metrics = Metrics::new();
    let server = config.backends[0].servers[0];
    let secrets = Secrets {
        admin_token: drain_token.map(str::to_string),
        ..Secrets::default()
    };
    let runtime = unbound_runtime_with(config, &metrics, secrets);
    // Nothing answers reloads here: `POST /reload` reports the sidecar stopped.
    let (reloader, _requests) = Reloader::new();
    let state = SidecarState {
        runtime: Arc::new(ArcSwap::from_pointee(runtime)),
        drain: Arc::new(DrainControl::default()),
        metrics,
        clustering: Arc::default(),
        reloader,
    };
    (Arc::new(state), server)
}

/// Publishes a passing report for the local server.
pub(super) fn mark_up(state: &SidecarState) {
    publish(state, ServerState::Up, None);
}

/// Publishes a failing report for the local server, with `error`.
pub(super) fn mark_down(state: &SidecarState, error: &str) {
    publish(state, ServerState::Down, Some(error.to_string()));
}

fn publish(state: &SidecarState, server_state: ServerState, error: Option<String>) {
    let now = SystemTime::now();
    state.runtime.load().backends[0].servers[0]
        .health
        .publish(HealthReport {
            state: server_state,
            checked: true,
            last: Some(CheckOutcome {
                at: now,
                latency: Duration::from_micros(1_500),
                error,
            }),
            streak: 3,
            since: now,
        });
}

/// An admin config on 127.0.0.1 port 0.
pub(super) fn admin_config(header_timeout: Duration, max_connections: u32) -> AdminConfig {
    AdminConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_connections,
        header_timeout,
        drain_token: None,
    }
}

/// An HTTP reply as a client reads it.
#[derive(Debug)]
pub(super) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the reply to EOF.
pub(super) async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    try_request(addr, method, path)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP reply"))
}

/// [`request`], or `None` if the connection fails or the reply is not HTTP.
pub(super) async fn try_request(addr: SocketAddr, method: &str, path: &str) -> Option<Reply> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        Some(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()??;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}
