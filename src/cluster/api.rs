//! Asking the broker for its own view of its cluster: EMQX `GET /api/v5/nodes` or RabbitMQ
//! `GET /api/nodes`, plain HTTP/1.1 on the local management port, basic auth, one connection
//! per ask. Credentials are read at each ask so that a rotated API secret needs no reload.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use hyper::{StatusCode, Uri};
use serde::Deserialize;
use tokio::net::TcpStream;

use super::quorum::Member;
use crate::config::{ClusterConfig, ClusterMembers, TokenSource, format_duration};
use crate::http_get;

/// Most body bytes read: a node list is a few KiB per node, and a server that streams without
/// end must not make the guard buffer without end.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why the broker's view could not be had. Its `Display` is one line for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `cluster.members` is `none`: there is no API to ask.
    #[error("cluster.members is none")]
    Disabled,
    /// `cluster.url` is not an `http://host[:port]/path` address.
    #[error("cluster.url {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The username or password could not be read.
    #[error("credentials: {0}")]
    Credentials(String),
    /// No TCP connection to the API.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port` from the URL.
        addr: String,
        /// Why, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
    /// The HTTP exchange failed after connecting.
    #[error("http: {0}")]
    Http(String),
    /// The API answered with another status than 200.
    #[error("status {status}{}", hint(*.status))]
    Status {
        /// The status code.
        status: u16,
    },
    /// The body was not the JSON node list of this broker kind.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The ask took longer than `cluster.timeout`.
    #[error("timed out after {}", format_duration(*.0))]
    TimedOut(Duration),
}

fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (check cluster username and password)",
        404 => " (check cluster.url)",
        _ => "",
    }
}

/// Asks the broker named by `config.members` at `config.url` for its members, within
/// `config.timeout`.
pub async fn ask(config: &ClusterConfig) -> Result<Vec<Member>, ApiError> {
    if config.members == ClusterMembers::None {
        return Err(ApiError::Disabled);
    }
    let authorization = authorization(config.username.as_ref(), config.password.as_ref())?;
    let body = tokio::time::timeout(config.timeout, get(&config.url, authorization))
        .await
        .map_err(|_| ApiError::TimedOut(config.timeout))??;
    parse(config.members, &body)
}

/// The `Authorization` header value, if a username or password is configured.
fn authorization(
    username: Option<&TokenSource>,
    password: Option<&TokenSource>,
) -> Result<Option<String>, ApiError> {
    if username.is_none() && password.is_none() {
        return Ok(None);
    }
    let username = username.map(read_token).transpose()?.unwrap_or_default();
    let password = password.map(read_token).transpose()?.unwrap_or_default();
    Ok(Some(basic_auth(&username, &password)))
}

fn read_token(source: &TokenSource) -> Result<String, ApiError> {
    source.read().map_err(ApiError::Credentials)
}

/// `Basic base64(username:password)` (RFC 7617).
fn basic_auth(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{username}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648 section 4); the only use is basic auth, which does
/// not warrant a dependency.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// GETs `url` and returns the body of a 200 answer, at most [`MAX_BODY`] bytes.
async fn get(url: &str, authorization: Option<String>) -> Result<Bytes, ApiError> {
    let bad_url = |reason: &str| ApiError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| bad_url(&format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad_url("no host"))?;
    // `Authority::host` keeps the brackets of an IPv6 literal; the resolver wants them off.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());

    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| ApiError::Connect {
            addr: authority.to_string(),
            reason: e.to_string(),
        })?;
    let mut headers = vec![(ACCEPT, HeaderValue::from_static("application/json"))];
    if let Some(value) = authorization {
        let value = HeaderValue::from_str(&value)
            .map_err(|_| ApiError::Credentials("credentials that cannot go in a header".into()))?;
        headers.push((AUTHORIZATION, value));
    }
    let answer = http_get::get(stream, authority.as_str(), path, &headers, MAX_BODY)
        .await
        .map_err(|e| ApiError::Http(e.0))?;
    if answer.status != StatusCode::OK {
        return Err(ApiError::Status {
            status: answer.status.as_u16(),
        });
    }
    if answer.truncated {
        return Err(ApiError::Malformed(format!("longer than {MAX_BODY} bytes")));
    }
    Ok(answer.body)
}

/// One entry of EMQX's `/api/v5/nodes`; other fields are ignored.
#[derive(Deserialize)]
struct EmqxNode {
    node: String,
    node_status: String,
}

/// One entry of RabbitMQ's `/api/nodes`; other fields are ignored.
#[derive(Deserialize)]
struct RabbitNode {
    name: String,
    running: bool,
}

/// The members in a node list. Both fields are required: a list whose shape has changed must
/// read as an error, not as "nobody running", which would claim a partition.
fn parse(members: ClusterMembers, body: &[u8]) -> Result<Vec<Member>, ApiError> {
    let malformed = |e: serde_json::Error| ApiError::Malformed(e.to_string());
    match members {
        ClusterMembers::None => Err(ApiError::Disabled),
        ClusterMembers::Emqx => {
            let nodes: Vec<EmqxNode> = serde_json::from_slice(body).map_err(malformed)?;
            Ok(nodes
                .into_iter()
                .map(|n| Member {
                    running: n.node_status == "running",
                    node: n.node,
                })
                .collect())
        }
        ClusterMembers::Rabbitmq => {
            let nodes: Vec<RabbitNode> = serde_json::from_slice(body).map_err(malformed)?;
            Ok(nodes
                .into_iter()
                .map(|n| Member {
                    node: n.name,
                    running: n.running,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{FakeBroker, config, members};
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, output) in cases {
            assert_eq!(base64(input.as_bytes()), output, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
        // RFC 7617's example.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn credentials_from_file_trimmed_or_env() {
        let dir = std::env::temp_dir().join(format!("brokerside-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let user = TokenSource::Env("PATH".into());
        let header = authorization(Some(&user), Some(&TokenSource::File(file.clone())))
            .unwrap()
            .unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(header, basic_auth(&path, "s3cret"));
        assert_eq!(authorization(None, None).unwrap(), None);

        let missing = TokenSource::File(dir.join("missing"));
        let error = authorization(Some(&user), Some(&missing)).unwrap_err();
        assert!(
            error.to_string().starts_with("credentials: cannot read "),
            "{error}"
        );
        let unset = TokenSource::Env("BROKERSIDE_CLUSTER_TEST_UNSET".into());
        assert_eq!(
            authorization(Some(&unset), None).unwrap_err().to_string(),
            "credentials: environment variable BROKERSIDE_CLUSTER_TEST_UNSET is not set"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_both_node_lists() {
        let emqx = br#"[{"node":"emqx@10.0.0.1","node_status":"running","uptime":5},
                        {"node":"emqx@10.0.0.2","node_status":"stopped"}]"#;
        assert_eq!(
            parse(ClusterMembers::Emqx, emqx).unwrap(),
            members(&["emqx@10.0.0.1"], &["emqx@10.0.0.2"])
        );
        let rabbit = br#"[{"name":"rabbit@a","running":true,"type":"disc"},
                          {"name":"rabbit@b","running":false}]"#;
        assert_eq!(
            parse(ClusterMembers::Rabbitmq, rabbit).unwrap(),
            members(&["rabbit@a"], &["rabbit@b"])
        );
        for bad in [
            &b"not json"[..],
            br#"{"data":[]}"#,
            br#"[{"node":"emqx@a"}]"#,
            br#"[{"name":"rabbit@a","running":true}]"#,
        ] {
            let error = parse(ClusterMembers::Emqx, bad).unwrap_err();
            assert!(matches!(error, ApiError::Malformed(_)), "{error}");
        }
    }

    #[tokio::test]
    async fn asks_emqx_with_basic_auth() {
        let broker = FakeBroker::emqx(&["emqx@a", "emqx@b"], &["emqx@c"]).await;
        let members = ask(&broker.config()).await.unwrap();
        let running: Vec<_> = members
            .iter()
            .filter(|m| m.running)
            .map(|m| &m.node)
            .collect();
        assert_eq!(running, ["emqx@a", "emqx@b"]);
        assert_eq!(members.len(), 3);
        let seen = broker.last_request();
        assert_eq!(seen.path, "/api/v5/nodes");
        assert_eq!(seen.host, broker.addr.to_string());
        assert_eq!(seen.connection, "close");
    }

    #[tokio::test]
    async fn asks_rabbitmq() {
        let broker = FakeBroker::rabbitmq(&["rabbit@a"], &["rabbit@b"]).await;
        assert_eq!(
            ask(&broker.config()).await.unwrap(),
            members(&["rabbit@a"], &["rabbit@b"])
        );
        assert_eq!(broker.last_request().path, "/api/nodes");
    }

    #[tokio::test]
    async fn failures_are_errors_not_panics() {
        let broker = FakeBroker::emqx(&["emqx@a"], &[]).await;

        let mut wrong = broker.config();
        wrong.password = Some(TokenSource::Env("BROKERSIDE_CLUSTER_TEST_WRONG".into()));
        let error = ask(&wrong).await.unwrap_err();
        assert!(matches!(error, ApiError::Credentials(_)), "{error}");

        let mut wrong = broker.config();
        wrong.password = Some(broker.secret("wrong", "not-the-secret\n"));
        let error = ask(&wrong).await.unwrap_err();
        assert_eq!(error, ApiError::Status { status: 401 });

        let mut anonymous = broker.config();
        anonymous.username = None;
        anonymous.password = None;
        let error = ask(&anonymous).await.unwrap_err();
        assert_eq!(error, ApiError::Status { status: 401 });
        assert_eq!(
            error.to_string(),
            "status 401 (check cluster username and password)"
        );

        broker.answer_raw(b"<html>oops</html>".to_vec());
        let error = ask(&broker.config()).await.unwrap_err();
        assert!(matches!(error, ApiError::Malformed(_)), "{error}");

        broker.answer_raw(vec![b' '; MAX_BODY + 1]);
        let error = ask(&broker.config()).await.unwrap_err();
        assert_eq!(
            error,
            ApiError::Malformed(format!("longer than {MAX_BODY} bytes"))
        );

        let mut wrong_path = broker.config();
        wrong_path.url = format!("http://{}/api/v4/nodes", broker.addr);
        let error = ask(&wrong_path).await.unwrap_err();
        assert_eq!(error, ApiError::Status { status: 404 });

        broker.stall();
        let mut hurried = broker.config();
        hurried.timeout = Duration::from_millis(200);
        assert_eq!(
            ask(&hurried).await.unwrap_err(),
            ApiError::TimedOut(hurried.timeout)
        );
    }

    #[tokio::test]
    async fn unreachable_and_bad_urls() {
        // A port that was just free: nothing listens there.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let mut cfg = config(ClusterMembers::Emqx, &format!("http://{addr}/api/v5/nodes"));
        let error = ask(&cfg).await.unwrap_err();
        assert!(matches!(error, ApiError::Connect { .. }), "{error}");

        for url in [
            "https://127.0.0.1/api/v5/nodes",
            "not a url",
            "/api/v5/nodes",
        ] {
            cfg.url = url.to_string();
            let error = ask(&cfg).await.unwrap_err();
            assert!(matches!(error, ApiError::Url { .. }), "{url}: {error}");
        }
    }
}
