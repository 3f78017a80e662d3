//! Source-address rotation towards loopback servers. One source address gives the kernel about
//! 28k ephemeral ports towards one broker address and port; rotating over several 127.0.0.x
//! sources multiplies that, which is what lets one node hold hundreds of thousands of clients.
//!
//! A bound source costs two system calls per connection (IP_BIND_ADDRESS_NO_PORT and bind), so
//! `"auto"` binds none while the kernel's own choice has ports to spare: it rotates only once a
//! server holds [`ROTATE_PAST`] connections, or once a connect has failed for want of a port
//! (EADDRNOTAVAIL), and from then on for good. A configured list is always rotated: it says
//! exactly which sources the broker sees.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::{AUTO_LOOPBACK_SOURCES, LoopbackSources};

/// Connections open to one server past which `"auto"` starts rotating: well inside the ~28k
/// ports of Linux's default ephemeral range (32768-60999), so that connections set up at once on
/// several threads, and ports held in TIME_WAIT, still find one.
pub const ROTATE_PAST: i64 = 16_384;

/// Hands out source addresses in turn.
#[derive(Debug)]
pub struct LoopbackRotation {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    next: AtomicUsize,
    /// Rotate from the first connection (a configured list), or only once ports run short.
    always: bool,
    /// Ports ran short (a connect failed with EADDRNOTAVAIL): rotate from now on.
    short: AtomicBool,
}

impl LoopbackRotation {
    /// The rotation a backend's `loopback_sources` asks for.
    pub fn new(config: &LoopbackSources) -> LoopbackRotation {
        let always = matches!(config, LoopbackSources::List(_));
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
            always,
            short: AtomicBool::new(false),
        }
    }

    /// The source to bind before connecting to `server`, which holds `open` connections now, or
    /// `None` to let the kernel choose: only loopback servers rotate, only over sources of the
    /// same family, and (for `"auto"`) only once ports run short.
    pub fn next_for(&self, server: SocketAddr, open: i64) -> Option<IpAddr> {
        if !server.ip().is_loopback() || !self.rotating(open) {
            return None;
        }
        let pool = self.pool(server);
        if pool.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(pool[turn % pool.len()])
    }

    fn pool(&self, server: SocketAddr) -> &[IpAddr] {
        if server.is_ipv4() { &self.v4 } else { &self.v6 }
    }

    fn rotating(&self, open: i64) -> bool {
        self.always || open >= ROTATE_PAST || self.short.load(Ordering::Relaxed)
    }

    /// Notes that a connect to `server` from the kernel's choice of source failed with `error`:
    /// when it was for want of a port and there are sources to rotate over, rotation starts, and
    /// the answer is whether to try again rotated.
    pub fn ran_short(&self, server: SocketAddr, error: &std::io::Error) -> bool {
        let no_port = error.raw_os_error() == Some(libc::EADDRNOTAVAIL);
        if !no_port || !server.ip().is_loopback() || self.pool(server).is_empty() {
            return false;
        }
        if !self.short.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "ephemeral ports to a loopback server ran short: rotating source addresses"
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rotates_over_loopback_sources() {
        let rotation = LoopbackRotation::new(&LoopbackSources::Auto);
        let server: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        assert_eq!(
            rotation.next_for(server, 0),
            None,
            "the kernel's choice first"
        );
        let picked: Vec<IpAddr> = (0..33)
            .filter_map(|_| rotation.next_for(server, ROTATE_PAST))
            .collect();
        assert_eq!(picked[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(picked[31], "127.0.0.32".parse::<IpAddr>().unwrap());
        assert_eq!(picked[32], picked[0]);
    }

    #[test]
    fn remote_servers_and_other_families_do_not_rotate() {
        let rotation = LoopbackRotation::new(&LoopbackSources::Auto);
        let busy = ROTATE_PAST;
        assert_eq!(
            rotation.next_for("10.0.0.5:1883".parse().unwrap(), busy),
            None
        );
        assert_eq!(rotation.next_for("[::1]:1883".parse().unwrap(), busy), None);
        let off = LoopbackRotation::new(&LoopbackSources::Off);
        assert_eq!(off.next_for("127.0.0.1:1".parse().unwrap(), busy), None);
        let no_port = std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert!(
            !off.ran_short("127.0.0.1:1".parse().unwrap(), &no_port),
            "nothing to rotate over"
        );
    }

    #[test]
    fn a_configured_list_is_used_in_turn() {
        let list = vec!["127.0.0.7".parse().unwrap(), "127.0.0.9".parse().unwrap()];
        let rotation = LoopbackRotation::new(&LoopbackSources::List(list.clone()));
        let server = "127.0.0.1:1883".parse().unwrap();
        let picked: Vec<IpAddr> = (0..4)
            .filter_map(|_| rotation.next_for(server, 0))
            .collect();
        assert_eq!(picked, [list[0], list[1], list[0], list[1]]);
    }

    #[test]
    fn auto_rotates_for_good_once_a_connect_ran_out_of_ports() {
        let rotation = LoopbackRotation::new(&LoopbackSources::Auto);
        let server: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(
            !rotation.ran_short(server, &refused),
            "a refusal is no shortage"
        );
        assert_eq!(rotation.next_for(server, 1), None);
        let no_port = std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert!(rotation.ran_short(server, &no_port));
        let picked: Vec<IpAddr> = (0..3)
            .filter_map(|_| rotation.next_for(server, 0))
            .collect();
        assert_eq!(
            picked.len(),
            3,
            "rotation stays on with few connections open"
        );
        assert_eq!(distinct(&picked), 3);
    }

    fn distinct(picked: &[IpAddr]) -> usize {
        picked
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}
