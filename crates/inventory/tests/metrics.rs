//! `/metrics` of a running app: its own listener, the HTTP series labelled by route template, and the session
//! engine's counters moving with real requests. (`scripts/validate-deploy.sh` also pipes a scrape of the real
//! binary into `promtool check metrics`.)

use std::collections::HashMap;

use inventory::app::Application;
use inventory::config::Config;
use reqwest::StatusCode;

/// A running app with the memory driver, both listeners on free ports.
struct Running {
    app: String,
    metrics: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _data: tempfile::TempDir,
}

async fn start() -> Running {
    let data = tempfile::tempdir().expect("tempdir");
    let env: HashMap<&str, String> = [
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", "0".to_owned()),
        ("METRICS_PORT", "0".to_owned()),
        ("SESSION_DRIVER", "memory".to_owned()),
        ("SESSION_TEST_ENDPOINTS", "true".to_owned()),
        (
            "APP_KEY",
            "base64:dGVzdCBrZXkgdGhhdCBpcyBleGFjdGx5IDMyIGJ5dGVz".to_owned(),
        ),
        ("DATA_DIR", data.path().display().to_string()),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(|name| env.get(name).cloned()).expect("config");
    let app = Application::build(config).await.expect("app starts");
    assert_ne!(app.port(), app.metrics_port(), "two listeners");
    let running_app = format!("http://127.0.0.1:{}", app.port());
    let metrics = format!("http://127.0.0.1:{}", app.metrics_port());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Running {
        app: running_app,
        metrics,
        stop,
        _data: data,
    }
}

/// The value of the one sample line that starts with `series` (name and labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_follow_real_requests_on_their_own_port() {
    let running = start().await;
    let http = reqwest::Client::new();

    let first = http
        .get(format!("{}/session", running.app))
        .send()
        .await
        .expect("GET /session");
    assert_eq!(first.status(), StatusCode::OK);
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    for _ in 0..2 {
        let again = http
            .get(format!("{}/session", running.app))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("GET /session");
        assert_eq!(again.status(), StatusCode::OK);
    }
    let put = http
        .put(format!("{}/session/values/colour", running.app))
        .header("cookie", &cookie)
        .json("teal")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), StatusCode::OK);
    let forged = http
        .get(format!("{}/session", running.app))
        .header("cookie", "inventory_session=AAAA.BBBB")
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), StatusCode::OK);
    let missing = http
        .get(format!("{}/no/such/page", running.app))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let not_here = http
        .get(format!("{}/metrics", running.app))
        .send()
        .await
        .expect("app /metrics");
    assert_eq!(
        not_here.status(),
        StatusCode::NOT_FOUND,
        "/metrics is not served on the app's port"
    );

    let scrape = http
        .get(format!("{}/metrics", running.metrics))
        .send()
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), StatusCode::OK);
    assert_eq!(scrape.headers()["content-type"], inventory::metrics::CONTENT_TYPE);
    let text = scrape.text().await.expect("body");

    let expect = |series: &str, want: f64| {
        assert_eq!(
            sample(&text, series),
            Some(want),
            "{series} in the scrape:\n{text}"
        );
    };
    // Two cookie-less GETs (the first and the forged one) plus the two with the cookie.
    expect(
        r#"http_requests_total{method="GET",route="/session",status="200"}"#,
        4.0,
    );
    expect(
        r#"http_requests_total{method="PUT",route="/session/values/{name}",status="200"}"#,
        1.0,
    );
    // /no/such/page and /metrics on the app's port.
    expect(
        r#"http_requests_total{method="GET",route="(unmatched)",status="404"}"#,
        2.0,
    );
    expect(
        r#"http_request_duration_seconds_count{method="GET",route="/session"}"#,
        4.0,
    );
    expect(
        r#"http_request_duration_seconds_bucket{method="GET",route="/session",le="+Inf"}"#,
        4.0,
    );
    expect("mooring_sessions_created_total", 2.0);
    expect("mooring_session_cookies_rejected_total", 1.0);
    expect(r#"mooring_session_loads_total{result="hit"}"#, 3.0);
    expect(r#"mooring_session_loads_total{result="corrupt"}"#, 0.0);
    expect(r#"mooring_store_errors_total{op="load",kind="timeout"}"#, 0.0);
    expect(
        r#"mooring_store_operation_duration_seconds_count{op="load"}"#,
        3.0,
    );
    expect(
        &format!(
            r#"inventory_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    assert!(
        sample(&text, "process_start_time_seconds").is_some_and(|t| t > 1.7e9),
        "{text}"
    );

    let app_route = http
        .get(format!("{}/session", running.metrics))
        .send()
        .await
        .expect("metrics /session");
    assert_eq!(
        app_route.status(),
        StatusCode::NOT_FOUND,
        "the metrics listener serves nothing else"
    );
    let _ = running.stop.send(());
}
