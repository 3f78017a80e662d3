//! `[runtime] watch_config`: reads the config file on an interval and asks for a reload when its
//! content differs from what runs. Kubernetes updates a mounted ConfigMap in place (by swapping
//! a symlink) and sends no signal, so this is how such a pod learns of a change. The content is
//! compared, not the modification time: a rename keeps the new file's own time, and an
//! unchanged rewrite must not reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::MissedTickBehavior;

use super::reload::sha256;
use super::{Reloader, Runtime};

/// Runs until dropped: every `every`, hashes `file`; a hash that differs from the running
/// config's, and from the last one asked about, asks `reloader` for a reload. So a refused file
/// is asked about once, not at every tick, and a file that cannot be read asks nothing (a reload
/// would only be refused; the next readable content is compared again).
pub(crate) async fn run(
    file: PathBuf,
    every: Duration,
    runtime: Arc<ArcSwap<Runtime>>,
    reloader: Reloader,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is at once; the running config was just read.
    ticker.tick().await;
    let mut asked: Option<String> = None;
    loop {
        ticker.tick().await;
        // Off the control thread, which also answers the load balancer's health checks: a
        // read from a stalled network mount must not stall those.
        let path = file.clone();
        let read = tokio::task::spawn_blocking(move || crate::config::read_file(&path));
        let Ok(Ok(text)) = read.await else {
            continue;
        };
        let hash = sha256(text.as_bytes());
        let running = runtime.load().loaded.sha256.clone();
        if running.as_deref() == Some(hash.as_str()) {
            asked = None;
            continue;
        }
        if asked.as_deref() == Some(hash.as_str()) {
            continue;
        }
        tracing::info!(file = %file.display(), "the config file changed");
        reloader.request("the config file changed");
        asked = Some(hash);
    }
}
