//! The `consul` source: the passing instances of a service from Consul's health API
//! (`GET /v1/health/service/<name>?passing`) with blocking queries.
//!
//! Blocking-query rules from Consul's documentation: send the last `X-Consul-Index` with `wait`;
//! the answer comes when the index moves or `wait` (plus up to `wait/16` of Consul's jitter)
//! has passed. An unchanged index means an unchanged set. An index that goes backwards (a
//! restored snapshot, a new leader with older state) resets it to 0, so the next query answers
//! at once with the current index; an index of 0 is used as 1 so that queries keep blocking.
//! Successive queries are at least [`MIN_QUERY_GAP`] apart, and errors back off with jitter from
//! 1 s doubling to 30 s: neither a misbehaving server nor an outage makes a polling storm.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{ACCEPT, HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Discover, Discovered, DiscoveryError, Found};
use crate::config::{ConsulDiscovery, TokenSource};
use crate::http_get;

/// The largest answer read: a few thousand instances fit easily.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Shortest time between the starts of two queries.
pub const MIN_QUERY_GAP: Duration = Duration::from_millis(250);
/// First back-off after an error.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Slack on top of `wait + wait/16` for connecting and transferring.
const REQUEST_SLACK: Duration = Duration::from_secs(5);

/// A Consul health-API source.
pub struct ConsulSource {
    /// `host:port` to connect to and send as `Host`.
    authority: String,
    /// Path prefix before `/v1/...` (Consul behind a reverse proxy), without a trailing `/`.
    prefix: String,
    /// The URL as configured, for error messages.
    url: String,
    service: String,
    token: Option<TokenSource>,
    wait: Duration,
    index: u64,
    last: Option<Discovered>,
    backoff: Duration,
    backoff_min: Duration,
    started: Option<Instant>,
}

impl ConsulSource {
    /// The source for `config`.
    pub fn new(config: &ConsulDiscovery) -> ConsulSource {
        let rest = config
            .url
            .strip_prefix("http://")
            .unwrap_or(&config.url)
            .trim_end_matches('/');
        let (authority, prefix) = match rest.split_once('/') {
            Some((authority, path)) => (authority, format!("/{path}")),
            None => (rest, String::new()),
        };
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        ConsulSource {
            authority,
            prefix,
            url: config.url.clone(),
            service: config.service.clone(),
            token: config.token.clone(),
            wait: config.wait,
            index: 0,
            last: None,
            backoff: Duration::ZERO,
            backoff_min: BACKOFF_MIN,
            started: None,
        }
    }

    /// The same source with another first back-off (tests use short ones).
    pub fn with_backoff_min(mut self, backoff_min: Duration) -> ConsulSource {
        self.backoff_min = backoff_min;
        self
    }

    /// The request path and query for the current index.
    fn path(&self) -> String {
        let service = percent_encode(&self.service);
        let wait = if self.wait.subsec_millis() == 0 {
            format!("{}s", self.wait.as_secs())
        } else {
            format!("{}ms", self.wait.as_millis())
        };
        let mut path = format!("{}/v1/health/service/{service}?passing", self.prefix);
        if self.index > 0 {
            path.push_str(&format!("&index={}&wait={wait}", self.index));
        }
        path
    }

    fn error(&self, reason: impl ToString) -> DiscoveryError {
        DiscoveryError::Connect {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// One HTTP exchange: the status, `X-Consul-Index` and body.
    async fn get(&self, token: Option<String>) -> Result<(u64, Bytes), DiscoveryError> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.error(e))?;
        let _ = stream.set_nodelay(true);
        let mut headers = vec![(ACCEPT, HeaderValue::from_static("application/json"))];
        if let Some(token) = token {
            let token = HeaderValue::from_str(&token)
                .map_err(|_| DiscoveryError::Token("the token cannot go in a header".into()))?;
            headers.push((HeaderName::from_static("x-consul-token"), token));
        }
        let answer = http_get::get(
            stream,
            &self.authority,
            &self.path(),
            &headers,
            MAX_RESPONSE_BYTES,
        )
        .await
        .map_err(|e| self.error(e))?;
        if answer.truncated {
            return Err(DiscoveryError::Response {
                url: self.url.clone(),
                reason: format!("reading the answer: longer than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        if answer.status != StatusCode::OK {
            return Err(DiscoveryError::Status {
                url: self.url.clone(),
                status: answer.status.as_u16(),
            });
        }
        let index = answer
            .headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| DiscoveryError::Response {
                url: self.url.clone(),
                reason: "no X-Consul-Index header".into(),
            })?;
        Ok((index, answer.body))
    }

    /// The deadline of one blocking query.
    fn request_timeout(&self) -> Duration {
        if self.index == 0 {
            // Not a blocking query: Consul answers at once.
            return REQUEST_SLACK;
        }
        self.wait + self.wait / 16 + REQUEST_SLACK
    }
}

impl Discover for ConsulSource {
    async fn discover(&mut self) -> Result<Discovered, DiscoveryError> {
        self.started = Some(Instant::now());
        // Read at each query: a rotated token file or a changed secret takes effect at once.
        let token = read_token(self.token.as_ref())?;
        let (index, body) = tokio::time::timeout(self.request_timeout(), self.get(token))
            .await
            .map_err(|_| DiscoveryError::Timeout(self.url.clone()))??;
        let previous = self.index;
        if index == previous
            && let Some(last) = &self.last
        {
            return Ok(last.clone());
        }
        let found = parse_health(&body).map_err(|reason| DiscoveryError::Response {
            url: self.url.clone(),
            reason,
        })?;
        self.index = if index < previous {
            tracing::info!(url = %self.url, previous, index, "Consul index went backwards; starting over");
            0
        } else {
            index.max(1)
        };
        self.last = Some(found.clone());
        Ok(found)
    }

    fn after_success(&mut self, _: &Discovered) -> Option<Duration> {
        self.backoff = Duration::ZERO;
        // The blocking query is the wait; the gap only guards against a server that answers at
        // once every time.
        let elapsed = self.started.map_or(MIN_QUERY_GAP, |s| s.elapsed());
        Some(MIN_QUERY_GAP.saturating_sub(elapsed))
    }

    fn after_error(&mut self) -> Duration {
        self.backoff = (self.backoff * 2).clamp(self.backoff_min, BACKOFF_MAX);
        // Jitter in [backoff/2, backoff]: sidecars that lost Consul together do not come back
        // together.
        let half = self.backoff / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The ACL token, if one is configured and not empty.
fn read_token(source: Option<&TokenSource>) -> Result<Option<String>, DiscoveryError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let token = source.read().map_err(DiscoveryError::Token)?;
    let token = token.trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

/// The instances in a `/v1/health/service` answer: `Service.Address` (or `Node.Address` when
/// the service registered none), `Service.Port`, host = `Node.Node`. Entries without a usable
/// address or port are left out with a warning (a host name as a service address is not
/// resolved).
fn parse_health(body: &[u8]) -> Result<Discovered, String> {
    let entries: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let entries = entries
        .as_array()
        .ok_or_else(|| "expected a JSON array".to_string())?;
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let text = |section: &str, key: &str| {
            entry
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let address = text("Service", "Address").or_else(|| text("Node", "Address"));
        let ip = address.and_then(|a| a.parse::<IpAddr>().ok());
        let port = entry
            .get("Service")
            .and_then(|s| s.get("Port"))
            .and_then(|p| p.as_u64())
            .and_then(|p| u16::try_from(p).ok());
        match (ip, port) {
            (Some(ip), Some(port)) => records.push(Found {
                ip,
                port,
                host: text("Node", "Node").map(str::to_string),
                target: None,
            }),
            _ => tracing::warn!(
                address = address.unwrap_or(""),
                ?port,
                "Consul instance without an IP address and port; left out"
            ),
        }
    }
    Ok(Discovered { records, ttl: None })
}

/// `text` with everything but unreserved characters percent-encoded, for a path segment.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_consul::TestConsul;

    fn source(consul: &TestConsul, wait: Duration, token: Option<TokenSource>) -> ConsulSource {
        ConsulSource::new(&ConsulDiscovery {
            url: consul.url(),
            service: "emqx".into(),
            token,
            wait,
        })
    }

    fn ips(found: &Discovered) -> Vec<String> {
        found.records.iter().map(|f| f.ip.to_string()).collect()
    }

    #[tokio::test]
    async fn instances_join_and_leave_through_blocking_queries() {
        let consul = TestConsul::start().await;
        consul.set_instances(&[("node-a", "10.0.0.5", 1883), ("node-b", "", 1884)]);
        let mut emqx = source(&consul, Duration::from_secs(10), None);

        let found = emqx.discover().await.unwrap();
        // node-b registered no service address: its node's address stands in.
        assert_eq!(ips(&found), ["10.0.0.5", "10.1.0.2"]);
        assert_eq!(found.records[0].port, 1883);
        assert_eq!(found.records[0].host.as_deref(), Some("node-a"));
        let first = consul.seen();
        assert_eq!(first[0].path, "/v1/health/service/emqx");
        assert!(first[0].passing);
        assert_eq!(first[0].index, None, "the first query does not block");

        // The next query blocks until the set changes, and no longer.
        let index = consul.index();
        let started = Instant::now();
        let (found, ()) = tokio::join!(emqx.discover(), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            consul.set_instances(&[("node-a", "10.0.0.5", 1883), ("node-c", "10.0.0.7", 1883)]);
        });
        let elapsed = started.elapsed();
        assert_eq!(ips(&found.unwrap()), ["10.0.0.5", "10.0.0.7"]);
        assert!(
            elapsed >= Duration::from_millis(250),
            "{elapsed:?}: did not block"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{elapsed:?}: waited for the timeout"
        );
        let seen = consul.seen();
        assert_eq!(seen[1].index, Some(index));
        assert_eq!(seen[1].wait.as_deref(), Some("10s"));

        // Everyone leaves: an empty set is an answer.
        let (found, ()) = tokio::join!(emqx.discover(), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            consul.set_instances(&[]);
        });
        assert_eq!(found.unwrap(), Discovered::default());
    }

    #[tokio::test]
    async fn an_unchanged_index_after_the_wait_keeps_the_set() {
        let consul = TestConsul::start().await;
        consul.set_instances(&[("node-a", "10.0.0.5", 1883)]);
        let mut emqx = source(&consul, Duration::from_millis(300), None);
        let first = emqx.discover().await.unwrap();
        let started = Instant::now();
        let again = emqx.discover().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(first, again);
        assert_eq!(consul.seen()[1].wait.as_deref(), Some("300ms"));
    }

    #[tokio::test]
    async fn the_token_is_sent_from_a_file_or_the_environment() {
        let consul = TestConsul::start().await;
        consul.set_instances(&[("node-a", "10.0.0.5", 1883)]);
        let file = std::env::temp_dir().join(format!("brokerside-token-{}", fastrand::u64(..)));
        std::fs::write(&file, "s3cr3t-from-file\n").unwrap();
        source(
            &consul,
            Duration::from_secs(1),
            Some(TokenSource::File(file.clone())),
        )
        .discover()
        .await
        .unwrap();
        assert_eq!(consul.seen()[0].token.as_deref(), Some("s3cr3t-from-file"));

        // PATH is always set; any variable's value is sent as it is.
        let path = std::env::var("PATH").unwrap();
        source(
            &consul,
            Duration::from_secs(1),
            Some(TokenSource::Env("PATH".into())),
        )
        .discover()
        .await
        .unwrap();
        assert_eq!(consul.seen()[1].token.as_deref(), Some(path.trim()));

        // A missing token file is an error, and nothing is sent without the token.
        std::fs::remove_file(&file).unwrap();
        let error = source(
            &consul,
            Duration::from_secs(1),
            Some(TokenSource::File(file)),
        )
        .discover()
        .await
        .unwrap_err();
        assert!(matches!(error, DiscoveryError::Token(_)), "{error}");
        assert_eq!(consul.seen().len(), 2);
    }

    #[tokio::test]
    async fn an_index_going_backwards_starts_over_from_zero() {
        let consul = TestConsul::start().await;
        consul.set_index(100);
        consul.set_instances(&[("node-a", "10.0.0.5", 1883)]);
        let mut emqx = source(&consul, Duration::from_millis(200), None);
        emqx.discover().await.unwrap();
        assert_eq!(emqx.index, 101);

        // A restored snapshot: the index is lower than the one asked for.
        consul.set_index(5);
        consul.set_instances(&[("node-b", "10.0.0.6", 1883)]);
        let found = emqx.discover().await.unwrap();
        assert_eq!(ips(&found), ["10.0.0.6"]);
        assert_eq!(emqx.index, 0);
        emqx.discover().await.unwrap();
        let seen = consul.seen();
        assert_eq!(seen[1].index, Some(101));
        assert_eq!(seen[2].index, None, "after the reset the query starts over");
        assert_eq!(emqx.index, 6);
    }

    #[tokio::test]
    async fn errors_are_reported_and_back_off() {
        let consul = TestConsul::start().await;
        consul.fail_with(Some(500));
        let mut emqx = source(&consul, Duration::from_secs(1), None);
        let error = emqx.discover().await.unwrap_err();
        assert_eq!(
            error,
            DiscoveryError::Status {
                url: consul.url(),
                status: 500
            }
        );
        let pauses: Vec<Duration> = (0..7).map(|_| emqx.after_error()).collect();
        for (pause, ceiling) in pauses.iter().zip([1, 2, 4, 8, 16, 30, 30]) {
            let ceiling = Duration::from_secs(ceiling);
            assert!(*pause >= ceiling / 2 && *pause <= ceiling, "{pauses:?}");
        }
        // A success resets the back-off.
        emqx.after_success(&Discovered::default());
        assert!(emqx.after_error() <= Duration::from_secs(1));

        // Bad JSON and a refused connection are errors too.
        let mut refused = ConsulSource::new(&ConsulDiscovery {
            url: "http://127.0.0.1:1".into(),
            service: "emqx".into(),
            token: None,
            wait: Duration::from_secs(1),
        });
        let error = refused.discover().await.unwrap_err();
        assert!(matches!(error, DiscoveryError::Connect { .. }), "{error}");
        assert!(parse_health(b"{\"not\": \"a list\"}").is_err());
        assert!(parse_health(b"[{").is_err());
    }

    #[test]
    fn urls_and_paths() {
        let mut consul = ConsulSource::new(&ConsulDiscovery {
            url: "http://consul.local/prefix/".into(),
            service: "emqx mqtt".into(),
            token: None,
            wait: Duration::from_millis(1500),
        });
        assert_eq!(consul.authority, "consul.local:80");
        assert_eq!(
            consul.path(),
            "/prefix/v1/health/service/emqx%20mqtt?passing"
        );
        consul.index = 7;
        assert_eq!(
            consul.path(),
            "/prefix/v1/health/service/emqx%20mqtt?passing&index=7&wait=1500ms"
        );
        assert_eq!(
            ConsulSource::new(&ConsulDiscovery {
                url: "http://127.0.0.1:8500".into(),
                service: "emqx".into(),
                token: None,
                wait: Duration::from_secs(30),
            })
            .authority,
            "127.0.0.1:8500"
        );
    }
}
