//! Choosing a certificate by the client's SNI name: exact names first, then `*.` wildcards one
//! label deep, then the default certificate.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of one listener, by name.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Lower-case names, `*.example.com` for wildcards; the first entry for a name wins.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver serving `default` unless a name of `names` matches.
    pub fn new(default: Arc<CertifiedKey>, names: Vec<(String, Arc<CertifiedKey>)>) -> SniResolver {
        let mut by_name = HashMap::new();
        for (name, key) in names {
            by_name.entry(name).or_insert(key);
        }
        SniResolver { default, by_name }
    }

    /// The certificate for `name` (already lower case, as rustls gives it).
    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.by_name.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.by_name.get(&format!("*.{parent}"))
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = client_hello
            .server_name()
            .and_then(|name| self.lookup(name))
            .unwrap_or(&self.default);
        Some(Arc::clone(chosen))
    }
}
