//! Oversized and malformed requests, written byte for byte on raw sockets (an HTTP client library would
//! refuse to send most of them): huge bodies, huge and many headers, bad methods, a bad `Content-Type` on the
//! value endpoint, non-ASCII bytes in the path and in `Cookie`, contradictory framing.
//!
//! Each request goes on a fresh connection; the answer's status line is all that is read. A server that
//! closes the connection without answering (status 0) refused the request, which is fine; one that answers
//! 5xx, or keeps the socket open without answering, is not.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{REQUEST_TIMEOUT, Tally};

/// A body well past any sane limit for a form or a session value (the app's default limit is far lower;
/// axum's own default is 2 MiB).
const HUGE_BODY: usize = 4 << 20;

/// What each kind of malformed request got.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MalformedReport {
    /// Kind → answers.
    pub cases: BTreeMap<String, Tally>,
}

impl MalformedReport {
    /// Every answer of every kind.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for tally in self.cases.values() {
            total.merge(tally);
        }
        total
    }

    /// Adds another report.
    pub fn merge(&mut self, other: &MalformedReport) {
        for (case, tally) in &other.cases {
            self.cases.entry(case.clone()).or_default().merge(tally);
        }
    }
}

/// The requests: (kind, bytes). `host` goes in the `Host` header.
fn requests(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    let head = |line: &str, extra: &str| format!("{line}\r\nHost: {host}\r\n{extra}\r\n").into_bytes();
    let mut huge_post = head(
        "POST /login HTTP/1.1",
        &format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {HUGE_BODY}\r\n"),
    );
    huge_post.extend(std::iter::repeat_n(b'a', HUGE_BODY));
    let mut huge_put = head(
        "PUT /session/values/hostile-huge HTTP/1.1",
        &format!("Content-Type: application/json\r\nContent-Length: {HUGE_BODY}\r\n"),
    );
    huge_put.push(b'"');
    huge_put.extend(std::iter::repeat_n(b'a', HUGE_BODY - 2));
    huge_put.push(b'"');
    let many_headers: String = (0..300).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let mut bad_path = b"GET /\xff\xfe/login HTTP/1.1\r\n".to_vec();
    bad_path.extend_from_slice(format!("Host: {host}\r\n\r\n").as_bytes());
    let mut bad_cookie = b"GET /login HTTP/1.1\r\n".to_vec();
    bad_cookie.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    bad_cookie.extend_from_slice(b"Cookie: inventory_session=\xff\xfe\x80; theme=\xc3\x28\r\n\r\n");
    vec![
        ("huge form body", huge_post),
        ("huge session value", huge_put),
        (
            "64 KiB header",
            head(
                "GET /login HTTP/1.1",
                &format!("X-Big: {}\r\n", "b".repeat(64 << 10)),
            ),
        ),
        ("300 headers", head("GET /login HTTP/1.1", &many_headers)),
        (
            "64 KiB URL",
            head(&format!("GET /login?q={} HTTP/1.1", "q".repeat(64 << 10)), ""),
        ),
        ("unknown method", head("BREW /login HTTP/1.1", "")),
        ("invalid method", head("G\u{1}T /login HTTP/1.1", "")),
        ("bad HTTP version", head("GET /login HTTP/9.9", "")),
        ("non-ASCII path", bad_path),
        ("non-ASCII cookie", bad_cookie),
        (
            "PUT without JSON",
            head(
                "PUT /session/values/hostile-type HTTP/1.1",
                "Content-Type: text/plain\r\nContent-Length: 5\r\n",
            )
            .into_iter()
            .chain(*b"hello")
            .collect(),
        ),
        (
            "bad Content-Length",
            head("POST /login HTTP/1.1", "Content-Length: abc\r\n"),
        ),
        (
            "Content-Length and chunked",
            head(
                "POST /login HTTP/1.1",
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            )
            .into_iter()
            .chain(*b"0\r\n\r\n")
            .collect(),
        ),
    ]
}

/// Sends every malformed request once to `target`, from `source`, each on its own connection.
pub async fn malformed_requests(target: SocketAddr, source: Ipv4Addr) -> MalformedReport {
    let mut report = MalformedReport::default();
    for (case, bytes) in requests(&target.to_string()) {
        let status = exchange(target, source, &bytes).await;
        let tally = report.cases.entry(case.to_owned()).or_default();
        match status {
            Some(status) => tally.status(status),
            None => tally.timeouts += 1,
        }
    }
    report
}

/// Writes `bytes` and reads the status of the answer: `Some(0)` when the server closed without one (or
/// refused the connection), `None` when nothing came within [`REQUEST_TIMEOUT`].
async fn exchange(target: SocketAddr, source: Ipv4Addr, bytes: &[u8]) -> Option<u16> {
    let connect = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
        socket.connect(target).await
    };
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(3), connect).await else {
        return Some(0);
    };
    let (mut reader, mut writer) = stream.into_split();
    // Write and read at once: a server may answer 413 or 431 and close before taking the whole request.
    let bytes = bytes.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let reading = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return parse_status(&head).unwrap_or(0),
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if let Some(status) = parse_status(&head) {
                        return status;
                    }
                }
            }
        }
    };
    let status = tokio::time::timeout(REQUEST_TIMEOUT, reading).await.ok();
    writing.abort();
    status
}

/// The status code of an answer that starts with `HTTP/1.x NNN`, once its first line is whole.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read() {
        assert_eq!(parse_status(b"HTTP/1.1 413 Payload Too Large\r\n"), Some(413));
        assert_eq!(parse_status(b"HTTP/1.0 400 Bad request\r\nx"), Some(400));
        assert_eq!(parse_status(b"HTTP/1.1 200"), None, "the line is not whole yet");
        assert_eq!(parse_status(b"garbage\r\n"), None);
    }

    #[test]
    fn every_request_names_the_host_and_ends_its_head() {
        for (case, bytes) in requests("127.0.0.1:1") {
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("Host: 127.0.0.1:1\r\n"), "{case}");
            assert!(text.contains("\r\n\r\n"), "{case}");
        }
    }
}
