//! Where backups are kept: a local directory or file, or an S3 bucket (`s3://bucket/prefix/`), through the
//! `object_store` crate for both, so one code path lists, writes, reads and prunes them.
//!
//! - **Names.** A backup in a collection (a directory, a bucket prefix) is named
//!   `<kind>-<unix ms, 13 digits>.moorbak` ([`backup_name`]), so names sort by age and [`Repo::newest`] is
//!   the last one; other objects under the prefix are ignored, never deleted.
//! - **Atomic.** An object appears whole or not at all: S3 publishes a `PUT` (or a completed multipart
//!   upload) at once, and `object_store`'s local store writes a staging file, fsyncs it and renames it into
//!   place. No partial object is ever listed as a backup.
//! - **Private.** Local files are written mode 0600 (the process's umask is set to 077 before writing).
//! - **S3.** Credentials and the rest of the standard `AWS_*` variables as `object_store` reads them (static
//!   keys, `AWS_SESSION_TOKEN`, web identity / IRSA with `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`,
//!   container and instance credentials), plus `AWS_ACCESS_KEY_ID_FILE` / `AWS_SECRET_ACCESS_KEY_FILE`;
//!   endpoint, region, path style, SSE-S3 / SSE-KMS and storage class from [`S3Settings`]. HTTPS through
//!   [`TlsConnector`] (rustls on ring, system and Mozilla roots); plain HTTP only to an `http://` endpoint.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::BodyExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use crate::archive::Kind;

/// The file name suffix of backups.
pub const SUFFIX: &str = ".moorbak";

/// The name of a backup of `kind` taken at `created_at_ms` in a collection.
pub fn backup_name(kind: Kind, created_at_ms: u64) -> String {
    format!("{}-{created_at_ms:013}{SUFFIX}", kind.as_str())
}

/// The time in a backup name of `kind`, if the name is one.
pub fn parse_name(kind: Kind, name: &str) -> Option<u64> {
    let stamp = name
        .strip_prefix(kind.as_str())?
        .strip_prefix('-')?
        .strip_suffix(SUFFIX)?;
    (stamp.len() == 13 && stamp.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stamp.parse().ok())
        .flatten()
}

/// S3 settings beyond what the URL and the standard AWS variables say (see [`Repo::open`]).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// A custom endpoint (an S3-compatible server): `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The region: `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub path_style: bool,
    /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<String>,
    /// The KMS key id with `aws:kms`.
    pub kms_key_id: Option<String>,
    /// The storage class of new objects (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
}

impl S3Settings {
    /// The settings of this environment: `AWS_ENDPOINT_URL`, `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `BACKUP_S3_PATH_STYLE` (`true`/`false`), `BACKUP_S3_SSE` (`AES256` or `aws:kms`),
    /// `BACKUP_S3_KMS_KEY_ID`, `BACKUP_S3_STORAGE_CLASS`. Empty values count as unset.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let path_style = match get("BACKUP_S3_PATH_STYLE") {
            None => false,
            Some(v) => {
                parse_bool(&v).with_context(|| format!("BACKUP_S3_PATH_STYLE is true or false, not '{v}'"))?
            }
        };
        Ok(Self {
            endpoint: get("AWS_ENDPOINT_URL"),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            path_style,
            sse: get("BACKUP_S3_SSE"),
            kms_key_id: get("BACKUP_S3_KMS_KEY_ID"),
            storage_class: get("BACKUP_S3_STORAGE_CLASS"),
        })
    }
}

/// `true`/`false` as the chart and the app write them (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The HTTP client object_store talks to S3 (and STS, and the instance metadata service) through:
/// hyper-util's pooled client over hyper-rustls with the ring provider, trusting the system's CA
/// certificates and Mozilla's (webpki-roots) so a minimal image without a CA bundle still reaches AWS.
/// Hand-written (40 lines) because object_store's own client is reqwest with aws-lc-rs; see the workspace
/// Cargo.toml. Plain `http://` is refused unless the store allows it (an `http://` endpoint).
#[derive(Debug)]
pub struct TlsConnector;

impl HttpConnector for TlsConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|v| v == "true");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(system_roots = added, "TLS roots for S3");
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpClient::new(TlsClient { client, allow_http }))
    }
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    HttpRequestBody,
>;

#[derive(Debug)]
struct TlsClient {
    client: HyperClient,
    allow_http: bool,
}

/// How long one request may take until the answer's headers arrive, the upload of its body included (a
/// backup is sent in one `PUT`: 5 minutes is 1 GiB at 3.5 MiB/s). object_store retries what times out.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

#[async_trait::async_trait]
impl HttpService for TlsClient {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if req.uri().scheme_str() != Some("https") && !self.allow_http {
            return Err(HttpError::new(
                HttpErrorKind::Request,
                std::io::Error::other(format!(
                    "{}: plain HTTP is only used with an http:// endpoint",
                    req.uri()
                )),
            ));
        }
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(req))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Timeout, e))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = answer.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// One backup found in a collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name (the last path segment).
    pub name: String,
    /// When it was taken, from its name.
    pub created_at_ms: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// A place backups are written to and read from.
#[derive(Clone, Debug)]
pub struct Repo {
    store: Arc<dyn ObjectStore>,
    /// The collection's prefix, or the one object's path.
    path: Path,
    /// A single object (a file path, an object key not ending in `/`) rather than a collection.
    single: bool,
    /// How messages name it.
    display: String,
    /// What every new object is written with (its storage class).
    attributes: Attributes,
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Makes every file this process creates from now on private to its user (mode 0600 files).
pub fn private_files() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

impl Repo {
    /// Opens `spec`: `s3://bucket/prefix/` (a collection; a key not ending in `/` names one object), or a
    /// local path: an existing directory, or a path ending in `/`, is a collection (created if missing);
    /// anything else one file.
    pub fn open(spec: &str, s3: &S3Settings) -> anyhow::Result<Self> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            return Self::open_s3(rest, s3).with_context(|| format!("cannot use {spec}"));
        }
        if spec.contains("://") {
            bail!("{spec}: only s3:// URLs and local paths are backup targets");
        }
        private_files();
        let path = FsPath::new(spec);
        let collection = path.is_dir() || spec.ends_with('/');
        let (dir, object) = if collection {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create {spec}"))?;
            (path.to_owned(), Path::default())
        } else {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{spec} names no file"))?;
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => std::path::PathBuf::from("."),
            };
            (parent, Path::from(name))
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("{} does not exist", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .with_context(|| format!("cannot use {}", dir.display()))?;
        Ok(Self {
            store: Arc::new(store),
            path: object,
            single: !collection,
            display: spec.to_owned(),
            attributes: Attributes::new(),
        })
    }

    /// Opens `bucket/prefix/` (a collection) or `bucket/key` (one object) in S3. Credentials, and anything
    /// else `object_store` reads from `AWS_*` variables (session token, web identity: `AWS_ROLE_ARN` with
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, container and instance credentials), come from the environment;
    /// `AWS_ACCESS_KEY_ID_FILE` / `AWS_SECRET_ACCESS_KEY_FILE` (secret files) are read here; `s3` overrides the
    /// endpoint, region, addressing style and encryption.
    fn open_s3(rest: &str, s3: &S3Settings) -> anyhow::Result<Self> {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("no bucket: write s3://bucket/prefix/");
        }
        let single = !key.is_empty() && !key.ends_with('/');
        let path = Path::parse(key.trim_end_matches('/'))
            .with_context(|| format!("'{key}' is not a usable object key"))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_http_connector(TlsConnector);
        for (name, set) in [
            ("AWS_ACCESS_KEY_ID", AmazonS3ConfigKey::AccessKeyId),
            ("AWS_SECRET_ACCESS_KEY", AmazonS3ConfigKey::SecretAccessKey),
        ] {
            // Set again from the variable too (harmless): its `*_FILE` form is what object_store cannot read.
            if let Some(value) = crate::env::secret(crate::env::process, name)? {
                builder = builder.with_config(set, value);
            }
        }
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // object_store refuses plain HTTP unless told; an http:// endpoint says it.
        let endpoint = s3
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok())
            .unwrap_or_default();
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        if s3.path_style {
            builder = builder.with_virtual_hosted_style_request(false);
        }
        match (s3.sse.as_deref(), s3.kms_key_id.as_deref()) {
            (None, None) => {}
            (None | Some("aws:kms"), Some(key_id)) => builder = builder.with_sse_kms_encryption(key_id),
            (Some(sse @ ("aws:kms" | "AES256")), None) => {
                let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                    .parse()
                    .context("object_store knows no server-side encryption setting")?;
                builder = builder.with_config(key, sse)
            }
            (Some("AES256"), Some(_)) => bail!("a KMS key id needs --s3-sse aws:kms, not AES256"),
            (Some(other), _) => bail!("--s3-sse (BACKUP_S3_SSE) is AES256 or aws:kms, not '{other}'"),
        }
        let store = builder.build().context("cannot configure S3")?;
        let mut attributes = Attributes::new();
        if let Some(class) = &s3.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        Ok(Self {
            store: Arc::new(store),
            path,
            single,
            display: format!("s3://{rest}"),
            attributes,
        })
    }

    /// Whether this names one object rather than a collection.
    pub fn is_single(&self) -> bool {
        self.single
    }

    fn child(&self, name: &str) -> Path {
        if self.single {
            self.path.clone()
        } else {
            self.path.clone().join(name)
        }
    }

    /// Writes a backup of `kind` taken at `created_at_ms`: the one object, or a new name in the collection.
    /// Returns where it went.
    pub async fn put(&self, kind: Kind, created_at_ms: u64, bytes: Vec<u8>) -> anyhow::Result<String> {
        let path = self.child(&backup_name(kind, created_at_ms));
        let options = PutOptions {
            attributes: self.attributes.clone(),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
            .with_context(|| format!("cannot write {path} in {self}"))?;
        Ok(self.location(&path))
    }

    fn location(&self, path: &Path) -> String {
        if self.single {
            self.display.clone()
        } else {
            format!(
                "{}{}{}",
                self.display,
                if self.display.ends_with('/') { "" } else { "/" },
                path.filename().unwrap_or_default()
            )
        }
    }

    /// The backups of `kind` in the collection, oldest first (an empty list for a single object).
    pub async fn list(&self, kind: Kind) -> anyhow::Result<Vec<Listed>> {
        if self.single {
            return Ok(Vec::new());
        }
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .with_context(|| format!("cannot list {self}"))?;
        let mut found: Vec<Listed> = listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                let created_at_ms = parse_name(kind, &name)?;
                Some(Listed {
                    name,
                    created_at_ms,
                    size: meta.size,
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The newest backup of `kind` in the collection.
    pub async fn newest(&self, kind: Kind) -> anyhow::Result<Option<Listed>> {
        Ok(self.list(kind).await?.pop())
    }

    /// Reads a backup: the one object, or the newest of `kind` in the collection. Returns where it was read
    /// and its bytes.
    pub async fn fetch(&self, kind: Kind) -> anyhow::Result<(String, Vec<u8>)> {
        let path = if self.single {
            self.path.clone()
        } else {
            let newest = self
                .newest(kind)
                .await?
                .with_context(|| format!("no {} backup in {self}", kind.as_str()))?;
            self.child(&newest.name)
        };
        let bytes = self
            .store
            .get(&path)
            .await
            .with_context(|| format!("cannot read {path} from {self}"))?
            .bytes()
            .await
            .with_context(|| format!("cannot read {path} from {self}"))?;
        Ok((self.location(&path), bytes.to_vec()))
    }

    /// Deletes all but the newest `keep` backups of `kind` in the collection; returns the deleted names.
    pub async fn prune(&self, kind: Kind, keep: usize) -> anyhow::Result<Vec<String>> {
        let listed = self.list(kind).await?;
        let doomed = listed.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for old in listed.into_iter().take(doomed) {
            let path = self.child(&old.name);
            self.store
                .delete(&path)
                .await
                .with_context(|| format!("cannot delete {path} from {self}"))?;
            deleted.push(self.location(&path));
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_age_and_only_backups_parse() {
        assert_eq!(
            backup_name(Kind::Sessions, 1_795_000_000_000),
            "sessions-1795000000000.moorbak"
        );
        assert_eq!(
            parse_name(Kind::Sessions, "sessions-1795000000000.moorbak"),
            Some(1_795_000_000_000)
        );
        for other in [
            "database-1795000000000.moorbak",
            "sessions-notes.moorbak",
            "sessions-1795000000000.moorbak#1",
            "sessions-179500000000.moorbak",
        ] {
            assert_eq!(parse_name(Kind::Sessions, other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_directory_keeps_the_newest_backups_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = format!("{}/", dir.path().display());
        let repo = Repo::open(&spec, &S3Settings::default()).expect("open");
        for t in [1_795_000_000_000u64, 1_795_000_000_001, 1_795_086_400_000] {
            repo.put(Kind::Sessions, t, format!("backup {t}").into_bytes())
                .await
                .expect("put");
        }
        repo.put(Kind::Database, 1_795_000_000_005, b"db".to_vec())
            .await
            .expect("put");
        std::fs::write(dir.path().join("other.moorbak"), b"x").expect("write");
        let (at, bytes) = repo.fetch(Kind::Sessions).await.expect("fetch");
        assert!(at.ends_with("sessions-1795086400000.moorbak"), "{at}");
        assert_eq!(bytes, b"backup 1795086400000");
        let deleted = repo.prune(Kind::Sessions, 2).await.expect("prune");
        assert_eq!(deleted.len(), 1);
        assert!(deleted[0].ends_with("sessions-1795000000000.moorbak"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "database-1795000000005.moorbak",
                "other.moorbak",
                "sessions-1795000000001.moorbak",
                "sessions-1795086400000.moorbak"
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sessions-1795086400000.moorbak"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "backups are private");
    }

    #[test]
    fn s3_settings_come_from_the_environment_and_bad_ones_are_named() {
        let env = crate::env::fixed;
        let all = S3Settings::from_env(env(&[
            ("AWS_ENDPOINT_URL", "http://minio:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("BACKUP_S3_PATH_STYLE", "true"),
            ("BACKUP_S3_SSE", "aws:kms"),
            ("BACKUP_S3_KMS_KEY_ID", "alias/backups"),
            ("BACKUP_S3_STORAGE_CLASS", "STANDARD_IA"),
        ]))
        .expect("settings");
        assert_eq!(all.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(all.region.as_deref(), Some("eu-west-1"));
        assert!(all.path_style);
        assert_eq!(
            (
                all.sse.as_deref(),
                all.kms_key_id.as_deref(),
                all.storage_class.as_deref()
            ),
            (Some("aws:kms"), Some("alias/backups"), Some("STANDARD_IA"))
        );
        let none = S3Settings::from_env(env(&[("AWS_REGION", "")])).expect("empty");
        assert!(none.region.is_none() && !none.path_style);
        let err = S3Settings::from_env(env(&[("BACKUP_S3_PATH_STYLE", "maybe")])).expect_err("bad");
        assert!(format!("{err:#}").contains("BACKUP_S3_PATH_STYLE"), "{err:#}");
        for (spec, settings, says) in [
            ("s3:///prefix/", S3Settings::default(), "no bucket"),
            (
                "s3://b/p/",
                S3Settings {
                    sse: Some("rot13".into()),
                    ..S3Settings::default()
                },
                "AES256 or aws:kms",
            ),
            (
                "s3://b/p/",
                S3Settings {
                    sse: Some("AES256".into()),
                    kms_key_id: Some("k".into()),
                    ..S3Settings::default()
                },
                "needs --s3-sse aws:kms",
            ),
            ("ftp://host/x", S3Settings::default(), "only s3://"),
        ] {
            let err = Repo::open(spec, &settings).expect_err(spec);
            assert!(format!("{err:#}").contains(says), "{spec}: {err:#}");
        }
        let single = Repo::open("s3://b/backups/one.moorbak", &S3Settings::default()).expect("open");
        assert!(single.is_single());
        let collection = Repo::open("s3://b/backups/", &S3Settings::default()).expect("open");
        assert!(!collection.is_single());
    }

    #[tokio::test]
    async fn a_file_path_is_one_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = dir.path().join("s.moorbak").display().to_string();
        let repo = Repo::open(&spec, &S3Settings::default()).expect("open");
        assert!(repo.is_single());
        assert_eq!(
            repo.put(Kind::Sessions, 1, b"one".to_vec()).await.expect("put"),
            spec
        );
        assert_eq!(repo.fetch(Kind::Sessions).await.expect("fetch").1, b"one");
        assert!(repo.list(Kind::Sessions).await.expect("list").is_empty());
    }
}
