//! The server sheds slow and greedy clients, over real sockets against the app on a free port: slow-header
//! sockets and idle keep-alive connections are closed after the header timeout while a real client is served;
//! the connection cap holds extra connections in the backlog and serves them once there is room; oversized
//! bodies get 413, oversized heads 431, slow requests 408, and a flood beyond the in-flight cap 503 with
//! `Retry-After`, never a 500, while the probes keep answering.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset), for at most `limit`; returns what was read and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on a fresh connection with `Connection: close`; the status line's code, or `None` if no answer
/// came within `limit`.
async fn raw_request(addr: &str, head: &str, limit: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    let (answer, _) = read_until_closed(&mut stream, limit).await;
    status_of(&answer)
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_sockets_are_closed_after_the_header_timeout_while_a_real_client_is_served() {
    let timeout = Duration::from_secs(2);
    let app = TestApp::spawn(&[("HTTP_HEADER_READ_TIMEOUT_MS", "2000")]).await;
    let target = addr(&app);
    const SOCKETS: usize = 20;
    let slow: Vec<_> = (0..SOCKETS)
        .map(|i| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&target).await.expect("connect");
                let started = Instant::now();
                let mut head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ")
                    .into_bytes()
                    .into_iter();
                // One byte a second, as a slowloris client does, until the server hangs up.
                loop {
                    let byte = head.next().unwrap_or(b'a');
                    if stream.write_all(&[byte]).await.is_err() {
                        return started.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                        // hyper says 408 before closing; keep reading until it does.
                        Ok(Ok(_)) | Err(_) => {}
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "slow socket {i} never closed"
                    );
                }
            })
        })
        .collect();
    // Meanwhile a real visitor is served promptly, again and again.
    let mut real = app.client();
    let started = Instant::now();
    while started.elapsed() < timeout {
        let t = Instant::now();
        assert_eq!(real.get("/login").await.status, StatusCode::OK);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a real request took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, task) in slow.into_iter().enumerate() {
        let open_for = task.await.expect("slow socket task");
        assert!(
            open_for >= timeout - Duration::from_millis(100)
                && open_for < timeout + Duration::from_millis(2500),
            "slow socket {i} was closed after {open_for:?}, not about {timeout:?}"
        );
    }
    assert!(
        app.state.http_stats.header_timeouts.load(Ordering::Relaxed) >= SOCKETS as u64,
        "each timeout is counted"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn(&[("HTTP_HEADER_READ_TIMEOUT_MS", "1000")]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(closed, "the idle keep-alive connection stays open: {answer}");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(3000),
        "closed after {idle:?} idle, not about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_extra_connections_until_one_ends() {
    let app = TestApp::spawn(&[
        ("HTTP_MAX_CONNECTIONS", "4"),
        ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
    ])
    .await;
    let target = addr(&app);
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // Within the cap, requests are served while three idle connections are open.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&target).await.expect("connect"));
    }
    for _ in 0..3 {
        assert_eq!(raw_request(&target, get, Duration::from_secs(5)).await, Some(200));
    }
    // A fourth idle connection fills the cap: the next one connects (the kernel's backlog) but is not served.
    idle.push(TcpStream::connect(&target).await.expect("connect"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = tokio::spawn({
        let target = target.clone();
        async move {
            let started = Instant::now();
            let status = raw_request(&target, get, Duration::from_secs(10)).await;
            (status, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!held.is_finished(), "a connection beyond the cap was served");
    // One connection ends: the held one is served at once.
    drop(idle.pop());
    let (status, waited) = held.await.expect("held request");
    assert_eq!(
        status,
        Some(200),
        "the held connection is served once there is room"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(
        app.state
            .http_stats
            .connection_cap_reached
            .load(Ordering::Relaxed)
            >= 1
    );
    drop(idle);
}

#[tokio::test]
async fn oversized_bodies_are_413_and_oversized_heads_431() {
    let app = TestApp::spawn(&[("HTTP_MAX_BODY_BYTES", "2048"), ("HTTP_MAX_HEADER_BYTES", "4096")]).await;
    let mut c = app.client();
    let csrf = c.get("/login").await.csrf();
    let big = "x".repeat(4096);
    let page = c
        .post(
            "/login",
            &[("email", "a@example.test"), ("password", &big), ("_csrf", &csrf)],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "declared length: {}",
        page.body
    );
    let page = c.put("/session/values/big", &big).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a declared length the limit holds as the body is read.
    let chunk = "y".repeat(1000);
    let mut chunked = String::from(
        "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    assert_eq!(
        raw_request(&addr(&app), &chunked, Duration::from_secs(5)).await,
        Some(413),
        "chunked body over the limit"
    );
    // Heads: one under the limit is served, one over it is 431.
    let page = app
        .client()
        .get_with("/login", &[("x-pad", &"p".repeat(3000))])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let page = app
        .client()
        .get_with("/login", &[("x-pad", &"p".repeat(5000))])
        .await;
    assert_eq!(page.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // The app is unharmed.
    assert_eq!(app.client().get("/login").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_that_dribbles_its_body_gets_408() {
    let app = TestApp::spawn(&[("HTTP_REQUEST_TIMEOUT_MS", "1000")]).await;
    let started = Instant::now();
    let head = "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=";
    assert_eq!(
        raw_request(&addr(&app), head, Duration::from_secs(5)).await,
        Some(408)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_in_flight_cap_gets_503_with_retry_after_and_probes_still_answer() {
    let app = TestApp::spawn(&[("HTTP_MAX_IN_FLIGHT", "2")]).await;
    let target = addr(&app);
    // Two requests whose bodies never finish hold both slots (the handler is reading them).
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&target).await.expect("connect");
        stream
            .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nemail=")
            .await
            .expect("send");
        holders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flood: Vec<_> = (0..30)
        .map(|_| {
            let c = app.client();
            tokio::spawn(async move { c.get_with("/login", &[]).await })
        })
        .collect();
    for request in flood {
        let page = request.await.expect("flood request");
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
        assert_eq!(
            page.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(page.body.contains("busy"), "{}", page.body);
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            app.client().get_with(probe, &[]).await.status,
            StatusCode::OK,
            "{probe} is not shed"
        );
    }
    assert!(app.state.http_stats.shed.load(Ordering::Relaxed) >= 30);
    // The slow requests finish normally, and the slots are free again.
    for mut stream in holders {
        stream.write_all(&[b'x'; 34]).await.expect("rest of the body");
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        let status = status_of(&answer).expect("an answer");
        assert!((400..500).contains(&status), "the held request: {answer}");
    }
    assert_eq!(app.client().get("/login").await.status, StatusCode::OK);
}
