//! Who may hold one of the admin endpoint's connections. A plain limit lets 64 clients that never
//! read their answers hold every slot, and the load balancer's next health check is refused (the
//! node leaves the pool, and Kubernetes restarts a pod whose liveness probe fails). So:
//! - no source address holds more than a fair share of the slots;
//! - a part of them is kept for loopback callers (Consul and Nomad agents, `curl` on the node),
//!   which other hosts cannot take.
//!
//! The NLB's checks come from a few addresses of its own, the kubelet's from the node: each has
//! its share whatever one other client does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot open to this caller is taken.
    Limit,
    /// This source address holds its whole share.
    PerSource,
}

impl Refusal {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::PerSource => "per_source",
        }
    }
}

/// The admission policy and the connections it has let in.
#[derive(Debug)]
pub struct Admission {
    /// Slots in all.
    total: u32,
    /// Slots only loopback callers may use.
    reserved: u32,
    /// Slots one source address may hold.
    per_source: u32,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Connections held now.
    all: u32,
    /// Of them, by source address.
    by_source: HashMap<IpAddr, u32>,
}

/// One admitted connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    /// The policy for `total` slots: an eighth of them (at least 2, and at most all but one)
    /// kept for loopback, a quarter (at least 2) for each source address.
    pub fn new(total: u32) -> Arc<Admission> {
        let total = total.max(1);
        let reserved = (total / 8).max(2).min(total.saturating_sub(1));
        let per_source = (total / 4).max(2).min(total);
        Arc::new(Admission {
            total,
            reserved,
            per_source,
            held: Mutex::default(),
        })
    }

    /// Admits a connection from `source`, or says why not.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Permit, Refusal> {
        // 127.0.0.1 seen through a dual-stack `[::]` socket is loopback too.
        let source = source.to_canonical();
        let Ok(mut held) = self.held.lock() else {
            return Err(Refusal::Limit);
        };
        let open_to_caller = if source.is_loopback() {
            self.total
        } else {
            self.total - self.reserved
        };
        if held.all >= open_to_caller {
            return Err(Refusal::Limit);
        }
        let mine = held.by_source.entry(source).or_insert(0);
        if *mine >= self.per_source {
            return Err(Refusal::PerSource);
        }
        *mine += 1;
        held.all += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            source,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    pub fn held(&self) -> u32 {
        self.held.lock().map_or(0, |held| held.all)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Ok(mut held) = self.admission.held.lock() else {
            return;
        };
        held.all = held.all.saturating_sub(1);
        if let Some(mine) = held.by_source.get_mut(&self.source) {
            *mine -= 1;
            if *mine == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_gets_its_share_and_loopback_keeps_its_reserve() {
        let admission = Admission::new(16);
        // 16 slots: 2 kept for loopback, 4 per source.
        let attacker: Vec<Permit> = (0..4)
            .map(|_| admission.admit(ip("10.0.0.9")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("10.0.0.9")).unwrap_err(),
            Refusal::PerSource
        );
        // Three more hosts fill what other hosts may use: 4 + 4 + 4 + 2 = 14 of 16.
        let mut others: Vec<Permit> = Vec::new();
        for host in ["10.0.0.1", "10.0.0.2"] {
            for _ in 0..4 {
                others.push(admission.admit(ip(host)).unwrap());
            }
        }
        others.push(admission.admit(ip("10.0.0.3")).unwrap());
        others.push(admission.admit(ip("10.0.0.3")).unwrap());
        assert_eq!(admission.admit(ip("10.0.0.4")).unwrap_err(), Refusal::Limit);
        // Loopback still gets in, also when it arrives as an IPv4-mapped address.
        let probe = admission.admit(ip("127.0.0.1")).unwrap();
        let agent = admission.admit(ip("::ffff:127.0.0.1")).unwrap();
        assert_eq!(admission.held(), 16);
        assert_eq!(
            admission.admit(ip("127.0.0.2")).unwrap_err(),
            Refusal::Limit
        );
        drop((probe, agent));
        drop(attacker);
        assert_eq!(admission.held(), 10);
        assert!(admission.admit(ip("10.0.0.9")).is_ok());
    }

    #[test]
    fn small_limits_still_leave_room_for_everyone() {
        let admission = Admission::new(2);
        // One slot for other hosts, the other kept for loopback.
        let remote = admission.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.8")).unwrap_err(), Refusal::Limit);
        let local = admission.admit(ip("127.0.0.1")).unwrap();
        drop((remote, local));
        assert_eq!(admission.held(), 0);
    }
}
