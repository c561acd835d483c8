//! The app through HTTP, as a browser uses it: accounts, id rotation, cookie flags, CSRF, items, the sessions
//! page, readiness during shutdown, and a restart that keeps everyone signed in. Each test has its own
//! instance and database.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::{Client, TestApp, email};

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn register_sign_out_and_sign_in() {
    let app = TestApp::spawn(&[]).await;
    let mut c = app.client();
    let who = email("flow");
    let page = c.register(&who, PASSWORD).await;
    assert_eq!(page.location(), Some("/dashboard"));
    let page = c.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&who), "the dashboard names the user");
    assert!(
        page.body.contains("Welcome!"),
        "the flash from registration shows once"
    );
    assert!(
        !c.get("/dashboard").await.body.contains("Welcome!"),
        "and only once"
    );

    let csrf = c.get("/dashboard").await.csrf();
    let page = c.post("/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(c.get("/").await.body.contains("You have been signed out."));
    let page = c.get("/dashboard").await;
    assert_eq!(page.location(), Some("/login"), "signed out");

    let page = c.login(&who, "wrong password").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Email or password is incorrect."));
    let page = c.login(&who.to_uppercase(), PASSWORD).await;
    assert_eq!(page.location(), Some("/dashboard"), "emails are case-insensitive");
    assert_eq!(c.get("/dashboard").await.status, StatusCode::OK);

    let mut other = app.client();
    let csrf = other.get("/register").await.csrf();
    let page = other
        .post(
            "/register",
            &[
                ("email", &who),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
                ("_csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("already registered"));
}

#[tokio::test]
async fn sign_in_rotates_the_session_id_and_the_old_one_is_dead() {
    let app = TestApp::spawn(&[]).await;
    let who = email("rotate");
    app.client().register(&who, PASSWORD).await;

    let mut c = app.client();
    let csrf = c.get("/login").await.csrf();
    let anonymous = c
        .cookie
        .clone()
        .expect("the login form starts a session for its CSRF token");
    let page = c
        .post(
            "/login",
            &[("email", &who), ("password", PASSWORD), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(page.location(), Some("/dashboard"));
    let signed_in = c.cookie.clone().expect("cookie");
    assert_ne!(anonymous, signed_in, "sign-in must issue a new id");
    assert_eq!(c.get("/dashboard").await.status, StatusCode::OK);

    let mut attacker = app.client();
    attacker.cookie = Some(anonymous);
    let page = attacker.get("/dashboard").await;
    assert_eq!(
        page.location(),
        Some("/login"),
        "the pre-login id must not be signed in (fixation)"
    );
    let page = attacker.get("/session/values/anything").await;
    assert_eq!(
        page.json()["value"],
        serde_json::Value::Null,
        "the old id holds nothing"
    );
}

#[tokio::test]
async fn cookie_flags_follow_the_configuration() {
    let app = TestApp::spawn(&[
        ("SESSION_COOKIE", "inv_sid"),
        ("SESSION_SECURE_COOKIE", "true"),
        ("SESSION_SAME_SITE", "strict"),
        ("SESSION_DOMAIN", "example.test"),
        ("SESSION_PATH", "/"),
        ("SESSION_ABSOLUTE_LIFETIME", "90"),
        ("SESSION_LIFETIME", "30"),
    ])
    .await;
    let mut c = app.client();
    c.cookie_name = "inv_sid".into();
    let page = c.get("/session").await;
    let set = page
        .set_cookie("inv_sid")
        .expect("a new session sets the configured cookie");
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Domain=example.test",
        "Max-Age=5400",
    ] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert_eq!(
        page.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    let plain = TestApp::spawn(&[]).await;
    let set = plain
        .client()
        .get("/session")
        .await
        .set_cookie("inventory_session")
        .expect("cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = TestApp::spawn(&[]).await;
    let who = email("csrf");
    let mut c = app.client();
    c.register(&who, PASSWORD).await;
    let csrf = c.get("/items").await.csrf();

    for form in [
        vec![("name", "Rope"), ("quantity", "2")],
        vec![("name", "Rope"), ("quantity", "2"), ("_csrf", "forged")],
    ] {
        let page = c.post("/items", &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{form:?}");
        assert!(!page.body.contains("forged"));
    }
    assert_eq!(c.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.post("/sessions/revoke-others", &[("_csrf", "")]).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(!c.get("/items").await.body.contains("Rope"), "nothing was added");
    assert_eq!(
        c.get("/dashboard").await.status,
        StatusCode::OK,
        "still signed in"
    );

    // Another session's token is no good either.
    let mut stranger = app.client();
    let their_csrf = stranger.get("/login").await.csrf();
    assert_ne!(their_csrf, csrf);
    let page = c
        .post(
            "/items",
            &[("name", "Rope"), ("quantity", "2"), ("_csrf", &their_csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // A login form posted without a token (login CSRF) is refused too.
    let page = app
        .client()
        .post("/login", &[("email", &who), ("password", PASSWORD)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn items_are_added_listed_and_deleted_per_user() {
    let app = TestApp::spawn(&[]).await;
    let mut alice = app.client();
    alice.register(&email("alice"), PASSWORD).await;
    let csrf = alice.get("/items").await.csrf();
    let page = alice
        .post(
            "/items",
            &[("name", "Brass <anchor>"), ("quantity", "3"), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(page.location(), Some("/items"));
    let page = alice.get("/items").await;
    assert!(
        page.body.contains("Brass &#60;anchor&#62;"),
        "names are escaped: {}",
        page.body
    );
    assert!(!page.body.contains("Brass <anchor>"));
    let page = alice
        .post("/items", &[("name", ""), ("quantity", "-1"), ("_csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);

    let id_marker = "action=\"/items/";
    let body = alice.get("/items").await.body;
    let start = body.find(id_marker).expect("a delete form") + id_marker.len();
    let id: String = body[start..].chars().take_while(char::is_ascii_digit).collect();

    let mut bob = app.client();
    bob.register(&email("bob"), PASSWORD).await;
    assert!(
        !bob.get("/items").await.body.contains("Brass"),
        "items are per user"
    );
    let bob_csrf = bob.get("/items").await.csrf();
    let page = bob
        .post(&format!("/items/{id}/delete"), &[("_csrf", &bob_csrf)])
        .await;
    assert_eq!(
        page.status,
        StatusCode::NOT_FOUND,
        "bob cannot delete alice's item"
    );

    let page = alice
        .post(&format!("/items/{id}/delete"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(page.location(), Some("/items"));
    assert!(!alice.get("/items").await.body.contains("Brass &#60;anchor&#62;"));
    assert!(alice.get("/dashboard").await.body.contains("Dashboard"));
}

#[tokio::test]
async fn the_sessions_page_lists_devices_and_signs_out_the_others() {
    let app = TestApp::spawn(&[]).await;
    let who = email("devices");
    let mut laptop = app.client();
    laptop.register(&who, PASSWORD).await;
    let mut phone = app.client();
    assert_eq!(phone.login(&who, PASSWORD).await.location(), Some("/dashboard"));

    let page = laptop.get("/sessions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("<tr").count() - 1,
        2,
        "two sessions listed: {}",
        page.body
    );
    assert!(page.body.contains("this device"));
    assert!(page.body.contains("127.0.0.1"));
    assert!(
        laptop
            .get("/dashboard")
            .await
            .body
            .contains("id=\"session-count\">2<"),
        "the dashboard counts them"
    );

    let csrf = page.csrf();
    let page = laptop.post("/sessions/revoke-others", &[("_csrf", &csrf)]).await;
    assert_eq!(page.location(), Some("/sessions"));
    assert!(
        laptop
            .get("/sessions")
            .await
            .body
            .contains("Signed out 1 other session.")
    );
    assert_eq!(
        phone.get("/dashboard").await.location(),
        Some("/login"),
        "the phone is signed out"
    );
    assert_eq!(
        laptop.get("/dashboard").await.status,
        StatusCode::OK,
        "this device stays signed in"
    );
}

#[tokio::test]
async fn the_session_endpoint_counts_hits_and_hides_the_id() {
    let app = TestApp::spawn(&[("INSTANCE_NAME", "inventory-a")]).await;
    let mut c = app.client();
    let first = c.get("/session").await.json();
    assert_eq!(first["message"], "Session created");
    assert_eq!(first["value"], "session_is_working");
    assert_eq!(first["hits"], 1);
    assert_eq!(first["served_by"], "inventory-a");
    let second = c.get("/session").await.json();
    assert_eq!(second["hits"], 2);
    assert_eq!(
        second["session"], first["session"],
        "same session, same fingerprint"
    );
    let cookie = c.cookie.clone().expect("cookie");
    let id = cookie
        .split('=')
        .nth(1)
        .expect("value")
        .split('.')
        .next()
        .expect("id");
    assert!(
        !second.to_string().contains(id),
        "the session id never appears in the response"
    );
}

#[tokio::test]
async fn readiness_turns_503_when_shutdown_begins_and_in_flight_requests_finish() {
    let app = TestApp::spawn(&[("SHUTDOWN_DELAY_SECONDS", "2")]).await;
    let c = app.client();
    assert_eq!(c.get_with("/readyz", &[]).await.status, StatusCode::OK);
    let url = app.url.clone();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = Client::new(&url);
    let ready = probe.get_with("/readyz", &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness drops at once"
    );
    assert_eq!(
        probe.get_with("/healthz", &[]).await.status,
        StatusCode::OK,
        "liveness is unaffected"
    );
    assert_eq!(
        probe.get_with("/session", &[]).await.status,
        StatusCode::OK,
        "still serving during the delay"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("exits within the grace period")
        .expect("task");
}

#[tokio::test]
async fn a_restart_keeps_users_signed_in_with_their_items() {
    let app = TestApp::spawn(&[]).await;
    let mut c = app.client();
    c.register(&email("restart"), PASSWORD).await;
    let csrf = c.get("/items").await.csrf();
    c.post(
        "/items",
        &[("name", "Mooring line"), ("quantity", "12"), ("_csrf", &csrf)],
    )
    .await;
    let data = app.data();
    app.stop().await;

    let again = TestApp::spawn_in(data, &[]).await;
    c.base = again.url.clone();
    let page = c.get("/items").await;
    assert_eq!(page.status, StatusCode::OK, "still signed in after the restart");
    assert!(page.body.contains("Mooring line"));
}

/// Rows in the SQL session store.
async fn stored_sessions(url: &str) -> i64 {
    use sqlx::Row as _;
    let pool = mooring_sql::connect(url).await.expect("pool");
    let row = sqlx::query("SELECT COUNT(*) AS n FROM mooring_sessions")
        .fetch_one(&pool)
        .await
        .expect("count");
    row.try_get::<i64, _>("n").expect("n")
}

#[tokio::test]
async fn anonymous_visitors_store_no_session_until_sign_in() {
    let db = mooring_conformance::provision::sqlite().await;
    let app = TestApp::spawn(&[("DATABASE_URL", &db.url)]).await;
    let stats = app.state.sessions.stats();
    let calls = || {
        [
            mooring::StoreOp::Load,
            mooring::StoreOp::Create,
            mooring::StoreOp::Apply,
        ]
        .map(|op| stats.op(op).duration.snapshot().count)
    };
    for _ in 0..200 {
        let mut c = app.client();
        for path in ["/login", "/register"] {
            let page = c.get(path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}");
            assert!(!page.csrf().is_empty(), "{path} has a token");
            assert_eq!(
                page.headers.get("cache-control").and_then(|v| v.to_str().ok()),
                Some("no-store"),
                "{path}"
            );
        }
    }
    // Failed forms: a wrong password, a bad token. The token works, the failure is shown, nothing is stored.
    let who = email("anon");
    let mut c = app.client();
    let page = c.login(&who, "wrong password").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Email or password is incorrect."));
    let page = c
        .post(
            "/login",
            &[("email", &who), ("password", "x"), ("_csrf", "forged")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        stored_sessions(&db.url).await,
        0,
        "no record for anonymous traffic"
    );
    assert_eq!(calls(), [0, 0, 0], "no store call either");

    // Registration is the first write that must persist: one record, and the pre-session's form worked.
    let mut c = app.client();
    c.register(&who, PASSWORD).await;
    assert_eq!(c.get("/dashboard").await.status, StatusCode::OK);
    assert_eq!(stored_sessions(&db.url).await, 1);
    // Signing out ends it, and the "signed out" message needs no record.
    let csrf = c.get("/dashboard").await.csrf();
    c.post("/logout", &[("_csrf", &csrf)]).await;
    assert!(c.get("/").await.body.contains("You have been signed out."));
    assert_eq!(stored_sessions(&db.url).await, 0);
}

/// A change an attacker makes to a stored record.
type Edit<'a> = Box<dyn Fn(&mut mooring::Record) + 'a>;

/// One session row as an attacker with write access to the SQL store sees it.
struct Row {
    key: String,
    record: mooring::Record,
}

async fn rows(pool: &sqlx::AnyPool) -> Vec<Row> {
    use sqlx::Row as _;
    sqlx::query(r#"SELECT "key" AS k, data FROM mooring_sessions"#)
        .fetch_all(pool)
        .await
        .expect("select")
        .into_iter()
        .map(|r| Row {
            key: r.try_get("k").expect("key"),
            record: mooring::Record::decode(&r.try_get::<Vec<u8>, _>("data").expect("data"))
                .expect("decodes"),
        })
        .collect()
}

/// Writes a record into a row, keeping the indexed columns in step as a careful attacker would.
async fn overwrite(pool: &sqlx::AnyPool, key: &str, record: &mooring::Record) {
    let done =
        sqlx::query("UPDATE mooring_sessions SET data = $1, user_id = $2, deadline = $3 WHERE \"key\" = $4")
            .bind(record.encode())
            .bind(record.user.clone())
            .bind(record.deadline as i64)
            .bind(key.to_owned())
            .execute(pool)
            .await
            .expect("update");
    assert_eq!(done.rows_affected(), 1);
}

/// With SESSION_ENCRYPT=true, whoever can write the session table cannot sign a session in as another user,
/// extend it, or borrow another session's values: the edited record is refused and the visitor signed out.
async fn edited_encrypted_records_are_refused(db: mooring_conformance::provision::TestDb) {
    let app = TestApp::spawn(&[("DATABASE_URL", &db.url), ("SESSION_ENCRYPT", "true")]).await;
    let pool = mooring_sql::connect(&db.url).await.expect("pool");
    let mut attacker = app.client();
    attacker.register(&email("attacker"), PASSWORD).await;
    let attacker_row = rows(&pool).await.pop().expect("one row");
    let mut victim = app.client();
    let victim_email = email("victim");
    victim.register(&victim_email, PASSWORD).await;
    let victim_row = rows(&pool)
        .await
        .into_iter()
        .find(|r| r.key != attacker_row.key)
        .expect("the victim's row");
    assert!(victim_row.record.attrs.contains_key("_mooring.auth"));
    let attacker_cookie = attacker.cookie.clone().expect("cookie");

    let edits: [(&str, Edit<'_>); 3] = [
        (
            "signed in as the victim",
            Box::new(|r| r.user.clone_from(&victim_row.record.user)),
        ),
        ("deadline extended", Box::new(|r| r.deadline += 30 * 86_400_000)),
        (
            "the victim's email value copied in",
            Box::new(|r| {
                r.attrs
                    .insert("email".into(), victim_row.record.attrs["email"].clone());
            }),
        ),
    ];
    for (what, edit) in edits {
        // The attacker's own session, fresh and signed in.
        let mut c = app.client();
        c.cookie = Some(attacker_cookie.clone());
        assert_eq!(
            c.get("/dashboard").await.status,
            StatusCode::OK,
            "{what}: before the edit"
        );
        let row = rows(&pool)
            .await
            .into_iter()
            .find(|r| r.key == attacker_row.key)
            .expect("row");
        let mut edited = row.record.clone();
        edit(&mut edited);
        overwrite(&pool, &row.key, &edited).await;
        let refused = app
            .state
            .sessions
            .stats()
            .records_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let page = c.get("/dashboard").await;
        assert_eq!(
            page.location(),
            Some("/login"),
            "{what}: the edited record must be refused"
        );
        assert!(!page.body.contains(&victim_email), "{what}");
        assert_eq!(
            app.state
                .sessions
                .stats()
                .records_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            refused + 1,
            "{what}"
        );
        // Put the genuine record back (the refusal deleted it) for the next edit.
        let mut c = app.client();
        c.cookie = Some(attacker_cookie.clone());
        sqlx::query(
            "INSERT INTO mooring_sessions (\"key\", user_id, version, created_at, deadline, expires_at, data) \
             VALUES ($1, $2, 1, $3, $4, $5, $6)",
        )
        .bind(row.key.clone())
        .bind(row.record.user.clone())
        .bind(row.record.created_at as i64)
        .bind(row.record.deadline as i64)
        .bind(row.record.deadline as i64)
        .bind(row.record.encode())
        .execute(&pool)
        .await
        .expect("restore");
    }
    assert_eq!(
        victim.get("/dashboard").await.status,
        StatusCode::OK,
        "the victim is untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_edited_encrypted_record_is_refused_by_sqlite() {
    edited_encrypted_records_are_refused(mooring_conformance::provision::sqlite().await).await;
}

#[tokio::test]
async fn an_edited_encrypted_record_is_refused_by_postgres() {
    edited_encrypted_records_are_refused(mooring_conformance::provision::postgres().await).await;
}
