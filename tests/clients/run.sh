#!/usr/bin/env bash
# Runs one real PostgreSQL client against the server named by the libpq
# environment (PGHOST, PGPORT, PGUSER, PGDATABASE, and PGPASSWORD if set) and
# prints its transcript on standard output.
#
#   tests/clients/run.sh CLIENT      CLIENT: psql | psycopg | asyncpg | node-pg | pgjdbc
#
# With a -tiered suffix the client instead reads the orders and customers
# tables of tests/clients/tiered/ (made by tests/tiered.rs), a database
# whose orders table may be tiered.
#
# The transcript is deterministic for a fresh, empty database on a given
# server, so the same client run against PostgreSQL directly and through
# thermocline must print the same bytes. SQL errors, notices and the like are
# part of the transcript; the exit status is non-zero only when the client
# itself failed (crashed, could not connect, or is not installed).
#
# Nothing is installed here: run tests/clients/install.sh first.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${THERMOCLINE_TOOLS:-$HOME/.cache/thermocline-tools}"
JDBC_JAR=/usr/share/java/postgresql.jar
CLIENTS="psql psycopg asyncpg node-pg pgjdbc psql-tiered psycopg-tiered asyncpg-tiered node-pg-tiered pgjdbc-tiered"

die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
missing() { die "$1 is not installed: run $HERE/install.sh first"; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

[ $# -eq 1 ] || die "usage: $0 CLIENT   (one of: $CLIENTS)"
CLIENT="$1"

# The same process environment for every run: UTF-8 output, UTC local time.
export LC_ALL=C.UTF-8 LANG=C.UTF-8 TZ=UTC PYTHONIOENCODING=utf-8 PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
unset PGTZ PGDATESTYLE PGCLIENTENCODING PGOPTIONS PGAPPNAME PGSERVICE PGSERVICEFILE 2>/dev/null || true

: "${PGPORT:=5432}"
: "${PGHOST:=localhost}"
: "${PGUSER:=$(id -un)}"
: "${PGDATABASE:=$PGUSER}"
export PGHOST PGPORT PGUSER PGDATABASE

python_client() {
    local py="$TOOLS/venv/bin/python"
    [ -x "$py" ] || missing "the Python venv ($TOOLS/venv)"
    "$py" -c 'import psycopg, asyncpg' 2>/dev/null || missing "psycopg/asyncpg (in $TOOLS/venv)"
    exec "$py" -u "$HERE/$1" "${@:2}"
}

java_ready() {
    command -v java >/dev/null || missing "java"
    [ -f "$JDBC_JAR" ] || missing "pgjdbc ($JDBC_JAR, Debian package libpostgresql-jdbc-java)"
    [ -f "$TOOLS/java/PgjdbcClient.class" ] || missing "the compiled pgjdbc client ($TOOLS/java)"
    [ "$(cat "$TOOLS/java/.thermocline-stamp" 2>/dev/null)" = "$(hash_of "$HERE/PgjdbcClient.java" "$HERE/tiered/TieredPgjdbc.java" "$JDBC_JAR")" ] \
        || die "$TOOLS/java is older than the Java clients: run $HERE/install.sh"
    case "$PGHOST" in
    /*) die "pgjdbc speaks TCP only; PGHOST is a socket directory ($PGHOST)" ;;
    esac
}

JAVA_OPTS=(-Xshare:auto -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Duser.timezone=UTC -Duser.language=en -Duser.country=US -Dfile.encoding=UTF-8)

node_ready() {
    command -v node >/dev/null || missing "node"
    [ -f "$HERE/node/node_modules/pg/package.json" ] || missing "node-postgres ($HERE/node/node_modules)"
    [ "$(cat "$HERE/node/node_modules/.thermocline-stamp" 2>/dev/null)" = \
      "$(hash_of "$HERE/node/package.json" "$HERE/node/package-lock.json")" ] \
        || die "$HERE/node/node_modules does not match package-lock.json: run $HERE/install.sh"
}

case "$CLIENT" in
psql)
    command -v psql >/dev/null || missing "psql (Debian package postgresql-client)"
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    cd "$scratch"
    # Errors and notices go to stderr: merge them into the transcript. The
    # script comes on stdin so that messages say "psql:<stdin>:LINE:" whatever
    # the checkout's path.
    PAGER=cat psql -X -a -v ON_ERROR_STOP=0 --set=HIDE_TABLEAM=off <"$HERE/psql_session.sql" 2>&1
    ;;
psycopg)
    python_client psycopg_client.py
    ;;
asyncpg)
    python_client asyncpg_client.py
    ;;
node-pg)
    node_ready
    NODE_PATH="$HERE/node/node_modules" exec node --no-deprecation "$HERE/node_pg_client.js"
    ;;
pgjdbc)
    java_ready
    exec java "${JAVA_OPTS[@]}" -cp "$TOOLS/java:$JDBC_JAR" PgjdbcClient
    ;;
psql-tiered)
    command -v psql >/dev/null || missing "psql (Debian package postgresql-client)"
    PAGER=cat psql -X -a -v ON_ERROR_STOP=0 <"$HERE/tiered/psql_session.sql" 2>&1
    ;;
psycopg-tiered)
    python_client tiered/python_client.py psycopg
    ;;
asyncpg-tiered)
    python_client tiered/python_client.py asyncpg
    ;;
node-pg-tiered)
    node_ready
    NODE_PATH="$HERE/node/node_modules" exec node --no-deprecation "$HERE/tiered/node_client.js"
    ;;
pgjdbc-tiered)
    java_ready
    exec java "${JAVA_OPTS[@]}" -cp "$TOOLS/java:$JDBC_JAR" TieredPgjdbc "$HERE/tiered"
    ;;
*)
    die "unknown client '$CLIENT' (one of: $CLIENTS)"
    ;;
esac
