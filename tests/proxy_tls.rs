//! TLS termination as clients meet it: real TLS clients (rustls through rumqttc and
//! tokio-rustls, `openssl s_client`, mosquitto's clients) through a terminating listener to a
//! plaintext broker, certificates chosen by SNI, client certificates verified against a CA and a
//! revocation list with the verified CN passed on in PROXY v2, hostile handshakes, and the
//! handshake metrics. Certificates are real ones, made by rcgen.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use support::tls::{Issued, Pki, chain, serial_of, tls_connect};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `[listener.tls]` table for `server`, with `extra` lines.
fn tls_table(server: &Issued, extra: &str) -> String {
    format!(
        "[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        server.cert.display(),
        server.key.display()
    )
}

/// A TLS listener `mqtts` relaying to `servers`.
fn tls_config(servers: &[SocketAddr], listener_extra: &str, tls: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[listener]]\nname = \"mqtts\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n{listener_extra}\n{tls}\n\
         [[backend]]\nname = \"b\"\nservers = [{}]\nloopback_sources = \"off\"\n",
        servers.join(", ")
    )
}

fn tls_options(id: &str, addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut options = MqttOptions::new(id, "localhost", addr.port());
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(config)));
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// rumqttc over TLS 1.3 through termination to rumqttd's plain port: subscribe, then a 1 MiB
/// payload comes back byte for byte; the handshakes are counted by version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_reaches_a_plaintext_broker_byte_exact() {
    let broker = start_rumqttd().await;
    let pki = Pki::new("mqtt");
    let server = pki.server("server", &["localhost"], 1);
    let proxy = start_proxy(&tls_config(&[broker.mqtt], "", &tls_table(&server, "")));
    let addr = proxy.addr("mqtts");
    let config = pki.client_config(None, &[]);

    let mut subscriber = MqttClient::connect(tls_options("sub", addr, Arc::clone(&config))).await;
    subscriber
        .client
        .subscribe("big", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber
        .expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    let publisher = MqttClient::connect(tls_options("pub", addr, config)).await;
    let payload = pattern(1024 * 1024);
    publisher
        .client
        .publish("big", QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    let got = subscriber
        .expect("the 1 MiB publish", |p| match p {
            Packet::Publish(publish) => Some(publish.payload.to_vec()),
            _ => None,
        })
        .await;
    assert!(
        got == payload,
        "payload corrupted ({} bytes came)",
        got.len()
    );
    assert_eq!(
        proxy.metric(
            "brokerside_tls_handshakes_total",
            &[("listener", "mqtts"), ("version", "1.3")]
        ),
        2
    );
    assert!(proxy.metric("brokerside_bytes_total", &[("direction", "to_client")]) > 1024 * 1024);
}

/// `openssl s_client` verifies the chain against the test CA with TLS 1.3 and with TLS 1.2,
/// negotiates ALPN, and its bytes reach an echo backend and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_verifies_the_chain_with_tls_1_3_and_1_2_and_negotiates_alpn() {
    let echo = echo_backend().await;
    let pki = Pki::new("openssl");
    let server = pki.server("server", &["localhost"], 7);
    let tls = tls_table(&server, "alpn = [\"mqtt\"]");
    let proxy = start_proxy(&tls_config(&[echo], "", &tls));
    let addr = proxy.addr("mqtts");
    for version in ["-tls1_3", "-tls1_2"] {
        let mut child = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
            ])
            .args([
                "-CAfile",
                &pki.ca.display().to_string(),
                "-verify_return_error",
            ])
            .args([version, "-alpn", "mqtt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed (Debian package openssl)");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello through tls\n").await.unwrap();
        // s_client sends stdin once the handshake is done; the echo comes back, then EOF ends it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(stdin);
        let out = within("openssl s_client", child.wait_with_output())
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let want = if version == "-tls1_3" {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{version}:\n{text}"
        );
        // s_client's summary line (its session block comes only with a session ticket).
        assert!(
            text.contains(&format!("New, {want}, Cipher is")),
            "{version}:\n{text}"
        );
        assert!(text.contains("ALPN protocol: mqtt"), "{version}:\n{text}");
        assert!(
            text.contains("hello through tls"),
            "{version}: no echo\n{text}"
        );
    }
    assert_eq!(
        proxy.metric("brokerside_tls_handshakes_total", &[("version", "1.2")]),
        1
    );
    assert_eq!(
        proxy.metric("brokerside_tls_handshakes_total", &[("version", "1.3")]),
        1
    );
}

/// Runs `openssl s_client` against `addr`, verifying the chain against the test CA, with
/// `args`; writes `lines` 300 ms apart (s_client reads a line at a time when lines come apart,
/// and a line that is only `k`, `K` or `R` is a command, not data), then closes its input.
/// Returns its stdout and stderr.
async fn s_client(addr: SocketAddr, pki: &Pki, args: &[&str], lines: &[&str]) -> (String, String) {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&pki.ca)
        .arg("-verify_return_error")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (Debian package openssl)");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        // A connection refused mid-way may close s_client's input: later lines go nowhere.
        let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(stdin);
    let out = within("openssl s_client", child.wait_with_output())
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// After the handshake TLS 1.3 records are brokerside's own: with each TLS 1.3 cipher suite,
/// `openssl s_client` updates its keys (`k`), then asks brokerside to update its own (`K`), and
/// the bytes it sends after each still reach an echo backend and come back, under brokerside's
/// new key after `K`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_key_updates_cross_termination_with_every_tls_1_3_suite() {
    let echo = echo_backend().await;
    let pki = Pki::new("keyupdate");
    let server = pki.server("server", &["localhost"], 8);
    let proxy = start_proxy(&tls_config(&[echo], "", &tls_table(&server, "")));
    let addr = proxy.addr("mqtts");
    for suite in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ] {
        let (text, errors) = s_client(
            addr,
            &pki,
            &["-tls1_3", "-ciphersuites", suite, "-msg"],
            &["before", "k", "after-k", "K", "after-upper-k"],
        )
        .await;
        assert!(
            text.contains(&format!("Cipher is {suite}")),
            "{suite}:\n{text}"
        );
        assert_eq!(errors.matches("KEYUPDATE").count(), 2, "{suite}:\n{errors}");
        for echoed in ["before", "after-k", "after-upper-k"] {
            assert!(
                text.lines().any(|line| line == echoed),
                "{suite}: no echo of {echoed}\n{text}\n{errors}"
            );
        }
        // brokerside's own KeyUpdate, answering `K`, as s_client's message trace shows it.
        let received = text
            .lines()
            .filter(|line| {
                line.starts_with("<<< TLS 1.3, Handshake") && line.ends_with("KeyUpdate")
            })
            .count();
        assert_eq!(received, 1, "{suite}:\n{text}");
    }
    assert_eq!(
        proxy.metric("brokerside_tls_handshakes_total", &[("version", "1.3")]),
        3
    );
}

/// TLS 1.2 records are brokerside's own too: with each TLS 1.2 cipher (AES-GCM with its explicit
/// nonces, ChaCha20-Poly1305), `openssl s_client` bytes reach an echo backend and come back;
/// its renegotiation (`R`) is refused, which ends that connection only, counted as failed on
/// the client's side, while another client keeps its echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_tls_1_2_ciphers_cross_termination_and_renegotiation_is_refused() {
    let echo = echo_backend().await;
    let pki = Pki::new("tls12");
    let server = pki.server("server", &["localhost"], 9);
    let proxy = start_proxy(&tls_config(&[echo], "", &tls_table(&server, "")));
    let addr = proxy.addr("mqtts");
    let mut bystander = tls_connect(addr, "localhost", pki.client_config(None, &[]))
        .await
        .expect("the bystander's handshake");
    for cipher in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        let (text, errors) = s_client(
            addr,
            &pki,
            &["-tls1_2", "-cipher", cipher],
            &["before", "R", "after-r"],
        )
        .await;
        assert!(
            text.contains(&format!("Cipher is {cipher}")),
            "{cipher}:\n{text}"
        );
        assert!(
            text.lines().any(|line| line == "before"),
            "{cipher}: no echo\n{text}"
        );
        assert!(errors.contains("RENEGOTIATING"), "{cipher}:\n{errors}");
        assert!(
            !text.lines().any(|line| line == "after-r"),
            "{cipher}: the connection outlived its renegotiation\n{text}"
        );
    }
    let failed = proxy.metric(
        "brokerside_connections_failed_total",
        &[("listener", "mqtts"), ("side", "client")],
    );
    assert_eq!(failed, 3);
    bystander.write_all(b"still here").await.unwrap();
    let mut got = [0; 10];
    within("the bystander's echo", bystander.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"still here");
}

/// mosquitto_sub and mosquitto_pub with `--cafile`: a message round-trips through termination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_round_trip_through_termination() {
    let broker = start_rumqttd().await;
    let pki = Pki::new("mosquitto");
    let server = pki.server("server", &["localhost"], 3);
    let proxy = start_proxy(&tls_config(&[broker.mqtt], "", &tls_table(&server, "")));
    let port = proxy.addr("mqtts").port().to_string();
    let ca = pki.ca.display().to_string();
    let common = [
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        &ca,
        "-t",
        "tls/topic",
        "-q",
        "1",
    ];
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(common)
        .args(["-C", "1", "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (Debian package mosquitto-clients)");
    // The subscription must be in place before the publish.
    within("the subscriber's handshake", async {
        while proxy.metric("brokerside_tls_handshakes_total", &[]) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = tokio::process::Command::new("mosquitto_pub")
        .args(common)
        .args(["-m", "through tls"])
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let out = within("mosquitto_sub", sub.wait_with_output())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through tls",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// MQTT over WSS: TLS terminates here and the WebSocket bytes go untouched to the broker's
/// WebSocket listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_wss_reaches_the_brokers_websocket_listener() {
    let broker = start_rumqttd().await;
    let pki = Pki::new("wss");
    let server = pki.server("server", &["localhost"], 4);
    let proxy = start_proxy(&tls_config(&[broker.ws], "", &tls_table(&server, "")));
    let addr = proxy.addr("mqtts");
    let options = |id: &str| {
        let mut options = MqttOptions::new(
            id,
            format!("wss://localhost:{}/mqtt", addr.port()),
            addr.port(),
        );
        options.set_transport(Transport::Wss(TlsConfiguration::Rustls(
            pki.client_config(None, &[]),
        )));
        options.set_keep_alive(Duration::from_secs(30));
        options
    };
    let mut subscriber = MqttClient::connect(options("wss-sub")).await;
    subscriber
        .client
        .subscribe("wss", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber
        .expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    let publisher = MqttClient::connect(options("wss-pub")).await;
    publisher
        .client
        .publish("wss", QoS::AtLeastOnce, false, b"over wss".to_vec())
        .await
        .unwrap();
    let got = subscriber
        .expect("the publish", |p| match p {
            Packet::Publish(publish) => Some(publish.payload.to_vec()),
            _ => None,
        })
        .await;
    assert_eq!(got, b"over wss");
}

/// Two names get two certificates; a name no entry has, and no name at all, get the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_unknown_names_get_the_default() {
    let echo = echo_backend().await;
    let pki = Pki::new("sni");
    let default = pki.server("default", &["localhost", "default.test"], 10);
    let a = pki.server("a", &["a.test"], 11);
    let b = pki.server("b", &["b.test", "*.wild.test"], 12);
    let tls = tls_table(
        &default,
        &format!(
            "[[listener.tls.sni]]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[listener.tls.sni]]\nnames = [\"b.test\", \"*.wild.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            a.cert.display(),
            a.key.display(),
            b.cert.display(),
            b.key.display()
        ),
    );
    let proxy = start_proxy(&tls_config(&[echo], "", &tls));
    let addr = proxy.addr("mqtts");
    let config = pki.client_config(None, &[]);
    let served = |issued: &Issued| serial_of(&chain(&issued.cert)[0]);
    for (name, want) in [
        ("a.test", served(&a)),
        ("b.test", served(&b)),
        ("x.wild.test", served(&b)),
        ("default.test", served(&default)),
    ] {
        let mut stream = tls_connect(addr, name, Arc::clone(&config))
            .await
            .expect(name);
        let (_, conn) = stream.get_ref();
        let got = serial_of(&conn.peer_certificates().unwrap()[0]);
        assert_eq!(got, want, "certificate served for {name}");
        stream.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }
    // An unknown name gets the default certificate, which does not carry that name: the client
    // refuses it, having been shown the default.
    let refused = tls_connect(addr, "unknown.test", Arc::clone(&config)).await;
    assert!(
        refused.is_err(),
        "a certificate for unknown.test was accepted"
    );
}

/// With `client_ca` (required) and a CRL: no certificate, a certificate of another CA and a
/// revoked certificate are refused and counted by reason; a good certificate gets through, and
/// the raw backend receives a PROXY v2 header whose SSL TLV carries its CN, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_the_cn_goes_to_the_broker_in_proxy_v2() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let pki = Pki::new("mtls");
    let other = Pki::new("mtls-other");
    let server = pki.server("server", &["localhost"], 20);
    let good = pki.client("good", "device-42", 21);
    let revoked = pki.client("revoked", "device-43", 22);
    let stranger = other.client("stranger", "device-44", 23);
    let crl = pki.crl("crl", &[22]);
    let tls = tls_table(
        &server,
        &format!(
            "client_ca = \"{}\"\nclient_auth = \"required\"\ncrl = [\"{}\"]\n",
            pki.ca.display(),
            crl.display()
        ),
    );
    let proxy = start_proxy(&tls_config(
        &[backend.addr],
        "proxy_protocol = \"v2\"",
        &tls,
    ));
    let addr = proxy.addr("mqtts");

    let refused = |client: Option<&Issued>| {
        let config = pki.client_config(client, &[]);
        async move {
            // TLS 1.3 clients finish before the server has judged their certificate: the
            // refusal shows on the first read.
            match tls_connect(addr, "localhost", config).await {
                Err(_) => true,
                Ok(mut stream) => {
                    let _ = stream.write_all(b"x").await;
                    let mut buf = [0u8; 1];
                    !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
                }
            }
        }
    };
    assert!(refused(None).await, "no certificate was let through");
    assert!(
        refused(Some(&stranger)).await,
        "another CA's certificate was let through"
    );
    assert!(
        refused(Some(&revoked)).await,
        "a revoked certificate was let through"
    );
    for (reason, want) in [
        ("no_certificate", 1),
        ("bad_certificate", 1),
        ("revoked", 1),
    ] {
        proxy
            .metric_reaches(
                "brokerside_tls_handshake_errors_total",
                &[("reason", reason)],
                want,
            )
            .await;
    }

    let mut client = tls_connect(addr, "localhost", pki.client_config(Some(&good), &[]))
        .await
        .expect("a good client certificate is accepted");
    client.write_all(b"CONNECT").await.unwrap();
    let (mut conn, _) = within("the backend connection", backend.accept()).await;
    let client_addr = client.get_ref().0.local_addr().unwrap();
    // client = SSL | CERT_CONN | CERT_SESS.
    let mut want = proxy_v2_ssl_header(client_addr, addr, 0x07, b"device-42");
    want.extend_from_slice(b"CONNECT");
    let got = read_n(&mut conn, want.len()).await;
    assert_eq!(
        got, want,
        "PROXY v2 header with the SSL TLV, then the client's bytes"
    );
}

/// Session tickets are off by default: `openssl s_client -sess_out` gets nothing to resume with,
/// with TLS 1.3 or 1.2. With `session_tickets = true` it gets a ticket, and a second s_client
/// with `-sess_in` resumes (`Reused`) with either version, its bytes crossing brokerside's own
/// records on the resumed session; the resumptions are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tickets_are_off_by_default_and_when_on_openssl_resumes_with_tls_1_3_and_1_2() {
    let echo = echo_backend().await;
    let pki = Pki::new("tickets");
    let server = pki.server("server", &["localhost"], 30);
    let off = start_proxy(&tls_config(&[echo], "", &tls_table(&server, "")));
    let on = start_proxy(&tls_config(
        &[echo],
        "",
        &tls_table(&server, "session_tickets = true"),
    ));
    let session = pki.dir.join("session.pem");
    let session_arg = session.display().to_string();
    for version in ["-tls1_3", "-tls1_2"] {
        let _ = std::fs::remove_file(&session);
        // Each proxy in turn: a first session, echoed, and whether a session file came of it.
        for (proxy, ticketed) in [(&off, false), (&on, true)] {
            let (out, _) = s_client(
                proxy.addr("mqtts"),
                &pki,
                &[version, "-sess_out", &session_arg],
                &["first"],
            )
            .await;
            assert!(out.contains("first"), "{version}: no echo\n{out}");
            assert_eq!(
                session.exists(),
                ticketed,
                "{version}: a session to resume with session_tickets = {ticketed}\n{out}"
            );
        }
        let (out, _) = s_client(
            on.addr("mqtts"),
            &pki,
            &[version, "-sess_in", &session_arg],
            &["second"],
        )
        .await;
        assert!(
            out.contains("Reused, TLSv1."),
            "{version}: the session was not resumed\n{out}"
        );
        assert!(
            out.contains("second"),
            "{version}: no echo on the resumed session\n{out}"
        );
    }
    on.metric_reaches("brokerside_tls_resumed_handshakes_total", &[], 2)
        .await;
    assert_eq!(
        on.metric("brokerside_tls_handshakes_total", &[("version", "1.3")]),
        2
    );
    assert_eq!(
        on.metric("brokerside_tls_handshakes_total", &[("version", "1.2")]),
        2
    );
    assert_eq!(
        off.metric("brokerside_tls_resumed_handshakes_total", &[]),
        0
    );
}

/// With client certificates and session tickets, a client that resumes its session is still
/// known by its verified CN: the broker's PROXY v2 header carries it, flagged CERT_SESS without
/// CERT_CONN as HAProxy flags a resumed session. A new CRL that revokes the client's
/// certificate (read on reload) ends resumption: the client's ticket no longer opens a session,
/// and its full handshake is refused as `revoked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_its_cn_and_a_new_crl_ends_its_resumption() {
    use support::sidecar::{ConfigFile, start_sidecar_file};
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let pki = Pki::new("tickets-mtls");
    let server = pki.server("server", &["localhost"], 40);
    let good = pki.client("good", "device-42", 41);
    let crl = pki.crl("crl", &[]);
    let tls = tls_table(
        &server,
        &format!(
            "client_ca = \"{}\"\ncrl = [\"{}\"]\nsession_tickets = true\nwatch = \"0s\"\n",
            pki.ca.display(),
            crl.display()
        ),
    );
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nrelay_threads = 1\n{}",
        tls_config(&[backend.addr], "proxy_protocol = \"v2\"", &tls)
    );
    let file = ConfigFile::new("tickets", &text);
    let sidecar = start_sidecar_file(&file);
    let addr = sidecar.addr("mqtts");
    // One client config for every connection: it keeps the ticket it was given.
    let config = pki.client_config(Some(&good), &[]);

    // A full handshake, then a resumed one; each sends a byte, the backend answers, and reading
    // the answer also takes in the ticket that follows the handshake.
    let mut flags = Vec::new();
    for _ in 0..2 {
        let mut client = tls_connect(addr, "localhost", Arc::clone(&config))
            .await
            .expect("a good client certificate is accepted");
        client.write_all(b"C").await.unwrap();
        let (mut conn, _) = within("the backend connection", backend.accept()).await;
        let client_addr = client.get_ref().0.local_addr().unwrap();
        // The header is the same for both but for the client flags, which follow the
        // addresses, PP2_TYPE_SSL and its length.
        let mut want = proxy_v2_ssl_header(client_addr, addr, 0, b"device-42");
        want.push(b'C');
        let mut got = read_n(&mut conn, want.len()).await;
        let at = proxy_v2_prefix(client_addr, addr).len() + 3;
        flags.push(std::mem::take(&mut got[at]));
        assert_eq!(
            got, want,
            "PROXY v2 header with the SSL TLV, then the client's byte"
        );
        conn.write_all(b"A").await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"A");
    }
    assert_eq!(
        flags,
        [0x07, 0x05],
        "SSL | CERT_CONN | CERT_SESS on the full handshake, SSL | CERT_SESS on the resumed one"
    );
    assert_eq!(
        sidecar.metric("brokerside_tls_resumed_handshakes_total", &[]),
        1.0
    );

    let revoking = pki.crl("revoking", &[41]);
    support::tls::replace_by_rename(&revoking, &crl);
    let reply = sidecar.reload().await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let refused = match tls_connect(addr, "localhost", Arc::clone(&config)).await {
        Err(_) => true,
        Ok(mut stream) => {
            // TLS 1.3 clients finish before the server has judged their certificate: the
            // refusal shows on the first read.
            let _ = stream.write_all(b"x").await;
            let mut buf = [0u8; 1];
            !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a revoked client resumed its session");
    // The client may see the refusal before the sidecar has counted it.
    within("the revoked handshake to be counted", async {
        while sidecar.metric(
            "brokerside_tls_handshake_errors_total",
            &[("reason", "revoked")],
        ) != 1.0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        sidecar.metric("brokerside_tls_resumed_handshakes_total", &[]),
        1.0
    );
}

/// The v2 header HAProxy's `send-proxy-v2-ssl-cn` sends for an IPv4 client `src` connected to
/// `dst` over TLS 1.3 with a verified certificate named `cn`: PP2_TYPE_SSL with `client` flags,
/// verify = 0, then the VERSION and CN sub-TLVs.
fn proxy_v2_ssl_header(src: SocketAddr, dst: SocketAddr, client: u8, cn: &[u8]) -> Vec<u8> {
    let mut header = proxy_v2_prefix(src, dst);
    let mut ssl = vec![client, 0, 0, 0, 0];
    ssl.extend_from_slice(&[0x21, 0, 7]);
    ssl.extend_from_slice(b"TLSv1.3");
    ssl.extend_from_slice(&[0x22, 0]);
    ssl.push(cn.len() as u8);
    ssl.extend_from_slice(cn);
    header.push(0x20);
    header.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
    header.extend_from_slice(&ssl);
    let length = (header.len() - 16) as u16;
    header[14..16].copy_from_slice(&length.to_be_bytes());
    header
}

/// The v2 header up to its addresses and ports, for an IPv4 client `src` connected to `dst`.
fn proxy_v2_prefix(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 expected");
    };
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// A client that connects and says nothing loses its slot at `handshake_timeout`; random bytes
/// and a truncated ClientHello end that connection only; each is counted, and a healthy client
/// alongside 500 handshakes at once is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_end_their_own_connection_only() {
    let echo = echo_backend().await;
    let pki = Pki::new("hostile");
    let server = pki.server("server", &["localhost"], 30);
    // Long enough that the last of 500 handshakes queued at once (debug-built ring, on a
    // loaded 2-core machine) still finishes in time; the silent client waits it out.
    let tls = tls_table(&server, "handshake_timeout = \"3s\"");
    let proxy = start_proxy(&tls_config(&[echo], "", &tls));
    let addr = proxy.addr("mqtts");
    let config = pki.client_config(None, &[]);
    let mut healthy = tls_connect(addr, "localhost", Arc::clone(&config))
        .await
        .unwrap();
    round_trip_tls(&mut healthy, b"before").await;

    let mut silent = connect(addr).await;
    let closed = within("the silent client to be cut", read_to_eof(&mut silent)).await;
    assert!(matches!(closed, Ok(ref b) if b.is_empty()) || closed.is_err());
    proxy
        .metric_reaches(
            "brokerside_tls_handshake_errors_total",
            &[("reason", "timeout")],
            1,
        )
        .await;

    let mut garbage = connect(addr).await;
    garbage.write_all(&pattern(4096)).await.unwrap();
    let _ = within("garbage to be closed", read_to_eof(&mut garbage)).await;
    proxy
        .metric_reaches(
            "brokerside_tls_handshake_errors_total",
            &[("reason", "protocol")],
            1,
        )
        .await;

    // The first 40 bytes of a real ClientHello, then the client leaves.
    let hello = client_hello(&config).await;
    let mut truncated = connect(addr).await;
    truncated.write_all(&hello[..40]).await.unwrap();
    truncated.shutdown().await.unwrap();
    let _ = within(
        "the truncated hello to be closed",
        read_to_eof(&mut truncated),
    )
    .await;
    proxy
        .metric_reaches(
            "brokerside_tls_handshake_errors_total",
            &[("reason", "eof")],
            1,
        )
        .await;

    let storm: Vec<_> = (0..500)
        .map(|_| {
            let config = Arc::clone(&config);
            tokio::spawn(async move { tls_connect(addr, "localhost", config).await.is_ok() })
        })
        .collect();
    round_trip_tls(&mut healthy, b"during").await;
    let mut done = 0;
    for handshake in storm {
        done += usize::from(within("a handshake of the 500", handshake).await.unwrap());
    }
    assert_eq!(done, 500, "handshakes that failed among 500 at once");
    round_trip_tls(&mut healthy, b"after").await;
}

async fn round_trip_tls<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    within("the echo", stream.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, bytes);
}

/// The bytes of a real ClientHello that `config` sends.
async fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::clone(config);
    tokio::spawn(async move {
        let _ = tls_connect(addr, "localhost", config).await;
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut hello = vec![0u8; 512];
    let n = within("a ClientHello", stream.read(&mut hello))
        .await
        .unwrap();
    hello.truncate(n);
    assert!(n > 40 && hello[0] == 0x16, "not a TLS handshake record");
    hello
}

/// The serial number of the certificate `addr` serves to `localhost` now.
async fn served_serial(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> String {
    let stream = tls_connect(addr, "localhost", Arc::clone(config))
        .await
        .expect("a handshake");
    let (_, conn) = stream.get_ref();
    serial_of(&conn.peer_certificates().expect("a certificate")[0])
}

/// Waits until `addr` serves the certificate of `issued`.
async fn serves(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, issued: &Issued) {
    let want = serial_of(&chain(&issued.cert)[0]);
    within(&format!("serial {want} to be served"), async {
        while served_serial(addr, config).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// 200 TLS connections keep exchanging bytes while the certificate and key files are replaced
/// by rename with a certificate of a new serial: new handshakes get it within the watch
/// interval, and not one of the 200 loses a byte. A corrupt replacement is refused and counted,
/// and the last good certificate is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_serve_new_handshakes_and_open_connections_lose_nothing() {
    let echo = echo_backend().await;
    let pki = Pki::new("rotate");
    let first = pki.server("first", &["localhost"], 40);
    let second = pki.server("second", &["localhost"], 41);
    let live = pki.live(&first);
    let tls = tls_table(&live, "watch = \"200ms\"");
    let proxy = start_proxy(&tls_config(&[echo], "", &tls));
    let addr = proxy.addr("mqtts");
    let config = pki.client_config(None, &[]);
    serves(addr, &config, &first).await;

    // Each client counts itself once in `after` when it has exchanged a message after both
    // replacements: the test ends only when all 200 have.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let config = Arc::clone(&config);
            let mut stopped = stopped.clone();
            let (rotated, after) = (Arc::clone(&rotated), Arc::clone(&after));
            tokio::spawn(async move {
                let mut stream = tls_connect(addr, "localhost", config)
                    .await
                    .expect("connect");
                let mut exchanged = 0u32;
                let mut counted = false;
                loop {
                    let was_rotated = rotated.load(std::sync::atomic::Ordering::Acquire);
                    let message = format!("client {i} message {exchanged}\n");
                    round_trip_tls(&mut stream, message.as_bytes()).await;
                    exchanged += 1;
                    if was_rotated && !counted {
                        counted = true;
                        after.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
                exchanged
            })
        })
        .collect();
    proxy
        .metric_reaches(
            "brokerside_connections_active",
            &[("listener", "mqtts")],
            200,
        )
        .await;

    support::tls::replace_by_rename(&second.key, &live.key);
    support::tls::replace_by_rename(&second.cert, &live.cert);
    serves(addr, &config, &second).await;
    assert_eq!(
        proxy.metric("brokerside_tls_reloads_total", &[("result", "ok")]),
        1
    );

    let corrupt = pki.dir.join("corrupt.pem");
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    support::tls::replace_by_rename(&corrupt, &live.cert);
    proxy
        .metric_reaches("brokerside_tls_reloads_total", &[("result", "error")], 1)
        .await;
    assert_eq!(
        served_serial(addr, &config).await,
        serial_of(&chain(&second.cert)[0]),
        "the refused file replaced the last good certificate"
    );

    rotated.store(true, std::sync::atomic::Ordering::Release);
    within(
        "every client to exchange a message after the replacements",
        async {
            while after.load(std::sync::atomic::Ordering::Acquire) < 200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    assert_eq!(
        proxy.metric("brokerside_connections_active", &[("listener", "mqtts")]),
        200,
        "connections open across the rotation"
    );
    stop.send(true).unwrap();
    for client in clients {
        let exchanged = within("a client to stop", client)
            .await
            .expect("no client lost a byte");
        assert!(exchanged >= 2, "a client exchanged {exchanged} messages");
    }
}

/// With no file watching, a reload (`POST /reload`, as SIGHUP does) re-reads the certificate
/// files: the rotation then takes effect, and a reload with a corrupt key is refused with the
/// field named, the old certificate still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_certificate_files() {
    use support::sidecar::{ConfigFile, start_sidecar_file};
    let echo = echo_backend().await;
    let pki = Pki::new("reload");
    let first = pki.server("first", &["localhost"], 50);
    let second = pki.server("second", &["localhost"], 51);
    let live = pki.live(&first);
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nrelay_threads = 1\n{}",
        tls_config(&[echo], "", &tls_table(&live, "watch = \"0s\""))
    );
    let file = ConfigFile::new("tls", &text);
    let sidecar = start_sidecar_file(&file);
    let addr = sidecar.addr("mqtts");
    let config = pki.client_config(None, &[]);
    assert_eq!(
        served_serial(addr, &config).await,
        serial_of(&chain(&first.cert)[0])
    );

    support::tls::replace_by_rename(&second.key, &live.key);
    support::tls::replace_by_rename(&second.cert, &live.cert);
    let reply = sidecar.reload().await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        served_serial(addr, &config).await,
        serial_of(&chain(&second.cert)[0])
    );

    let other = pki.server("other", &["localhost"], 52);
    support::tls::replace_by_rename(&other.key, &live.key);
    let reply = sidecar.reload().await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("listener[0].tls.key"), "{}", reply.body);
    assert!(
        reply.body.contains("does not match the certificate"),
        "{}",
        reply.body
    );
    assert_eq!(
        served_serial(addr, &config).await,
        serial_of(&chain(&second.cert)[0])
    );
}

/// `check-config` reads every TLS file: an unreadable file, a key that does not match its
/// certificate, a chain or CRL that does not parse and an expired certificate each fail with
/// exit 2 and the field named; a certificate that expires within 14 days is a warning only.
#[test]
fn check_config_reads_every_tls_file_and_names_the_field() {
    let pki = Pki::new("check");
    let good = pki.server("good", &["localhost"], 60);
    let other = pki.server("other", &["localhost"], 61);
    let expired = pki.expired_server("expired", &["localhost"]);
    let soon = pki.server_expiring_in("soon", &["localhost"], 5);
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let check = |tls: &str| {
        let text = tls_config(&["127.0.0.1:21883".parse().unwrap()], "", tls);
        let path = pki.dir.join(format!(
            "config-{}.toml",
            NEXT_CONFIG.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_brokerside"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, stderr, stdout) = check(&tls_table(&good, "alpn = [\"mqtt\"]"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("[listener.tls]") && stdout.contains("handshake_timeout = \"10s\""),
        "{stdout}"
    );

    let missing = Issued {
        cert: pki.dir.join("nowhere.pem"),
        key: good.key.clone(),
    };
    let mismatched = Issued {
        cert: good.cert.clone(),
        key: other.key.clone(),
    };
    let unparsable_chain = Issued {
        cert: garbage.clone(),
        key: good.key.clone(),
    };
    let bad_crl = tls_table(
        &good,
        &format!(
            "client_ca = \"{}\"\ncrl = [\"{}\"]",
            pki.ca.display(),
            garbage.display()
        ),
    );
    for (tls, field, words) in [
        (
            tls_table(&missing, ""),
            "listener[0].tls.cert",
            "cannot read",
        ),
        (
            tls_table(&mismatched, ""),
            "listener[0].tls.key",
            "does not match the certificate",
        ),
        (
            tls_table(&unparsable_chain, ""),
            "listener[0].tls.cert",
            "no PEM certificate",
        ),
        (
            tls_table(&expired, ""),
            "listener[0].tls.cert",
            "expired at 2021-01-01",
        ),
        (bad_crl, "listener[0].tls.crl[0]", "does not parse"),
    ] {
        let (code, stderr, _) = check(&tls);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert!(
            stderr.contains(&format!("{field}: ")) && stderr.contains(words),
            "want {field} ... {words}, got:\n{stderr}"
        );
    }
    let (code, stderr, _) = check(&tls_table(&soon, ""));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: listener[0].tls.cert") && stderr.contains("expires soon"),
        "{stderr}"
    );
}

static NEXT_CONFIG: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Ends cross termination as they cross a plain relay: the client's close_notify reaches the
/// broker as a FIN while the broker's answer still comes back, the broker's FIN reaches the
/// client as close_notify (a clean TLS end, no truncation), and a broker's reset reaches the
/// client as a FIN with no close_notify (a truncated TLS stream). A 4 MiB answer to a client that
/// reads late arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_close_notify_backpressure_and_resets_cross_termination() {
    let mut backend = RawBackend::start("127.0.0.1:0").await;
    let pki = Pki::new("ends");
    let server = pki.server("server", &["localhost"], 70);
    let proxy = start_proxy(&tls_config(&[backend.addr], "", &tls_table(&server, "")));
    let addr = proxy.addr("mqtts");
    let config = pki.client_config(None, &[]);

    let mut client = tls_connect(addr, "localhost", Arc::clone(&config))
        .await
        .unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap(); // close_notify, then FIN
    let (mut conn, _) = within("the backend connection", backend.accept()).await;
    let got = within("the request and its end", read_to_eof(&mut conn))
        .await
        .unwrap();
    assert_eq!(got, b"request", "the broker saw the request, then a FIN");
    let answer = pattern(4 * 1024 * 1024);
    let writer = {
        let answer = answer.clone();
        tokio::spawn(async move {
            conn.write_all(&answer).await.unwrap();
            conn.shutdown().await.unwrap();
            conn
        })
    };
    // Read late: the answer waits in the sockets and in one record's worth of brokerside.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut back = Vec::new();
    within(
        "the answer and the close_notify",
        client.read_to_end(&mut back),
    )
    .await
    .expect("a clean TLS end: close_notify before the FIN");
    assert!(
        back == answer,
        "the answer came back corrupted ({} bytes)",
        back.len()
    );
    drop(within("the writer", writer).await.unwrap());

    let mut client = tls_connect(addr, "localhost", config).await.unwrap();
    round_trip_tls_raw(&mut client, &mut backend).await;
}

/// One exchange through a fresh backend connection, then the backend resets: the client's next
/// read fails, the stream ending without close_notify.
async fn round_trip_tls_raw(
    client: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    backend: &mut RawBackend,
) {
    client.write_all(b"ping").await.unwrap();
    let (mut conn, _) = within("the backend connection", backend.accept()).await;
    assert_eq!(read_n(&mut conn, 4).await, b"ping");
    reset(conn);
    let mut buf = [0u8; 16];
    let read = within(
        "the broker's reset to reach the client",
        client.read(&mut buf),
    )
    .await;
    let error = read.expect_err("the client read bytes after the broker reset");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
}
