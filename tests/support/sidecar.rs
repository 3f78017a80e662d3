//! The whole sidecar in-process (relay, health checkers, admin endpoint, drain), bound on port 0
//! everywhere, and its admin endpoint read over real HTTP as a load balancer or Prometheus would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use brokerside::config::Config;
use brokerside::metrics::Metrics;
use brokerside::shutdown::{DrainControl, Stopped};
use brokerside::sidecar::Sidecar;
use tokio::task::JoinHandle;

use super::http::{Reply, http_get, http_request};
use super::{metric_value, within};

/// A sidecar running in the background of the test's runtime.
pub struct TestSidecar {
    /// The admin endpoint's real address.
    pub admin: SocketAddr,
    addrs: HashMap<String, SocketAddr>,
    /// The registry `/metrics` renders.
    pub metrics: Metrics,
    /// The drain switch (what SIGTERM and `POST /drain` flip).
    pub drain: Arc<DrainControl>,
    task: Option<JoinHandle<std::io::Result<Stopped>>>,
}

/// Validates `toml` (see [`super::test_config`]), moves the admin endpoint to 127.0.0.1:0
/// (listeners should use port 0 too), binds everything and runs the sidecar until its drain
/// finishes.
pub fn start_sidecar(toml: &str) -> TestSidecar {
    let mut config = super::test_config(toml);
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let sidecar = Sidecar::bind(config).expect("bind the sidecar");
    running(sidecar, names)
}

/// Runs the sidecar of config file `file` as `run --config` does, so that it can reload it. The
/// file should set `[admin] listen = "127.0.0.1:0"` and `[runtime] relay_threads`.
pub fn start_sidecar_file(file: &ConfigFile) -> TestSidecar {
    let config = Config::from_file(&file.path).unwrap_or_else(|e| panic!("bad test config:\n{e}"));
    let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
    let sidecar = Sidecar::bind_file(&file.path).expect("bind the sidecar");
    running(sidecar, names)
}

fn running(sidecar: Sidecar, names: Vec<String>) -> TestSidecar {
    let addrs = names
        .into_iter()
        .map(|name| {
            let addr = sidecar.listener_addr(&name).expect("bound listener");
            (name, addr)
        })
        .collect();
    TestSidecar {
        admin: sidecar.admin_addr(),
        addrs,
        metrics: sidecar.metrics(),
        drain: sidecar.drain(),
        task: Some(tokio::spawn(sidecar.run())),
    }
}

impl TestSidecar {
    /// The real address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// `GET path` on the admin endpoint.
    pub async fn get(&self, path: &str) -> Reply {
        http_get(self.admin, path).await
    }

    /// `POST /reload` on the admin endpoint.
    pub async fn reload(&self) -> Reply {
        http_request(self.admin, "POST", "/reload").await
    }

    /// The running config's generation, from `/health`.
    pub async fn generation(&self) -> u64 {
        let health = self.health().await;
        health["config"]["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no config.generation in {health}"))
    }

    /// The address `/health` gives for listener `name`, if it lists one (a listener a reload
    /// added is found here).
    pub async fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        let health = self.health().await;
        health["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == name)?["address"]
            .as_str()?
            .parse()
            .ok()
    }

    /// Polls `GET path` every 50 ms until it answers `status`, for at most `bound`; returns that
    /// reply. Panics with the last reply otherwise.
    pub async fn until_status(&self, path: &str, status: u16, bound: Duration) -> Reply {
        let mut last = None;
        let polled = tokio::time::timeout(bound, async {
            loop {
                let reply = self.get(path).await;
                if reply.status == status {
                    return reply;
                }
                last = Some(reply);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        polled.unwrap_or_else(|_| panic!("GET {path} not {status} within {bound:?}: {last:?}"))
    }

    /// `/health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let reply = self.get("/health").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("/health is not JSON ({e}): {}", reply.body))
    }

    /// The value of one series of `/metrics` (see [`metric_value`]); panics when none matches.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics.render();
        metric_value(&text, name, labels)
            .unwrap_or_else(|| panic!("no series {name} with {labels:?} in /metrics:\n{text}"))
    }

    /// Whether `run` has returned.
    pub fn is_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits (within [`super::WAIT`]) for `run` to return after a drain started elsewhere.
    pub async fn stopped(&mut self) -> Stopped {
        let task = self.task.take().expect("stopped() once");
        within("Sidecar::run to return", task)
            .await
            .expect("run task panicked")
            .expect("run failed")
    }
}

/// A `[backend.check]` table that turns in well under a second: rise 2, fall 2, probes 200 ms
/// apart (100 ms while a server changes state), 300 ms each; `extra` adds kind-specific keys.
pub fn fast_check(kind: &str, extra: &str) -> String {
    format!(
        "[backend.check]\nkind = \"{kind}\"\ninterval = \"200ms\"\nfast_interval = \"100ms\"\n\
         timeout = \"300ms\"\nrise = 2\nfall = 2\n{extra}\n"
    )
}

/// A config file that a test rewrites as Nomad's template and consul-template do: written whole
/// to a temporary file and renamed over the old one, so a reader never sees half a file.
pub struct ConfigFile {
    /// The file, as given to `--config`.
    pub path: PathBuf,
}

impl ConfigFile {
    /// A fresh file holding `text`; `tag` keeps tests apart.
    pub fn new(tag: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!(
            "brokerside-reload-{tag}-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let file = ConfigFile {
            path: dir.join("brokerside.toml"),
        };
        file.write(text);
        file
    }

    /// Replaces the content with `text`, by rename.
    pub fn write(&self, text: &str) {
        let next = self.path.with_extension("toml.next");
        std::fs::write(&next, text).expect("write the next config");
        std::fs::rename(&next, &self.path).expect("rename it over the config");
    }
}
