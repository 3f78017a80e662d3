//! Live reload as an operator meets it: the sidecar runs a config file; the file is rewritten
//! (by rename, as Nomad's template and consul-template write it) and `POST /reload` applies it.
//! Real MQTT clients on a real broker keep exchanging messages through every reload; a raw
//! backend shows what new connections do; `/haproxy_health` is read as the load balancer reads
//! it; `/metrics` as Prometheus does.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use support::observe::{busiest_second, close_times, watch_closes};
use support::sidecar::{ConfigFile, TestSidecar, fast_check, start_sidecar_file};
use support::{
    MqttClient, RawBackend, closed_addr, connect, echo_backend, metric_value, read_n, round_trip,
    start_rumqttd, tcp_options, within,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

const RELOADS: &str = "brokerside_config_reloads_total";
/// The PROXY v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The head every test config starts with: admin on port 0, two relay threads.
fn head(extra_runtime: &str) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\nrelay_threads = 2\n{extra_runtime}\n")
}

/// Reads the `/reload` answer as JSON, asserting its status.
async fn reload(sidecar: &TestSidecar, status: u16) -> serde_json::Value {
    let reply = sidecar.reload().await;
    assert_eq!(reply.status, status, "POST /reload: {reply:?}");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.body))
}

/// Connects to `listener`, sends `hello`, and returns the first bytes `backend` receives: a
/// PROXY v2 signature when the listener sends one, else `hello` itself.
async fn first_bytes(listener: SocketAddr, backend: &mut RawBackend) -> Vec<u8> {
    let mut client = connect(listener).await;
    client.write_all(b"hello-there!").await.expect("write");
    let (mut server, _) = backend.accept().await;
    let first = read_n(&mut server, 12).await;
    drop(client);
    first
}

/// One of the two configs the load test alternates. They differ in the check interval, the
/// order of a backend's servers, a discovery source, a listener's `max_connections`, and PROXY
/// v2 in front of a raw backend.
fn load_config(second: bool, brokers: [SocketAddr; 2], raw: SocketAddr) -> String {
    let (order, interval, limit, proxy) = if second {
        ([brokers[1], brokers[0]], "300ms", 40_000, "v2")
    } else {
        (brokers, "200ms", 50_000, "off")
    };
    let discovery = if second {
        "[[discovery]]\nname = \"seeds\"\nkind = \"static\"\npeers = [\"127.0.0.9:1883\"]\n"
    } else {
        ""
    };
    format!(
        "{head}\
         [[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"brokers\"\n\
         max_connections = {limit}\n\n\
         [[listener]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nbackend = \"raw\"\n\
         proxy_protocol = \"{proxy}\"\n\n\
         [[backend]]\nname = \"brokers\"\nservers = [\"{}\", \"{}\"]\n\
         [backend.check]\nkind = \"tcp\"\ninterval = \"{interval}\"\ntimeout = \"300ms\"\n\
         rise = 1\nfall = 3\n\n\
         [[backend]]\nname = \"raw\"\nservers = [\"{raw}\"]\n\n{discovery}",
        order[0],
        order[1],
        head = head(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_drop_no_connection_and_lose_no_message() {
    const CLIENTS: usize = 500;
    const RELOADS_RUN: u64 = 100;
    let brokers = [start_rumqttd().await.mqtt, start_rumqttd().await.mqtt];
    let mut raw = RawBackend::start("127.0.0.1:0").await;
    let file = ConfigFile::new("load", &load_config(false, brokers, raw.addr));
    let sidecar = start_sidecar_file(&file);
    sidecar
        .until_status("/haproxy_health", 200, Duration::from_secs(10))
        .await;
    let (mqtt, raw_listener) = (sidecar.addr("mqtt"), sidecar.addr("raw"));

    // Every client round-trips QoS 1 messages on its own topic, one at a time, until told to
    // stop: each message must come back, in order, over the connection it started on (the
    // client panics on a disconnect; it never reconnects).
    let stop = Arc::new(AtomicBool::new(false));
    let exchanged = Arc::new(AtomicU64::new(0));
    let connecting = Arc::new(Semaphore::new(100));
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (stop, exchanged) = (Arc::clone(&stop), Arc::clone(&exchanged));
        let connecting = Arc::clone(&connecting);
        clients.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore open");
            let mut client = MqttClient::connect(tcp_options(&format!("load-{i}"), mqtt)).await;
            let topic = format!("load/{i}");
            client.subscribe(&topic, QoS::AtLeastOnce).await;
            drop(permit);
            let mut sent = 0u64;
            while !stop.load(Ordering::Acquire) {
                let payload = sent.to_be_bytes().to_vec();
                client
                    .publish(&topic, QoS::AtLeastOnce, payload.clone())
                    .await;
                let publish = client.next_publish().await;
                assert_eq!(publish.payload[..], payload[..], "client {i}: out of order");
                sent += 1;
                exchanged.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client.client.disconnect().await.expect("queue DISCONNECT");
            sent
        }));
    }
    within("every client connected", async {
        while sidecar.metric("brokerside_connections_active", &[("listener", "mqtt")])
            < CLIENTS as f64
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let before = exchanged.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..RELOADS_RUN {
        let second = i % 2 == 0;
        file.write(&load_config(second, brokers, raw.addr));
        let answer = reload(&sidecar, 200).await;
        assert_eq!(answer["generation"], i + 2, "{answer}");
        // New connections follow the new config at once.
        let first = first_bytes(raw_listener, &mut raw).await;
        if second {
            assert_eq!(first, V2_SIGNATURE, "reload {i}: PROXY v2 expected");
        } else {
            assert_eq!(
                first, b"hello-there!",
                "reload {i}: no PROXY header expected"
            );
        }
    }
    let took = started.elapsed();
    // The reloads ran while the clients were busy, not before or after them.
    let during = exchanged.load(Ordering::Relaxed) - before;
    assert!(during > 0, "no message crossed during {took:?} of reloads");

    stop.store(true, Ordering::Release);
    let mut total = 0;
    for client in clients {
        total += within("a client to finish", client)
            .await
            .expect("no client lost its connection or a message");
    }
    assert!(total >= CLIENTS as u64, "{total} round trips");
    // No client reconnected and none was refused: the 500 connections are the ones opened.
    assert_eq!(
        sidecar.metric("brokerside_connections_total", &[("listener", "mqtt")]),
        CLIENTS as f64
    );
    assert_eq!(
        sidecar.metric("brokerside_connections_refused_total", &[]),
        0.0
    );
    assert_eq!(
        sidecar.metric(RELOADS, &[("result", "ok")]),
        RELOADS_RUN as f64
    );
    assert_eq!(sidecar.generation().await, RELOADS_RUN + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_never_flaps_across_reloads_that_leave_the_checks_alone() {
    let broker = start_rumqttd().await;
    let config = |close_rate: u32| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nservers = [\"{}\"]\n{}\n\
             [drain]\nclose_rate = {close_rate}\n",
            head(""),
            broker.mqtt,
            fast_check("mqtt", ""),
        )
    };
    let file = ConfigFile::new("flap", &config(100));
    let sidecar = Arc::new(start_sidecar_file(&file));
    sidecar
        .until_status("/haproxy_health", 200, Duration::from_secs(10))
        .await;

    let done = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn({
        let (sidecar, done) = (Arc::clone(&sidecar), Arc::clone(&done));
        async move {
            let (mut polls, mut bad) = (0u32, Vec::new());
            while !done.load(Ordering::Acquire) {
                let reply = sidecar.get("/haproxy_health").await;
                polls += 1;
                if reply.status != 200 {
                    bad.push(reply.body);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (polls, bad)
        }
    });
    for i in 0..50 {
        file.write(&config(200 + i));
        reload(&sidecar, 200).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    done.store(true, Ordering::Release);
    let (polls, bad) = within("the poller", poller).await.expect("poller");
    assert!(polls >= 50, "only {polls} polls");
    assert!(
        bad.is_empty(),
        "{} of {polls} polls failed: {bad:?}",
        bad.len()
    );
    assert_eq!(sidecar.generation().await, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_listeners_and_paces_the_removed_ones_clients() {
    let echo = echo_backend().await;
    let listener = |name: &str| {
        format!("[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n\n")
    };
    let backend = format!("[[backend]]\nname = \"echo\"\nservers = [\"{echo}\"]\n\n");
    let drain = "[drain]\nclose_rate = 10\ndeadline = \"60s\"\n";
    let first = format!(
        "{}{}{}{backend}{drain}",
        head(""),
        listener("one"),
        listener("two")
    );
    let file = ConfigFile::new("listeners", &first);
    let sidecar = start_sidecar_file(&file);
    let (one, two) = (sidecar.addr("one"), sidecar.addr("two"));

    let mut kept = Vec::new();
    for _ in 0..5 {
        let mut client = connect(one).await;
        round_trip(&mut client, b"before").await;
        kept.push(client);
    }
    let mut removed = Vec::new();
    for _ in 0..30 {
        let mut client = connect(two).await;
        round_trip(&mut client, b"before").await;
        removed.push(client);
    }

    // `two` goes, `three` comes.
    file.write(&format!(
        "{}{}{}{backend}{drain}",
        head(""),
        listener("one"),
        listener("three")
    ));
    let reloaded_at = Instant::now();
    reload(&sidecar, 200).await;
    let closes = watch_closes(removed);

    let three = sidecar
        .listener_address("three")
        .await
        .expect("/health lists the added listener");
    let mut client = connect(three).await;
    round_trip(&mut client, b"new listener").await;
    assert!(
        tokio::net::TcpStream::connect(two).await.is_err(),
        "the removed listener still accepts"
    );
    assert_eq!(sidecar.listener_address("two").await, None);

    // 30 clients at 10/s take about three seconds; none of `one`'s is touched meanwhile.
    let times = close_times(closes, Duration::from_secs(20)).await;
    assert_eq!(times.len(), 30);
    let busiest = busiest_second(&times);
    assert!(
        busiest <= 12,
        "{busiest} closes in one second at close_rate 10"
    );
    let spread = times
        .iter()
        .max()
        .expect("closes")
        .duration_since(reloaded_at);
    assert!(
        spread >= Duration::from_secs(2),
        "all closed within {spread:?}"
    );
    for client in &mut kept {
        round_trip(client, b"still here").await;
    }
    assert_eq!(
        sidecar.metric("brokerside_reload_closed_connections_total", &[]),
        30.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reloads_leave_the_running_config_serving() {
    let echo = echo_backend().await;
    let config = |listeners: &str, runtime: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\n{runtime}\n\n\
             [[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n\n\
             {listeners}\
             [[backend]]\nname = \"echo\"\nservers = [\"{echo}\"]\n"
        )
    };
    let good = config("", "relay_threads = 2");
    let file = ConfigFile::new("refused", &good);
    let sidecar = start_sidecar_file(&file);
    let addr = sidecar.addr("mqtt");
    let running_sha = sidecar.health().await["config"]["sha256"].clone();

    // A field that does not validate.
    file.write(&good.replace(
        "listen = \"127.0.0.1:0\"\nbackend",
        "listen = \"nowhere\"\nbackend",
    ));
    let answer = reload(&sidecar, 400).await;
    let problems = answer["problems"].to_string();
    assert!(problems.contains("listener[0].listen"), "{answer}");
    assert_eq!(answer["generation"], 1);

    // A listener on a port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    file.write(&config(
        &format!(
            "[[listener]]\nname = \"extra\"\nlisten = \"{taken_addr}\"\nbackend = \"echo\"\n\n"
        ),
        "relay_threads = 2",
    ));
    let answer = reload(&sidecar, 400).await;
    let problems = answer["problems"].to_string();
    assert!(
        problems.contains("listener[1].listen") && problems.contains("already in use"),
        "{answer}"
    );

    // What only a restart can change.
    file.write(&config("", "relay_threads = 3"));
    let answer = reload(&sidecar, 400).await;
    let problems = answer["problems"].to_string();
    assert!(
        problems.contains("runtime.relay_threads") && problems.contains("restart"),
        "{answer}"
    );

    assert_eq!(sidecar.metric(RELOADS, &[("result", "error")]), 3.0);
    assert_eq!(
        sidecar.metric("brokerside_config_last_reload_successful", &[]),
        0.0
    );
    let health = sidecar.health().await;
    assert_eq!(health["config"]["generation"], 1, "{health}");
    assert_eq!(health["config"]["sha256"], running_sha);
    let mut client = connect(addr).await;
    round_trip(&mut client, b"still serving").await;
    drop(taken);

    // A good file again: it applies, and /health says which file and content run.
    let next = good.replace(
        "backend = \"echo\"\n\n[[backend]]",
        "backend = \"echo\"\nmax_connections = 7\n\n[[backend]]",
    );
    file.write(&next);
    let answer = reload(&sidecar, 200).await;
    assert_eq!(answer["generation"], 2);
    let health = sidecar.health().await;
    assert_eq!(health["config"]["generation"], 2);
    assert_eq!(
        health["config"]["file"].as_str(),
        file.path.to_str(),
        "{health}"
    );
    let sha = health["config"]["sha256"].as_str().expect("a sha256");
    assert_eq!(sha.len(), 64);
    assert_ne!(health["config"]["sha256"], running_sha);
    assert_eq!(answer["sha256"], sha);
    assert_eq!(sidecar.metric(RELOADS, &[("result", "ok")]), 1.0);
    assert_eq!(
        sidecar.metric("brokerside_config_last_reload_successful", &[]),
        1.0
    );
    // The new limit is what /metrics says the listener's limit is.
    assert_eq!(
        sidecar.metric("brokerside_connections_max", &[("listener", "mqtt")]),
        7.0
    );
    let stamp = metric_value(
        &sidecar.metrics.render(),
        "brokerside_config_last_reload_success_timestamp_seconds",
        &[],
    )
    .expect("the timestamp");
    assert!(stamp > 1.7e9, "{stamp}");
    round_trip(&mut client, b"the same connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_follows_a_configmap_symlink_swap() {
    let echo = echo_backend().await;
    let config = |limit: u32| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n\
             max_connections = {limit}\n\n[[backend]]\nname = \"echo\"\nservers = [\"{echo}\"]\n",
            head("watch_config = \"100ms\"")
        )
    };
    // The kubelet's layout: brokerside.toml -> ..data/brokerside.toml, ..data -> a dated
    // directory; an update writes a new directory and renames a new ..data symlink over the old.
    let root = ConfigFile::new("watch", "")
        .path
        .parent()
        .expect("a directory")
        .to_path_buf();
    let version = |n: u32, text: &str| {
        let dir = root.join(format!("..2026_12_06_{n}"));
        std::fs::create_dir_all(&dir).expect("dated dir");
        std::fs::write(dir.join("brokerside.toml"), text).expect("write");
        let tmp = root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(dir.file_name().expect("name"), &tmp).expect("symlink");
        std::fs::rename(&tmp, root.join("..data")).expect("swap ..data");
    };
    version(1, &config(1000));
    let path = root.join("mounted.toml");
    std::os::unix::fs::symlink("..data/brokerside.toml", &path).expect("symlink the file");
    let file = ConfigFile { path };
    let sidecar = start_sidecar_file(&file);
    let addr = sidecar.addr("mqtt");
    let mut held = connect(addr).await;
    round_trip(&mut held, b"one").await;
    assert_eq!(sidecar.generation().await, 1);

    // max_connections 1: the held client stays, a second is refused.
    version(2, &config(1));
    within("the watcher to reload", async {
        while sidecar.generation().await != 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut refused = connect(addr).await;
    let mut buf = [0u8; 1];
    let read = within(
        "the refused client to be closed",
        tokio::io::AsyncReadExt::read(&mut refused, &mut buf),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        sidecar.metric(
            "brokerside_connections_refused_total",
            &[("reason", "limit")]
        ),
        1.0
    );
    round_trip(&mut held, b"two").await;

    // An unchanged swap reloads nothing.
    version(3, &config(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sidecar.generation().await, 2);
    assert_eq!(sidecar.metric(RELOADS, &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_draining_is_ignored() {
    let echo = echo_backend().await;
    let config = |limit: u32| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"echo\"\n\
             max_connections = {limit}\n\n[[backend]]\nname = \"echo\"\nservers = [\"{echo}\"]\n\
             [drain]\nlb_grace = \"1s\"\ndeadline = \"5s\"\n",
            head("")
        )
    };
    let file = ConfigFile::new("draining", &config(10));
    let mut sidecar = start_sidecar_file(&file);
    sidecar.drain.start("test");
    file.write(&config(20));
    let answer = reload(&sidecar, 409).await;
    assert!(
        answer["problems"].to_string().contains("draining"),
        "{answer}"
    );
    assert_eq!(sidecar.generation().await, 1);
    sidecar.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_servers_and_peers_that_are_gone_leave_metrics() {
    let consul = support::consul_server::TestConsul::start().await;
    consul.set_instances(&[("node-a", "127.0.0.5", 1883), ("node-b", "127.0.0.6", 1883)]);
    let gone_server = closed_addr();
    let config = |servers: &str| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nservers = [{servers}]\npeers = \"consul\"\n{}\n\
             [[discovery]]\nname = \"consul\"\nkind = \"consul\"\nurl = \"{}\"\n\
             service = \"emqx\"\nwait = \"1s\"\n",
            head(""),
            fast_check("tcp", ""),
            consul.url(),
        )
    };
    let kept_server = closed_addr();
    let file = ConfigFile::new(
        "series",
        &config(&format!("\"{kept_server}\", \"{gone_server}\"")),
    );
    let sidecar = start_sidecar_file(&file);
    let up = |server: &str| format!("brokerside_backend_up{{backend=\"b\",server=\"{server}\"}}");
    let has = |text: &str, server: &str| text.contains(&up(server));
    within("both peers checked", async {
        loop {
            let text = sidecar.metrics.render();
            if has(&text, "127.0.0.5:1883") && has(&text, "127.0.0.6:1883") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(has(&sidecar.metrics.render(), &gone_server.to_string()));

    // A peer leaves discovery: its series go, the other's stay.
    consul.set_instances(&[("node-a", "127.0.0.5", 1883)]);
    within("the departed peer's series to go", async {
        while has(&sidecar.metrics.render(), "127.0.0.6:1883") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = sidecar.metrics.render();
    assert!(has(&text, "127.0.0.5:1883"), "{text}");
    for name in [
        "brokerside_health_check_duration_seconds_count",
        "brokerside_backend_connect_failures_total",
    ] {
        assert!(
            !text.contains(&format!(
                "{name}{{backend=\"b\",server=\"127.0.0.6:1883\"}}"
            )),
            "{name} kept: {text}"
        );
    }

    // A reload removes a configured server: its series go too.
    file.write(&config(&format!("\"{kept_server}\"")));
    reload(&sidecar, 200).await;
    within("the removed server's series to go", async {
        while has(&sidecar.metrics.render(), &gone_server.to_string()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = sidecar.metrics.render();
    assert!(has(&text, &kept_server.to_string()), "{text}");
    assert!(has(&text, "127.0.0.5:1883"), "{text}");
}

/// A config for the binary: a `raw` listener in front of `backend` with `proxy` headers, a
/// short drain.
fn binary_config(backend: SocketAddr, proxy: &str) -> String {
    format!(
        "{}[[listener]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\nbackend = \"raw\"\n\
         proxy_protocol = \"{proxy}\"\n\n[[backend]]\nname = \"raw\"\nservers = [\"{backend}\"]\n\n\
         [drain]\nlb_grace = \"500ms\"\ndeadline = \"3s\"\n",
        head("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_hup_reloads_the_binary_and_is_ignored_while_it_drains() {
    let mut raw = RawBackend::start("127.0.0.1:0").await;
    let mut process = support::process::Process::spawn("sighup", &binary_config(raw.addr, "off"));
    // SIGHUPs from as soon as the process can take them, through start-up and the bind: none
    // ends it (those that come before it serves reload the same file once it does).
    within("the process to take SIGHUP", async {
        while !process.handles_sighup() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    for _ in 0..20 {
        process.sighup();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (relay, admin) = process.started();
    assert!(
        process.running(),
        "SIGHUP during start-up ended the process"
    );
    assert_eq!(first_bytes(relay, &mut raw).await, b"hello-there!");

    let v2 = binary_config(raw.addr, "v2");
    process.rewrite(&v2);
    process.sighup();
    let sha = brokerside::runtime::reload::sha256(v2.as_bytes());
    let health = within("/health to show the new config", async {
        loop {
            let reply = support::http::http_get(admin, "/health").await;
            let health: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
            if health["config"]["sha256"] == sha.as_str() {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        health["config"]["generation"].as_u64() >= Some(2),
        "{health}"
    );
    assert_eq!(first_bytes(relay, &mut raw).await, V2_SIGNATURE);
    let reloaded = process.log_line("config reloaded", 1);
    assert_eq!(reloaded["fields"]["why"], "SIGHUP", "{reloaded}");

    // Draining: a SIGHUP is logged and changes nothing; the drain ends as configured.
    process.rewrite(&binary_config(raw.addr, "off"));
    process.sigterm();
    process.log_line("drain started", 1);
    process.sighup();
    process.log_line("reload ignored: the node is draining", 1);
    assert_eq!(first_bytes(relay, &mut raw).await, V2_SIGNATURE);
    assert_eq!(process.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_stays_out_while_reloads_restart_the_guard() {
    use support::emqx_api::{API_KEY, API_SECRET, EmqxApi};
    let (user_var, password_var) = ("BROKERSIDE_RELOAD_API_KEY", "BROKERSIDE_RELOAD_API_SECRET");
    // SAFETY: the names are this test's alone, and the environment is read in this process only
    // through std's `env` functions, which hold the same lock as `set_var`.
    unsafe {
        std::env::set_var(user_var, API_KEY);
        std::env::set_var(password_var, API_SECRET);
    }
    let this = "emqx@127.0.0.1";
    let peers = ["emqx@127.0.0.2", "emqx@127.0.0.3"];
    let broker = start_rumqttd().await;
    let api = EmqxApi::start(&[this, peers[0], peers[1]]).await;
    let config = |interval: &str| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nservers = [\"{}\"]\n{}\n\
             [[discovery]]\nname = \"emqx\"\nkind = \"static\"\n\
             peers = [\"127.0.0.2:1883\", \"127.0.0.3:1883\"]\nnode_name = \"emqx@{{ip}}\"\n\n\
             [node]\nname = \"{this}\"\n\n\
             [cluster]\nmembers = \"emqx\"\nurl = \"{}\"\ndiscovery = \"emqx\"\n\
             username_env = \"{user_var}\"\npassword_env = \"{password_var}\"\n\
             interval = \"{interval}\"\nfail_health_when_partitioned = true\n",
            head(""),
            broker.mqtt,
            fast_check("tcp", ""),
            api.url(),
        )
    };
    let file = ConfigFile::new("guard", &config("200ms"));
    let sidecar = start_sidecar_file(&file);
    sidecar
        .until_status("/haproxy_health", 200, Duration::from_secs(10))
        .await;
    api.set_nodes(&[this], &peers);
    let out = sidecar
        .until_status("/haproxy_health", 503, Duration::from_secs(10))
        .await;
    assert!(out.body.starts_with("partitioned"), "{out:?}");

    // Each reload restarts the guard (its interval changed); the verdict stands throughout.
    for i in 0..10 {
        file.write(&config(if i % 2 == 0 { "300ms" } else { "200ms" }));
        reload(&sidecar, 200).await;
        for _ in 0..5 {
            let reply = sidecar.get("/haproxy_health").await;
            assert_eq!(
                reply.status, 503,
                "reload {i} let a partitioned node in: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    api.set_nodes(&[this, peers[0], peers[1]], &[]);
    sidecar
        .until_status("/haproxy_health", 200, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_keeps_the_server_a_reload_removed() {
    let mut old = RawBackend::start("127.0.0.1:0").await;
    let mut new = RawBackend::start("127.0.0.1:0").await;
    let config = |server: SocketAddr| {
        format!(
            "{}[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nservers = [\"{server}\"]\n",
            head("")
        )
    };
    let file = ConfigFile::new("inflight", &config(old.addr));
    let sidecar = start_sidecar_file(&file);
    let addr = sidecar.addr("mqtt");
    let mut client = connect(addr).await;
    let (mut on_old, _) = old.accept().await;

    file.write(&config(new.addr));
    reload(&sidecar, 200).await;
    // The open connection still reaches the server it started with, both ways.
    client.write_all(b"after reload").await.expect("write");
    assert_eq!(read_n(&mut on_old, 12).await, b"after reload");
    on_old.write_all(b"reply").await.expect("write");
    assert_eq!(read_n(&mut client, 5).await, b"reply");
    // A new one goes to the new server.
    let mut second = connect(addr).await;
    second.write_all(b"second").await.expect("write");
    let (mut on_new, _) = new.accept().await;
    assert_eq!(read_n(&mut on_new, 6).await, b"second");
    // The removed server's series are gone while its connection still runs.
    let text = sidecar.metrics.render();
    assert!(!text.contains(&old.addr.to_string()), "{text}");
    assert!(text.contains(&new.addr.to_string()), "{text}");
}
