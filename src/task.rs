//! A background task owned by whoever started it: dropping the [`Task`] aborts it. The controller
//! keeps its checkers, refreshes, peer syncs and the cluster guard in maps of these, so removing
//! an entry (on reload, or when a peer leaves) is what stops the work, and nothing is left
//! running unowned. A plain `JoinHandle` detaches its task when dropped.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct Task(JoinHandle<()>);

impl Task {
    /// Spawns `future` on the current runtime.
    pub fn spawn<F>(future: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Task(tokio::spawn(future))
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        let task = Task::spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(task);
        // The aborted future is dropped the next time the runtime gets to it.
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task's future was never dropped");
    }
}
