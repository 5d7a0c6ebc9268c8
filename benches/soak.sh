#!/usr/bin/env bash
# The soak: many concurrent clients mixing relayed and federated statements
# against thermocline on loopback for a fixed time. Reports statements,
# errors (expect 0), latency percentiles per kind, and thermocline's RSS at
# the start and end of the run (expect flat).
#
#   benches/soak.sh [--clients N] [--seconds S] [--rows N] [--think-ms MS]
#                   [--federated SHARE] [--thermocline PATH] [--keep-workdir]
#
# Defaults: 500 clients, 600 s, 1,000,000 rows over two years (30 days hot,
# the rest moved to Iceberg first), think time 0-200 ms between statements,
# 2% of statements federated. Needs PostgreSQL server binaries and psql;
# builds thermocline and the driver in release mode.
set -euo pipefail

CLIENTS=500 SECONDS_=600 ROWS=1000000 THINK=100 FEDERATED=0.02
THERMOCLINE_BIN="" KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
    --clients) CLIENTS="$2"; shift 2 ;;
    --seconds) SECONDS_="$2"; shift 2 ;;
    --rows) ROWS="$2"; shift 2 ;;
    --think-ms) THINK="$2"; shift 2 ;;
    --federated) FEDERATED="$2"; shift 2 ;;
    --thermocline) THERMOCLINE_BIN="$2"; shift 2 ;;
    --keep-workdir) KEEP=1; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown option $1" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[[ -x "$PG_BIN/postgres" ]] || { echo "soak: PostgreSQL server binaries not found (set PG_BIN)" >&2; exit 1; }
PSQL="$PG_BIN/psql"
log() { printf 'soak: %s\n' "$*" >&2; }

# Two sockets per client in thermocline, one in the driver.
ulimit -n "$(( CLIENTS * 4 + 1024 ))" 2>/dev/null || log "could not raise the open-file limit; many clients may fail to connect"

target="${CARGO_TARGET_DIR:-$REPO/target}"
if [[ -z "$THERMOCLINE_BIN" ]]; then
    THERMOCLINE_BIN="$target/release/thermocline"
    if [[ ! -x "$THERMOCLINE_BIN" ]]; then
        log "building thermocline in release mode (the first build takes a while)"
        (cd "$REPO" && cargo build --release --bin thermocline)
    fi
fi
log "building the soak driver"
(cd "$REPO" && cargo bench --bench soak --no-run 2>&1 | tail -1) >&2

WORK="$(mktemp -d /tmp/soak.XXXXXX)"
chmod 755 "$WORK"
PG_UP=0 TC_PID=""
if [[ $EUID -eq 0 ]]; then
    as_pg() { runuser -u postgres -- "$@"; }
    chown postgres "$WORK"
else
    as_pg() { "$@"; }
fi
cleanup() {
    [[ -n "$TC_PID" ]] && kill "$TC_PID" 2>/dev/null || true
    [[ $PG_UP == 1 ]] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -m fast stop >/dev/null 2>&1 || true
    if [[ $KEEP == 0 ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT="$(free_port)" TC_PORT="$(free_port)"

log "starting Postgres on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres -A trust >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=512MB -c max_connections=$(( CLIENTS + 100 ))" start >/dev/null
PG_UP=1
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE bench"
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL, visits bigint NOT NULL DEFAULT 0);
INSERT INTO customers SELECT i, 'customer ' || i, (ARRAY['north','south','east','west'])[1 + i % 4] FROM generate_series(1, 1000) i;
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    customer_id int NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL
);
INSERT INTO orders
SELECT i, now() - (i::float8 / $ROWS) * interval '730 days', 1 + i % 1000,
       (i * 37 % 100000) / 100.0, (ARRAY['new','paid','shipped','returned'])[1 + i % 4]
  FROM generate_series(1, $ROWS) i;
CREATE INDEX ON orders (created_at);
VACUUM ANALYZE;
SQL

mkdir -p "$WORK/catalog" "$WORK/lake"
cat > "$WORK/catalog/orders.toml" <<TOML
table = "public.orders"
time_column = "created_at"
hot_window = "30 days"
partition_by = "month"
TOML
cat > "$WORK/thermocline.toml" <<TOML
listen = "127.0.0.1:$TC_PORT"
admin_listen = "off"
postgres_url = "postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"
catalog_dir = "$WORK/catalog"
tier_interval = "off"
log_level = "warn"
max_client_connections = $(( CLIENTS + 50 ))
federated_queue_timeout = "120s"
[lake]
warehouse = "$WORK/lake"
TOML

log "moving rows older than 30 days to Iceberg"
"$THERMOCLINE_BIN" tier run --config "$WORK/thermocline.toml" >&2
"$THERMOCLINE_BIN" serve --config "$WORK/thermocline.toml" 2>"$WORK/thermocline.log" &
TC_PID=$!
for _ in $(seq 300); do
    "$PSQL" -X -q -h 127.0.0.1 -p "$TC_PORT" -U postgres -d bench -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
done

cd "$REPO"
status=0
cargo bench --bench soak -- --port "$TC_PORT" --db bench --pid "$TC_PID" \
    --clients "$CLIENTS" --seconds "$SECONDS_" --think-ms "$THINK" \
    --federated "$FEDERATED" --max-id "$ROWS" || status=$?
if grep -qiE 'panic|error' "$WORK/thermocline.log"; then
    log "thermocline logged errors:"
    grep -iE 'panic|error' "$WORK/thermocline.log" | head -20 >&2
fi
exit "$status"
