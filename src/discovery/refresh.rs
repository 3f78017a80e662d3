//! The refresh loop: one task per source asks it, names the peers, leaves this node out and
//! publishes the set; on errors it keeps the last good set for `keep_last_good`, then publishes
//! an empty one. [`spawn_refresh`] starts the task a source's config describes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::naming::{SelfNode, peers};
use super::peers_file::write_peers_file;
use super::{ConsulSource, Discover, DnsSource, Peer, PeerSet, Source, StaticSource};
use crate::config::{DiscoveryConfig, DiscoveryKind, PeersFileFormat};
use crate::metrics::{DiscoveryMetrics, Metrics};
use crate::task::Task;

/// Starts the refresh task of the source `config` describes, publishing into `source` (which
/// outlives the task: a reload that changes the source's settings restarts the task, and whoever
/// follows `source` keeps following it). `this` is left out of the peers.
pub fn spawn_refresh(
    config: &DiscoveryConfig,
    source: Arc<Source>,
    this: SelfNode,
    metrics: &Metrics,
) -> Task {
    match &config.kind {
        DiscoveryKind::Dns(dns) => spawn_source(
            DnsSource::new(dns, config.interval, config.max_interval),
            source,
            config,
            this,
            metrics,
        ),
        DiscoveryKind::Consul(consul) => {
            spawn_source(ConsulSource::new(consul), source, config, this, metrics)
        }
        DiscoveryKind::Static(list) => {
            spawn_source(StaticSource::new(list), source, config, this, metrics)
        }
    }
}

/// Starts the refresh task of one source: `discover` asked in a loop, its answers named with
/// `config.node_name`, `this` left out, published on `source`, counted in `metrics` and written
/// to `config.peers_file`. Runs until the returned [`Task`] is dropped (a static source asks
/// once and then waits).
pub fn spawn_source<D: Discover + 'static>(
    discover: D,
    source: Arc<Source>,
    config: &DiscoveryConfig,
    this: SelfNode,
    metrics: &Metrics,
) -> Task {
    let refresh = Refresh {
        source,
        template: config.node_name.clone(),
        this,
        keep_last_good: config.keep_last_good,
        peers_file: config
            .peers_file
            .clone()
            .map(|path| (path, config.peers_file_format)),
        metrics: metrics.discovery(&config.name),
    };
    Task::spawn(refresh.run(discover))
}

/// One source's refresh task.
struct Refresh {
    source: Arc<Source>,
    template: String,
    this: SelfNode,
    keep_last_good: Duration,
    peers_file: Option<(PathBuf, PeersFileFormat)>,
    metrics: DiscoveryMetrics,
}

/// The last successful refresh.
struct LastGood {
    at: Instant,
    when: SystemTime,
    peers: Vec<Peer>,
}

impl Refresh {
    async fn run<D: Discover>(self, mut discover: D) {
        let name = self.source.name.clone();
        let mut last_good: Option<LastGood> = None;
        let mut expired = false;
        // What the peers file holds; `None` until the first write succeeds.
        let mut written: Option<Vec<Peer>> = None;
        loop {
            let pause = match discover.discover().await {
                Ok(found) => {
                    let peers = peers(&found, &self.template, &self.this);
                    let when = SystemTime::now();
                    if expired {
                        tracing::info!(source = %name, peers = peers.len(), "discovery recovered");
                    }
                    expired = false;
                    self.publish(peers.clone(), Some(when), None, &mut written)
                        .await;
                    last_good = Some(LastGood {
                        at: Instant::now(),
                        when,
                        peers,
                    });
                    match discover.after_success(&found) {
                        Some(pause) => pause,
                        // Nothing to refresh (a static list); the task stays until dropped, since
                        // it holds the source's series in `/metrics`.
                        None => std::future::pending().await,
                    }
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    let error = e.to_string();
                    tracing::warn!(source = %name, %error, "discovery refresh failed");
                    let (peers, when) = match &last_good {
                        Some(good) if good.at.elapsed() < self.keep_last_good => {
                            (good.peers.clone(), Some(good.when))
                        }
                        Some(good) => {
                            if !expired {
                                tracing::warn!(
                                    source = %name,
                                    keep_last_good = ?self.keep_last_good,
                                    "last good peer set expired; publishing no peers"
                                );
                                expired = true;
                            }
                            (Vec::new(), Some(good.when))
                        }
                        None => (Vec::new(), None),
                    };
                    self.publish(peers, when, Some(error), &mut written).await;
                    discover.after_error()
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Rewrites the peers file when the peers changed, then publishes the set and sets the
    /// gauge: whoever sees the new set finds the file already written.
    async fn publish(
        &self,
        peers: Vec<Peer>,
        refreshed: Option<SystemTime>,
        error: Option<String>,
        written: &mut Option<Vec<Peer>>,
    ) {
        self.metrics
            .peers
            .set(i64::try_from(peers.len()).unwrap_or(i64::MAX));
        // No file before the first answer: an empty seed list written at start-up would tell a
        // booting broker that it is alone.
        let write = refreshed.is_some() && written.as_ref() != Some(&peers);
        // Published before the file is written, so that once the file holds a set, `/peers` and
        // the backends' peer syncs hold it too.
        self.source.publish(PeerSet {
            peers: peers.clone(),
            refreshed,
            error,
        });
        let Some((path, format)) = self.peers_file.clone().filter(|_| write) else {
            return;
        };
        let name = self.source.name.clone();
        let to_write = peers.clone();
        let result = tokio::task::spawn_blocking(move || {
            write_peers_file(&path, format, &name, &to_write).map_err(|e| (path, e))
        })
        .await;
        match result {
            Ok(Ok(())) => *written = Some(peers),
            // Left as it was: the next refresh tries again.
            Ok(Err((path, e))) => tracing::warn!(
                source = %self.source.name,
                path = %path.display(),
                error = %e,
                "could not write the peers file"
            ),
            Err(e) => {
                tracing::warn!(source = %self.source.name, error = %e, "peers file writer failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{ConsulDiscovery, DnsDiscovery, DnsRecord};
    use crate::discovery::test_consul::TestConsul;
    use crate::discovery::test_dns::{Mode, TestDns};

    fn config(name: &str, kind: DiscoveryKind) -> DiscoveryConfig {
        DiscoveryConfig {
            name: name.into(),
            kind,
            node_name: "emqx@{ip}".into(),
            interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(200),
            keep_last_good: Duration::from_secs(60),
            peers_file: None,
            peers_file_format: PeersFileFormat::Lines,
        }
    }

    fn dns_config(dns: &TestDns, query: &str) -> DiscoveryConfig {
        config(
            "emqx",
            DiscoveryKind::Dns(DnsDiscovery {
                record: DnsRecord::Srv,
                query: query.into(),
                nameservers: vec![dns.addr],
                port: None,
            }),
        )
    }

    fn spawn_dns(
        config: &DiscoveryConfig,
        this: SelfNode,
        metrics: &Metrics,
    ) -> (Arc<Source>, Task) {
        let DiscoveryKind::Dns(dns) = &config.kind else {
            unreachable!()
        };
        let source = Arc::new(Source::new(&config.name));
        let dns = DnsSource::new(dns, config.interval, config.max_interval)
            .with_timeout(Duration::from_millis(200));
        let task = spawn_source(dns, Arc::clone(&source), config, this, metrics);
        (source, task)
    }

    fn nodes(set: &PeerSet) -> Vec<&str> {
        set.peers.iter().map(|p| p.node.as_str()).collect()
    }

    /// Waits up to `within` for the source's set to satisfy `done`.
    async fn until(
        source: &Source,
        within: Duration,
        done: impl Fn(&PeerSet) -> bool,
    ) -> Arc<PeerSet> {
        let deadline = Instant::now() + within;
        loop {
            let set = source.peers();
            if done(&set) {
                return set;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting; the set is {set:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_set_follows_the_records_and_the_peers_file_follows_the_set() {
        let dns = TestDns::start().await;
        dns.set_consul_srv(
            "emqx.service.consul",
            &[("10.0.0.5", 1883), ("10.0.0.6", 1883), ("10.0.0.7", 1883)],
        );
        let dir = std::env::temp_dir().join(format!("brokerside-refresh-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("seeds");
        let mut config = dns_config(&dns, "emqx.service.consul");
        config.peers_file = Some(file.clone());
        let metrics = Metrics::new();
        // This node is 10.0.0.5: left out of its own peers.
        let this = SelfNode {
            name: None,
            ip: Some("10.0.0.5".parse().unwrap()),
        };
        let (source, task) = spawn_dns(&config, this, &metrics);
        let mut changes = source.subscribe();

        let set = until(&source, Duration::from_secs(3), |s| s.refreshed.is_some()).await;
        assert_eq!(nodes(&set), ["emqx@10.0.0.6", "emqx@10.0.0.7"]);
        assert_eq!(set.error, None);
        assert_eq!(set.peers[0].port, 1883);
        assert_eq!(metrics.discovery("emqx").peers.get(), 2);
        // The file is written after the set is published.
        let expected = "emqx@10.0.0.6\nemqx@10.0.0.7\n";
        assert_eq!(until_file(&file, expected).await, expected);

        // Records change: the set follows within the interval (TTL 1 s clamped to 200 ms).
        let changed = Instant::now();
        dns.set_consul_srv("emqx.service.consul", &[("10.0.0.8", 1884)]);
        tokio::time::timeout(Duration::from_secs(3), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "{:?}",
            changed.elapsed()
        );
        let set = until(&source, Duration::from_secs(1), |s| s.peers.len() == 1).await;
        assert_eq!(nodes(&set), ["emqx@10.0.0.8"]);
        assert_eq!(set.peers[0].port, 1884);
        let file_now = until_file(&file, "emqx@10.0.0.8\n").await;
        assert_eq!(file_now, "emqx@10.0.0.8\n");

        // NXDOMAIN: no peers, and no error.
        dns.set(
            "emqx.service.consul",
            hickory_resolver::proto::rr::RecordType::SRV,
            vec![],
        );
        dns.set_a("0a000008.addr.dc1.consul", &[]);
        let set = until(&source, Duration::from_secs(3), |s| s.peers.is_empty()).await;
        assert_eq!(set.error, None);
        assert_eq!(metrics.discovery("emqx").errors.get(), 0);
        assert_eq!(until_file(&file, "").await, "");
        drop(task);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn until_file(path: &std::path::Path, expected: &str) -> String {
        for _ in 0..100 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text == expected {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_set_until_it_expires() {
        let mut dns = TestDns::start().await;
        dns.set_consul_srv("emqx.service.consul", &[("10.0.0.6", 1883)]);
        let mut config = dns_config(&dns, "emqx.service.consul");
        config.keep_last_good = Duration::from_millis(2500);
        let metrics = Metrics::new();
        let (source, task) = spawn_dns(&config, SelfNode::default(), &metrics);
        let good = until(&source, Duration::from_secs(3), |s| s.refreshed.is_some()).await;
        assert_eq!(nodes(&good), ["emqx@10.0.0.6"]);
        let metrics_of_source = metrics.discovery("emqx");
        let (gauge, errors) = (&metrics_of_source.peers, &metrics_of_source.errors);

        // SERVFAIL: counted, the last good set is kept with the error.
        dns.set_mode(Mode::ServFail);
        let kept = until(&source, Duration::from_secs(3), |s| s.error.is_some()).await;
        assert_eq!(nodes(&kept), ["emqx@10.0.0.6"]);
        assert_eq!(kept.refreshed, good.refreshed);
        assert!(
            kept.error
                .as_deref()
                .unwrap()
                .contains("emqx.service.consul")
        );
        assert!(errors.get() >= 1);
        assert_eq!(gauge.get(), 1);

        // The server goes away: still kept, still counted...
        dns.stop().await;
        let counted = errors.get();
        let stopped = Instant::now();
        while errors.get() <= counted {
            assert!(
                stopped.elapsed() < Duration::from_secs(3),
                "no error counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kept = source.peers();
        assert_eq!(nodes(&kept), ["emqx@10.0.0.6"]);
        assert!(kept.error.is_some());

        // ...until keep_last_good has passed since the last success.
        let expired = until(&source, Duration::from_secs(5), |s| s.peers.is_empty()).await;
        assert!(expired.error.is_some());
        assert_eq!(expired.refreshed, good.refreshed);
        assert_eq!(gauge.get(), 0);
        drop(task);
    }

    #[tokio::test]
    async fn consul_errors_back_off_without_a_polling_storm() {
        let consul = TestConsul::start().await;
        consul.fail_with(Some(500));
        let config = config(
            "consul",
            DiscoveryKind::Consul(ConsulDiscovery {
                url: consul.url(),
                service: "emqx".into(),
                token: None,
                wait: Duration::from_secs(5),
            }),
        );
        let metrics = Metrics::new();
        let source = Arc::new(Source::new("consul"));
        let task = spawn_refresh(&config, Arc::clone(&source), SelfNode::default(), &metrics);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let requests = consul.seen().len();
        // At 0 s, after 0.5-1 s, after another 1-2 s: three at most, never a storm.
        assert!((2..=3).contains(&requests), "{requests} requests in 2.2 s");
        assert_eq!(metrics.discovery("consul").errors.get(), requests as u64);
        let set = source.peers();
        assert!(set.error.as_deref().unwrap().contains("HTTP 500"));

        // Consul comes back: the next retry finds the instances, then the set follows changes.
        consul.fail_with(None);
        consul.set_instances(&[("node-a", "10.0.0.5", 1883)]);
        let set = until(&source, Duration::from_secs(5), |s| s.error.is_none()).await;
        assert_eq!(nodes(&set), ["emqx@10.0.0.5"]);
        consul.set_instances(&[("node-a", "10.0.0.5", 1883), ("node-b", "10.0.0.6", 1883)]);
        let set = until(&source, Duration::from_secs(1), |s| s.peers.len() == 2).await;
        assert_eq!(nodes(&set), ["emqx@10.0.0.5", "emqx@10.0.0.6"]);
        let before = consul.seen().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Nothing changed: the query is held, not repeated.
        assert!(consul.seen().len() <= before + 1);
        drop(task);
    }

    #[tokio::test]
    async fn a_static_list_is_published_once_without_this_node() {
        let peers: Vec<SocketAddr> = ["10.0.0.6:1883", "10.0.0.5:1883", "10.0.0.7:1883"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut config = config("seeds", DiscoveryKind::Static(peers));
        config.node_name = "app@{host}".into();
        let node = crate::config::NodeConfig {
            name: None,
            advertise: Some("10.0.0.7".parse().unwrap()),
        };
        let this = SelfNode::resolve(&node, Some(&config.node_name), None);
        assert_eq!(this.current_node(), "app@10.0.0.7");
        let metrics = Metrics::new();
        let source = Arc::new(Source::new("seeds"));
        let task = spawn_refresh(&config, Arc::clone(&source), this, &metrics);
        let set = until(&source, Duration::from_secs(2), |s| s.refreshed.is_some()).await;
        assert_eq!(nodes(&set), ["app@10.0.0.5", "app@10.0.0.6"]);
        assert!(set.refreshed.is_some());
        assert_eq!(metrics.discovery("seeds").peers.get(), 2);
        // A static source has nothing to refresh: it asks nothing more, and its series stay
        // while its task does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        assert!(
            metrics
                .render()
                .contains("brokerside_peers{source=\"seeds\"} 2")
        );
        drop(task);
    }
}
