//! The `dns` source: SRV, A or AAAA records through hickory-resolver, from configured
//! nameservers (Consul's DNS on 127.0.0.1:8600, a cluster DNS) or the system's.
//!
//! Every refresh really asks: the resolver's cache is off (size 0, and cleared before each
//! refresh), and the refresh interval follows the answer's TTL instead. Each configured
//! nameserver is asked over UDP with TCP on the same port, so a truncated UDP answer is asked
//! again over TCP (hickory's name-server pool does that when both are configured). NXDOMAIN and
//! an empty answer are answers (no peers); SERVFAIL, REFUSED, timeouts and connection errors are
//! errors.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::{Discover, Discovered, DiscoveryError, Found};
use crate::config::{DnsDiscovery, DnsRecord};

/// How long one query waits for its answer before the resolver tries again.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times the resolver asks before a refresh fails.
const DNS_ATTEMPTS: usize = 2;

/// A DNS source.
pub struct DnsSource {
    record: DnsRecord,
    query: String,
    nameservers: Vec<SocketAddr>,
    port: Option<u16>,
    interval: Duration,
    max_interval: Duration,
    timeout: Duration,
    /// Built at the first refresh: a missing system configuration is then a counted, retried
    /// refresh error instead of a start-up failure.
    resolver: Option<TokioResolver>,
}

impl DnsSource {
    /// The source for `config`, refreshed between `interval` and `max_interval` as the TTL says.
    pub fn new(config: &DnsDiscovery, interval: Duration, max_interval: Duration) -> DnsSource {
        DnsSource {
            record: config.record,
            query: config.query.clone(),
            nameservers: config.nameservers.clone(),
            port: config.port,
            interval,
            max_interval,
            timeout: DEFAULT_DNS_TIMEOUT,
            resolver: None,
        }
    }

    /// The same source with another per-query timeout (tests use short ones).
    pub fn with_timeout(mut self, timeout: Duration) -> DnsSource {
        self.timeout = timeout;
        self.resolver = None;
        self
    }

    fn resolver(&mut self) -> Result<TokioResolver, DiscoveryError> {
        if let Some(resolver) = &self.resolver {
            return Ok(resolver.clone());
        }
        let resolver = build_resolver(&self.nameservers, self.timeout)
            .map_err(|e| DiscoveryError::Resolver(e.to_string()))?;
        self.resolver = Some(resolver.clone());
        Ok(resolver)
    }

    /// The name to ask for. A dotted name is taken as fully qualified, so the system's search
    /// domains are not tried first (each would cost a query, and a search-domain answer would
    /// not be the configured service); a single label goes through the search list.
    fn name(&self) -> Result<Name, DiscoveryError> {
        let mut name = Name::from_utf8(&self.query).map_err(|e| self.failed(e))?;
        if self.query.contains('.') {
            name.set_fqdn(true);
        }
        Ok(name)
    }

    fn failed(&self, reason: impl ToString) -> DiscoveryError {
        DiscoveryError::Dns {
            query: self.query.clone(),
            reason: reason.to_string(),
        }
    }

    /// SRV: each record's target and port; the target's addresses from the additional section
    /// when the server sent them (Consul does), else from an A + AAAA lookup of the target.
    async fn srv(
        &self,
        resolver: &TokioResolver,
        name: Name,
    ) -> Result<Discovered, DiscoveryError> {
        let Some(lookup) =
            answered(resolver.lookup(name, RecordType::SRV).await).map_err(|e| self.failed(e))?
        else {
            return Ok(Discovered::default());
        };
        let mut ttl = Ttl::default();
        let mut resolved: HashMap<Name, Vec<IpAddr>> = HashMap::new();
        let mut records = Vec::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            // RFC 2782: a target of "." means the service is decidedly not available there.
            if srv.target.is_root() {
                continue;
            }
            ttl.add(record);
            let addresses = match resolved.get(&srv.target) {
                Some(addresses) => addresses.clone(),
                None => {
                    let glue = addresses(lookup.additionals(), &srv.target, &mut ttl);
                    let addresses = if glue.is_empty() {
                        self.resolve_target(resolver, &srv.target, &mut ttl).await?
                    } else {
                        glue
                    };
                    resolved.insert(srv.target.clone(), addresses.clone());
                    addresses
                }
            };
            let target = srv.target.to_utf8();
            let host = target.trim_end_matches('.').to_string();
            records.extend(addresses.into_iter().map(|ip| Found {
                ip,
                port: srv.port,
                host: Some(host.clone()),
                target: Some(target.clone()),
            }));
        }
        Ok(Discovered {
            records,
            ttl: ttl.get(),
        })
    }

    /// The A and AAAA addresses of an SRV target the server sent no additional records for. A
    /// target without addresses is left out; a failed lookup fails the refresh, so that the last
    /// good set is kept rather than a partial one published.
    async fn resolve_target(
        &self,
        resolver: &TokioResolver,
        target: &Name,
        ttl: &mut Ttl,
    ) -> Result<Vec<IpAddr>, DiscoveryError> {
        match resolver.lookup_ip(target.clone()).await {
            Ok(found) => Ok(addresses(found.as_lookup().answers(), target, ttl)),
            Err(e) if e.is_no_records_found() => {
                tracing::debug!(query = %self.query, %target, "SRV target has no address");
                Ok(Vec::new())
            }
            Err(e) => Err(self.failed(format!("resolving SRV target {target}: {e}"))),
        }
    }

    /// A or AAAA: each address with the source's port.
    async fn addresses(
        &self,
        resolver: &TokioResolver,
        name: Name,
        kind: RecordType,
    ) -> Result<Discovered, DiscoveryError> {
        let Some(lookup) =
            answered(resolver.lookup(name, kind).await).map_err(|e| self.failed(e))?
        else {
            return Ok(Discovered::default());
        };
        let host = self.query.trim_end_matches('.').to_string();
        let mut ttl = Ttl::default();
        // Every address in the answer, whatever name it is under: a CNAME chain ends at
        // another name.
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| {
                let ip = address(record).filter(|_| record.record_type() == kind)?;
                ttl.add(record);
                Some(Found {
                    ip,
                    // Validation requires a port for A/AAAA sources; 0 only if it ever did not.
                    port: self.port.unwrap_or(0),
                    host: Some(host.clone()),
                    target: None,
                })
            })
            .collect();
        Ok(Discovered {
            records,
            ttl: ttl.get(),
        })
    }
}

impl Discover for DnsSource {
    async fn discover(&mut self) -> Result<Discovered, DiscoveryError> {
        let resolver = self.resolver()?;
        // The cache is sized 0; clearing it as well makes "every refresh asks" not depend on
        // how the cache treats that size.
        resolver.clear_cache();
        let name = self.name()?;
        match self.record {
            DnsRecord::Srv => self.srv(&resolver, name).await,
            DnsRecord::A => self.addresses(&resolver, name, RecordType::A).await,
            DnsRecord::Aaaa => self.addresses(&resolver, name, RecordType::AAAA).await,
        }
    }

    fn after_success(&mut self, found: &Discovered) -> Option<Duration> {
        let ttl = found.ttl.unwrap_or(self.interval);
        Some(ttl.clamp(self.interval, self.max_interval))
    }

    fn after_error(&mut self) -> Duration {
        self.interval
    }
}

/// A resolver asking `nameservers` (UDP and TCP on each one's port), or the system's when the
/// list is empty, without a cache.
fn build_resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, NetError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        );
        // Configured nameservers are the only truth; /etc/hosts is for the system resolver.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    options.timeout = timeout;
    options.attempts = DNS_ATTEMPTS;
    // SRV targets without additional records: ask for both families, a peer may have either.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build()
}

/// The lookup, `None` for NXDOMAIN or an empty answer (an answer: no peers), or the error.
fn answered(result: Result<Lookup, NetError>) -> Result<Option<Lookup>, NetError> {
    match result {
        Ok(lookup) => Ok(Some(lookup)),
        Err(e) if e.is_no_records_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The address a record holds, if it is an A or AAAA record.
fn address(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// The addresses `records` hold for `name`, their TTLs counted.
fn addresses(records: &[Record], name: &Name, ttl: &mut Ttl) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for record in records.iter().filter(|r| &r.name == name) {
        if let Some(ip) = address(record)
            && !found.contains(&ip)
        {
            ttl.add(record);
            found.push(ip);
        }
    }
    found
}

/// The smallest TTL of the records an answer was built from.
#[derive(Default)]
struct Ttl(Option<u32>);

impl Ttl {
    fn add(&mut self, record: &Record) {
        self.0 = Some(self.0.map_or(record.ttl, |ttl| ttl.min(record.ttl)));
    }

    fn get(&self) -> Option<Duration> {
        self.0.map(|secs| Duration::from_secs(u64::from(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_dns::{Mode, TestDns};
    use hickory_resolver::net::xfer::Protocol;

    fn source(dns: &TestDns, record: DnsRecord, query: &str, port: Option<u16>) -> DnsSource {
        let config = DnsDiscovery {
            record,
            query: query.into(),
            nameservers: vec![dns.addr],
            port,
        };
        DnsSource::new(&config, Duration::from_millis(100), Duration::from_secs(1))
            .with_timeout(Duration::from_millis(300))
    }

    fn ips(found: &Discovered) -> Vec<String> {
        let mut ips: Vec<String> = found.records.iter().map(|f| f.ip.to_string()).collect();
        ips.sort();
        ips
    }

    #[tokio::test]
    async fn srv_answer_uses_the_additional_records() {
        let dns = TestDns::start().await;
        dns.set_consul_srv(
            "emqx.service.consul",
            &[("10.0.0.5", 1883), ("10.0.0.6", 1884)],
        );
        let mut srv = source(&dns, DnsRecord::Srv, "emqx.service.consul", None);
        let found = srv.discover().await.unwrap();
        assert_eq!(ips(&found), ["10.0.0.5", "10.0.0.6"]);
        let first = found.records.iter().find(|f| f.port == 1883).unwrap();
        assert_eq!(first.ip.to_string(), "10.0.0.5");
        assert_eq!(first.host.as_deref(), Some("0a000005.addr.dc1.consul"));
        assert_eq!(first.target.as_deref(), Some("0a000005.addr.dc1.consul."));
        assert_eq!(found.ttl, Some(Duration::from_secs(1)));
        // One SRV query answered everything: no separate address lookups.
        assert_eq!(dns.count(RecordType::SRV), 1);
        assert_eq!(dns.count(RecordType::A) + dns.count(RecordType::AAAA), 0);

        // Asked again, it asks again (no resolver cache).
        srv.discover().await.unwrap();
        assert_eq!(dns.count(RecordType::SRV), 2);
    }

    #[tokio::test]
    async fn srv_targets_without_additionals_are_resolved_v4_and_v6() {
        let dns = TestDns::start().await;
        dns.set_glue(false);
        dns.set_consul_srv(
            "emqx.service.consul",
            &[("10.0.0.5", 1883), ("fd00::6", 1883)],
        );
        let found = source(&dns, DnsRecord::Srv, "emqx.service.consul", None)
            .discover()
            .await
            .unwrap();
        assert_eq!(ips(&found), ["10.0.0.5", "fd00::6"]);
        assert!(dns.count(RecordType::A) >= 2, "{:?}", dns.asked());
        assert!(dns.count(RecordType::AAAA) >= 2, "{:?}", dns.asked());
    }

    #[tokio::test]
    async fn kubernetes_headless_a_and_aaaa_records() {
        let dns = TestDns::start().await;
        let name = "emqx-headless.ns.svc.cluster.local";
        dns.set_a(name, &["10.0.0.7", "10.0.0.5"]);
        dns.set_aaaa("emqx-v6.ns.svc.cluster.local", &["fd00::5"]);
        let found = source(&dns, DnsRecord::A, name, Some(1883))
            .discover()
            .await
            .unwrap();
        assert_eq!(ips(&found), ["10.0.0.5", "10.0.0.7"]);
        assert!(
            found
                .records
                .iter()
                .all(|f| f.port == 1883 && f.host.as_deref() == Some(name) && f.target.is_none())
        );

        let found = source(
            &dns,
            DnsRecord::Aaaa,
            "emqx-v6.ns.svc.cluster.local.",
            Some(1883),
        )
        .discover()
        .await
        .unwrap();
        assert_eq!(ips(&found), ["fd00::5"]);
        assert_eq!(
            found.records[0].host.as_deref(),
            Some("emqx-v6.ns.svc.cluster.local")
        );
    }

    #[tokio::test]
    async fn nxdomain_and_empty_answers_are_answers() {
        let dns = TestDns::start().await;
        dns.set_a("only-a.service.consul", &["10.0.0.5"]);
        let nxdomain = source(&dns, DnsRecord::Srv, "missing.service.consul", None)
            .discover()
            .await;
        assert_eq!(nxdomain, Ok(Discovered::default()));
        let empty = source(&dns, DnsRecord::Srv, "only-a.service.consul", None)
            .discover()
            .await;
        assert_eq!(empty, Ok(Discovered::default()));
        let empty = source(&dns, DnsRecord::Aaaa, "only-a.service.consul", Some(1883))
            .discover()
            .await;
        assert_eq!(empty, Ok(Discovered::default()));
    }

    #[tokio::test]
    async fn servfail_and_a_stopped_server_are_errors() {
        let mut dns = TestDns::start().await;
        dns.set_consul_srv("emqx.service.consul", &[("10.0.0.5", 1883)]);
        let mut srv = source(&dns, DnsRecord::Srv, "emqx.service.consul", None);
        dns.set_mode(Mode::ServFail);
        let error = srv.discover().await.unwrap_err();
        assert!(matches!(error, DiscoveryError::Dns { .. }), "{error}");

        dns.set_mode(Mode::Answer);
        assert_eq!(ips(&srv.discover().await.unwrap()), ["10.0.0.5"]);

        dns.stop().await;
        let error = srv.discover().await.unwrap_err();
        assert!(matches!(error, DiscoveryError::Dns { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let dns = TestDns::start().await;
        dns.set_consul_srv("emqx.service.consul", &[("10.0.0.5", 1883)]);
        dns.set_mode(Mode::TruncateUdp);
        let found = source(&dns, DnsRecord::Srv, "emqx.service.consul", None)
            .discover()
            .await
            .unwrap();
        assert_eq!(ips(&found), ["10.0.0.5"]);
        let asked = dns.asked();
        assert!(
            asked.iter().any(|a| a.protocol == Protocol::Udp),
            "{asked:?}"
        );
        assert!(
            asked.iter().any(|a| a.protocol == Protocol::Tcp),
            "{asked:?}"
        );
    }

    #[test]
    fn refresh_follows_the_ttl_between_interval_and_max_interval() {
        let config = DnsDiscovery {
            record: DnsRecord::Srv,
            query: "emqx.service.consul".into(),
            nameservers: vec![],
            port: None,
        };
        let mut dns = DnsSource::new(&config, Duration::from_secs(5), Duration::from_secs(60));
        let ttl = |secs| Discovered {
            records: vec![],
            ttl: Some(Duration::from_secs(secs)),
        };
        assert_eq!(dns.after_success(&ttl(1)), Some(Duration::from_secs(5)));
        assert_eq!(dns.after_success(&ttl(30)), Some(Duration::from_secs(30)));
        assert_eq!(dns.after_success(&ttl(3600)), Some(Duration::from_secs(60)));
        assert_eq!(
            dns.after_success(&Discovered::default()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(dns.after_error(), Duration::from_secs(5));
    }
}
