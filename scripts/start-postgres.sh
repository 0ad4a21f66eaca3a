#!/usr/bin/env bash
# Start the local PostgreSQL cluster (installing the Debian package if it is missing) and make
# sure the test role and database exist. Idempotent: a second call finds everything in place
# and starts/stops nothing else. Prints only the SQLAlchemy URL, for UFARSAP_TEST_PG_URL.
set -euo pipefail

VER="${PG_VERSION:-15}"
CLUSTER="${PG_CLUSTER:-main}"
ROLE="ufarsap"
PASSWORD="ufarsap"
DB="ufarsap_test"
URL="postgresql+psycopg://${ROLE}:${PASSWORD}@127.0.0.1:5432/${DB}"

# From / so that psql does not complain about a working directory postgres cannot read.
as_postgres() { (cd / && su postgres -s /bin/sh -c "$*"); }
psql_q() { as_postgres "psql -X -q -v ON_ERROR_STOP=1 -tA $*"; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! pg_lsclusters -h 2>/dev/null | awk -v v="$VER" -v c="$CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    pg_ctlcluster "$VER" "$CLUSTER" start >/dev/null
fi

ready=""
for _ in $(seq 1 60); do
    if as_postgres "pg_isready -q -h 127.0.0.1 -p 5432"; then ready=1; break; fi
    sleep 0.5
done
[ -n "$ready" ] || { echo "PostgreSQL ${VER}/${CLUSTER} did not accept connections within 30 s" >&2; exit 1; }

# CREATEDB lets tests make throw-away databases; the password is (re)set so that it is known.
if [ "$(psql_q "-c \"SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}'\"")" != "1" ]; then
    psql_q "-c \"CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}'\"" >/dev/null
else
    psql_q "-c \"ALTER ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}'\"" >/dev/null
fi
if [ "$(psql_q "-c \"SELECT 1 FROM pg_database WHERE datname = '${DB}'\"")" != "1" ]; then
    psql_q "-c \"CREATE DATABASE ${DB} OWNER ${ROLE}\"" >/dev/null
fi

echo "$URL"
