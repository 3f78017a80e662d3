//! Real HTTP both ways: a client for the admin endpoint (hyper's, and raw bytes for what a
//! well-behaved client cannot send), and a status server that answers like EMQX's
//! `GET /api/v5/status`, its answer switchable while it runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::within;

/// An HTTP reply as a client saw it.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `method path` to `addr` over a fresh connection, within [`super::WAIT`].
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    within(&format!("{method} {path} on {addr}"), async {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the whole body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
}

/// `GET path` on `addr`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Reply {
    http_request(addr, "GET", path).await
}

/// Writes `bytes` to `addr` and reads until the server closes: the raw answer.
pub async fn http_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    within(&format!("a raw answer from {addr}"), async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        // A reset after the answer is fine: what was read is the answer.
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
}

/// An HTTP server that answers every request with the current status and body.
pub struct StatusServer {
    /// Where it listens.
    pub addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl StatusServer {
    /// Listens on 127.0.0.1:0 and answers `status` with `body`.
    pub async fn start(status: u16, body: &str) -> StatusServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (shared_answer, shared_paths) = (Arc::clone(&answer), Arc::clone(&paths));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, paths) = (Arc::clone(&shared_answer), Arc::clone(&shared_paths));
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    paths.lock().unwrap().push(request.uri().path().to_string());
                    let (status, body) = answer.lock().unwrap().clone();
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status.try_into().expect("a status code");
                    std::future::ready(Ok::<_, Infallible>(response))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        StatusServer {
            addr,
            answer,
            paths,
        }
    }

    /// Answers `status` with `body` from now on.
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    /// The paths requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}
