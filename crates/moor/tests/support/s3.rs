//! A real S3-compatible server for tests: `s3s-fs` (objects kept as files in a temporary directory) on a free
//! loopback port, with one bucket and its own credentials, stopped when dropped.
//!
//! Use it from a test file with `#[path = "support/s3.rs"] mod s3;`, then [`S3Server::start`], and give the
//! `moor` command [`S3Server::env`] (or call [`S3Server::apply`] on it). Install the server with
//! `cargo install s3s-fs --version 0.14.1 --locked --features binary` (scripts/services.sh does).
//!
//! What s3s-fs 0.14.1 does with the headers moor sends: `x-amz-storage-class` is accepted for `STANDARD` and
//! `REDUCED_REDUNDANCY` (anything else is refused with `InvalidStorageClass`) and not stored;
//! `x-amz-server-side-encryption` and its KMS key id are accepted and ignored (nothing is encrypted at rest).
#![allow(dead_code)] // each test binary that includes this file uses a part of it

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running s3s-fs with one bucket.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket created for the test.
    pub bucket: String,
    /// The access key the server accepts.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// Where the server keeps objects: `<dir>/<bucket>/<key>`.
    pub dir: tempfile::TempDir,
    child: Child,
}

/// The s3s-fs binary: on PATH, or where `cargo install` puts it.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin").join("s3s-fs"))
        .filter(|p| p.is_file());
    on_path.or(cargo_home).unwrap_or_else(|| {
        panic!(
            "s3s-fs is not installed: run scripts/services.sh as root, or \
             cargo install s3s-fs --version 0.14.1 --locked --features binary"
        )
    })
}

impl S3Server {
    /// Starts a server on a free port with the bucket `backups`, and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = "backups".to_owned();
        std::fs::create_dir(dir.path().join(&bucket)).expect("create the bucket directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let access_key = "moortestaccess".to_owned();
        let secret_key = format!("moor-test-secret-{port}");
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let mut server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            access_key,
            secret_key,
            dir,
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited at start: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "s3s-fs did not listen on {addr} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `s3://<bucket>/<prefix>` (give a prefix ending in `/` for a collection).
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The variables that point `moor` (or any AWS client) at this server: credentials, endpoint, region and
    /// path-style requests.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("BACKUP_S3_PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Sets [`S3Server::env`] on `cmd`, after removing other AWS settings it may have inherited.
    pub fn apply(&self, cmd: &mut Command) {
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") || name.starts_with("BACKUP_S3_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env());
    }

    /// The file that holds the object `key`.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(&self.bucket).join(key)
    }

    /// The keys of the objects under `prefix` (a folder path ending in `/`, or `""`), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let base = self.dir.path().join(&self.bucket);
        let mut out = Vec::new();
        let mut todo = vec![base.join(prefix)];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    todo.push(path);
                } else if let Ok(rel) = path.strip_prefix(&base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
