//! Peer discovery as an operator sees it on the admin endpoint (`/peers`, `?format=nodes`,
//! `/metrics`) and on disk (`peers_file`), against real servers in-process: a hickory DNS server
//! answering like Consul's DNS (SRV with `.addr.` targets and ADDITIONAL records) and like a
//! Kubernetes headless service (A records), and an HTTP server speaking Consul's health API with
//! real blocking queries. The last test fails a client over to a peer broker found by DNS.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::RecordType;
use support::consul_server::TestConsul;
use support::dns_server::{Mode, TestDns};
use support::forwarder::Forwarder;
use support::observe::relay_reaches;
use support::peers::{FOLLOW, PeerRow, alias, row};
use support::sidecar::{TestSidecar, fast_check, start_sidecar};
use support::*;

/// Consul's DNS name of the EMQX service.
const CONSUL_SERVICE: &str = "emqx.service.consul";
/// A Kubernetes headless service.
const HEADLESS: &str = "emqx-headless.brokerside.svc.cluster.local";

/// A `[[discovery]] kind = "dns"` table named `name` asking `dns` for `record` at `query`,
/// naming peers `emqx@{ip}`, refreshed every 200 ms (the TTL of 1 s capped at 400 ms);
/// `extra` adds keys.
fn dns_source(name: &str, dns: &TestDns, record: &str, query: &str, extra: &str) -> String {
    format!(
        "[[discovery]]\nname = \"{name}\"\nkind = \"dns\"\nrecord = \"{record}\"\n\
         query = \"{query}\"\nnameservers = [\"{}\"]\nnode_name = \"emqx@{{ip}}\"\n\
         interval = \"200ms\"\nmax_interval = \"400ms\"\n{extra}\n",
        dns.addr
    )
}

/// A sidecar relaying to a local broker that is not checked, with `tables` appended.
fn sidecar_with(tables: &str) -> TestSidecar {
    start_sidecar(&format!(
        "{}\n{tables}",
        relay_config(&[closed_addr()], "", "")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_srv_and_headless_a_records_become_peers_and_follow_changes() {
    let dns = TestDns::start().await;
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.5", 1883), ("127.0.0.6", 1884)]);
    dns.set_a(HEADLESS, &["127.0.0.7", "127.0.0.8"]);
    let sidecar = sidecar_with(&format!(
        "{}{}",
        dns_source("consul", &dns, "srv", CONSUL_SERVICE, ""),
        dns_source("k8s", &dns, "a", HEADLESS, "port = 1883"),
    ));

    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.6", 1884),
            row("k8s", "127.0.0.7", 1883),
            row("k8s", "127.0.0.8", 1883),
        ])
        .await;
    assert_eq!(
        sidecar.seed_list().await,
        "emqx@127.0.0.5\nemqx@127.0.0.6\nemqx@127.0.0.7\nemqx@127.0.0.8\n"
    );
    for source in ["consul", "k8s"] {
        let gauge = sidecar
            .scrape("brokerside_peers", &[("source", source)])
            .await;
        assert_eq!(gauge, Some(2.0), "brokerside_peers{{source={source}}}");
        assert_eq!(sidecar.discovery_errors(source).await, 0.0);
    }
    // The SRV targets' addresses came from the ADDITIONAL section: nobody asked for them.
    let asked_targets: Vec<_> = dns
        .asked()
        .into_iter()
        .filter(|a| a.name.ends_with(".addr.dc1.consul."))
        .collect();
    assert!(asked_targets.is_empty(), "{asked_targets:?}");

    // A node leaves and another joins behind each name; the sets follow.
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.6", 1884), ("127.0.0.9", 1883)]);
    dns.set_a(HEADLESS, &["127.0.0.8", "127.0.0.10", "127.0.0.11"]);
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.6", 1884),
            row("consul", "127.0.0.9", 1883),
            row("k8s", "127.0.0.8", 1883),
            row("k8s", "127.0.0.10", 1883),
            row("k8s", "127.0.0.11", 1883),
        ])
        .await;
    assert_eq!(
        sidecar.seed_list().await,
        "emqx@127.0.0.10\nemqx@127.0.0.11\nemqx@127.0.0.6\nemqx@127.0.0.8\nemqx@127.0.0.9\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dns_server_leaves_the_last_good_set_and_counts_errors() {
    let mut dns = TestDns::start().await;
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.5", 1883), ("127.0.0.6", 1883)]);
    let sidecar = sidecar_with(&dns_source("consul", &dns, "srv", CONSUL_SERVICE, ""));
    let good = [
        row("consul", "127.0.0.5", 1883),
        row("consul", "127.0.0.6", 1883),
    ];
    sidecar.until_peers(&good).await;
    assert_eq!(sidecar.discovery_errors("consul").await, 0.0);

    // SERVFAIL: an error, not an answer.
    dns.set_mode(Mode::ServFail);
    let errors = sidecar.until_discovery_errors_above("consul", 0.0).await;
    let errors = sidecar.until_discovery_errors_above("consul", errors).await;
    assert_eq!(sidecar.peers().await, good);

    // The server answers again, with a change; then it stops answering at all.
    dns.set_mode(Mode::Answer);
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.5", 1883)]);
    let good = [row("consul", "127.0.0.5", 1883)];
    sidecar.until_peers(&good).await;
    let before_stop = sidecar.discovery_errors("consul").await;
    assert!(before_stop >= errors);
    // A stopped server: each refresh now waits out its timeouts before it fails.
    dns.stop().await;
    sidecar
        .until_discovery_errors_above("consul", before_stop)
        .await;
    assert_eq!(sidecar.peers().await, good);
    assert_eq!(sidecar.seed_list().await, "emqx@127.0.0.5\n");
    assert_eq!(
        sidecar
            .scrape("brokerside_peers", &[("source", "consul")])
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_and_an_empty_answer_are_no_peers_and_no_errors() {
    let dns = TestDns::start().await;
    let (gone, v6_only) = ("gone.brokerside.test", "v6only.brokerside.test");
    dns.set_a(gone, &["127.0.0.5"]);
    dns.set_a(v6_only, &["127.0.0.6"]);
    let sidecar = sidecar_with(&format!(
        "{}{}",
        dns_source("gone", &dns, "a", gone, "port = 1883"),
        dns_source("v6only", &dns, "a", v6_only, "port = 1883"),
    ));
    sidecar
        .until_peers(&[
            row("gone", "127.0.0.5", 1883),
            row("v6only", "127.0.0.6", 1883),
        ])
        .await;

    // The first name goes away (NXDOMAIN); the second keeps only an AAAA record (NOERROR, no
    // A records in the answer).
    dns.set_a(gone, &[]);
    dns.set_aaaa(v6_only, &["::1"]);
    dns.set_a(v6_only, &[]);
    sidecar.until_peers(&[]).await;
    assert_eq!(sidecar.seed_list().await, "");

    // A few more refreshes of each, still answers and not errors.
    let asked = |name: &str| {
        let name = format!("{name}.");
        dns.asked().iter().filter(|a| a.name == name).count()
    };
    let (gone_before, v6_before) = (asked(gone), asked(v6_only));
    within("three more refreshes of each name", async {
        while asked(gone) < gone_before + 3 || asked(v6_only) < v6_before + 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for source in ["gone", "v6only"] {
        assert_eq!(sidecar.discovery_errors(source).await, 0.0, "{source}");
        assert_eq!(
            sidecar
                .scrape("brokerside_peers", &[("source", source)])
                .await,
            Some(0.0)
        );
    }
    assert_eq!(sidecar.peers().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let dns = TestDns::start().await;
    dns.set_mode(Mode::TruncateUdp);
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.5", 1883), ("127.0.0.6", 1883)]);
    let sidecar = sidecar_with(&dns_source("consul", &dns, "srv", CONSUL_SERVICE, ""));
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.6", 1883),
        ])
        .await;
    let asked = dns.asked();
    let srv_over = |protocol| {
        asked
            .iter()
            .any(|a| a.kind == RecordType::SRV && a.protocol == protocol)
    };
    assert!(srv_over(Protocol::Udp), "asked over UDP first: {asked:?}");
    assert!(srv_over(Protocol::Tcp), "asked again over TCP: {asked:?}");
    assert_eq!(sidecar.discovery_errors("consul").await, 0.0);
}

/// A `[[discovery]] kind = "consul"` table named `name` for `service` at `consul`.
fn consul_source(name: &str, consul: &TestConsul, service: &str, extra: &str) -> String {
    format!(
        "[[discovery]]\nname = \"{name}\"\nkind = \"consul\"\nurl = \"{}\"\n\
         service = \"{service}\"\nnode_name = \"emqx@{{ip}}\"\n{extra}\n",
        consul.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_blocking_queries_follow_joins_and_leaves_without_polling() {
    let consul = TestConsul::start().await;
    consul.set_instances(&[("node-a", "127.0.0.5", 1883), ("node-b", "127.0.0.6", 1883)]);
    // A long wait: a change that shows up quickly came through the held query, not a new poll.
    let sidecar = sidecar_with(&consul_source("consul", &consul, "emqx", "wait = \"20s\""));
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.6", 1883),
        ])
        .await;

    // Nothing changes: the sidecar waits in a blocking query instead of asking again.
    let before = consul.seen().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = consul.seen().len() - before;
    assert!(idle <= 1, "{idle} requests in 2 s while nothing changed");

    consul.set_instances(&[
        ("node-a", "127.0.0.5", 1883),
        ("node-b", "127.0.0.6", 1883),
        ("node-c", "127.0.0.7", 1884),
    ]);
    let joined = Instant::now();
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.6", 1883),
            row("consul", "127.0.0.7", 1884),
        ])
        .await;
    consul.set_instances(&[("node-b", "127.0.0.6", 1883), ("node-c", "127.0.0.7", 1884)]);
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.6", 1883),
            row("consul", "127.0.0.7", 1884),
        ])
        .await;
    let followed = joined.elapsed();
    assert!(
        followed < Duration::from_secs(10),
        "a join and a leave took {followed:?}; the blocking query waits 20 s"
    );

    let seen = consul.seen();
    assert!(
        seen.iter()
            .all(|s| s.path == "/v1/health/service/emqx" && s.passing)
    );
    assert_eq!(seen[0].index, None, "the first query does not block");
    for later in &seen[1..] {
        assert!(later.index.is_some(), "{later:?}");
        assert_eq!(later.wait.as_deref(), Some("20s"), "{later:?}");
    }
    assert!(
        seen.len() <= 6,
        "{} requests for two changes: {seen:#?}",
        seen.len()
    );
    assert_eq!(sidecar.discovery_errors("consul").await, 0.0);
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "brokerside-test-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_token_is_sent_from_env_or_file() {
    let consul = TestConsul::start().await;
    consul.set_instances(&[("node-a", "127.0.0.5", 1883)]);
    let dir = temp_dir("consul-token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "token-from-file\n").expect("write the token file");
    let var = "BROKERSIDE_TEST_DISCOVERY_CONSUL_TOKEN";
    // SAFETY: the name is used by this test alone, and every reader of the environment in this
    // process goes through std's `env` functions, which take one lock with `set_var`.
    unsafe { std::env::set_var(var, "token-from-env") };
    let sidecar = sidecar_with(&format!(
        "{}{}",
        consul_source(
            "by-env",
            &consul,
            "emqx-env",
            &format!("token_env = \"{var}\"")
        ),
        consul_source(
            "by-file",
            &consul,
            "emqx-file",
            &format!("token_file = \"{}\"", token_file.display())
        ),
    ));
    sidecar
        .until_peers(&[
            row("by-env", "127.0.0.5", 1883),
            row("by-file", "127.0.0.5", 1883),
        ])
        .await;
    let tokens = |service: &str| -> HashSet<Option<String>> {
        let path = format!("/v1/health/service/{service}");
        consul
            .seen()
            .into_iter()
            .filter(|s| s.path == path)
            .map(|s| s.token)
            .collect()
    };
    assert_eq!(
        tokens("emqx-env"),
        HashSet::from([Some("token-from-env".to_string())])
    );
    assert_eq!(
        tokens("emqx-file"),
        HashSet::from([Some("token-from-file".to_string())])
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_errors_back_off_and_keep_the_last_good_set() {
    let consul = TestConsul::start().await;
    consul.set_instances(&[("node-a", "127.0.0.5", 1883)]);
    let sidecar = sidecar_with(&consul_source("consul", &consul, "emqx", "wait = \"20s\""));
    let good = [row("consul", "127.0.0.5", 1883)];
    sidecar.until_peers(&good).await;

    // Every request fails from now on; moving the index releases the query held now.
    consul.fail_with(Some(500));
    consul.set_index(consul.index() + 1);
    let first = sidecar.until_discovery_errors_above("consul", 0.0).await;
    let before = consul.seen().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failing = consul.seen().len() - before;
    // The first back-off is at most 1 s, the next at most 2 s; a client retrying at its 250 ms
    // minimum gap would have asked 8 times.
    assert!(
        failing <= 4,
        "{failing} requests in 2 s against a failing Consul"
    );
    assert!(sidecar.discovery_errors("consul").await >= first);
    assert_eq!(sidecar.peers().await, good);

    // Consul is back, with a change.
    consul.fail_with(None);
    consul.set_instances(&[("node-a", "127.0.0.5", 1883), ("node-b", "127.0.0.6", 1883)]);
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.6", 1883),
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_the_peers_file_never_sees_a_partial_file() {
    let dns = TestDns::start().await;
    // Sets of different sizes, so that a cut-off file would not pass for another set.
    let sets: Vec<Vec<String>> = [3usize, 1, 12, 5, 20, 2, 9, 1, 16, 4]
        .iter()
        .enumerate()
        .map(|(round, &size)| {
            (0..size)
                .map(|n| format!("127.0.{}.{}", round + 1, n + 1))
                .collect()
        })
        .collect();
    let lines = |set: &[String]| -> String {
        let mut nodes: Vec<String> = set.iter().map(|ip| format!("emqx@{ip}")).collect();
        nodes.sort();
        nodes.iter().map(|n| format!("{n}\n")).collect()
    };
    let allowed: Arc<HashSet<String>> = Arc::new(sets.iter().map(|s| lines(s)).collect());
    let set_records = |set: &[String]| {
        let ips: Vec<&str> = set.iter().map(String::as_str).collect();
        dns.set_a(HEADLESS, &ips);
    };
    set_records(&sets[0]);

    let dir = temp_dir("peers-file");
    let (lines_file, json_file) = (dir.join("seeds.txt"), dir.join("peers.json"));
    let sidecar = sidecar_with(&format!(
        "{}{}",
        dns_source(
            "lines",
            &dns,
            "a",
            HEADLESS,
            &format!(
                "port = 1883\npeers_file = \"{}\"\npeers_file_format = \"lines\"",
                lines_file.display()
            )
        ),
        dns_source(
            "json",
            &dns,
            "a",
            HEADLESS,
            &format!(
                "port = 1883\npeers_file = \"{}\"\npeers_file_format = \"json\"",
                json_file.display()
            )
        ),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (stop, allowed) = (Arc::clone(&stop), Arc::clone(&allowed));
        let (lines_file, json_file) = (lines_file.clone(), json_file.clone());
        move || read_until_stopped(&stop, &allowed, &lines_file, &json_file)
    });

    for set in &sets {
        set_records(set);
        let want = lines(set);
        within("the peers files to hold the new set", async {
            loop {
                let text = std::fs::read_to_string(&lines_file).unwrap_or_default();
                let json = std::fs::read_to_string(&json_file).unwrap_or_default();
                if text == want && json_nodes(&json).is_some_and(|nodes| nodes == want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader found a partial file");
    println!("the reader read the two files {reads} times");
    assert!(reads > 100, "only {reads} reads");
    assert_eq!(sidecar.seed_list().await, lines(&sets[sets.len() - 1]));
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads both peers files in a tight loop until `stop`: every read must be a whole file (or no
/// file yet). Returns how many reads were made.
fn read_until_stopped(
    stop: &AtomicBool,
    allowed: &HashSet<String>,
    lines_file: &std::path::Path,
    json_file: &std::path::Path,
) -> usize {
    let mut reads = 0;
    while !stop.load(Ordering::SeqCst) {
        for (path, json) in [(lines_file, false), (json_file, true)] {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("read {}: {e}", path.display()),
            };
            reads += 1;
            let nodes = if json {
                json_nodes(&text)
                    .unwrap_or_else(|| panic!("{} is not whole: {text:?}", path.display()))
            } else {
                assert!(
                    text.lines().all(|l| l.starts_with("emqx@127.0.")),
                    "{}: {text:?}",
                    path.display()
                );
                text
            };
            assert!(
                allowed.contains(&nodes),
                "{} holds a set that was never published: {nodes:?}",
                path.display()
            );
        }
    }
    reads
}

/// The node names of a JSON peers file as sorted lines, `None` unless `text` is a whole list of
/// the `/peers` shape.
fn json_nodes(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        address: String,
        port: u16,
        node: String,
        source: String,
    }
    if !text.ends_with('\n') {
        return None;
    }
    let entries: Vec<Entry> = serde_json::from_str(text).ok()?;
    let mut nodes = Vec::with_capacity(entries.len());
    for entry in entries {
        let whole = entry.port == 1883
            && entry.source == "json"
            && entry.node == format!("emqx@{}", entry.address);
        if !whole {
            return None;
        }
        nodes.push(entry.node);
    }
    nodes.sort();
    Some(nodes.iter().map(|n| format!("{n}\n")).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_node_leaves_itself_out_by_its_address() {
    let dns = TestDns::start().await;
    dns.set_consul_srv(
        CONSUL_SERVICE,
        &[
            ("127.0.0.5", 1883),
            ("127.0.0.6", 1883),
            ("127.0.0.7", 1883),
        ],
    );
    let sidecar = sidecar_with(&format!(
        "{}[node]\nadvertise = \"127.0.0.6\"\n",
        dns_source("consul", &dns, "srv", CONSUL_SERVICE, "")
    ));
    sidecar
        .until_peers(&[
            row("consul", "127.0.0.5", 1883),
            row("consul", "127.0.0.7", 1883),
        ])
        .await;
    assert_eq!(
        sidecar.seed_list().await,
        "emqx@127.0.0.5\nemqx@127.0.0.7\n"
    );
    // Its own name comes from the same template.
    let health = sidecar.health().await;
    assert_eq!(health["clustering"]["current_node"], "emqx@127.0.0.6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fails_over_to_a_peer_broker_found_by_dns() {
    let local = start_rumqttd().await;
    let mut front = Forwarder::start(local.mqtt).await;
    let peer = start_rumqttd().await;
    // The peer as another host: its own address, published in the SRV answer.
    let peer_ip = Ipv4Addr::new(127, 0, 0, 9);
    let peer_addr: SocketAddr = alias(peer_ip, peer.mqtt).await;
    let dns = TestDns::start().await;
    dns.set_consul_srv(CONSUL_SERVICE, &[("127.0.0.9", peer_addr.port())]);
    let backend = format!(
        "peers = \"emqx\"\n{}",
        fast_check("mqtt", "client_id = \"check-discovery-failover\"")
    );
    let sidecar = start_sidecar(&format!(
        "{}\n{}",
        relay_config(&[front.addr], "", &backend),
        dns_source("emqx", &dns, "srv", CONSUL_SERVICE, "")
    ));
    let relay = sidecar.addr("mqtt");
    let healthy_peer = PeerRow {
        healthy: Some(true),
        ..row("emqx", "127.0.0.9", peer_addr.port())
    };
    sidecar
        .until_peers(std::slice::from_ref(&healthy_peer))
        .await;
    sidecar.until_status("/haproxy_health", 200, FOLLOW).await;
    relay_reaches(relay, local.mqtt, "discovery-local").await;

    // The local broker dies: new clients land on the peer that DNS found.
    front.kill().await;
    let down = sidecar.until_status("/haproxy_health", 503, FOLLOW).await;
    assert!(down.body.contains("local broker down"), "{down:?}");
    relay_reaches(relay, peer.mqtt, "discovery-peer").await;
    assert_eq!(sidecar.peers().await, [healthy_peer]);
}
