#!/usr/bin/env bash
# THE test command (see README): services, formatting, lints, every test against real PostgreSQL and MariaDB.
#
#   scripts/test.sh
#
# It runs scripts/services.sh first, which installs and starts PostgreSQL and MariaDB if needed (as root) and
# creates the `mooring` role/user the tests create their databases with. Override the servers with
# MOORING_TEST_POSTGRES_URL and MOORING_TEST_MYSQL_URL (admin URLs of a user that may create databases).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n==== %s ====\n' "$*"; }

export MOORING_TEST_POSTGRES_URL="${MOORING_TEST_POSTGRES_URL:-postgres://mooring:mooring@127.0.0.1:5432/postgres}"
export MOORING_TEST_MYSQL_URL="${MOORING_TEST_MYSQL_URL:-mysql://mooring:mooring@127.0.0.1:3306/mysql}"

section "services (scripts/services.sh)"
bash scripts/services.sh

section "format (cargo fmt --check)"
cargo fmt --all -- --check

section "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

bash scripts/validate-deploy.sh

section "tests (cargo test)"
cargo test --workspace --locked

section "chaos (moor chaos all --short: the failure scenarios and their budgets, in the local lab)"
cargo build --locked -p moor -p inventory
lab_dir="$(mktemp -d)/lab"
trap '"${CARGO_TARGET_DIR:-target}"/debug/moor lab down --wipe --dir "$lab_dir" >/dev/null 2>&1 || true' EXIT
"${CARGO_TARGET_DIR:-target}"/debug/moor chaos all --short --dir "$lab_dir" --base-port 0 --report-dir target/chaos-reports

section "all checks passed"
