//! The admin routes: a plain match on method and path. Every handler reads shared state (atomics
//! and snapshots) and builds its reply at once: nothing here probes, waits, or holds a lock across
//! an await, which is what lets the endpoint answer while the relay is saturated.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::{health_json, page};
use crate::runtime::ReloadError;
use crate::state::SidecarState;

/// The body of every admin reply: small, built in one piece.
pub type Body = Full<Bytes>;

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

/// Answers one request. `peer` is the client's address, which decides whether `POST /drain` is
/// allowed without a token. HEAD is answered wherever GET is (hyper leaves the body out).
pub fn route(request: &Parts, peer: SocketAddr, state: &SidecarState) -> Response<Body> {
    let method = &request.method;
    let get = method == Method::GET || method == Method::HEAD;
    match request.uri.path() {
        "/" | "/haproxy_stats" if get => status_page(&request.headers, state),
        "/haproxy_health" | "/readyz" if get => readiness(state),
        "/livez" if get => text(StatusCode::OK, "OK\n"),
        // Always 200: the body carries the status, and a client that wants a verdict from the
        // status code has /readyz. A 503 here would make generic HTTP checks hide the details.
        "/health" if get => json(health_json::health(state).to_string()),
        "/metrics" if get => reply(StatusCode::OK, PROMETHEUS_TEXT, metrics(state)),
        "/peers" if get => peers(request.uri.query(), state),
        "/drain" if method == Method::POST => drain(&request.headers, peer, state),
        "/" | "/haproxy_stats" | "/haproxy_health" | "/readyz" | "/livez" | "/health"
        | "/metrics" | "/peers" => not_allowed("GET, HEAD"),
        // `POST /reload` waits for the reload: the server answers it with [`reload`].
        "/drain" | "/reload" => not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The Prometheus text, with each backend server's slow-start weight read at this moment: the
/// weight changes with time alone, so it is set when asked for rather than kept up to date.
fn metrics(state: &SidecarState) -> String {
    let now = Instant::now();
    for backend in &state.runtime.load().backends {
        for server in backend.all_servers() {
            server.metrics.weight.set(backend.weight(&server, now));
        }
    }
    state.metrics.render()
}

/// The `route` label of a request to `path`: the path itself for a route that exists, else
/// `other`, so that scanners cannot grow the series.
pub fn label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/haproxy_stats" => "/haproxy_stats",
        "/haproxy_health" => "/haproxy_health",
        "/readyz" => "/readyz",
        "/livez" => "/livez",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/peers" => "/peers",
        "/drain" => "/drain",
        "/reload" => "/reload",
        _ => "other",
    }
}

/// The status page: HTML for a browser (one that asks for `text/html`), the same tables as
/// aligned text for anything else (curl sends `Accept: */*`).
fn status_page(headers: &HeaderMap, state: &SidecarState) -> Response<Body> {
    let health = health_json::health(state);
    let peers = state.peers();
    if wants_html(headers) {
        reply(StatusCode::OK, HTML, page::html(&health, &peers))
    } else {
        text(StatusCode::OK, page::text(&health, &peers))
    }
}

/// Whether the `Accept` header names `text/html` (browsers do) before any `text/plain`.
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| {
            item.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    for media in accept {
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => return true,
            "text/plain" => return false,
            _ => {}
        }
    }
    false
}

/// 200 `OK` when the node should receive clients, else 503 and why.
fn readiness(state: &SidecarState) -> Response<Body> {
    match state.readiness() {
        Ok(()) => text(StatusCode::OK, "OK\n"),
        // One line, whatever a probe's error text holds: load balancers log the first line.
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", why.replace(['\r', '\n'], " ")),
        ),
    }
}

/// The discovered peers, as JSON or as one node name a line.
fn peers(query: Option<&str>, state: &SidecarState) -> Response<Body> {
    let peers = state.peers();
    match query_param(query, "format") {
        None | Some("json") => {
            let list: Vec<serde_json::Value> = peers
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "address": p.ip.to_string(),
                        "port": p.port,
                        "node": p.node,
                        "source": p.source,
                        "healthy": p.healthy,
                    })
                })
                .collect();
            json(serde_json::Value::Array(list).to_string())
        }
        // One node name a line, for BEAM/EMQX seed lists; a node found by two sources once.
        Some("nodes") => {
            let mut nodes: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            text(
                StatusCode::OK,
                nodes.iter().map(|n| format!("{n}\n")).collect::<String>(),
            )
        }
        Some(_) => text(
            StatusCode::BAD_REQUEST,
            "unknown format: expected `json` or `nodes`\n",
        ),
    }
}

/// The first value of `name` in a query string. Values are not percent-decoded: the values this
/// endpoint accepts are plain words.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Starts the drain if the caller may.
fn drain(headers: &HeaderMap, peer: SocketAddr, state: &SidecarState) -> Response<Body> {
    let token = state.runtime.load().secrets.admin_token.clone();
    if let Err(why) = control_allowed("/drain", headers, peer, token.as_deref()) {
        tracing::warn!(%peer, why, "POST /drain refused");
        return text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    if state.drain.start(&format!("POST /drain from {peer}")) {
        text(StatusCode::ACCEPTED, "draining\n")
    } else {
        text(StatusCode::OK, "already draining\n")
    }
}

/// Reloads the config file if the caller may (the rule of `POST /drain`): 200 with the new
/// generation, 400 with every problem of a refused config, 409 when there is nothing to reload
/// or the node drains. The answer waits for the reload, which takes milliseconds.
pub async fn reload(request: &Parts, peer: SocketAddr, state: &SidecarState) -> Response<Body> {
    let token = state.runtime.load().secrets.admin_token.clone();
    if let Err(why) = control_allowed("/reload", &request.headers, peer, token.as_deref()) {
        tracing::warn!(%peer, why, "POST /reload refused");
        return text(StatusCode::FORBIDDEN, format!("{why}\n"));
    }
    let outcome = state
        .reloader
        .reload(&format!("POST /reload from {peer}"))
        .await;
    let (status, body) = match outcome {
        Ok(reloaded) => (
            StatusCode::OK,
            serde_json::json!({
                "result": "ok",
                "generation": reloaded.generation,
                "sha256": reloaded.sha256,
            }),
        ),
        Err(error) => {
            let status = match error {
                ReloadError::Refused(_) => StatusCode::BAD_REQUEST,
                ReloadError::NoFile | ReloadError::Draining => StatusCode::CONFLICT,
                ReloadError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            let problems: Vec<String> = match &error {
                ReloadError::Refused(problems) => {
                    problems.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            };
            let running = state.runtime.load().generation;
            let body = serde_json::json!({
                "result": "error",
                "problems": problems,
                "generation": running,
            });
            (status, body)
        }
    };
    let mut body = body.to_string();
    body.push('\n');
    reply(status, JSON, body)
}

/// Loopback callers may drain and reload; others only with the configured token as a bearer
/// token.
fn control_allowed(
    path: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    token: Option<&str>,
) -> Result<(), String> {
    // `to_canonical` so that 127.0.0.1 seen through a dual-stack `[::]` socket counts as loopback.
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    // An empty token would let any `Bearer ` through: treat it as no token.
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return Err(format!(
            "forbidden: POST {path} is accepted from loopback only (no drain token is configured)"
        ));
    };
    match bearer(headers) {
        None => Err(format!(
            "forbidden: POST {path} from another host needs `Authorization: Bearer <token>`"
        )),
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err("forbidden: wrong drain token".to_string()),
    }
}

/// The credentials of an `Authorization: Bearer ...` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares every byte whatever the first difference, so that the answer time does not tell
/// an attacker how much of a guessed token is right. (The length is not hidden.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    reply(status, TEXT, body)
}

fn json(mut body: String) -> Response<Body> {
    body.push('\n');
    reply(StatusCode::OK, JSON, body)
}

/// A reply with its content type. Nothing here may be cached: every answer is the state of now.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::Request;

    use super::super::testing;
    use super::*;

    fn parts(method: &str, uri: &str, authorization: Option<&str>) -> Parts {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request.body(()).expect("valid request").into_parts().0
    }

    async fn call(
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        peer: &str,
        state: &SidecarState,
    ) -> (u16, String) {
        let peer: SocketAddr = peer.parse().expect("peer address");
        let response = route(&parts(method, uri, authorization), peer, state);
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const REMOTE: &str = "10.0.0.7:40000";

    #[tokio::test]
    async fn drain_from_another_host_needs_the_token() {
        let (state, _) = testing::state(Some("s3cret"));
        for (authorization, why) in [
            (None, "needs `Authorization: Bearer <token>`"),
            (Some("Bearer wrong!"), "wrong drain token"),
            (Some("Bearer s3cre"), "wrong drain token"),
            (
                Some("Basic czNjcmV0"),
                "needs `Authorization: Bearer <token>`",
            ),
        ] {
            let (status, body) = call("POST", "/drain", authorization, REMOTE, &state).await;
            assert_eq!(status, 403, "{authorization:?}");
            assert!(body.contains(why) && body.ends_with('\n'), "{body}");
            assert!(!state.drain.is_draining());
        }
        let (status, body) = call("POST", "/drain", Some("bearer s3cret"), REMOTE, &state).await;
        assert_eq!((status, body.as_str()), (202, "draining\n"));
        assert_eq!(
            state.drain.started_at().map(|(_, why)| why),
            Some(format!("POST /drain from {REMOTE}"))
        );
    }

    #[tokio::test]
    async fn drain_without_a_token_is_loopback_only() {
        let (state, _) = testing::state(None);
        let (status, body) = call("POST", "/drain", Some("Bearer x"), REMOTE, &state).await;
        assert_eq!(status, 403);
        assert!(body.contains("loopback only"), "{body}");
        // IPv4 loopback seen through an IPv6 socket.
        let (status, _) = call("POST", "/drain", None, "[::ffff:127.0.0.1]:5000", &state).await;
        assert_eq!(status, 202);
        let (status, body) = call("POST", "/drain", None, "[::1]:5000", &state).await;
        assert_eq!((status, body.as_str()), (200, "already draining\n"));
    }

    #[tokio::test]
    async fn an_empty_token_allows_nobody_remote() {
        let (state, _) = testing::state(Some(""));
        let (status, _) = call("POST", "/drain", Some("Bearer "), REMOTE, &state).await;
        assert_eq!(status, 403);
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods() {
        let (state, _) = testing::state(None);
        for path in [
            "/index.html",
            "/healthz",
            "/health/",
            "/drain/now",
            "/HEALTH",
        ] {
            assert_eq!(
                get(path, &state).await,
                (404, "not found\n".into()),
                "{path}"
            );
        }
        for (method, path, allow) in [
            ("POST", "/haproxy_health", "GET, HEAD"),
            ("PUT", "/readyz", "GET, HEAD"),
            ("POST", "/livez", "GET, HEAD"),
            ("POST", "/health", "GET, HEAD"),
            ("DELETE", "/metrics", "GET, HEAD"),
            ("POST", "/peers", "GET, HEAD"),
            ("POST", "/", "GET, HEAD"),
            ("DELETE", "/haproxy_stats", "GET, HEAD"),
            ("GET", "/drain", "POST"),
            ("HEAD", "/drain", "POST"),
        ] {
            let peer = REMOTE.parse().expect("peer");
            let response = route(&parts(method, path, None), peer, &state);
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(
                response
                    .headers()
                    .get(header::ALLOW)
                    .map(HeaderValue::as_bytes),
                Some(allow.as_bytes()),
                "{method} {path}"
            );
        }
        // The wrong methods changed nothing.
        assert!(!state.drain.is_draining());
    }

    /// A GET from another host.
    async fn get(uri: &str, state: &SidecarState) -> (u16, String) {
        call("GET", uri, None, REMOTE, state).await
    }

    #[tokio::test]
    async fn peers_formats() {
        let (state, _) = testing::state(None);
        for (uri, status, body) in [
            ("/peers", 200, "[]\n"),
            ("/peers?format=json", 200, "[]\n"),
            ("/peers?x=1&format=nodes", 200, ""),
            (
                "/peers?format=yaml",
                400,
                "unknown format: expected `json` or `nodes`\n",
            ),
            (
                "/peers?format",
                400,
                "unknown format: expected `json` or `nodes`\n",
            ),
        ] {
            assert_eq!(get(uri, &state).await, (status, body.to_string()), "{uri}");
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_local_broker_and_the_drain() {
        let (state, server) = testing::state(None);
        let down = |why: &str| format!("backend broker-mqtt: local broker down ({server} {why})\n");
        assert_eq!(get("/readyz", &state).await, (503, down("not yet checked")));
        testing::mark_down(&state, "connection refused\nsecond line");
        assert_eq!(
            get("/haproxy_health", &state).await,
            (503, down("connection refused second line"))
        );
        testing::mark_up(&state);
        assert_eq!(get("/readyz", &state).await, (200, "OK\n".into()));
        state.drain.start("test");
        assert_eq!(get("/readyz", &state).await, (503, "draining\n".into()));
        // Liveness is not readiness: a draining node is alive.
        assert_eq!(get("/livez", &state).await, (200, "OK\n".into()));
    }

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
