#!/usr/bin/env bash
# Installs and starts what the test suite needs on Debian 12, idempotently:
#
#   - packages: PostgreSQL, MariaDB, Chromium + chromedriver, redis-server, HAProxy, pkg-config, gcc
#     (apt-get update runs only when something is missing; services are never auto-started by apt);
#   - PostgreSQL and MariaDB started if they do not answer (no systemd here: pg_ctlcluster / start-stop-daemon),
#     left alone if they do;
#   - a PostgreSQL role and a MariaDB user `mooring` (password `mooring`) that may create databases: the tests
#     create one database per test through them (MOORING_TEST_POSTGRES_URL / MOORING_TEST_MYSQL_URL);
#   - the rustfmt and clippy components;
#   - s3s-fs 0.14.1, the S3-compatible server the backup tests start (cargo install, about 2 minutes once;
#     0.17 needs a newer rustc), when no s3s-fs is on PATH or in ~/.cargo/bin.
#
# Redis is installed but NOT started: the tests start their own redis-server processes on free ports.
# Run as root on a fresh machine; as another user it only checks and reports what is missing.
set -euo pipefail

PACKAGES=(postgresql mariadb-server chromium chromium-driver redis-server haproxy pkg-config gcc)
PG_PORT=5432
MYSQL_PORT=3306

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

wait_for() { # wait_for <what> <seconds> <command...>
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq "$((seconds * 5))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$what did not answer within ${seconds}s"
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do installed "$pkg" || missing+=("$pkg"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "packages: all present"
        return
    fi
    is_root || die "missing packages: ${missing[*]}; run scripts/services.sh as root"
    log "packages: installing ${missing[*]}"
    # Keep apt from starting services (redis on 6379 in particular); this script starts what it needs.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
    if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
}

pg_answers() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

start_postgres() {
    if pg_answers; then
        log "postgresql: already running"
        return
    fi
    is_root || die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT; run scripts/services.sh as root"
    local version
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)
    [ -n "$version" ] || die "no PostgreSQL server found under /usr/lib/postgresql"
    if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
        log "postgresql: creating cluster $version/main"
        pg_createcluster "$version" main -p "$PG_PORT"
    fi
    log "postgresql: starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for "PostgreSQL" 30 pg_answers
}

create_postgres_role() {
    if PGPASSWORD=mooring psql -h 127.0.0.1 -p "$PG_PORT" -U mooring -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
        log "postgresql: role mooring ok"
        return
    fi
    is_root || die "cannot log in to PostgreSQL as mooring; run scripts/services.sh as root to create the role"
    log "postgresql: creating role mooring"
    as_postgres psql -v ON_ERROR_STOP=1 -q -d postgres <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mooring') THEN
        CREATE ROLE mooring LOGIN CREATEDB PASSWORD 'mooring';
    ELSE
        ALTER ROLE mooring LOGIN CREATEDB PASSWORD 'mooring';
    END IF;
END
$$;
SQL
}

start_mariadb() {
    if mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$MYSQL_PORT" ping >/dev/null 2>&1 || mariadb-admin -uroot ping >/dev/null 2>&1; then
        # `ping` answers "mysqld is alive" even when access is denied, so any answer means the server is up.
        log "mariadb: already running"
        return
    fi
    is_root || die "MariaDB does not answer on 127.0.0.1:$MYSQL_PORT; run scripts/services.sh as root"
    install -d -o mysql -g mysql -m 755 /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        log "mariadb: initializing the data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    log "mariadb: starting"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_for "MariaDB" 30 mariadb-admin -uroot ping
}

create_mariadb_user() {
    if mariadb --protocol=tcp -h 127.0.0.1 -P "$MYSQL_PORT" -u mooring -pmooring -e 'SELECT 1' >/dev/null 2>&1; then
        log "mariadb: user mooring ok"
        return
    fi
    is_root || die "cannot log in to MariaDB as mooring; run scripts/services.sh as root to create the user"
    log "mariadb: creating user mooring"
    mariadb -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'mooring'@'localhost' IDENTIFIED BY 'mooring';
CREATE USER IF NOT EXISTS 'mooring'@'127.0.0.1' IDENTIFIED BY 'mooring';
ALTER USER 'mooring'@'localhost' IDENTIFIED BY 'mooring';
ALTER USER 'mooring'@'127.0.0.1' IDENTIFIED BY 'mooring';
GRANT ALL PRIVILEGES ON *.* TO 'mooring'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'mooring'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
}

rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "rust: rustfmt and clippy present"
        return
    fi
    command -v rustup >/dev/null || die "missing Rust components ${missing[*]} and no rustup to install them"
    log "rust: adding ${missing[*]}"
    rustup component add "${missing[@]}"
}

S3S_FS_VERSION=0.14.1

install_s3s_fs() {
    local bin
    bin=$(command -v s3s-fs || true)
    [ -n "$bin" ] || [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ] || bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    if [ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $S3S_FS_VERSION\$"; then
        log "s3s-fs: $S3S_FS_VERSION present ($bin)"
        return
    fi
    is_root || die "s3s-fs $S3S_FS_VERSION is missing; run scripts/services.sh as root, or: cargo install s3s-fs --version $S3S_FS_VERSION --locked --features binary"
    command -v cargo >/dev/null || die "s3s-fs is missing and there is no cargo to install it with"
    log "s3s-fs: installing $S3S_FS_VERSION (cargo install, about 2 minutes)"
    cargo install s3s-fs --version "$S3S_FS_VERSION" --locked --features binary
}

install_packages
start_postgres
create_postgres_role
start_mariadb
create_mariadb_user
rust_components
install_s3s_fs
log "ready: PostgreSQL on 127.0.0.1:$PG_PORT, MariaDB on 127.0.0.1:$MYSQL_PORT (user/password mooring/mooring), s3s-fs $S3S_FS_VERSION"
