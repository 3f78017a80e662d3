//! The comparison's figures, the values measured for them round by round, and what is made of
//! those: medians with min..max, ratios to direct in the same round, the Markdown table, the
//! targets brokerside is held to, and the CSV files.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::targets::Target;
use super::text::thousands;
use super::tls::TlsVersion;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// What brokerside is held to on one figure (issue 5's Targets table, issue 11's TLS goals).
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// At least HAProxy's median (its better configuration, where there are two).
    NoWorseThanHaproxy,
    /// No goal: the figure is context for another (TLS bulk's MB/s for its CPU per GB).
    None,
    /// The median ratio to direct is at least this.
    RatioAtLeast(f64),
    /// The median ratio to direct is at most this.
    RatioAtMost(f64),
    /// The median value, in the figure's unit, is at most this.
    AtMost(f64),
    /// The median (its ratio to direct, for relative figures) is at most this times the best
    /// peer's: HAProxy, HAProxy+splice or NGINX, whichever did best in this run (issue 15).
    TimesBestPeer(f64),
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    Bulk1,
    Bulk8,
    CpuPerGb,
    ConnRate,
    CpuPerConn,
    RssPerIdle,
    RssAtStart,
    RttP50,
    RttP99,
    ReloadTime,
    ReloadRttP99,
    TlsRssPerIdle,
    TlsRssAtStart,
    TlsRssAfterClose,
    TlsHandshakeRate,
    TlsCpuPerHandshake,
    TlsBulk,
    TlsCpuPerGb,
    RttPinnedP50,
    RttPinnedP99,
    MsgRate,
    MsgCpu,
    MsgBrokerCpu,
}

impl Figure {
    pub const ALL: [Figure; 23] = [
        Figure::Bulk1,
        Figure::Bulk8,
        Figure::CpuPerGb,
        Figure::ConnRate,
        Figure::CpuPerConn,
        Figure::RssPerIdle,
        Figure::RssAtStart,
        Figure::RttP50,
        Figure::RttP99,
        Figure::ReloadTime,
        Figure::ReloadRttP99,
        Figure::TlsRssPerIdle,
        Figure::TlsRssAtStart,
        Figure::TlsRssAfterClose,
        Figure::TlsHandshakeRate,
        Figure::TlsCpuPerHandshake,
        Figure::TlsBulk,
        Figure::TlsCpuPerGb,
        Figure::RttPinnedP50,
        Figure::RttPinnedP99,
        Figure::MsgRate,
        Figure::MsgCpu,
        Figure::MsgBrokerCpu,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::Bulk1 => "bulk, 1 stream",
            Figure::Bulk8 => "bulk, 8 streams",
            Figure::CpuPerGb => "proxy CPU per GB",
            Figure::ConnRate => "new connections/s (64 concurrent)",
            Figure::CpuPerConn => "proxy CPU per connection",
            Figure::RssPerIdle => "RSS per idle MQTT connection",
            Figure::RssAtStart => "RSS at start",
            Figure::RttP50 => "MQTT RTT p50",
            Figure::RttP99 => "MQTT RTT p99",
            Figure::ReloadTime => "config reload, signal → new generation in /health",
            Figure::ReloadRttP99 => "MQTT RTT p99 with 10 reloads/s, ratio to none",
            Figure::TlsRssPerIdle => "TLS: RSS per idle MQTTS connection",
            Figure::TlsRssAtStart => "TLS: RSS at start with the TLS listener",
            Figure::TlsRssAfterClose => {
                "TLS: RSS after all idle connections closed, ratio to start"
            }
            Figure::TlsHandshakeRate => "TLS: full TLS 1.3 handshakes/s (64 concurrent)",
            Figure::TlsCpuPerHandshake => "TLS: proxy CPU per full handshake",
            Figure::TlsBulk => "TLS: bulk, 1 stream, TLS in, plaintext out",
            Figure::TlsCpuPerGb => "TLS: proxy CPU per GB, TLS in, plaintext out",
            Figure::RttPinnedP50 => "MQTT RTT p50, everything pinned to one CPU",
            Figure::RttPinnedP99 => "MQTT RTT p99, everything pinned to one CPU",
            Figure::MsgRate => "64 pub + 64 sub: messages published/s",
            Figure::MsgCpu => "proxy CPU per million messages relayed (in + out)",
            Figure::MsgBrokerCpu => "broker CPU per million messages published, same window",
        }
    }

    /// The label of a run whose TLS figures were measured with `tls`: [`Figure::label`] for
    /// TLS 1.3, the default, and for TLS 1.2 every TLS row named `TLS 1.2: ...`.
    pub fn label_with(self, tls: TlsVersion) -> Cow<'static, str> {
        match (tls, self) {
            (TlsVersion::Tls13, _) => Cow::Borrowed(self.label()),
            (TlsVersion::Tls12, Figure::TlsHandshakeRate) => {
                Cow::Borrowed("TLS 1.2: full TLS 1.2 handshakes/s (64 concurrent)")
            }
            (TlsVersion::Tls12, figure) if figure.tls() => {
                Cow::Owned(figure.label().replacen("TLS:", "TLS 1.2:", 1))
            }
            (TlsVersion::Tls12, _) => Cow::Borrowed(self.label()),
        }
    }

    /// A short name for the chart and the CSV.
    pub fn key(self) -> &'static str {
        match self {
            Figure::Bulk1 => "bulk_1_stream",
            Figure::Bulk8 => "bulk_8_streams",
            Figure::CpuPerGb => "cpu_per_gb",
            Figure::ConnRate => "connections_per_s",
            Figure::CpuPerConn => "cpu_per_connection",
            Figure::RssPerIdle => "rss_per_idle_connection",
            Figure::RssAtStart => "rss_at_start",
            Figure::RttP50 => "rtt_p50",
            Figure::RttP99 => "rtt_p99",
            Figure::ReloadTime => "reload_time",
            Figure::ReloadRttP99 => "rtt_p99_reloading_ratio",
            Figure::TlsRssPerIdle => "tls_rss_per_idle_connection",
            Figure::TlsRssAtStart => "tls_rss_at_start",
            Figure::TlsRssAfterClose => "tls_rss_after_close_ratio",
            Figure::TlsHandshakeRate => "tls_handshakes_per_s",
            Figure::TlsCpuPerHandshake => "tls_cpu_per_handshake",
            Figure::TlsBulk => "tls_bulk",
            Figure::TlsCpuPerGb => "tls_cpu_per_gb",
            Figure::RttPinnedP50 => "rtt_pinned_p50",
            Figure::RttPinnedP99 => "rtt_pinned_p99",
            Figure::MsgRate => "msgcost_published_per_s",
            Figure::MsgCpu => "msgcost_proxy_cpu_per_million",
            Figure::MsgBrokerCpu => "msgcost_broker_cpu_per_million",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Figure::Bulk1 | Figure::Bulk8 => "Gbit/s",
            Figure::CpuPerGb | Figure::TlsCpuPerGb | Figure::MsgCpu | Figure::MsgBrokerCpu => "s",
            Figure::MsgRate => "msg/s",
            Figure::ConnRate => "conn/s",
            Figure::TlsHandshakeRate => "handshakes/s",
            Figure::CpuPerConn
            | Figure::RttP50
            | Figure::RttP99
            | Figure::TlsCpuPerHandshake
            | Figure::RttPinnedP50
            | Figure::RttPinnedP99 => "µs",
            Figure::RssPerIdle | Figure::TlsRssPerIdle => "KiB",
            Figure::RssAtStart | Figure::TlsRssAtStart => "MB",
            Figure::ReloadTime => "ms",
            Figure::ReloadRttP99 | Figure::TlsRssAfterClose => "×",
            Figure::TlsBulk => "MB/s",
        }
    }

    pub fn better(self) -> Better {
        match self {
            Figure::Bulk1
            | Figure::Bulk8
            | Figure::ConnRate
            | Figure::TlsHandshakeRate
            | Figure::TlsBulk
            | Figure::MsgRate => Better::Higher,
            _ => Better::Lower,
        }
    }

    /// Whether direct has this figure, so that the others have a ratio to it. Proxy CPU and RSS
    /// have no direct counterpart, and the reload figures only brokerside has.
    pub fn relative(self) -> bool {
        matches!(
            self,
            Figure::Bulk1
                | Figure::Bulk8
                | Figure::ConnRate
                | Figure::RttP50
                | Figure::RttP99
                | Figure::RttPinnedP50
                | Figure::RttPinnedP99
                | Figure::MsgRate
        )
    }

    /// Whether only brokerside has this figure: the others cannot reload their config in-process.
    pub fn brokerside_only(self) -> bool {
        matches!(self, Figure::ReloadTime | Figure::ReloadRttP99)
    }

    /// Whether this is a TLS figure: measured with the proxies terminating TLS, so not for
    /// direct (nothing to terminate it) nor HAProxy+splice (nothing to splice on the TLS side).
    pub fn tls(self) -> bool {
        matches!(
            self,
            Figure::TlsRssPerIdle
                | Figure::TlsRssAtStart
                | Figure::TlsRssAfterClose
                | Figure::TlsHandshakeRate
                | Figure::TlsCpuPerHandshake
                | Figure::TlsBulk
                | Figure::TlsCpuPerGb
        )
    }

    /// Whether `target` has this figure at all.
    pub fn applies_to(self, target: Target) -> bool {
        if self.brokerside_only() {
            target == Target::Brokerside
        } else if self.tls() {
            !matches!(target, Target::Direct | Target::HaproxySplice)
        } else if self == Figure::MsgBrokerCpu {
            // The broker runs behind every target, direct included: its CPU shows the load.
            true
        } else {
            target != Target::Direct || self.relative()
        }
    }

    /// A value with its unit: `12.3 ms`, or `×1.02` for a figure that is a ratio itself.
    pub fn with_unit(self, value: f64) -> String {
        match self.unit() {
            "×" => format!("×{}", self.format(value)),
            unit => format!("{} {unit}", self.format(value)),
        }
    }

    pub fn goal(self) -> Goal {
        match self {
            Figure::Bulk1 => Goal::RatioAtLeast(0.80),
            Figure::Bulk8 => Goal::RatioAtLeast(0.85),
            Figure::CpuPerGb => Goal::AtMost(0.30),
            Figure::ConnRate => Goal::RatioAtLeast(0.75),
            Figure::CpuPerConn => Goal::AtMost(60.0),
            Figure::RssPerIdle => Goal::AtMost(1.0),
            Figure::RssAtStart => Goal::AtMost(8.0),
            Figure::RttP50 => Goal::RatioAtMost(1.4),
            Figure::RttP99 => Goal::RatioAtMost(1.6),
            Figure::ReloadTime => Goal::AtMost(50.0),
            Figure::ReloadRttP99 => Goal::AtMost(1.1),
            Figure::TlsRssPerIdle => Goal::AtMost(4.0),
            Figure::TlsRssAtStart => Goal::AtMost(10.0),
            Figure::TlsRssAfterClose => Goal::AtMost(2.0),
            Figure::TlsHandshakeRate => Goal::NoWorseThanHaproxy,
            Figure::TlsCpuPerHandshake => Goal::AtMost(200.0),
            Figure::TlsBulk => Goal::None,
            Figure::TlsCpuPerGb => Goal::AtMost(0.60),
            Figure::RttPinnedP50 => Goal::RatioAtMost(1.7),
            Figure::RttPinnedP99 | Figure::MsgRate | Figure::MsgBrokerCpu => Goal::None,
            Figure::MsgCpu => Goal::TimesBestPeer(0.8),
        }
    }

    /// A value in this figure's unit, rounded to what the measurement can tell.
    pub fn format(self, value: f64) -> String {
        match self {
            Figure::Bulk1
            | Figure::Bulk8
            | Figure::CpuPerGb
            | Figure::RssPerIdle
            | Figure::ReloadRttP99
            | Figure::TlsRssPerIdle
            | Figure::TlsRssAfterClose
            | Figure::TlsCpuPerGb
            | Figure::MsgCpu
            | Figure::MsgBrokerCpu => format!("{value:.2}"),
            Figure::ConnRate | Figure::TlsHandshakeRate | Figure::TlsBulk | Figure::MsgRate => {
                thousands(value.round() as u64)
            }
            Figure::CpuPerConn
            | Figure::RttP50
            | Figure::RttP99
            | Figure::RssAtStart
            | Figure::ReloadTime
            | Figure::TlsRssAtStart
            | Figure::TlsCpuPerHandshake
            | Figure::RttPinnedP50
            | Figure::RttPinnedP99 => format!("{value:.1}"),
        }
    }
}

fn goal_text(goal: Goal, figure: Figure) -> String {
    match goal {
        Goal::RatioAtLeast(r) => format!("≥ ×{r:.2}"),
        Goal::RatioAtMost(r) => format!("≤ ×{r:.2}"),
        Goal::AtMost(v) if figure.unit() == "×" => format!("≤ ×{v}"),
        Goal::AtMost(v) => format!("≤ {v} {}", figure.unit()),
        Goal::NoWorseThanHaproxy => "≥ HAProxy".into(),
        Goal::TimesBestPeer(f) => format!("≤ {f:.2} × the best peer"),
        Goal::None => "— (context)".into(),
    }
}

/// One value measured in one round.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub round: usize,
    pub figure: Figure,
    pub target: Target,
    pub value: f64,
    /// The 1-minute load average when this figure's measurement began.
    pub load: f64,
}

/// Median and range of some numbers.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            count: sorted.len(),
        })
    }
}

/// Everything measured in one invocation.
#[derive(Default)]
pub struct Results {
    pub records: Vec<Record>,
    /// Things the reader should know: failed connections, waits that ran out, errors.
    pub notes: Vec<String>,
    /// The version the TLS figures were measured with, which their labels name.
    pub tls_version: TlsVersion,
}

impl Results {
    pub fn add(&mut self, round: usize, figure: Figure, target: Target, value: f64, load: f64) {
        self.records.push(Record {
            round,
            figure,
            target,
            value,
            load,
        });
    }

    fn value(&self, round: usize, figure: Figure, target: Target) -> Option<f64> {
        self.records
            .iter()
            .find(|r| r.round == round && r.figure == figure && r.target == target)
            .map(|r| r.value)
    }

    /// The value's ratio to direct's in the same round, for figures direct has.
    pub fn ratio(&self, record: &Record) -> Option<f64> {
        if !record.figure.relative() {
            return None;
        }
        let direct = self.value(record.round, record.figure, Target::Direct)?;
        (direct > 0.0).then(|| record.value / direct)
    }

    fn of(&self, figure: Figure, target: Target) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |r| r.figure == figure && r.target == target)
    }

    pub fn stats(&self, figure: Figure, target: Target) -> Option<Stats> {
        Stats::of(&self.of(figure, target).map(|r| r.value).collect::<Vec<_>>())
    }

    pub fn ratio_stats(&self, figure: Figure, target: Target) -> Option<Stats> {
        Stats::of(
            &self
                .of(figure, target)
                .filter_map(|r| self.ratio(r))
                .collect::<Vec<_>>(),
        )
    }

    /// The median brokerside is judged on: its ratio for relative figures, else its value.
    fn judged(&self, figure: Figure, target: Target) -> Option<f64> {
        if figure.relative() {
            self.ratio_stats(figure, target).map(|s| s.median)
        } else {
            self.stats(figure, target).map(|s| s.median)
        }
    }

    fn judged_text(&self, figure: Figure, value: f64) -> String {
        if figure.relative() {
            format!("×{value:.2}")
        } else {
            figure.with_unit(value)
        }
    }

    /// One cell: `median (min..max) ×ratio`.
    fn cell(&self, figure: Figure, target: Target) -> String {
        if !figure.applies_to(target) {
            return "—".into();
        }
        let Some(stats) = self.stats(figure, target) else {
            return "not measured".into();
        };
        let mut cell = if stats.count > 1 {
            format!(
                "{} ({}..{})",
                figure.format(stats.median),
                figure.format(stats.min),
                figure.format(stats.max)
            )
        } else {
            figure.format(stats.median)
        };
        if target != Target::Direct
            && let Some(ratio) = self.ratio_stats(figure, target)
        {
            let _ = write!(cell, " ×{:.2}", ratio.median);
        }
        cell
    }

    /// The side-by-side table: rows are figures, columns targets.
    pub fn table(&self, targets: &[Target]) -> String {
        let mut out = String::new();
        let _ = write!(out, "| figure |");
        for target in targets {
            let _ = write!(out, " {} |", target.label());
        }
        let _ = write!(out, "\n|---|");
        for _ in targets {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for figure in Figure::ALL {
            let _ = write!(
                out,
                "| {} ({}) |",
                figure.label_with(self.tls_version),
                figure.unit()
            );
            for &target in targets {
                let _ = write!(out, " {} |", self.cell(figure, target));
            }
            out.push('\n');
        }
        out
    }

    /// brokerside against each target of issue 5, and against HAProxy's better configuration.
    pub fn targets_table(&self) -> String {
        let met = |ok: bool| if ok { "yes" } else { "**no**" };
        let mut out = String::from(
            "| figure | brokerside | target | met? | HAProxy's best here | no worse than it? |\n\
             |---|---|---|---|---|---|\n",
        );
        for figure in Figure::ALL {
            let goal = figure.goal();
            let measured = self.judged(figure, Target::Brokerside);
            let haproxy_best = [Target::Haproxy, Target::HaproxySplice]
                .into_iter()
                .filter_map(|t| self.judged(figure, t).map(|v| (v, t)))
                .reduce(|a, b| match figure.better() {
                    Better::Higher if b.0 > a.0 => b,
                    Better::Lower if b.0 < a.0 => b,
                    _ => a,
                });
            let no_worse_than = |b: f64, h: f64| match figure.better() {
                Better::Higher => b >= h,
                Better::Lower => b <= h,
            };
            let (value, verdict) = match measured {
                Some(v) => {
                    let ok = match goal {
                        Goal::RatioAtLeast(r) => Some(v >= r),
                        Goal::RatioAtMost(r) | Goal::AtMost(r) => Some(v <= r),
                        Goal::NoWorseThanHaproxy => haproxy_best.map(|(h, _)| no_worse_than(v, h)),
                        Goal::TimesBestPeer(f) => self.best_peer(figure).map(|p| v <= f * p),
                        Goal::None => None,
                    };
                    let verdict = ok.map_or("—".to_string(), |ok| met(ok).to_string());
                    (self.judged_text(figure, v), verdict)
                }
                None => ("not measured".into(), "—".into()),
            };
            let (best, no_worse) = match (haproxy_best, measured) {
                // brokerside ÷ HAProxy: how far apart they are, whichever way is better.
                (Some((h, t)), Some(b)) => (
                    format!("{} ({})", self.judged_text(figure, h), t.label()),
                    format!("{} (×{:.2})", met(no_worse_than(b, h)), b / h),
                ),
                (Some((h, t)), None) => (
                    format!("{} ({})", self.judged_text(figure, h), t.label()),
                    "—".into(),
                ),
                _ if figure.brokerside_only() => ("n/a (no in-process reload)".into(), "—".into()),
                _ => ("not measured".into(), "—".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {value} | {} | {verdict} | {best} | {no_worse} |",
                figure.label_with(self.tls_version),
                goal_text(goal, figure),
            );
        }
        out
    }

    /// The best median among the other proxies (HAProxy, HAProxy+splice, NGINX) on a figure
    /// where lower is better.
    fn best_peer(&self, figure: Figure) -> Option<f64> {
        [Target::Haproxy, Target::HaproxySplice, Target::Nginx]
            .into_iter()
            .filter_map(|t| self.judged(figure, t))
            .reduce(f64::min)
    }

    /// One line per figure and target: medians, ranges and ratios.
    pub fn summary_csv(&self, targets: &[Target]) -> String {
        let mut out = String::from(
            "figure,unit,target,rounds,median,min,max,ratio_median,ratio_min,ratio_max\n",
        );
        for figure in Figure::ALL {
            for &target in targets {
                let Some(s) = self.stats(figure, target) else {
                    continue;
                };
                let ratio = self.ratio_stats(figure, target);
                let r = |pick: fn(&Stats) -> f64| {
                    ratio
                        .as_ref()
                        .map(|s| format!("{:.4}", pick(s)))
                        .unwrap_or_default()
                };
                let _ = writeln!(
                    out,
                    "{},{},{},{},{:.4},{:.4},{:.4},{},{},{}",
                    figure.key(),
                    figure.unit(),
                    target.label(),
                    s.count,
                    s.median,
                    s.min,
                    s.max,
                    r(|s| s.median),
                    r(|s| s.min),
                    r(|s| s.max),
                );
            }
        }
        out
    }

    /// Every value as measured, with its round and the load when its figure began.
    pub fn rounds_csv(&self) -> String {
        let mut out = String::from("round,figure,unit,target,value,ratio_to_direct,load_1min\n");
        for record in &self.records {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.4},{},{:.2}",
                record.round + 1,
                record.figure.key(),
                record.figure.unit(),
                record.target.label(),
                record.value,
                self.ratio(record)
                    .map(|r| format!("{r:.4}"))
                    .unwrap_or_default(),
                record.load,
            );
        }
        out
    }
}
