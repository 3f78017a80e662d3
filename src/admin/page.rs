//! The status page (`GET /`, `GET /haproxy_stats`): what a person on call reads at a glance, in
//! the spirit of HAProxy's stats page. It is drawn from the `/health` document, so the page, the
//! JSON and the text never disagree: the node, its listeners, its backend servers, the
//! discovered peers and sources, and the cluster guard, as tables. A browser gets one HTML page
//! (no external asset, every value escaped, a down server red and in words) that refreshes
//! itself; anything else (curl) gets the same tables as aligned text.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::state::PeerView;

/// How often the page fetches itself again, in seconds.
const REFRESH_SECONDS: u32 = 2;

/// One table of the page.
struct Table {
    title: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Row>,
    /// Said instead of the table when it has no rows.
    empty: &'static str,
}

impl Table {
    /// Whether the table has column names (the node table is key and value only).
    fn has_header(&self) -> bool {
        self.columns.iter().any(|column| !column.is_empty())
    }
}

/// One row; `alarm` marks a row that needs someone's attention (a server down, a partition).
struct Row {
    cells: Vec<String>,
    alarm: bool,
}

impl Row {
    fn new(cells: Vec<String>) -> Row {
        Row {
            cells,
            alarm: false,
        }
    }
}

/// The status page as HTML, from the `/health` document `health` and the discovered `peers`.
pub(super) fn html(health: &Value, peers: &[PeerView]) -> String {
    let now = SystemTime::now();
    let tables = tables(health, peers, now);
    let node = str_of(&health["node"]["name"]);
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>brokerside {}</title>\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>\
         <style>{STYLE}</style></head>\n<body data-polls=\"0\">\n",
        escape(&node)
    );
    out.push_str("<main id=\"status\">\n");
    let status = str_of(&health["status"]);
    let verdict_class = if status == "ok" { "ok" } else { "alarm" };
    let _ = writeln!(
        out,
        "<h1>brokerside <span class=\"node\">{}</span> <span class=\"verdict {verdict_class}\">{}</span></h1>",
        escape(&node),
        escape(&verdict(health))
    );
    for table in &tables {
        html_table(&mut out, table);
    }
    let _ = write!(
        out,
        "<p class=\"foot\">Drawn at {} UTC from <a href=\"/health\">/health</a>; \
         also <a href=\"/metrics\">/metrics</a>, <a href=\"/peers\">/peers</a>. \
         <span id=\"refreshed\">Refreshes every {REFRESH_SECONDS} s.</span></p>\n</main>\n",
        utc(unix(now))
    );
    // A few lines that fetch this page again and swap its tables in, so the page stays one
    // renderer (this module) and keeps the scroll position; without script, the meta refresh
    // above reloads it.
    let _ = write!(
        out,
        "<script>\n(function () {{\n  var polls = 0;\n  setInterval(function () {{\n    \
         fetch(location.pathname, {{headers: {{Accept: 'text/html'}}, cache: 'no-store'}})\n      \
         .then(function (r) {{ return r.text(); }})\n      .then(function (text) {{\n        \
         var next = new DOMParser().parseFromString(text, 'text/html').getElementById('status');\n        \
         if (!next) return;\n        document.getElementById('status').replaceWith(next);\n        \
         document.body.dataset.polls = ++polls;\n      }})\n      \
         .catch(function () {{ document.getElementById('refreshed').textContent = \
         'The sidecar does not answer: this page is stale.'; }});\n  }}, {}); \n}})();\n\
         </script>\n</body></html>\n",
        REFRESH_SECONDS * 1000
    );
    out
}

/// The same tables as aligned plain text.
pub(super) fn text(health: &Value, peers: &[PeerView]) -> String {
    let tables = tables(health, peers, SystemTime::now());
    let mut out = format!(
        "brokerside {}: {}\n",
        str_of(&health["node"]["name"]),
        verdict(health)
    );
    for table in &tables {
        out.push('\n');
        out.push_str(table.title);
        out.push('\n');
        if table.rows.is_empty() {
            out.push_str("  ");
            out.push_str(table.empty);
            out.push('\n');
            continue;
        }
        let mut widths: Vec<usize> = table.columns.iter().map(|c| c.chars().count()).collect();
        for row in &table.rows {
            for (width, cell) in widths.iter_mut().zip(&row.cells) {
                *width = (*width).max(one_line(cell).chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = String>| {
            let mut line = String::from(" ");
            for (cell, width) in cells.zip(&widths) {
                let _ = write!(line, " {cell:<width$}");
            }
            line.truncate(line.trim_end().len());
            line.push('\n');
            line
        };
        if table.has_header() {
            out.push_str(&line(&mut table.columns.iter().map(|c| c.to_string())));
        }
        for row in &table.rows {
            out.push_str(&line(&mut row.cells.iter().map(|c| one_line(c))));
        }
    }
    out
}

/// `OK`, or `UNAVAILABLE: <reason>`.
fn verdict(health: &Value) -> String {
    if health["status"] == "ok" {
        "OK".to_string()
    } else {
        format!("UNAVAILABLE: {}", str_of(&health["reason"]))
    }
}

/// Every table, in the order a person looks: the node, where clients come in, where they go,
/// who the peers are, and whether the cluster holds together.
fn tables(health: &Value, peers: &[PeerView], now: SystemTime) -> Vec<Table> {
    let now = unix(now);
    vec![
        node_table(health, now),
        listener_table(health),
        certificate_table(health, now),
        server_table(health, now),
        source_table(health, now),
        peer_table(peers),
        cluster_table(health),
    ]
}

fn node_table(health: &Value, now: f64) -> Table {
    let node = &health["node"];
    let config = &health["config"];
    let drain = &health["drain"];
    let pair = |key: &str, value: String| Row::new(vec![key.to_string(), value]);
    let mut rows = vec![
        pair("node", str_of(&node["name"])),
        pair("version", str_of(&node["version"])),
        pair(
            "uptime",
            format!(
                "{} (since {} UTC)",
                duration(node["uptime_seconds"].as_f64().unwrap_or(0.0)),
                utc(node["started_at"].as_f64().unwrap_or(0.0))
            ),
        ),
        pair(
            "config",
            format!(
                "generation {}, loaded {} UTC ({} ago){}",
                str_of(&config["generation"]),
                utc(config["loaded_at"].as_f64().unwrap_or(0.0)),
                duration(now - config["loaded_at"].as_f64().unwrap_or(now)),
                config["file"]
                    .as_str()
                    .map(|file| format!(" from {file}"))
                    .unwrap_or_else(|| " (embedded default)".to_string())
            ),
        ),
    ];
    let mut drain_row = pair(
        "drain",
        match drain["started_at"].as_f64() {
            None => "serving (not draining)".to_string(),
            Some(at) => format!(
                "DRAINING: {} since {} UTC ({})",
                str_of(&drain["phase"]),
                utc(at),
                str_of(&drain["why"])
            ),
        },
    );
    drain_row.alarm = health["draining"] == true;
    rows.push(drain_row);
    let mut status = pair("status", verdict(health));
    status.alarm = health["status"] != "ok";
    rows.push(status);
    Table {
        title: "Node",
        columns: &["", ""],
        rows,
        empty: "",
    }
}

fn listener_table(health: &Value) -> Table {
    let rows = list(&health["listeners"])
        .map(|listener| {
            let refused: Vec<String> = listener["refused"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            // `tls` and `admission` appear in /health once their features are configured.
            let mode = if listener["tls"].is_object() {
                "TLS"
            } else {
                "passthrough"
            };
            let admission = match listener["admission"]["queued"].as_u64() {
                Some(queued) => queued.to_string(),
                None => "-".to_string(),
            };
            Row::new(vec![
                str_of(&listener["name"]),
                str_of(&listener["address"]),
                mode.to_string(),
                str_of(&listener["backend"]),
                format!(
                    "{} / {}",
                    str_of(&listener["active_connections"]),
                    str_of(&listener["max_connections"])
                ),
                match listener["new_per_second"].as_f64() {
                    Some(rate) => format!("{rate:.1}"),
                    None => "-".to_string(),
                },
                str_of(&listener["connections_total"]),
                if refused.is_empty() {
                    "0".to_string()
                } else {
                    refused.join(", ")
                },
                admission,
            ])
        })
        .collect();
    Table {
        title: "Listeners",
        columns: &[
            "listener",
            "address",
            "mode",
            "backend",
            "active / max",
            "new/s",
            "accepted",
            "refused",
            "admission queue",
        ],
        rows,
        empty: "no listener",
    }
}

fn server_table(health: &Value, now: f64) -> Table {
    let mut rows = Vec::new();
    for backend in list(&health["backends"]) {
        for server in list(&backend["servers"]) {
            let up = server["state"] == "up";
            let state = if !server["checked"].as_bool().unwrap_or(false) {
                "UP (not checked)".to_string()
            } else if server["last_check"].is_null() {
                "DOWN (not yet checked)".to_string()
            } else {
                format!(
                    "{} for {} ({} checks)",
                    if up { "UP" } else { "DOWN" },
                    duration(now - server["since"].as_f64().unwrap_or(now)),
                    str_of(&server["streak"])
                )
            };
            // A server ramping up after it came back shows how much of its share it takes.
            let state = match server["weight"].as_f64() {
                Some(weight) if up && weight < 1.0 => {
                    format!("{state}, slow start at {:.0}%", weight * 100.0)
                }
                _ => state,
            };
            let role = if server["discovered"] == true {
                "peer".to_string()
            } else {
                str_of(&server["role"])
            };
            rows.push(Row {
                cells: vec![
                    str_of(&backend["name"]),
                    str_of(&server["address"]),
                    role,
                    state,
                    match server["last_check"].as_f64() {
                        Some(at) => format!("{} ago", duration(now - at)),
                        None => "-".to_string(),
                    },
                    match server["latency_ms"].as_f64() {
                        Some(ms) => format!("{ms:.1} ms"),
                        None => "-".to_string(),
                    },
                    str_of(&server["active_connections"]),
                    server["error"].as_str().unwrap_or("").to_string(),
                ],
                alarm: !up,
            });
        }
    }
    Table {
        title: "Backend servers",
        columns: &[
            "backend",
            "server",
            "role",
            "state",
            "last check",
            "latency",
            "connections",
            "last error",
        ],
        rows,
        empty: "no backend",
    }
}

/// Certificates of TLS-terminating listeners: what is served and when it expires. One that
/// expires within 14 days (or has) is an alarm, as `BrokersideCertificateExpiresSoon` is.
fn certificate_table(health: &Value, now: f64) -> Table {
    const SOON: f64 = 14.0 * 86_400.0;
    let mut rows = Vec::new();
    for listener in list(&health["listeners"]) {
        let tls = &listener["tls"];
        for certificate in list(&tls["certificates"]) {
            let not_after = certificate["not_after"].as_f64().unwrap_or(0.0);
            let left = not_after - now;
            let names: Vec<String> = list(&certificate["sni_names"]).map(str_of).collect();
            rows.push(Row {
                cells: vec![
                    str_of(&listener["name"]),
                    str_of(&certificate["subject"]),
                    names.join(", "),
                    str_of(&certificate["serial"]),
                    if left > 0.0 {
                        format!("{} (in {})", utc(not_after), duration(left))
                    } else {
                        format!("{} (EXPIRED)", utc(not_after))
                    },
                    str_of(&tls["client_certificates"]),
                    str_of(&certificate["file"]),
                ],
                alarm: left < SOON,
            });
        }
    }
    Table {
        title: "TLS certificates",
        columns: &[
            "listener",
            "subject",
            "SNI names",
            "serial",
            "expires",
            "client certificates",
            "file",
        ],
        rows,
        empty: "no listener terminates TLS",
    }
}

fn source_table(health: &Value, now: f64) -> Table {
    let rows = list(&health["discovery"])
        .map(|source| Row {
            cells: vec![
                str_of(&source["name"]),
                str_of(&source["peers"]),
                match source["refreshed_at"].as_f64() {
                    Some(at) => format!("{} ago", duration(now - at)),
                    None => "never".to_string(),
                },
                str_of(&source["errors_total"]),
                source["error"].as_str().unwrap_or("").to_string(),
            ],
            alarm: source["error"].is_string(),
        })
        .collect();
    Table {
        title: "Discovery sources",
        columns: &["source", "peers", "last refresh", "errors", "last error"],
        rows,
        empty: "no discovery source configured",
    }
}

fn peer_table(peers: &[PeerView]) -> Table {
    let rows = peers
        .iter()
        .map(|peer| Row {
            cells: vec![
                peer.node.clone(),
                format!("{}:{}", peer.ip, peer.port),
                peer.source.clone(),
                match peer.healthy {
                    Some(true) => "UP",
                    Some(false) => "DOWN",
                    None => "not checked",
                }
                .to_string(),
            ],
            alarm: peer.healthy == Some(false),
        })
        .collect();
    Table {
        title: "Peers",
        columns: &["node", "address", "source", "health"],
        rows,
        empty: "no peer discovered",
    }
}

fn cluster_table(health: &Value) -> Table {
    let cluster = &health["clustering"];
    let rows = if cluster["enabled"] == true {
        let partitioned = cluster["partitioned"] == true;
        let running: Vec<String> = list(&cluster["connected_nodes"]).map(str_of).collect();
        vec![Row {
            cells: vec![
                str_of(&cluster["current_node"]),
                str_of(&cluster["expected_nodes"]),
                format!(
                    "{} ({})",
                    str_of(&cluster["node_count"]),
                    running.join(", ")
                ),
                str_of(&cluster["quorum"]),
                if partitioned { "PARTITIONED" } else { "no" }.to_string(),
            ],
            alarm: partitioned,
        }]
    } else {
        Vec::new()
    };
    Table {
        title: "Cluster guard",
        columns: &["this node", "expected", "running", "quorum", "partitioned"],
        rows,
        empty: "off ([cluster] members = \"none\")",
    }
}

fn html_table(out: &mut String, table: &Table) {
    let _ = writeln!(out, "<h2>{}</h2>", escape(table.title));
    if table.rows.is_empty() {
        let _ = writeln!(out, "<p class=\"empty\">{}</p>", escape(table.empty));
        return;
    }
    out.push_str("<table>");
    if table.has_header() {
        out.push_str("<tr>");
        for column in table.columns {
            let _ = write!(out, "<th>{}</th>", escape(column));
        }
        out.push_str("</tr>");
    }
    out.push('\n');
    for row in &table.rows {
        out.push_str(if row.alarm {
            "<tr class=\"alarm\">"
        } else {
            "<tr>"
        });
        for cell in &row.cells {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .3em}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#e8eef4}tr.alarm td{background:#f8d0d0;color:#700;font-weight:600}\
.verdict{font-size:.8em;padding:.1em .5em;border-radius:.3em}\
.verdict.ok{background:#cfe9cf;color:#060}.verdict.alarm{background:#f8d0d0;color:#700}\
.node{font-family:monospace}.empty,.foot{color:#666}";

/// The items of a JSON array (none for anything else).
fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// A JSON value as a person reads it: strings without quotes, null as `-`.
fn str_of(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A cell on one line of text (errors can hold line breaks).
fn one_line(cell: &str) -> String {
    cell.replace(['\r', '\n', '\t'], " ")
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// A duration in seconds as a person says it: `42 s`, `3 min 5 s`, `2 h 10 min`, `4 d 3 h`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(seconds: f64) -> String {
    crate::time_text::utc(seconds.max(0.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::super::{health_json, testing};
    use super::*;

    #[test]
    fn dates_and_durations_read_as_people_write_them() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_251_199.9), "2024-02-29 23:59:59");
        assert_eq!(utc(1_798_761_600.0), "2027-01-01 00:00:00");
        assert_eq!(duration(59.9), "59 s");
        assert_eq!(duration(3_725.0), "1 h 2 min");
        assert_eq!(duration(-3.0), "0 s");
        assert_eq!(duration(90_000.0), "1 d 1 h");
    }

    #[test]
    fn a_down_server_stands_out_in_colour_and_words() {
        let (state, server) = testing::state(None);
        testing::mark_down(&state, "connection refused <for real>");
        let health = health_json::health(&state);
        let page = html(&health, &[]);
        let row = page
            .lines()
            .find(|line| line.starts_with("<tr") && line.contains(&format!("<td>{server}</td>")))
            .expect("a row for the local server");
        assert!(row.starts_with("<tr class=\"alarm\">"), "{row}");
        assert!(row.contains("<td>DOWN for 0 s (3 checks)</td>"), "{row}");
        assert!(row.contains("connection refused &lt;for real&gt;"), "{row}");
        assert!(page.len() < 50 * 1024);

        let text = text(&health, &[]);
        let line = text
            .lines()
            .find(|line| line.starts_with("  broker-mqtt") && line.contains(&server.to_string()))
            .expect("a line for the local server");
        assert!(line.contains("DOWN for 0 s (3 checks)"), "{line}");
        assert!(line.contains("connection refused <for real>"), "{line}");
    }

    #[test]
    fn a_ramping_server_says_how_much_of_its_share_it_takes() {
        let (state, server) = testing::state(None);
        testing::mark_up(&state);
        let mut health = health_json::health(&state);
        assert_eq!(health["backends"][0]["servers"][0]["weight"], 1.0);
        let row = |health: &Value| {
            let page = html(health, &[]);
            let row = page
                .lines()
                .find(|line| {
                    line.starts_with("<tr") && line.contains(&format!("<td>{server}</td>"))
                })
                .map(str::to_string);
            row.expect("a row for the local server")
        };
        assert!(!row(&health).contains("slow start"), "{}", row(&health));
        health["backends"][0]["servers"][0]["weight"] = 0.25.into();
        assert!(
            row(&health).contains("(3 checks), slow start at 25%</td>"),
            "{}",
            row(&health)
        );
    }

    #[test]
    fn text_columns_line_up() {
        let (state, _) = testing::state(None);
        testing::mark_up(&state);
        let text = text(&health_json::health(&state), &[]);
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "Backend servers")
            .skip(1)
            .take_while(|line| !line.is_empty())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = |line: &str| line.find("role").or_else(|| line.find("local"));
        let header = column(lines[0]).expect("role column");
        assert_eq!(column(lines[1]), Some(header), "{text}");
        assert_eq!(lines[2].find("backup"), Some(header), "{text}");
    }
}
