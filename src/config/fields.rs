//! Field-level checks shared by every section: each reads one value, records a problem under
//! the field's path when the value is wrong, and returns what it could make of it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ConfigError, parse_duration};

/// Accumulates problems while the config is checked.
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A TOML syntax error as one line with its position.
pub(super) fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

/// Decodes one table, naming the offending key on failure (`listener[0].max_connections`).
pub(super) fn decode<T: DeserializeOwned>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            let inner = error.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            // serde's messages may run on with "in `field`" lines; the path already says where.
            let message = error.into_inner().to_string();
            let first_line = message.lines().next().unwrap_or("invalid value").trim();
            problems.add(full, first_line);
            None
        }
    }
}

/// Decodes an optional table such as `[drain]`: absent or undecodable (the problem recorded)
/// means its defaults.
pub(super) fn decode_table<T: DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    problems: &mut Problems,
) -> T {
    table
        .get(key)
        .and_then(|value| decode(value, key, problems))
        .unwrap_or_default()
}

/// Decodes an array of tables, keeping a slot per element so indices in messages stay true.
pub(super) fn decode_array<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    problems: &mut Problems,
) -> Vec<Option<T>> {
    match table.get(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| decode(item, &format!("{key}[{i}]"), problems))
            .collect(),
        Some(_) => {
            problems.add(key, format!("must be an array of tables: write [[{key}]]"));
            Vec::new()
        }
    }
}

pub(super) fn unique_names(names: &[Option<&str>], section: &str, problems: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name
            && !seen.insert(*name)
        {
            problems.add(
                format!("{section}[{i}].name"),
                format!("`{name}` is used by an earlier {section}"),
            );
        }
    }
}

pub(super) fn name(value: Option<&str>, path: &str, problems: &mut Problems) -> Option<String> {
    let Some(value) = value else {
        problems.add(path, "is required");
        return None;
    };
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        problems.add(
            path,
            format!("`{value}` must be non-empty and use only letters, digits, '-', '_' and '.'"),
        );
        return None;
    }
    Some(value.to_string())
}

pub(super) fn socket_addr(value: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                path,
                format!(
                    "`{value}` is not an address with a port, such as 0.0.0.0:1883 or [::]:1883"
                ),
            );
            None
        }
    }
}

pub(super) fn duration(
    value: Option<&str>,
    path: &str,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(message)) => {
            problems.add(path, message);
            default
        }
    }
}

pub(super) fn bounded(
    value: Option<i64>,
    path: &str,
    default: u32,
    range: std::ops::RangeInclusive<i64>,
    problems: &mut Problems,
) -> u32 {
    match value {
        None => default,
        Some(v) if range.contains(&v) => v as u32,
        Some(v) => {
            problems.add(
                path,
                format!("{v} is out of range {}..={}", range.start(), range.end()),
            );
            default
        }
    }
}

/// One of a fixed set of words: `choices` pairs each word with its value, the first being the
/// default when the key is absent (and what a wrong word is taken as, its problem recorded).
pub(super) fn keyword<T: Copy>(
    value: Option<&str>,
    path: &str,
    choices: &[(&str, T)],
    problems: &mut Problems,
) -> T {
    let default = choices[0].1;
    let Some(value) = value else {
        return default;
    };
    match choices.iter().find(|(word, _)| *word == value) {
        Some((_, chosen)) => *chosen,
        None => {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            problems.add(
                path,
                format!("`{value}` is not one of {}", words.join(", ")),
            );
            default
        }
    }
}

/// A list of `ip:port` addresses; `None` in a slot whose text is not one.
pub(super) fn socket_addrs(
    list: &[String],
    path: &str,
    problems: &mut Problems,
) -> Vec<Option<SocketAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| socket_addr(s, &format!("{path}[{i}]"), problems))
        .collect()
}

/// A duration that must be more than zero.
pub(super) fn positive_duration(
    value: Option<&str>,
    path: &str,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let parsed = duration(value, path, default, problems);
    if parsed.is_zero() {
        problems.add(path, "must be more than 0s");
    }
    parsed
}

/// Reports each key that is set but belongs to another `kind` (`owner` may list several, as
/// `"a|b"`): `<path>.<key>: only applies to kind = "a"`.
pub(super) fn misplaced(
    problems: &mut Problems,
    path: &str,
    kind: &str,
    keys: &[(&str, bool, &str)],
) {
    for (key, set, owner) in keys {
        if *set && !owner.split('|').any(|o| o == kind) {
            problems.add(
                format!("{path}.{key}"),
                format!(
                    "only applies to kind = \"{}\"",
                    owner.replace('|', "\" or \"")
                ),
            );
        }
    }
}
