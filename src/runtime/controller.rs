//! The controller: owns the running runtime snapshot, the relay's listeners and every control
//! task (a checker per backend server, a peer sync per backend that takes peers, a refresh per
//! discovery source, the cluster guard, the config-file watcher, failback), and applies a new
//! config by difference, as rathole's `config_watcher.rs` does: what is new starts, what is gone
//! stops, what changed restarts, and the rest runs on with its state. Reloads are answered one at
//! a time, in the order asked; the drain ends them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::reload::{self, Request, Requests};
use super::{ListenerId, ListenerSocket, ReloadError, Reloaded, Reloader, Runtime};
use crate::backend::{PeerList, PeerSettings, spawn_peer_sync};
use crate::cluster::{Clustering, spawn_guard};
use crate::config::{ClusterConfig, ConfigError, DiscoveryConfig};
use crate::discovery::{SelfNode, Source, spawn_refresh};
use crate::health::{CheckTarget, ServerHealth, spawn_checker};
use crate::metrics::Metrics;
use crate::proxy::{BindKey, BoundListener, Proxy, Registry, Which, failback};
use crate::shutdown::{self, DrainControl, Stopped};
use crate::task::Task;

/// A task and the settings it was started with: equal settings keep it running.
struct Owned<S> {
    settings: S,
    _task: Task,
}

/// A server's checker: what it probes, and the health it writes (a new health object, such as
/// one whose checks were turned on, needs a new checker even for the same target).
struct CheckerSettings {
    target: CheckTarget,
    health: Arc<ServerHealth>,
}

impl PartialEq for CheckerSettings {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && Arc::ptr_eq(&self.health, &other.health)
    }
}

/// A backend's peer sync: what it follows, and the objects it reads and writes.
struct PeerSyncSettings {
    peers: PeerSettings,
    source: Arc<Source>,
    list: Arc<PeerList>,
}

impl PartialEq for PeerSyncSettings {
    fn eq(&self, other: &Self) -> bool {
        self.peers == other.peers
            && Arc::ptr_eq(&self.source, &other.source)
            && Arc::ptr_eq(&self.list, &other.list)
    }
}

/// A discovery source's refresh.
struct RefreshSettings {
    config: DiscoveryConfig,
    this: SelfNode,
    source: Arc<Source>,
}

impl PartialEq for RefreshSettings {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.this == other.this
            && Arc::ptr_eq(&self.source, &other.source)
    }
}

/// The cluster guard.
struct GuardSettings {
    config: ClusterConfig,
    current_node: String,
    source: Option<Arc<Source>>,
}

impl PartialEq for GuardSettings {
    fn eq(&self, other: &Self) -> bool {
        let same_source = match (&self.source, &other.source) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.config == other.config && self.current_node == other.current_node && same_source
    }
}

/// How many tasks one apply started, stopped and restarted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Tasks that are new.
    pub started: usize,
    /// Tasks that are gone.
    pub stopped: usize,
    /// Tasks whose settings changed.
    pub restarted: usize,
}

impl Changes {
    fn add(&mut self, other: Changes) {
        self.started += other.started;
        self.stopped += other.stopped;
        self.restarted += other.restarted;
    }
}

/// What a TLS listener's file watcher follows: the listener's terminator (kept by a reload that
/// leaves its TLS settings alone) and the interval.
struct TlsWatch {
    terminator: Arc<crate::tls::Terminator>,
    every: Duration,
}

impl PartialEq for TlsWatch {
    fn eq(&self, other: &TlsWatch) -> bool {
        Arc::ptr_eq(&self.terminator, &other.terminator) && self.every == other.every
    }
}

/// Makes `running` the tasks of `desired`: keeps an entry whose settings are equal, restarts
/// one whose settings differ, starts what is new and drops (so stops) what is not desired.
fn apply<K: Eq + Hash, S: PartialEq>(
    running: &mut HashMap<K, Owned<S>>,
    desired: Vec<(K, S)>,
    mut spawn: impl FnMut(&S) -> Option<Task>,
) -> Changes {
    let mut changes = Changes::default();
    let mut next = HashMap::with_capacity(desired.len());
    for (key, settings) in desired {
        match running.remove(&key) {
            Some(owned) if owned.settings == settings => {
                next.insert(key, owned);
            }
            before => {
                // The old task stops here, before its successor starts.
                let restarted = before.is_some();
                drop(before);
                if let Some(task) = spawn(&settings) {
                    if restarted {
                        changes.restarted += 1;
                    } else {
                        changes.started += 1;
                    }
                    next.insert(
                        key,
                        Owned {
                            settings,
                            _task: task,
                        },
                    );
                } else if restarted {
                    changes.stopped += 1;
                }
            }
        }
    }
    changes.stopped += running.len();
    *running = next;
    changes
}

/// The running sidecar's moving parts.
pub struct Controller {
    runtime: Arc<ArcSwap<Runtime>>,
    proxy: Proxy,
    registry: Arc<Registry>,
    metrics: Metrics,
    clustering: Arc<ArcSwap<Clustering>>,
    drain: Arc<DrainControl>,
    reloader: Reloader,
    /// The `--config` file, if the sidecar runs one.
    file: Option<PathBuf>,
    checkers: HashMap<(String, SocketAddr), Owned<CheckerSettings>>,
    peer_syncs: HashMap<String, Owned<PeerSyncSettings>>,
    refreshes: HashMap<String, Owned<RefreshSettings>>,
    guard: HashMap<(), Owned<GuardSettings>>,
    watcher: HashMap<(), Owned<Duration>>,
    tls_watchers: HashMap<String, Owned<TlsWatch>>,
    /// Paced closes of the connections of listeners that reloads removed.
    closing: Vec<Task>,
    failback: Option<Task>,
}

/// What the controller is built from.
pub struct Parts {
    /// The runtime snapshot, already holding the first runtime.
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The relay, started.
    pub proxy: Proxy,
    /// The open connections.
    pub registry: Arc<Registry>,
    /// The metrics.
    pub metrics: Metrics,
    /// Where the cluster guard writes its view.
    pub clustering: Arc<ArcSwap<Clustering>>,
    /// The drain switch.
    pub drain: Arc<DrainControl>,
    /// The handle that asks for reloads (the watcher uses it).
    pub reloader: Reloader,
    /// The `--config` file, if any.
    pub file: Option<PathBuf>,
}

impl Controller {
    /// A controller with the first runtime's listeners accepting (`bound`, bound beforehand)
    /// and its control tasks running.
    pub fn start(parts: Parts, bound: Vec<BoundListener>) -> Controller {
        let mut controller = Controller {
            runtime: parts.runtime,
            proxy: parts.proxy,
            registry: parts.registry,
            metrics: parts.metrics,
            clustering: parts.clustering,
            drain: parts.drain,
            reloader: parts.reloader,
            file: parts.file,
            checkers: HashMap::new(),
            peer_syncs: HashMap::new(),
            refreshes: HashMap::new(),
            guard: HashMap::new(),
            watcher: HashMap::new(),
            tls_watchers: HashMap::new(),
            closing: Vec::new(),
            failback: None,
        };
        let runtime = controller.runtime.load_full();
        for listener in bound {
            if let Some(running) = runtime.listener(listener.id) {
                controller.proxy.accept(listener, running.metrics.clone());
            }
        }
        controller.apply_tasks(&runtime);
        controller.failback = Some(Task::spawn(failback::run(
            Arc::clone(&controller.runtime),
            Arc::clone(&controller.registry),
            controller.metrics.clone(),
        )));
        controller
    }

    /// Answers reload requests until the drain starts, then drains (answering requests that
    /// still come with [`ReloadError::Draining`]) and returns how the drain ended.
    pub(crate) async fn run(mut self, mut requests: Requests) -> Stopped {
        let drain = Arc::clone(&self.drain);
        loop {
            tokio::select! {
                biased;
                () = drain.started() => break,
                Some(request) = requests.recv() => self.answer(request).await,
            }
        }
        let Controller {
            runtime,
            proxy,
            registry,
            metrics,
            checkers,
            peer_syncs,
            refreshes,
            guard,
            watcher,
            closing,
            failback,
            ..
        } = self;
        // Failback, the file watcher and the paced closes of removed listeners end here (a
        // draining node moves nobody back: its clients are about to leave anyway); checks,
        // discovery and the guard run on, so that `/health` keeps telling the truth.
        drop((watcher, closing, failback));
        let _still_running = (checkers, peer_syncs, refreshes, guard);
        let config = runtime.load().config.drain.clone();
        let sequence = shutdown::drain(proxy, &registry, &drain, &config, &metrics);
        tokio::pin!(sequence);
        loop {
            tokio::select! {
                stopped = &mut sequence => return stopped,
                Some(request) = requests.recv() => {
                    tracing::info!(why = %request.why, "reload ignored: the node is draining");
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Err(ReloadError::Draining));
                    }
                }
            }
        }
    }

    async fn answer(&mut self, request: Request) {
        let outcome = self.reload(&request.why).await;
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }

    /// Reads the config file and applies it, or refuses it whole.
    pub async fn reload(&mut self, why: &str) -> Result<Reloaded, ReloadError> {
        if self.drain.is_draining() {
            tracing::info!(why, "reload ignored: the node is draining");
            return Err(ReloadError::Draining);
        }
        let Some(file) = self.file.clone() else {
            tracing::warn!(why, "{}", ReloadError::NoFile);
            return Err(ReloadError::NoFile);
        };
        let started = Instant::now();
        let current = self.runtime.load_full();
        let outcome = match reload::load(&file, Some(&current.config)) {
            Ok(candidate) => self.apply(candidate, &current).await,
            Err(problems) => Err(problems),
        };
        match outcome {
            Ok((reloaded, changes)) => {
                self.metrics.config_loaded(true);
                tracing::info!(
                    why,
                    generation = reloaded.generation,
                    sha256 = reloaded.sha256.as_deref().unwrap_or(""),
                    tasks_started = changes.started,
                    tasks_stopped = changes.stopped,
                    tasks_restarted = changes.restarted,
                    took = ?started.elapsed(),
                    "config reloaded"
                );
                Ok(reloaded)
            }
            Err(problems) => {
                self.metrics.config_loaded(false);
                for problem in &problems {
                    tracing::warn!(why, file = %file.display(), %problem, "config reload refused; the running config stays");
                }
                Err(ReloadError::Refused(problems))
            }
        }
    }

    /// Binds what is new, builds the next runtime, and swaps it in: removed listeners stop
    /// accepting first, added ones start after, then the control tasks follow.
    async fn apply(
        &mut self,
        candidate: reload::Candidate,
        current: &Runtime,
    ) -> Result<(Reloaded, Changes), Vec<ConfigError>> {
        let mut sockets = HashMap::new();
        let mut fresh = Vec::new();
        let mut problems = Vec::new();
        for (i, listener) in candidate.config.listeners.iter().enumerate() {
            let kept = self
                .proxy
                .find(&listener.name, BindKey::of(listener))
                .and_then(|id| current.listener(id));
            let socket = match kept {
                Some(kept) => ListenerSocket {
                    id: kept.id,
                    addr: kept.addr,
                    metrics: kept.metrics.clone(),
                },
                None => match BoundListener::bind(listener, self.proxy.threads()) {
                    Ok(bound) => {
                        let socket = ListenerSocket {
                            id: bound.id,
                            addr: bound.addr,
                            metrics: self.metrics.listener(&listener.name),
                        };
                        fresh.push(bound);
                        socket
                    }
                    Err(error) => {
                        problems.push(ConfigError {
                            path: format!("listener[{i}].listen"),
                            message: error.to_string(),
                        });
                        continue;
                    }
                },
            };
            sockets.insert(listener.name.clone(), socket);
        }
        if !problems.is_empty() {
            // Dropping `fresh` closes what was bound for this reload.
            return Err(problems);
        }
        let next = Arc::new(Runtime::build(
            candidate.config,
            Some(current),
            &sockets,
            candidate.secrets,
            candidate.loaded,
            &self.metrics,
        ));
        let removed: Vec<ListenerId> = current
            .listeners
            .iter()
            .map(|l| l.id)
            .filter(|id| next.listener(*id).is_none())
            .collect();
        for id in &removed {
            self.proxy.stop_accepting(*id).await;
        }
        self.runtime.store(Arc::clone(&next));
        for bound in fresh {
            if let Some(running) = next.listener(bound.id) {
                self.proxy.accept(bound, running.metrics.clone());
            }
        }
        let changes = self.apply_tasks(&next);
        self.closing.retain(|task| !task.is_finished());
        for id in removed {
            self.close_removed(id, &next);
        }
        Ok((
            Reloaded {
                generation: next.generation,
                sha256: next.loaded.sha256.clone(),
            },
            changes,
        ))
    }

    /// Closes the connections of a removed listener at the drain's pace, within its deadline.
    fn close_removed(&mut self, id: ListenerId, runtime: &Runtime) {
        let registry = Arc::clone(&self.registry);
        let counted = self.metrics.closed_by_reload().clone();
        let (rate, deadline) = (
            runtime.config.drain.close_rate,
            runtime.config.drain.deadline,
        );
        self.closing.push(Task::spawn(async move {
            let open = registry.count(Which::Listener(id));
            if open == 0 {
                return;
            }
            tracing::info!(
                open,
                close_rate = rate,
                "closing the connections of a removed listener"
            );
            let deadline = Instant::now() + deadline;
            let (paced, cut) = registry
                .close_paced(Which::Listener(id), rate, deadline, &counted)
                .await;
            tracing::info!(paced, cut, "the removed listener's connections are closed");
        }));
    }

    /// Starts, stops and restarts the control tasks so that they are those of `runtime`.
    fn apply_tasks(&mut self, runtime: &Runtime) -> Changes {
        let metrics = self.metrics.clone();
        let mut changes = Changes::default();

        let checkers = runtime
            .backends
            .iter()
            .flat_map(|backend| {
                backend.servers.iter().filter_map(|server| {
                    let target = backend.check_target(server.addr)?;
                    let settings = CheckerSettings {
                        target,
                        health: Arc::clone(&server.health),
                    };
                    Some(((backend.name.clone(), server.addr), settings))
                })
            })
            .collect();
        changes.add(apply(&mut self.checkers, checkers, |s| {
            Some(spawn_checker(
                s.target.clone(),
                Arc::clone(&s.health),
                &metrics,
            ))
        }));

        let peer_syncs = runtime
            .config
            .backends
            .iter()
            .zip(&runtime.backends)
            .filter_map(|(config, backend)| {
                let peers = PeerSettings::of(config)?;
                let source = Arc::clone(runtime.source(&peers.source)?);
                let settings = PeerSyncSettings {
                    peers,
                    source,
                    list: Arc::clone(&backend.peers),
                };
                Some((backend.name.clone(), settings))
            })
            .collect();
        changes.add(apply(&mut self.peer_syncs, peer_syncs, |s| {
            Some(spawn_peer_sync(
                s.peers.clone(),
                Arc::clone(&s.source),
                Arc::clone(&s.list),
                metrics.clone(),
            ))
        }));

        let refreshes = runtime
            .config
            .discovery
            .iter()
            .filter_map(|config| {
                let settings = RefreshSettings {
                    config: config.clone(),
                    this: runtime.self_node.clone(),
                    source: Arc::clone(runtime.source(&config.name)?),
                };
                Some((config.name.clone(), settings))
            })
            .collect();
        changes.add(apply(&mut self.refreshes, refreshes, |s| {
            Some(spawn_refresh(
                &s.config,
                Arc::clone(&s.source),
                s.this.clone(),
                &metrics,
            ))
        }));

        let cluster = &runtime.config.cluster;
        let guard = GuardSettings {
            config: cluster.clone(),
            current_node: runtime.self_node.current_node(),
            source: cluster
                .discovery
                .as_deref()
                .and_then(|name| runtime.source(name))
                .cloned(),
        };
        let clustering = Arc::clone(&self.clustering);
        let guard_changes = apply(&mut self.guard, vec![((), guard)], |s| {
            // A restarted guard leaves the last verdict standing until its own first one, so a
            // reload neither hides a partition nor invents one.
            spawn_guard(
                s.config.clone(),
                s.current_node.clone(),
                s.source.clone(),
                Arc::clone(&clustering),
                metrics.clone(),
            )
        });
        if self.guard.is_empty() {
            // No guard (any more): the block says who this node is and nothing else.
            let current_node = runtime.self_node.current_node();
            if self.clustering.load().current_node != current_node || guard_changes.stopped > 0 {
                self.clustering.store(Arc::new(Clustering {
                    current_node,
                    ..Clustering::default()
                }));
                self.metrics.cluster_partitioned().set(0);
            }
        }
        changes.add(guard_changes);

        let watch = match (&self.file, runtime.config.runtime.watch_config) {
            (Some(_), Some(every)) => vec![((), every)],
            _ => Vec::new(),
        };
        let (file, reloader, snapshot) = (
            self.file.clone(),
            self.reloader.clone(),
            Arc::clone(&self.runtime),
        );
        changes.add(apply(&mut self.watcher, watch, |every| {
            let file = file.clone()?;
            Some(Task::spawn(super::watch::run(
                file,
                *every,
                Arc::clone(&snapshot),
                reloader.clone(),
            )))
        }));

        let tls_watchers = runtime
            .listeners
            .iter()
            .filter_map(|listener| {
                let terminator = listener.plan.tls.as_ref()?;
                let every = terminator.config.watch?;
                let settings = TlsWatch {
                    terminator: Arc::clone(terminator),
                    every,
                };
                Some((listener.name.clone(), settings))
            })
            .collect();
        changes.add(apply(&mut self.tls_watchers, tls_watchers, |s| {
            Some(Task::spawn(crate::tls::watch::run(
                Arc::clone(&s.terminator),
                s.every,
            )))
        }));
        changes
    }
}
