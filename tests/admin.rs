//! The admin endpoint over real HTTP, as the load balancer, Consul, Kubernetes, Prometheus and an
//! operator with curl meet it: `/health` field by field, `/metrics` series by series, bad and
//! slow clients, unknown paths and methods, `/peers`, `POST /drain`, and answers while the relay
//! is saturated.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::QoS;
use serde_json::{Value, json};
use support::http::{http_raw, http_request};
use support::sidecar::{TestSidecar, fast_check, start_sidecar};
use support::*;
use tokio::io::AsyncWriteExt;

const SETTLE: Duration = Duration::from_secs(10);

/// A sidecar relaying `mqtt` to `servers` (no health check: always up) with `extra` tables.
fn plain_sidecar(servers: &[SocketAddr], listener_extra: &str, extra: &str) -> TestSidecar {
    start_sidecar(&format!(
        "{}\n{extra}",
        relay_config(servers, listener_extra, "")
    ))
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_json_field_by_field() {
    let broker = start_rumqttd().await;
    let backup = closed_addr();
    let sidecar = start_sidecar(&relay_config(
        &[broker.mqtt],
        "",
        &format!(
            "backup = [\"{backup}\"]\n{}",
            fast_check("mqtt", "client_id = \"check-json\"")
        ),
    ));
    sidecar.until_status("/readyz", 200, SETTLE).await;
    let relay = sidecar.addr("mqtt");
    let mut first = MqttClient::connect(tcp_options("json-1", relay)).await;
    first.subscribe("json/#", QoS::AtMostOnce).await;
    let _second = MqttClient::connect(tcp_options("json-2", relay)).await;

    let health = within("/health to count both clients", async {
        loop {
            let health = sidecar.health().await;
            let backup_checked = health["backends"][0]["servers"][1]["last_check"].is_f64();
            if health["listeners"][0]["active_connections"] == 2 && backup_checked {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let reply = sidecar.get("/health").await;
    assert_eq!(reply.header("content-type"), Some("application/json"));

    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["reason"], Value::Null);
    assert_eq!(health["draining"], false);
    assert_eq!(health["drain"]["phase"], "serving");

    let listeners = health["listeners"].as_array().expect("listeners list");
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0]["name"], "mqtt");
    assert_eq!(listeners[0]["address"], relay.to_string());
    assert_eq!(listeners[0]["backend"], "b");
    assert_eq!(listeners[0]["active_connections"], 2);

    let backends = health["backends"].as_array().expect("backends list");
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0]["name"], "b");
    let servers = backends[0]["servers"].as_array().expect("servers list");
    assert_eq!(servers.len(), 2);
    let (local, spare) = (&servers[0], &servers[1]);
    assert_eq!(local["address"], broker.mqtt.to_string());
    assert_eq!(local["role"], "local");
    assert_eq!(local["state"], "up");
    assert_eq!(local["error"], Value::Null);
    assert_eq!(spare["address"], backup.to_string());
    assert_eq!(spare["role"], "backup");
    assert_eq!(spare["state"], "down");
    assert_eq!(spare["error"], "connection refused");
    for server in servers {
        let last_check = server["last_check"]
            .as_f64()
            .expect("last_check in seconds");
        assert!((now_unix() - last_check).abs() < 10.0, "{server}");
        let latency = server["latency_ms"].as_f64().expect("latency_ms");
        // A probe's latency is within its 300 ms timeout.
        assert!((0.0..=300.0).contains(&latency), "{server}");
    }

    assert_eq!(
        health["clustering"],
        json!({
            "enabled": false,
            // No [node] name, advertise address or $POD_IP here: the node cannot name itself.
            "current_node": "unknown",
            "connected_nodes": [],
            "node_count": 0,
            "expected_nodes": 0,
            "quorum": 0,
            "partitioned": false,
        })
    );
}

/// Asserts `# TYPE name kind` and at least one sample of each of `samples` in `text`.
fn assert_series(text: &str, name: &str, kind: &str, samples: &[&str]) {
    assert!(
        text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
        "no `# TYPE {name} {kind}` in:\n{text}"
    );
    for sample in samples {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{sample}{{"))
                    || l.starts_with(&format!("{sample} "))),
            "no sample of {sample} in:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposes_every_series() {
    let broker = start_rumqttd().await;
    let sidecar = start_sidecar(&relay_config(
        &[broker.mqtt],
        "max_connections = 1",
        "[backend.check]\nkind = \"tcp\"\ninterval = \"200ms\"\nrise = 1\n",
    ));
    sidecar.until_status("/readyz", 200, SETTLE).await;
    let relay = sidecar.addr("mqtt");
    let mut client = MqttClient::connect(tcp_options("metrics", relay)).await;
    client.subscribe("m", QoS::AtMostOnce).await;
    // The listener is full: the next client is refused.
    let mut refused = connect(relay).await;
    assert_eq!(read_to_eof(&mut refused).await.expect("a clean close"), b"");

    let reply = sidecar.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.body;
    for (name, kind) in [
        ("brokerside_connections_active", "gauge"),
        ("brokerside_connections_total", "counter"),
        ("brokerside_connections_refused_total", "counter"),
        ("brokerside_bytes_total", "counter"),
        ("brokerside_backend_up", "gauge"),
        ("brokerside_health_check_failures_total", "counter"),
        ("brokerside_draining", "gauge"),
        ("brokerside_drain_closed_connections_total", "counter"),
    ] {
        assert_series(&text, name, kind, &[name]);
    }
    let histogram = "brokerside_health_check_duration_seconds";
    assert_series(
        &text,
        histogram,
        "histogram",
        &[
            &format!("{histogram}_bucket"),
            &format!("{histogram}_sum"),
            &format!("{histogram}_count"),
        ],
    );
    // The values say what happened.
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&text, name, labels).unwrap_or_else(|| panic!("{name}{labels:?}:\n{text}"))
    };
    let server = broker.mqtt.to_string();
    let series = [("backend", "b"), ("server", server.as_str())];
    assert_eq!(
        value("brokerside_connections_active", &[("listener", "mqtt")]),
        1.0
    );
    assert_eq!(
        value("brokerside_connections_total", &[("listener", "mqtt")]),
        1.0
    );
    assert_eq!(
        value(
            "brokerside_connections_refused_total",
            &[("listener", "mqtt"), ("reason", "limit")]
        ),
        1.0
    );
    assert!(value("brokerside_bytes_total", &[("direction", "to_backend")]) > 0.0);
    assert!(value("brokerside_bytes_total", &[("direction", "to_client")]) > 0.0);
    assert_eq!(value("brokerside_backend_up", &series), 1.0);
    assert_eq!(
        value("brokerside_health_check_failures_total", &series),
        0.0
    );
    let probes = value(&format!("{histogram}_count"), &series);
    assert!(probes >= 1.0);
    let mut inf = series.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(value(&format!("{histogram}_bucket"), &inf), probes);
    assert_eq!(value("brokerside_draining", &[]), 0.0);
    assert_eq!(value("brokerside_drain_closed_connections_total", &[]), 0.0);

    // The client is relayed to the broker: counted on its server, its connect timed.
    assert_eq!(value("brokerside_backend_connections_active", &series), 1.0);
    let connect = "brokerside_backend_connect_duration_seconds";
    assert_series(&text, connect, "histogram", &[&format!("{connect}_bucket")]);
    assert_eq!(value(&format!("{connect}_count"), &[("backend", "b")]), 1.0);
    assert_eq!(
        value(
            "brokerside_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // The process collector: this test process's own figures.
    assert!(value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(value("process_open_fds", &[]) >= 3.0);
    assert!(value("process_max_fds", &[]) >= value("process_open_fds", &[]));
    assert!(value("process_start_time_seconds", &[]) > 1.6e9);
    assert_series(
        &text,
        "process_cpu_seconds_total",
        "counter",
        &["process_cpu_seconds_total"],
    );
    promtool_check(&text);

    // Once the client has gone, its server counts it no more.
    client.client.disconnect().await.expect("queue DISCONNECT");
    drop(client);
    within("the server's connection count to fall to 0", async {
        loop {
            let text = sidecar.get("/metrics").await.body;
            if metric_value(&text, "brokerside_backend_connections_active", &series) == Some(0.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// `promtool check metrics` on `text`, when promtool is installed (CI may have it).
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("note: promtool not on PATH; `promtool check metrics` skipped");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_slow_clients_routes_peers_and_drain() {
    let sidecar = plain_sidecar(
        &[echo_backend().await],
        "",
        "[admin]\nheader_timeout = \"300ms\"\n",
    );
    let admin = sidecar.admin;

    // Garbage gets a 400, and the server serves on.
    let answer = http_raw(
        admin,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let reply = sidecar.get("/livez").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "OK\n"));

    // A client that never finishes its headers is cut after header_timeout; meanwhile others
    // are answered.
    let started = Instant::now();
    let mut slow = connect(admin).await;
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    for _ in 0..3 {
        assert_eq!(sidecar.get("/livez").await.status, 200);
    }
    let served_meanwhile = started.elapsed();
    let answer = read_to_eof(&mut slow).await.unwrap_or_default();
    let cut = started.elapsed();
    println!("others served within {served_meanwhile:?}; slow client cut after {cut:?}");
    assert!(
        served_meanwhile < Duration::from_millis(300),
        "{served_meanwhile:?}"
    );
    assert!(cut >= Duration::from_millis(250), "cut too early: {cut:?}");
    assert!(cut < Duration::from_secs(5), "cut too late: {cut:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "{answer:?}");

    // Unknown paths, wrong methods.
    let reply = sidecar.get("/nope").await;
    assert_eq!((reply.status, reply.body.as_str()), (404, "not found\n"));
    let reply = http_request(admin, "POST", "/health").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = http_request(admin, "GET", "/drain").await;
    assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));

    // No discovery yet: no peers.
    let reply = sidecar.get("/peers").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "[]\n"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let reply = sidecar.get("/peers?format=nodes").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    // POST /drain from loopback: 202, then not ready, but alive.
    assert_eq!(sidecar.get("/haproxy_health").await.status, 200);
    let reply = http_request(admin, "POST", "/drain").await;
    assert_eq!((reply.status, reply.body.as_str()), (202, "draining\n"));
    let reply = sidecar.get("/haproxy_health").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "draining\n"));
    assert_eq!(sidecar.get("/livez").await.status, 200);
    let health = sidecar.health().await;
    assert_eq!(
        (
            &health["status"],
            &health["draining"],
            &health["drain"]["phase"]
        ),
        (&json!("unavailable"), &json!(true), &json!("grace"))
    );
    let reply = http_request(admin, "POST", "/drain").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "already draining\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_while_the_relay_is_saturated() {
    const LIMIT: usize = 50;
    let sidecar = plain_sidecar(
        &[echo_backend().await],
        &format!("max_connections = {LIMIT}"),
        "",
    );
    let relay = sidecar.addr("mqtt");
    let mut held = Vec::with_capacity(LIMIT);
    for i in 0..LIMIT {
        let mut stream = connect(relay).await;
        round_trip(&mut stream, format!("client {i}").as_bytes()).await;
        held.push(stream);
    }
    // Refused clients keep coming while the admin endpoint is asked.
    let refusals = tokio::spawn(async move {
        for _ in 0..20 {
            let mut extra = connect(relay).await;
            assert_eq!(read_to_eof(&mut extra).await.expect("a clean close"), b"");
        }
    });
    for _ in 0..10 {
        assert_eq!(sidecar.get("/livez").await.status, 200);
        assert_eq!(sidecar.get("/haproxy_health").await.status, 200);
        let health = sidecar.health().await;
        assert_eq!(health["listeners"][0]["active_connections"], LIMIT);
    }
    within("the refused clients", refusals)
        .await
        .expect("refusals task");
    let refused = sidecar.metric(
        "brokerside_connections_refused_total",
        &[("listener", "mqtt"), ("reason", "limit")],
    );
    assert_eq!(refused, 20.0);
    // The held connections still relay.
    for stream in &mut held {
        round_trip(stream, b"still here").await;
    }
}

/// A client of the admin endpoint from `source` (any 127.x address), one raw request, the status.
async fn admin_status_from(admin: SocketAddr, source: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    let mut stream = socket.connect(admin).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    let text = String::from_utf8_lossy(&reply);
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_pipeline_and_never_read_cannot_starve_the_admin_endpoint() {
    use tokio::io::AsyncWriteExt;
    let sidecar = plain_sidecar(
        &[echo_backend().await],
        "",
        "[admin]\nlisten = \"127.0.0.1:0\"\nmax_connections = 16\nheader_timeout = \"1s\"\n",
    );
    let admin = sidecar.admin;
    // 16 slots: a quarter (4) per source address. One host opens 16 connections, pipelines
    // thousands of requests on each, and never reads an answer.
    let pipeline = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(2_000);
    let mut attackers = Vec::new();
    for _ in 0..16 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("small receive buffer");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let mut stream = socket.connect(admin).await.expect("connect");
        let pipeline = pipeline.clone();
        attackers.push(tokio::spawn(async move {
            // Blocks once the server stops reading; the stream is held, never read.
            let _ = stream.write_all(pipeline.as_bytes()).await;
            stream
        }));
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&sidecar.metrics.render(), name, labels).unwrap_or(-1.0)
    };
    within(
        "the attacker's connections past its share to be refused",
        async {
            while value(
                "brokerside_admin_connections_refused_total",
                &[("reason", "per_source")],
            ) < 12.0
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    // Meanwhile the load balancer (another source address) is answered at once, every time.
    for _ in 0..20 {
        assert_eq!(
            admin_status_from(admin, "127.0.0.3", "/livez").await,
            Some(200)
        );
    }
    // The write-stall timeout (the header timeout, 1 s) frees the attacker's slots.
    within("the stalled connections to be cut", async {
        while value(
            "brokerside_admin_timeouts_total",
            &[("reason", "write_stall")],
        ) < 4.0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    within("the admin connection gauge to settle", async {
        while value("brokerside_admin_connections", &[]) != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        admin_status_from(admin, "127.0.0.1", "/livez").await,
        Some(200),
        "the attacker's own address is served again once its connections are cut"
    );
    assert!(
        value(
            "brokerside_admin_requests_total",
            &[("route", "/livez"), ("code", "200")]
        ) >= 21.0
    );
    for attacker in attackers {
        attacker.abort();
    }
}

/// `GET path` with `Accept: accept`, as a browser or curl sends it: (content type, body).
async fn get_accepting(admin: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let answer = http_raw(
        admin,
        format!(
            "GET {path} HTTP/1.1\r\nHost: admin\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|line| line.strip_prefix("content-type: "))
        .expect("a content type");
    (content_type.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_escaped_html_for_a_browser_and_aligned_text_for_curl() {
    let broker = start_rumqttd().await;
    let down = closed_addr();
    let node = "<script>alert('x')</script>@node";
    let sidecar = start_sidecar(&format!(
        "{}\n[node]\nname = \"{node}\"\n",
        relay_config(
            &[broker.mqtt],
            "",
            &format!("backup = [\"{down}\"]\n{}", fast_check("tcp", ""))
        )
    ));
    sidecar.until_status("/readyz", 200, SETTLE).await;
    within("the backup to be checked and down", async {
        loop {
            let health = sidecar.health().await;
            if health["backends"][0]["servers"][1]["streak"].as_u64() >= Some(2) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let relay = sidecar.addr("mqtt").to_string();
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    for path in ["/", "/haproxy_stats"] {
        let (content_type, page) = get_accepting(sidecar.admin, path, browser).await;
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(page.len() < 50 * 1024, "{} bytes", page.len());
        // The node name is text, not markup: the page's own script is the only one.
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;@node"),
            "{page}"
        );
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
        assert!(page.contains(&format!("<td>{relay}</td>")), "{page}");
        let row = |server: &str| {
            page.lines()
                .find(|line| {
                    line.starts_with("<tr") && line.contains(&format!("<td>{server}</td>"))
                })
                .unwrap_or_else(|| panic!("no row for {server}:\n{page}"))
                .to_string()
        };
        let local = row(&broker.mqtt.to_string());
        assert!(
            local.starts_with("<tr>") && local.contains("<td>UP for "),
            "{local}"
        );
        let backup = row(&down.to_string());
        assert!(
            backup.starts_with("<tr class=\"alarm\">") && backup.contains("<td>DOWN for "),
            "{backup}"
        );
    }

    // curl sends `Accept: */*`; a script may ask for text/plain: both get text.
    for accept in ["*/*", "text/plain"] {
        let (content_type, text) = get_accepting(sidecar.admin, "/haproxy_stats", accept).await;
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert!(
            text.starts_with(&format!("brokerside {node}: OK\n")),
            "{text}"
        );
        let table: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "Backend servers")
            .skip(1)
            .take_while(|line| !line.is_empty())
            .collect();
        assert_eq!(table.len(), 3, "{text}");
        // Every row's state starts under the header's `state`.
        let column = table[0].find("state").expect("a state column");
        assert_eq!(&table[1][column..column + 2], "UP", "{text}");
        assert_eq!(&table[2][column..column + 4], "DOWN", "{text}");
        assert!(
            text.lines()
                .any(|line| line.starts_with("  mqtt ") && line.contains(&relay)),
            "{text}"
        );
    }
}
