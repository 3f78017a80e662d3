//! Open connections by task, so that the drain and a reload that removes a listener can close
//! them at a measured pace, and failback can move clients off backup servers; and their count,
//! which the drain waits on. Costs one map entry per connection and nothing on the relay path:
//! closing a connection aborts its task, which drops (and so closes) both sockets.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, Id};
use tokio::time::Instant;

use crate::backend::{BackendId, Lease, Role};
use crate::runtime::ListenerId;

/// Shards keep the lock that accept and close take short and rarely shared.
const SHARDS: usize = 64;

/// Kept to three words, since every open connection has one.
struct Entry {
    handle: AbortHandle,
    /// The listener that accepted the connection.
    listener: ListenerId,
    /// The backend whose backup server this connection uses, or [`NOT_ON_BACKUP`].
    on_backup: u32,
    /// The server the connection is relayed to, counted on it while the entry lives. Kept here
    /// rather than in the connection's task, whose size is guarded: however the entry goes (the
    /// task ended, or a close took it), the count goes with it.
    server: Option<Lease>,
}

/// `Entry::on_backup` of a connection to a local server.
const NOT_ON_BACKUP: u32 = u32::MAX;

/// Which open connections a close takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Every one (the drain).
    All,
    /// Those a listener accepted (a reload removed it).
    Listener(ListenerId),
    /// Those on backup servers of a backend (failback).
    OnBackupOf(BackendId),
}

impl Which {
    fn takes(self, entry: &Entry) -> bool {
        match self {
            Which::All => true,
            Which::Listener(id) => entry.listener == id,
            Which::OnBackupOf(backend) => entry.on_backup == backend.0,
        }
    }
}

/// The open connections of every listener.
pub struct Registry {
    shards: Box<[Mutex<HashMap<Id, Entry>>]>,
    hasher: RandomState,
    open: AtomicUsize,
    all_closed: Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
        }
    }
}

impl Registry {
    fn shard(&self, id: Id) -> &Mutex<HashMap<Id, Entry>> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// Spawns a connection's task on the calling relay thread's runtime, counts it open and
    /// registers it. The task must call [`Registry::closed_current`] as it ends (its slot's drop
    /// does). Its abort handle works from any thread, which is how the drain, a reload and
    /// failback close it.
    pub(crate) fn spawn<F>(&self, task: F, listener: ListenerId)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.open.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::spawn(task).abort_handle();
        let id = handle.id();
        let Ok(mut shard) = self.shard(id).lock() else {
            return;
        };
        // A task that ended before this insert leaves an entry behind; such entries are dropped
        // here, in batches, so the map stays the size of what is really open.
        if shard.len() >= 64 && shard.len().is_power_of_two() {
            shard.retain(|_, entry| !entry.handle.is_finished());
        }
        shard.insert(
            id,
            Entry {
                handle,
                listener,
                on_backup: NOT_ON_BACKUP,
                server: None,
            },
        );
    }

    /// Counts the calling task's connection closed and forgets it (called as it ends).
    pub(crate) fn closed_current(&self) {
        if let Some(id) = tokio::task::try_id()
            && let Ok(mut shard) = self.shard(id).lock()
        {
            shard.remove(&id);
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Records the server of `backend` that the calling task's connection is relayed to: it is
    /// counted on that server until the connection ends, and failback finds it if the server is
    /// a backup.
    pub(crate) fn relaying_current(&self, backend: BackendId, role: Role, server: Lease) {
        if let Some(id) = tokio::task::try_id()
            && let Ok(mut shard) = self.shard(id).lock()
            && let Some(entry) = shard.get_mut(&id)
        {
            if role == Role::Backup {
                entry.on_backup = backend.0;
            }
            entry.server = Some(server);
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes up to `count` of the connections `which` takes, starting from a random shard so
    /// that no group of clients is always first. Returns how many it closed.
    pub fn close(&self, count: usize, which: Which) -> usize {
        let start = fastrand::usize(..SHARDS);
        let mut closed = 0;
        for i in 0..SHARDS {
            if closed == count {
                break;
            }
            let Ok(mut shard) = self.shards[(start + i) % SHARDS].lock() else {
                continue;
            };
            let chosen: Vec<Id> = shard
                .iter()
                .filter(|(_, entry)| which.takes(entry) && !entry.handle.is_finished())
                .map(|(id, _)| *id)
                .take(count - closed)
                .collect();
            for id in chosen {
                if let Some(entry) = shard.remove(&id) {
                    entry.handle.abort();
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Connections `which` takes that are still open.
    pub fn count(&self, which: Which) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok())
            .map(|shard| {
                shard
                    .values()
                    .filter(|entry| which.takes(entry) && !entry.handle.is_finished())
                    .count()
            })
            .sum()
    }

    /// Closes the connections `which` takes at most `rate` per second, with jitter, until none
    /// is left or `deadline` passes; then closes the rest at once. Each close is counted in
    /// `counted` as it happens. Returns (closed at the pace, closed at the deadline).
    pub async fn close_paced(
        &self,
        which: Which,
        rate: u32,
        deadline: Instant,
        counted: &IntCounter,
    ) -> (usize, usize) {
        let pacer = ClosePacer::new(rate);
        let mut paced = 0;
        while self.count(which) > 0 && Instant::now() < deadline {
            let (wait, batch) = pacer.step(fastrand::f64());
            let closed = self.close(batch, which);
            counted.inc_by(closed as u64);
            paced += closed;
            tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
        }
        let cut = self.close(usize::MAX, which);
        counted.inc_by(cut as u64);
        (paced, cut)
    }
}

/// Paces the closing of connections: each step says how many to close and how long to wait
/// before the next step. Waits are stretched by up to half at random, so closes never come in
/// lockstep and the rate never exceeds `rate`.
#[derive(Debug, Clone, Copy)]
pub struct ClosePacer {
    period: Duration,
    batch: usize,
}

/// Shortest wait between steps: below this timers cost more than they pace.
const MIN_PERIOD: Duration = Duration::from_millis(10);

impl ClosePacer {
    /// A pacer for `rate` connections per second (at least 1).
    pub fn new(rate: u32) -> ClosePacer {
        let rate = rate.max(1);
        let period = Duration::from_secs_f64(1.0 / f64::from(rate)).max(MIN_PERIOD);
        let batch = (period.as_secs_f64() * f64::from(rate)).floor().max(1.0) as usize;
        ClosePacer { period, batch }
    }

    /// The next step for a random `jitter` in 0..1: (wait after closing, how many to close).
    pub fn step(&self, jitter: f64) -> (Duration, usize) {
        (
            self.period.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0)),
            self.batch,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Server;
    use crate::health::ServerHealth;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    #[test]
    fn the_pacer_never_exceeds_the_rate() {
        for rate in [1, 7, 100, 500, 5_000, 100_000] {
            let pacer = ClosePacer::new(rate);
            for jitter in [0.0, 0.3, 1.0] {
                let (wait, batch) = pacer.step(jitter);
                assert!(batch >= 1);
                let per_second = batch as f64 / wait.as_secs_f64();
                assert!(
                    per_second <= f64::from(rate) * 1.0001,
                    "rate {rate}: {per_second}/s"
                );
                // and not far below it either: at least two thirds of the rate
                assert!(
                    per_second >= f64::from(rate) / 1.5 * 0.99,
                    "rate {rate}: {per_second}/s"
                );
            }
        }
    }

    /// A backup server whose lease marks a connection as on a backup.
    fn backup_server() -> Arc<Server> {
        let health = Arc::new(ServerHealth::fresh(false));
        let addr = "127.0.0.1:1".parse().expect("address");
        Arc::new(Server::new(
            "b",
            addr,
            Role::Backup,
            health,
            &Metrics::new(),
        ))
    }

    /// A task that stays open until aborted, and counts itself closed when it ends.
    fn held(registry: &Arc<Registry>, listener: u32, backup: Option<(u32, &Arc<Server>)>) {
        let registry_in_task = Arc::clone(registry);
        let backup = backup.map(|(backend, server)| (backend, Arc::clone(server)));
        registry.spawn(
            async move {
                struct Unregister(Arc<Registry>);
                impl Drop for Unregister {
                    fn drop(&mut self) {
                        self.0.closed_current();
                    }
                }
                let _unregister = Unregister(Arc::clone(&registry_in_task));
                tokio::task::yield_now().await;
                if let Some((backend, server)) = backup {
                    registry_in_task.relaying_current(
                        BackendId(backend),
                        Role::Backup,
                        server.lease(),
                    );
                }
                std::future::pending::<()>().await;
            },
            ListenerId(listener),
        );
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn closes_at_most_the_count_asked_and_only_those_chosen() {
        let registry = Arc::new(Registry::default());
        let backup = backup_server();
        for i in 0..10 {
            held(
                &registry,
                u32::from(i >= 7),
                (i < 4).then_some((1, &backup)),
            );
        }
        settle().await;
        assert_eq!(registry.open(), 10);
        // The backup server counts the connections relayed to it, and a close uncounts them.
        assert_eq!(backup.metrics.active.get(), 4);
        let on_backup = Which::OnBackupOf(BackendId(1));
        assert_eq!(registry.count(on_backup), 4);
        assert_eq!(registry.count(Which::OnBackupOf(BackendId(2))), 0);
        assert_eq!(registry.close(3, on_backup), 3);
        assert_eq!(backup.metrics.active.get(), 1);
        assert_eq!(registry.count(on_backup), 1);
        assert_eq!(registry.close(100, on_backup), 1);
        // Listener 1 holds the last three.
        assert_eq!(registry.count(Which::Listener(ListenerId(1))), 3);
        assert_eq!(registry.close(100, Which::Listener(ListenerId(1))), 3);
        assert_eq!(registry.close(2, Which::All), 2);
        settle().await;
        assert_eq!(registry.open(), 1);
        assert_eq!(registry.close(usize::MAX, Which::All), 1);
        settle().await;
        assert_eq!(registry.open(), 0);
        registry.all_closed().await;
    }

    #[tokio::test]
    async fn a_paced_close_keeps_to_its_rate_and_its_deadline() {
        let registry = Arc::new(Registry::default());
        for _ in 0..30 {
            held(&registry, 5, None);
        }
        held(&registry, 6, None);
        settle().await;
        let counted = IntCounter::new("closed", "closed").unwrap();
        let started = Instant::now();
        let (paced, cut) = registry
            .close_paced(
                Which::Listener(ListenerId(5)),
                100,
                started + Duration::from_secs(5),
                &counted,
            )
            .await;
        // 30 at 100/s take about 0.3 s (up to half again with jitter), none cut.
        assert_eq!((paced, cut), (30, 0));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        settle().await;
        assert_eq!(
            registry.open(),
            1,
            "the other listener's connection is untouched"
        );

        for _ in 0..50 {
            held(&registry, 7, None);
        }
        settle().await;
        let (paced, cut) = registry
            .close_paced(
                Which::Listener(ListenerId(7)),
                10,
                Instant::now() + Duration::from_millis(200),
                &counted,
            )
            .await;
        assert!(paced <= 3, "{paced}");
        assert_eq!(paced + cut, 50);
        assert_eq!(counted.get(), 80);
    }
}
