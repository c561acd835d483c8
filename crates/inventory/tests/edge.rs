//! What the app adds or refuses at its edge, through HTTP: security headers on every response (HSTS only with
//! secure cookies), the client address taken from the right of `X-Forwarded-For` by the trusted proxies, the
//! test endpoints off by default and JSON-only when on, and a fresh install that starts and says clearly why
//! it cannot.

mod support;

use inventory::app::{Application, StartError};
use inventory::config::Config;
use reqwest::StatusCode;
use support::{APP_KEY, TestApp, email};

const PASSWORD: &str = "correct horse battery";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

fn header<'a>(page: &'a support::Page, name: &str) -> Option<&'a str> {
    page.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn(&[]).await;
    let mut c = app.client();
    let mut pages = vec![
        ("/", c.get("/").await),
        ("/login", c.get("/login").await),
        ("/no-such-page", c.get("/no-such-page").await),
        ("/static/app.css", c.get("/static/app.css").await),
        ("/healthz", c.get("/healthz").await),
    ];
    c.register(&email("headers"), PASSWORD).await;
    pages.push(("/dashboard", c.get("/dashboard").await));
    pages.push(("/sessions", c.get("/sessions").await));
    for (path, page) in &pages {
        assert_eq!(header(page, "content-security-policy"), Some(CSP), "{path}");
        assert_eq!(header(page, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(page, "referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(header(page, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            header(page, "strict-transport-security"),
            None,
            "{path}: no HSTS without secure cookies (plain HTTP)"
        );
    }
    // The pages comply with the policy: no inline script or style, no event-handler attributes.
    for (path, page) in &pages {
        let body = page.body.to_lowercase();
        for inline in [
            "<script",
            "<style",
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "javascript:",
        ] {
            assert!(!body.contains(inline), "{path} has {inline}");
        }
    }
}

#[tokio::test]
async fn hsts_is_sent_only_with_secure_cookies() {
    let app = TestApp::spawn(&[("SESSION_SECURE_COOKIE", "true")]).await;
    for path in ["/", "/login", "/no-such-page"] {
        let page = app.client().get(path).await;
        assert_eq!(
            header(&page, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
        assert_eq!(header(&page, "content-security-policy"), Some(CSP), "{path}");
    }
}

/// Registers through `headers` and returns the address the sessions page shows for the session.
async fn address_shown(app: &TestApp, forwarded: &[&str]) -> String {
    let mut c = app.client();
    c.headers = forwarded
        .iter()
        .map(|v| ("x-forwarded-for".to_owned(), (*v).to_owned()))
        .collect();
    c.register(&email("addr"), PASSWORD).await;
    let page = c.get("/sessions").await;
    assert_eq!(page.status, StatusCode::OK);
    let start = page.body.find("<code>").expect("an address cell") + "<code>".len();
    let end = page.body[start..].find("</code>").expect("closing tag") + start;
    page.body[start..end].to_owned()
}

#[tokio::test]
async fn the_client_address_is_read_from_the_right_of_x_forwarded_for() {
    let direct = TestApp::spawn(&[]).await;
    assert_eq!(
        address_shown(&direct, &["6.6.6.6"]).await,
        "127.0.0.1",
        "no trusted proxy: the header is ignored"
    );
    // One trusted hop (the load balancer is the peer): the entry it appended, not the client's own.
    let one_hop = TestApp::spawn(&[("TRUSTED_PROXIES", "1")]).await;
    assert_eq!(
        address_shown(&one_hop, &["6.6.6.6, 198.51.100.7"]).await,
        "198.51.100.7"
    );
    assert_eq!(
        address_shown(&one_hop, &["6.6.6.6", "2001:db8::7"]).await,
        "2001:db8::7"
    );
    // The chart's older setting means the same.
    let alias = TestApp::spawn(&[("TRUST_PROXY_HEADERS", "true")]).await;
    assert_eq!(
        address_shown(&alias, &["6.6.6.6, 198.51.100.7:4711"]).await,
        "198.51.100.7"
    );
    // Networks: the peer (loopback) and 10/8 are proxies; the first other address from the right is the client.
    let networks = TestApp::spawn(&[("TRUSTED_PROXIES", "127.0.0.0/8,10.0.0.0/8")]).await;
    assert_eq!(
        address_shown(&networks, &["6.6.6.6, 198.51.100.7, 10.1.2.3"]).await,
        "198.51.100.7"
    );
    assert_eq!(
        address_shown(&networks, &["198.51.100.7, garbage"]).await,
        "127.0.0.1",
        "garbage where the client should be: the proxy that forwarded it"
    );
}

#[tokio::test]
async fn the_test_endpoints_are_off_by_default() {
    let app = TestApp::spawn(&[("SESSION_TEST_ENDPOINTS", "false")]).await;
    let mut c = app.client();
    assert_eq!(
        c.put("/session/values/x", "v").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put_raw("/session/values/x", Some("text/plain"), "v")
            .await
            .status,
        StatusCode::NOT_FOUND,
        "off looks like any unknown path, whatever the body"
    );
    assert_eq!(c.get("/session/values/x").await.status, StatusCode::NOT_FOUND);
    assert!(c.cookie.is_none(), "nothing was stored");
    let page = c.get("/session").await;
    assert_eq!(page.status, StatusCode::OK, "the seeds' /session stays on");
    assert_eq!(page.json()["value"], "session_is_working");
}

#[tokio::test]
async fn put_takes_only_a_json_string() {
    let app = TestApp::spawn(&[]).await;
    let mut c = app.client();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let page = c.put_raw("/session/values/x", content_type, "\"v\"").await;
        assert_eq!(
            page.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    for body in ["v", "{\"value\": \"v\"}", "42", ""] {
        let page = c
            .put_raw("/session/values/x", Some("application/json"), body)
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{body}: {}", page.body);
    }
    let page = c
        .put_raw(
            "/session/values/x",
            Some("application/json; charset=utf-8"),
            "\"blue\"",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(c.get("/session/values/x").await.json()["value"], "blue");
    let page = c.put("/session/values/long", &"a".repeat(1025)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("config")
}

#[tokio::test]
async fn a_fresh_install_with_app_key_creates_its_data_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("not").join("yet");
    let data_dir = data.display().to_string();
    let app = Application::build(config(&[
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", &data_dir),
        ("PORT", "0"),
        ("METRICS_PORT", "0"),
    ]))
    .await
    .expect("starts without ./data made beforehand");
    assert!(data.join("inventory.db").exists());
    drop(app);
    // Where the directory cannot be made, the message names it and the fix, and not the session store.
    let err = Application::build(config(&[
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", "/proc/inventory-test/data"),
        ("PORT", "0"),
        ("METRICS_PORT", "0"),
    ]))
    .await
    .err()
    .expect("cannot start");
    let text = err.to_string();
    assert!(matches!(err, StartError::DataDir { .. }), "{text}");
    assert!(
        text.contains("/proc/inventory-test/data") && text.contains("DATA_DIR"),
        "{text}"
    );
    assert!(!text.contains("session"), "{text}");
}

#[tokio::test]
async fn a_second_instance_is_told_which_port_to_change() {
    let first = TestApp::spawn(&[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().display().to_string();
    let port = first.url.rsplit(':').next().expect("port").to_owned();
    let err = Application::build(config(&[
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", &data_dir),
        ("PORT", &port),
        ("METRICS_PORT", "0"),
    ]))
    .await
    .err()
    .expect("the port is taken");
    assert!(err.to_string().contains("set PORT to a free port"), "{err}");
    let running = Application::build(config(&[
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", &data_dir),
        ("PORT", "0"),
        ("METRICS_PORT", "0"),
    ]))
    .await
    .expect("starts");
    let taken = running.metrics_port().to_string();
    let err = Application::build(config(&[
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", &data_dir),
        ("PORT", "0"),
        ("METRICS_PORT", &taken),
    ]))
    .await
    .err()
    .expect("the metrics port is taken");
    assert!(
        err.to_string().contains("set METRICS_PORT to a free port"),
        "{err}"
    );
}
