# Shared by the end-to-end benchmarks (sourced, not run): a private
# Postgres in a temporary directory, a release build of thermocline, and a
# config with `orders` tiered 30 days hot.
#
# The sourcing script sets NAME (for messages), KEEP (1: keep the work
# directory) and THERMOCLINE_BIN (empty: build or find the release binary)
# first; it may set TC_PID once thermocline runs, to have it stopped on exit.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[[ -x "$PG_BIN/postgres" ]] || { echo "$NAME: PostgreSQL server binaries not found (set PG_BIN)" >&2; exit 1; }
PSQL="$PG_BIN/psql"

log() { printf '%s: %s\n' "$NAME" "$*" >&2; }

if [[ -z "$THERMOCLINE_BIN" ]]; then
    THERMOCLINE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/thermocline"
    if [[ ! -x "$THERMOCLINE_BIN" ]]; then
        log "building thermocline in release mode (the first build takes a while)"
        (cd "$REPO" && cargo build --release --bin thermocline)
    fi
fi

WORK="$(mktemp -d "/tmp/$NAME.XXXXXX")"
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

# start_postgres [-c name=value ...]: initdb, start on PG_PORT, create database bench.
start_postgres() {
    log "starting Postgres on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres -A trust >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w \
        -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off $*" start >/dev/null
    PG_UP=1
    "$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE bench"
}

# pg [psql args]: psql on database bench, stopping at the first error.
pg() { "$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -v ON_ERROR_STOP=1 "$@"; }

# load_sample ROWS TABLE: customers (1000 rows) and TABLE, ROWS orders
# spread evenly over the last two years, indexed on created_at; customers
# and amounts scattered (by a hash of the id, the same in every run).
load_sample() {
    pg <<SQL
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL, visits bigint NOT NULL DEFAULT 0);
INSERT INTO customers SELECT i, 'customer ' || i, (ARRAY['north','south','east','west'])[1 + i % 4] FROM generate_series(1, 1000) i;
CREATE TABLE $2 (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    customer_id int NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL
);
INSERT INTO $2
SELECT i, now() - (i::float8 / $1) * interval '730 days', 1 + (hashint4(-i) & 2147483647) % 1000,
       ((hashint4(i) & 2147483647) % 100000) / 100.0, (ARRAY['new','paid','shipped','returned'])[1 + i % 4]
  FROM generate_series(1, $1) i;
CREATE INDEX ON $2 (created_at);
SQL
}

# write_config [extra TOML lines]: $WORK/thermocline.toml serving on
# TC_PORT, with public.orders tiered (30 days hot, monthly partitions).
write_config() {
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
$(printf '%s\n' "$@")
[lake]
warehouse = "$WORK/lake"
TOML
}

# serve: starts thermocline with that config and waits until it answers.
serve() {
    "$THERMOCLINE_BIN" serve --config "$WORK/thermocline.toml" 2>"$WORK/thermocline.log" &
    TC_PID=$!
    for _ in $(seq 300); do
        "$PSQL" -X -q -h 127.0.0.1 -p "$TC_PORT" -U postgres -d bench -c 'select 1' >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "thermocline did not start; see $WORK/thermocline.log"
    exit 1
}
