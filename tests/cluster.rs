//! The cluster guard as a load balancer and an operator see it: this node, two peers from a
//! static discovery source, and the broker's own view of its cluster from an in-process HTTP
//! server that answers like EMQX `GET /api/v5/nodes` (basic auth checked). With
//! `fail_health_when_partitioned`, a node whose broker sees fewer than a quorum of the expected
//! members answers 503 "partitioned" on `/haproxy_health` until the cluster heals.

mod support;

use std::time::Duration;

use serde_json::json;
use support::emqx_api::{API_KEY, API_SECRET, EmqxApi};
use support::peers::poll_until;
use support::sidecar::{TestSidecar, fast_check, start_sidecar};
use support::*;

const SETTLE: Duration = Duration::from_secs(10);
const THIS: &str = "emqx@127.0.0.1";
const PEERS: [&str; 2] = ["emqx@127.0.0.2", "emqx@127.0.0.3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_sees_too_few_members_is_taken_out_until_the_cluster_heals() {
    let (user_var, password_var) = (
        "BROKERSIDE_TEST_CLUSTER_API_KEY",
        "BROKERSIDE_TEST_CLUSTER_API_SECRET",
    );
    // SAFETY: the names are this test's alone, and the environment is read in this process only
    // through std's `env` functions, which hold the same lock as `set_var`.
    unsafe {
        std::env::set_var(user_var, API_KEY);
        std::env::set_var(password_var, API_SECRET);
    }
    let broker = start_rumqttd().await;
    let all = [THIS, PEERS[0], PEERS[1]];
    let api = EmqxApi::start(&all).await;
    let backend = fast_check("mqtt", "client_id = \"check-cluster\"");
    let sidecar = start_sidecar(&format!(
        "{}\n\
         [[discovery]]\nname = \"emqx\"\nkind = \"static\"\n\
         peers = [\"127.0.0.2:1883\", \"127.0.0.3:1883\"]\nnode_name = \"emqx@{{ip}}\"\n\n\
         [node]\nname = \"{THIS}\"\n\n\
         [cluster]\nmembers = \"emqx\"\nurl = \"{}\"\n\
         username_env = \"{user_var}\"\npassword_env = \"{password_var}\"\n\
         interval = \"200ms\"\nfail_health_when_partitioned = true\n",
        relay_config(&[broker.mqtt], "", &backend),
        api.url(),
    ));

    // All three running: in quorum, and ready once the local broker passes its checks.
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    let healthy = json!({
        "enabled": true,
        "current_node": THIS,
        "connected_nodes": all,
        "node_count": 3,
        "expected_nodes": 3,
        "quorum": 2,
        "partitioned": false,
    });
    until_clustering(&sidecar, &healthy).await;
    assert_eq!(
        sidecar.scrape("brokerside_cluster_partitioned", &[]).await,
        Some(0.0)
    );

    // The broker sees only itself: partitioned, and out of the load balancer.
    api.set_nodes(&[THIS], &PEERS);
    let out = sidecar.until_status("/haproxy_health", 503, SETTLE).await;
    assert!(out.body.starts_with("partitioned"), "{out:?}");
    assert_eq!(sidecar.get("/readyz").await.body, out.body);
    let clustering = sidecar.health().await["clustering"].clone();
    assert_eq!(
        clustering,
        json!({
            "enabled": true,
            "current_node": THIS,
            "connected_nodes": [THIS],
            "node_count": 1,
            "expected_nodes": 3,
            "quorum": 2,
            "partitioned": true,
        })
    );
    assert_eq!(
        sidecar.scrape("brokerside_cluster_partitioned", &[]).await,
        Some(1.0)
    );

    // The cluster heals.
    api.set_nodes(&all, &[]);
    sidecar.until_status("/haproxy_health", 200, SETTLE).await;
    until_clustering(&sidecar, &healthy).await;
    assert_eq!(
        sidecar.scrape("brokerside_cluster_partitioned", &[]).await,
        Some(0.0)
    );

    let (answered, refused) = api.requests();
    assert!(answered >= 3, "the API answered {answered} requests");
    assert_eq!(refused, 0, "requests without the API key and secret");
}

/// Polls `/health` until its `clustering` block equals `want`, for at most [`SETTLE`].
async fn until_clustering(sidecar: &TestSidecar, want: &serde_json::Value) {
    let clustering = || async { sidecar.health().await["clustering"].clone() };
    let what = format!("the clustering block to become {want:#}");
    poll_until(SETTLE, &what, clustering, |block| block == want).await;
}
