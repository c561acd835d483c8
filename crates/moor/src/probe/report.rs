//! The probe's report: totals, latency percentiles, a per-second timeline and the marked events, as JSON, a
//! terminal table, or an SVG picture.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Everything one probe run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The base URL probed.
    pub base_url: String,
    /// Number of virtual users.
    pub users: usize,
    /// When every user was signed in and the loops started (milliseconds since the Unix epoch): second 0 of
    /// the timeline, and the time events count from.
    pub started_at_unix_ms: u64,
    /// Seconds from that start to the end of the final verification.
    pub duration: f64,
    /// The counts over the whole run.
    pub totals: Totals,
    /// Latency of every request that got an answer (timeouts count as the timeout), in milliseconds.
    pub latency_ms: Percentiles,
    /// One entry per second since the start, empty seconds included (the sign-in requests count in second 0).
    pub timeline: Vec<Second>,
    /// Named events (the probe's own, and those given to [`Probe::mark`](super::Probe::mark)), in time order.
    pub events: Vec<Event>,
    /// Requests answered by each instance, from the `served_by` field of the value endpoints.
    pub per_instance: BTreeMap<String, u64>,
}

/// Counts over a whole run. See the [module documentation](super) for what each outcome means.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Requests sent and answered or failed (abandoned ones at stop are not counted).
    pub requests: u64,
    /// Requests that got the expected answer.
    pub ok: u64,
    /// Writes the app acknowledged with a 200.
    pub acked_writes: u64,
    /// Times a user found itself signed out.
    pub logouts: u64,
    /// Logouts by how they showed: `dashboard_redirect`, `unauthorized`, `redirect`, `cookie_cleared`.
    pub logouts_by_reason: BTreeMap<String, u64>,
    /// Responses that replaced a session cookie with a different one (a logout only if the dashboard then
    /// showed the user signed out).
    pub cookies_replaced: u64,
    /// Acknowledged values that later read back `null` or different (once per value).
    pub lost_writes: u64,
    /// Values the read right after their acknowledgement missed, but a later read found (once per value).
    pub stale_reads: u64,
    /// Read requests that returned another value than the acknowledged one.
    pub mismatched_reads: u64,
    /// Acknowledged values the final verification could not read (the app was failing when the probe stopped).
    pub unverified_writes: u64,
    /// Failed requests by kind: `http_<status>`, `connect_error`, `timeout`, `transport_error`, `bad_response`.
    pub errors_by_kind: BTreeMap<String, u64>,
}

impl Totals {
    /// Failed requests of every kind.
    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    /// Requests answered with a 5xx status.
    pub fn http_5xx(&self) -> u64 {
        self.http_errors(b'5')
    }

    /// Requests answered with a 4xx status that was neither the expected answer nor a logout.
    pub fn http_4xx(&self) -> u64 {
        self.http_errors(b'4')
    }

    fn http_errors(&self, class: u8) -> u64 {
        self.errors_by_kind
            .iter()
            .filter(|(kind, _)| {
                kind.strip_prefix("http_")
                    .is_some_and(|s| s.as_bytes().first() == Some(&class))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The tally of one second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start: this entry covers `[t, t + 1)`.
    pub t: u64,
    /// Requests sent in this second.
    pub requests: u64,
    /// Of which got the expected answer.
    pub ok: u64,
    /// Writes acknowledged in this second.
    pub acked: u64,
    /// Failed requests sent in this second.
    pub errors: u64,
    /// Logouts detected in this second.
    pub logouts: u64,
    /// Writes acknowledged in this second and later found lost (counted where the write was, not where the loss
    /// was noticed, so a crash that loses the last second of writes shows as that second).
    pub lost_writes: u64,
    /// Stale reads, counted in the second of the read that missed (right after the write).
    pub stale_reads: u64,
    /// Median latency of this second's answered requests, in ms (0 when none).
    pub p50_ms: f64,
    /// 99th percentile latency, in ms.
    pub p99_ms: f64,
    /// Slowest answer, in ms.
    pub max_ms: f64,
}

/// A named moment of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the start.
    pub t_ms: u64,
    /// What happened, such as "kill -9 master".
    pub label: String,
}

impl ProbeReport {
    /// A terminal summary: totals, latency, instances and events, one per line.
    pub fn to_table(&self) -> String {
        let t = &self.totals;
        let mut out = String::new();
        let rate = |n: u64| {
            if self.duration > 0.0 {
                n as f64 / self.duration
            } else {
                0.0
            }
        };
        let _ = writeln!(
            out,
            "probe of {} with {} users over {:.1} s",
            self.base_url, self.users, self.duration
        );
        let mut row = |name: &str, value: String, note: String| {
            let _ = writeln!(out, "  {name:<18} {value:>10}  {note}");
        };
        row(
            "requests",
            t.requests.to_string(),
            format!("{:.0}/s", rate(t.requests)),
        );
        row("ok", t.ok.to_string(), String::new());
        row("acked writes", t.acked_writes.to_string(), String::new());
        row(
            "logouts",
            t.logouts.to_string(),
            join_counts(&t.logouts_by_reason),
        );
        row("lost writes", t.lost_writes.to_string(), String::new());
        row("stale reads", t.stale_reads.to_string(), String::new());
        row("mismatched reads", t.mismatched_reads.to_string(), String::new());
        row(
            "unverified writes",
            t.unverified_writes.to_string(),
            String::new(),
        );
        row("cookies replaced", t.cookies_replaced.to_string(), String::new());
        row("errors", t.errors().to_string(), join_counts(&t.errors_by_kind));
        let l = &self.latency_ms;
        row(
            "latency ms",
            format!("{:.1}", l.p50),
            format!("p50; p90 {:.1}, p99 {:.1}, max {:.1}", l.p90, l.p99, l.max),
        );
        if !self.per_instance.is_empty() {
            let _ = writeln!(out, "  served by          {}", join_counts(&self.per_instance));
        }
        for event in &self.events {
            let _ = writeln!(
                out,
                "  event at {:>8.1} s  {}",
                event.t_ms as f64 / 1000.0,
                event.label
            );
        }
        out
    }

    /// A self-contained SVG picture of the timeline: requests per second, failures per second and latency,
    /// with the events marked as vertical lines.
    pub fn to_svg(&self, title: &str) -> String {
        super::svg::render(self, title)
    }

    /// Writes the report as pretty-printed JSON.
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

fn join_counts(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_are_summed_by_class() {
        let mut totals = Totals::default();
        for (kind, n) in [("http_503", 3), ("http_502", 1), ("http_404", 2), ("timeout", 5)] {
            totals.errors_by_kind.insert(kind.into(), n);
        }
        assert_eq!(totals.http_5xx(), 4);
        assert_eq!(totals.http_4xx(), 2);
        assert_eq!(totals.errors(), 11);
    }
}
