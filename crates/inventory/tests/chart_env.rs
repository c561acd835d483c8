//! The Helm chart and the app cannot drift apart: for every value profile, the chart is rendered with the real
//! `helm`, the inventory container's environment is assembled the way the kubelet would (values, the rendered
//! ConfigMap and Secret, the downward API), and the app's own parser, [`Config::from_lookup`], must accept it.
//! Beyond parsing, the test checks what a parser cannot see: every variable the chart sets is one the app reads
//! (a misspelt name would otherwise be ignored silently), every Secret key the pod needs exists, the ports and
//! Services line up, the Redis and database hosts the app is given are objects the chart renders, and the grace
//! period covers the preStop sleep plus the app's own shutdown delay and drain.
//!
//! Needs helm and PyYAML from `scripts/validate-deploy.sh` (which `scripts/test.sh` runs first): without them the
//! test fails and says so, it never skips.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use inventory::config::{Config, SessionDriver, VARIABLES};
use mooring_redis::Topology;
use serde_json::Value;

/// The namespace the chart is rendered into.
const NAMESPACE: &str = "shop";
/// The release name.
const RELEASE: &str = "inventory";
/// What the downward API gives INSTANCE_NAME (the pod name).
const POD_NAME: &str = "inventory-5d8f7c9b6-x2x7k";

fn tools_dir() -> PathBuf {
    match std::env::var_os("MOORING_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/mooring-tools"),
    }
}

fn tool(relative: &str) -> PathBuf {
    let path = tools_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/validate-deploy.sh once (it installs helm and PyYAML into {}; set \
         MOORING_TOOLS_DIR to use another directory)",
        path.display(),
        tools_dir().display()
    );
    path
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/inventory")
}

/// Runs `cmd` with `input` on stdin; its stdout, or a panic with its stderr.
fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every object `helm template` renders for `profile` ("default" or a ci/*-values.yaml name).
fn render(profile: &str) -> Vec<Value> {
    render_with(profile, None)
}

/// Like [`render`], with the values of `extra` (YAML) on top of the profile's.
fn render_with(profile: &str, extra: Option<&str>) -> Vec<Value> {
    let mut helm = Command::new(tool("bin/helm"));
    helm.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE]);
    if profile != "default" {
        helm.arg("-f")
            .arg(chart().join(format!("ci/{profile}-values.yaml")));
    }
    let extra_file = extra.map(|yaml| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), yaml).expect("write values");
        file
    });
    if let Some(file) = &extra_file {
        helm.arg("-f").arg(file.path());
    }
    let yaml = run(&mut helm, b"");
    let json = run(
        Command::new(tool("venv/bin/python")).args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ]),
        &yaml,
    );
    serde_json::from_slice(&json).expect("JSON from the YAML converter")
}

/// The rendered objects, with lookups by kind and name.
struct Rendered(Vec<Value>);

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.0.iter().filter(move |o| o["kind"] == kind)
    }

    /// The value of `key` in the rendered Secret `name`: Some(Some(v)) found, Some(None) the Secret is rendered
    /// but lacks the key, None the Secret is not rendered (secret.existingSecret).
    fn secret_value(&self, name: &str, key: &str) -> Option<Option<String>> {
        use base64::Engine as _;
        let secret = self.find("Secret", name)?;
        if let Some(v) = secret["stringData"][key].as_str() {
            return Some(Some(v.to_owned()));
        }
        Some(secret["data"][key].as_str().map(|b64| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("Secret data is base64");
            String::from_utf8(bytes).expect("UTF-8 secret")
        }))
    }
}

/// Stand-ins for the keys of a Secret that is created outside the chart (secret.existingSecret), in the form
/// docs/kubernetes.md tells users to give them.
fn external_secret_value(secret: &str, key: &str) -> String {
    match key {
        "APP_KEY" => "base64:dGVzdCBrZXkgdGhhdCBpcyBleGFjdGx5IDMyIGJ5dGVz".into(),
        "DATABASE_URL" => "postgres://inventory:secret@db.example.internal:5432/inventory".into(),
        "REDIS_PASSWORD" | "REDIS_SENTINEL_PASSWORD" => "an external password".into(),
        other => panic!(
            "the Deployment reads key {other} of Secret {secret}, which the chart does not render: document the \
             key in docs/kubernetes.md and give it a stand-in here"
        ),
    }
}

/// The inventory container of the Deployment, and the environment the kubelet would give it.
struct AppPod<'a> {
    deployment: &'a Value,
    container: &'a Value,
    env: BTreeMap<String, String>,
}

fn app_pod(objects: &Rendered) -> AppPod<'_> {
    let deployment = objects
        .all("Deployment")
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "app")
        .expect("an app Deployment");
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "inventory")
        .expect("an inventory container");
    AppPod {
        deployment,
        container,
        env: container_env(objects, container),
    }
}

/// The environment the kubelet would give `container`: its ConfigMaps, Secrets and downward API values.
fn container_env(objects: &Rendered, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("envFrom uses configMapRef only");
        let map = objects
            .find("ConfigMap", name)
            .unwrap_or_else(|| panic!("envFrom names ConfigMap {name}, which is not rendered"));
        for (k, v) in map["data"].as_object().expect("ConfigMap data") {
            env.insert(k.clone(), v.as_str().expect("string value").to_owned());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = var.get("value") {
            Some(v.as_str().expect("env value is a string").to_owned())
        } else if let Some(r) = var["valueFrom"].get("secretKeyRef") {
            let (secret, key) = (r["name"].as_str().expect("name"), r["key"].as_str().expect("key"));
            let optional = r["optional"].as_bool().unwrap_or(false);
            match objects.secret_value(secret, key) {
                Some(Some(v)) => Some(v),
                Some(None) if optional => None,
                Some(None) => {
                    panic!("{name} needs key {key} of Secret {secret}, which the chart renders without it")
                }
                None if optional => None,
                None => Some(external_secret_value(secret, key)),
            }
        } else if let Some(r) = var["valueFrom"].get("configMapKeyRef") {
            let map = objects
                .find("ConfigMap", r["name"].as_str().expect("name"))
                .expect("the referenced ConfigMap is rendered");
            Some(
                map["data"][r["key"].as_str().expect("key")]
                    .as_str()
                    .expect("the key exists")
                    .to_owned(),
            )
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            Some(POD_NAME.to_owned())
        } else {
            panic!("unsupported env source for {name}: {var}")
        };
        if let Some(value) = value {
            assert!(env.insert(name.clone(), value).is_none(), "{name} is set twice");
        }
    }
    env
}

/// Parses the pod's environment with the app's parser, after the checks that parsing alone cannot make.
fn config_of(pod: &AppPod) -> Config {
    let known: Vec<String> = VARIABLES
        .iter()
        .flat_map(|v| v.name.split(", "))
        .flat_map(|n| [n.to_owned(), format!("{n}_FILE")])
        .collect();
    for name in pod.env.keys() {
        assert!(
            known.contains(name),
            "the chart sets {name}, which the app does not read (crates/inventory/src/config.rs VARIABLES)"
        );
    }
    let env: HashMap<String, String> = pod.env.clone().into_iter().collect();
    Config::from_lookup(|name| env.get(name).cloned()).unwrap_or_else(|e| {
        panic!(
            "the app rejects the chart's environment: {e}\n{:#?}",
            redact(&pod.env)
        )
    })
}

fn redact(env: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    env.iter()
        .map(|(k, v)| {
            let secret = ["KEY", "PASSWORD", "DATABASE_URL"].iter().any(|s| k.contains(s));
            (k.as_str(), if secret { "<secret>" } else { v.as_str() })
        })
        .collect()
}

fn container_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}")) as u16
}

/// Checks shared by every profile; returns the parsed configuration for profile-specific checks.
fn check_profile(profile: &str) -> (Rendered, Config) {
    check_values(profile, None)
}

/// [`check_profile`] with extra values.
fn check_values(profile: &str, extra: Option<&str>) -> (Rendered, Config) {
    let objects = Rendered(render_with(profile, extra));
    let pod = app_pod(&objects);
    let config = config_of(&pod);

    assert_eq!(
        config.host.to_string(),
        "0.0.0.0",
        "HOST: the pod must listen on all addresses"
    );
    assert_eq!(config.port, container_port(pod.container, "http"));
    assert_eq!(config.metrics_port, container_port(pod.container, "metrics"));
    assert_eq!(
        config.instance_name, POD_NAME,
        "INSTANCE_NAME comes from the pod name"
    );
    assert!(
        config.cookie_secure,
        "behind the TLS ingress the cookie is Secure"
    );
    assert_ne!(
        config.trusted_proxies,
        inventory::forwarded::TrustedProxies::None,
        "behind the ingress the client address is in X-Forwarded-For"
    );
    assert!(
        pod.env.contains_key("APP_KEY"),
        "every replica must share a configured APP_KEY, never a generated one"
    );

    // The kubelet SIGKILLs after the grace period: it must cover preStop, then the app's delay and drain.
    let pod_spec = &pod.deployment["spec"]["template"]["spec"];
    let grace = pod_spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = pod.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        grace > pre_stop + config.shutdown_delay.as_secs() + config.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + SHUTDOWN_DELAY_SECONDS {} + \
         SHUTDOWN_GRACE_SECONDS {}",
        config.shutdown_delay.as_secs(),
        config.shutdown_grace.as_secs()
    );

    // The metrics Service (and nothing the Ingress uses) exposes METRICS_PORT.
    let metrics_service = objects
        .all("Service")
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "app-metrics")
        .expect("a metrics Service");
    assert_eq!(metrics_service["spec"]["ports"][0]["targetPort"], "metrics");
    for service in objects
        .all("Service")
        .filter(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "app")
    {
        for port in service["spec"]["ports"].as_array().expect("ports") {
            assert_ne!(
                port["targetPort"], "metrics",
                "the app Service must not expose /metrics"
            );
        }
    }
    (objects, config)
}

/// `host` is the stable name of a pod of a rendered StatefulSet behind a rendered headless Service.
fn assert_statefulset_pod(objects: &Rendered, host: &str) {
    let suffix = format!(".{NAMESPACE}.svc.cluster.local");
    let short = host
        .strip_suffix(&suffix)
        .unwrap_or_else(|| panic!("{host} is not a name in namespace {NAMESPACE}"));
    let (pod, service) = short.split_once('.').expect("POD.SERVICE");
    let (set, ordinal) = pod.rsplit_once('-').expect("STATEFULSET-ORDINAL");
    let ordinal: u64 = ordinal.parse().expect("ordinal");
    let sts = objects
        .find("StatefulSet", set)
        .unwrap_or_else(|| panic!("{host}: no StatefulSet {set}"));
    assert_eq!(
        sts["spec"]["serviceName"], service,
        "{host}: the StatefulSet's governing Service"
    );
    assert!(
        ordinal < sts["spec"]["replicas"].as_u64().expect("replicas"),
        "{host}: ordinal beyond the replicas"
    );
    let svc = objects
        .find("Service", service)
        .unwrap_or_else(|| panic!("{host}: no Service {service}"));
    assert_eq!(svc["spec"]["clusterIP"], "None", "{service} must be headless");
}

/// `url`'s host is a rendered Service with that port.
fn assert_service_url(objects: &Rendered, url: &str) {
    let rest = url.split_once("://").expect("scheme").1;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split('/').next().expect("host");
    let (host, port) = host_port.rsplit_once(':').expect("host:port");
    let service = objects
        .find("Service", host)
        .unwrap_or_else(|| panic!("{url}: no Service {host}"));
    assert!(
        service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["port"].as_u64().map(|p| p.to_string()).as_deref() == Some(port)),
        "{url}: Service {host} has no port {port}"
    );
}

#[test]
fn default_profile_sentinel_and_bundled_mysql() {
    let (objects, config) = check_profile("default");
    assert_eq!(config.trace_export, None, "trace export is off by default");
    let SessionDriver::Redis(redis) = &config.session_driver else {
        panic!(
            "the default profile keeps sessions in Redis, got {:?}",
            config.session_driver
        );
    };
    let Topology::Sentinel {
        sentinels,
        master,
        sentinel_password,
        ..
    } = &redis.topology
    else {
        panic!(
            "the bundled Redis is found through Sentinel, got {:?}",
            redis.topology
        );
    };
    assert_eq!(sentinels.len(), 3);
    for sentinel in sentinels {
        let (host, port) = sentinel.rsplit_once(':').expect("host:port");
        assert_eq!(port, "26379");
        assert_statefulset_pod(&objects, host);
    }
    let sts = objects
        .find("StatefulSet", "inventory-redis")
        .expect("Redis StatefulSet");
    let config_map = objects
        .find("ConfigMap", "inventory-redis")
        .expect("Redis ConfigMap");
    let common = config_map["data"]["common.sh"].as_str().expect("common.sh");
    assert!(
        common.contains(&format!("MASTER_SET={master}\n")),
        "the app asks the Sentinels for the master set they monitor ({master})"
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    // Guaranteed QoS: every container of a Redis pod has requests equal to limits, for CPU and memory.
    let pod_spec = &sts["spec"]["template"]["spec"];
    for container in ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod_spec[*k].as_array().into_iter().flatten())
    {
        let r = &container["resources"];
        for resource in ["cpu", "memory"] {
            assert!(
                r["limits"][resource].is_string() && r["requests"][resource] == r["limits"][resource],
                "Redis container {}: {resource} requests must equal limits (Guaranteed QoS): {r}",
                container["name"]
            );
        }
    }
    assert!(redis.password.is_some(), "the bundled Redis requires a password");
    assert_eq!(
        redis.password, *sentinel_password,
        "the bundled Sentinels use the same password"
    );
    assert_eq!(redis.durability, mooring_redis::Durability::Replicas(1));
    assert_service_url(
        &objects,
        secrecy::ExposeSecret::expose_secret(&config.database_url),
    );
}

#[test]
fn minimal_profile_standalone_redis() {
    let (objects, config) = check_profile("minimal");
    let SessionDriver::Redis(redis) = &config.session_driver else {
        panic!("Redis expected, got {:?}", config.session_driver);
    };
    let Topology::Standalone { url } = &redis.topology else {
        panic!("standalone expected, got {:?}", redis.topology);
    };
    let host = url
        .strip_prefix("redis://")
        .and_then(|h| h.strip_suffix(":6379"))
        .expect("redis://HOST:6379");
    assert_statefulset_pod(&objects, host);
    assert_eq!(redis.durability, mooring_redis::Durability::Async);
    assert!(redis.password.is_some());
}

#[test]
fn production_profile_external_database_and_existing_secret() {
    let (objects, config) = check_profile("production");
    assert!(
        objects.all("Secret").next().is_none(),
        "secret.existingSecret: the chart renders no Secret"
    );
    assert!(matches!(config.session_driver, SessionDriver::Redis(_)));
    assert!(config.session_encrypt);
    assert!(
        secrecy::ExposeSecret::expose_secret(&config.database_url).starts_with("postgres://"),
        "DATABASE_URL comes from the external database Secret"
    );
    let export = config
        .trace_export
        .as_ref()
        .expect("tracing.otlpEndpoint turns OTLP trace export on");
    assert_eq!(
        export.endpoint,
        "http://otel-collector.monitoring.svc.cluster.local:4318/v1/traces"
    );
    assert_eq!(export.service_name, "inventory");
    assert_eq!(export.sample_ratio, 0.25);
}

#[test]
fn external_redis_profile() {
    let (_, config) = check_profile("external-redis");
    let SessionDriver::Redis(redis) = &config.session_driver else {
        panic!("Redis expected");
    };
    let Topology::Sentinel {
        sentinels, master, ..
    } = &redis.topology
    else {
        panic!("Sentinel expected, got {:?}", redis.topology);
    };
    assert_eq!(master, "mymaster");
    assert_eq!(sentinels.len(), 3);
}

#[test]
fn no_monitoring_profile_sql_sessions_and_postgresql() {
    let (objects, config) = check_profile("no-monitoring");
    let SessionDriver::Database(url) = &config.session_driver else {
        panic!("sessions in SQL expected, got {:?}", config.session_driver);
    };
    assert!(url.starts_with("postgres://"));
    assert_service_url(&objects, url);
    assert!(objects.find("StatefulSet", "inventory-redis").is_none());
}

/// The check above would pass vacuously if a misspelt variable were never looked at: prove it is.
#[test]
fn a_variable_the_app_does_not_read_is_caught() {
    let objects = Rendered(render("default"));
    let mut pod = app_pod(&objects);
    pod.env.insert("REDIS_SENTINEL_MASTR".into(), "inventory".into());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config_of(&pod)));
    let message = caught.expect_err("a misspelt variable must fail the check");
    let text = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(text.contains("REDIS_SENTINEL_MASTR"), "{text}");
}

/// redis.external with a URL, and with Cluster nodes (the profiles cover Sentinel).
#[test]
fn external_redis_url_and_cluster() {
    let (_, config) = check_values(
        "external-redis",
        Some(
            "redis:\n  external:\n    sentinels: []\n    sentinelMaster: \"\"\n    sentinelPasswordKey: \"\"\n    \
             url: rediss://redis.example.internal:6380/2\n",
        ),
    );
    let SessionDriver::Redis(redis) = &config.session_driver else {
        panic!("Redis expected");
    };
    assert!(
        matches!(&redis.topology, Topology::Standalone { url } if url == "rediss://redis.example.internal:6380/2"),
        "{:?}",
        redis.topology
    );
    let (_, config) = check_values(
        "external-redis",
        Some(
            "redis:\n  external:\n    sentinels: []\n    sentinelMaster: \"\"\n    sentinelPasswordKey: \"\"\n    \
             clusterNodes: [\"redis-0.redis:6379\", \"redis-1.redis:6379\", \"redis-2.redis:6379\"]\n",
        ),
    );
    let SessionDriver::Redis(redis) = &config.session_driver else {
        panic!("Redis expected");
    };
    assert!(
        matches!(&redis.topology, Topology::Cluster { nodes } if nodes.len() == 3),
        "{:?}",
        redis.topology
    );
    assert!(redis.password.is_some(), "passwordKey gives REDIS_PASSWORD");
}

/// The backup CronJob runs `moor backup`, which reads the same `REDIS_*` variables as the app: it must get
/// exactly the app's, so it backs up the Redis the app uses, with the app's credentials.
#[test]
fn the_backup_job_reaches_redis_as_the_app_does() {
    for (profile, extra) in [
        ("production", None),
        ("default", Some("backup:\n  enabled: true\n")),
    ] {
        let objects = Rendered(render_with(profile, extra));
        let app = app_pod(&objects);
        let job = objects
            .all("CronJob")
            .find(|j| j["metadata"]["labels"]["app.kubernetes.io/component"] == "backup")
            .unwrap_or_else(|| panic!("{profile}: a backup CronJob"));
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let redis = |env: BTreeMap<String, String>| -> BTreeMap<String, String> {
            env.into_iter().filter(|(k, _)| k.starts_with("REDIS_")).collect()
        };
        let job_env = redis(container_env(&objects, container));
        assert!(
            job_env.contains_key("REDIS_SENTINELS"),
            "{profile}: {:?}",
            redact(&job_env)
        );
        assert_eq!(
            job_env,
            redis(app.env.clone()),
            "{profile}: the job's REDIS_* differ from the app's"
        );
        let command: Vec<&str> = container["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|a| a.as_str().expect("string"))
            .collect();
        assert_eq!(
            &command[..4],
            ["/usr/local/bin/moor", "backup", "--out", "/backup"],
            "{profile}"
        );
        let dockerfile =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/Dockerfile"))
                .expect("deploy/Dockerfile");
        let shipped = dockerfile
            .lines()
            .find_map(|l| l.trim().strip_prefix("ARG BINARIES="))
            .expect("ARG BINARIES in the Dockerfile")
            .trim_matches('"');
        assert!(
            shipped.split_whitespace().any(|b| b == "moor"),
            "the image ships {shipped}, not moor: the backup job could not start"
        );
        let claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str()
            .expect("a PVC volume");
        let pvc = objects
            .find("PersistentVolumeClaim", claim)
            .unwrap_or_else(|| panic!("{profile}: PVC {claim} is rendered"));
        assert_eq!(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    }
}
