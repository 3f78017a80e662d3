//! Health probes: one attempt to learn whether a backend server serves, by kind (`tcp`, `mqtt`,
//! `http`, `amqp`). A probe opens its own connection, sends the same PROXY header as the data
//! path of its backend, and fails with a [`ProbeError`] whose text is the one line an operator
//! reads on `/haproxy_health`.

mod amqp;
mod http;
mod mqtt;
mod tcp;

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{CheckKind, ProxyProtocol, format_duration};

/// Why a probe failed. Its `Display` is one short line meant for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The TCP connection could not be opened (or its PROXY header not sent), e.g.
    /// `connection refused`.
    #[error("{0}")]
    Connect(String),
    /// The server answered, but not as a healthy server of this kind does, e.g.
    /// `mqtt: CONNACK refused: not authorized` or `http: status 503, expected 200`.
    #[error("{probe}: {reason}")]
    Failed {
        /// The probe kind: `tcp`, `mqtt`, `http` or `amqp`.
        probe: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The probe took longer than the check's timeout, e.g.
    /// `timed out after 1s waiting for CONNACK`.
    #[error("timed out after {} {step}", format_duration(*.after))]
    TimedOut {
        /// The check's timeout.
        after: Duration,
        /// What the probe was doing when time ran out (`connecting`, `waiting for CONNACK`, ...).
        step: &'static str,
    },
}

/// Where a probe has got to, so that a timeout can say what it was waiting for.
#[derive(Debug)]
struct Step(&'static str);

impl Step {
    fn new() -> Step {
        Step("connecting")
    }

    fn at(&mut self, step: &'static str) {
        self.0 = step;
    }
}

/// Runs one probe of `kind` against `server`, sending the PROXY header `proxy` first where the
/// data path would. No time limit: the caller applies one (or use [`probe_within`], whose timeout
/// error also says what the probe was waiting for).
pub async fn probe(
    kind: &CheckKind,
    server: SocketAddr,
    proxy: ProxyProtocol,
) -> Result<(), ProbeError> {
    run(kind, server, proxy, &mut Step::new()).await
}

/// [`probe`] bounded by `timeout`; running out of time fails with [`ProbeError::TimedOut`].
pub async fn probe_within(
    kind: &CheckKind,
    server: SocketAddr,
    proxy: ProxyProtocol,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut step = Step::new();
    let result = tokio::time::timeout(timeout, run(kind, server, proxy, &mut step)).await;
    result.unwrap_or(Err(ProbeError::TimedOut {
        after: timeout,
        step: step.0,
    }))
}

async fn run(
    kind: &CheckKind,
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<(), ProbeError> {
    match kind {
        CheckKind::Tcp => tcp::probe(server, proxy, step).await,
        CheckKind::Mqtt(check) => mqtt::probe(check, server, proxy, step).await,
        CheckKind::Http(check) => http::probe(check, server, proxy, step).await,
        CheckKind::Amqp => amqp::probe(server, proxy, step).await,
    }
}

/// A [`ProbeError::Failed`] of probe kind `probe`.
fn failed(probe: &'static str, reason: impl Into<String>) -> ProbeError {
    ProbeError::Failed {
        probe,
        reason: reason.into(),
    }
}

use crate::http_get::describe_io as describe;

#[cfg(test)]
mod tests {
    //! Peers shared by the probe tests of every kind: a listener that records what it receives
    //! and answers with fixed bytes.

    use std::io;
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// A raw peer on loopback port 0: for its one connection it reads what arrives until the
    /// bytes received contain `until` (with `b""`: until the first bytes) or the client stops,
    /// then writes `answer` (if any) and, with `hold`, reads on until the client closes. The
    /// bytes received come back through the receiver.
    pub(super) async fn raw_peer(
        until: &'static [u8],
        answer: Option<Vec<u8>>,
        hold: bool,
    ) -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
                if until.is_empty() || seen.windows(until.len()).any(|w| w == until) {
                    break;
                }
            }
            if let Some(answer) = answer {
                let _ = stream.write_all(&answer).await;
            }
            if hold {
                // Reads on until the client closes, recording the rest too.
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                }
            }
            let _ = seen_tx.send(seen);
        });
        (addr, seen_rx)
    }

    /// An address on loopback where nothing listens.
    pub(super) async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// Time allowed to probes that should end on their own.
    pub(super) const WAIT: Duration = Duration::from_secs(5);

    /// Probes `addr` and fails the test unless the probe passes.
    pub(super) async fn passes(kind: &CheckKind, addr: SocketAddr, proxy: ProxyProtocol) {
        if let Err(error) = probe_within(kind, addr, proxy, WAIT).await {
            panic!("probe of {addr} failed: {error}");
        }
    }

    /// Probes `addr` (no PROXY header) within `timeout` and returns the error line; fails the test
    /// if the probe passes.
    pub(super) async fn error_within(
        kind: &CheckKind,
        addr: SocketAddr,
        timeout: Duration,
    ) -> String {
        match probe_within(kind, addr, ProxyProtocol::Off, timeout).await {
            Ok(()) => panic!("probe of {addr} passed"),
            Err(error) => error.to_string(),
        }
    }

    /// The error line of a probe against a [`raw_peer`] that answers `answer` once it received
    /// `until`; with `hold` the peer then waits for the probe to close, else it closes first.
    pub(super) async fn error_from(
        kind: &CheckKind,
        until: &'static [u8],
        answer: Option<Vec<u8>>,
        hold: bool,
    ) -> String {
        let (addr, _seen) = raw_peer(until, answer, hold).await;
        error_within(kind, addr, WAIT).await
    }

    #[test]
    fn io_errors_read_as_short_words() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
        let raw = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe(&raw), "no such file or directory");
    }

    #[test]
    fn timeouts_say_what_they_waited_for() {
        let error = ProbeError::TimedOut {
            after: Duration::from_secs(1),
            step: "waiting for CONNACK",
        };
        assert_eq!(error.to_string(), "timed out after 1s waiting for CONNACK");
        let error = ProbeError::TimedOut {
            after: Duration::from_millis(250),
            step: "connecting",
        };
        assert_eq!(error.to_string(), "timed out after 250ms connecting");
    }
}
