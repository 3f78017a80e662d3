//! Source-address rotation towards loopback servers. One source address gives the kernel about
//! 28k ephemeral ports towards one broker address and port; rotating over several 127.0.0.x
//! sources multiplies that, which is what lets one node hold hundreds of thousands of clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{AUTO_LOOPBACK_SOURCES, LoopbackSources};

/// Hands out source addresses in turn.
#[derive(Debug)]
pub struct LoopbackRotation {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    next: AtomicUsize,
}

impl LoopbackRotation {
    /// The rotation a backend's `loopback_sources` asks for.
    pub fn new(config: &LoopbackSources) -> LoopbackRotation {
        let all: Vec<IpAddr> = match config {
            LoopbackSources::Off => Vec::new(),
            LoopbackSources::Auto => (1..=AUTO_LOOPBACK_SOURCES)
                .map(|x| IpAddr::V4(Ipv4Addr::new(127, 0, 0, x)))
                .collect(),
            LoopbackSources::List(list) => list.clone(),
        };
        let (v4, v6) = all.into_iter().partition(IpAddr::is_ipv4);
        LoopbackRotation {
            v4,
            v6,
            next: AtomicUsize::new(0),
        }
    }

    /// The source to bind before connecting to `server`, or `None` to let the kernel choose:
    /// only loopback servers rotate, and only over sources of the same family.
    pub fn next_for(&self, server: SocketAddr) -> Option<IpAddr> {
        if !server.ip().is_loopback() {
            return None;
        }
        let pool = if server.is_ipv4() { &self.v4 } else { &self.v6 };
        if pool.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(pool[turn % pool.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rotates_over_loopback_sources() {
        let rotation = LoopbackRotation::new(&LoopbackSources::Auto);
        let server: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let picked: Vec<IpAddr> = (0..33).filter_map(|_| rotation.next_for(server)).collect();
        assert_eq!(picked[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(picked[31], "127.0.0.32".parse::<IpAddr>().unwrap());
        assert_eq!(picked[32], picked[0]);
    }

    #[test]
    fn remote_servers_and_other_families_do_not_rotate() {
        let rotation = LoopbackRotation::new(&LoopbackSources::Auto);
        assert_eq!(rotation.next_for("10.0.0.5:1883".parse().unwrap()), None);
        assert_eq!(rotation.next_for("[::1]:1883".parse().unwrap()), None);
        assert_eq!(
            LoopbackRotation::new(&LoopbackSources::Off).next_for("127.0.0.1:1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn a_configured_list_is_used_in_turn() {
        let list = vec!["127.0.0.7".parse().unwrap(), "127.0.0.9".parse().unwrap()];
        let rotation = LoopbackRotation::new(&LoopbackSources::List(list.clone()));
        let server = "127.0.0.1:1883".parse().unwrap();
        let picked: Vec<IpAddr> = (0..4).filter_map(|_| rotation.next_for(server)).collect();
        assert_eq!(picked, [list[0], list[1], list[0], list[1]]);
    }
}
