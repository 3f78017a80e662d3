//! The `amqp` probe: send the AMQP 0-9-1 protocol header and expect the broker's first frame to
//! be Connection.Start (RabbitMQ). Nothing past the frame's first 11 bytes is read.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ProbeError, Step, describe, failed, tcp};
use crate::config::ProxyProtocol;

const PROBE: &str = "amqp";

/// The protocol header a 0-9-1 client opens with (spec section 4.2.2).
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Frame header (type u8, channel u16, size u32) plus the method frame's class and method ids.
const START_PREFIX_LEN: usize = 7 + 2 + 2;
const FRAME_METHOD: u8 = 1;
const CLASS_CONNECTION: u16 = 10;
const METHOD_START: u16 = 10;

/// Opens, sends the protocol header, reads the start of the first frame and closes.
pub(super) async fn probe(
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<(), ProbeError> {
    let mut stream = tcp::connect(server, proxy, step).await?;
    step.at("waiting for Connection.Start");
    stream.write_all(PROTOCOL_HEADER).await.map_err(|e| {
        failed(
            PROBE,
            format!("{} sending the protocol header", describe(&e)),
        )
    })?;
    // Read until the prefix is complete or the server stops: a server that refuses our version
    // answers with its own 8-byte header and closes, and that answer is worth naming.
    let mut prefix = [0u8; START_PREFIX_LEN];
    let mut filled = 0;
    while filled < START_PREFIX_LEN {
        match stream.read(&mut prefix[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if filled == 0 => {
                return Err(failed(
                    PROBE,
                    format!("{} before Connection.Start", describe(&e)),
                ));
            }
            Err(_) => break,
        }
    }
    check_start(&prefix[..filled]).map_err(|reason| failed(PROBE, reason))
}

/// Whether `bytes`, the first bytes the broker sent, begin a Connection.Start method frame on
/// channel 0; otherwise what they are instead.
fn check_start(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("connection closed before Connection.Start".into());
    }
    if bytes.starts_with(b"AMQP") {
        return Err("got a protocol header back, not Connection.Start".into());
    }
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let frame_type = bytes[0];
    let channel = field(1);
    let size = bytes
        .get(3..7)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let (class, method) = (field(7), field(9));
    let is_start = frame_type == FRAME_METHOD
        && channel == Some(0)
        && size.is_some_and(|size| size >= 4)
        && class == Some(CLASS_CONNECTION)
        && method == Some(METHOD_START);
    if is_start {
        Ok(())
    } else {
        Err("not AMQP 0-9-1 Connection.Start".into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error_from, passes, raw_peer};
    use super::*;
    use crate::config::CheckKind;

    /// A whole Connection.Start frame as RabbitMQ sends it, with an empty server-properties table.
    fn connection_start() -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&CLASS_CONNECTION.to_be_bytes());
        payload.extend_from_slice(&METHOD_START.to_be_bytes());
        payload.extend_from_slice(&[0, 9]); // version-major, version-minor
        payload.extend_from_slice(&0u32.to_be_bytes()); // server-properties: empty table
        for long_string in [&b"PLAIN"[..], b"en_US"] {
            payload.extend_from_slice(&(long_string.len() as u32).to_be_bytes());
            payload.extend_from_slice(long_string);
        }
        let mut frame = vec![FRAME_METHOD, 0, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE); // frame-end
        frame
    }

    async fn probe_peer(proxy: ProxyProtocol) -> Vec<u8> {
        let (addr, seen) = raw_peer(PROTOCOL_HEADER, Some(connection_start()), true).await;
        passes(&CheckKind::Amqp, addr, proxy).await;
        seen.await.unwrap()
    }

    #[tokio::test]
    async fn rabbitmq_like_peer_passes() {
        assert_eq!(probe_peer(ProxyProtocol::Off).await, PROTOCOL_HEADER);
        let seen = probe_peer(ProxyProtocol::V1).await;
        assert!(
            seen.starts_with(b"PROXY TCP4 127.0.0.1 127.0.0.1 "),
            "{seen:?}"
        );
        assert!(seen.ends_with(PROTOCOL_HEADER), "{seen:?}");
    }

    #[tokio::test]
    async fn other_peers_fail() {
        let not_start = "amqp: not AMQP 0-9-1 Connection.Start";
        let cases: [(Option<Vec<u8>>, &str); 4] = [
            (
                Some(PROTOCOL_HEADER.to_vec()),
                "amqp: got a protocol header back, not Connection.Start",
            ),
            (
                Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
                not_start,
            ),
            (None, "amqp: connection closed before Connection.Start"),
            // A method frame, but Connection.Close (10, 50).
            (
                Some(vec![1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 50, 0xCE]),
                not_start,
            ),
        ];
        for (answer, expected) in cases {
            // The peer closes at once after answering, as a server that refuses would.
            assert_eq!(
                error_from(&CheckKind::Amqp, PROTOCOL_HEADER, answer, false).await,
                expected
            );
        }
    }

    #[test]
    fn frame_prefix_is_parsed_defensively() {
        let start = connection_start();
        assert_eq!(check_start(&start[..START_PREFIX_LEN]), Ok(()));
        for cut in 1..START_PREFIX_LEN {
            assert!(check_start(&start[..cut]).is_err(), "cut at {cut}");
        }
        let mut on_channel_1 = start.clone();
        on_channel_1[2] = 1;
        assert!(check_start(&on_channel_1[..START_PREFIX_LEN]).is_err());
        let mut too_short = start.clone();
        too_short[3..7].copy_from_slice(&2u32.to_be_bytes());
        assert!(check_start(&too_short[..START_PREFIX_LEN]).is_err());
        assert!(check_start(&[0xFF; START_PREFIX_LEN]).is_err());
    }
}
