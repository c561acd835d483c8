"""Checks deploy/Dockerfile without Docker (there is no container engine here, and no hadolint).

- every COPY/ADD from the build context names a path that exists in the repository and that
  deploy/Dockerfile.dockerignore does not exclude;
- every COPY --from names a stage defined above it;
- every binary in the builder's ARG BINARIES is a binary target of the workspace (cargo metadata), and the
  ENTRYPOINT runs one of them;
- the final stage runs as a numeric, non-root USER.

Usage: python3 dockerfile_check.py REPO_ROOT CARGO_METADATA_JSON
"""

import fnmatch
import json
import os
import re
import shlex
import sys


def logical_lines(text):
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    if current:
        out.append(current)
    return out


def ignored(path, patterns):
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        candidates = [pat, pat.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            result = not negate
    return result


def check(root, metadata):
    errors = []
    dockerfile = os.path.join(root, "deploy", "Dockerfile")
    ignore_file = dockerfile + ".dockerignore"
    patterns = []
    if os.path.exists(ignore_file):
        with open(ignore_file) as f:
            patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    with open(dockerfile) as f:
        lines = logical_lines(f.read())

    bins = {
        t["name"]
        for p in metadata["packages"]
        for t in p["targets"]
        if "bin" in t["kind"]
    }
    stages, binaries, entry, user, last_from = [], None, None, None, None
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            last_from = m.group(1)
            stages.append(m.group(2))
            user = None
        elif word in ("COPY", "ADD"):
            args = shlex.split(rest)
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            sources = paths[:-1]
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage not in stages[:-1]:
                    errors.append(f"{line}: stage '{source_stage}' is not defined above")
                continue
            for src in sources:
                full = os.path.join(root, src)
                if not os.path.exists(full):
                    errors.append(f"{line}: '{src}' does not exist in the repository")
                elif ignored(src.rstrip("/"), patterns):
                    errors.append(f"{line}: '{src}' is excluded by Dockerfile.dockerignore")
                else:
                    print(f"ok: COPY source {src} exists")
        elif word == "ARG" and rest.startswith("BINARIES="):
            binaries = shlex.split(rest.split("=", 1)[1])[0].split()
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "USER":
            user = rest.strip()

    if not binaries:
        errors.append("no ARG BINARIES=\"...\" in the builder stage")
    for b in binaries or []:
        if b in bins:
            print(f"ok: binary {b} is a workspace binary target")
        else:
            errors.append(f"binary '{b}' in BINARIES is not a binary of the workspace (have: {sorted(bins)})")
    if not entry or os.path.basename(entry[0]) not in (binaries or []):
        errors.append(f"ENTRYPOINT {entry} does not run one of BINARIES {binaries}")
    else:
        print(f"ok: ENTRYPOINT runs {entry[0]}")
    if not user or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", user):
        errors.append(f"the final stage ({last_from}) must set a numeric non-root USER, has {user!r}")
    else:
        print(f"ok: final stage runs as USER {user}")
    return errors


def main():
    root, metadata_path = sys.argv[1], sys.argv[2]
    with open(metadata_path) as f:
        metadata = json.load(f)
    errors = check(root, metadata)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
