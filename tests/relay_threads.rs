//! The relay's threads as an operator sees them, through the real binary: with
//! `[runtime] relay_threads = 2` the process runs two relay threads (`ps -T` lists relay-0 and
//! relay-1), the kernel spreads new clients over both, 200 short MQTT sessions to a real broker
//! all complete, the active-connection gauge on /metrics returns to 0, and SIGTERM still ends
//! it cleanly.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::http::http_get;
use support::process::Process;
use support::raw_mqtt::{closed, mqtt_connect_raw, mqtt_ping_raw};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

const SESSIONS: usize = 200;
/// Sessions at once: enough to keep both threads busy, few enough for rumqttd's accept queue.
const AT_ONCE: usize = 50;

/// CONNECT, PINGREQ, DISCONNECT, then the broker's close carried back: one short session.
async fn session(relay: SocketAddr, id: String) {
    let mut stream = mqtt_connect_raw(relay, &id).await;
    mqtt_ping_raw(&mut stream).await;
    within("send DISCONNECT", stream.write_all(&[0xE0, 0]))
        .await
        .expect("send DISCONNECT");
    within("the broker to close after DISCONNECT", closed(&mut stream)).await;
}

/// A series of `/metrics` as the admin endpoint serves it.
async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let reply = http_get(admin, "/metrics").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    metric_value(&reply.body, name, &[("listener", "mqtt")])
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", reply.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relay_threads_share_200_short_sessions() {
    let broker = start_rumqttd().await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\nrelay_threads = 2\n\n\
         [drain]\nlb_grace = \"0s\"\ndeadline = \"5s\"\n\n{}",
        relay_config(&[broker.mqtt], "", "")
    );
    let mut process = Process::spawn("relay-threads", &config);
    let (relay, admin) = process.started();
    assert_eq!(metric(admin, "brokerside_connections_active").await, 0.0);
    // The threads start as the relay starts serving, just after the start-up log line.
    let before = within("two relay threads", async {
        loop {
            let threads = process.threads("relay-");
            if threads.len() >= 2 {
                return threads;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let names: Vec<&str> = before.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["relay-0", "relay-1"]);

    let mut next = 0;
    while next < SESSIONS {
        let mut wave = JoinSet::new();
        for i in next..(next + AT_ONCE).min(SESSIONS) {
            wave.spawn(session(relay, format!("threads-{i}")));
        }
        next += wave.len();
        while let Some(done) = wave.join_next().await {
            done.expect("a session failed");
        }
    }

    within("the active gauge to return to 0", async {
        while metric(admin, "brokerside_connections_active").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        metric(admin, "brokerside_connections_total").await,
        SESSIONS as f64
    );
    // An idle relay thread sleeps in epoll_wait and gains no CPU time: both gained some, so
    // both relayed sessions.
    let after = process.threads("relay-");
    for ((name, was), (_, is)) in before.iter().zip(&after) {
        println!("{name}: {} µs on CPU", (is - was) / 1_000);
        assert!(is > was, "{name} relayed nothing: {before:?} -> {after:?}");
    }

    process.sigterm();
    let code = process.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
}
