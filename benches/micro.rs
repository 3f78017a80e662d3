//! Micro-benchmarks of the hot functions a connection goes through (criterion): the PROXY header
//! sent to the broker (v1 and v2), the inbound header read from a load balancer, the choice of
//! servers for a new connection, the validation of the default config (at start and reload), and
//! the parse of a client's MQTT CONNECT (3.1.1 and 5.0, as rumqttc encodes them).
//!
//! `cargo bench --bench micro` (criterion's own options follow `--`, e.g. `-- proxy_protocol`).

use std::hint::black_box;
use std::net::SocketAddr;

use brokerside::backend::Backend;
use brokerside::config::Config;
use brokerside::metrics::Metrics;
use brokerside::mqtt::DEFAULT_MAX_CONNECT_SIZE;
use brokerside::net::proxy_protocol::{encode_v1, encode_v2, parse};
use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use rumqttc::mqttbytes::{QoS, v4};
use rumqttc::v5::mqttbytes::v5;

fn addresses() -> [(&'static str, SocketAddr, SocketAddr); 2] {
    [
        (
            "ipv4",
            "203.0.113.7:51234".parse().expect("address"),
            "10.0.0.5:1883".parse().expect("address"),
        ),
        (
            "ipv6",
            "[2001:db8::7]:51234".parse().expect("address"),
            "[2001:db8::5]:1883".parse().expect("address"),
        ),
    ]
}

fn proxy_protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_protocol");
    for (family, src, dst) in addresses() {
        group.bench_function(format!("encode_v1/{family}"), |b| {
            b.iter(|| encode_v1(black_box(src), black_box(dst)))
        });
        group.bench_function(format!("encode_v2/{family}"), |b| {
            b.iter(|| encode_v2(black_box(src), black_box(dst)))
        });
        // A header followed by the client's first bytes, as read_inbound sees it.
        for (version, header) in [("v1", encode_v1(src, dst)), ("v2", encode_v2(src, dst))] {
            let mut bytes = header;
            bytes.extend_from_slice(&[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T']);
            group.bench_function(format!("parse_{version}/{family}"), |b| {
                b.iter(|| parse(black_box(&bytes)))
            });
        }
    }
    group.finish();
}

/// A backend of three local servers and two backups, with or without health checks, balanced
/// by `balance` with a `slowstart` ramp. Checked servers start down, so `candidates` takes its
/// slowest path: nothing is up, every server.
fn backend(checked: bool, balance: &str, slowstart: &str) -> Backend {
    let check = if checked {
        "[backend.check]\nkind = \"tcp\"\n"
    } else {
        ""
    };
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:1883\"\nbackend = \"broker\"\n\n\
         [[backend]]\nname = \"broker\"\n\
         servers = [\"127.0.0.1:21883\", \"127.0.0.1:21884\", \"127.0.0.1:21885\"]\n\
         backup = [\"10.0.0.6:1883\", \"10.0.0.7:1883\"]\n\
         balance = \"{balance}\"\nslowstart = \"{slowstart}\"\n{check}"
    );
    let config = Config::from_toml(&text).expect("the bench's config is valid");
    Backend::new(&config.backends[0], &Metrics::new())
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("backend");
    let up = backend(false, "local-first", "0s");
    group.bench_function("candidates/local_up", |b| {
        b.iter(|| black_box(&up).candidates(None))
    });
    let down = backend(true, "local-first", "0s");
    group.bench_function("candidates/none_up", |b| {
        b.iter(|| black_box(&down).candidates(None))
    });
    // Slow start on: the clock is read and each server's ramp looked at (none ramps here).
    let ramp = backend(false, "local-first", "30s");
    group.bench_function("candidates/local_up_slowstart", |b| {
        b.iter(|| black_box(&ramp).candidates(None))
    });
    let hashed = backend(false, "client-id", "0s");
    let id = "sensor-0017-5f2c9a1e";
    group.bench_function("candidates/client_id", |b| {
        b.iter(|| black_box(&hashed).candidates(Some(black_box(id))))
    });
    let hashed_ramp = backend(false, "client-id", "30s");
    group.bench_function("candidates/client_id_slowstart", |b| {
        b.iter(|| black_box(&hashed_ramp).candidates(Some(black_box(id))))
    });
    let hashed_down = backend(true, "client-id", "0s");
    group.bench_function("candidates/client_id_none_up", |b| {
        b.iter(|| black_box(&hashed_down).candidates(Some(black_box(id))))
    });
    group.finish();
}

fn config(c: &mut Criterion) {
    c.bench_function("config/validate_default", |b| {
        b.iter(|| Config::from_toml(black_box(brokerside::config::DEFAULT_CONFIG)))
    });
}

/// A typical device's CONNECT of each version: client id, username and password, a will; the
/// MQTT 5 one with a session expiry and a user property.
fn connects() -> [(&'static str, Vec<u8>); 2] {
    let mut v4 = v4::Connect::new("sensor-0017");
    v4.set_login("device", "s3cret");
    v4.last_will = Some(v4::LastWill::new(
        "devices/sensor-0017/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let mut v4_bytes = BytesMut::new();
    v4.write(&mut v4_bytes).expect("rumqttc encodes it");

    let mut properties = v5::ConnectProperties::new();
    properties.session_expiry_interval = Some(3600);
    properties.user_properties = vec![("site".to_string(), "fra-1".to_string())];
    let v5 = v5::Connect {
        keep_alive: 60,
        client_id: "sensor-0017".to_string(),
        clean_start: false,
        properties: Some(properties),
    };
    let will = Some(v5::LastWill::new(
        "devices/sensor-0017/status",
        "offline",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    ));
    let login = Some(v5::Login::new("device", "s3cret"));
    let mut v5_bytes = BytesMut::new();
    v5.write(&will, &login, &mut v5_bytes)
        .expect("rumqttc encodes it");
    [("v3.1.1", v4_bytes.to_vec()), ("v5", v5_bytes.to_vec())]
}

fn mqtt_connect(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_connect");
    for (version, bytes) in connects() {
        group.bench_function(format!("parse/{version}"), |b| {
            b.iter(|| brokerside::mqtt::parse(black_box(&bytes), DEFAULT_MAX_CONNECT_SIZE))
        });
    }
    group.finish();
}

criterion_group!(benches, proxy_protocol, selection, config, mqtt_connect);
criterion_main!(benches);
