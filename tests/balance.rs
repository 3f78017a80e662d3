//! Backend selection as MQTT clients see it, with real brokers (rumqttd) each behind a recording
//! forwarder that notes the client id of every CONNECT it passes on, so the test knows which
//! broker each client landed on:
//! - `balance = "client-id"` over three brokers: a client id returns to its broker, ids spread
//!   evenly, and stopping one broker moves only its clients; with the local broker down, a
//!   client id always fails over to the same peer.
//! - `slowstart`: a local broker that comes back gets a small share of new clients at first and
//!   all of them once the ramp is over, the rest going to the backup.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::forwarder::{Forwarder, Seen};
use support::raw_mqtt::{connect_packet, mqtt_connect_raw};
use support::sidecar::{ConfigFile, TestSidecar, fast_check, start_sidecar, start_sidecar_file};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The client id of the health probes, which the forwarders see too.
const CHECK_ID: &str = "check-balance";

/// `n` real brokers, each behind a recording forwarder.
async fn brokers(n: usize) -> Vec<Forwarder> {
    let mut brokers = Vec::with_capacity(n);
    for _ in 0..n {
        brokers.push(Forwarder::recording(start_rumqttd().await.mqtt).await);
    }
    brokers
}

fn addrs(brokers: &[Forwarder]) -> Vec<SocketAddr> {
    brokers.iter().map(|b| b.addr).collect()
}

/// A relay with the CONNECT preread to `servers` (local) and `backup`, fast MQTT checks, and
/// more backend lines in `extra`.
fn config(servers: &[SocketAddr], backup: &[SocketAddr], preread: bool, extra: &str) -> String {
    let backup: Vec<String> = backup.iter().map(|a| format!("\"{a}\"")).collect();
    relay_config(
        servers,
        if preread { "mqtt_preread = true" } else { "" },
        &format!(
            "backup = [{}]\n{extra}\n{}",
            backup.join(", "),
            fast_check("mqtt", &format!("client_id = \"{CHECK_ID}\""))
        ),
    )
}

/// Waits until the sidecar's checks say `server` is `up` (or down).
async fn until_up(sidecar: &TestSidecar, server: SocketAddr, up: bool) {
    let want = Some(if up { 1.0 } else { 0.0 });
    let labels = [("server", server.to_string())];
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    within(&format!("{server} up = {up}"), async {
        // The series appears once the server's checker has started.
        while metric_value(&sidecar.metrics.render(), "brokerside_backend_up", &labels) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn device_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Connects each of `ids` in turn through `relay` (CONNACK, then close) and says which of
/// `brokers` each landed on.
async fn land(relay: SocketAddr, ids: &[String], brokers: &[Forwarder]) -> Vec<usize> {
    let before: Vec<usize> = brokers.iter().map(|b| b.seen().len()).collect();
    for id in ids {
        drop(mqtt_connect_raw(relay, id).await);
    }
    let mut landed: HashMap<String, usize> = HashMap::new();
    for (i, broker) in brokers.iter().enumerate() {
        for seen in &broker.seen()[before[i]..] {
            if seen.client_id != CHECK_ID {
                let again = landed.insert(seen.client_id.clone(), i);
                assert!(again.is_none(), "{} reached two brokers", seen.client_id);
            }
        }
    }
    ids.iter()
        .map(|id| {
            *landed
                .get(id)
                .unwrap_or_else(|| panic!("{id} reached no broker"))
        })
        .collect()
}

fn counts(landed: &[usize], brokers: usize) -> Vec<usize> {
    let mut counts = vec![0; brokers];
    for &b in landed {
        counts[b] += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_keeps_its_broker_ids_spread_and_a_stopped_broker_moves_only_its_clients() {
    let mut brokers = brokers(3).await;
    let servers = addrs(&brokers);
    let sidecar = start_sidecar(&config(&servers, &[], true, "balance = \"client-id\""));
    let relay = sidecar.addr("mqtt");
    for server in &servers {
        until_up(&sidecar, *server, true).await;
    }

    let ids = device_ids("device", 300);
    let first = land(relay, &ids, &brokers).await;
    let spread = counts(&first, 3);
    println!("300 client ids over 3 brokers: {spread:?}");
    for count in &spread {
        assert!(
            (70..=130).contains(count),
            "{spread:?} is not within 30% of even"
        );
    }

    for round in 0..20 {
        let again = land(relay, &ids[..10], &brokers).await;
        assert_eq!(again, first[..10], "reconnect {round} landed elsewhere");
    }

    // One broker stops: its clients move, spread over the other two; nobody else moves.
    brokers[1].kill().await;
    until_up(&sidecar, servers[1], false).await;
    let after = land(relay, &ids, &brokers).await;
    let mut moved_to = [0; 3];
    for (before, after) in first.iter().zip(&after) {
        if *before == 1 {
            moved_to[*after] += 1;
        } else {
            assert_eq!(after, before, "a client of a broker that stayed moved");
        }
    }
    println!(
        "broker 1 stopped: its {} clients moved to {moved_to:?}",
        spread[1]
    );
    assert_eq!(moved_to[1], 0);
    assert!(moved_to[0] > 0 && moved_to[2] > 0, "{moved_to:?}");

    // It comes back: every client is where it was at first.
    brokers[1].restart().await;
    until_up(&sidecar, servers[1], true).await;
    assert_eq!(land(relay, &ids, &brokers).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_local_broker_down_a_client_id_always_fails_over_to_the_same_peer() {
    // Broker 0 is the local one; 1 to 3 are peers (static backups).
    let mut brokers = brokers(4).await;
    let all = addrs(&brokers);
    let sidecar = start_sidecar(&config(
        &all[..1],
        &all[1..],
        true,
        "balance = \"client-id\"",
    ));
    let relay = sidecar.addr("mqtt");
    for server in &all {
        until_up(&sidecar, *server, true).await;
    }
    let ids = device_ids("roamer", 60);
    assert!(
        land(relay, &ids, &brokers).await.iter().all(|&b| b == 0),
        "local first while it is up"
    );

    brokers[0].kill().await;
    until_up(&sidecar, all[0], false).await;
    let failed_over = land(relay, &ids, &brokers).await;
    let spread = counts(&failed_over, 4);
    println!("60 client ids failed over to peers: {:?}", &spread[1..]);
    assert_eq!(spread[0], 0);
    assert!(
        spread[1..].iter().all(|&n| n > 0),
        "every peer takes a share: {spread:?}"
    );
    for round in 0..20 {
        let again = land(relay, &ids[..5], &brokers).await;
        assert_eq!(
            again,
            failed_over[..5],
            "reconnect {round} went to another peer"
        );
    }
    assert_eq!(land(relay, &ids, &brokers).await, failed_over);

    brokers[0].restart().await;
    until_up(&sidecar, all[0], true).await;
    assert!(land(relay, &ids, &brokers).await.iter().all(|&b| b == 0));
}

/// New clients per second in the slow-start test, each closed after its CONNACK.
const PACE: u64 = 100;
const SLOWSTART: Duration = Duration::from_secs(5);

/// Connects a new client every 1/[`PACE`] s until `stop`, each closed after its CONNACK; returns
/// how many got one.
async fn steady_clients(relay: SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PACE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clients = JoinSet::new();
    let (mut n, mut connected) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        n += 1;
        let id = format!("steady-{n:05}");
        clients.spawn(async move { connack(relay, &id).await });
        while let Some(result) = clients.try_join_next() {
            connected += usize::from(result.unwrap_or(false));
        }
    }
    while let Some(result) = clients.join_next().await {
        connected += usize::from(result.unwrap_or(false));
    }
    connected
}

/// Whether client `id` gets an accepting CONNACK through `relay` within [`WAIT`]. Unlike
/// [`mqtt_connect_raw`] it does not panic: a client relayed to the local broker as it is killed
/// is cut, as it would be in production.
async fn connack(relay: SocketAddr, id: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(relay).await?;
        stream.write_all(&connect_packet(id)).await?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply == [0x20, 2, 0, 0])
    };
    matches!(tokio::time::timeout(WAIT, attempt).await, Ok(Ok(true)))
}

/// The share of clients (not probes) in `[from, to)` that reached `local` rather than `backup`,
/// and how many clients there were.
fn local_share(local: &[Seen], backup: &[Seen], from: Instant, to: Instant) -> (f64, usize) {
    let within = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| s.client_id != CHECK_ID && s.at >= from && s.at < to)
            .count()
    };
    let (l, b) = (within(local), within(backup));
    (l as f64 / (l + b).max(1) as f64, l + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_comes_back_takes_a_growing_share_of_new_clients() {
    let mut local = Forwarder::recording(start_rumqttd().await.mqtt).await;
    let backup = Forwarder::recording(start_rumqttd().await.mqtt).await;
    let sidecar = start_sidecar(&config(
        &[local.addr],
        &[backup.addr],
        false,
        &format!("slowstart = \"{}s\"", SLOWSTART.as_secs()),
    ));
    let relay = sidecar.addr("mqtt");
    until_up(&sidecar, local.addr, true).await;
    until_up(&sidecar, backup.addr, true).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(steady_clients(relay, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    local.kill().await;
    until_up(&sidecar, local.addr, false).await;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarted = Instant::now();
    local.restart().await;
    until_up(&sidecar, local.addr, true).await;
    // Within a poll (20 ms) of the instant the sidecar saw it up, where its ramp starts.
    let back = Instant::now();
    let ramping = weights(&sidecar, local.addr).await;
    tokio::time::sleep(SLOWSTART + Duration::from_millis(1500)).await;
    let ramped = weights(&sidecar, local.addr).await;
    stop.store(true, Ordering::SeqCst);
    let connected = within("the steady clients to finish", clients)
        .await
        .expect("the client task");
    let end = Instant::now();

    let (local_seen, backup_seen) = (local.seen(), backup.seen());
    let second = Duration::from_secs(1);
    let share = |from: Instant, to: Instant| local_share(&local_seen, &backup_seen, from, to);
    let (down, down_n) = share(down_at, restarted);
    let (first, first_n) = share(back, back + second);
    let (third, third_n) = share(back + 2 * second, back + 3 * second);
    let (after, after_n) = share(back + SLOWSTART + Duration::from_millis(200), end);
    println!(
        "{connected} clients; local broker's share of new clients: while down {down:.2} of \
         {down_n}, first second back {first:.2} of {first_n}, third {third:.2} of {third_n}, \
         after slowstart {after:.2} of {after_n}"
    );
    assert_eq!(
        down, 0.0,
        "while the local broker is down its clients go to the backup"
    );
    assert!(
        first_n >= 50,
        "the clients kept their pace: {first_n} in one second"
    );
    // The weight is 0.1 as it comes back and 0.28 a second later (5 s ramp): 0.19 on average
    // over the first second; 0.35 leaves room for chance (4 standard deviations at 100 clients).
    assert!(
        first <= 0.35,
        "{first:.2} of new clients in its first second back"
    );
    assert!(
        third > first,
        "the share grows: {first:.2}, then {third:.2}"
    );
    assert!(after_n >= 50, "{after_n} clients after the ramp");
    assert_eq!(
        after, 1.0,
        "after slowstart the local broker takes every new client"
    );
    // What an operator sees: /health's weight and the gauge, low as it came back, then full.
    println!("weight (/health, /metrics) as it came back {ramping:?}, after the ramp {ramped:?}");
    assert!(ramping.0 < 0.5 && ramping.1 < 0.5, "{ramping:?}");
    assert_eq!(ramped, (1.0, 1.0));
}

/// The slow-start weight of `server` in `/health` and in `/metrics`.
async fn weights(sidecar: &TestSidecar, server: SocketAddr) -> (f64, f64) {
    let health = sidecar.health().await;
    let servers = health["backends"][0]["servers"].as_array().cloned();
    let entry = servers
        .unwrap_or_default()
        .into_iter()
        .find(|s| s["address"] == server.to_string().as_str())
        .unwrap_or_else(|| panic!("{server} is not in /health: {health}"));
    let in_health = entry["weight"].as_f64().expect("a weight");
    let metrics = sidecar.get("/metrics").await.body;
    let server = server.to_string();
    let labels = [("server", server.as_str())];
    let gauge = metric_value(&metrics, "brokerside_backend_server_weight", &labels)
        .expect("the weight gauge");
    (in_health, gauge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_and_slowstart_change_on_reload_and_a_ramp_under_way_survives_it() {
    let mut brokers = brokers(3).await;
    let servers = addrs(&brokers);
    let text = |balance: &str, slowstart: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\nrelay_threads = 2\n\n{}",
            config(
                &servers,
                &[],
                true,
                &format!("balance = \"{balance}\"\nslowstart = \"{slowstart}\""),
            )
        )
    };
    let file = ConfigFile::new("balance", &text("local-first", "0s"));
    let sidecar = start_sidecar_file(&file);
    let relay = sidecar.addr("mqtt");
    for server in &servers {
        until_up(&sidecar, *server, true).await;
    }
    let ids = device_ids("reload", 60);
    assert!(land(relay, &ids, &brokers).await.iter().all(|&b| b == 0));

    file.write(&text("client-id", "60s"));
    assert_eq!(sidecar.reload().await.status, 200);
    let spread = counts(&land(relay, &ids, &brokers).await, 3);
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");

    // Broker 0 comes back and ramps; a reload (a longer ramp) keeps the ramp where it is.
    brokers[0].kill().await;
    until_up(&sidecar, servers[0], false).await;
    brokers[0].restart().await;
    until_up(&sidecar, servers[0], true).await;
    let (before, _) = weights(&sidecar, servers[0]).await;
    file.write(&text("client-id", "120s"));
    assert_eq!(sidecar.reload().await.status, 200);
    let (after, _) = weights(&sidecar, servers[0]).await;
    println!("weight of the ramping broker before the reload {before}, after {after}");
    assert!(before < 0.2 && after < 0.2, "{before} then {after}");
}
