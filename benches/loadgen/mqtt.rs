//! Hand-written MQTT 3.1.1 clients for the benches: idle connections opened many at a time
//! (CONNECT, CONNACK, then silence), and a blocking publisher/subscriber pair that times one
//! QoS 0 message at a time.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::tls::{Connector, StillOpen};

/// MQTT keepalive sent in CONNECT: long enough that no PINGREQ moves during a run.
pub const KEEPALIVE_SECS: u16 = 600;
/// Time allowed for one connection to get its CONNACK.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole batch of connections to open.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(180);

/// An MQTT 3.1.1 CONNECT packet: clean session, no will, no credentials.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).expect("client id fits MQTT's 16-bit length");
    // Protocol name, level 4, flags, keepalive (10 bytes), then the length-prefixed client id.
    let mut body = Vec::with_capacity(12 + id.len());
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02]);
    body.extend_from_slice(&KEEPALIVE_SECS.to_be_bytes());
    body.extend_from_slice(&id_len.to_be_bytes());
    body.extend_from_slice(id);
    packet(0x10, &body)
}

/// A QoS 0 PUBLISH of `payload` on `topic`.
pub fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    put_string(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// A SUBSCRIBE (packet id 1) to `topic` at QoS 0.
pub fn subscribe_packet(topic: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    put_string(&mut body, topic);
    body.push(0x00);
    packet(0x82, &body)
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).expect("string fits MQTT's 16-bit length");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A fixed header (type and flags, remaining length) followed by `body`.
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(first_byte);
    let mut remaining = body.len();
    loop {
        let digit = (remaining % 128) as u8;
        remaining /= 128;
        if remaining == 0 {
            out.push(digit);
            break;
        }
        out.push(digit | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// Checks a 4-byte CONNACK for return code 0.
fn check_connack(connack: [u8; 4]) -> io::Result<()> {
    match connack {
        [0x20, 0x02, _, 0] => Ok(()),
        [0x20, 0x02, _, code] => Err(io::Error::other(format!(
            "broker refused CONNECT with return code {code}"
        ))),
        other => Err(io::Error::other(format!(
            "expected a CONNACK, got {other:02x?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Idle connections

/// Opens connections `range` to `addr` with `connector` (plain or TLS), `concurrency` at a time,
/// each up to its CONNACK. Returns how long that took.
pub async fn open<C: Connector>(
    connector: &C,
    clients: &mut Vec<C::Stream>,
    addr: SocketAddr,
    concurrency: usize,
    range: std::ops::Range<usize>,
) -> Result<Duration, String> {
    let wanted = range.len();
    let started = Instant::now();
    let batch = async {
        let mut pending = JoinSet::new();
        let mut ids = range;
        loop {
            while pending.len() < concurrency {
                let Some(id) = ids.next() else { break };
                let connector = connector.clone();
                pending.spawn(async move {
                    let connecting = connect_idle(&connector, addr, id);
                    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(error)) => Err(format!("client idle-{id}: {error}")),
                        Err(_) => Err(format!(
                            "client idle-{id}: no CONNACK within {CONNECT_TIMEOUT:?}"
                        )),
                    }
                });
            }
            let Some(joined) = pending.join_next().await else {
                return Ok(started.elapsed());
            };
            clients.push(joined.map_err(|error| error.to_string())??);
        }
    };
    match tokio::time::timeout(BATCH_TIMEOUT, batch).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{wanted} connections did not all open within {BATCH_TIMEOUT:?}"
        )),
    }
}

/// One MQTT 3.1.1 connection: CONNECT with client id `idle-<id>`, CONNACK checked, then idle.
async fn connect_idle<C: Connector>(
    connector: &C,
    addr: SocketAddr,
    id: usize,
) -> io::Result<C::Stream> {
    let mut stream = connector.wrap(TcpStream::connect(addr).await?).await?;
    stream
        .write_all(&connect_packet(&format!("idle-{id}")))
        .await?;
    // A TLS stream may hold the record until flushed.
    stream.flush().await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    check_connack(connack)?;
    Ok(stream)
}

/// Fails when the broker or the proxy closed any client (a read or peek that does not block).
pub fn check_still_open(clients: &[impl StillOpen]) -> Result<(), String> {
    let closed = clients.iter().filter(|c| !c.still_open()).count();
    if closed > 0 {
        return Err(format!(
            "{closed} of {} idle connections were closed or received bytes during the run",
            clients.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// Time allowed for one message to arrive, or one handshake step.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking MQTT connection with Nagle off, CONNACK received.
pub fn connect_blocking(addr: SocketAddr, client_id: &str) -> io::Result<StdStream> {
    let mut stream = StdStream::connect_timeout(&addr, ROUND_TRIP_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ROUND_TRIP_TIMEOUT))?;
    stream.write_all(&connect_packet(client_id))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    check_connack(connack)?;
    Ok(stream)
}

/// Subscribes `stream` to `topic` at QoS 0 and waits for the SUBACK that grants it.
pub fn subscribe_blocking(stream: &mut StdStream, topic: &str) -> io::Result<()> {
    stream.write_all(&subscribe_packet(topic))?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback)?;
    if suback != [0x90, 0x03, 0x00, 0x01, 0x00] {
        return Err(io::Error::other(format!(
            "expected a SUBACK granting QoS 0, got {suback:02x?}"
        )));
    }
    Ok(())
}

/// A publisher and a subscriber to one topic, both connected to `addr`.
pub struct RoundTrip {
    publisher: StdStream,
    subscriber: StdStream,
    message: Vec<u8>,
    received: Vec<u8>,
}

impl RoundTrip {
    /// Connects both clients and subscribes; each message will carry `payload_len` bytes.
    pub fn connect(addr: SocketAddr, payload_len: usize) -> io::Result<RoundTrip> {
        const TOPIC: &str = "bench/rtt";
        let mut subscriber = connect_blocking(addr, "rtt-sub")?;
        subscribe_blocking(&mut subscriber, TOPIC)?;
        let publisher = connect_blocking(addr, "rtt-pub")?;
        let message = publish_packet(TOPIC, &vec![b'x'; payload_len]);
        let received = vec![0; message.len()];
        Ok(RoundTrip {
            publisher,
            subscriber,
            message,
            received,
        })
    }

    /// Publishes one message and waits until the subscriber has it whole: the time between.
    pub fn once(&mut self) -> io::Result<Duration> {
        let started = Instant::now();
        self.publisher.write_all(&self.message)?;
        self.subscriber.read_exact(&mut self.received)?;
        let elapsed = started.elapsed();
        // The broker forwards a QoS 0 PUBLISH unchanged (no retain, no packet id).
        if self.received != self.message {
            return Err(io::Error::other(
                "the subscriber received something else than the message",
            ));
        }
        Ok(elapsed)
    }
}
