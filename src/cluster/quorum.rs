//! The quorum rule as plain functions, and the [`Guard`] that turns each answer of the broker's
//! API (or the failure to get one) into the `/health` `clustering` block.

use crate::discovery::PeerSet;

/// The `clustering` block of `/health`. Static until peer discovery and the cluster guard fill it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clustering {
    /// Whether a cluster guard runs.
    pub enabled: bool,
    /// This node's name (e.g. `emqx@10.0.0.5`), empty when unknown.
    pub current_node: String,
    /// Nodes the broker reports as running.
    pub connected_nodes: Vec<String>,
    /// How many of them.
    pub node_count: usize,
    /// This node plus discovered peers.
    pub expected_nodes: usize,
    /// floor(expected / 2) + 1.
    pub quorum: usize,
    /// Whether this node sees fewer than a quorum.
    pub partitioned: bool,
}

/// Failed asks in a row during which the last verdict stands. One slow answer in the middle of
/// a partition must not put the node back behind the load balancer; a management API that stays
/// away is no evidence of a partition, so after these the guard reports "not partitioned".
pub const ASKS_KEPT_ON_ERROR: u32 = 2;

/// One node in the broker's own view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node name, e.g. `emqx@10.0.0.5` or `rabbit@host`.
    pub node: String,
    /// Whether the broker reports it running.
    pub running: bool,
}

/// The expected members: this node and the node names of the discovered peers, sorted and
/// without duplicates (an SRV answer may list one node on several ports).
pub fn expected(current_node: &str, peers: &PeerSet) -> Vec<String> {
    let mut nodes: Vec<String> = std::iter::once(current_node)
        .chain(peers.peers.iter().map(|peer| peer.node.as_str()))
        .map(String::from)
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The smallest majority of `expected` members: floor(n / 2) + 1.
pub fn quorum(expected: usize) -> usize {
    expected / 2 + 1
}

/// The verdict on one answer: every running member counts as connected, including nodes that
/// discovery does not know (the broker is the authority on who is in its cluster; discovery
/// only sizes the majority).
pub fn assess(current_node: &str, expected: &[String], members: &[Member]) -> Clustering {
    let mut connected: Vec<String> = members
        .iter()
        .filter(|member| member.running)
        .map(|member| member.node.clone())
        .collect();
    connected.sort();
    connected.dedup();
    let quorum = quorum(expected.len());
    Clustering {
        enabled: true,
        current_node: current_node.to_string(),
        node_count: connected.len(),
        expected_nodes: expected.len(),
        quorum,
        // A node that expects no peers is the whole cluster it knows of: nothing to be cut off
        // from, whatever the broker's list says.
        partitioned: expected.len() > 1 && connected.len() < quorum,
        connected_nodes: connected,
    }
}

/// What the guard knows when the broker cannot be asked: nobody seen connected, and no claim of
/// a partition.
pub fn unknown(current_node: &str, expected: &[String]) -> Clustering {
    Clustering {
        enabled: true,
        current_node: current_node.to_string(),
        connected_nodes: Vec::new(),
        node_count: 0,
        expected_nodes: expected.len(),
        quorum: quorum(expected.len()),
        partitioned: false,
    }
}

/// The cluster view across asks: the last verdict and how many asks have failed since.
#[derive(Debug, Clone)]
pub struct Guard {
    current_node: String,
    last: Option<Clustering>,
    failures: u32,
}

impl Guard {
    /// A guard for the node named `current_node`, with no verdict yet.
    pub fn new(current_node: &str) -> Guard {
        Guard {
            current_node: current_node.to_string(),
            last: None,
            failures: 0,
        }
    }

    /// This node's name.
    pub fn current_node(&self) -> &str {
        &self.current_node
    }

    /// Asks that have failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The broker answered with `members`.
    pub fn answered(&mut self, expected: &[String], members: &[Member]) -> Clustering {
        self.failures = 0;
        let verdict = assess(&self.current_node, expected, members);
        self.last = Some(verdict.clone());
        verdict
    }

    /// The broker could not be asked: the last verdict for [`ASKS_KEPT_ON_ERROR`] asks, then
    /// [`unknown`].
    pub fn failed(&mut self, expected: &[String]) -> Clustering {
        self.failures = self.failures.saturating_add(1);
        match &self.last {
            Some(last) if self.failures <= ASKS_KEPT_ON_ERROR => last.clone(),
            _ => unknown(&self.current_node, expected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{members, peer_set as peers};

    const ME: &str = "emqx@10.0.0.1";
    const B: &str = "emqx@10.0.0.2";
    const C: &str = "emqx@10.0.0.3";

    #[test]
    fn expected_is_self_and_peers_without_duplicates() {
        let set = peers(&[C, B, B, ME]);
        assert_eq!(expected(ME, &set), vec![ME, B, C]);
        assert_eq!(expected(ME, &PeerSet::default()), vec![ME]);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let cases = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (n, q) in cases {
            assert_eq!(quorum(n), q, "quorum({n})");
        }
    }

    #[test]
    fn three_expected_walk() {
        let expected = expected(ME, &peers(&[B, C]));
        let cases: [(&[&str], &[&str], bool); 5] = [
            (&[ME, B, C], &[], false),
            (&[ME, B], &[C], false),
            (&[ME], &[B, C], true),
            (&[], &[ME, B, C], true),
            // The broker's word wins: a node discovery has not found yet still counts.
            (&[ME, "emqx@10.0.0.9"], &[B, C], false),
        ];
        for (running, stopped, partitioned) in cases {
            let verdict = assess(ME, &expected, &members(running, stopped));
            assert_eq!(verdict.partitioned, partitioned, "{running:?} running");
            assert_eq!(verdict.node_count, running.len());
            assert_eq!(verdict.expected_nodes, 3);
            assert_eq!(verdict.quorum, 2);
            assert!(verdict.enabled);
            assert_eq!(verdict.current_node, ME);
        }
    }

    #[test]
    fn connected_nodes_are_sorted_running_names() {
        let expected = expected(ME, &peers(&[B, C]));
        let verdict = assess(ME, &expected, &members(&[C, ME, C], &[B]));
        assert_eq!(verdict.connected_nodes, vec![ME, C]);
        assert_eq!(verdict.node_count, 2);
    }

    #[test]
    fn alone_is_never_partitioned() {
        let expected = expected(ME, &PeerSet::default());
        for list in [members(&[ME], &[]), members(&[], &[ME]), Vec::new()] {
            let verdict = assess(ME, &expected, &list);
            assert!(!verdict.partitioned, "{list:?}");
            assert_eq!((verdict.expected_nodes, verdict.quorum), (1, 1));
        }
    }

    #[test]
    fn errors_keep_the_last_verdict_then_report_unknown() {
        let expected = expected(ME, &peers(&[B, C]));
        let mut guard = Guard::new(ME);
        assert_eq!(guard.failed(&expected), unknown(ME, &expected));

        let partitioned = guard.answered(&expected, &members(&[ME], &[B, C]));
        assert!(partitioned.partitioned);
        for _ in 0..ASKS_KEPT_ON_ERROR {
            assert_eq!(guard.failed(&expected), partitioned);
        }
        let gone = guard.failed(&expected);
        assert!(!gone.partitioned);
        assert_eq!(gone.connected_nodes, Vec::<String>::new());
        assert_eq!((gone.expected_nodes, gone.quorum), (3, 2));
        assert_eq!(guard.failures(), ASKS_KEPT_ON_ERROR + 1);

        let healed = guard.answered(&expected, &members(&[ME, B, C], &[]));
        assert!(!healed.partitioned);
        assert_eq!(guard.failures(), 0);
        assert_eq!(guard.failed(&expected), healed);
    }
}
