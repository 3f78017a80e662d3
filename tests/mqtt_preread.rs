//! The CONNECT preread as clients and brokers meet it: real clients of every MQTT version
//! (mosquitto_pub/mosquitto_sub with `-V mqttv31|mqttv311|mqttv5`, rumqttc) through a listener
//! with `mqtt_preread = true` to real brokers (mosquitto, rumqttd), the exact bytes a broker
//! receives after the PROXY header, the CONNECT read after TLS termination, and bad first
//! packets closed one by one, counted, with other clients untouched.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::Process;
use support::raw_mqtt::{closed, connect_packet, mqtt_connect_raw, mqtt_ping_raw};
use support::tls::{Pki, tls_connect};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREREAD: &str = "mqtt_preread = true";

/// A mosquitto broker on a free loopback port, killed when dropped.
struct Mosquitto {
    addr: SocketAddr,
    child: Child,
    _dir: std::path::PathBuf,
}

impl Mosquitto {
    async fn start(tag: &str) -> Mosquitto {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = std::env::temp_dir().join(format!("brokerside-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
                addr.port()
            ),
        )
        .expect("write mosquitto.conf");
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (Debian package mosquitto)");
        within("mosquitto to listen", async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Mosquitto {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto_sub and mosquitto_pub speaking MQTT 3.1, 3.1.1 and 5.0, with a username, a password
/// and a will: every CONNECT is read, parsed and forwarded exactly, so the broker accepts it and
/// a message round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_every_mqtt_version_connect_through_the_preread() {
    let broker = Mosquitto::start("preread-versions").await;
    let proxy = start_proxy(&relay_config(
        &[broker.addr],
        PREREAD,
        "loopback_sources = \"off\"",
    ));
    let port = proxy.addr("mqtt").port().to_string();
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let topic = format!("preread/{version}");
        let common = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            version,
            "-t",
            &topic,
            "-q",
            "1",
            "-u",
            "zoë",
            "-P",
            "secret",
        ];
        let sub = tokio::process::Command::new("mosquitto_sub")
            .args(common)
            .args(["-i", &format!("sub-{version}"), "-C", "1", "-W", "10"])
            .args(["--will-topic", "wills", "--will-payload", "gone"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed (Debian package mosquitto-clients)");
        // The subscription must be in place before the publish: wait for its relay, then a
        // little for the SUBSCRIBE to cross.
        let relayed = proxy.metric("brokerside_connections_total", &[]);
        within("the subscriber to be relayed", async {
            while proxy.metric("brokerside_connections_active", &[]) < 1
                || proxy.metric("brokerside_connections_total", &[]) < relayed
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let published = tokio::process::Command::new("mosquitto_pub")
            .args(common)
            .args(["-i", &format!("pub-{version}"), "-m", version])
            .output()
            .await
            .expect("mosquitto_pub runs");
        assert!(
            published.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        let out = within("mosquitto_sub", sub.wait_with_output())
            .await
            .expect("mosquitto_sub ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            version,
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        proxy.metric(
            "brokerside_connections_refused_total",
            &[("reason", "mqtt_connect")]
        ),
        0
    );
}

/// A CONNECT that arrives one byte per segment is read whole, and the broker receives the PROXY
/// header, then exactly the CONNECT, then what the client sent after it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_in_one_byte_segments_reaches_the_broker_exactly_after_the_proxy_header() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let proxy = start_proxy(&relay_config(
        &[backend.addr],
        &format!("{PREREAD}\nproxy_protocol = \"v1\""),
        "loopback_sources = \"off\"",
    ));
    let mut client = connect(proxy.addr("mqtt")).await;
    client.set_nodelay(true).expect("nodelay");
    let local = client.local_addr().expect("local address");
    let packet = connect_packet("one-byte-at-a-time");
    for byte in &packet {
        client.write_all(&[*byte]).await.expect("write a byte");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pingreq = [0xC0, 0];
    client.write_all(&pingreq).await.expect("PINGREQ");

    let (mut broker_side, _) = backend.accept().await;
    let header = format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        local.ip(),
        proxy.addr("mqtt").ip(),
        local.port(),
        proxy.addr("mqtt").port()
    );
    let want: Vec<u8> = [header.as_bytes(), &packet, &pingreq].concat();
    let got = read_n(&mut broker_side, want.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    // And the relay runs: the broker's answer reaches the client.
    broker_side
        .write_all(&[0x20, 2, 0, 0])
        .await
        .expect("CONNACK");
    assert_eq!(read_n(&mut client, 4).await, [0x20, 2, 0, 0]);
}

/// Garbage, a wrong protocol name and a declared size over `max_connect_size` are each closed
/// (a FIN, no reset) before any broker connection, and counted; a client relayed before them
/// keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_first_packets_are_closed_and_counted_and_others_keep_going() {
    let broker = start_rumqttd().await;
    let proxy = start_proxy(&relay_config(
        &[broker.mqtt],
        &format!("{PREREAD}\nmax_connect_size = 1024"),
        "loopback_sources = \"off\"",
    ));
    let addr = proxy.addr("mqtt");
    let mut good = mqtt_connect_raw(addr, "good").await;

    let mut wrong_name = connect_packet("x");
    wrong_name[4..8].copy_from_slice(b"MQTX");
    let oversized = vec![0x10, 0x80, 0x80, 0x80, 0x01]; // 2 MiB declared, 1 KiB allowed
    let bad: [(&str, Vec<u8>); 3] = [
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("wrong protocol name", wrong_name),
        ("oversized", oversized),
    ];
    let connects_before = proxy.metric("brokerside_backend_connect_duration_seconds_count", &[]);
    for (n, (what, bytes)) in bad.iter().enumerate() {
        let mut client = connect(addr).await;
        client.write_all(bytes).await.expect("write");
        let mut buf = [0u8; 64];
        let read = within(&format!("{what} to be closed"), client.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(0)),
            "{what}: wanted a clean close, got {read:?}"
        );
        proxy
            .metric_reaches(
                "brokerside_connections_refused_total",
                &[("reason", "mqtt_connect")],
                n as u64 + 1,
            )
            .await;
    }
    assert_eq!(
        proxy.metric("brokerside_backend_connect_duration_seconds_count", &[]),
        connects_before,
        "a refused client made a broker connection"
    );
    mqtt_ping_raw(&mut good).await;
}

/// Half a CONNECT and then silence is closed once `preread_timeout` has passed, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_connect_then_silence_is_closed_after_the_preread_timeout() {
    let broker = start_rumqttd().await;
    let proxy = start_proxy(&relay_config(
        &[broker.mqtt],
        &format!("{PREREAD}\npreread_timeout = \"400ms\""),
        "loopback_sources = \"off\"",
    ));
    let mut client = connect(proxy.addr("mqtt")).await;
    let packet = connect_packet("slow");
    let started = Instant::now();
    client.write_all(&packet[..7]).await.expect("write");
    within("the silent client to be closed", closed(&mut client)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    assert_eq!(
        proxy.metric(
            "brokerside_connections_refused_total",
            &[("reason", "mqtt_connect")]
        ),
        1
    );
}

/// On a terminating listener the CONNECT is read from the decrypted stream: a client sending it
/// over TLS gets the broker's CONNACK and its session works; garbage inside TLS is closed and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_is_read_after_tls_termination() {
    let broker = start_rumqttd().await;
    let pki = Pki::new("preread");
    let server = pki.server("server", &["localhost"], 11);
    // The [listener.tls] table follows the listener's own keys, before [[backend]].
    let listener = format!(
        "{PREREAD}\n[listener.tls]\ncert = \"{}\"\nkey = \"{}\"",
        server.cert.display(),
        server.key.display()
    );
    let config = relay_config(&[broker.mqtt], &listener, "loopback_sources = \"off\"");
    let proxy = start_proxy(&config);
    let addr = proxy.addr("mqtt");
    let client_config = pki.client_config(None, &[]);

    let mut tls = tls_connect(addr, "localhost", client_config.clone())
        .await
        .expect("TLS handshake");
    // The CONNECT split over two records.
    let packet = connect_packet("over-tls");
    tls.write_all(&packet[..5]).await.expect("write");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(50)).await;
    tls.write_all(&packet[5..]).await.expect("write");
    tls.flush().await.expect("flush");
    let mut connack = [0u8; 4];
    within("CONNACK over TLS", tls.read_exact(&mut connack))
        .await
        .expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0]);
    tls.write_all(&[0xC0, 0]).await.expect("PINGREQ");
    tls.flush().await.expect("flush");
    let mut pingresp = [0u8; 2];
    within("PINGRESP over TLS", tls.read_exact(&mut pingresp))
        .await
        .expect("PINGRESP");
    assert_eq!(pingresp, [0xD0, 0]);

    let mut garbage = tls_connect(addr, "localhost", client_config)
        .await
        .expect("TLS handshake");
    garbage
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    garbage.flush().await.expect("flush");
    let mut buf = [0u8; 64];
    let read = within("garbage over TLS to be closed", garbage.read(&mut buf)).await;
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "garbage got an answer: {read:?}"
    );
    proxy
        .metric_reaches(
            "brokerside_connections_refused_total",
            &[("reason", "mqtt_connect")],
            1,
        )
        .await;
    assert_eq!(
        proxy.metric("brokerside_tls_handshakes_total", &[]),
        2,
        "both handshakes counted as handshakes, not failures"
    );
}

/// At debug level each relayed client is logged with its client id, protocol level and chosen
/// server; JSON logs carry them as fields, for log shipping to search on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_is_logged_with_its_id_protocol_and_server_at_debug_level() {
    let broker = start_rumqttd().await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        relay_config(&[broker.mqtt], PREREAD, "loopback_sources = \"off\"")
    );
    let mut process = Process::spawn_at_level("preread-log", &config, "brokerside=debug");
    let (relay, _admin) = process.started();
    let _client = mqtt_connect_raw(relay, "logged-client").await;
    let line = process.log_line("relaying an MQTT client", 1);
    let fields = &line["fields"];
    assert_eq!(fields["client_id"], "logged-client", "{line}");
    assert_eq!(fields["protocol"], 4, "{line}");
    assert_eq!(fields["server"], broker.mqtt.to_string(), "{line}");
    assert_eq!(fields["role"], "local", "{line}");
}
