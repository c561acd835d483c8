//! Prometheus metrics: what `/metrics` (on its own listener, `METRICS_PORT`) serves.
//!
//! Families, all in base units (seconds, counts):
//!
//! - `http_requests_total{method,route,status}` and `http_request_duration_seconds{method,route}`, recorded by
//!   [`track_requests`]. `route` is the axum route template (`/items/{id}/delete`), `(unmatched)` for requests
//!   no route matched, so a scan of random paths cannot blow up the series count; methods outside the standard
//!   nine are counted as `other` for the same reason.
//! - `mooring_session_*` and `mooring_store_*`: the session engine's own counters
//!   ([`mooring::SessionStats`]), read at scrape time, so they cost the request path nothing extra.
//! - Counters registered by other parts of the app through [`Metrics::add_counter`] (the Redis store's master
//!   switches, rediscoveries and missed WAIT confirmations, once it exists): one line each, read at scrape time.
//! - Gauges and histograms registered the same way ([`Metrics::add_gauge`], [`Metrics::add_histogram`]): the
//!   password hashing pool's queue depth and hash durations.
//! - `inventory_build_info{version}` and `process_start_time_seconds`.
//!
//! # Why a hand-written renderer
//!
//! The text exposition format is small (`# HELP`, `# TYPE`, `name{label="value"} number`) and every number
//! here already lives in an atomic owned by someone else: the engine keeps its counters and cumulative
//! histogram buckets in [`mooring::stats`]. The `prometheus-client` crate would want to own those values in
//! its own metric types, so using it means either a custom collector (as much code as this renderer) or
//! copying every value on every scrape, plus four more crates in the build. What the crate would buy us is
//! format correctness, and that is checked instead: the tests below parse what we render (escaping,
//! cumulative buckets, `+Inf` = `_count`), and `scripts/validate-deploy.sh` pipes a scrape of the real
//! binary into `promtool check metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mooring::stats::{Histogram, HistogramSnapshot};
use mooring::{SessionStats, StoreOp};

/// The label value of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads the current value of a counter owned elsewhere.
type ReadCounter = Box<dyn Fn() -> u64 + Send + Sync>;

/// A counter registered with [`Metrics::add_counter`].
struct ExtraCounter {
    name: &'static str,
    help: &'static str,
    read: ReadCounter,
}

/// The series of one `(method, route)` pair.
#[derive(Default)]
struct RouteSeries {
    /// Requests by status code.
    by_status: HashMap<u16, u64>,
    /// Request durations.
    duration: Histogram,
}

/// A copy of one `(method, route)` pair's series, taken to render outside the lock:
/// method, route, `(status, count)` pairs, durations.
type SeriesCopy = (&'static str, Arc<str>, Vec<(u16, u64)>, HistogramSnapshot);

/// The app's metrics: the HTTP series it records itself, plus the sources it reads at scrape time.
pub struct Metrics {
    /// route → method → series. Keyed by route first so the hot path looks up with a borrowed `&str` and
    /// allocates only the first time a route is seen.
    http: Mutex<HashMap<Arc<str>, HashMap<&'static str, RouteSeries>>>,
    extra: Mutex<Vec<ExtraCounter>>,
    gauges: Mutex<Vec<ExtraCounter>>,
    histograms: Mutex<Vec<ExtraHistogram>>,
    started: SystemTime,
}

/// Reads the current snapshot of a histogram owned elsewhere.
type ReadHistogram = Box<dyn Fn() -> HistogramSnapshot + Send + Sync>;

/// A histogram registered with [`Metrics::add_histogram`].
struct ExtraHistogram {
    name: &'static str,
    help: &'static str,
    read: ReadHistogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field(
                "extra",
                &self
                    .extra
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics; `process_start_time_seconds` is now (the app builds its metrics while it starts).
    pub fn new() -> Self {
        Self {
            http: Mutex::new(HashMap::new()),
            extra: Mutex::new(Vec::new()),
            gauges: Mutex::new(Vec::new()),
            histograms: Mutex::new(Vec::new()),
            started: SystemTime::now(),
        }
    }

    /// Registers a counter whose value lives elsewhere (an atomic of a store, say), read at every scrape.
    /// `name` must be a valid metric name ending in `_total`; `read` must never decrease.
    ///
    /// ```
    /// # use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// let switches = Arc::new(AtomicU64::new(0));
    /// let metrics = inventory::metrics::Metrics::new();
    /// let s = Arc::clone(&switches);
    /// metrics.add_counter("mooring_redis_master_switches_total", "Master changes seen.", move || s.load(Ordering::Relaxed));
    /// ```
    ///
    /// # Panics
    ///
    /// On an invalid or duplicate name: that is a programming error, caught by any test that builds the app.
    pub fn add_counter(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        assert!(
            is_metric_name(name) && name.ends_with("_total"),
            "'{name}' is not a counter name (letters, digits, '_', ':', ending in _total)"
        );
        let mut extra = self.extra.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            extra.iter().all(|c| c.name != name),
            "counter '{name}' registered twice"
        );
        extra.push(ExtraCounter {
            name,
            help,
            read: Box::new(read),
        });
    }

    /// Registers a gauge whose value lives elsewhere, read at every scrape (like [`Metrics::add_counter`], but
    /// the value may go down). `name` must be a valid metric name not ending in `_total`.
    ///
    /// # Panics
    ///
    /// On an invalid or duplicate name.
    pub fn add_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        assert!(
            is_metric_name(name) && !name.ends_with("_total"),
            "'{name}' is not a gauge name"
        );
        let mut gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            gauges.iter().all(|g| g.name != name),
            "gauge '{name}' registered twice"
        );
        gauges.push(ExtraCounter {
            name,
            help,
            read: Box::new(read),
        });
    }

    /// Registers a histogram (in seconds, [`mooring::stats::Histogram`] buckets) owned elsewhere, read at
    /// every scrape.
    ///
    /// # Panics
    ///
    /// On an invalid or duplicate name.
    pub fn add_histogram(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> HistogramSnapshot + Send + Sync + 'static,
    ) {
        assert!(is_metric_name(name), "'{name}' is not a metric name");
        let mut histograms = self.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            histograms.iter().all(|h| h.name != name),
            "histogram '{name}' registered twice"
        );
        histograms.push(ExtraHistogram {
            name,
            help,
            read: Box::new(read),
        });
    }

    /// Records one answered request.
    /// `route` is the matched route template, `None` when no route matched.
    pub fn observe_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        let methods = match http.get_mut(route) {
            Some(methods) => methods,
            None => http.entry(Arc::from(route)).or_default(),
        };
        let series = methods.entry(method_label(method)).or_default();
        *series.by_status.entry(status).or_default() += 1;
        series.duration.observe(elapsed);
    }

    /// The exposition, in the Prometheus text format (version 0.0.4).
    pub fn render(&self, sessions: &SessionStats) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_http(&mut out);
        render_sessions(&mut out, sessions);
        for counter in self.extra.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            family(&mut out, counter.name, "counter", counter.help);
            sample(&mut out, counter.name, &[], (counter.read)());
        }
        for gauge in self.gauges.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            family(&mut out, gauge.name, "gauge", gauge.help);
            sample(&mut out, gauge.name, &[], (gauge.read)());
        }
        for h in self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            family(&mut out, h.name, "histogram", h.help);
            histogram(&mut out, h.name, &[], &(h.read)());
        }
        family(
            &mut out,
            "inventory_build_info",
            "gauge",
            "Always 1; the labels tell which build of inventory is running.",
        );
        sample(
            &mut out,
            "inventory_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "process_start_time_seconds {started:.3}");
        out
    }

    fn render_http(&self, out: &mut String) {
        // Copy under the lock, format outside it: a scrape must not stall requests.
        let mut series: Vec<SeriesCopy> = {
            let http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
            http.iter()
                .flat_map(|(route, methods)| {
                    methods.iter().map(move |(method, s)| {
                        let mut by_status: Vec<(u16, u64)> =
                            s.by_status.iter().map(|(k, v)| (*k, *v)).collect();
                        by_status.sort_unstable();
                        (*method, Arc::clone(route), by_status, s.duration.snapshot())
                    })
                })
                .collect()
        };
        series.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        family(
            out,
            "http_requests_total",
            "counter",
            "HTTP requests answered, by method, route template and status code.",
        );
        for (method, route, by_status, _) in &series {
            for (status, count) in by_status {
                let status = status.to_string();
                sample(
                    out,
                    "http_requests_total",
                    &[("method", method), ("route", route), ("status", &status)],
                    *count,
                );
            }
        }
        family(
            out,
            "http_request_duration_seconds",
            "histogram",
            "Time from receiving a request to its response being ready, by method and route template.",
        );
        for (method, route, _, duration) in &series {
            histogram(
                out,
                "http_request_duration_seconds",
                &[("method", method), ("route", route)],
                duration,
            );
        }
    }
}

/// Middleware: records `http_requests_total` and `http_request_duration_seconds` for every request.
pub async fn track_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    metrics.observe_request(
        &method,
        route.as_ref().map(MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The `/metrics` router, served on its own listener so it is never exposed through the app's Service or
/// Ingress.
pub fn router(metrics: Arc<Metrics>, sessions: mooring::SessionManager) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(sessions.stats());
            async move {
                (
                    [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                    body,
                )
                    .into_response()
            }
        }),
    )
}

fn render_sessions(out: &mut String, stats: &SessionStats) {
    use std::sync::atomic::Ordering::Relaxed;
    family(
        out,
        "mooring_session_loads_total",
        "counter",
        "Session loads by result: hit (live session), miss (none), expired (past its deadline), corrupt (undecodable record).",
    );
    for (result, counter) in [
        ("hit", &stats.loads_hit),
        ("miss", &stats.loads_miss),
        ("expired", &stats.loads_expired),
        ("corrupt", &stats.loads_corrupt),
    ] {
        sample(
            out,
            "mooring_session_loads_total",
            &[("result", result)],
            counter.load(Relaxed),
        );
    }
    for (name, help, counter) in [
        (
            "mooring_session_cookies_rejected_total",
            "Session cookies refused because their signature did not verify.",
            &stats.cookies_rejected,
        ),
        (
            "mooring_session_cookies_duplicate_total",
            "Requests with several valid session cookies (one planted by a sibling domain), answered as having no session.",
            &stats.cookies_duplicate,
        ),
        (
            "mooring_session_records_refused_total",
            "Encrypted session records refused because their identity MAC or a value did not verify (edited in the store).",
            &stats.records_refused,
        ),
        (
            "mooring_session_pre_sessions_issued_total",
            "Pre-session cookies issued: visitors with a CSRF token or flash messages and no stored record.",
            &stats.pre_sessions_issued,
        ),
        (
            "mooring_session_flashes_dropped_total",
            "Flash messages dropped or cut to keep a pre-session cookie within its size bound.",
            &stats.flashes_dropped,
        ),
        (
            "mooring_session_values_undecodable_total",
            "Session values that could not be decrypted or decoded and were read as absent.",
            &stats.values_undecodable,
        ),
        (
            "mooring_sessions_created_total",
            "Sessions created.",
            &stats.created,
        ),
        (
            "mooring_session_saves_total",
            "Session deltas saved.",
            &stats.saved,
        ),
        (
            "mooring_session_writes_to_missing_total",
            "Session writes dropped because the session had been deleted or had expired meanwhile.",
            &stats.writes_to_missing,
        ),
    ] {
        family(out, name, "counter", help);
        sample(out, name, &[], counter.load(Relaxed));
    }
    family(
        out,
        "mooring_store_operation_duration_seconds",
        "histogram",
        "Duration of session store calls, successful or not, by operation.",
    );
    for op in StoreOp::ALL {
        let snapshot = stats.op(op).duration.snapshot();
        histogram(
            out,
            "mooring_store_operation_duration_seconds",
            &[("op", op.name())],
            &snapshot,
        );
    }
    family(
        out,
        "mooring_store_errors_total",
        "counter",
        "Session store calls that failed, by operation and kind (error: the store failed; timeout: it exceeded SESSION_STORE_TIMEOUT_MS).",
    );
    for op in StoreOp::ALL {
        let op_stats = stats.op(op);
        for (kind, counter) in [("error", &op_stats.errors), ("timeout", &op_stats.timeouts)] {
            sample(
                out,
                "mooring_store_errors_total",
                &[("op", op.name()), ("kind", kind)],
                counter.load(Relaxed),
            );
        }
    }
}

/// Bounded label values: the nine standard methods, everything else is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes only backslash and newline.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (key, value) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

fn sample(out: &mut String, name: &str, label_pairs: &[(&str, &str)], value: u64) {
    out.push_str(name);
    labels(out, label_pairs, None);
    let _ = writeln!(out, " {value}");
}

fn histogram(out: &mut String, name: &str, label_pairs: &[(&str, &str)], h: &HistogramSnapshot) {
    for (bound, count) in &h.cumulative {
        let le = if bound.is_infinite() {
            "+Inf".to_owned()
        } else {
            bound.to_string()
        };
        let _ = write!(out, "{name}_bucket");
        labels(out, label_pairs, Some(&le));
        let _ = writeln!(out, " {count}");
    }
    let _ = write!(out, "{name}_sum");
    labels(out, label_pairs, None);
    let _ = writeln!(out, " {}", h.sum_seconds);
    let _ = write!(out, "{name}_count");
    labels(out, label_pairs, None);
    let _ = writeln!(out, " {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// One parsed sample: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict parser of the subset we emit: every sample belongs to a family declared by `# TYPE` before
    /// it, label values are properly escaped, values are numbers. Returns the families' types and the samples.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(is_metric_name(name), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "declared twice: {line}"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line: {line:?}"
            );
            let name_end = line.find(['{', ' ']).expect("name");
            let name = &line[..name_end];
            let mut rest = &line[name_end..];
            let mut label_map = BTreeMap::new();
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices();
                loop {
                    let (start, _) = chars.next().expect("label or }");
                    if body[start..].starts_with('}') {
                        rest = &body[start + 1..];
                        break;
                    }
                    let eq = body[start..].find("=\"").expect("=\"") + start;
                    let key = body[start..eq].trim_start_matches(',').to_owned();
                    for _ in start..eq + 1 {
                        chars.next();
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next().expect("closing quote");
                        match c {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    label_map.insert(key, value);
                }
            }
            let value: f64 = rest
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its # TYPE: {line}");
            samples.push((name.to_owned(), label_map, value));
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                    && l.len() == want.len()
            })
            .map(|s| s.2)
    }

    #[test]
    fn every_family_is_rendered_with_its_labels() {
        let metrics = Metrics::new();
        let stats = SessionStats::default();
        stats.loads_hit.fetch_add(3, Ordering::Relaxed);
        stats.op(StoreOp::Apply).timeouts.fetch_add(2, Ordering::Relaxed);
        stats.op(StoreOp::Load).duration.observe(Duration::from_millis(3));
        let (types, samples) = parse(&metrics.render(&stats));
        for (name, kind) in [
            ("http_requests_total", "counter"),
            ("http_request_duration_seconds", "histogram"),
            ("mooring_session_loads_total", "counter"),
            ("mooring_session_cookies_rejected_total", "counter"),
            ("mooring_session_cookies_duplicate_total", "counter"),
            ("mooring_session_records_refused_total", "counter"),
            ("mooring_session_pre_sessions_issued_total", "counter"),
            ("mooring_session_flashes_dropped_total", "counter"),
            ("mooring_session_values_undecodable_total", "counter"),
            ("mooring_sessions_created_total", "counter"),
            ("mooring_session_saves_total", "counter"),
            ("mooring_session_writes_to_missing_total", "counter"),
            ("mooring_store_operation_duration_seconds", "histogram"),
            ("mooring_store_errors_total", "counter"),
            ("inventory_build_info", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        assert_eq!(
            value(&samples, "mooring_session_loads_total", &[("result", "hit")]),
            Some(3.0)
        );
        assert_eq!(
            value(&samples, "mooring_session_loads_total", &[("result", "corrupt")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "mooring_store_errors_total",
                &[("op", "apply"), ("kind", "timeout")]
            ),
            Some(2.0)
        );
        for op in StoreOp::ALL {
            let count = value(
                &samples,
                "mooring_store_operation_duration_seconds_count",
                &[("op", op.name())],
            );
            let inf = value(
                &samples,
                "mooring_store_operation_duration_seconds_bucket",
                &[("op", op.name()), ("le", "+Inf")],
            );
            assert_eq!(count, inf, "{}: +Inf bucket equals count", op.name());
        }
        assert_eq!(
            value(
                &samples,
                "mooring_store_operation_duration_seconds_bucket",
                &[("op", "load"), ("le", "0.0025")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "mooring_store_operation_duration_seconds_bucket",
                &[("op", "load"), ("le", "0.005")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "inventory_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        let started = value(&samples, "process_start_time_seconds", &[]).expect("start time");
        assert!(started > 1.7e9, "seconds since the epoch: {started}");
    }

    #[test]
    fn requests_are_counted_by_method_route_and_status() {
        let metrics = Metrics::new();
        let items = Some("/items/{id}/delete");
        for status in [303, 303, 404] {
            metrics.observe_request(&Method::POST, items, status, Duration::from_millis(7));
        }
        metrics.observe_request(&Method::GET, None, 404, Duration::from_secs(30));
        metrics.observe_request(
            &Method::from_bytes(b"BREW").expect("method"),
            None,
            405,
            Duration::ZERO,
        );
        let (_, samples) = parse(&metrics.render(&SessionStats::default()));
        let post = [("method", "POST"), ("route", "/items/{id}/delete")];
        assert_eq!(
            value(
                &samples,
                "http_requests_total",
                &[post[0], post[1], ("status", "303")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &samples,
                "http_requests_total",
                &[post[0], post[1], ("status", "404")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "http_request_duration_seconds_count", &post),
            Some(3.0)
        );
        let sum = value(&samples, "http_request_duration_seconds_sum", &post).expect("sum");
        assert!((sum - 0.021).abs() < 1e-9, "{sum}");
        let unmatched = [("method", "GET"), ("route", UNMATCHED_ROUTE)];
        assert_eq!(
            value(
                &samples,
                "http_request_duration_seconds_bucket",
                &[unmatched[0], unmatched[1], ("le", "2.5")]
            ),
            Some(0.0),
            "30 s is above the last finite bucket"
        );
        assert_eq!(
            value(
                &samples,
                "http_request_duration_seconds_bucket",
                &[unmatched[0], unmatched[1], ("le", "+Inf")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "http_requests_total",
                &[("method", "other"), ("route", UNMATCHED_ROUTE), ("status", "405")]
            ),
            Some(1.0),
            "unknown methods are folded into one label value"
        );
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let metrics = Metrics::new();
        let route = Some("/session");
        for ms in [0, 1, 2, 4, 9, 30, 120, 700, 4000] {
            metrics.observe_request(&Method::GET, route, 200, Duration::from_millis(ms));
        }
        let (_, samples) = parse(&metrics.render(&SessionStats::default()));
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|(n, l, _)| n == "http_request_duration_seconds_bucket" && l["route"] == "/session")
            .map(|(_, l, v)| {
                (
                    if l["le"] == "+Inf" {
                        f64::INFINITY
                    } else {
                        l["le"].parse().expect("le")
                    },
                    *v,
                )
            })
            .collect();
        assert!(
            buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{buckets:?}"
        );
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 9.0)));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.observe_request(&Method::GET, Some("/a\"b\\c\nd"), 200, Duration::ZERO);
        let text = metrics.render(&SessionStats::default());
        assert!(text.contains(r#"route="/a\"b\\c\nd""#), "{text}");
        let (_, samples) = parse(&text);
        assert!(
            samples
                .iter()
                .any(|(_, l, _)| l.get("route").map(String::as_str) == Some("/a\"b\\c\nd"))
        );
    }

    #[test]
    fn added_counters_are_read_at_every_scrape() {
        let switches = Arc::new(AtomicU64::new(0));
        let metrics = Metrics::new();
        let s = Arc::clone(&switches);
        metrics.add_counter(
            "mooring_redis_master_switches_total",
            "Master changes seen.",
            move || s.load(Ordering::Relaxed),
        );
        let stats = SessionStats::default();
        let read = |m: &Metrics| {
            value(
                &parse(&m.render(&stats)).1,
                "mooring_redis_master_switches_total",
                &[],
            )
        };
        assert_eq!(read(&metrics), Some(0.0));
        switches.fetch_add(2, Ordering::Relaxed);
        assert_eq!(read(&metrics), Some(2.0));
    }

    #[test]
    #[should_panic(expected = "is not a counter name")]
    fn a_counter_name_must_end_in_total() {
        Metrics::new().add_counter("mooring_redis_switches", "x", || 0);
    }
}
