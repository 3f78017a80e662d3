//! The drain as the load balancer and the clients see it: 200 MQTT clients through the relay to
//! a real broker; `/haproxy_health` 503 at once; new clients still served during `lb_grace`;
//! then the listener refuses and the clients are closed no faster than `close_rate` (measured at
//! the clients); the sidecar stops before the deadline. And the same through the real binary
//! and SIGTERM. Both run two relay threads, so the connections drained live on both.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::http::{http_get, http_request};
use support::observe::{busiest_second, close_times, watch_closes};
use support::process::Process;
use support::raw_mqtt::{closed, mqtt_connect_raw, mqtt_ping_raw};
use support::sidecar::start_sidecar;
use support::*;
use tokio::net::TcpStream;

const CLIENTS: usize = 200;
const LB_GRACE: Duration = Duration::from_secs(1);
const CLOSE_RATE: usize = 100;
const DEADLINE: Duration = Duration::from_secs(10);

/// Two relay threads, explicitly, so that the clients being drained are spread over both.
fn drain_config(broker: SocketAddr) -> String {
    format!(
        "{}\n[drain]\nlb_grace = \"1s\"\nclose_rate = {CLOSE_RATE}\ndeadline = \"10s\"\n\n\
         [runtime]\nrelay_threads = 2\n",
        relay_config(&[broker], "", "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_200_clients() {
    let broker = start_rumqttd().await;
    let mut sidecar = start_sidecar(&drain_config(broker.mqtt));
    let relay = sidecar.addr("mqtt");
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        clients.push(mqtt_connect_raw(relay, &format!("drain-{i}")).await);
    }
    let mut witness = clients.pop().expect("a client");
    let closes = watch_closes(clients);
    assert_eq!(sidecar.get("/haproxy_health").await.status, 200);

    let started = Instant::now();
    let reply = http_request(sidecar.admin, "POST", "/drain").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    // 503 at once: the very next request.
    let reply = sidecar.get("/haproxy_health").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "draining\n"));

    // During the grace the relay serves on: an existing session answers, a new client connects.
    mqtt_ping_raw(&mut witness).await;
    let late = mqtt_connect_raw(relay, "drain-late").await;
    assert!(
        started.elapsed() < LB_GRACE,
        "the grace checks took {:?}; the test host is too slow to tell",
        started.elapsed()
    );
    let mut closes = closes;
    for client in [witness, late] {
        closes.spawn(async move {
            let mut client = client;
            closed(&mut client).await;
            Instant::now()
        });
    }

    // Then the listener refuses. (Probes accepted before that close themselves at once.)
    let refused_after = within("the listener to close", async {
        loop {
            match TcpStream::connect(relay).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return started.elapsed();
                }
                Err(e) => panic!("connect during the drain: {e}"),
                Ok(probe) => drop(probe),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused_after >= LB_GRACE, "refused after {refused_after:?}");

    let times = close_times(closes, DEADLINE).await;
    assert_eq!(times.len(), CLIENTS + 1);
    let first = times[0] - started;
    let last = *times.last().expect("closes") - started;
    let busiest = busiest_second(&times);
    println!(
        "listener refused after {refused_after:?}; closes from {first:?} to {last:?}, \
         at most {busiest} in one second"
    );
    assert!(
        first >= LB_GRACE,
        "a client was closed during the grace: {first:?}"
    );
    // close_rate per second, plus 10 % for what the clients' own scheduling adds: a close seen
    // a little late can fall into the next window with the closes paced after it.
    assert!(
        busiest <= CLOSE_RATE + CLOSE_RATE / 10,
        "{busiest} closes in one second, close_rate is {CLOSE_RATE}"
    );

    let stopped = sidecar.stopped().await;
    let elapsed = started.elapsed();
    println!("stopped after {elapsed:?}: {stopped:?}");
    assert!(elapsed < DEADLINE, "stopped after {elapsed:?}");
    assert_eq!(stopped.cut_at_deadline, 0);
    assert!(stopped.closed_paced > CLIENTS, "{stopped:?}");
    assert_eq!(
        sidecar.metric("brokerside_drain_closed_connections_total", &[]),
        stopped.closed_paced as f64
    );
    assert_eq!(sidecar.metric("brokerside_draining", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_binary_and_exits_0() {
    let broker = start_rumqttd().await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        drain_config(broker.mqtt)
    );
    let mut process = Process::spawn("drain", &config);
    let (relay, admin) = process.started();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(mqtt_connect_raw(relay, &format!("term-{i}")).await);
    }
    let closes = watch_closes(clients);
    assert_eq!(http_get(admin, "/haproxy_health").await.status, 200);

    let started = Instant::now();
    process.sigterm();
    // The signal arrives asynchronously: 503 from the first answer after it is handled.
    let reply = within("503 after SIGTERM", async {
        loop {
            let reply = http_get(admin, "/haproxy_health").await;
            if reply.status == 503 {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let unready_after = started.elapsed();
    assert_eq!(reply.body, "draining\n");
    assert!(unready_after < LB_GRACE, "503 only after {unready_after:?}");

    let code = process.exit_code(DEADLINE + Duration::from_secs(5)).await;
    let exited = started.elapsed();
    println!("503 after {unready_after:?}; exited {code:?} after {exited:?}");
    assert_eq!(code, Some(0));
    assert!(exited < DEADLINE, "exited after {exited:?}");
    let times = close_times(closes, Duration::from_secs(1)).await;
    assert_eq!(times.len(), 5);
    assert!(times[0] - started >= LB_GRACE, "closed during the grace");
}
