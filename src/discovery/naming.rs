//! Node names and this node's identity: the `node_name` template (`{ip}`, `{host}`,
//! `{target}`) applied to what a source found, who this node is (`[node]`, `$POD_IP`), and the
//! peer list a source publishes (named, this node left out, sorted, deduplicated).

use std::net::IpAddr;

use super::{Discovered, Found, Peer};
use crate::config::NodeConfig;

/// The environment variable Kubernetes pods get their own address from (downward API).
const POD_IP_ENV: &str = "POD_IP";

/// The node name of `found` from `template`.
///
/// `{ip}` is the address as text, IPv6 without brackets (`emqx@fd00::5`, the form EMQX and
/// Erlang long names accept for an address); `{host}` is the host name, or the address where the
/// source has none (static entries); `{target}` is the SRV target as returned (trailing dot
/// included), else the host, else the address.
pub fn node_name(template: &str, found: &Found) -> String {
    let ip = found.ip.to_string();
    let host = found.host.as_deref().unwrap_or(&ip);
    let target = found.target.as_deref().unwrap_or(host);
    template
        .replace("{ip}", &ip)
        .replace("{host}", host)
        .replace("{target}", target)
}

/// Who this node is, so that it can leave itself out of its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfNode {
    /// This node's name as the cluster knows it, when known.
    pub name: Option<String>,
    /// This node's address as peers see it, when known.
    pub ip: Option<IpAddr>,
}

impl SelfNode {
    /// This node from `[node]`, `$POD_IP` (read now) and `template` (the first source's
    /// `node_name`, used when `[node].name` is not set).
    pub fn from_config(node: &NodeConfig, template: Option<&str>) -> SelfNode {
        let pod_ip = std::env::var(POD_IP_ENV).ok();
        SelfNode::resolve(node, template, pod_ip.as_deref())
    }

    /// [`SelfNode::from_config`] with the value of `$POD_IP` given: the address is `advertise`,
    /// else `pod_ip`; the name is `[node].name`, else the template applied to the address.
    pub fn resolve(node: &NodeConfig, template: Option<&str>, pod_ip: Option<&str>) -> SelfNode {
        let ip = node
            .advertise
            .or_else(|| pod_ip.and_then(|text| text.trim().parse().ok()));
        let name = node.name.clone().or_else(|| {
            let (template, ip) = (template?, ip?);
            Some(node_name(
                template,
                &Found {
                    ip,
                    port: 0,
                    host: None,
                    target: None,
                },
            ))
        });
        SelfNode { name, ip }
    }

    /// Whether `peer` is this node: the same address, or the same node name.
    pub fn is_self(&self, peer: &Peer) -> bool {
        self.ip == Some(peer.ip) || self.name.as_deref() == Some(peer.node.as_str())
    }

    /// This node's name for `/health` and the cluster guard: the name, else the address, else
    /// `unknown`.
    pub fn current_node(&self) -> String {
        match (&self.name, self.ip) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => "unknown".to_string(),
        }
    }
}

/// The peers of one answer: named with `template`, this node left out, sorted by address, port
/// and name, one peer per address and port.
pub fn peers(found: &Discovered, template: &str, this: &SelfNode) -> Vec<Peer> {
    let mut peers: Vec<Peer> = found
        .records
        .iter()
        .map(|f| Peer {
            ip: f.ip,
            port: f.port,
            node: node_name(template, f),
        })
        .filter(|peer| !this.is_self(peer))
        .collect();
    peers.sort_by(|a, b| (a.ip, a.port, &a.node).cmp(&(b.ip, b.port, &b.node)));
    // Two SRV records for one target, or one address under two names: one backend server.
    peers.dedup_by(|later, earlier| later.ip == earlier.ip && later.port == earlier.port);
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ip: &str, port: u16, host: Option<&str>, target: Option<&str>) -> Found {
        Found {
            ip: ip.parse().unwrap(),
            port,
            host: host.map(str::to_string),
            target: target.map(str::to_string),
        }
    }

    #[test]
    fn templates_fill_ip_host_and_target() {
        let srv = found(
            "10.0.0.5",
            1883,
            Some("0a000005.addr.dc1.consul"),
            Some("0a000005.addr.dc1.consul."),
        );
        assert_eq!(node_name("emqx@{ip}", &srv), "emqx@10.0.0.5");
        assert_eq!(
            node_name("emqx@{host}", &srv),
            "emqx@0a000005.addr.dc1.consul"
        );
        assert_eq!(node_name("{target}", &srv), "0a000005.addr.dc1.consul.");
        assert_eq!(node_name("app@{ip}:{ip}", &srv), "app@10.0.0.5:10.0.0.5");

        // IPv6 is written plainly, without brackets.
        let v6 = found("fd00::5", 1883, None, None);
        assert_eq!(node_name("emqx@{ip}", &v6), "emqx@fd00::5");
        // No host or target: both fall back to the address.
        assert_eq!(node_name("{host}/{target}", &v6), "fd00::5/fd00::5");
        // An A record: the target falls back to the host.
        let a = found(
            "10.0.0.7",
            1883,
            Some("emqx-headless.ns.svc.cluster.local"),
            None,
        );
        assert_eq!(
            node_name("{target}", &a),
            "emqx-headless.ns.svc.cluster.local"
        );
    }

    #[test]
    fn identity_prefers_name_then_advertise_then_pod_ip() {
        let named = NodeConfig {
            name: Some("emqx@node-1".into()),
            advertise: Some("10.0.0.1".parse().unwrap()),
        };
        let this = SelfNode::resolve(&named, Some("emqx@{ip}"), Some("10.9.9.9"));
        assert_eq!(this.name.as_deref(), Some("emqx@node-1"));
        assert_eq!(this.ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(this.current_node(), "emqx@node-1");

        let advertised = NodeConfig {
            name: None,
            advertise: Some("10.0.0.1".parse().unwrap()),
        };
        let this = SelfNode::resolve(&advertised, Some("emqx@{ip}"), Some("10.9.9.9"));
        assert_eq!(this.current_node(), "emqx@10.0.0.1");

        let bare = NodeConfig {
            name: None,
            advertise: None,
        };
        let this = SelfNode::resolve(&bare, Some("emqx@{ip}"), Some(" 10.9.9.9\n"));
        assert_eq!(this.current_node(), "emqx@10.9.9.9");
        assert_eq!(this.ip, Some("10.9.9.9".parse().unwrap()));

        let this = SelfNode::resolve(&bare, None, Some("10.9.9.9"));
        assert_eq!(this.current_node(), "10.9.9.9");

        let this = SelfNode::resolve(&bare, Some("emqx@{ip}"), Some("not-an-ip"));
        assert_eq!(this, SelfNode::default());
        assert_eq!(this.current_node(), "unknown");
    }

    #[test]
    fn this_node_is_left_out_by_address_or_name() {
        let answer = Discovered {
            records: vec![
                found("10.0.0.7", 1883, None, None),
                found("10.0.0.5", 1883, None, None),
                found("10.0.0.6", 1883, None, None),
                // The same peer twice (two SRV records for one target).
                found("10.0.0.7", 1883, None, None),
            ],
            ttl: None,
        };
        let by_ip = SelfNode {
            name: None,
            ip: Some("10.0.0.5".parse().unwrap()),
        };
        let nodes: Vec<String> = peers(&answer, "emqx@{ip}", &by_ip)
            .into_iter()
            .map(|p| p.node)
            .collect();
        assert_eq!(nodes, ["emqx@10.0.0.6", "emqx@10.0.0.7"]);

        let by_name = SelfNode {
            name: Some("emqx@10.0.0.6".into()),
            ip: None,
        };
        let nodes: Vec<String> = peers(&answer, "emqx@{ip}", &by_name)
            .into_iter()
            .map(|p| p.node)
            .collect();
        assert_eq!(nodes, ["emqx@10.0.0.5", "emqx@10.0.0.7"]);

        let nobody = SelfNode::default();
        assert_eq!(peers(&answer, "emqx@{ip}", &nobody).len(), 3);
    }
}
