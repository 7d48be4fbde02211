#!/usr/bin/env bash
# A local PostgreSQL for the distributed-tuning tests (Optuna RDB storage), on Debian.
#
# Installs the `postgresql` package if missing, starts a cluster listening on 127.0.0.1,
# creates a user with a password and a database (each only if missing), then prints the URL
# on stdout (everything else goes to stderr). Idempotent: run it as often as you like.
#
#   export MARKETARENA_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Runs as root (CI, containers) or through sudo. Settings: PGUSER_NAME, PGUSER_PASSWORD, PGDB.
set -euo pipefail

PG_USER="${PGUSER_NAME:-marketarena}"
PG_PASSWORD="${PGUSER_PASSWORD:-tune-pw-8c1f}"
PG_DB="${PGDB:-marketarena_test}"

log() { echo "postgres.sh: $*" >&2; }
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# 1. the package
if ! command -v pg_lsclusters >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql with apt-get"
    "${SUDO[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq postgresql >&2
fi

# 2. a cluster (the package creates 15/main; create one if it was dropped), started
version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating cluster $version/main"
    "${SUDO[@]}" pg_createcluster "$version" main >&2
fi
port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"
status="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}')"
if [ "$status" != "online" ]; then
    log "starting cluster $version/main on port $port"
    # pg_ctlcluster works without systemd (containers); listen on loopback only
    "${SUDO[@]}" pg_ctlcluster "$version" main start -o "-c listen_addresses=127.0.0.1" >&2
fi
for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$port"; then break; fi
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2

# 3. user and database, each only if missing (psql as the postgres superuser, over the socket)
psql_admin() {
    "${SUDO[@]}" runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"
}
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != "1" ]; then
    log "creating user $PG_USER"
    psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD'" >&2
else
    psql_admin -c "ALTER ROLE \"$PG_USER\" LOGIN PASSWORD '$PG_PASSWORD'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
    log "creating database $PG_DB"
    psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\"" >&2
fi

url="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
# the password works over TCP (Debian's pg_hba.conf: scram-sha-256 for 127.0.0.1)
PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$port" -U "$PG_USER" -d "$PG_DB" -qtA \
    -c "SELECT 1" >/dev/null
log "ready: postgresql://$PG_USER:***@127.0.0.1:$port/$PG_DB"
echo "$url"
