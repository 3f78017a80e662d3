//! What a client observes, as evidence: where the relay sent a new client (a message published
//! through it arrives at a subscriber on one broker), and when the relay closed held clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::raw_mqtt::closed;
use super::{MqttClient, tcp_options};

/// Proves where the relay sends a new client: a message published through `relay` arrives at a
/// subscriber connected directly to `broker`. `tag` makes client ids and topic unique.
pub async fn relay_reaches(relay: SocketAddr, broker: SocketAddr, tag: &str) {
    let topic = format!("where/{tag}");
    let mut subscriber = MqttClient::connect(tcp_options(&format!("sub-{tag}"), broker)).await;
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
    let publisher = MqttClient::connect(tcp_options(&format!("pub-{tag}"), relay)).await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, tag.as_bytes().to_vec())
        .await;
    let publish = subscriber.next_publish().await;
    assert_eq!(
        (publish.topic.as_str(), &publish.payload[..]),
        (topic.as_str(), tag.as_bytes())
    );
}

/// One task per client that ends, with the time, when the relay closes that client.
pub fn watch_closes(clients: Vec<TcpStream>) -> JoinSet<Instant> {
    let mut closes = JoinSet::new();
    for mut client in clients {
        closes.spawn(async move {
            closed(&mut client).await;
            Instant::now()
        });
    }
    closes
}

/// Every close time of `closes`, sorted; fails unless all arrive within `bound`.
pub async fn close_times(mut closes: JoinSet<Instant>, bound: Duration) -> Vec<Instant> {
    let mut times = Vec::with_capacity(closes.len());
    let collected = tokio::time::timeout(bound, async {
        while let Some(at) = closes.join_next().await {
            times.push(at.expect("close watcher"));
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "only {} clients saw their close within {bound:?}",
        times.len()
    );
    times.sort();
    times
}

/// The most of `times` (sorted) that fall in any one-second window.
pub fn busiest_second(times: &[Instant]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}
