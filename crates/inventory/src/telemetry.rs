//! Logging and tracing: JSON lines when not on a terminal, one line per request with a request id, and one span
//! per request that [`crate::otlp`] exports when OTLP export is configured.
//!
//! Two layers share the request spans, each with its own filter: the log layer follows `RUST_LOG` (and also
//! carries the OpenTelemetry SDK's own warnings, such as spans dropped on a full queue); the export layer takes
//! only this crate's spans (the request and its session store calls) at info and above, whatever `RUST_LOG`
//! says, so that the HTTP client inside the exporter can never trace its own exports.

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt as _, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};
use crate::error::ErrorDetail;
pub use crate::otlp::Telemetry;
use crate::otlp::TraceExportError;

/// Installs the global subscriber: logs in `config.log_format`, and span export when `config.trace_export` is
/// set. Keep the returned [`Telemetry`] and call [`Telemetry::shutdown`] before exiting. If a subscriber is
/// already installed (a second call), nothing changes and nothing is exported.
pub fn init(config: &Config) -> Result<Telemetry, TraceExportError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json().flatten_event(true).boxed()
    } else {
        logs.boxed()
    };
    let provider = match &config.trace_export {
        Some(export) => Some(crate::otlp::provider(export, &config.instance_name)?),
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("inventory"))
            // Only the attributes set here: no source location, thread, target or busy/idle times per span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_target("inventory", LevelFilter::INFO)
                    .with_target(PROBE_TARGET, LevelFilter::OFF),
            )
    });
    // The SDK logs every failed export; ReportingExporter reports them at most once a minute instead.
    let not_per_export = filter_fn(|meta| meta.name() != "BatchSpanProcessor.ExportError");
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter.and(not_per_export)))
        .with(spans)
        .try_init()
        .is_ok();
    if let Some(export) = config.trace_export.as_ref().filter(|_| installed) {
        tracing::info!(
            endpoint = %export.endpoint,
            service = %export.service_name,
            sample_ratio = export.sample_ratio,
            "OTLP trace export is on"
        );
    }
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// The header carrying the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        })
}

/// Routes the kubelet and load balancers poll every few seconds: their spans would bury the traces of real
/// requests, so they are logged but not exported.
const PROBE_ROUTES: [&str; 2] = ["/healthz", "/readyz"];

/// The log target of probe requests' spans, which the export layer leaves out.
const PROBE_TARGET: &str = "inventory::probes";

/// Reads W3C trace context headers from a request.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: gives every request an id (kept from `x-request-id` when sane), echoes it, and logs one line
/// when the response is ready, with the error detail of failed requests.
///
/// The request runs in a span named after the OpenTelemetry HTTP conventions (`GET /items/{id}`, kind server,
/// `http.request.method`, `http.route`, `http.response.status_code`; a 5xx is an error). A valid
/// `traceparent` header makes it a child of the caller's span, so an exported trace continues the caller's.
pub async fn log_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    // Probes are logged like any request but never exported: see PROBES.
    macro_rules! request_span {
        ($target:expr) => {
            tracing::info_span!(
                target: $target,
                "request",
                request_id = %id,
                otel.name = name.as_str(),
                otel.kind = "server",
                http.request.method = %method,
                http.route = route.as_deref(),
                url.path = path.as_str(),
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        };
    }
    let span = if route.as_deref().is_some_and(|r| PROBE_ROUTES.contains(&r)) {
        request_span!(PROBE_TARGET)
    } else {
        request_span!(module_path!())
    };
    if req.headers().contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        // Fails only when no export layer is installed, where the parent has no use.
        let _ = span.set_parent(parent);
    }
    let mut response = next.run(req).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    // As i64: the export layer would record a u64 as a string.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let route = route.as_deref().unwrap_or("(unmatched)");
    let detail = response.extensions().get::<ErrorDetail>().map(|d| d.0.as_str());
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, route, path, status, ms, error = detail.unwrap_or(""), "request failed");
    } else if let Some(detail) = detail {
        tracing::info!(request_id = %id, %method, route, path, status, ms, error = detail, "request");
    } else {
        tracing::info!(request_id = %id, %method, route, path, status, ms, "request");
    }
    response
}
