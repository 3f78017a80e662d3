//! Failback: once a backend's local server is up again, connections that its backups hold are
//! closed gradually (at most `failback_rate` per second), so their clients reconnect here
//! without a storm. New connections already go local as soon as the local server is up (or,
//! with `slowstart`, a growing share of them; failback starts once that ramp is over). The
//! backends are read from the current runtime at every tick, so a reload changes the rate and
//! the servers at once; connections are found by the backend's identity, which a reload keeps
//! for the same name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::registry::{Registry, Which};
use crate::backend::BackendId;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// How often failback looks; each look closes a tenth of a second's worth of connections.
const TICK: Duration = Duration::from_millis(100);

/// Runs until aborted (the drain stops it: a draining node moves nobody).
pub async fn run(runtime: Arc<ArcSwap<Runtime>>, registry: Arc<Registry>, metrics: Metrics) {
    // Fractions of a connection carry over between ticks so low rates still make progress.
    let mut owed: HashMap<BackendId, f64> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let runtime = runtime.load();
        owed.retain(|id, _| runtime.backends.iter().any(|b| b.id == *id));
        for backend in &runtime.backends {
            let owed = owed.entry(backend.id).or_default();
            if backend.failback_rate == 0 || !backend.local_up_at_full(Instant::now()) {
                *owed = 0.0;
                continue;
            }
            *owed += f64::from(backend.failback_rate) * TICK.as_secs_f64();
            let batch = owed.floor() as usize;
            if batch == 0 {
                continue;
            }
            *owed -= batch as f64;
            let moved = registry.close(batch, Which::OnBackupOf(backend.id));
            if moved > 0 {
                metrics.moved_by_failback().inc_by(moved as u64);
                tracing::info!(backend = %backend.name, moved, "failback: closed connections held by backups");
            } else {
                *owed = 0.0;
            }
        }
    }
}
