//! Rendezvous (highest-random-weight) hashing of MQTT client ids over servers: each server scores
//! each client id, and a client goes to the server with the highest score. While the servers stay
//! the same a client always lands on the same one; when one of n leaves, only the clients whose
//! best it was (about 1/n) move, each to its second best. Weighted scores (`-w / ln(u)`) give a
//! ramping server a share in proportion to its slow-start weight.
//!
//! Every brokerside of a cluster must rank servers the same way, across restarts and builds, so
//! the hash is xxh3 (a fixed, published function), never std's randomly seeded `DefaultHasher`.

use std::net::{IpAddr, SocketAddr};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Seed of the hash that says which clients a ramping tier takes ([`admitted`]): any constant
/// other than a server key, so that the draw is independent of the ranking.
const ADMISSION_SEED: u64 = 0x736c_6f77_7374_6172; // "slowstar"

/// A server's seed for the client-id hash: xxh3 of its address as bytes, the IP's octets (4 for
/// IPv4, 16 for IPv6) followed by the port, big-endian. Computed once per server.
pub fn server_key(addr: SocketAddr) -> u64 {
    let mut bytes = [0u8; 18];
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            bytes[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            bytes[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    bytes[len..len + 2].copy_from_slice(&addr.port().to_be_bytes());
    xxh3_64(&bytes[..len + 2])
}

/// The score of the server with key `key` for `client_id` at slow-start weight `weight`
/// (0 < weight <= 1): higher is better.
pub fn score(client_id: &str, key: u64, weight: f64) -> f64 {
    let u = unit(xxh3_64_with_seed(client_id.as_bytes(), key));
    // ln(u) < 0 for u in (0, 1), so the score is positive and grows with u and with the weight:
    // the smallest of independent exponential variables with rates w_i is the i-th with
    // probability w_i / sum(w), which is the share each server gets.
    -weight / u.ln()
}

/// Whether `client_id` is among the fraction `weight` of clients that a tier made only of
/// ramping servers takes. The same client gets the same answer at the same weight, and a
/// client taken at one weight is taken at every higher one, so a ramp moves each client once.
pub fn admitted(client_id: &str, weight: f64) -> bool {
    unit(xxh3_64_with_seed(client_id.as_bytes(), ADMISSION_SEED)) < weight
}

/// A hash mapped into the open interval (0, 1): its top 52 bits, centred in their step (with 53
/// the top step would round to 1, where ln(u) = 0).
fn unit(hash: u64) -> f64 {
    ((hash >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_scores_are_the_same_in_every_process() {
        // Fixed values: a change here would make brokersides of different versions disagree.
        let addr: SocketAddr = "10.0.0.5:1883".parse().expect("an address");
        assert_eq!(server_key(addr), xxh3_64(&[10, 0, 0, 5, 0x07, 0x5b]));
        assert_eq!(server_key(addr), 0x179e_41dc_abc9_8c9a);
        let v6: SocketAddr = "[fd00::5]:1883".parse().expect("an address");
        assert_ne!(server_key(v6), server_key(addr));
        assert_eq!(score("sensor-1", 7, 1.0), score("sensor-1", 7, 1.0));
    }

    #[test]
    fn unit_stays_inside_the_open_interval() {
        for hash in [0, 1, u64::MAX, u64::MAX >> 1] {
            let u = unit(hash);
            assert!(u > 0.0 && u < 1.0, "{hash} -> {u}");
        }
    }

    #[test]
    fn a_lower_weight_takes_a_proportional_share() {
        let keys = [1u64, 2];
        let weights = [1.0, 0.25];
        let mut wins = [0u32; 2];
        for i in 0..20_000 {
            let id = format!("client-{i}");
            let best = (0..2)
                .max_by(|&a, &b| {
                    score(&id, keys[a], weights[a]).total_cmp(&score(&id, keys[b], weights[b]))
                })
                .expect("two servers");
            wins[best] += 1;
        }
        let share = f64::from(wins[1]) / 20_000.0;
        assert!(
            (share - 0.2).abs() < 0.02,
            "share {share}, expected 0.25 / 1.25"
        );
    }

    #[test]
    fn admission_grows_with_the_weight_and_keeps_who_it_took() {
        let ids: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
        let taken = |w: f64| ids.iter().filter(|id| admitted(id, w)).count();
        assert_eq!(taken(0.0), 0);
        assert_eq!(taken(1.0), ids.len());
        let tenth = taken(0.1) as f64 / ids.len() as f64;
        assert!((tenth - 0.1).abs() < 0.03, "{tenth}");
        assert!(
            ids.iter()
                .filter(|id| admitted(id, 0.3))
                .all(|id| admitted(id, 0.6))
        );
    }
}
