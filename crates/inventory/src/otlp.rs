//! Trace export over OTLP/HTTP with protobuf bodies, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The pipeline is the OpenTelemetry SDK's: a [`BatchSpanProcessor`] queues ended spans and a thread of its own
//! POSTs them in batches (every 5 s, or at 512 spans) with a blocking HTTP client. Its invariants are why
//! export can never slow or fail a request:
//!
//! - A request only hands its ended span to a bounded queue (2048 spans; `OTEL_BSP_MAX_QUEUE_SIZE`) without
//!   waiting. When the queue is full the span is dropped: the SDK warns at the first drop and gives the total
//!   at shutdown.
//! - Each export gives up after [`EXPORT_TIMEOUT`], retries included, so a collector that hangs holds up
//!   only the export thread.
//! - A failing collector is reported by [`ReportingExporter`]: once when exports start failing, then at most
//!   once every [`REPORT_EVERY`] with the count of spans lost meanwhile, and once when they succeed again.
//! - Shutdown flushes what is queued, waiting at most [`FLUSH_TIMEOUT`] (see [`Telemetry::shutdown`]), so
//!   SIGTERM still ends the process within the pod's grace period.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter};

use crate::config::TraceExport;

/// Longest one export may take, retries included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest shutdown waits for the last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Export failures are logged at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The span exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace export: {0}")]
pub struct TraceExportError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The tracer provider for `export`: OTLP/HTTP protobuf, batched, sampled parent-first.
///
/// The exporter also honours `OTEL_EXPORTER_OTLP_HEADERS` and the batch processor `OTEL_BSP_*` from the process
/// environment; everything else comes from `export`.
pub(crate) fn provider(export: &TraceExport, instance: &str) -> Result<SdkTracerProvider, TraceExportError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(export.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(export.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ])
        .build();
    // A caller's sampling decision (the `traceparent` flags) wins; new traces are sampled by trace id.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(export.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(ReportingExporter::new(exporter)).build())
        .with_resource(resource)
        .with_sampler(sampler)
        .build())
}

/// Wraps the OTLP exporter to log its failures at most once every [`REPORT_EVERY`].
#[derive(Debug)]
struct ReportingExporter<E> {
    inner: E,
    failures: Mutex<Failures>,
}

/// Failed exports not yet reported.
#[derive(Debug, Default)]
struct Failures {
    /// Whether the last export failed.
    failing: bool,
    /// When a failure was last logged.
    reported_at: Option<Instant>,
    /// Batches and spans lost since then.
    batches: u64,
    spans: u64,
}

impl<E> ReportingExporter<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failures: Mutex::new(Failures::default()),
        }
    }

    fn record(&self, spans: usize, result: &OTelSdkResult) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                if failures.failing {
                    tracing::info!(lost_spans = failures.spans, "OTLP trace export works again");
                }
                *failures = Failures::default();
            }
            Err(err) => {
                failures.failing = true;
                failures.batches += 1;
                failures.spans += spans as u64;
                if failures.reported_at.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                    tracing::warn!(
                        error = %err,
                        lost_batches = failures.batches,
                        lost_spans = failures.spans,
                        "OTLP trace export failed: these spans are lost, requests are not affected; further failures are reported at most once a minute"
                    );
                    failures.reported_at = Some(Instant::now());
                    failures.batches = 0;
                    failures.spans = 0;
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.record(spans, &result);
        result
    }

    /// Called by the processor after its last export: reports the losses not reported yet.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if let Ok(failures) = self.failures.lock()
            && failures.spans > 0
        {
            tracing::warn!(
                lost_batches = failures.batches,
                lost_spans = failures.spans,
                "OTLP trace export: spans lost since the last report"
            );
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    // The processor hands the resource (service.name, ...) to the exporter this way: it must reach the inner one.
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// What [`crate::telemetry::init`] set up; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub(crate) provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter, waiting at most [`FLUSH_TIMEOUT`]. Call it after the
    /// server has drained, so the last requests' spans are in the queue.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks while it flushes: keep that off the async workers.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("OTLP trace export stopped"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, timeout = ?FLUSH_TIMEOUT, "OTLP trace export: the last spans were not all exported")
            }
            Err(err) => tracing::warn!(error = %err, "OTLP trace export: flush task failed"),
        }
    }
}
