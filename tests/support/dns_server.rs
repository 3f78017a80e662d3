//! An in-process DNS server for tests, built on hickory-server: UDP and TCP on one loopback
//! port (like Consul's 8600), records that can change while it runs, Consul-style SRV answers
//! with the targets' addresses in the ADDITIONAL section, NXDOMAIN for unknown names, an empty
//! answer for a known name without the asked type, and modes that answer SERVFAIL or set TC on
//! UDP answers. It counts the queries it gets by type and transport.
//!
//! The crate's unit tests include this file too (`src/discovery/mod.rs`, with `#[path]`), so
//! it stays self-contained: it needs only hickory-server (a dev-dependency) and nothing else
//! from `tests/support`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the records.
    Answer,
    /// SERVFAIL to everything.
    ServFail,
    /// UDP answers are empty with TC set, so the client must ask over TCP.
    TruncateUdp,
}

/// One query the server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Over UDP or TCP.
    pub protocol: Protocol,
    /// The type asked for.
    pub kind: RecordType,
    /// The name asked for, lower case with the trailing dot.
    pub name: String,
}

#[derive(Debug)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<Record>>,
    /// Whether SRV answers carry the targets' A/AAAA records in ADDITIONAL (Consul does).
    glue: bool,
    mode: Mode,
    asked: Vec<Asked>,
}

/// A running test DNS server.
pub struct TestDns {
    /// The address both UDP and TCP listen on.
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    server: Option<Server<Handler>>,
}

/// The TTL of the records the helpers set.
pub const TTL: u32 = 1;

fn key(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

fn name(text: &str) -> Name {
    Name::from_utf8(key(text)).expect("a valid test name")
}

impl TestDns {
    /// Starts a server on 127.0.0.1 with no records.
    pub async fn start() -> TestDns {
        let zone = Arc::new(Mutex::new(Zone {
            records: HashMap::new(),
            glue: true,
            mode: Mode::Answer,
            asked: Vec::new(),
        }));
        // UDP on a free port, then TCP on the same one; another process may hold that TCP port.
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(Handler {
            zone: Arc::clone(&zone),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        TestDns {
            addr,
            zone,
            server: Some(server),
        }
    }

    /// Replaces the records of type `kind` at `name` (an empty list removes them).
    pub fn set(&self, owner: &str, kind: RecordType, data: Vec<RData>) {
        let owner_name = name(owner);
        let records = data
            .into_iter()
            .map(|d| Record::from_rdata(owner_name.clone(), TTL, d))
            .collect::<Vec<_>>();
        let mut zone = self.zone.lock().unwrap();
        if records.is_empty() {
            zone.records.remove(&(key(owner), kind));
        } else {
            zone.records.insert((key(owner), kind), records);
        }
    }

    /// Sets A records for `owner`.
    pub fn set_a(&self, owner: &str, ips: &[&str]) {
        self.set_ips(owner, RecordType::A, ips);
    }

    /// Sets AAAA records for `owner`.
    pub fn set_aaaa(&self, owner: &str, ips: &[&str]) {
        self.set_ips(owner, RecordType::AAAA, ips);
    }

    fn set_ips(&self, owner: &str, kind: RecordType, ips: &[&str]) {
        let data = ips
            .iter()
            .map(|ip| match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            })
            .collect();
        self.set(owner, kind, data);
    }

    /// Consul-style SRV records for `service`: one per `(ip, port)`, target
    /// `<hex of the IPv4 address>.addr.dc1.consul.` (or the IPv6 address's hex), whose A/AAAA
    /// record is set too. Replaces the service's previous SRV records.
    pub fn set_consul_srv(&self, service: &str, peers: &[(&str, u16)]) {
        let mut srv = Vec::new();
        for (ip, port) in peers {
            let ip: IpAddr = ip.parse().unwrap();
            let hex: String = match ip {
                IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
                IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
            };
            let target = format!("{hex}.addr.dc1.consul.");
            match ip {
                IpAddr::V4(_) => self.set_a(&target, &[&ip.to_string()]),
                IpAddr::V6(_) => self.set_aaaa(&target, &[&ip.to_string()]),
            }
            srv.push(RData::SRV(SRV::new(1, 1, *port, name(&target))));
        }
        self.set(service, RecordType::SRV, srv);
    }

    /// Whether SRV answers carry the targets' addresses in ADDITIONAL.
    pub fn set_glue(&self, glue: bool) {
        self.zone.lock().unwrap().glue = glue;
    }

    /// Changes how the server answers.
    pub fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = mode;
    }

    /// The queries so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.zone.lock().unwrap().asked.clone()
    }

    /// How many queries of type `kind` the server got.
    pub fn count(&self, kind: RecordType) -> usize {
        self.asked().iter().filter(|a| a.kind == kind).count()
    }

    /// Stops listening: later queries get no answer (UDP) or a refused connection (TCP).
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}

struct Handler {
    zone: Arc<Mutex<Zone>>,
}

impl Handler {
    /// The response header and sections for `request`, recording the query.
    fn answer(&self, request: &Request) -> (Metadata, Vec<Record>, Vec<Record>) {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return (metadata, Vec::new(), Vec::new());
        };
        let owner = key(&Name::from(query.name().clone()).to_ascii());
        let kind = query.query_type();
        let mut zone = self.zone.lock().unwrap();
        zone.asked.push(Asked {
            protocol: request.protocol(),
            kind,
            name: owner.clone(),
        });
        match zone.mode {
            Mode::ServFail => {
                metadata.response_code = ResponseCode::ServFail;
                return (metadata, Vec::new(), Vec::new());
            }
            Mode::TruncateUdp if request.protocol() == Protocol::Udp => {
                metadata.truncation = true;
                return (metadata, Vec::new(), Vec::new());
            }
            Mode::TruncateUdp | Mode::Answer => {}
        }
        if !zone.records.keys().any(|(n, _)| *n == owner) {
            metadata.response_code = ResponseCode::NXDomain;
            return (metadata, Vec::new(), Vec::new());
        }
        let answers = zone
            .records
            .get(&(owner, kind))
            .cloned()
            .unwrap_or_default();
        let mut additionals = Vec::new();
        if zone.glue {
            for record in &answers {
                if let RData::SRV(srv) = &record.data {
                    let target = key(&srv.target.to_ascii());
                    for kind in [RecordType::A, RecordType::AAAA] {
                        if let Some(glue) = zone.records.get(&(target.clone(), kind)) {
                            additionals.extend(glue.iter().cloned());
                        }
                    }
                }
            }
        }
        (metadata, answers, additionals)
    }
}

// Written out instead of with `#[async_trait]`, which is not a dependency of this crate: this
// is the signature that macro generates for the trait's `async fn handle_request`.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        mut response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let (metadata, answers, additionals) = self.answer(request);
            let response = MessageResponseBuilder::from_message_request(request).build(
                metadata,
                answers.iter(),
                [].iter(),
                [].iter(),
                additionals.iter(),
            );
            match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(_) => ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                }),
            }
        })
    }
}
