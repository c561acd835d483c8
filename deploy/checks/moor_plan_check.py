"""`moor chaos --platform kubernetes` and the chart must name the same things.

Reads the kubectl plan that `moor chaos all --platform kubernetes --dry-run` prints and checks every object it
names against a rendered chart: Deployments and StatefulSets in `rollout` commands, the pod and container of
`exec`, label selectors of `get pods -l`, and the Sentinel master name in `SENTINEL` commands.

Usage: python3 moor_plan_check.py RENDERED_MANIFEST PLAN_FILE NAMESPACE
"""

import re
import shlex
import sys

import yaml


def main():
    manifest, plan_path, namespace = sys.argv[1:]
    objects = [d for d in yaml.safe_load_all(open(manifest)) if d]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    master_sets = {
        line.split("=", 1)[1]
        for cm in by_kind.get("ConfigMap", {}).values()
        for line in (cm.get("data", {}).get("common.sh") or "").splitlines()
        if line.startswith("MASTER_SET=")
    }
    errors, checked = [], 0
    plan = open(plan_path).read()
    for line in plan.splitlines():
        if not line or line.startswith("#"):
            continue
        command = re.sub(r"^[A-Z_]+=\$\((.*)\)$", r"\1", line)
        args = shlex.split(command)
        if args[:1] != ["kubectl"]:
            errors.append(f"not a kubectl command: {line}")
            continue
        if args[1:3] != ["-n", namespace]:
            errors.append(f"not in namespace {namespace}: {line}")
        rest = args[3:]
        for word in rest:
            if "/" in word and word.split("/")[0] in ("deployment", "statefulset"):
                kind = {"deployment": "Deployment", "statefulset": "StatefulSet"}[word.split("/")[0]]
                name = word.split("/", 1)[1]
                checked += 1
                if name not in by_kind.get(kind, {}):
                    errors.append(f"{line}: the chart renders no {kind} {name}")
        if rest[:1] == ["exec"]:
            pod, container = rest[1], rest[rest.index("-c") + 1]
            sts_name, _, ordinal = pod.rpartition("-")
            sts = by_kind.get("StatefulSet", {}).get(sts_name)
            checked += 1
            if not sts or not ordinal.isdigit() or int(ordinal) >= sts["spec"]["replicas"]:
                errors.append(f"{line}: pod {pod} is not a pod of a rendered StatefulSet")
            else:
                names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
                if container not in names:
                    errors.append(f"{line}: pod {pod} has no container {container} ({names})")
                env = [e["name"] for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == container
                       for e in c.get("env", [])]
                if "$REDIS_PASSWORD" in line and "REDIS_PASSWORD" not in env:
                    errors.append(f"{line}: container {container} has no REDIS_PASSWORD")
            sentinel = re.search(r"SENTINEL \S+ (\S+)\s*$", rest[-1])
            if sentinel and sentinel.group(1) not in master_sets:
                errors.append(f"{line}: the chart's Sentinels monitor {sorted(master_sets)}, not {sentinel.group(1)}")
        if "-l" in rest:
            selector = dict(kv.split("=", 1) for kv in rest[rest.index("-l") + 1].split(","))
            checked += 1
            matches = [
                d for d in by_kind.get("Deployment", {}).values()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
            ]
            if not matches:
                errors.append(f"{line}: no rendered Deployment's pods carry {selector}")
    if checked == 0:
        errors.append("the plan names nothing to check")
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"ok: the {checked} objects moor's Kubernetes plans name exist in the rendered chart")


if __name__ == "__main__":
    main()
