//! One HTTP/1.1 GET over a fresh connection, shared by the http probe, the cluster guard and
//! Consul discovery: the request with the usual headers, the connection driven in the caller's
//! task (so the caller's timeout drops everything at once), a bounded body, and errors in a few
//! words that fit on `/haproxy_health`.

use std::error::Error as _;
use std::io;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most the `max_body` asked for.
    pub body: Bytes,
    /// Whether the body went on past `max_body` (the rest was not read).
    pub truncated: bool,
}

/// Why a GET failed, in a few words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GetError(pub String);

/// Sends `GET path` to `authority` (the `Host` header) over `stream` and reads the answer, at
/// most `max_body` bytes of body. The server is asked to close the connection afterwards.
pub async fn get<S>(
    stream: S,
    authority: &str,
    path: &str,
    extra: &[(HeaderName, HeaderValue)],
    max_body: usize,
) -> Result<Answer, GetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut request = Request::get(path)
        .header(HOST, authority)
        .header(CONNECTION, "close")
        .header(
            USER_AGENT,
            concat!("brokerside/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in extra {
        request = request.header(name, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|_| GetError(format!("cannot request path {path:?}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| GetError(reason(&e)))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| GetError(reason(&e)))?;
        let (parts, mut body) = response.into_parts();
        let mut read = BytesMut::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| GetError(format!("body: {}", reason(&e))))?;
            if let Ok(data) = frame.into_data() {
                let room = max_body - read.len();
                if data.len() > room {
                    read.extend_from_slice(&data[..room]);
                    truncated = true;
                    break;
                }
                read.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: read.freeze(),
            truncated,
        })
    };
    // The connection future does the socket I/O for `exchange` and must be polled alongside it,
    // in this task. When it ends (or fails) first, the exchange learns it through its own
    // futures, which give the better error.
    let drive = async {
        let _ = connection.await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        result = exchange => result,
        () = drive => Err(GetError("connection ended".to_string())),
    }
}

/// A hyper error in a few words: the OS error when there is one.
pub fn reason(error: &hyper::Error) -> String {
    if let Some(io) = error.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        describe_io(io)
    } else if error.is_incomplete_message() {
        "connection closed before the response".into()
    } else if error.is_parse() {
        "malformed response".into()
    } else {
        error.to_string()
    }
}

/// An I/O error in the words of `/haproxy_health`: `connection refused`, not
/// `Connection refused (os error 111)`.
pub fn describe_io(error: &io::Error) -> String {
    use io::ErrorKind as Kind;
    let words = match error.kind() {
        Kind::ConnectionRefused => "connection refused",
        Kind::ConnectionReset => "connection reset",
        Kind::ConnectionAborted => "connection aborted",
        Kind::UnexpectedEof | Kind::BrokenPipe => "connection closed",
        Kind::TimedOut => "timed out",
        Kind::HostUnreachable => "host unreachable",
        Kind::NetworkUnreachable => "network unreachable",
        Kind::AddrNotAvailable => "address not available",
        _ => {
            let text = error.to_string();
            let end = text.find(" (os error").unwrap_or(text.len());
            return text[..end].to_lowercase();
        }
    };
    words.to_string()
}
