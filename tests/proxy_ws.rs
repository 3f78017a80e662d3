//! MQTT over WebSocket through the `ws` listener: the proxy relays the HTTP upgrade and the
//! WebSocket frames untouched (layer 4) to the broker's WebSocket listener.

mod support;

use rumqttc::QoS;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_connects_subscribes_and_receives() {
    let broker = start_rumqttd().await;
    let config = listener_config("ws", "127.0.0.1:0", &[broker.ws], "", "");
    let proxy = start_proxy(&config);
    let addr = proxy.addr("ws");

    let mut subscriber = MqttClient::connect(ws_options("ws-sub", addr)).await;
    subscriber.subscribe("ws/+/news", QoS::AtLeastOnce).await;
    let publisher = MqttClient::connect(ws_options("ws-pub", addr)).await;

    let payloads: Vec<Vec<u8>> = vec![
        b"first over websocket".to_vec(),
        pattern(100_000),
        b"last".to_vec(),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        publisher
            .publish(&format!("ws/{i}/news"), QoS::AtLeastOnce, payload.clone())
            .await;
    }
    for (i, payload) in payloads.iter().enumerate() {
        let publish = subscriber.next_publish().await;
        assert_eq!(publish.topic, format!("ws/{i}/news"));
        assert!(publish.payload[..] == payload[..], "payload {i} differs");
    }
    assert_eq!(
        proxy.metric("brokerside_connections_active", &[("listener", "ws")]),
        2
    );
    assert!(proxy.metric("brokerside_bytes_total", &[("direction", "to_client")]) > 100_000);
}
