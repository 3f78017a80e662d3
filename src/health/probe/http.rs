//! The `http` probe: GET a path, expect a status and optionally a substring of the body (EMQX
//! `GET /api/v5/status` answers 200 with "... is running").

use std::net::SocketAddr;

use super::{ProbeError, Step, failed, tcp};
use crate::config::{HttpCheck, ProxyProtocol};
use crate::http_get;

const PROBE: &str = "http";

/// Most body bytes read when looking for `expect_body`: a status page is small, and a server
/// that streams without end must not make the probe buffer without end.
const MAX_BODY: usize = 64 * 1024;

/// GETs `check.path` from the server's address, on `check.port` or the server's own port.
pub(super) async fn probe(
    check: &HttpCheck,
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<(), ProbeError> {
    let target = SocketAddr::new(server.ip(), check.port.unwrap_or(server.port()));
    // The PROXY header belongs to the data port only: a broker's management API on its own port
    // (EMQX 18083, RabbitMQ 15672) does not expect one and would take it for a bad request.
    let proxy = if target == server {
        proxy
    } else {
        ProxyProtocol::Off
    };
    let stream = tcp::connect(target, proxy, step).await?;

    step.at("waiting for the HTTP response");
    let answer = http_get::get(stream, &target.to_string(), &check.path, &[], MAX_BODY)
        .await
        .map_err(|e| failed(PROBE, e.0))?;
    let status = answer.status.as_u16();
    if status != check.expect_status {
        return Err(failed(
            PROBE,
            format!("status {status}, expected {}", check.expect_status),
        ));
    }
    match &check.expect_body {
        Some(expected) if !contains(&answer.body, expected.as_bytes()) => {
            Err(failed(PROBE, format!("body lacks {expected:?}")))
        }
        _ => Ok(()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error_from, passes, raw_peer};
    use super::*;
    use crate::config::CheckKind;

    /// The end of a request head: a peer that answers earlier confuses hyper (and is no server).
    const HEAD_END: &[u8] = b"\r\n\r\n";

    fn http(port: Option<u16>, expect_body: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            port,
            path: "/api/v5/status".into(),
            expect_status: 200,
            expect_body: expect_body.map(String::from),
        })
    }

    fn response(status: &str, body: &str) -> Option<Vec<u8>> {
        Some(
            format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    #[tokio::test]
    async fn status_and_body_as_expected() {
        let status = "Node emqx@127.0.0.1 is started\nemqx is running";
        let (addr, seen) = raw_peer(HEAD_END, response("200 OK", status), true).await;
        passes(&http(None, Some("is running")), addr, ProxyProtocol::Off).await;
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /api/v5/status HTTP/1.1\r\n"),
            "{seen:?}"
        );
        let lower = seen.to_lowercase();
        assert!(lower.contains(&format!("host: {addr}\r\n")), "{seen:?}");
        assert!(lower.contains("connection: close\r\n"), "{seen:?}");
    }

    #[tokio::test]
    async fn body_not_read_unless_expected() {
        let (addr, _seen) = raw_peer(HEAD_END, response("200 OK", "anything"), true).await;
        passes(&http(None, None), addr, ProxyProtocol::Off).await;
    }

    #[tokio::test]
    async fn bad_answers_are_named() {
        let mut endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..40 {
            endless.extend_from_slice(format!("1000\r\n{}\r\n", "x".repeat(0x1000)).as_bytes());
        }
        let check = http(None, Some("is running"));
        let cases = [
            (
                response("503 Service Unavailable", "not running"),
                "http: status 503, expected 200",
            ),
            (
                response("200 OK", "emqx is starting"),
                "http: body lacks \"is running\"",
            ),
            // 160 KiB of chunks and no last chunk: the probe stops reading at MAX_BODY.
            (Some(endless), "http: body lacks \"is running\""),
        ];
        for (answer, expected) in cases {
            assert_eq!(error_from(&check, HEAD_END, answer, true).await, expected);
        }
        let closed = error_from(&check, HEAD_END, None, false).await;
        assert!(closed.starts_with("http: connection "), "{closed}");
    }

    #[tokio::test]
    async fn proxy_header_only_on_the_data_port() {
        // Same port as the server: the header goes first.
        let (addr, seen) = raw_peer(HEAD_END, response("200 OK", ""), true).await;
        passes(&http(None, None), addr, ProxyProtocol::V1).await;
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(seen.starts_with("PROXY TCP4 "), "{seen:?}");

        // A separate API port: no header, though the backend sends one on its data port.
        let (api, seen) = raw_peer(HEAD_END, response("200 OK", ""), true).await;
        let data_port = SocketAddr::new(api.ip(), 1);
        passes(&http(Some(api.port()), None), data_port, ProxyProtocol::V1).await;
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("GET /api/v5/status HTTP/1.1\r\n"),
            "{seen:?}"
        );
    }
}
