//! `[listener.tls]`: the shape of the table (paths, versions, names). The files themselves are
//! read and checked by `crate::tls` when a config is loaded, checked or reloaded, so that a
//! config that only names them stays a pure value.

use std::path::PathBuf;

use super::fields::{Problems, duration, positive_duration};
use super::file::{FileSni, FileTls};
use super::{
    CertFiles, ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_TLS_WATCH, SniCert, TlsConfig,
    TlsVersion,
};

/// Validates one `[listener.tls]` at `path` (`listener[1].tls`).
pub(super) fn tls(file: &FileTls, path: &str, problems: &mut Problems) -> Option<TlsConfig> {
    let cert = cert_files(file.cert.as_deref(), file.key.as_deref(), path, problems);
    let sni: Vec<Option<SniCert>> = file
        .sni
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, sni)| sni_cert(sni, &format!("{path}.sni[{i}]"), problems))
        .collect();
    let client_ca = file.client_ca.as_deref().map(PathBuf::from);
    let client_auth = match (file.client_auth.as_deref(), &client_ca) {
        (None | Some("required"), _) => ClientAuth::Required,
        (Some("optional"), _) => ClientAuth::Optional,
        (Some(other), _) => {
            problems.add(
                format!("{path}.client_auth"),
                format!("`{other}` is not one of required, optional"),
            );
            ClientAuth::Required
        }
    };
    if client_ca.is_none() {
        if file.client_auth.is_some() {
            problems.add(
                format!("{path}.client_auth"),
                "needs client_ca: the CA that client certificates are verified against",
            );
        }
        if file.crl.is_some() {
            problems.add(
                format!("{path}.crl"),
                "needs client_ca: revocation lists apply to client certificates",
            );
        }
    }
    let min_version = match file.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            problems.add(
                format!("{path}.min_version"),
                format!("`{other}` is not one of \"1.2\", \"1.3\""),
            );
            TlsVersion::V1_2
        }
    };
    let alpn = file.alpn.clone().unwrap_or_default();
    for (i, protocol) in alpn.iter().enumerate() {
        if protocol.is_empty() || protocol.len() > 255 {
            problems.add(format!("{path}.alpn[{i}]"), "must be 1 to 255 bytes long");
        }
    }
    let handshake_timeout = positive_duration(
        file.handshake_timeout.as_deref(),
        &format!("{path}.handshake_timeout"),
        DEFAULT_HANDSHAKE_TIMEOUT,
        problems,
    );
    let watch = duration(
        file.watch.as_deref(),
        &format!("{path}.watch"),
        DEFAULT_TLS_WATCH,
        problems,
    );
    let sni: Option<Vec<SniCert>> = sni.into_iter().collect();
    Some(TlsConfig {
        cert: cert?,
        sni: sni?,
        client_ca,
        client_auth,
        crl: file.crl.iter().flatten().map(PathBuf::from).collect(),
        min_version,
        alpn,
        handshake_timeout,
        watch: (!watch.is_zero()).then_some(watch),
        session_tickets: file.session_tickets.unwrap_or(false),
    })
}

fn cert_files(
    cert: Option<&str>,
    key: Option<&str>,
    path: &str,
    problems: &mut Problems,
) -> Option<CertFiles> {
    let mut required = |value: Option<&str>, key: &str| {
        let found = value.filter(|v| !v.is_empty()).map(PathBuf::from);
        if found.is_none() {
            problems.add(format!("{path}.{key}"), "is required (a PEM file)");
        }
        found
    };
    let cert = required(cert, "cert");
    let key = required(key, "key");
    Some(CertFiles {
        cert: cert?,
        key: key?,
    })
}

fn sni_cert(file: &FileSni, path: &str, problems: &mut Problems) -> Option<SniCert> {
    let names: Vec<String> = file
        .names
        .iter()
        .flatten()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let valid = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            problems.add(
                format!("{path}.names[{i}]"),
                format!("`{name}` is not a DNS name (a leading `*.` is allowed)"),
            );
        }
    }
    let files = cert_files(file.cert.as_deref(), file.key.as_deref(), path, problems)?;
    Some(SniCert { names, files })
}
