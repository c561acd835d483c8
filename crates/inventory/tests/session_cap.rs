//! SESSION_MAX_PER_USER through the real app: a sign-in beyond the cap signs the account's oldest device out,
//! the dashboard counts the sessions left and the sessions page lists them, and another account is untouched.

mod support;

use reqwest::StatusCode;
use support::{TestApp, email};

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_sign_in_beyond_the_cap_signs_the_oldest_device_out() {
    let app = TestApp::spawn(&[("SESSION_MAX_PER_USER", "2")]).await;
    let who = email("capped");
    let mut oldest = app.client();
    oldest.register(&who, PASSWORD).await;
    let mut middle = app.client();
    assert_eq!(middle.login(&who, PASSWORD).await.location(), Some("/dashboard"));
    let other = email("bystander");
    let mut bystander = app.client();
    bystander.register(&other, PASSWORD).await;
    assert_eq!(
        oldest.get("/dashboard").await.status,
        StatusCode::OK,
        "two sessions: within the cap"
    );

    let mut newest = app.client();
    assert_eq!(newest.login(&who, PASSWORD).await.location(), Some("/dashboard"));
    assert_eq!(
        oldest.get("/dashboard").await.location(),
        Some("/login"),
        "the third sign-in signed the oldest device out"
    );
    assert_eq!(middle.get("/dashboard").await.status, StatusCode::OK);
    let dashboard = newest.get("/dashboard").await;
    assert!(
        dashboard.body.contains("id=\"session-count\">2<"),
        "the dashboard counts the two left: {}",
        dashboard.body
    );
    let page = newest.get("/sessions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("<tr").count() - 1,
        2,
        "two sessions listed: {}",
        page.body
    );
    assert!(
        bystander
            .get("/dashboard")
            .await
            .body
            .contains("id=\"session-count\">1<"),
        "another account keeps its session"
    );
}
