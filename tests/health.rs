//! Health checks as an operator sees them on the admin endpoint, against real peers: a real
//! broker (rumqttd) killed and brought back behind a forwarder, a broker that accepts TCP but
//! never answers CONNECT, an HTTP status page like EMQX's, and AMQP peers. Failover is proven
//! with real MQTT traffic: a message published through the relay arrives at the broker a
//! subscriber holds directly.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::forwarder::Forwarder;
use support::http::StatusServer;
use support::observe::relay_reaches;
use support::sidecar::{TestSidecar, fast_check, start_sidecar};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a health change may take to show: far above fall × interval + timeout of
/// [`fast_check`] (under a second), so that only a check that never fires fails the test.
const SETTLE: Duration = Duration::from_secs(10);

/// One `mqtt` listener relaying to `servers`, then `backup`, checked by `check`.
fn sidecar_config(servers: &[SocketAddr], backup: &[SocketAddr], check: &str) -> String {
    let backup: Vec<String> = backup.iter().map(|s| format!("\"{s}\"")).collect();
    relay_config(
        servers,
        "",
        &format!("backup = [{}]\n{check}", backup.join(", ")),
    )
}

/// The `/health` entry of server `addr`.
async fn server_health(sidecar: &TestSidecar, addr: SocketAddr) -> serde_json::Value {
    let health = sidecar.health().await;
    let servers = health["backends"][0]["servers"].as_array().cloned();
    servers
        .unwrap_or_default()
        .into_iter()
        .find(|s| s["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no server {addr} in /health: {health}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_fails_over_to_the_backup_and_back() {
    let local = start_rumqttd().await;
    let backup = start_rumqttd().await;
    let mut front = Forwarder::start(local.mqtt).await;
    let sidecar = start_sidecar(&sidecar_config(
        &[front.addr],
        &[backup.mqtt],
        &fast_check("mqtt", "client_id = \"check-killed\""),
    ));
    let relay = sidecar.addr("mqtt");

    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    relay_reaches(relay, local.mqtt, "local-before").await;

    front.kill().await;
    let killed = Instant::now();
    let reply = sidecar.until_status("/haproxy_health", 503, SETTLE).await;
    // fall × interval + timeout = 700 ms; printed, not asserted (SETTLE bounds it).
    println!("503 after {:?}: {}", killed.elapsed(), reply.body.trim());
    assert!(reply.body.contains("backend b"), "{}", reply.body);
    assert!(
        reply.body.contains(&front.addr.to_string()),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("connection refused"), "{}", reply.body);
    assert_eq!(reply.body.lines().count(), 1, "one line: {:?}", reply.body);
    relay_reaches(relay, backup.mqtt, "backup").await;

    front.restart().await;
    let back = Instant::now();
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    println!("200 again after {:?}", back.elapsed());
    relay_reaches(relay, local.mqtt, "local-after").await;
    let server = server_health(&sidecar, front.addr).await;
    assert_eq!(
        (&server["state"], &server["error"]),
        (&"up".into(), &serde_json::Value::Null)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_connect_fails_the_mqtt_check_only() {
    let broker = start_rumqttd().await;
    let front = Forwarder::start(broker.mqtt).await;
    let mqtt = start_sidecar(&sidecar_config(
        &[front.addr],
        &[],
        &fast_check("mqtt", "client_id = \"check-hung\""),
    ));
    let tcp = start_sidecar(&sidecar_config(&[front.addr], &[], &fast_check("tcp", "")));
    mqtt.until_status("/haproxy_health", 200, SETTLE).await;
    tcp.until_status("/haproxy_health", 200, SETTLE).await;

    // From now on the port accepts TCP and never sends a byte.
    front.hang(true);
    let reply = mqtt.until_status("/haproxy_health", 503, SETTLE).await;
    assert!(
        reply
            .body
            .contains("timed out after 300ms waiting for CONNACK"),
        "{}",
        reply.body
    );
    let server = server_health(&mqtt, front.addr).await;
    assert_eq!(server["state"], "down");
    assert_eq!(server["error"], "timed out after 300ms waiting for CONNACK");

    // The tcp check against the very same peer sees nothing wrong, for well past its fall.
    let failures_before = tcp.metric("brokerside_health_check_failures_total", &[]);
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        let reply = tcp.get("/haproxy_health").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "OK\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = server_health(&tcp, front.addr).await;
    assert_eq!(
        (&server["state"], &server["error"]),
        (&"up".into(), &serde_json::Value::Null)
    );
    assert_eq!(
        tcp.metric("brokerside_health_check_failures_total", &[]),
        failures_before
    );

    // And the mqtt check follows the broker back.
    front.hang(false);
    mqtt.until_status("/haproxy_health", 200, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_reads_an_emqx_like_status_page() {
    let running = "Node emqx@127.0.0.1 is started\nemqx is running";
    let status = StatusServer::start(200, running).await;
    let sidecar = start_sidecar(&sidecar_config(
        &[status.addr],
        &[],
        &fast_check(
            "http",
            "path = \"/api/v5/status\"\nexpect_status = 200\nexpect_body = \"is running\"",
        ),
    ));
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    assert!(
        status.paths().iter().all(|p| p == "/api/v5/status") && !status.paths().is_empty(),
        "{:?}",
        status.paths()
    );

    status.answer(503, "Node emqx@127.0.0.1 is stopped\nemqx is not running");
    let reply = sidecar.until_status("/haproxy_health", 503, SETTLE).await;
    assert!(
        reply.body.contains("http: status 503, expected 200"),
        "{}",
        reply.body
    );

    // A 200 whose body lacks the phrase is no better.
    status.answer(200, "emqx is starting");
    within("the body check to show", async {
        while server_health(&sidecar, status.addr).await["error"]
            != "http: body lacks \"is running\""
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(sidecar.get("/haproxy_health").await.status, 503);

    status.answer(200, running);
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
}

/// A Connection.Start method frame as RabbitMQ opens with (AMQP 0-9-1 section 4.2.3).
fn connection_start() -> Vec<u8> {
    let mut properties = Vec::new();
    properties.push(7);
    properties.extend_from_slice(b"product");
    properties.push(b'S');
    properties.extend_from_slice(&8u32.to_be_bytes());
    properties.extend_from_slice(b"RabbitMQ");
    let mut payload = Vec::new();
    payload.extend_from_slice(&10u16.to_be_bytes()); // class: connection
    payload.extend_from_slice(&10u16.to_be_bytes()); // method: start
    payload.extend_from_slice(&[0, 9]); // version 0-9
    payload.extend_from_slice(&(properties.len() as u32).to_be_bytes());
    payload.extend_from_slice(&properties);
    for long_string in [&b"AMQPLAIN PLAIN"[..], b"en_US"] {
        payload.extend_from_slice(&(long_string.len() as u32).to_be_bytes());
        payload.extend_from_slice(long_string);
    }
    let mut frame = vec![1, 0, 0]; // method frame, channel 0
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

/// A peer that reads the 8-byte AMQP protocol header and answers `answer`.
async fn amqp_peer(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut header = [0u8; 8];
                if stream.read_exact(&mut header).await.is_ok()
                    && &header == b"AMQP\x00\x00\x09\x01"
                {
                    let _ = stream.write_all(&answer).await;
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_check_tells_rabbitmq_from_a_stranger() {
    let rabbit = amqp_peer(connection_start()).await;
    let stranger = amqp_peer(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await;
    let sidecar = start_sidecar(&sidecar_config(
        &[rabbit],
        &[stranger],
        &fast_check("amqp", ""),
    ));
    let (rabbit_health, stranger_health) = within("both AMQP peers to be judged", async {
        loop {
            let rabbit_health = server_health(&sidecar, rabbit).await;
            let stranger_health = server_health(&sidecar, stranger).await;
            if rabbit_health["state"] == "up" && stranger_health["streak"].as_u64() >= Some(2) {
                return (rabbit_health, stranger_health);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(rabbit_health["error"], serde_json::Value::Null);
    assert_eq!(stranger_health["state"], "down");
    assert_eq!(
        stranger_health["error"],
        "amqp: not AMQP 0-9-1 Connection.Start"
    );
    let up = |server: SocketAddr| {
        sidecar.metric(
            "brokerside_backend_up",
            &[("backend", "b"), ("server", &server.to_string())],
        )
    };
    assert_eq!((up(rabbit), up(stranger)), (1.0, 0.0));
    assert_eq!(sidecar.get("/haproxy_health").await.status, 200);
}
