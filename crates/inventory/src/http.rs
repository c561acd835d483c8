//! The HTTP server and the limits that shed slow and greedy clients.
//!
//! `axum::serve` sets no header-read timer and no connection cap, so a socket sending one header byte every few
//! seconds holds a connection (and its task and buffers) forever. Here connections are served by hyper's
//! HTTP/1 builder directly, with:
//!
//! - a **header-read timeout** (`HTTP_HEADER_READ_TIMEOUT_MS`). hyper arms it whenever a connection waits for a
//!   request head: on a new connection and again after each response on a keep-alive connection
//!   (`proto/h1/conn.rs`, `poll_read_head`: the server always reads first, so an idle keep-alive connection is in
//!   that state). It is therefore also the idle keep-alive timeout: a connection that starts no request within
//!   it is closed.
//! - a **header size limit** (`HTTP_MAX_HEADER_BYTES`, start line included): beyond it hyper answers `431` and
//!   closes. The read buffer is bounded with it, so each connection's buffer memory is bounded too.
//! - a **connection cap** (`HTTP_MAX_CONNECTIONS`): a semaphore permit is taken *before* `accept`, so at the cap
//!   the server stops accepting and further connections wait in the kernel's listen backlog until a
//!   connection ends (the header timeout ends idle ones). Accepting and closing at once would answer a burst
//!   with resets that load balancers count as failures, and would cost a syscall per attempt; waiting costs
//!   the app nothing and serves those clients as soon as there is room.
//! - **graceful shutdown** through hyper-util's `GracefulShutdown`: on drain the listener closes, idle
//!   connections close, and requests in flight finish.
//!
//! Each request is then bounded by tower layers (`limit_requests`, `shed_load`): a request timeout
//! (`HTTP_REQUEST_TIMEOUT_MS`, `408`), a body limit (`HTTP_MAX_BODY_BYTES`, `413`), and a cap on requests in
//! flight (`HTTP_MAX_IN_FLIGHT`) beyond which requests get `503` with `Retry-After` at once rather than queueing.
//! The probes are kept out of the in-flight cap: they are cheap, and a flood must not make every replica look
//! unready (or dead) at once, which would have the load balancer or the kubelet finish what the flood began.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{BoxError, Layer, ServiceBuilder};

/// How the server bounds connections and requests. [`Default`] holds the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A connection must deliver a complete request head this soon after it starts waiting for one (also the
    /// idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// Largest request head (start line and headers) in bytes; beyond it, `431`.
    pub max_header_bytes: usize,
    /// Most connections open at once; beyond it, new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Most requests being handled at once (probes excepted); beyond it, `503` with `Retry-After`.
    pub max_in_flight: usize,
    /// Longest a request may take, body upload included; beyond it, `408`.
    pub request_timeout: Duration,
    /// Largest request body in bytes; beyond it, `413`.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// 10 s: a real client sends its request head in one packet; 10 s still covers three TCP retransmissions of it
/// (1 + 2 + 4 s) on a lossy link, and matches the lab HAProxy's `timeout http-request` and `http-keep-alive`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// 16 KiB: Node.js's default, and HAProxy's default buffer holds no larger head anyway. The session cookie is
/// under 100 bytes; browsers' cookie limits keep a whole `Cookie` header of this site far below it.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// 1024 connections: far above what the load balancers in front keep open, and with the read buffer bounded
/// by the header limit, at most 1024 × 32 KiB = 32 MiB of connection buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// 256 requests in flight: each waits on the database, the session store or the password hashers, which
/// have their own, smaller bounds; more in flight would only queue behind them.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// 30 s: far above any page's time (the store timeout is 2 s), so only a client dribbling its body, or a stuck
/// request, reaches it.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// 64 KiB: the largest form of the app (an item) is under 2 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// What the limits did, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests answered `503` because `HTTP_MAX_IN_FLIGHT` were already in flight.
    pub shed: AtomicU64,
    /// Times the accept loop found `HTTP_MAX_CONNECTIONS` open and waited for one to end.
    pub connection_cap_reached: AtomicU64,
    /// Connections closed for not sending a request head within `HTTP_HEADER_READ_TIMEOUT_MS`.
    pub header_timeouts: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// Registers [`HttpStats`] as counters.
pub fn register_counters(metrics: &crate::metrics::Metrics, stats: &Arc<HttpStats>) {
    type Field = fn(&HttpStats) -> &AtomicU64;
    let counters: [(&'static str, &'static str, Field); 4] = [
        (
            "inventory_http_requests_shed_total",
            "Requests answered 503 because HTTP_MAX_IN_FLIGHT requests were in flight.",
            |s| &s.shed,
        ),
        (
            "inventory_http_connection_cap_reached_total",
            "Times HTTP_MAX_CONNECTIONS connections were open and new ones waited in the listen backlog.",
            |s| &s.connection_cap_reached,
        ),
        (
            "inventory_http_header_timeouts_total",
            "Connections closed for sending no complete request head within HTTP_HEADER_READ_TIMEOUT_MS.",
            |s| &s.header_timeouts,
        ),
        ("inventory_http_connections_total", "Connections accepted.", |s| {
            &s.connections
        }),
    ];
    for (name, help, field) in counters {
        let stats = Arc::clone(stats);
        metrics.add_counter(name, help, move || field(&stats).load(Ordering::Relaxed));
    }
}

/// Adds the request timeout and the body limit to every route of `router`.
pub(crate) fn limit_requests<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: &HttpLimits,
) -> Router<S> {
    router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body_bytes,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

/// Adds the in-flight cap to every route of `router`: one semaphore shared by all of them (axum applies a layer
/// per route, so the per-service `ConcurrencyLimitLayer` would give each route its own cap), and `503` with
/// `Retry-After` when it is full instead of a queue.
pub(crate) fn shed_load<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: &HttpLimits,
    stats: Arc<HttpStats>,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |err: BoxError| {
                let stats = Arc::clone(&stats);
                async move { overloaded(&err, &stats) }
            }))
            .layer(tower::load_shed::LoadShedLayer::new())
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                limits.max_in_flight,
            )),
    )
}

fn overloaded(err: &BoxError, stats: &HttpStats) -> Response {
    if !err.is::<tower::load_shed::error::Overloaded>() {
        // The wrapped router never fails; should that change, say so without internal text.
        tracing::error!(error = %err, "request failed below the in-flight limit");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    stats.shed.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        "The service is busy. Please retry in a moment.\n",
    )
        .into_response()
}

/// The Content-Security-Policy of every response: no inline script or style, nothing from elsewhere, no
/// framing (clickjacking), forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";
/// HSTS, sent only when the cookie is HTTPS-only: a year, subdomains included.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// Adds the security headers to every response of `router` that does not set its own. HSTS only with `hsts`
/// (the site is served over HTTPS: `SESSION_SECURE_COOKIE=true`); over plain HTTP browsers ignore it.
pub(crate) fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>, hsts: bool) -> Router<S> {
    use tower_http::set_header::SetResponseHeaderLayer;
    let set = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            hsts.then(|| HeaderValue::from_static(STRICT_TRANSPORT_SECURITY)),
        ))
}

/// Serves `app` on `listener` until `drain` completes, then shuts down gracefully: stops accepting, closes idle
/// connections, and returns once every request in flight has finished (the caller bounds that wait).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    stats: Arc<HttpStats>,
    drain: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // Room for a head at the limit plus the start of a body or of a pipelined request; hyper's default
        // (about 400 KB) would let each connection's buffer grow twelve times larger.
        .max_buf_size((2 * limits.max_header_bytes).max(16 * 1024));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(drain);
    loop {
        if permits.available_permits() == 0 {
            stats.connection_cap_reached.fetch_add(1, Ordering::Relaxed);
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut drain => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted: as axum::serve
                    // and hyper's examples do, pause briefly rather than spin, and keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut drain => break,
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let service =
            TowerToHyperService::new(axum::Extension(ConnectInfo::<SocketAddr>(peer)).layer(app.clone()));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                if err.is_timeout() {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Closing the listener refuses new connections at once, instead of leaving them in the backlog.
    drop(listener);
    graceful.shutdown().await;
}
