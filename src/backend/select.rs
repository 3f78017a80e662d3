//! The servers a new connection tries, best first. The tier comes first: the local servers that
//! are up; if none, the backups that are up (static, then discovered); if none of either, every
//! server, local ones first, since checks lag behind reality and a refused connect costs little.
//! Within a tier, `balance` orders:
//! - `local-first`: config order;
//! - `client-id`: rendezvous hashing of the MQTT client id, so a client returns to the node of
//!   its session, and a failed connect falls to that client's second choice. A connection with
//!   no client id, or an empty one (MQTT 5 server-assigned), is ordered local-first.
//!
//! Slow start: a server that came back up less than `slowstart` ago has a weight below 1 (see
//! [`slowstart`](super::slowstart)). In a tier with servers at full weight, a ramping one takes
//! its weight's share: local-first puts it first only when a draw falls under its weight,
//! client-id weighs its rendezvous score. A tier made only of ramping servers takes that share
//! of connections and sends the rest where they went while it was down (the backups that are
//! up); with nowhere else to go it takes them all. Client-id decides that share by a hash of the
//! client id rather than a draw, so that during the ramp a client does not flip between its
//! session's node and the backup on every reconnect.

use std::sync::Arc;
use std::time::Instant;

use super::{Backend, Role, Server, rendezvous, slowstart};
use crate::config::Balance;

impl Backend {
    /// The servers a new connection tries, best first (see the module's doc). `client_id` is the
    /// MQTT client id of the connection, when its listener reads the CONNECT. Cheap when no
    /// server ramps and no client id is hashed: one pass over the servers and one allocation.
    pub fn candidates(&self, client_id: Option<&str>) -> Vec<Arc<Server>> {
        // The clock is read only when a ramp can be under way.
        let now = (!self.slowstart.is_zero()).then(Instant::now);
        self.candidates_at(client_id, now, fastrand::f64)
    }

    /// The slow-start weight of `server` at `now`: below 1 while it ramps after coming back up,
    /// else 1.
    pub fn weight(&self, server: &Server, now: Instant) -> f64 {
        slowstart::weight(server.health.back_up_at(), now, self.slowstart)
    }

    /// [`Backend::candidates`] at `now` (`None`: slow start is off), with `draw` giving the
    /// uniform numbers in [0, 1) that local-first's slow start compares with a server's weight.
    pub fn candidates_at(
        &self,
        client_id: Option<&str>,
        now: Option<Instant>,
        draw: impl FnMut() -> f64,
    ) -> Vec<Arc<Server>> {
        let peers = self.peers.load();
        let all = || self.servers.iter().chain(peers.iter());
        let up = |role: Role| all().filter(move |s| s.role == role && s.health.is_up());
        let mut order = Order {
            backend: self,
            now,
            client_id: client_id.filter(|id| !id.is_empty() && self.balance == Balance::ClientId),
            draw,
        };
        let locals: Vec<Arc<Server>> = up(Role::Local).cloned().collect();
        if !locals.is_empty() {
            let (locals, declined) = order.rank(locals, true);
            if !declined {
                return locals;
            }
            let (mut chosen, _) = order.rank(up(Role::Backup).cloned().collect(), true);
            chosen.extend(locals);
            return chosen;
        }
        let backups: Vec<Arc<Server>> = up(Role::Backup).cloned().collect();
        if !backups.is_empty() {
            return order.rank(backups, true).0;
        }
        // Nothing is up, so nothing ramps; a client id still picks its own order of each role.
        let of = |role: Role| all().filter(|s| s.role == role).cloned().collect();
        let (mut chosen, _) = order.rank(of(Role::Local), false);
        chosen.extend(order.rank(of(Role::Backup), false).0);
        chosen
    }
}

/// How one connection orders a tier.
struct Order<'a, D> {
    backend: &'a Backend,
    /// The time the weights are taken at; `None` = slow start is off.
    now: Option<Instant>,
    /// The client id to hash; `None` = config order.
    client_id: Option<&'a str>,
    /// Uniform draws in [0, 1).
    draw: D,
}

impl<D: FnMut() -> f64> Order<'_, D> {
    /// Orders `tier`, weighing ramping servers when `ramp`, and says whether the tier declines
    /// this connection: every server of it ramps, and this connection is outside their share.
    fn rank(&mut self, tier: Vec<Arc<Server>>, ramp: bool) -> (Vec<Arc<Server>>, bool) {
        let (backend, now) = (self.backend, self.now.filter(|_| ramp));
        let weigh = |server: &Server| now.map_or(1.0, |now| backend.weight(server, now));
        match self.client_id {
            None if tier.iter().all(|s| weigh(s) >= 1.0) => (tier, false),
            None => {
                // Config order, with each ramping server moved behind the others unless a draw
                // falls under its weight.
                let draw = &mut self.draw;
                let mut declined = true;
                let (mut chosen, behind): (Vec<_>, Vec<_>) = tier.into_iter().partition(|s| {
                    let weight = weigh(s);
                    let keep = weight >= 1.0 || draw() < weight;
                    declined &= !keep;
                    keep
                });
                let declined = declined && !behind.is_empty();
                chosen.extend(behind);
                (chosen, declined)
            }
            Some(id) => {
                let mut scored: Vec<(f64, f64, Arc<Server>)> = tier
                    .into_iter()
                    .map(|s| {
                        let weight = weigh(&s);
                        (rendezvous::score(id, s.key, weight), weight, s)
                    })
                    .collect();
                // Best first; equal scores (never seen in practice) by address, so that every
                // node still agrees.
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.addr.cmp(&b.2.addr)));
                let all_ramp = scored.iter().all(|(_, weight, _)| *weight < 1.0);
                let declined = match scored.first() {
                    Some((_, weight, _)) => all_ramp && !rendezvous::admitted(id, *weight),
                    None => false,
                };
                (scored.into_iter().map(|(_, _, s)| s).collect(), declined)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::config::Config;
    use crate::health::{HealthReport, ServerHealth, ServerState};
    use crate::metrics::Metrics;

    const LOCALS: [&str; 3] = ["10.0.0.1:1883", "10.0.0.2:1883", "10.0.0.3:1883"];

    /// A checked backend of `servers` and static `backup`, every server up from its first rise.
    fn backend(balance: &str, servers: &[&str], backup: &[&str], slowstart: &str) -> Backend {
        let quoted = |list: &[&str]| {
            let items: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
            items.join(", ")
        };
        let text = format!(
            "[[listener]]\nname = \"mqtt\"\nlisten = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [[backend]]\nname = \"b\"\nservers = [{}]\nbackup = [{}]\n\
             balance = \"{balance}\"\nslowstart = \"{slowstart}\"\n\
             [backend.check]\nkind = \"tcp\"\n",
            quoted(servers),
            quoted(backup),
        );
        let config = Config::from_toml(&text).expect("the test's config is valid");
        let backend = Backend::new(&config.backends[0], &Metrics::new());
        let start = Instant::now();
        for server in &backend.servers {
            set(server, true, start);
        }
        backend
    }

    /// Discovered peers at `addrs`, up.
    fn add_peers(backend: &Backend, addrs: &[&str]) {
        let metrics = Metrics::new();
        let peers = addrs
            .iter()
            .map(|a| {
                let server = Server::new(
                    &backend.name,
                    addr(a),
                    Role::Backup,
                    Arc::new(ServerHealth::pending()),
                    &metrics,
                );
                set(&server, true, Instant::now());
                Arc::new(server)
            })
            .collect();
        backend.peers.store(Arc::new(peers));
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a test address")
    }

    /// Publishes `server` up or down at `at`, as its checker would.
    fn set(server: &Server, up: bool, at: Instant) {
        let state = if up {
            ServerState::Up
        } else {
            ServerState::Down
        };
        let report = HealthReport {
            state,
            checked: true,
            last: None,
            streak: 1,
            since: SystemTime::now(),
        };
        server.health.publish_at(report, at);
    }

    fn server<'a>(backend: &'a Backend, text: &str) -> &'a Arc<Server> {
        let wanted = addr(text);
        backend
            .servers
            .iter()
            .find(|s| s.addr == wanted)
            .expect("a server of the backend")
    }

    /// The first choice of each client id, without slow start.
    fn firsts(backend: &Backend, ids: &[String]) -> Vec<SocketAddr> {
        ids.iter()
            .map(|id| backend.candidates_at(Some(id), None, || 0.0)[0].addr)
            .collect()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("device-{i:05}")).collect()
    }

    fn addrs(servers: &[Arc<Server>]) -> Vec<SocketAddr> {
        servers.iter().map(|s| s.addr).collect()
    }

    #[test]
    fn the_same_client_id_gets_the_same_order_every_time() {
        let backend = backend("client-id", &LOCALS, &[], "0s");
        for id in ids(20) {
            let first = addrs(&backend.candidates(Some(&id)));
            assert_eq!(first.len(), 3, "every local server, best first");
            for _ in 0..100 {
                assert_eq!(addrs(&backend.candidates(Some(&id))), first, "{id}");
            }
        }
    }

    #[test]
    fn client_ids_spread_evenly() {
        let backend = backend("client-id", &LOCALS, &[], "0s");
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for first in firsts(&backend, &ids(300)) {
            *counts.entry(first).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (server, count) in &counts {
            assert!((70..=130).contains(count), "{server}: {count} of 300");
        }
    }

    #[test]
    fn a_server_that_leaves_moves_only_its_own_clients() {
        let all = backend("client-id", &LOCALS, &[], "0s");
        let ids = ids(300);
        let before = firsts(&all, &ids);
        let gone = addr(LOCALS[1]);
        // Down, and removed from the config: both move the same clients.
        set(server(&all, LOCALS[1]), false, Instant::now());
        let two = backend("client-id", &[LOCALS[0], LOCALS[2]], &[], "0s");
        for after in [firsts(&all, &ids), firsts(&two, &ids)] {
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(*a, gone);
                if *b == gone {
                    moved += 1;
                } else {
                    assert_eq!(a, b, "a client of a server that stayed moved");
                }
            }
            assert!((70..=130).contains(&moved), "{moved} of 300 moved");
        }
        // And back: every client returns to where it was.
        set(server(&all, LOCALS[1]), true, Instant::now());
        assert_eq!(firsts(&all, &ids), before);
    }

    #[test]
    fn with_the_local_broker_down_a_client_fails_over_to_the_same_peer() {
        let backend = backend("client-id", &["127.0.0.1:21883"], &["10.0.0.9:1883"], "0s");
        add_peers(
            &backend,
            &["10.0.0.5:1883", "10.0.0.6:1883", "10.0.0.7:1883"],
        );
        set(&backend.servers[0], false, Instant::now());
        let ids = ids(300);
        let first = firsts(&backend, &ids);
        assert_eq!(first, firsts(&backend, &ids), "the same peer every time");
        let peers: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(
            peers.len(),
            4,
            "static and discovered backups all take a share"
        );
        assert!(!peers.contains(&addr("127.0.0.1:21883")));
        // The local broker is back: everyone goes home.
        set(&backend.servers[0], true, Instant::now());
        assert!(
            firsts(&backend, &ids)
                .iter()
                .all(|a| *a == addr("127.0.0.1:21883"))
        );
    }

    #[test]
    fn no_client_id_or_an_empty_one_is_local_first() {
        let backend = backend("client-id", &LOCALS, &["10.0.0.9:1883"], "0s");
        let config_order: Vec<SocketAddr> = LOCALS.iter().map(|a| addr(a)).collect();
        assert_eq!(addrs(&backend.candidates(None)), config_order);
        assert_eq!(addrs(&backend.candidates(Some(""))), config_order);
        let local_first = self::backend("local-first", &LOCALS, &[], "0s");
        for id in ids(10) {
            assert_eq!(addrs(&local_first.candidates(Some(&id))), config_order);
        }
    }

    #[test]
    fn nothing_up_tries_locals_then_backups_in_each_clients_order() {
        let backend = backend("client-id", &LOCALS, &["10.0.0.9:1883"], "0s");
        for server in &backend.servers {
            set(server, false, Instant::now());
        }
        for id in ids(20) {
            let order = addrs(&backend.candidates(Some(&id)));
            assert_eq!(order.len(), 4);
            assert_eq!(order[3], addr("10.0.0.9:1883"), "the backup last");
            assert_eq!(order, addrs(&backend.candidates(Some(&id))));
        }
    }

    #[test]
    fn slow_start_weight_ramps_from_the_instant_the_server_came_back() {
        let backend = backend("local-first", &["127.0.0.1:21883"], &[], "10s");
        let local = &backend.servers[0];
        let start = Instant::now();
        assert_eq!(
            backend.weight(local, start),
            1.0,
            "its first rise is no ramp"
        );
        set(local, false, start);
        let back = start + Duration::from_secs(30);
        set(local, true, back);
        let at = |secs: u64| backend.weight(local, back + Duration::from_secs(secs));
        assert!((at(0) - 0.1).abs() < 1e-9, "{}", at(0));
        assert!((at(5) - 0.55).abs() < 1e-9, "{}", at(5));
        assert_eq!(at(10), 1.0);
        assert!(!backend.local_up_at_full(back + Duration::from_secs(5)));
        assert!(backend.local_up_at_full(back + Duration::from_secs(10)));
    }

    /// The share of `n` connections at `now` whose first choice is `wanted`, with seeded draws.
    fn share(backend: &Backend, now: Instant, ids: Option<&[String]>, wanted: SocketAddr) -> f64 {
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 2000;
        let hits = (0..n)
            .filter(|i| {
                let id = ids.map(|ids| ids[*i % ids.len()].as_str());
                backend.candidates_at(id, Some(now), || rng.f64())[0].addr == wanted
            })
            .count();
        hits as f64 / n as f64
    }

    #[test]
    fn local_first_sends_a_ramping_local_its_weights_share_and_the_rest_to_backups() {
        let backend = backend(
            "local-first",
            &["127.0.0.1:21883"],
            &["10.0.0.9:1883"],
            "10s",
        );
        let local = &backend.servers[0];
        let start = Instant::now();
        set(local, false, start);
        assert_eq!(
            addrs(&backend.candidates_at(None, Some(start), || 0.0)),
            [addr("10.0.0.9:1883")],
            "down: the backup only"
        );
        let back = start + Duration::from_secs(1);
        set(local, true, back);
        let after = |secs: u64| back + Duration::from_secs(secs);
        let at = |secs| share(&backend, after(secs), None, local.addr);
        assert!((at(0) - 0.1).abs() < 0.03, "{}", at(0));
        assert!((at(5) - 0.55).abs() < 0.04, "{}", at(5));
        assert_eq!(at(10), 1.0);
        // A connection that goes to the backup still has the local server to fall to.
        let declined = backend.candidates_at(None, Some(after(0)), || 0.99);
        assert_eq!(addrs(&declined), [addr("10.0.0.9:1883"), local.addr]);

        // With no backup up, the ramping server gets every connection: there is nowhere else.
        set(&backend.servers[1], false, after(0));
        assert_eq!(at(0), 1.0);
    }

    #[test]
    fn client_id_weighs_a_ramping_server_among_full_ones() {
        let backend = backend("client-id", &LOCALS, &[], "10s");
        let ramping = server(&backend, LOCALS[0]);
        let start = Instant::now();
        set(ramping, false, start);
        set(ramping, true, start);
        let ids = ids(600);
        let at = |secs| {
            share(
                &backend,
                start + Duration::from_secs(secs),
                Some(&ids),
                ramping.addr,
            )
        };
        // Weights 0.1, 1, 1: a share of 0.1 / 2.1; then 1/3 once the ramp is over.
        assert!(at(0) < 0.09, "{}", at(0));
        assert!((at(10) - 1.0 / 3.0).abs() < 0.08, "{}", at(10));
        assert!(at(0) < at(5) && at(5) < at(10));
    }

    #[test]
    fn client_id_sends_a_ramping_local_a_stable_share_and_the_rest_to_their_peer() {
        let backend = backend("client-id", &["127.0.0.1:21883"], &[], "10s");
        add_peers(&backend, &["10.0.0.5:1883", "10.0.0.6:1883"]);
        let local = &backend.servers[0];
        let start = Instant::now();
        set(local, false, start);
        let ids = ids(1000);
        let on_peers = firsts(&backend, &ids);
        set(local, true, start);
        let firsts_at = |secs: u64| -> Vec<SocketAddr> {
            let now = start + Duration::from_secs(secs);
            ids.iter()
                .map(|id| backend.candidates_at(Some(id), Some(now), || 0.0)[0].addr)
                .collect()
        };
        let home = |firsts: &[SocketAddr]| firsts.iter().filter(|a| **a == local.addr).count();
        let (early, mid, late) = (firsts_at(0), firsts_at(5), firsts_at(10));
        assert!((70..=130).contains(&home(&early)), "{}", home(&early));
        assert!((480..=620).contains(&home(&mid)), "{}", home(&mid));
        assert_eq!(home(&late), ids.len());
        for (i, first) in early.iter().enumerate() {
            // Not taken yet: the peer of its session, as while the local broker was down.
            if *first != local.addr {
                assert_eq!(*first, on_peers[i]);
            }
            // Taken early: taken for good.
            if *first == local.addr {
                assert_eq!(mid[i], local.addr);
            }
        }
        assert_eq!(early, firsts_at(0), "the same answer for the same client");
    }
}
