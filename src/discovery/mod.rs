//! Peer discovery: sources (DNS SRV/A/AAAA, Consul's catalog, a static list), each refreshed in
//! its own task and published as an atomically swapped [`PeerSet`]. Backends that name a source
//! take its healthy peers as backups; `/peers` and the peers file show the set; the cluster
//! guard counts it as the expected members.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

/// One discovered peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Its address.
    pub ip: IpAddr,
    /// Its port as discovered (SRV, Consul's ServicePort, the static entry or the source's `port`).
    pub port: u16,
    /// Its node name from the source's template, e.g. `emqx@10.0.0.5`.
    pub node: String,
}

/// What a source reports now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSet {
    /// The peers, this node left out, sorted by address and port.
    pub peers: Vec<Peer>,
    /// When the set was last refreshed successfully; `None` before the first success.
    pub refreshed: Option<SystemTime>,
    /// The last refresh error, while the source keeps serving its last good set.
    pub error: Option<String>,
}

/// One named discovery source: the latest set, and a signal when it changes.
#[derive(Debug)]
pub struct Source {
    /// The source's name from the config.
    pub name: String,
    set: ArcSwap<PeerSet>,
    changed: watch::Sender<u64>,
}

impl Source {
    /// An empty source named `name`.
    pub fn new(name: &str) -> Source {
        Source {
            name: name.to_string(),
            set: ArcSwap::from_pointee(PeerSet::default()),
            changed: watch::Sender::new(0),
        }
    }

    /// The current set. Cheap: an atomic load.
    pub fn peers(&self) -> Arc<PeerSet> {
        self.set.load_full()
    }

    /// Replaces the set; subscribers are told when the peers differ from before.
    pub fn publish(&self, set: PeerSet) {
        let peers_changed = self.set.load().peers != set.peers;
        self.set.store(Arc::new(set));
        if peers_changed {
            self.changed.send_modify(|generation| *generation += 1);
        }
    }

    /// A receiver that sees a new value whenever the peers change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
