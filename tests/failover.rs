//! Failback as clients see it: while the local broker is down, new clients are relayed to the
//! backup; once it is back, the clients the backup holds are closed at most `failback_rate` per
//! second (measured at the clients), counted, and reconnect to the local broker.

mod support;

use std::time::{Duration, Instant};

use support::forwarder::Forwarder;
use support::observe::{busiest_second, close_times, relay_reaches, watch_closes};
use support::raw_mqtt::mqtt_connect_raw;
use support::sidecar::{fast_check, start_sidecar};
use support::*;

const SETTLE: Duration = Duration::from_secs(10);
const HELD: usize = 10;
const FAILBACK_RATE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_the_backup_move_back_gradually() {
    let local = start_rumqttd().await;
    let backup = start_rumqttd().await;
    let mut front = Forwarder::start(local.mqtt).await;
    let sidecar = start_sidecar(&relay_config(
        &[front.addr],
        "",
        &format!(
            "backup = [\"{}\"]\nfailback_rate = {FAILBACK_RATE}\n{}",
            backup.mqtt,
            fast_check("mqtt", "client_id = \"check-failback\"")
        ),
    ));
    let relay = sidecar.addr("mqtt");
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;

    front.kill().await;
    sidecar.until_status("/haproxy_health", 503, SETTLE).await;
    relay_reaches(relay, backup.mqtt, "on-backup").await;
    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        held.push(mqtt_connect_raw(relay, &format!("held-{i}")).await);
    }
    let closes = watch_closes(held);
    let moved_before = sidecar.metric("brokerside_failback_closed_connections_total", &[]);

    front.restart().await;
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    let back = Instant::now();
    // New clients go local at once, before failback has moved everyone.
    relay_reaches(relay, local.mqtt, "local-again").await;

    let times = close_times(closes, Duration::from_secs(15)).await;
    let busiest = busiest_second(&times);
    println!(
        "failback closed {} clients from {:?} to {:?} after recovery, at most {busiest} in one second",
        times.len(),
        times[0].saturating_duration_since(back),
        times[HELD - 1].saturating_duration_since(back),
    );
    // One close of slack: at 5 per second a close observed a little late can share a window
    // with the next five.
    assert!(
        busiest <= FAILBACK_RATE + 1,
        "{busiest} closes in one second, failback_rate is {FAILBACK_RATE}"
    );
    // The publisher of "on-backup" was on the backup too, so it may have been moved as well.
    let moved = sidecar.metric("brokerside_failback_closed_connections_total", &[]) - moved_before;
    assert!(moved >= HELD as f64, "moved {moved}");

    // The moved clients reconnect, and land on the local broker.
    for i in 0..HELD {
        mqtt_connect_raw(relay, &format!("held-{i}")).await;
    }
    relay_reaches(relay, local.mqtt, "after-failback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A draining node moves nobody back: its clients are about to leave for other nodes anyway.
async fn a_draining_node_moves_nobody_back() {
    let local = start_rumqttd().await;
    let backup = start_rumqttd().await;
    let mut front = Forwarder::start(local.mqtt).await;
    let sidecar = start_sidecar(&format!(
        "{}\n[drain]\nlb_grace = \"30s\"\n",
        relay_config(
            &[front.addr],
            "",
            &format!(
                "backup = [\"{}\"]\nfailback_rate = 50\n{}",
                backup.mqtt,
                fast_check("mqtt", "client_id = \"c-fd\"")
            )
        )
    ));
    let relay = sidecar.addr("mqtt");
    sidecar
        .until_status("/haproxy_health", 200, Duration::from_secs(10))
        .await;
    front.kill().await;
    sidecar
        .until_status("/haproxy_health", 503, Duration::from_secs(10))
        .await;
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(mqtt_connect_raw(relay, &format!("fd-{i}")).await);
    }
    sidecar.drain.start("test");
    front.restart().await;
    within("local up again", async {
        while sidecar.metric(
            "brokerside_backend_up",
            &[("server", &front.addr.to_string())],
        ) != 1.0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sidecar.metric("brokerside_failback_closed_connections_total", &[]),
        0.0,
        "failback moved clients off a draining node"
    );
}

const OUTAGE_STARTED: &str = "no backend server accepts connections: refusing clients (counted in brokerside_connections_refused_total{reason=\"no_backend\"})";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_few_log_lines_not_one_per_refused_client() {
    // The binary as an operator runs it, its JSON log read line by line: the broker is down,
    // 200 clients are refused, then the broker comes back.
    let broker_port = free_port();
    let broker_addr = std::net::SocketAddr::from(([127, 0, 0, 1], broker_port));
    let mut process = support::process::Process::spawn(
        "outage",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nrelay_threads = 2\n\
             [[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\
             [[backend]]\nname = \"b\"\nservers = [\"{broker_addr}\"]\n\
             [drain]\nlb_grace = \"0s\"\ndeadline = \"2s\"\n"
        ),
    );
    let (relay, admin) = process.started();
    for _ in 0..200 {
        let mut client = connect(relay).await;
        assert_eq!(read_to_eof(&mut client).await.expect("a clean close"), b"");
    }
    let metrics = support::http::http_get(admin, "/metrics").await.body;
    assert_eq!(
        metric_value(
            &metrics,
            "brokerside_connections_refused_total",
            &[("reason", "no_backend")]
        ),
        Some(200.0)
    );
    process.log_line(OUTAGE_STARTED, 1);
    assert_eq!(
        process.count_logs(OUTAGE_STARTED),
        1,
        "one line for the start"
    );
    assert_eq!(
        process.count_logs("no backend server accepted the connection"),
        0,
        "no line per client"
    );

    // The broker comes back: one line says so, with the count.
    let broker = tokio::net::TcpListener::bind(broker_addr)
        .await
        .expect("the broker's port is free again");
    let client = connect(relay).await;
    let _held = within("the proxy to reach the broker", broker.accept()).await;
    let recovered = process.log_line("a backend server accepts connections again", 1);
    assert_eq!(recovered["fields"]["refused"], 200, "{recovered}");
    drop(client);
    process.sigterm();
    assert_eq!(process.exit_code(Duration::from_secs(10)).await, Some(0));
}
