//! An in-process HTTP server for tests that speaks Consul's health API
//! (`GET /v1/health/service/<name>`) with real blocking-query semantics: a request with
//! `index=N` is held until the index passes N or `wait` has gone by, and every answer carries
//! `X-Consul-Index`. Instances join and leave, the index can be forced (backwards too), and the
//! server can answer errors; it records every request it gets.
//!
//! The crate's unit tests include this file too (`src/discovery/mod.rs`, with `#[path]`), so
//! it stays self-contained.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::watch;

/// One request the server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path, without the query.
    pub path: String,
    /// The `index` parameter, if sent.
    pub index: Option<u64>,
    /// The `wait` parameter, if sent.
    pub wait: Option<String>,
    /// Whether `passing` was asked for.
    pub passing: bool,
    /// The `X-Consul-Token` header, if sent.
    pub token: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// `(node name, node address, service address, port)`.
    instances: Vec<(String, String, String, u16)>,
    status: Option<u16>,
    seen: Vec<Seen>,
}

/// A running fake Consul agent.
pub struct TestConsul {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    index: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TestConsul {
    /// Starts the server on 127.0.0.1 with no instances at index 1.
    pub async fn start() -> TestConsul {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let index = watch::Sender::new(1u64);
        let task = tokio::spawn({
            let (state, index) = (Arc::clone(&state), index.clone());
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, index) = (Arc::clone(&state), index.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let (state, index) = (Arc::clone(&state), index.clone());
                            async move { Ok::<_, Infallible>(handle(request, state, index).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        TestConsul {
            addr,
            state,
            index,
            task,
        }
    }

    /// The base URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the passing instances, `(node name, address, port)`, and moves the index on.
    /// An instance whose address is `""` registered none: its node's address (`10.1.0.<n>`)
    /// stands in.
    pub fn set_instances(&self, instances: &[(&str, &str, u16)]) {
        self.state.lock().unwrap().instances = instances
            .iter()
            .enumerate()
            .map(|(n, (node, address, port))| {
                (
                    node.to_string(),
                    format!("10.1.0.{}", n + 1),
                    address.to_string(),
                    *port,
                )
            })
            .collect();
        self.index.send_modify(|index| *index += 1);
    }

    /// Sets the index (backwards too), waking held requests.
    pub fn set_index(&self, index: u64) {
        self.index.send_replace(index);
    }

    /// The current index.
    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }

    /// Answers every request with `status` from now on (`None`: normal answers again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().status = status;
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for TestConsul {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses Consul's `wait` (`30s`, `500ms`, `1m`).
fn parse_wait(wait: &str) -> Option<Duration> {
    if let Some(ms) = wait.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = wait.strip_suffix('s') {
        return s.parse().ok().map(Duration::from_secs);
    }
    wait.strip_suffix('m')?
        .parse::<u64>()
        .ok()
        .map(|m| Duration::from_secs(m * 60))
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    index: watch::Sender<u64>,
) -> Response<Full<Bytes>> {
    let params: Vec<(&str, &str)> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let seen = Seen {
        path: request.uri().path().to_string(),
        index: param("index").and_then(|i| i.parse().ok()),
        wait: param("wait").map(str::to_string),
        passing: param("passing").is_some(),
        token: request
            .headers()
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let status = {
        let mut state = state.lock().unwrap();
        state.seen.push(seen.clone());
        state.status
    };
    if let Some(status) = status {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"rpc error")))
            .unwrap();
    }
    if !seen.path.starts_with("/v1/health/service/") {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    // Consul's blocking query: hold while the index has not passed the one asked for.
    if let Some(asked) = seen.index {
        let wait = seen
            .wait
            .as_deref()
            .and_then(parse_wait)
            .unwrap_or(Duration::from_secs(300));
        let mut changes = index.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|now| *now > asked)).await;
    }
    let current = *index.borrow();
    let body = {
        let state = state.lock().unwrap();
        let entries: Vec<serde_json::Value> = state
            .instances
            .iter()
            .map(|(node, node_address, address, port)| {
                json!({
                    "Node": {"Node": node, "Address": node_address, "Datacenter": "dc1"},
                    "Service": {"ID": format!("emqx-{node}"), "Service": "emqx", "Address": address, "Port": port},
                    "Checks": [{"Status": "passing"}],
                })
            })
            .collect();
        serde_json::to_vec(&entries).unwrap()
    };
    Response::builder()
        .header("X-Consul-Index", current.to_string())
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
