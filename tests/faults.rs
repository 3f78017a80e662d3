//! Faults across hosts, for real: peers, clients and a DNS server in network namespaces of their
//! own, reached over veth pairs from the sidecar in the test's namespace; links cut with
//! `ip link set down` and impaired with `tc ... netem` (or the same emulated where the kernel has
//! no netem); and a partition between nodes as each node's EMQX API reports it.
//!
//! Needs root, iproute2 (`ip`, `tc`), Debian's mosquitto and dnsmasq (package dnsmasq-base). A
//! host that cannot create namespaces fails these tests, saying why; none passes without
//! having run. Traffic goes only to 127.0.0.0/8 and to addresses of the namespaces these tests
//! create (10.213.0.0/16), which are deleted at the end of each test, also one that fails.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rumqttc::{Packet, QoS};
use serde_json::Value;
use support::emqx_api::{API_KEY, API_SECRET, EmqxApi};
use support::netns::{self, Link, Netns};
use support::observe::relay_reaches;
use support::peers::{FOLLOW, poll_until, row};
use support::raw_mqtt::mqtt_connect_raw;
use support::sidecar::{TestSidecar, fast_check, start_sidecar};
use support::*;

/// Long enough for a few rounds of anything a test waits for, on a slow host.
const SETTLE: Duration = Duration::from_secs(10);

/// The parameters of [`fast_check`]: a server goes down after `FALL` probes of at most
/// `TIMEOUT`, `INTERVAL` apart.
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(300);
const FALL: u32 = 2;

#[test]
fn this_host_can_create_network_namespaces() {
    // Fails, saying why, where namespaces cannot be created (not root, no iproute2).
    netns::require();
    match netns::netem() {
        Ok(()) => println!("tc netem works here"),
        Err(why) => println!("tc netem does not work here, impairments are emulated: {why}"),
    }
}

/// The entry of server `server` in `/health`.
async fn server_health(sidecar: &TestSidecar, server: SocketAddr) -> Value {
    let health = sidecar.health().await;
    let address = server.to_string();
    health["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|backend| backend["servers"].as_array().into_iter().flatten())
        .find(|s| s["address"] == address.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no server {server} in /health: {health}"))
}

/// `state` of server `server` in `/health` (`"up"` or `"down"`).
async fn server_state(sidecar: &TestSidecar, server: SocketAddr) -> String {
    let entry = server_health(sidecar, server).await;
    entry["state"].as_str().unwrap_or_default().to_string()
}

/// Polls `/health` until server `server` is in `state`, for at most `bound`.
async fn until_state(sidecar: &TestSidecar, server: SocketAddr, state: &str, bound: Duration) {
    let what = format!("{server} to be {state} in /health");
    poll_until(
        bound,
        &what,
        || server_state(sidecar, server),
        |now| now == state,
    )
    .await;
}

/// `brokerside_backend_up` of server `server`.
fn backend_up(sidecar: &TestSidecar, server: SocketAddr) -> f64 {
    sidecar.metric("brokerside_backend_up", &[("server", &server.to_string())])
}

/// A mosquitto broker in `ns`, on port 1883 of a new veth link's far end: a broker node on
/// another host. Returns the link and the broker's address.
async fn mosquitto_in(ns: &Netns) -> (Link, SocketAddr) {
    let link = ns.veth();
    let addr = SocketAddr::from((link.peer, 1883));
    let conf = ns.file(
        "mosquitto.conf",
        &format!(
            "listener 1883 {}\nallow_anonymous true\npersistence false\nuser root\n\
             log_dest stdout\n",
            link.peer
        ),
    );
    ns.spawn(
        "mosquitto",
        "mosquitto",
        &["-c", &conf.display().to_string()],
    );
    ns.until_listening("mosquitto", addr).await;
    (link, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_a_cut_link_is_marked_down_and_new_clients_go_to_the_other() {
    let (a_host, b_host) = (Netns::new("peer-a"), Netns::new("peer-b"));
    let (a_link, a) = mosquitto_in(&a_host).await;
    let (_b_link, b) = mosquitto_in(&b_host).await;
    // The local broker is down; the two peers are the backups, A first.
    let sidecar = start_sidecar(&relay_config(
        &[closed_addr()],
        "",
        &format!(
            "backup = [\"{a}\", \"{b}\"]\n{}",
            fast_check("mqtt", "client_id = \"check-faults\"")
        ),
    ));
    let relay = sidecar.addr("mqtt");
    until_state(&sidecar, a, "up", SETTLE).await;
    until_state(&sidecar, b, "up", SETTLE).await;
    relay_reaches(relay, a, "cut-before").await;

    // A's cable is cut: its checker gives up after `fall` failed probes.
    a_link.cut();
    let cut = Instant::now();
    until_state(&sidecar, a, "down", SETTLE).await;
    let noticed = cut.elapsed();
    let bound = FALL * (INTERVAL + TIMEOUT) + Duration::from_millis(1500);
    println!("peer A marked down {noticed:?} after its link was cut");
    assert!(
        noticed <= bound,
        "A was marked down {noticed:?} after the cut; fall × (interval + timeout) is {:?}, \
         {bound:?} with slack",
        FALL * (INTERVAL + TIMEOUT)
    );
    assert_eq!(backend_up(&sidecar, a), 0.0, "brokerside_backend_up of A");
    assert_eq!(backend_up(&sidecar, b), 1.0, "brokerside_backend_up of B");
    println!("A in /health: {}", server_health(&sidecar, a).await);

    // New clients are accepted (CONNACK) and land on B.
    for i in 0..3 {
        mqtt_connect_raw(relay, &format!("cut-during-{i}")).await;
    }
    relay_reaches(relay, b, "cut-during").await;

    // The link is back: A passes its checks again and new clients go to it, first of the
    // backups, again.
    a_link.restore();
    let restored = Instant::now();
    until_state(&sidecar, a, "up", SETTLE).await;
    println!(
        "peer A up again {:?} after its link returned",
        restored.elapsed()
    );
    assert_eq!(backend_up(&sidecar, a), 1.0, "brokerside_backend_up of A");
    relay_reaches(relay, a, "cut-after").await;
}

/// A broker's reset ends its client's connection also where resets are lost on the way: a
/// reset is sent once and never retransmitted, and a client refuses one that falls outside a
/// receive window memory pressure has shrunk, or one a stateful firewall drops (issue 13). The
/// link here loses every reset; the client must still see its connection end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_reset_ends_a_client_whose_link_loses_resets() {
    let client_host = Netns::new("resets");
    let link = client_host.wire();
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let sidecar = start_sidecar(&listener_config(
        "mqtt",
        &format!("{}:0", link.host),
        &[backend.addr],
        "",
        "",
    ));
    let relay = sidecar.addr("mqtt");
    let client = client_host
        .spawn_task(async move {
            let mut client = tokio::net::TcpStream::connect(relay).await?;
            client.write_all(b"hello").await?;
            std::io::Result::Ok(client)
        })
        .await
        .expect("the client's task")
        .expect("the client connects through the link");
    let (mut served, _) = within("the backend connection", backend.accept()).await;
    assert_eq!(read_n(&mut served, 5).await, b"hello");

    link.drop_resets();
    reset(served);
    let read = client_host
        .spawn_task(async move {
            let mut client = client;
            let mut buf = [0u8; 64];
            tokio::time::timeout(SETTLE, client.read(&mut buf)).await
        })
        .await
        .expect("the client's read");
    println!("resets lost on the link: {}", link.resets_dropped());
    match read {
        Err(_) => panic!(
            "the client never learnt that its broker reset the connection: after {SETTLE:?} \
             it still waits ({} resets lost on the link)",
            link.resets_dropped()
        ),
        Ok(Ok(0)) => {}
        Ok(other) => panic!("the client read {other:?}, not the end of its connection"),
    }
    let resets = sidecar.metric(
        "brokerside_connections_reset_total",
        &[("listener", "mqtt"), ("side", "backend")],
    );
    assert_eq!(resets, 1.0, "the broker's reset is counted");
}

/// Messages published across the impaired link.
const MESSAGES: usize = 40;
const LOSS_PERCENT: u32 = 20;
const DELAY: Duration = Duration::from_millis(200);
/// The bound on the whole exchange over the impaired link (it takes 2 to 10 s).
const EXCHANGE: Duration = Duration::from_secs(25);

/// The first `count` packets of `client` that `pick` takes, in order, by `until`.
async fn collect<T>(
    client: &mut MqttClient,
    what: &str,
    count: usize,
    until: Instant,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> Vec<T> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.expect(what, &mut pick)).await {
            Ok(item) => got.push(item),
            Err(_) => panic!("{what}: only {} of {count} by the deadline", got.len()),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_session_over_a_lossy_slow_link_survives_and_delivers_every_qos1_message() {
    let broker = start_rumqttd().await;
    let client_host = Netns::new("lossy");
    let link = client_host.impairable();
    // The relay listens on this side's end of the link; the clients live on the other side.
    let sidecar = start_sidecar(&listener_config(
        "mqtt",
        &format!("{}:0", link.host),
        &[broker.mqtt],
        "",
        "",
    ));
    let relay = sidecar.addr("mqtt");
    assert_eq!(relay.ip(), link.host);
    let topic = "faults/lossy";
    let mut direct = MqttClient::connect(tcp_options("lossy-direct", broker.mqtt)).await;
    direct.subscribe(topic, QoS::AtLeastOnce).await;
    let mut subscriber = client_host
        .spawn_task(async move {
            let mut client = MqttClient::connect(tcp_options("lossy-sub", relay)).await;
            client.subscribe(topic, QoS::AtLeastOnce).await;
            client
        })
        .await
        .expect("the subscriber in the namespace");
    let mut publisher = client_host
        .spawn_task(MqttClient::connect(tcp_options("lossy-pub", relay)))
        .await
        .expect("the publisher in the namespace");
    let connections = || sidecar.metric("brokerside_connections_total", &[("listener", "mqtt")]);
    assert_eq!(connections(), 2.0, "both clients came through the relay");

    link.impair(LOSS_PERCENT, DELAY)
        .unwrap_or_else(|e| panic!("cannot impair the link: {e}"));
    // 2 kB each: two segments at the link's MTU of 1500 bytes.
    let payload = |i: usize| format!("lossy-{i}-{}", "x".repeat(2000)).into_bytes();
    let start = Instant::now();
    let puback = |p: &Packet| match p {
        Packet::PubAck(_) => Some(()),
        Packet::ConnAck(_) => panic!("the publisher reconnected"),
        _ => None,
    };
    // One message alone: its PUBACK comes back after a round trip of the impaired link.
    publisher.publish(topic, QoS::AtLeastOnce, payload(0)).await;
    publisher.expect("the first PUBACK", puback).await;
    let round_trip = start.elapsed();
    // Then one every 40 ms, so that each travels in packets of its own, as a sensor's do.
    for i in 1..MESSAGES {
        publisher.publish(topic, QoS::AtLeastOnce, payload(i)).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let until = start + EXCHANGE;
    collect(&mut publisher, "PUBACKs", MESSAGES - 1, until, puback).await;
    let acked = start.elapsed();
    let want: HashSet<Vec<u8>> = (0..MESSAGES).map(payload).collect();
    for (who, client) in [
        ("the subscriber", &mut subscriber),
        ("the subscriber on the broker", &mut direct),
    ] {
        let what = format!("messages delivered to {who}");
        let got = collect(client, &what, MESSAGES, until, |p| match p {
            Packet::Publish(message) => Some(message.payload.to_vec()),
            Packet::ConnAck(_) => panic!("{who} reconnected"),
            _ => None,
        })
        .await;
        assert_eq!(got.into_iter().collect::<HashSet<_>>(), want, "{who}");
    }
    let (offered, dropped) = link.packets();
    println!(
        "link impaired by {}: first PUBACK after {round_trip:?}, {MESSAGES} messages acked after \
         {acked:?} and delivered after {:?}; {dropped} of {offered} packets dropped",
        link.how(),
        start.elapsed(),
    );
    // The impairment was in force: a round trip took both delays, and packets were lost.
    assert!(
        round_trip >= 2 * DELAY,
        "the first PUBACK came after {round_trip:?}, less than the link's round trip"
    );
    assert!(dropped > 0, "the link lost none of {offered} packets");
    // The same two sessions throughout: no reconnect.
    assert_eq!(connections(), 2.0, "connections accepted by the relay");
    assert_eq!(
        sidecar.metric("brokerside_connections_active", &[("listener", "mqtt")]),
        2.0
    );
}

/// The headless-service name the DNS server in the namespace answers.
const HEADLESS: &str = "emqx-headless.faults.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_dns_server_leaves_the_last_good_peers_and_counts_errors() {
    let dns_host = Netns::new("dns");
    let link = dns_host.veth();
    let nameserver = SocketAddr::from((link.peer, 53));
    let hosts =
        |ips: &[&str]| -> String { ips.iter().map(|ip| format!("{ip} {HEADLESS}\n")).collect() };
    let hosts_file = dns_host.file("hosts", &hosts(&["127.0.0.5", "127.0.0.6"]));
    let pid_file = dns_host.file("dnsmasq.pid", "");
    // Only its own records: no upstream, no /etc/hosts, no config file; TTL 0.
    let dnsmasq = dns_host.spawn(
        "dnsmasq",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--log-facility=-",
            "--port=53",
            &format!("--listen-address={}", link.peer),
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            &format!("--addn-hosts={}", hosts_file.display()),
            &format!("--pid-file={}", pid_file.display()),
            "--user=root",
            "--group=root",
        ],
    );
    dns_host.until_listening("dnsmasq", nameserver).await;
    let sidecar = start_sidecar(&format!(
        "{}\n[[discovery]]\nname = \"dns\"\nkind = \"dns\"\nrecord = \"a\"\n\
         query = \"{HEADLESS}\"\nport = 1883\nnameservers = [\"{nameserver}\"]\n\
         node_name = \"emqx@{{ip}}\"\ninterval = \"200ms\"\nmax_interval = \"400ms\"\n\
         keep_last_good = \"5m\"\n",
        relay_config(&[closed_addr()], "", "")
    ));
    let good = [row("dns", "127.0.0.5", 1883), row("dns", "127.0.0.6", 1883)];
    sidecar.until_peers(&good).await;
    assert_eq!(sidecar.discovery_errors("dns").await, 0.0);

    // The DNS server's host is cut off: every refresh times out, and is counted; the peers
    // found before stay.
    link.cut();
    let first = sidecar.until_discovery_errors_above("dns", 0.0).await;
    assert_eq!(sidecar.peers().await, good);
    let second = sidecar.until_discovery_errors_above("dns", first).await;
    println!("{second} failed refreshes while the DNS server was cut off");
    assert_eq!(sidecar.peers().await, good);
    assert_eq!(
        sidecar.seed_list().await,
        "emqx@127.0.0.5\nemqx@127.0.0.6\n"
    );
    assert_eq!(
        sidecar
            .scrape("brokerside_peers", &[("source", "dns")])
            .await,
        Some(2.0)
    );

    // Back, with a third node: discovery follows the server again.
    link.restore();
    std::fs::write(&hosts_file, hosts(&["127.0.0.5", "127.0.0.6", "127.0.0.7"]))
        .expect("rewrite the hosts file");
    dns_host.signal(dnsmasq, libc::SIGHUP);
    sidecar
        .until_peers(&[
            row("dns", "127.0.0.5", 1883),
            row("dns", "127.0.0.6", 1883),
            row("dns", "127.0.0.7", 1883),
        ])
        .await;
}

/// The three nodes of the partition test, `emqx@<ip>`.
const NODE_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 11),
    Ipv4Addr::new(127, 0, 0, 12),
    Ipv4Addr::new(127, 0, 0, 13),
];

fn node(i: usize) -> String {
    format!("emqx@{}", NODE_IPS[i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_partition_the_minority_node_answers_partitioned_and_the_majority_stays_in() {
    let (user_var, password_var) = (
        "BROKERSIDE_TEST_FAULTS_API_KEY",
        "BROKERSIDE_TEST_FAULTS_API_SECRET",
    );
    // SAFETY: the names are this test's alone, and the environment is read in this process only
    // through std's `env` functions, which hold the same lock as `set_var`.
    unsafe {
        std::env::set_var(user_var, API_KEY);
        std::env::set_var(password_var, API_SECRET);
    }
    let broker = start_rumqttd().await;
    let names: Vec<String> = (0..3).map(node).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut apis = Vec::new();
    let mut nodes = Vec::new();
    for (me, name) in names.iter().enumerate() {
        let api = EmqxApi::start(&all).await;
        let others: Vec<String> = (0..3)
            .filter(|&n| n != me)
            .map(|n| format!("\"{}:1883\"", NODE_IPS[n]))
            .collect();
        nodes.push(start_sidecar(&format!(
            "{}\n\
             [[discovery]]\nname = \"emqx\"\nkind = \"static\"\n\
             peers = [{}]\nnode_name = \"emqx@{{ip}}\"\n\n\
             [node]\nname = \"{}\"\n\n\
             [cluster]\nmembers = \"emqx\"\nurl = \"{}\"\n\
             username_env = \"{user_var}\"\npassword_env = \"{password_var}\"\n\
             interval = \"200ms\"\nfail_health_when_partitioned = true\n",
            relay_config(
                &[broker.mqtt],
                "",
                &fast_check("mqtt", &format!("client_id = \"check-partition-{me}\""))
            ),
            others.join(", "),
            name,
            api.url(),
        )));
        apis.push(api);
    }
    for node in &nodes {
        node.until_status("/haproxy_health", 200, SETTLE).await;
        until_clustering(node, 3, false).await;
    }

    // Node 0 is cut off from the other two: its broker sees only itself, theirs see each other.
    apis[0].set_nodes(&all[..1], &all[1..]);
    for api in &apis[1..] {
        api.set_nodes(&all[1..], &all[..1]);
    }
    let minority = nodes[0].until_status("/haproxy_health", 503, SETTLE).await;
    assert!(
        minority.body.starts_with("partitioned"),
        "the minority node: {minority:?}"
    );
    until_clustering(&nodes[0], 1, true).await;
    for (i, node) in nodes.iter().enumerate().skip(1) {
        until_clustering(node, 2, false).await;
        let majority = node.get("/haproxy_health").await;
        assert_eq!(majority.status, 200, "majority node {i}: {majority:?}");
        assert_eq!(
            node.scrape("brokerside_cluster_partitioned", &[]).await,
            Some(0.0)
        );
    }
    assert_eq!(
        nodes[0].scrape("brokerside_cluster_partitioned", &[]).await,
        Some(1.0)
    );

    // The partition heals: node 0 is back in.
    for api in &apis {
        api.set_nodes(&all, &[]);
    }
    nodes[0].until_status("/haproxy_health", 200, SETTLE).await;
    for node in &nodes {
        until_clustering(node, 3, false).await;
        assert_eq!(node.get("/haproxy_health").await.status, 200);
    }
}

/// Polls `/health` until the cluster guard counts `count` nodes and says `partitioned`.
async fn until_clustering(node: &TestSidecar, count: u64, partitioned: bool) {
    let what = format!("clustering to show {count} of 3 nodes, partitioned {partitioned}");
    let clustering = || async { node.health().await["clustering"].clone() };
    let done = |block: &Value| {
        block["node_count"] == count
            && block["expected_nodes"] == 3
            && block["quorum"] == 2
            && block["partitioned"] == partitioned
    };
    poll_until(FOLLOW, &what, clustering, done).await;
}
