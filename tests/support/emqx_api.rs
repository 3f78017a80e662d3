//! An in-process HTTP server that answers like EMQX's management API `GET /api/v5/nodes`: basic
//! auth checked against one API key and secret, a node list the test changes while it runs, and
//! a count of the requests it answered and refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::AUTHORIZATION;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The API key the server accepts.
pub const API_KEY: &str = "brokerside-api-key";
/// The API secret the server accepts.
pub const API_SECRET: &str = "brokerside-api-secret";
/// `Basic base64("brokerside-api-key:brokerside-api-secret")`, written out so that the server
/// does not trust the client's encoder.
const EXPECTED_AUTH: &str = "Basic YnJva2Vyc2lkZS1hcGkta2V5OmJyb2tlcnNpZGUtYXBpLXNlY3JldA==";

#[derive(Debug, Default)]
struct State {
    running: Vec<String>,
    stopped: Vec<String>,
    answered: usize,
    refused: usize,
}

/// A running fake EMQX API; stops when dropped.
pub struct EmqxApi {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl EmqxApi {
    /// Listens on 127.0.0.1:0 with these nodes running.
    pub async fn start(running: &[&str]) -> EmqxApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let service = service_fn(move |request| {
                    std::future::ready(Ok::<_, Infallible>(answer(&request, &state)))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let api = EmqxApi { addr, state, task };
        api.set_nodes(running, &[]);
        api
    }

    /// The URL to configure as `[cluster] url`.
    pub fn url(&self) -> String {
        format!("http://{}/api/v5/nodes", self.addr)
    }

    /// From now on the API lists `running` nodes as running and `stopped` ones as stopped.
    pub fn set_nodes(&self, running: &[&str], stopped: &[&str]) {
        let mut state = self.state.lock().unwrap();
        state.running = running.iter().map(|n| n.to_string()).collect();
        state.stopped = stopped.iter().map(|n| n.to_string()).collect();
    }

    /// Requests answered with the node list, and requests refused for their credentials.
    pub fn requests(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.answered, state.refused)
    }
}

impl Drop for EmqxApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// EMQX's answer to one request: 401 without the right credentials, 404 off the one path, else
/// the node list in the shape of EMQX 5.
fn answer(request: &Request<hyper::body::Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let status = |code: StatusCode, body: &'static str| {
        Response::builder()
            .status(code)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let mut state = state.lock().unwrap();
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|value| value == EXPECTED_AUTH);
    if !authorized {
        state.refused += 1;
        return status(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"BAD_API_KEY_OR_SECRET","message":"Check api_key/api_secret"}"#,
        );
    }
    if request.uri().path() != "/api/v5/nodes" {
        return status(StatusCode::NOT_FOUND, r#"{"code":"NOT_FOUND"}"#);
    }
    state.answered += 1;
    let node = |name: &String, node_status: &str| {
        json!({
            "node": name,
            "node_status": node_status,
            "role": "core",
            "version": "5.8.0",
            "uptime": 3_600_000,
            "connections": 0,
        })
    };
    let nodes: Vec<serde_json::Value> = state
        .running
        .iter()
        .map(|n| node(n, "running"))
        .chain(state.stopped.iter().map(|n| node(n, "stopped")))
        .collect();
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&nodes).unwrap())))
        .unwrap()
}
