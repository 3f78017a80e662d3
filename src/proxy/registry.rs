//! Open connections by task, so that the drain can close them at a measured pace and failback
//! can move clients off backup servers. Costs one map entry per connection and nothing on the
//! relay path: closing a connection aborts its task, which drops (and so closes) both sockets.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use tokio::task::{AbortHandle, Id};

/// Shards keep the lock that accept and close take short and rarely shared.
const SHARDS: usize = 64;

/// Kept to two words, since every open connection has one.
struct Entry {
    handle: AbortHandle,
    /// The backend (by index) whose backup server this connection uses, or [`NOT_ON_BACKUP`].
    on_backup: u32,
}

/// `Entry::on_backup` of a connection to a local server.
const NOT_ON_BACKUP: u32 = u32::MAX;

/// The `on_backup` value for backend `index` (indices come from the config: far below u32::MAX).
fn backup_tag(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(NOT_ON_BACKUP - 1)
}

/// The open connections of every listener.
pub struct Registry {
    shards: Box<[Mutex<HashMap<Id, Entry>>]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, id: Id) -> &Mutex<HashMap<Id, Entry>> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// Spawns a connection's task on the calling relay thread's runtime and registers it. Its
    /// abort handle works from any thread, which is how the drain and failback close it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
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
                on_backup: NOT_ON_BACKUP,
            },
        );
    }

    /// Forgets the connection of the calling task (called as it ends).
    pub(crate) fn remove_current(&self) {
        if let Some(id) = tokio::task::try_id()
            && let Ok(mut shard) = self.shard(id).lock()
        {
            shard.remove(&id);
        }
    }

    /// Records that the calling task's connection went to a backup server of backend `backend`.
    pub(crate) fn mark_current_on_backup(&self, backend: usize) {
        if let Some(id) = tokio::task::try_id()
            && let Ok(mut shard) = self.shard(id).lock()
            && let Some(entry) = shard.get_mut(&id)
        {
            entry.on_backup = backup_tag(backend);
        }
    }

    /// Closes up to `count` connections (those on backups of `backend` only, when given),
    /// starting from a random shard so that no group of clients is always first. Returns how
    /// many it closed.
    pub(crate) fn close(&self, count: usize, backend: Option<usize>) -> usize {
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
                .filter(|(_, entry)| backend.is_none_or(|b| entry.on_backup == backup_tag(b)))
                .filter(|(_, entry)| !entry.handle.is_finished())
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

    /// Connections on backups of `backend`.
    #[cfg(test)]
    fn on_backup(&self, backend: usize) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok())
            .map(|shard| {
                shard
                    .values()
                    .filter(|e| e.on_backup == backup_tag(backend) && !e.handle.is_finished())
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A task that stays open until aborted, and unregisters itself when it ends.
    fn held(registry: &Arc<Registry>, backup: Option<usize>) {
        let registry_in_task = Arc::clone(registry);
        registry.spawn(async move {
            struct Unregister(Arc<Registry>);
            impl Drop for Unregister {
                fn drop(&mut self) {
                    self.0.remove_current();
                }
            }
            let _unregister = Unregister(Arc::clone(&registry_in_task));
            tokio::task::yield_now().await;
            if let Some(backend) = backup {
                registry_in_task.mark_current_on_backup(backend);
            }
            std::future::pending::<()>().await;
        });
    }

    fn open(registry: &Registry) -> usize {
        registry
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum()
    }

    #[tokio::test]
    async fn closes_at_most_the_count_asked_and_only_on_backups_when_asked() {
        let registry = Arc::new(Registry::default());
        for i in 0..10 {
            held(&registry, (i < 4).then_some(1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(open(&registry), 10);
        assert_eq!(registry.on_backup(1), 4);
        assert_eq!(registry.close(3, Some(1)), 3);
        assert_eq!(registry.on_backup(1), 1);
        assert_eq!(registry.close(100, Some(1)), 1);
        assert_eq!(registry.close(2, None), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(open(&registry), 4);
        assert_eq!(registry.close(usize::MAX, None), 4);
        assert_eq!(open(&registry), 0);
    }
}
