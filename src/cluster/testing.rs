//! Test support: an in-process HTTP server that answers like EMQX `/api/v5/nodes` or RabbitMQ
//! `/api/nodes`, with basic auth, a node list the test changes, and ways to misbehave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::quorum::Member;
use crate::config::{ClusterConfig, ClusterMembers, TokenSource};
use crate::discovery::{Peer, PeerSet};

/// `Basic base64("key:secret")`, written out so that the server does not trust the client's
/// encoder.
const EXPECTED_AUTH: &str = "Basic a2V5OnNlY3JldA==";

/// A cluster config for `members` at `url`, without credentials, asking every 100 ms.
pub fn config(members: ClusterMembers, url: &str) -> ClusterConfig {
    ClusterConfig {
        members,
        url: url.to_string(),
        discovery: None,
        username: None,
        password: None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        fail_health_when_partitioned: true,
    }
}

/// A peer set of these node names, at 10.0.0.2, 10.0.0.3, ...
pub fn peer_set(nodes: &[&str]) -> PeerSet {
    PeerSet {
        peers: nodes
            .iter()
            .zip(2u8..)
            .map(|(node, last)| Peer {
                ip: [10, 0, 0, last].into(),
                port: 1883,
                node: node.to_string(),
            })
            .collect(),
        ..PeerSet::default()
    }
}

/// A broker's member list: `running` nodes, then `stopped` ones.
pub fn members(running: &[&str], stopped: &[&str]) -> Vec<Member> {
    let member = |node: &&str, running| Member {
        node: node.to_string(),
        running,
    };
    running
        .iter()
        .map(|n| member(n, true))
        .chain(stopped.iter().map(|n| member(n, false)))
        .collect()
}

/// What the server saw of the last request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub path: String,
    pub host: String,
    pub connection: String,
}

#[derive(Default)]
struct Answer {
    running: Vec<String>,
    stopped: Vec<String>,
    raw: Option<Vec<u8>>,
    stall: bool,
    last: Option<Seen>,
}

/// The fake broker API; stops when dropped.
pub struct FakeBroker {
    pub addr: SocketAddr,
    members: ClusterMembers,
    answer: Arc<Mutex<Answer>>,
    dir: PathBuf,
    server: JoinHandle<()>,
}

fn names(nodes: &[&str]) -> Vec<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

impl FakeBroker {
    /// An EMQX API with these nodes running and stopped.
    pub async fn emqx(running: &[&str], stopped: &[&str]) -> FakeBroker {
        FakeBroker::start(ClusterMembers::Emqx, running, stopped).await
    }

    /// A RabbitMQ API with these nodes running and stopped.
    pub async fn rabbitmq(running: &[&str], stopped: &[&str]) -> FakeBroker {
        FakeBroker::start(ClusterMembers::Rabbitmq, running, stopped).await
    }

    async fn start(members: ClusterMembers, running: &[&str], stopped: &[&str]) -> FakeBroker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "brokerside-fake-broker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("username"), "key\n").unwrap();
        std::fs::write(dir.join("password"), "secret\n").unwrap();

        let answer = Arc::new(Mutex::new(Answer {
            running: names(running),
            stopped: names(stopped),
            ..Answer::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = answer.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let service = service_fn(move |request| {
                    let shared = shared.clone();
                    async move { Ok::<_, hyper::Error>(respond(members, &shared, request).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        FakeBroker {
            addr,
            members,
            answer,
            dir,
            server,
        }
    }

    /// A config with the right URL and credentials (from files).
    pub fn config(&self) -> ClusterConfig {
        let path = match self.members {
            ClusterMembers::Rabbitmq => "/api/nodes",
            _ => "/api/v5/nodes",
        };
        let mut config = config(self.members, &format!("http://{}{path}", self.addr));
        config.username = Some(TokenSource::File(self.dir.join("username")));
        config.password = Some(TokenSource::File(self.dir.join("password")));
        config
    }

    /// A secret file with `content`, for wrong credentials.
    pub fn secret(&self, name: &str, content: &str) -> TokenSource {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        TokenSource::File(path)
    }

    /// Changes the node list.
    pub fn set_nodes(&self, running: &[&str], stopped: &[&str]) {
        let mut answer = self.answer.lock().unwrap();
        answer.running = names(running);
        answer.stopped = names(stopped);
        answer.raw = None;
        answer.stall = false;
    }

    /// Answers 200 with this body instead of the node list.
    pub fn answer_raw(&self, body: Vec<u8>) {
        self.answer.lock().unwrap().raw = Some(body);
    }

    /// Holds every request without answering.
    pub fn stall(&self) {
        self.answer.lock().unwrap().stall = true;
    }

    /// What the server saw of the last request.
    pub fn last_request(&self) -> Seen {
        self.answer.lock().unwrap().last.clone().unwrap_or_default()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn respond(
    members: ClusterMembers,
    shared: &Mutex<Answer>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (body, stall) = {
        let mut answer = shared.lock().unwrap();
        answer.last = Some(Seen {
            path: request.uri().path().to_string(),
            host: header(HOST),
            connection: header(CONNECTION),
        });
        let body = match members {
            ClusterMembers::Rabbitmq => serde_json::json!(
                answer
                    .running
                    .iter()
                    .map(|n| serde_json::json!({"name": n, "running": true, "type": "disc"}))
                    .chain(
                        answer
                            .stopped
                            .iter()
                            .map(|n| serde_json::json!({"name": n, "running": false}))
                    )
                    .collect::<Vec<_>>()
            ),
            _ => serde_json::json!(
                answer
                    .running
                    .iter()
                    .map(|n| serde_json::json!({"node": n, "node_status": "running", "uptime": 1}))
                    .chain(
                        answer
                            .stopped
                            .iter()
                            .map(|n| serde_json::json!({"node": n, "node_status": "stopped"}))
                    )
                    .collect::<Vec<_>>()
            ),
        };
        let body = answer
            .raw
            .clone()
            .unwrap_or_else(|| body.to_string().into_bytes());
        (body, answer.stall)
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let expected_path = match members {
        ClusterMembers::Rabbitmq => "/api/nodes",
        _ => "/api/v5/nodes",
    };
    let (status, body) = if header(AUTHORIZATION) != EXPECTED_AUTH {
        (
            StatusCode::UNAUTHORIZED,
            b"{\"code\":\"BAD_API_KEY_OR_SECRET\"}".to_vec(),
        )
    } else if request.uri().path() != expected_path {
        (StatusCode::NOT_FOUND, Vec::new())
    } else {
        (StatusCode::OK, body)
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
