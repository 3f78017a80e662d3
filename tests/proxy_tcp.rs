//! The plain TCP relay as a user sees it: real MQTT clients through the proxy to a real broker
//! (rumqttd), and raw TCP peers for what MQTT cannot show (half-close, resets, refusals, limits,
//! idle timeout, shutdown), each checked against what /metrics reports.

mod support;

use std::io::ErrorKind;
use std::sync::Arc;

use rumqttc::{Packet, QoS};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Semaphore};

const REFUSED: &str = "brokerside_connections_refused_total";
const RESET: &str = "brokerside_connections_reset_total";
const BYTES: &str = "brokerside_bytes_total";
const ACTIVE: &str = "brokerside_connections_active";
const TOTAL: &str = "brokerside_connections_total";
const DRAINING: &str = "brokerside_draining";
const DRAIN_CLOSED: &str = "brokerside_drain_closed_connections_total";

/// A proxy whose `mqtt` listener relays to a fresh rumqttd.
async fn proxy_to_rumqttd(listener_extra: &str) -> TestProxy {
    let broker = start_rumqttd().await;
    start_proxy(&relay_config(&[broker.mqtt], listener_extra, ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_at_every_qos_arrive_intact_and_in_order() {
    let proxy = proxy_to_rumqttd("").await;
    let addr = proxy.addr("mqtt");
    const PER_QOS: usize = 20;
    let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let mut subscriber = MqttClient::connect(tcp_options("sub", addr)).await;
    // One subscription per level at that level, so both legs run each QoS's own handshake.
    for qos in levels {
        subscriber
            .subscribe(&format!("qos/{}", qos as u8), qos)
            .await;
    }
    let mut publisher = MqttClient::connect(tcp_options("pub", addr)).await;
    for qos in levels {
        for i in 0..PER_QOS {
            let payload = format!("qos {} message {i}", qos as u8).into_bytes();
            publisher
                .publish(&format!("qos/{}", qos as u8), qos, payload)
                .await;
        }
    }

    let mut received: Vec<Vec<Vec<u8>>> = vec![Vec::new(); levels.len()];
    for _ in 0..levels.len() * PER_QOS {
        let publish = subscriber.next_publish().await;
        let level: usize = publish.topic["qos/".len()..].parse().expect("qos/<n>");
        assert_eq!(publish.qos as usize, level, "{publish:?}");
        received[level].push(publish.payload.to_vec());
    }
    for qos in levels {
        let expected: Vec<Vec<u8>> = (0..PER_QOS)
            .map(|i| format!("qos {} message {i}", qos as u8).into_bytes())
            .collect();
        assert_eq!(received[qos as usize], expected, "QoS {qos:?}");
    }
    // The publisher's side of the handshakes came back through the proxy too.
    let (mut acked, mut completed) = (0, 0);
    while (acked, completed) != (PER_QOS, PER_QOS) {
        let puback = publisher
            .expect("PUBACK and PUBCOMP for every message", |p| match p {
                Packet::PubAck(_) => Some(true),
                Packet::PubComp(_) => Some(false),
                _ => None,
            })
            .await;
        *if puback { &mut acked } else { &mut completed } += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_payload_arrives_byte_exact() {
    let proxy = proxy_to_rumqttd("").await;
    let addr = proxy.addr("mqtt");
    let mut subscriber = MqttClient::connect(tcp_options("big-sub", addr)).await;
    subscriber.subscribe("big", QoS::AtLeastOnce).await;
    let publisher = MqttClient::connect(tcp_options("big-pub", addr)).await;

    let payload = pattern(1024 * 1024);
    publisher
        .publish("big", QoS::AtLeastOnce, payload.clone())
        .await;
    let publish = subscriber.next_publish().await;
    assert_eq!(publish.payload.len(), payload.len());
    assert!(publish.payload[..] == payload[..], "payload differs");
    for direction in ["to_backend", "to_client"] {
        proxy
            .metric_exceeds(BYTES, &[("direction", direction)], payload.len() as u64)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_each_complete_a_round_trip() {
    const CLIENTS: usize = 1000;
    let proxy = proxy_to_rumqttd("").await;
    let addr = proxy.addr("mqtt");
    // Every client holds its connection until all have finished their round trip, so the
    // proxy really carries all of them at once; the test joins in to read the gauge meanwhile.
    let all_done = Arc::new(Barrier::new(CLIENTS + 1));
    let release = Arc::new(Barrier::new(CLIENTS + 1));
    // Connects go in waves: a burst of 1,000 SYNs would overflow the broker's own accept queue
    // (rumqttd listens with a backlog of 1,024 and accepts one at a time), and the kernel's
    // SYN retransmits would then test the broker rather than the proxy.
    let connecting = Arc::new(Semaphore::new(100));
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (all_done, release) = (Arc::clone(&all_done), Arc::clone(&release));
        let connecting = Arc::clone(&connecting);
        clients.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore open");
            let id = format!("c{i}");
            let mut client = MqttClient::connect(tcp_options(&id, addr)).await;
            let topic = format!("rt/{i}");
            client.subscribe(&topic, QoS::AtLeastOnce).await;
            client
                .publish(&topic, QoS::AtLeastOnce, id.clone().into_bytes())
                .await;
            let publish = client.next_publish().await;
            assert_eq!(
                (publish.topic.as_str(), &publish.payload[..]),
                (topic.as_str(), id.as_bytes())
            );
            drop(permit);
            all_done.wait().await;
            release.wait().await;
            client.client.disconnect().await.expect("queue DISCONNECT");
        }));
    }
    within("every client's round trip", all_done.wait()).await;
    assert_eq!(
        proxy.metric(ACTIVE, &[("listener", "mqtt")]),
        CLIENTS as u64
    );
    release.wait().await;
    for client in clients {
        within("a client to finish", client)
            .await
            .expect("client task");
    }
    assert_eq!(proxy.metric(TOTAL, &[("listener", "mqtt")]), CLIENTS as u64);
    assert_eq!(proxy.metric(REFUSED, &[]), 0);
}

#[tokio::test]
async fn a_client_fin_is_carried_across_and_the_reply_still_arrives() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(&[backend.addr], "", ""));
    let mut client = connect(proxy.addr("mqtt")).await;

    client.write_all(b"question").await.unwrap();
    client.shutdown().await.expect("half-close the client");
    let (mut served, _) = backend.accept().await;
    // The backend answers only once it has seen the client's FIN.
    assert_eq!(read_to_eof(&mut served).await.unwrap(), b"question");
    served.write_all(b"answer after your FIN").await.unwrap();
    served.shutdown().await.unwrap();

    assert_eq!(
        read_to_eof(&mut client).await.unwrap(),
        b"answer after your FIN"
    );
    assert_eq!(proxy.metric(BYTES, &[("direction", "to_backend")]), 8);
    assert_eq!(proxy.metric(BYTES, &[("direction", "to_client")]), 21);
}

#[tokio::test]
async fn a_backend_fin_is_carried_across_and_the_client_can_still_send() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(&[backend.addr], "", ""));
    let mut client = connect(proxy.addr("mqtt")).await;
    let (mut served, _) = backend.accept().await;

    served.write_all(b"last words").await.unwrap();
    served.shutdown().await.expect("half-close the backend");
    assert_eq!(read_to_eof(&mut client).await.unwrap(), b"last words");

    client.write_all(b"still listening?").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut served).await.unwrap(), b"still listening?");
}

#[tokio::test]
async fn bytes_counters_match_what_was_relayed() {
    let proxy = start_proxy(&relay_config(&[echo_backend().await], "", ""));
    let mut client = connect(proxy.addr("mqtt")).await;
    let payload = pattern(300_000);
    // Write and read concurrently: the echo would stall once both directions' buffers filled.
    let (mut read, mut write) = client.split();
    let writing = async {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let reading = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut echoed);
    within("300 kB echoed", async { tokio::join!(writing, reading) })
        .await
        .1
        .unwrap();
    assert!(echoed == payload, "echo differs");
    let sent = payload.len() as u64;
    assert_eq!(proxy.metric(BYTES, &[("direction", "to_backend")]), sent);
    assert_eq!(proxy.metric(BYTES, &[("direction", "to_client")]), sent);
}

#[tokio::test]
async fn a_refusing_backend_gets_the_client_a_clean_close_and_is_counted() {
    let server = closed_addr();
    let proxy = start_proxy(&relay_config(&[server], "", ""));
    let mut client = connect(proxy.addr("mqtt")).await;

    assert_eq!(
        read_to_eof(&mut client).await.expect("a FIN, not a reset"),
        b""
    );
    assert_eq!(proxy.metric(REFUSED, &[("reason", "no_backend")]), 1);
    assert_eq!(
        proxy.metric(
            "brokerside_backend_connect_failures_total",
            &[("backend", "b"), ("server", &server.to_string())]
        ),
        1
    );
    proxy.metric_reaches(ACTIVE, &[], 0).await;
}

#[tokio::test]
async fn a_refused_first_server_falls_through_to_the_next() {
    let dead = closed_addr();
    let proxy = start_proxy(&relay_config(&[dead, echo_backend().await], "", ""));
    let mut client = connect(proxy.addr("mqtt")).await;
    round_trip(&mut client, b"via the second server").await;
    let failures = |server: &str| {
        proxy.metric(
            "brokerside_backend_connect_failures_total",
            &[("server", server)],
        )
    };
    assert_eq!(failures(&dead.to_string()), 1);
    assert_eq!(proxy.metric(REFUSED, &[("reason", "no_backend")]), 0);
}

/// A client and the backend's socket that serves it, through the proxy.
type Relayed = (TcpStream, TcpStream);

/// A proxy to a raw backend with two clients connected through it.
async fn two_relayed_clients() -> (TestProxy, Relayed, Relayed) {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(&[backend.addr], "", ""));
    let mut pairs = Vec::new();
    for _ in 0..2 {
        let mut client = connect(proxy.addr("mqtt")).await;
        client.write_all(b"hello").await.unwrap();
        let (mut served, _) = backend.accept().await;
        assert_eq!(read_n(&mut served, 5).await, b"hello");
        pairs.push((client, served));
    }
    let b = pairs.pop().unwrap();
    let a = pairs.pop().unwrap();
    (proxy, a, b)
}

/// `client` and `served` still carry bytes both ways.
async fn still_relays(client: &mut TcpStream, served: &mut TcpStream) {
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(served, 4).await, b"ping");
    served.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(client, 4).await, b"pong");
}

#[tokio::test]
async fn a_backend_closing_one_connection_mid_stream_leaves_the_others_alone() {
    let (proxy, (mut a, a_served), (mut b, mut b_served)) = two_relayed_clients().await;

    drop(a_served);
    assert_eq!(read_to_eof(&mut a).await.expect("A sees a close"), b"");
    still_relays(&mut b, &mut b_served).await;
    // A FIN is an ordinary end, not a reset.
    assert_eq!(proxy.metric(RESET, &[]), 0);
}

#[tokio::test]
async fn a_backend_reset_ends_its_client_only_with_a_fin_and_is_counted() {
    let (proxy, (mut a, a_served), (mut b, mut b_served)) = two_relayed_clients().await;

    // A FIN, which is retransmitted until it arrives; a reset, sent once, can be refused on the
    // way (tests/faults.rs shows a client that never learns of a lost one).
    reset(a_served);
    assert_eq!(read_to_eof(&mut a).await.expect("A sees a FIN"), b"");
    assert_eq!(proxy.metric(RESET, &[("side", "backend")]), 1);
    assert_eq!(proxy.metric(RESET, &[("side", "client")]), 0);
    still_relays(&mut b, &mut b_served).await;
    proxy.metric_reaches(ACTIVE, &[], 1).await;
}

#[tokio::test]
async fn a_client_reset_reaches_the_backend_and_is_counted() {
    let (proxy, (a, mut a_served), (mut b, mut b_served)) = two_relayed_clients().await;

    reset(a);
    let error = read_to_eof(&mut a_served)
        .await
        .expect_err("the backend sees the reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(proxy.metric(RESET, &[("side", "client")]), 1);
    still_relays(&mut b, &mut b_served).await;
}

#[tokio::test]
async fn past_max_connections_a_client_is_closed_and_counted() {
    let proxy = start_proxy(&relay_config(
        &[echo_backend().await],
        "max_connections = 2",
        "",
    ));
    let addr = proxy.addr("mqtt");
    let mut first = connect(addr).await;
    round_trip(&mut first, b"one").await;
    let mut second = connect(addr).await;
    round_trip(&mut second, b"two").await;

    let mut third = connect(addr).await;
    assert_eq!(read_to_eof(&mut third).await.expect("closed"), b"");
    assert_eq!(proxy.metric(REFUSED, &[("reason", "limit")]), 1);
    assert_eq!(proxy.metric(ACTIVE, &[]), 2);

    // A slot that frees up is available again.
    drop(first);
    proxy.metric_reaches(ACTIVE, &[], 1).await;
    let mut fourth = connect(addr).await;
    round_trip(&mut fourth, b"four").await;
    round_trip(&mut second, b"two again").await;
    assert_eq!(proxy.metric(REFUSED, &[("reason", "limit")]), 1);
}

#[tokio::test]
async fn a_client_over_the_limit_that_already_sent_connect_gets_a_clean_close() {
    let proxy = start_proxy(&relay_config(
        &[echo_backend().await],
        "max_connections = 1",
        "",
    ));
    let mut first = connect(proxy.addr("mqtt")).await;
    round_trip(&mut first, b"x").await;
    // An MQTT client writes CONNECT before it reads anything: closing over those unread bytes
    // would reset the connection instead of ending it.
    let mut client = connect(proxy.addr("mqtt")).await;
    client
        .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .await
        .expect("write CONNECT");
    assert_eq!(
        read_to_eof(&mut client).await.expect("a FIN, not a reset"),
        b""
    );
    assert_eq!(proxy.metric(REFUSED, &[("reason", "limit")]), 1);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let proxy = start_proxy(&relay_config(
        &[echo_backend().await],
        "idle_timeout = \"300ms\"",
        "",
    ));
    let mut client = connect(proxy.addr("mqtt")).await;
    round_trip(&mut client, b"then silence").await;
    assert_eq!(read_to_eof(&mut client).await.expect("closed"), b"");
    proxy.metric_reaches(ACTIVE, &[], 0).await;
}

#[tokio::test]
async fn a_drain_keeps_accepting_for_the_grace_then_closes_the_listener_and_the_connections() {
    let drain = "[drain]\nlb_grace = \"300ms\"\ndeadline = \"10s\"\n";
    let mut proxy = start_proxy(&(relay_config(&[echo_backend().await], "", "") + drain));
    let addr = proxy.addr("mqtt");
    let mut client = connect(addr).await;
    round_trip(&mut client, b"before the drain").await;

    proxy.stop();
    proxy.metric_reaches(DRAINING, &[], 1).await;
    // During the grace the listener still accepts and relays: the load balancer has not yet
    // seen the 503.
    let mut late = connect(addr).await;
    round_trip(&mut late, b"during the grace").await;
    within("the listener to close", async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    // Then the drain closes both open connections with a FIN.
    assert_eq!(read_to_eof(&mut client).await.expect("a clean close"), b"");
    assert_eq!(read_to_eof(&mut late).await.expect("a clean close"), b"");
    let stopped = proxy.stopped().await;
    // At least those two; the probes that found the listener still open may add to it.
    assert!(stopped.closed_paced >= 2, "{stopped:?}");
    assert_eq!(stopped.cut_at_deadline, 0);
    assert_eq!(proxy.metric(DRAIN_CLOSED, &[]), stopped.closed_paced as u64);
}

#[tokio::test]
async fn at_the_drain_deadline_what_the_pace_did_not_close_is_cut() {
    // One close per second cannot close three connections within 300 ms.
    let drain = "[drain]\nlb_grace = \"0s\"\nclose_rate = 1\ndeadline = \"300ms\"\n";
    let mut proxy = start_proxy(&(relay_config(&[echo_backend().await], "", "") + drain));
    let mut clients = Vec::new();
    for i in 0..3u8 {
        let mut client = connect(proxy.addr("mqtt")).await;
        round_trip(&mut client, &[i; 4]).await;
        clients.push(client);
    }
    let stopped = proxy.stopped().await;
    assert_eq!((stopped.closed_paced, stopped.cut_at_deadline), (1, 2));
    for client in &mut clients {
        assert_eq!(read_to_eof(client).await.expect("closed"), b"");
    }
    assert_eq!(proxy.metric(DRAIN_CLOSED, &[]), 3);
}

#[test]
fn metric_value_matches_the_name_and_a_subset_of_labels() {
    let text = "# HELP brokerside_bytes_total Bytes.\n\
                brokerside_bytes_total{direction=\"to_client\",listener=\"mqtt\"} 7\n\
                brokerside_bytes_total{direction=\"to_backend\",listener=\"mqtt\"} 5\n\
                brokerside_bytes_total_other 9\n";
    let value = |labels: &[(&str, &str)]| metric_value(text, "brokerside_bytes_total", labels);
    assert_eq!(value(&[("direction", "to_client")]), Some(7.0));
    assert_eq!(value(&[]), Some(12.0));
    assert_eq!(value(&[("listener", "ws")]), None);
    assert_eq!(metric_value(text, "brokerside_bytes", &[]), None);
}

const TIMED_OUT: &str = "brokerside_connections_timed_out_total";

#[tokio::test]
async fn a_half_closed_connection_whose_client_stays_silent_is_closed_and_counted() {
    // The broker ends a client whose MQTT keepalive expired with a FIN; a client that never
    // closes its side must not hold the connection (and a place under the limit) for ever.
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(
        &[backend.addr],
        "half_close_timeout = \"300ms\"",
        "",
    ));
    let client = connect(proxy.addr("mqtt")).await;
    let (mut served, _) = backend.accept().await;
    proxy.metric_reaches(ACTIVE, &[], 1).await;
    served.shutdown().await.expect("the backend's FIN");
    // The client sees the FIN and then says nothing.
    let mut one = [0u8; 1];
    let read = within("the FIN to reach the client", client.peek(&mut one)).await;
    assert_eq!(read.expect("peek"), 0);
    // Within the timeout and a little: the proxy lets both sockets go.
    assert_eq!(
        within("the backend side closed", read_to_eof(&mut served))
            .await
            .expect("a clean end"),
        b""
    );
    proxy.metric_reaches(ACTIVE, &[], 0).await;
    assert_eq!(proxy.metric(TIMED_OUT, &[("timeout", "half_close")]), 1);
    assert_eq!(proxy.metric(TIMED_OUT, &[("timeout", "idle")]), 0);
}

#[tokio::test]
async fn a_half_closed_connection_that_keeps_talking_stays_open() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(
        &[backend.addr],
        "half_close_timeout = \"300ms\"",
        "",
    ));
    let mut client = connect(proxy.addr("mqtt")).await;
    let (mut served, _) = backend.accept().await;
    served.shutdown().await.expect("the backend's FIN");
    // Four times the timeout, a message every 100 ms: the open direction is alive.
    for i in 0..12u8 {
        client
            .write_all(&[i])
            .await
            .expect("the client still sends");
        assert_eq!(read_n(&mut served, 1).await, [i]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.metric(ACTIVE, &[]), 1);
    client.shutdown().await.expect("the client's FIN");
    assert_eq!(read_to_eof(&mut served).await.expect("a clean end"), b"");
    proxy.metric_reaches(ACTIVE, &[], 0).await;
    assert_eq!(proxy.metric(TIMED_OUT, &[("timeout", "half_close")]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_exactly_when_clients_arrive_at_once_on_every_thread() {
    const LIMIT: usize = 20;
    const CLIENTS: usize = 300;
    let backend = echo_backend().await;
    let proxy = start_proxy(&relay_config(
        &[backend],
        &format!("max_connections = {LIMIT}"),
        "",
    ));
    let addr = proxy.addr("mqtt");
    // All at once, from many tasks: the relay threads accept in parallel.
    let start = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut client = TcpStream::connect(addr).await.expect("connect");
            // A client counts as let in when a byte comes back through the relay.
            let _ = client.write_all(b"x").await;
            let mut one = [0u8; 1];
            let echoed = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut client, &mut one),
            )
            .await;
            (matches!(echoed, Ok(Ok(1))), client)
        }));
    }
    let mut held = Vec::new();
    let mut relayed = 0;
    for task in tasks {
        let (ok, client) = within("a client", task).await.expect("client task");
        relayed += usize::from(ok);
        held.push(client);
    }
    assert_eq!(
        relayed, LIMIT,
        "clients relayed with max_connections = {LIMIT}"
    );
    assert_eq!(proxy.metric(TOTAL, &[]), LIMIT as u64);
    assert_eq!(
        proxy.metric(REFUSED, &[("reason", "limit")]),
        (CLIENTS - LIMIT) as u64
    );
    assert_eq!(proxy.metric(ACTIVE, &[]), LIMIT as u64);
}
