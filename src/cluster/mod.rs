//! The cluster guard: compares the expected members (this node and the peers of one discovery
//! source) with the broker's own view of its cluster (EMQX `GET /api/v5/nodes`, RabbitMQ
//! `GET /api/nodes`), and publishes the `/health` `clustering` block and the
//! `brokerside_cluster_partitioned` gauge. A node that sees fewer running members than a quorum
//! of the expected ones is partitioned: with `fail_health_when_partitioned`, readiness turns it
//! away from the load balancer so clients go to the majority side.
//!
//! When the API cannot be asked, the last verdict stands for [`ASKS_KEPT_ON_ERROR`] asks, then
//! the guard reports "not partitioned" with nobody connected: an API that does not answer is no
//! evidence of a split (a broker that is down fails its own health check), and failing closed
//! would let one wrong API secret, shared by every node's config, take the whole cluster out of
//! the load balancer.

mod api;
mod quorum;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::config::{ClusterConfig, ClusterMembers};
use crate::discovery::{PeerSet, Source};
use crate::metrics::Metrics;
use crate::task::Task;

pub use api::{ApiError, MAX_BODY, ask};
pub use quorum::{
    ASKS_KEPT_ON_ERROR, Clustering, Guard, Member, assess, expected, quorum, unknown,
};

/// Starts the guard task, or `None` when `config.members` is `none`. It asks every
/// `config.interval`, and at once when `source`'s peers change; each verdict is stored in `out`
/// and the partitioned gauge of `metrics`. Without a source, this node is the only expected
/// member and is never partitioned. The task runs until the returned [`Task`] is dropped.
pub fn spawn_guard(
    config: ClusterConfig,
    current_node: String,
    source: Option<Arc<Source>>,
    out: Arc<ArcSwap<Clustering>>,
    metrics: Metrics,
) -> Option<Task> {
    let members = match config.members {
        ClusterMembers::None => return None,
        ClusterMembers::Emqx => "emqx",
        ClusterMembers::Rabbitmq => "rabbitmq",
    };
    let span = tracing::info_span!("cluster", members, url = %config.url);
    Some(Task::spawn(
        run(config, current_node, source, out, metrics).instrument(span),
    ))
}

async fn run(
    config: ClusterConfig,
    current_node: String,
    source: Option<Arc<Source>>,
    out: Arc<ArcSwap<Clustering>>,
    metrics: Metrics,
) {
    if source.is_none() {
        tracing::warn!(
            "no discovery source for the cluster guard: this node is the only expected member"
        );
    }
    let mut guard = Guard::new(&current_node);
    let mut changes = source.as_ref().map(|s| s.subscribe());
    let mut ticker = tokio::time::interval(config.interval);
    // A slow API must not be asked in a burst to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut logged = Logged::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = peers_changed(&mut changes) => ticker.reset(),
        }
        let peers = source
            .as_ref()
            .map_or_else(|| Arc::new(PeerSet::default()), |s| s.peers());
        let expected = expected(guard.current_node(), &peers);
        let verdict = match ask(&config).await {
            Ok(members) => {
                logged.answered();
                guard.answered(&expected, &members)
            }
            Err(error) => {
                let verdict = guard.failed(&expected);
                logged.failed(&error, guard.failures());
                verdict
            }
        };
        metrics
            .cluster_partitioned()
            .set(i64::from(verdict.partitioned));
        logged.verdict(&verdict);
        out.store(Arc::new(verdict));
    }
}

/// Resolves when the source's peers change; never, without a source or once it is gone.
async fn peers_changed(changes: &mut Option<watch::Receiver<u64>>) {
    let gone = match changes.as_mut() {
        Some(receiver) => receiver.changed().await.is_err(),
        None => false,
    };
    if gone || changes.is_none() {
        *changes = None;
        std::future::pending::<()>().await;
    }
}

/// What has been logged, so that a steady state logs once and changes log when they happen.
#[derive(Default)]
struct Logged {
    partitioned: Option<bool>,
    error: Option<String>,
}

impl Logged {
    fn answered(&mut self) {
        if let Some(error) = self.error.take() {
            tracing::info!(previous_error = %error, "the broker's API answers again");
        }
    }

    fn failed(&mut self, error: &ApiError, failures: u32) {
        let text = error.to_string();
        if self.error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "cannot ask the broker for its cluster members");
        }
        if failures == ASKS_KEPT_ON_ERROR + 1 {
            tracing::warn!(
                failures,
                "the broker's API keeps failing: reporting not partitioned until it answers"
            );
        }
        self.error = Some(text);
    }

    fn verdict(&mut self, verdict: &Clustering) {
        if self.partitioned == Some(verdict.partitioned) {
            return;
        }
        let connected = verdict.connected_nodes.join(",");
        if verdict.partitioned {
            tracing::warn!(
                running = verdict.node_count,
                quorum = verdict.quorum,
                expected = verdict.expected_nodes,
                %connected,
                "partitioned: the broker sees fewer members than a quorum"
            );
        } else {
            tracing::info!(
                running = verdict.node_count,
                quorum = verdict.quorum,
                expected = verdict.expected_nodes,
                %connected,
                "not partitioned"
            );
        }
        self.partitioned = Some(verdict.partitioned);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{FakeBroker, config, peer_set};
    use super::*;

    const ME: &str = "emqx@10.0.0.1";
    const B: &str = "emqx@10.0.0.2";
    const C: &str = "emqx@10.0.0.3";

    fn source_with(nodes: &[&str]) -> Arc<Source> {
        let source = Arc::new(Source::new("emqx"));
        publish(&source, nodes);
        source
    }

    fn publish(source: &Source, nodes: &[&str]) {
        source.publish(peer_set(nodes));
    }

    struct Running {
        out: Arc<ArcSwap<Clustering>>,
        metrics: Metrics,
        task: Task,
    }

    fn start(config: ClusterConfig, source: Option<Arc<Source>>) -> Running {
        let out = Arc::new(ArcSwap::from_pointee(Clustering::default()));
        let metrics = Metrics::new();
        let task = spawn_guard(config, ME.to_string(), source, out.clone(), metrics.clone())
            .expect("a guard for emqx/rabbitmq");
        Running { out, metrics, task }
    }

    impl Running {
        /// Waits (a few intervals at most) for a published view that satisfies `wanted`.
        async fn until(&self, what: &str, wanted: impl Fn(&Clustering) -> bool) -> Arc<Clustering> {
            for _ in 0..100 {
                let now = self.out.load_full();
                if now.enabled && wanted(&now) {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("never {what}: last {:?}", self.out.load());
        }

        fn gauge(&self) -> i64 {
            self.metrics.cluster_partitioned().get()
        }
    }

    #[test]
    fn none_starts_nothing() {
        let out = Arc::new(ArcSwap::from_pointee(Clustering::default()));
        let config = config(ClusterMembers::None, "http://127.0.0.1:1/");
        let guard = spawn_guard(config, ME.into(), None, out, Metrics::new());
        assert!(guard.is_none());
    }

    #[tokio::test]
    async fn emqx_partition_comes_and_goes() {
        let broker = FakeBroker::emqx(&[ME, B, C], &[]).await;
        let guard = start(broker.config(), Some(source_with(&[B, C])));

        let view = guard.until("3 of 3", |c| c.node_count == 3).await;
        assert_eq!(
            *view,
            Clustering {
                enabled: true,
                current_node: ME.into(),
                connected_nodes: vec![ME.into(), B.into(), C.into()],
                node_count: 3,
                expected_nodes: 3,
                quorum: 2,
                partitioned: false,
            }
        );
        assert_eq!(guard.gauge(), 0);

        broker.set_nodes(&[ME], &[B, C]);
        let view = guard.until("partitioned", |c| c.partitioned).await;
        assert_eq!(view.connected_nodes, vec![ME.to_string()]);
        assert_eq!(guard.gauge(), 1);

        broker.set_nodes(&[ME, C], &[B]);
        guard.until("2 of 3 healed", |c| !c.partitioned).await;
        assert_eq!(guard.gauge(), 0);

        broker.set_nodes(&[ME, B, C], &[]);
        guard
            .until("3 of 3 again", |c| c.node_count == 3 && !c.partitioned)
            .await;
    }

    #[tokio::test]
    async fn rabbitmq_partition() {
        let broker = FakeBroker::rabbitmq(&["rabbit@a", "rabbit@b", "rabbit@c"], &[]).await;
        let source = source_with(&["rabbit@b", "rabbit@c"]);
        let out = Arc::new(ArcSwap::from_pointee(Clustering::default()));
        let metrics = Metrics::new();
        let task = spawn_guard(
            broker.config(),
            "rabbit@a".into(),
            Some(source),
            out.clone(),
            metrics.clone(),
        )
        .unwrap();
        let guard = Running { out, metrics, task };
        guard.until("3 of 3", |c| c.node_count == 3).await;
        broker.set_nodes(&["rabbit@a"], &["rabbit@b", "rabbit@c"]);
        guard.until("partitioned", |c| c.partitioned).await;
        assert_eq!(guard.gauge(), 1);
    }

    #[tokio::test]
    async fn peers_joining_raise_the_quorum_at_once() {
        let broker = FakeBroker::emqx(&[ME], &[]).await;
        let source = source_with(&[]);
        let mut config = broker.config();
        // Only a change of the peer set can trigger the second ask in time.
        config.interval = Duration::from_secs(3600);
        let guard = start(config, Some(source.clone()));
        let alone = guard.until("alone", |c| c.expected_nodes == 1).await;
        assert!(!alone.partitioned);

        publish(&source, &[B, C]);
        let view = guard.until("3 expected", |c| c.expected_nodes == 3).await;
        assert!(view.partitioned);
        assert_eq!(view.quorum, 2);
    }

    #[tokio::test]
    async fn no_source_means_alone_and_never_partitioned() {
        let broker = FakeBroker::emqx(&[], &[ME, B, C]).await;
        let guard = start(broker.config(), None);
        let view = guard.until("answered", |c| c.expected_nodes == 1).await;
        assert!(!view.partitioned);
        assert_eq!(guard.gauge(), 0);
    }

    #[tokio::test]
    async fn api_errors_report_unknown_without_panicking() {
        let broker = FakeBroker::emqx(&[ME], &[B, C]).await;
        let mut config = broker.config();
        config.password = Some(broker.secret("wrong", "nope"));
        let guard = start(config, Some(source_with(&[B, C])));
        // 401 from the first ask: nothing known, so nothing claimed.
        let view = guard
            .until("unknown", |c| c.expected_nodes == 3 && c.node_count == 0)
            .await;
        assert!(!view.partitioned);
        assert_eq!(guard.gauge(), 0);
        assert!(!guard.task.is_finished());
    }

    #[tokio::test]
    async fn garbage_keeps_the_verdict_then_fails_open() {
        let broker = FakeBroker::emqx(&[ME], &[B, C]).await;
        let guard = start(broker.config(), Some(source_with(&[B, C])));
        guard.until("partitioned", |c| c.partitioned).await;

        broker.answer_raw(b"[{\"garbage\"".to_vec());
        // Kept for ASKS_KEPT_ON_ERROR asks (100 ms apart), then unknown.
        let view = guard.until("unknown", |c| !c.partitioned).await;
        assert_eq!((view.node_count, view.expected_nodes), (0, 3));
        assert_eq!(guard.gauge(), 0);
        assert!(!guard.task.is_finished());

        broker.set_nodes(&[ME], &[B, C]);
        guard.until("partitioned again", |c| c.partitioned).await;
    }
}
