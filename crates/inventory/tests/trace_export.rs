//! OTLP trace export of the real binary: spans reach a collector the test runs (a real OTLP/HTTP receiver that
//! decodes the protobuf `ExportTraceServiceRequest`), continue a caller's `traceparent`, and are flushed on
//! SIGTERM; without an endpoint nothing is set up; a collector that refuses connections costs requests nothing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatus};
use prost::Message as _;
use support::Process;

/// The caller's trace in the `traceparent` header the test sends.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The caller's span, which must become the parent of the app's request span.
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// One POST the receiver got: its content type and the decoded request.
struct Received {
    content_type: String,
    request: ExportTraceServiceRequest,
}

/// A minimal OTLP/HTTP collector: `POST /v1/traces` with a protobuf body, answered as the specification says
/// (200 and an empty `ExportTraceServiceResponse`). A body that does not decode fails the request with 400
/// and is remembered as a failure.
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    undecodable: Arc<Mutex<Vec<String>>>,
    _server: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Collector {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let undecodable = Arc::new(Mutex::new(Vec::new()));
        let (ok, bad) = (Arc::clone(&received), Arc::clone(&undecodable));
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        ok.lock().expect("lock").push(Received {
                            content_type,
                            request,
                        });
                        (
                            StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            Vec::new(),
                        )
                    }
                    Err(err) => {
                        bad.lock().expect("lock").push(err.to_string());
                        (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            err.to_string().into_bytes(),
                        )
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("collector");
        });
        Self {
            url,
            received,
            undecodable,
            _server: AbortOnDrop(server),
        }
    }

    fn posts(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Names of the threads of process `pid` (Linux: truncated to 15 bytes).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The SDK's batch thread, "OpenTelemetry.Traces.BatchProcessor", as /proc shows it.
const BATCH_THREAD: &str = "OpenTelemetry.T";

/// A fresh DATA_DIR for one process.
fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[tokio::test]
async fn spans_reach_the_collector_continue_the_callers_trace_and_are_flushed_on_sigterm() {
    let collector = Collector::start().await;
    let data = data_dir();
    let app = Process::spawn(&[
        ("DATA_DIR", data.path().to_str().expect("utf-8")),
        ("INSTANCE_NAME", "trace-test-1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
        ("OTEL_SERVICE_NAME", "inventory-trace-test"),
        // No scheduled export during the test: the spans can only arrive through the flush on SIGTERM.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await;
    assert!(
        thread_names(app.pid()).iter().any(|t| t == BATCH_THREAD),
        "the export thread runs: {:?}",
        thread_names(app.pid())
    );
    let http = reqwest::Client::new();
    let first = http
        .get(format!("{}/session", app.url))
        .send()
        .await
        .expect("GET /session");
    assert_eq!(first.status(), reqwest::StatusCode::OK);
    let traced = http
        .put(format!("{}/session/values/colour", app.url))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json("teal")
        .send()
        .await
        .expect("PUT with traceparent");
    assert_eq!(traced.status(), reqwest::StatusCode::OK);
    for path in ["/healthz", "/readyz"] {
        let probe = http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("probe");
        assert_eq!(probe.status(), reqwest::StatusCode::OK, "{path}");
    }
    let missing = http
        .get(format!("{}/no-such-page", app.url))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(collector.posts(), 0, "nothing is exported before the flush");

    let (status, _log) = app.terminate_and_log().await;
    assert!(status.success(), "clean exit: {status}");
    assert!(
        collector.undecodable.lock().expect("lock").is_empty(),
        "every body is a protobuf ExportTraceServiceRequest: {:?}",
        collector.undecodable.lock().expect("lock")
    );
    let received = collector.received.lock().expect("lock");
    assert!(!received.is_empty(), "the spans were flushed on SIGTERM");
    let mut spans: Vec<Span> = Vec::new();
    for post in received.iter() {
        assert_eq!(post.content_type, "application/x-protobuf");
        for resource_spans in &post.request.resource_spans {
            let resource = resource_spans.resource.as_ref().expect("a resource");
            assert_eq!(
                string(&resource.attributes, "service.name").as_deref(),
                Some("inventory-trace-test")
            );
            assert_eq!(
                string(&resource.attributes, "service.instance.id").as_deref(),
                Some("trace-test-1")
            );
            for scope in &resource_spans.scope_spans {
                spans.extend(scope.spans.iter().cloned());
            }
        }
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let session = spans
        .iter()
        .find(|s| s.name == "GET /session")
        .unwrap_or_else(|| panic!("a span for GET /session in {names:?}"));
    assert_eq!(session.kind, SpanKind::Server as i32);
    assert_eq!(
        string(&session.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string(&session.attributes, "http.route").as_deref(),
        Some("/session")
    );
    assert_eq!(
        int(&session.attributes, "http.response.status_code"),
        Some(200),
        "{:?}",
        session.attributes
    );
    assert!(session.parent_span_id.is_empty(), "no traceparent: a root span");
    assert_ne!(hex(&session.trace_id), TRACE_ID, "a trace of its own");
    // The session was created in the store, inside the request's span.
    let create = spans
        .iter()
        .find(|s| s.name == "session_store.create" && s.trace_id == session.trace_id)
        .unwrap_or_else(|| panic!("the store call of GET /session in {names:?}"));
    assert_eq!(create.parent_span_id, session.span_id);
    assert_eq!(create.kind, SpanKind::Client as i32);
    assert_eq!(
        string(&create.attributes, "db.system.name").as_deref(),
        Some("sqlite")
    );

    let put = spans
        .iter()
        .find(|s| s.name == "PUT /session/values/{name}")
        .unwrap_or_else(|| panic!("a span for the PUT in {names:?}"));
    assert_eq!(hex(&put.trace_id), TRACE_ID, "the caller's trace continues");
    assert_eq!(
        hex(&put.parent_span_id),
        PARENT_SPAN_ID,
        "the caller's span is the parent"
    );
    assert_eq!(int(&put.attributes, "http.response.status_code"), Some(200));
    assert!(
        spans
            .iter()
            .any(|s| s.name.starts_with("session_store.") && s.parent_span_id == put.span_id),
        "the PUT's store calls are in the caller's trace too: {names:?}"
    );

    let unmatched = spans
        .iter()
        .find(|s| int(&s.attributes, "http.response.status_code") == Some(404))
        .unwrap_or_else(|| panic!("a span for the 404 in {names:?}"));
    assert_eq!(unmatched.name, "GET", "no route: the method alone");
    assert_eq!(string(&unmatched.attributes, "http.route"), None);
    assert_eq!(
        unmatched.status.as_ref().map_or(0, |s| s.code),
        SpanStatus::Unset as i32,
        "a 4xx is not a server error"
    );

    for probe in ["/healthz", "/readyz"] {
        assert!(
            !spans
                .iter()
                .any(|s| string(&s.attributes, "http.route").as_deref() == Some(probe)),
            "probes are not exported: {names:?}"
        );
    }
    assert!(
        !names.contains(&"session_store.ping"),
        "the readiness ping is not exported: {names:?}"
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_set_up_and_requests_are_served_as_before() {
    let data = data_dir();
    let app = Process::spawn(&[
        ("DATA_DIR", data.path().to_str().expect("utf-8")),
        ("INSTANCE_NAME", "trace-test-2"),
        // Every other OTEL_* setting, but no endpoint: export stays off.
        ("OTEL_SERVICE_NAME", "inventory-trace-test"),
        ("OTEL_TRACES_SAMPLER_ARG", "1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let threads = thread_names(app.pid());
    assert!(
        !threads.iter().any(|t| t == BATCH_THREAD),
        "no export thread without an endpoint: {threads:?}"
    );
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/session", app.url))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .send()
        .await
        .expect("GET /session");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["hits"], 1);
    assert_eq!(body["served_by"], "trace-test-2");

    let (status, log) = app.terminate_and_log().await;
    assert!(status.success(), "clean exit: {status}");
    let messages: Vec<&str> = log.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages.contains(&"request"),
        "the request is logged as before: {messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("OTLP")),
        "no word of OTLP export: {messages:?}"
    );
}

#[tokio::test]
async fn a_collector_that_refuses_connections_neither_slows_nor_fails_requests() {
    // A port nobody listens on: every export is refused at once, then retried by the exporter.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", refused.local_addr().expect("addr"));
    drop(refused);
    let data = data_dir();
    let app = Process::spawn(&[
        ("DATA_DIR", data.path().to_str().expect("utf-8")),
        ("INSTANCE_NAME", "trace-test-3"),
        ("SESSION_DRIVER", "memory"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        // Export as often as possible, into a small queue, so failures and drops happen during the requests.
        ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
    ])
    .await;
    let http = reqwest::Client::new();
    let mut cookie: Option<String> = None;
    let mut took = Vec::new();
    let started = Instant::now();
    // Long enough for several failed exports (each retries for about 0.7 s), bounded in count as well.
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(3) && n < 20_000 {
        n += 1;
        let mut request = http.get(format!("{}/session", app.url));
        if let Some(cookie) = &cookie {
            request = request.header("cookie", cookie);
        }
        let began = Instant::now();
        let response = request.send().await.expect("GET /session");
        took.push(began.elapsed());
        assert_eq!(response.status(), reqwest::StatusCode::OK, "request {n}");
        if let Some(set) = response.headers().get("set-cookie") {
            cookie = Some(
                set.to_str()
                    .expect("ASCII")
                    .split(';')
                    .next()
                    .expect("pair")
                    .to_owned(),
            );
        }
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["hits"], n, "the session works as usual");
    }
    let spent = started.elapsed();
    took.sort();
    let median = took[took.len() / 2];
    // An export in the request path would cost each request the exporter's retries (100 + 200 + 400 ms).
    assert!(
        median < Duration::from_millis(100),
        "median request {median:?} (slowest {:?}, all {spent:?})",
        took.last()
    );

    let sigterm = Instant::now();
    let (status, log) = app.terminate_and_log().await;
    let shutdown = sigterm.elapsed();
    assert!(status.success(), "clean exit: {status}");
    assert!(
        shutdown < inventory::otlp::FLUSH_TIMEOUT + Duration::from_secs(3),
        "the flush is bounded: shutdown took {shutdown:?}"
    );
    let messages: Vec<&str> = log.iter().filter_map(|l| l["message"].as_str()).collect();
    let failed = messages
        .iter()
        .filter(|m| m.starts_with("OTLP trace export failed:"))
        .count();
    assert_eq!(
        failed, 1,
        "export failures are logged once, not per batch: {messages:?}"
    );
    let named = |name: &str| log.iter().filter(|l| l["name"] == name).count();
    assert_eq!(
        named("BatchSpanProcessor.ExportError"),
        0,
        "the SDK's per-batch error is not logged"
    );
    assert_eq!(
        named("BatchSpanProcessor.SpanDroppingStarted"),
        1,
        "a full queue drops spans and says so once"
    );
    // Exports failed during the run after the one report, and the flush failed too: all counted, not logged.
    assert!(
        log.iter().any(
            |l| l["message"] == "OTLP trace export: spans lost since the last report"
                && l["lost_batches"].as_u64() >= Some(2)
        ),
        "the failures after the first report are counted and reported at shutdown: {messages:?}"
    );
}
