//! Micro-benchmarks of the hot functions a connection goes through (criterion): the PROXY header
//! sent to the broker (v1 and v2), the inbound header read from a load balancer, the choice of
//! servers for a new connection, and the validation of the default config (at start and reload).
//!
//! MQTT CONNECT parsing has no bench yet: brokerside does not parse CONNECT so far.
//!
//! `cargo bench --bench micro` (criterion's own options follow `--`, e.g. `-- proxy_protocol`).

use std::hint::black_box;
use std::net::SocketAddr;

use brokerside::backend::Backend;
use brokerside::config::Config;
use brokerside::metrics::Metrics;
use brokerside::net::proxy_protocol::{encode_v1, encode_v2, parse};
use criterion::{Criterion, criterion_group, criterion_main};

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

/// A backend of two local servers and two backups, with or without health checks. Checked
/// servers start down, so `candidates` takes its slowest path: nothing is up, every server.
fn backend(checked: bool) -> Backend {
    let check = if checked {
        "[backend.check]\nkind = \"tcp\"\n"
    } else {
        ""
    };
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:1883\"\nbackend = \"broker\"\n\n\
         [[backend]]\nname = \"broker\"\n\
         servers = [\"127.0.0.1:21883\", \"127.0.0.1:21884\"]\n\
         backup = [\"10.0.0.6:1883\", \"10.0.0.7:1883\"]\n{check}"
    );
    let config = Config::from_toml(&text).expect("the bench's config is valid");
    Backend::new(&config.backends[0], &Metrics::new())
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("backend");
    let up = backend(false);
    group.bench_function("candidates/local_up", |b| {
        b.iter(|| black_box(&up).candidates())
    });
    let down = backend(true);
    group.bench_function("candidates/none_up", |b| {
        b.iter(|| black_box(&down).candidates())
    });
    group.finish();
}

fn config(c: &mut Criterion) {
    c.bench_function("config/validate_default", |b| {
        b.iter(|| Config::from_toml(black_box(brokerside::config::DEFAULT_CONFIG)))
    });
}

criterion_group!(benches, proxy_protocol, selection, config);
criterion_main!(benches);
