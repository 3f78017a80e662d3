//! Certificate rotation: each TLS listener's files are read on an interval (`[listener.tls]
//! watch`), and when their content differs from the material in use, the material is loaded
//! again and swapped in for new handshakes. Content is compared, not modification times: Vault,
//! cert-manager and Nomad templates replace files by rename, and an unchanged rewrite must not
//! count as a rotation. A refused replacement (corrupt, mismatched, expired) is logged and
//! counted once; the old material stays until the files change again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::{Terminator, material};

/// Runs until dropped (the controller drops it when a reload changes or removes the listener's
/// TLS settings).
pub async fn run(terminator: Arc<Terminator>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is at once; the material in use was just read.
    ticker.tick().await;
    let listener = terminator.listener.clone();
    let mut refused: Option<String> = None;
    loop {
        ticker.tick().await;
        // Off the control thread, which also answers the load balancer's health checks.
        let config = terminator.config.clone();
        let digest = tokio::task::spawn_blocking(move || material::digest_files(&config)).await;
        // A file missing for a moment (mid-rename) is looked at again at the next tick.
        let Ok(Ok(digest)) = digest else { continue };
        if digest == terminator.material().digest {
            refused = None;
            continue;
        }
        if refused.as_deref() == Some(digest.as_str()) {
            continue;
        }
        let config = terminator.config.clone();
        let path = format!("listener `{listener}` tls");
        let loaded = tokio::task::spawn_blocking(move || material::load(&config, &path)).await;
        match loaded {
            Ok(Ok((material, warnings))) => {
                for warning in warnings {
                    tracing::warn!(listener = %listener, field = %warning.path, "{}", warning.message);
                }
                let serials: Vec<&str> = material
                    .certificates
                    .iter()
                    .map(|c| c.serial.as_str())
                    .collect();
                tracing::info!(listener = %listener, serials = ?serials, "TLS files changed: new handshakes use the new material");
                terminator.install(Arc::new(material));
                terminator.metrics.reloaded(true);
                refused = None;
            }
            Ok(Err(problems)) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::warn!(listener = %listener, problems = %problems.join("; "), "TLS files changed but are refused: the old material stays");
                terminator.metrics.reloaded(false);
                refused = Some(digest);
            }
            Err(_) => {}
        }
    }
}
