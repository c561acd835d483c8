"""Offline checks of the monitoring objects that no installed tool covers (run by scripts/validate-deploy.sh).

  crds MANIFEST...            ServiceMonitor and PrometheusRule objects of rendered manifests: required fields,
                              known fields only, durations, each ServiceMonitor endpoint port present on a
                              Service it selects, and each PrometheusRule equal to deploy/helm/inventory/files/rules
                              (the rules live once: the chart must copy them verbatim).
  coverage RULES... -- TESTS...
                              every alert has a promtool test in which it fires.
  names --scrape FILE... --rules FILE... --dashboard FILE
                              every metric name used by a rule or a dashboard query exists in a real scrape (of the
                              inventory binary and of redis_exporter), is a recording rule, is one of the series
                              Prometheus makes itself, or one of the kube-state-metrics series listed below.
  selftest                    the checks above fail on deliberately broken input.

Needs PyYAML (installed with kubernetes-validate and checkov).
"""

import json
import os
import re
import sys

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES_DIR = os.path.join(ROOT, "deploy", "helm", "inventory", "files", "rules")

# Series Prometheus creates itself (not scraped from any target).
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}

# Series of kube-state-metrics (v2; docs/metrics/workload/cronjob-metrics.md of kube-state-metrics), used by the
# backup alerts. It needs a Kubernetes API server to export anything, and none exists here, so they cannot be
# taken from a scrape: this list is the only place that vouches for their names.
KUBE_STATE_METRICS = {"kube_cronjob_created", "kube_cronjob_status_last_successful_time"}

DURATION = re.compile(r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$")

SERVICEMONITOR_SPEC = {
    "jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "namespaceSelector", "sampleLimit",
    "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
    "keepDroppedTargets", "scrapeProtocols", "scrapeClass", "bodySizeLimit", "selectorMechanism",
}
ENDPOINT = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig", "bearerTokenFile",
    "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps", "trackTimestampsStaleness",
    "basicAuth", "oauth2", "metricRelabelings", "relabelings", "proxyUrl", "followRedirects", "enableHttp2",
    "filterRunning",
}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset"}


def load_all(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend((path, d) for d in yaml.safe_load_all(f) if d)
    return docs


def check_rule_groups(where, groups, errors):
    if not isinstance(groups, list) or not groups:
        errors.append(f"{where}: spec.groups must be a non-empty list")
        return
    names = set()
    for g in groups:
        unknown = set(g) - GROUP_KEYS
        if unknown:
            errors.append(f"{where}: group {g.get('name')}: unknown fields {sorted(unknown)}")
        if not g.get("name"):
            errors.append(f"{where}: a group has no name")
        if g.get("name") in names:
            errors.append(f"{where}: group {g['name']} appears twice")
        names.add(g.get("name"))
        for r in g.get("rules") or []:
            label = r.get("alert") or r.get("record")
            unknown = set(r) - RULE_KEYS
            if unknown:
                errors.append(f"{where}: rule {label}: unknown fields {sorted(unknown)}")
            if ("alert" in r) == ("record" in r):
                errors.append(f"{where}: rule {label}: exactly one of alert or record")
            if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                errors.append(f"{where}: rule {label}: expr must be a non-empty string")
            if "for" in r and not DURATION.match(str(r["for"])):
                errors.append(f"{where}: rule {label}: bad duration for: {r['for']}")
            for key in ("labels", "annotations"):
                if key in r and not all(isinstance(v, str) for v in (r[key] or {}).values()):
                    errors.append(f"{where}: rule {label}: {key} values must be strings")
            if "alert" in r and "severity" not in (r.get("labels") or {}):
                errors.append(f"{where}: alert {label}: no severity label")


def crds(paths):
    errors, checked = [], 0
    docs = load_all(paths)
    rules_files = {}
    for name in sorted(os.listdir(RULES_DIR)):
        with open(os.path.join(RULES_DIR, name)) as f:
            rules_files[name] = yaml.safe_load(f)["groups"]
    file_groups = {g["name"]: g for groups in rules_files.values() for g in groups}
    for path, doc in docs:
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        where = f"{os.path.basename(path)}: {kind}/{meta.get('name')}"
        if kind not in ("ServiceMonitor", "PrometheusRule"):
            continue
        checked += 1
        if doc.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
        if not meta.get("name") or not meta.get("namespace"):
            errors.append(f"{where}: metadata.name and metadata.namespace are required")
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            errors.append(f"{where}: spec is required")
            continue
        if kind == "ServiceMonitor":
            unknown = set(spec) - SERVICEMONITOR_SPEC
            if unknown:
                errors.append(f"{where}: unknown spec fields {sorted(unknown)}")
            selector = (spec.get("selector") or {}).get("matchLabels")
            if not selector:
                errors.append(f"{where}: spec.selector.matchLabels is required (an empty selector scrapes every Service)")
            endpoints = spec.get("endpoints")
            if not endpoints:
                errors.append(f"{where}: spec.endpoints must list at least one endpoint")
            namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta.get("namespace")]
            services = [
                d for p, d in docs
                if p == path and d.get("kind") == "Service"
                and d["metadata"].get("namespace") in namespaces
                and all((d["metadata"].get("labels") or {}).get(k) == v for k, v in (selector or {}).items())
            ]
            if not services:
                errors.append(f"{where}: its selector {selector} matches no rendered Service")
            job_label = spec.get("jobLabel")
            for svc in services:
                if job_label and job_label not in (svc["metadata"].get("labels") or {}):
                    errors.append(f"{where}: Service {svc['metadata']['name']} lacks the jobLabel {job_label}")
            for ep in endpoints or []:
                unknown = set(ep) - ENDPOINT
                if unknown:
                    errors.append(f"{where}: endpoint has unknown fields {sorted(unknown)}")
                if "port" not in ep and "targetPort" not in ep:
                    errors.append(f"{where}: endpoint needs port or targetPort")
                for key in ("interval", "scrapeTimeout"):
                    if key in ep and not DURATION.match(str(ep[key])):
                        errors.append(f"{where}: endpoint {key} {ep[key]!r} is not a duration")
                for svc in services:
                    names = [p.get("name") for p in svc["spec"].get("ports", [])]
                    if "port" in ep and ep["port"] not in names:
                        errors.append(f"{where}: port {ep['port']} is not a port of Service {svc['metadata']['name']} ({names})")
        else:
            groups = spec.get("groups")
            check_rule_groups(where, groups, errors)
            for g in groups or []:
                if g.get("name") not in file_groups:
                    errors.append(f"{where}: group {g.get('name')} is not in {RULES_DIR}")
                elif g != file_groups[g["name"]]:
                    errors.append(f"{where}: group {g['name']} differs from its file in {RULES_DIR}")
            print(f"ok: {where}: {len(groups or [])} groups, identical to files/rules")
    for name, groups in rules_files.items():
        check_rule_groups(name, groups, errors)
    if not errors:
        print(f"ok: {checked} ServiceMonitor/PrometheusRule objects checked")
    return errors


def coverage(rule_paths, test_paths):
    errors = []
    alerts = set()
    for path in rule_paths:
        with open(path) as f:
            for g in yaml.safe_load(f)["groups"]:
                alerts.update(r["alert"] for r in g["rules"] if "alert" in r)
    fired = set()
    for path in test_paths:
        with open(path) as f:
            for t in yaml.safe_load(f)["tests"]:
                for a in t.get("alert_rule_test") or []:
                    if a.get("exp_alerts"):
                        fired.add(a["alertname"])
    for alert in sorted(alerts - fired):
        errors.append(f"alert {alert} has no promtool test in which it fires")
    for alert in sorted(fired - alerts):
        errors.append(f"a test expects alert {alert}, which no rule defines")
    if not errors:
        print(f"ok: all {len(alerts)} alerts fire in a promtool test")
    return errors


KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "atan2",
}


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label names or values."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                                 # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                                # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", e)           # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS or re.fullmatch(r"[0-9]", word[0]):
            continue
        names.add(word)
    return names


def scraped_names(paths):
    names = set()
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.startswith("# TYPE "):
                    name, kind = line.split()[2:4]
                    names.add(name)
                    if kind in ("histogram", "summary"):
                        names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
                elif line.strip() and not line.startswith("#"):
                    names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def names(scrapes, rule_paths, dashboards):
    errors = []
    known = scraped_names(scrapes)
    recorded, used = set(), {}
    for path in rule_paths:
        with open(path) as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    if "record" in r:
                        recorded.add(r["record"])
                    for n in metric_names(r["expr"]):
                        used.setdefault(n, set()).add(f"{os.path.basename(path)}: {r.get('alert') or r.get('record')}")
    for path in dashboards:
        with open(path) as f:
            dash = json.load(f)
        panels = list(dash.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))
        queries = [(p.get("title"), t["expr"]) for p in panels for t in p.get("targets", []) if "expr" in t]
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            if isinstance(q, dict):
                q = q.get("query")
            if v.get("type") == "query" and isinstance(q, str):
                inner = re.match(r"label_values\((.*),\s*[A-Za-z_]+\)$", q)
                queries.append((f"variable {v['name']}", inner.group(1) if inner else q))
        if not queries:
            errors.append(f"{path}: no queries found")
        for title, expr in queries:
            for n in metric_names(expr):
                used.setdefault(n, set()).add(f"{os.path.basename(path)}: {title}")
    for n, where in sorted(used.items()):
        if n in known or n in recorded or n in SYNTHETIC or n in KUBE_STATE_METRICS:
            continue
        errors.append(f"metric {n} is exposed by nothing scraped (used by {sorted(where)})")
    if not errors:
        print(f"ok: {len(used)} metric names used by rules and dashboards all exist "
              f"({len(known)} scraped names, {len(recorded)} recording rules)")
    return errors


def selftest():
    assert metric_names('sum by (route, le) (rate(http_request_duration_seconds_bucket{job="x",le="0.25"}[5m]))') == {
        "http_request_duration_seconds_bucket"}
    assert metric_names("a / on (pod) group_left b > 0.5 and time() - c offset 5m") == {"a", "b", "c"}
    assert metric_names('histogram_quantile(0.99, sum by (op, le) (rate(x_bucket{namespace="$namespace"}[$__rate_interval])))') == {"x_bucket"}
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        scrape = os.path.join(d, "scrape.txt")
        with open(scrape, "w") as f:
            f.write("# TYPE http_requests_total counter\nhttp_requests_total{a=\"b\"} 1\n")
        rules = os.path.join(d, "rules.yaml")
        with open(rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "g", "rules": [
                {"alert": "A", "expr": "rate(http_request_total[5m]) > 0", "labels": {"severity": "x"}}]}]}, f)
        dash = os.path.join(d, "d.json")
        with open(dash, "w") as f:
            json.dump({"panels": [{"title": "t", "targets": [{"expr": "rate(http_requests_total[1m])"}]}]}, f)
        errs = names([scrape], [rules], [dash])
        assert any("http_request_total" in e for e in errs), errs
        tests = os.path.join(d, "t.yaml")
        with open(tests, "w") as f:
            yaml.safe_dump({"tests": [{"alert_rule_test": [{"alertname": "A", "exp_alerts": []}]}]}, f)
        assert coverage([rules], [tests]), "an alert that never fires in a test is reported"
    print("ok: the checks fail on a misspelt metric and on an untested alert")
    return []


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "crds":
        errors = crds(args)
    elif cmd == "coverage":
        split = args.index("--")
        errors = coverage(args[:split], args[split + 1:])
    elif cmd == "names":
        groups, key = {"--scrape": [], "--rules": [], "--dashboard": []}, None
        for a in args:
            if a in groups:
                key = a
            else:
                groups[key].append(a)
        errors = names(groups["--scrape"], groups["--rules"], groups["--dashboard"])
    elif cmd == "selftest":
        errors = selftest()
    else:
        sys.exit(f"unknown command {cmd}")
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
