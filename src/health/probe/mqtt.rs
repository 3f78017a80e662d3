//! The `mqtt` probe: MQTT 3.1.1 CONNECT → CONNACK accepted, and optionally a publish/subscribe
//! loop-back on a topic, which proves the broker routes messages and not only accepts sessions.
//!
//! It speaks through rumqttc's packet codec over its own socket rather than rumqttc's event loop,
//! because the PROXY header must go out before CONNECT.

use std::net::SocketAddr;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ProbeError, Step, describe, failed, tcp};
use crate::config::{MqttCheck, ProxyProtocol};

const PROBE: &str = "mqtt";

/// Largest packet accepted from the broker. The probe expects a CONNACK, a SUBACK and its own
/// small message; a retained message or another subscriber's traffic on the loop-back topic may
/// come too, but a length beyond this is a broken or hostile peer, not a reason to allocate.
const MAX_PACKET: usize = 64 * 1024;

/// Keepalive announced in CONNECT. The probe lasts well under it, so no PINGREQ is ever due.
const KEEP_ALIVE_SECS: u16 = 30;

/// Packet id of the probe's one SUBSCRIBE (ids must be non-zero).
const SUBSCRIBE_ID: u16 = 1;

/// Packets let pass while waiting for the loop-back message (others' messages on the same topic,
/// retained ones): bounds the wait by count as the timeout bounds it by time.
const MAX_OTHER_PACKETS: usize = 1000;

/// CONNECT, expect CONNACK 0; with a loop-back topic, SUBSCRIBE / PUBLISH / receive it back;
/// then DISCONNECT.
pub(super) async fn probe(
    check: &MqttCheck,
    server: SocketAddr,
    proxy: ProxyProtocol,
    step: &mut Step,
) -> Result<(), ProbeError> {
    let mut session = Session {
        stream: tcp::connect(server, proxy, step).await?,
        buffer: BytesMut::with_capacity(512),
    };

    step.at("waiting for CONNACK");
    let mut connect = Connect::new(check.client_id.clone());
    connect.keep_alive = KEEP_ALIVE_SECS;
    connect.clean_session = true;
    if let Some(username) = &check.username {
        connect.set_login(username.clone(), check.password.clone().unwrap_or_default());
    }
    session.send(Packet::Connect(connect)).await?;
    match session.receive("CONNACK").await? {
        Packet::ConnAck(ConnAck {
            code: ConnectReturnCode::Success,
            ..
        }) => {}
        Packet::ConnAck(ack) => {
            return Err(failed(
                PROBE,
                format!("CONNACK refused: {}", refusal(ack.code)),
            ));
        }
        other => return Err(unexpected(&other, "CONNACK")),
    }

    if let Some(topic) = &check.loopback_topic {
        loopback(&mut session, topic, step).await?;
    }

    // The probe has its answer: a failing goodbye does not change it.
    let _ = session.send(Packet::Disconnect).await;
    let _ = session.stream.shutdown().await;
    Ok(())
}

/// Subscribes to `topic`, publishes a payload no one else sends and waits for it to come back.
async fn loopback(session: &mut Session, topic: &str, step: &mut Step) -> Result<(), ProbeError> {
    step.at("waiting for SUBACK");
    let mut subscribe = Subscribe::new(topic, QoS::AtMostOnce);
    subscribe.pkid = SUBSCRIBE_ID;
    session.send(Packet::Subscribe(subscribe)).await?;
    loop {
        match session.receive("SUBACK").await? {
            Packet::SubAck(ack) if ack.pkid == SUBSCRIBE_ID => match ack.return_codes.first() {
                Some(SubscribeReasonCode::Success(_)) => break,
                Some(SubscribeReasonCode::Failure) => {
                    return Err(failed(PROBE, format!("SUBSCRIBE to {topic:?} refused")));
                }
                None => return Err(failed(PROBE, "empty SUBACK")),
            },
            // A retained message may overtake the SUBACK.
            Packet::Publish(_) => continue,
            other => return Err(unexpected(&other, "SUBACK")),
        }
    }

    step.at("waiting for the loop-back message");
    let token = format!("brokerside probe {:016x}", fastrand::u64(..));
    session
        .send(Packet::Publish(Publish::new(
            topic,
            QoS::AtMostOnce,
            token.as_bytes(),
        )))
        .await?;
    for _ in 0..MAX_OTHER_PACKETS {
        match session.receive("the loop-back message").await? {
            Packet::Publish(publish)
                if publish.topic == topic && publish.payload == token.as_bytes() =>
            {
                return Ok(());
            }
            // Other probers' messages on a shared topic, retained ones: not ours, wait on.
            Packet::Publish(_) | Packet::PingResp => continue,
            other => return Err(unexpected(&other, "the loop-back message")),
        }
    }
    Err(failed(
        PROBE,
        format!("loop-back message not among {MAX_OTHER_PACKETS} messages on {topic:?}"),
    ))
}

/// The probe's MQTT connection: the socket and the bytes read but not yet decoded.
struct Session {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Session {
    async fn send(&mut self, packet: Packet) -> Result<(), ProbeError> {
        let name = packet_name(&packet);
        let mut out = BytesMut::with_capacity(packet.size());
        packet
            .write(&mut out, MAX_PACKET)
            .map_err(|e| failed(PROBE, format!("cannot encode {name}: {e}")))?;
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| failed(PROBE, format!("{} sending {name}", describe(&e))))
    }

    /// The next packet from the broker; `waiting` names what the probe expects, for errors.
    async fn receive(&mut self, waiting: &str) -> Result<Packet, ProbeError> {
        loop {
            // `Packet::read` checks the announced length against MAX_PACKET before it waits for
            // the body, so the buffer never grows past one bounded packet plus one read.
            match Packet::read(&mut self.buffer, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(CodecError::InsufficientBytes(more)) => self.buffer.reserve(more),
                Err(error) => return Err(decode_error(&error)),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(failed(PROBE, format!("connection closed before {waiting}"))),
                Ok(_) => {}
                Err(e) => return Err(failed(PROBE, format!("{} before {waiting}", describe(&e)))),
            }
        }
    }
}

fn decode_error(error: &CodecError) -> ProbeError {
    match error {
        // Codes 6..=255 are reserved in 3.1.1; the codec refuses to decode them.
        CodecError::InvalidConnectReturnCode(code) => {
            failed(PROBE, format!("CONNACK refused: code {code}"))
        }
        CodecError::PayloadSizeLimitExceeded(size) => failed(
            PROBE,
            format!(
                "packet of {size} bytes exceeds the {} KiB limit",
                MAX_PACKET / 1024
            ),
        ),
        other => failed(
            PROBE,
            format!("malformed packet ({})", other.to_string().to_lowercase()),
        ),
    }
}

fn unexpected(packet: &Packet, waiting: &str) -> ProbeError {
    failed(
        PROBE,
        format!("got {} while waiting for {waiting}", packet_name(packet)),
    )
}

/// The CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3) in words.
fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "identifier rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::tests::{error_from, error_within, passes, raw_peer};
    use super::*;
    use crate::config::CheckKind;

    fn mqtt(loopback_topic: Option<&str>) -> CheckKind {
        CheckKind::Mqtt(MqttCheck {
            client_id: "probe-test".into(),
            username: Some("user".into()),
            password: Some("secret".into()),
            loopback_topic: loopback_topic.map(String::from),
        })
    }

    fn encode(packet: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.write(&mut out, MAX_PACKET).unwrap();
        out.to_vec()
    }

    fn connack(code: ConnectReturnCode) -> Option<Vec<u8>> {
        Some(encode(Packet::ConnAck(ConnAck::new(code, false))))
    }

    /// Decodes every packet in `bytes` (after `skip` bytes of PROXY header).
    fn decode_all(bytes: &[u8], skip: usize) -> Vec<Packet> {
        let mut buffer = BytesMut::from(&bytes[skip..]);
        let mut packets = Vec::new();
        while !buffer.is_empty() {
            packets.push(Packet::read(&mut buffer, MAX_PACKET).unwrap());
        }
        packets
    }

    #[tokio::test]
    async fn silent_broker_fails_mqtt_but_passes_tcp() {
        // Accepts and reads the CONNECT, never answers: the tcp probe cannot tell it from a broker.
        let (addr, _seen) = raw_peer(b"", None, true).await;
        passes(&CheckKind::Tcp, addr, ProxyProtocol::Off).await;
        let (addr, _seen) = raw_peer(b"", None, true).await;
        assert_eq!(
            error_within(&mqtt(None), addr, Duration::from_millis(300)).await,
            "timed out after 300ms waiting for CONNACK"
        );
    }

    #[tokio::test]
    async fn connack_not_authorized_fails_with_the_reason() {
        let (addr, seen) = raw_peer(b"", connack(ConnectReturnCode::NotAuthorized), true).await;
        assert_eq!(
            error_within(&mqtt(None), addr, Duration::from_secs(5)).await,
            "mqtt: CONNACK refused: not authorized"
        );
        let Packet::Connect(connect) = decode_all(&seen.await.unwrap(), 0).remove(0) else {
            panic!("first packet is not CONNECT");
        };
        assert_eq!(connect.client_id, "probe-test");
        assert!(connect.clean_session);
        assert_eq!(connect.keep_alive, 30);
        let login = connect.login.unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("user", "secret")
        );
    }

    #[tokio::test]
    async fn accepted_connack_passes_and_says_goodbye_after_the_proxy_header() {
        let (addr, seen) = raw_peer(b"", connack(ConnectReturnCode::Success), true).await;
        passes(&mqtt(None), addr, ProxyProtocol::V1).await;
        let seen = seen.await.unwrap();
        let header_end = seen.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let header = std::str::from_utf8(&seen[..header_end]).unwrap();
        assert!(
            header.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
            "{header:?}"
        );
        assert!(
            header.ends_with(&format!(" {}\r\n", addr.port())),
            "{header:?}"
        );
        let packets = decode_all(&seen, header_end);
        assert!(matches!(packets[0], Packet::Connect(_)), "{packets:?}");
        assert_eq!(packets[1], Packet::Disconnect);
    }

    #[tokio::test]
    async fn bad_answers_are_named() {
        let cases: [(Option<Vec<u8>>, bool, &str); 5] = [
            // Codes 6..=255 are reserved in 3.1.1 (0x87 is MQTT 5's "not authorized").
            (
                Some(vec![0x20, 2, 0, 0x87]),
                true,
                "mqtt: CONNACK refused: code 135",
            ),
            (None, false, "mqtt: connection closed before CONNACK"),
            // A PUBLISH announcing 2 MiB: refused from its fixed header alone.
            (
                Some(vec![0x30, 0x80, 0x80, 0x80, 0x01]),
                true,
                "mqtt: packet of 2097152 bytes exceeds the 64 KiB limit",
            ),
            (
                Some(vec![0x00, 0x00]),
                true,
                "mqtt: malformed packet (invalid packet type: 0)",
            ),
            (
                Some(vec![0x40, 0x02, 0x00, 0x01]),
                true,
                "mqtt: got PUBACK while waiting for CONNACK",
            ),
        ];
        for (answer, hold, expected) in cases {
            assert_eq!(error_from(&mqtt(None), b"", answer, hold).await, expected);
        }
    }

    /// A fake broker for the loop-back: CONNACK, SUBACK (granted or not) followed by a
    /// stranger's message, and the probe's own PUBLISH echoed back when `echo`.
    async fn loopback_broker(grant: bool, echo: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = BytesMut::new();
            loop {
                let packet = loop {
                    match Packet::read(&mut buffer, MAX_PACKET) {
                        Ok(packet) => break packet,
                        Err(CodecError::InsufficientBytes(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if stream.read_buf(&mut buffer).await.unwrap() == 0 {
                        return;
                    }
                };
                let reply = match packet {
                    Packet::Connect(_) => encode(Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::Success,
                        false,
                    ))),
                    Packet::Subscribe(subscribe) => {
                        let code = if grant {
                            SubscribeReasonCode::Success(QoS::AtMostOnce)
                        } else {
                            SubscribeReasonCode::Failure
                        };
                        let ack = rumqttc::mqttbytes::v4::SubAck::new(subscribe.pkid, vec![code]);
                        let other = Publish::new(
                            &subscribe.filters[0].path,
                            QoS::AtMostOnce,
                            "someone else",
                        );
                        let mut reply = encode(Packet::SubAck(ack));
                        reply.extend(encode(Packet::Publish(other)));
                        reply
                    }
                    Packet::Publish(publish) if echo => encode(Packet::Publish(publish)),
                    _ => continue,
                };
                stream.write_all(&reply).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn loopback() {
        let check = mqtt(Some("health/probe"));
        passes(
            &check,
            loopback_broker(true, true).await,
            ProxyProtocol::Off,
        )
        .await;
        assert_eq!(
            error_within(
                &check,
                loopback_broker(false, true).await,
                Duration::from_secs(5)
            )
            .await,
            "mqtt: SUBSCRIBE to \"health/probe\" refused"
        );
        assert_eq!(
            error_within(
                &check,
                loopback_broker(true, false).await,
                Duration::from_millis(300)
            )
            .await,
            "timed out after 300ms waiting for the loop-back message"
        );
    }
}
