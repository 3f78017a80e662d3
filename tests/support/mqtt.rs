//! A real MQTT broker (rumqttd, in-process on its own threads) and real MQTT clients (rumqttc)
//! driven by a background task, with bounded waits for the packets a test expects.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, Transport};
use tokio::sync::mpsc;

use super::{free_port, within};

/// Largest MQTT packet the test broker and clients accept: room for a 1 MiB payload.
pub const MAX_PACKET: usize = 2 * 1024 * 1024;

/// A running rumqttd: an MQTT (v3.1.1) listener and a WebSocket listener.
pub struct Broker {
    /// Plain MQTT over TCP.
    pub mqtt: SocketAddr,
    /// MQTT over WebSocket.
    pub ws: SocketAddr,
}

/// Starts a fresh rumqttd on two free loopback ports and waits until both accept connections.
/// It lives until the test process exits.
pub async fn start_rumqttd() -> Broker {
    let mqtt = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ws = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let connections = format!(
        "connection_timeout_ms = 60000\nmax_payload_size = {MAX_PACKET}\n\
         max_inflight_count = 200\ndynamic_filters = true\n"
    );
    // The same field names as rumqttd's own rumqttd.toml; the console and prometheus servers are
    // left out so that nothing binds a fixed port.
    let text = format!(
        "id = 0\n\
         [router]\nmax_connections = 4096\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n\
         [v4.1]\nname = \"v4-1\"\nlisten = \"{mqtt}\"\nnext_connection_delay_ms = 0\n\
         [v4.1.connections]\n{connections}\
         [ws.1]\nname = \"ws-1\"\nlisten = \"{ws}\"\nnext_connection_delay_ms = 0\n\
         [ws.1.connections]\n{connections}"
    );
    let config: rumqttd::Config = toml::from_str(&text).expect("rumqttd config");
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(error) = rumqttd::Broker::new(config).start() {
                eprintln!("rumqttd stopped: {error}");
            }
        })
        .expect("spawn rumqttd");
    for addr in [mqtt, ws] {
        within(&format!("rumqttd to listen on {addr}"), async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    Broker { mqtt, ws }
}

/// Options for a plain MQTT client of `addr`, large packets allowed.
pub fn tcp_options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Options for an MQTT-over-WebSocket client of `ws://addr/mqtt`.
pub fn ws_options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    options.set_transport(Transport::Ws);
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// An MQTT client whose event loop runs in a background task that forwards incoming packets.
pub struct MqttClient {
    /// Requests (publish, subscribe, disconnect) go through this handle.
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl MqttClient {
    /// Connects with `options` and waits for the broker's CONNACK.
    pub async fn connect(options: MqttOptions) -> MqttClient {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let item = match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => Ok(packet),
                    Ok(Event::Outgoing(_)) => continue,
                    Err(error) => Err(error.to_string()),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let mut this = MqttClient { client, incoming };
        this.expect("CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        this
    }

    /// Waits for the first incoming packet that `pick` accepts, skipping others (acks, pings).
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        within(what, async {
            loop {
                match self.incoming.recv().await {
                    Some(Ok(packet)) => {
                        if let Some(found) = pick(&packet) {
                            return found;
                        }
                    }
                    Some(Err(error)) => {
                        panic!("MQTT connection failed waiting for {what}: {error}")
                    }
                    None => panic!("MQTT event loop ended waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Subscribes to `filter` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }

    /// Publishes `payload` to `topic`.
    pub async fn publish(&self, topic: &str, qos: QoS, payload: Vec<u8>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("queue PUBLISH");
    }

    /// The next PUBLISH delivered to this client.
    pub async fn next_publish(&mut self) -> Publish {
        self.expect("a PUBLISH", |p| match p {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }
}
