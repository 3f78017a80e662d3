//! MQTT 3.1.1 by hand, for tests that hold hundreds of connections: a CONNECT / CONNACK over a
//! plain socket costs a few bytes where a rumqttc client costs a task and its buffers.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{connect, read_n, within};

/// The CONNECT packet of a clean session `client_id` with a 60 s keepalive.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    variable.extend_from_slice(&(id.len() as u16).to_be_bytes());
    variable.extend_from_slice(id);
    assert!(variable.len() < 128, "one-byte remaining length");
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    packet
}

/// Connects to `addr`, sends CONNECT and asserts an accepting CONNACK.
pub async fn mqtt_connect_raw(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut stream = connect(addr).await;
    within("send CONNECT", stream.write_all(&connect_packet(client_id)))
        .await
        .expect("send CONNECT");
    assert_eq!(
        read_n(&mut stream, 4).await,
        [0x20, 2, 0, 0],
        "CONNACK accepted for {client_id}"
    );
    stream
}

/// Sends PINGREQ and expects PINGRESP: the session is alive end to end.
pub async fn mqtt_ping_raw(stream: &mut TcpStream) {
    within("send PINGREQ", stream.write_all(&[0xC0, 0]))
        .await
        .expect("send PINGREQ");
    assert_eq!(read_n(stream, 2).await, [0xD0, 0], "PINGRESP");
}

/// Waits, without a bound, until the peer closes (FIN or reset): the caller bounds it.
pub async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}
