//! The probe's shared tally: every request and every settled value, bucketed per second since the start.
//!
//! The lock is held only to add to counters, never across an await, so twenty users writing at once do not
//! queue behind each other for long. Latencies are kept whole (microseconds, one `u32` each) so the
//! percentiles are exact rather than estimated from a histogram.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ProbeConfig;
use super::report::{Event, Percentiles, ProbeReport, Second, Totals};

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The expected answer.
    Ok,
    /// The user found itself signed out (counted by [`Recorder::logout`], which gives the reason).
    Logout,
    /// A read returned another value than the acknowledged one.
    Mismatch,
    /// An HTTP error status or a transport failure, by kind (`http_503`, `timeout`, ...).
    Error(String),
}

/// The tally of one second.
#[derive(Default)]
struct Bucket {
    requests: u64,
    ok: u64,
    acked_writes: u64,
    errors: u64,
    logouts: u64,
    lost_writes: u64,
    stale_reads: u64,
    /// Microseconds.
    latencies: Vec<u32>,
}

struct Tally {
    /// Second 0 of the timeline.
    started: Instant,
    started_at_unix_ms: u64,
    buckets: Vec<Bucket>,
    totals: Totals,
    events: Vec<Event>,
    per_instance: BTreeMap<String, u64>,
}

impl Tally {
    fn second(&self, at: Instant) -> usize {
        at.saturating_duration_since(self.started).as_secs() as usize
    }

    fn bucket(&mut self, second: usize) -> &mut Bucket {
        if self.buckets.len() <= second {
            self.buckets.resize_with(second + 1, Bucket::default);
        }
        &mut self.buckets[second]
    }
}

/// A few running totals, for the live progress line.
pub(crate) struct Progress {
    pub requests: u64,
    pub acked_writes: u64,
    pub errors: u64,
    pub logouts: u64,
    pub lost_writes: u64,
}

/// The tally every virtual user adds to.
pub(crate) struct Recorder {
    tally: Mutex<Tally>,
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            tally: Mutex::new(Tally {
                started: Instant::now(),
                started_at_unix_ms: unix_ms_now(),
                buckets: Vec::new(),
                totals: Totals::default(),
                events: Vec::new(),
                per_instance: BTreeMap::new(),
            }),
        }
    }

    /// Makes now second 0 of the timeline (what came before, the sign-in, falls into second 0).
    pub fn start_clock(&self) {
        self.with(|t| {
            t.started = Instant::now();
            t.started_at_unix_ms = unix_ms_now();
        });
    }

    fn with<R>(&self, f: impl FnOnce(&mut Tally) -> R) -> R {
        // A poisoned lock only means another user panicked mid-update; the counters are still usable.
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut tally)
    }

    /// Records one request sent at `at`. `latency` is `None` when no answer came at all (a refused
    /// connection), which then does not weigh on the latency figures.
    pub fn request(&self, at: Instant, latency: Option<Duration>, outcome: &Outcome) {
        self.with(|t| {
            let second = t.second(at);
            t.totals.requests += 1;
            match outcome {
                Outcome::Ok => t.totals.ok += 1,
                Outcome::Logout => {}
                Outcome::Mismatch => t.totals.mismatched_reads += 1,
                Outcome::Error(kind) => *t.totals.errors_by_kind.entry(kind.clone()).or_default() += 1,
            }
            let bucket = t.bucket(second);
            bucket.requests += 1;
            match outcome {
                Outcome::Ok => bucket.ok += 1,
                Outcome::Error(_) => bucket.errors += 1,
                Outcome::Logout | Outcome::Mismatch => {}
            }
            if let Some(latency) = latency {
                bucket
                    .latencies
                    .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        });
    }

    /// An acknowledged write at `at`.
    pub fn acked(&self, at: Instant) {
        self.with(|t| {
            let second = t.second(at);
            t.totals.acked_writes += 1;
            t.bucket(second).acked_writes += 1;
        });
    }

    /// A logout detected at `at`, and why (`dashboard_redirect`, `cookie_cleared`, ...).
    pub fn logout(&self, at: Instant, reason: &str) {
        self.with(|t| {
            let second = t.second(at);
            t.totals.logouts += 1;
            *t.totals.logouts_by_reason.entry(reason.to_owned()).or_default() += 1;
            t.bucket(second).logouts += 1;
        });
    }

    /// A response replaced a session cookie with a different one.
    pub fn cookie_replaced(&self) {
        self.with(|t| t.totals.cookies_replaced += 1);
    }

    /// An acknowledged value found lost; `acked_at` is when its write was sent (the timeline counts a lost
    /// write in that second, so the picture shows which writes were lost, not when the probe noticed).
    pub fn lost(&self, acked_at: Instant) {
        self.with(|t| {
            let second = t.second(acked_at);
            t.totals.lost_writes += 1;
            t.bucket(second).lost_writes += 1;
        });
    }

    /// A value whose read at `missed_at`, right after its acknowledgement, did not see it, but a later read did.
    pub fn stale(&self, missed_at: Instant) {
        self.with(|t| {
            let second = t.second(missed_at);
            t.totals.stale_reads += 1;
            t.bucket(second).stale_reads += 1;
        });
    }

    /// Values the final verification could not read.
    pub fn unverified(&self, count: u64) {
        self.with(|t| t.totals.unverified_writes += count);
    }

    /// A response that named the instance serving it.
    pub fn served_by(&self, instance: &str) {
        self.with(|t| {
            if let Some(n) = t.per_instance.get_mut(instance) {
                *n += 1;
            } else {
                t.per_instance.insert(instance.to_owned(), 1);
            }
        });
    }

    /// A named event, now.
    pub fn event(&self, label: &str) {
        self.with(|t| {
            let t_ms = t.started.elapsed().as_millis() as u64;
            t.events.push(Event {
                t_ms,
                label: label.to_owned(),
            })
        });
    }

    pub fn progress(&self) -> Progress {
        self.with(|t| Progress {
            requests: t.totals.requests,
            acked_writes: t.totals.acked_writes,
            errors: t.totals.errors_by_kind.values().sum(),
            logouts: t.totals.logouts,
            lost_writes: t.totals.lost_writes,
        })
    }

    /// The report so far.
    pub fn report(&self, config: &ProbeConfig) -> ProbeReport {
        self.with(|t| {
            let duration = t.started.elapsed().as_secs_f64();
            let mut all: Vec<u32> = Vec::with_capacity(t.buckets.iter().map(|b| b.latencies.len()).sum());
            let timeline = t
                .buckets
                .iter_mut()
                .enumerate()
                .map(|(second, b)| {
                    b.latencies.sort_unstable();
                    all.extend_from_slice(&b.latencies);
                    let p = percentiles(&b.latencies);
                    Second {
                        t: second as u64,
                        requests: b.requests,
                        ok: b.ok,
                        acked: b.acked_writes,
                        errors: b.errors,
                        logouts: b.logouts,
                        lost_writes: b.lost_writes,
                        stale_reads: b.stale_reads,
                        p50_ms: p.p50,
                        p99_ms: p.p99,
                        max_ms: p.max,
                    }
                })
                .collect();
            all.sort_unstable();
            let mut events = t.events.clone();
            events.sort_by_key(|e| e.t_ms);
            ProbeReport {
                base_url: config.base_url.clone(),
                users: config.users,
                started_at_unix_ms: t.started_at_unix_ms,
                duration,
                totals: t.totals.clone(),
                latency_ms: percentiles(&all),
                timeline,
                events,
                per_instance: t.per_instance.clone(),
            }
        })
    }
}

/// Nearest-rank percentiles of sorted microsecond latencies, in milliseconds (all zero when empty).
fn percentiles(sorted: &[u32]) -> Percentiles {
    let rank = |q: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        f64::from(sorted[index]) / 1000.0
    };
    Percentiles {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: rank(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let p = percentiles(&sorted);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(percentiles(&[]).max, 0.0);
        assert_eq!(percentiles(&[1500]).p50, 1.5);
    }

    #[test]
    fn requests_land_in_their_second() {
        let recorder = Recorder::new();
        let t0 = recorder.with(|t| t.started);
        recorder.request(t0, Some(Duration::from_millis(2)), &Outcome::Ok);
        recorder.request(
            t0 + Duration::from_millis(2500),
            None,
            &Outcome::Error("connect_error".into()),
        );
        recorder.acked(t0);
        recorder.lost(t0 + Duration::from_millis(2600));
        let report = recorder.report(&ProbeConfig::default());
        assert_eq!(report.timeline.len(), 3);
        assert_eq!(report.timeline[0].ok, 1);
        assert_eq!(report.timeline[0].acked, 1);
        assert_eq!(report.timeline[1].requests, 0);
        assert_eq!(report.timeline[2].errors, 1);
        assert_eq!(report.timeline[2].lost_writes, 1);
        assert_eq!(report.totals.errors_by_kind["connect_error"], 1);
        assert_eq!(report.latency_ms.max, 2.0);
    }
}
