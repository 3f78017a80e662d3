//! Failback: once a backend's local server is up again, connections that its backups hold are
//! closed gradually (at most `failback_rate` per second), so their clients reconnect here
//! without a storm. New connections already go local as soon as the local server is up.

use std::sync::Arc;
use std::time::Duration;

use super::registry::Registry;
use crate::backend::Backend;
use crate::metrics::Metrics;

/// How often failback looks; each look closes a tenth of a second's worth of connections.
const TICK: Duration = Duration::from_millis(100);

/// Runs until aborted (the drain stops it: a draining node moves nobody).
pub(crate) async fn run(backends: Vec<Arc<Backend>>, registry: Arc<Registry>, metrics: Metrics) {
    // Fractions of a connection carry over between ticks so low rates still make progress.
    let mut owed = vec![0.0f64; backends.len()];
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for (index, backend) in backends.iter().enumerate() {
            if backend.failback_rate == 0 || !backend.local_up() {
                owed[index] = 0.0;
                continue;
            }
            owed[index] += f64::from(backend.failback_rate) * TICK.as_secs_f64();
            let batch = owed[index].floor() as usize;
            if batch == 0 {
                continue;
            }
            owed[index] -= batch as f64;
            let moved = registry.close(batch, Some(index));
            if moved > 0 {
                metrics.moved_by_failback().inc_by(moved as u64);
                tracing::info!(backend = %backend.name, moved, "failback: closed connections held by backups");
            } else {
                owed[index] = 0.0;
            }
        }
    }
}
