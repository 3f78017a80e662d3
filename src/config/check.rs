//! Validation of `[backend.check]`: the probe kind and the keys that belong to it.

use super::fields::{Problems, bounded, misplaced, positive_duration};
use super::file::FileCheck;
use super::{
    CheckConfig, CheckKind, DEFAULT_CHECK_FAST_INTERVAL, DEFAULT_CHECK_INTERVAL,
    DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL, DEFAULT_RISE, HttpCheck, MqttCheck,
};

/// The MQTT probe's client id unless configured: per host, so that the probes of several
/// brokerside nodes in one EMQX cluster do not take each other's sessions over.
fn default_client_id() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed alongside; the
    // result is only read up to the first NUL within it.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let host = if rc == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    if host.is_empty() {
        "brokerside-check".to_string()
    } else {
        format!("brokerside-check-{host}")
    }
}

/// Validates one `[backend.check]` table found at `path`.
pub(super) fn check(file: &FileCheck, path: &str, problems: &mut Problems) -> Option<CheckConfig> {
    let kind_name = file.kind.as_deref().unwrap_or("tcp");
    misplaced(
        problems,
        path,
        kind_name,
        &[
            ("client_id", file.client_id.is_some(), "mqtt"),
            ("username", file.username.is_some(), "mqtt"),
            ("password", file.password.is_some(), "mqtt"),
            ("loopback_topic", file.loopback_topic.is_some(), "mqtt"),
            ("port", file.port.is_some(), "http"),
            ("path", file.path.is_some(), "http"),
            ("expect_status", file.expect_status.is_some(), "http"),
            ("expect_body", file.expect_body.is_some(), "http"),
        ],
    );
    let kind = match kind_name {
        "tcp" => Some(CheckKind::Tcp),
        "amqp" => Some(CheckKind::Amqp),
        "mqtt" => {
            if file.password.is_some() && file.username.is_none() {
                problems.add(format!("{path}.password"), "needs `username`");
            }
            if let Some(topic) = &file.loopback_topic
                && (topic.is_empty() || topic.contains(['+', '#']))
            {
                problems.add(
                    format!("{path}.loopback_topic"),
                    format!("`{topic}` must be a plain topic name, without wildcards"),
                );
            }
            Some(CheckKind::Mqtt(MqttCheck {
                client_id: file.client_id.clone().unwrap_or_else(default_client_id),
                username: file.username.clone(),
                password: file.password.clone(),
                loopback_topic: file.loopback_topic.clone(),
            }))
        }
        "http" => {
            let request_path = file.path.clone().unwrap_or_else(|| "/".to_string());
            if !request_path.starts_with('/') {
                problems.add(
                    format!("{path}.path"),
                    format!("`{request_path}` must start with '/'"),
                );
            }
            let port = file
                .port
                .map(|p| bounded(Some(p), &format!("{path}.port"), 0, 1..=65_535, problems) as u16);
            let expect_status = bounded(
                file.expect_status,
                &format!("{path}.expect_status"),
                200,
                100..=599,
                problems,
            ) as u16;
            Some(CheckKind::Http(HttpCheck {
                port,
                path: request_path,
                expect_status,
                expect_body: file.expect_body.clone(),
            }))
        }
        other => {
            problems.add(
                format!("{path}.kind"),
                format!("`{other}` is not one of tcp, mqtt, http, amqp"),
            );
            None
        }
    };
    let interval = positive_duration(
        file.interval.as_deref(),
        &format!("{path}.interval"),
        DEFAULT_CHECK_INTERVAL,
        problems,
    );
    let fast_interval = positive_duration(
        file.fast_interval.as_deref(),
        &format!("{path}.fast_interval"),
        DEFAULT_CHECK_FAST_INTERVAL.min(interval),
        problems,
    );
    let timeout = positive_duration(
        file.timeout.as_deref(),
        &format!("{path}.timeout"),
        DEFAULT_CHECK_TIMEOUT,
        problems,
    );
    let rise = bounded(
        file.rise,
        &format!("{path}.rise"),
        DEFAULT_RISE,
        1..=100,
        problems,
    );
    let fall = bounded(
        file.fall,
        &format!("{path}.fall"),
        DEFAULT_FALL,
        1..=100,
        problems,
    );
    Some(CheckConfig {
        kind: kind?,
        interval,
        fast_interval,
        timeout,
        rise,
        fall,
    })
}
