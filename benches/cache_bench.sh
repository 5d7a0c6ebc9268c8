#!/usr/bin/env bash
# The benchmark of the cache and of materialized views over a tiered table:
# N rows over two years in one Postgres table (orders_all) and in a tiered
# table (orders, 30 days hot, the rest moved to Iceberg). One run prints:
#
#   - the full-history monthly aggregate, all in Postgres, through a
#     thermocline without cache (cache_memory = 0), and through one with its
#     cache warm, also inside a transaction; a new row is inserted before
#     each cached run, and the last answer is checked against Postgres's;
#   - a monthly materialized view computed as of a day ago (the last day's
#     rows taken out), then one more day of rows added before each
#     incremental REFRESH (and taken out after), with and without the
#     cache, against a full REFRESH (every bucket recomputed) and a full
#     computation (CREATE of the same view), without the cache;
#   - what recording writes for the cache costs them: single-row INSERT
#     and UPDATE latency (pgbench) on orders, whose writes are recorded,
#     against the same on orders_all.
#
#   benches/cache_bench.sh [--rows N] [--runs K] [--thermocline PATH] [--keep-workdir]
#
# Defaults: 10,000,000 rows, 9 runs per figure (the median is shown). Needs
# PostgreSQL 15 server binaries and psql; builds thermocline in release mode
# when no binary is given or found.
set -euo pipefail

ROWS=10000000
RUNS=9
THERMOCLINE_BIN=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --thermocline) THERMOCLINE_BIN="$2"; shift 2 ;;
    --keep-workdir) KEEP=1; shift ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cache_bench: unknown option $1" >&2; exit 2 ;;
    esac
done

NAME=cache_bench
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"
start_postgres -c shared_buffers=1GB -c max_wal_size=4GB -c work_mem=64MB

log "loading $ROWS rows over two years into orders_all and orders"
load_sample "$ROWS" orders_all
pg <<SQL
CREATE TABLE orders (LIKE orders_all INCLUDING ALL);
INSERT INTO orders SELECT * FROM orders_all;
VACUUM ANALYZE;
SQL

write_config
log "moving rows older than 30 days to Iceberg"
"$THERMOCLINE_BIN" tier run --config "$WORK/thermocline.toml" >&2
pg -c "VACUUM FULL ANALYZE orders"
# The load left gigabytes of dirty buffers for the checkpointer to write
# back over the next minutes, on the cores the runs share: written now,
# before any run.
pg -c "CHECKPOINT"
serve

# A second thermocline, without cache, on the same Postgres and lake.
NOCACHE_PORT="$(free_port)"
sed -e "s/127.0.0.1:$TC_PORT/127.0.0.1:$NOCACHE_PORT/" -e 's/^log_level = .*/&\ncache_memory = "0"/' \
    "$WORK/thermocline.toml" > "$WORK/nocache.toml"
"$THERMOCLINE_BIN" serve --config "$WORK/nocache.toml" 2>"$WORK/nocache.log" &
NOCACHE_PID=$!
trap 'kill "$NOCACHE_PID" 2>/dev/null || true; cleanup' EXIT
up=0
for _ in $(seq 300); do
    "$PSQL" -X -q -h 127.0.0.1 -p "$NOCACHE_PORT" -U postgres -d bench -c 'select 1' >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
done
[[ $up == 1 ]] || { log "thermocline without cache did not start:"; cat "$WORK/nocache.log" >&2; exit 1; }

# run PORT SQL...: psql on database bench, one -c per statement, timing on.
run() {
    local port="$1"; shift
    local args=()
    for s in "$@"; do args+=(-c "$s"); done
    "$PSQL" -X -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -c '\timing on' "${args[@]}"
}
# last_ms: the last "Time:" psql printed, in milliseconds.
last_ms() { awk '/^Time:/ { t = $2 } END { print t }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }

MONTHLY="SELECT date_trunc('month', created_at) AS m, count(*), sum(amount) FROM TBL GROUP BY 1 ORDER BY 1"
# new_row I: the I-th row inserted while measuring, for TBL.
new_row() { printf "INSERT INTO TBL VALUES (%d, now(), 7, 12.34, 'new')" $(( ROWS + $1 )); }

log "full-history monthly aggregate"
direct=$(for _ in $(seq "$RUNS"); do run "$PG_PORT" "${MONTHLY//TBL/orders_all}" | last_ms; done | median)
uncached=$(for _ in $(seq "$RUNS"); do run "$NOCACHE_PORT" "${MONTHLY//TBL/orders}" | last_ms; done | median)
run "$TC_PORT" "${MONTHLY//TBL/orders}" >/dev/null
cached=$(for i in $(seq "$RUNS"); do
    row=$(new_row "$i")
    run "$PG_PORT" "${row//TBL/orders_all}" >/dev/null
    run "$TC_PORT" "${row//TBL/orders}" "${MONTHLY//TBL/orders}" | last_ms
done | median)
# The same inside a client's transaction (as psycopg2 and SQLAlchemy read),
# the row inserted by another session: the time of the SELECT.
in_transaction=$(for i in $(seq "$RUNS"); do
    row=$(new_row $(( RUNS + i )))
    run "$PG_PORT" "${row//TBL/orders_all}" >/dev/null
    run "$TC_PORT" "${row//TBL/orders}" >/dev/null
    run "$TC_PORT" "BEGIN" "${MONTHLY//TBL/orders}" "COMMIT" | awk '/^Time:/ { t[++n] = $2 } END { print t[n - 1] }'
done | median)
if diff <(run "$PG_PORT" "${MONTHLY//TBL/orders_all}" | grep -v '^Time') \
        <(run "$TC_PORT" "${MONTHLY//TBL/orders}" | grep -v '^Time') >/dev/null; then
    same=yes
else
    same=NO
fi

log "materialized view: one more day of rows before each REFRESH"
VIEW="SELECT date_trunc('month', created_at) AS month, count(*) AS n, sum(amount) AS total FROM orders GROUP BY 1"
DAY=$(( ROWS / 730 ))
# The views are refreshed as of a day ago: the last day's rows are yet to
# come.
pg -c "DELETE FROM orders WHERE created_at > now() - interval '1 day'" >/dev/null
run "$NOCACHE_PORT" "CREATE MATERIALIZED VIEW monthly AS $VIEW" >/dev/null
run "$TC_PORT" "CREATE MATERIALIZED VIEW monthly_cached AS $VIEW" >/dev/null
# one_day PORT VIEW [SQL]: the time of REFRESH of VIEW through PORT after
# one more day of rows (in the last day), SQL run on Postgres before it,
# and the kind of refresh it was in $WORK/kind; then the day is taken out
# again, vacuumed away (so each run starts from the same table, not one
# with the dead rows of the runs before), and the view refreshed (not
# timed).
one_day() {
    pg -c "INSERT INTO orders SELECT $(( ROWS + 1000 )) + i, now() - (i::float8 / $DAY) * interval '1 day',
                  1 + (hashint4(-i) & 2147483647) % 1000, ((hashint4(i) & 2147483647) % 100000) / 100.0, 'paid' FROM generate_series(1, $DAY) i" >/dev/null
    [[ -n "${3:-}" ]] && pg -c "$3" >/dev/null
    run "$1" "REFRESH MATERIALIZED VIEW $2" | last_ms
    pg -At -c "SELECT last_refresh_kind FROM thermocline.materialized_views WHERE view_name = '$2'" > "$WORK/kind"
    pg -c "DELETE FROM orders WHERE id > $(( ROWS + 1000 ))" -c "VACUUM orders" >/dev/null
    run "$1" "REFRESH MATERIALIZED VIEW $2" >/dev/null
}
incremental=$(for _ in $(seq "$RUNS"); do one_day "$NOCACHE_PORT" monthly; done | median)
kind=$(cat "$WORK/kind")
incremental_cached=$(for _ in $(seq "$RUNS"); do one_day "$TC_PORT" monthly_cached; done | median)
# A full REFRESH: the view's record of what the lake held is cleared
# first, so the refresh cannot tell what changed and recomputes every
# bucket, replacing every row.
forget="UPDATE thermocline.materialized_views SET lake_checksums = NULL WHERE view_name = 'monthly'"
full_refresh=$(for _ in $(seq "$RUNS"); do one_day "$NOCACHE_PORT" monthly "$forget"; done | median)
full_kind=$(cat "$WORK/kind")
full=$(for _ in $(seq "$RUNS"); do
    run "$NOCACHE_PORT" "DROP MATERIALIZED VIEW IF EXISTS monthly_full" "CREATE MATERIALIZED VIEW monthly_full AS $VIEW" | last_ms
done | median)
run "$NOCACHE_PORT" "REFRESH MATERIALIZED VIEW monthly" >/dev/null
run "$TC_PORT" "REFRESH MATERIALIZED VIEW monthly_cached" >/dev/null
view_rows() { pg -At -c "SELECT * FROM $1 ORDER BY 1"; }
if [[ "$(view_rows monthly)" == "$(view_rows monthly_full)" && "$(view_rows monthly_cached)" == "$(view_rows monthly_full)" ]]; then
    view_same=yes
else
    view_same=NO
fi

# What recording writes costs them: pgbench, one client, single-row
# statements (each its own transaction) on orders (with the triggers
# thermocline installed) and on orders_all (without).
HOT=$(( ROWS * 30 / 730 ))
write_cost() {  # write_cost TABLE SHAPE: average latency in ms
    local script="$WORK/$2.sql"
    case "$2" in
    insert) printf '\\set id random(100000000000, 9000000000000000000)\nINSERT INTO %s VALUES (:id, now(), 7, 12.34, %s);\n' "$1" "'new'" > "$script" ;;
    update) printf '\\set id random(1, %d)\nUPDATE %s SET amount = amount + 1 WHERE id = :id;\n' "$HOT" "$1" > "$script" ;;
    esac
    "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -t 3000 -f "$script" bench 2>/dev/null |
        awk '/^latency average/ { print $4 }'
}
writes=()
if [[ -x "$PG_BIN/pgbench" ]]; then
    log "writes with and without the triggers that record them"
    for shape in insert update; do
        writes+=("$shape" "$(write_cost orders_all "$shape")" "$(write_cost orders "$shape")")
    done
fi

printf '\n%d rows, 30 days hot; median of %d runs\n\n' "$ROWS" "$RUNS"
printf '%-52s %12s %10s\n' "full-history monthly aggregate" "time (ms)" "speed-up"
printf '%-52s %12s %10s\n' "all in Postgres" "$direct" "1.0x"
printf '%-52s %12s %10s\n' "thermocline, no cache" "$uncached" "$(ratio "$direct" "$uncached")"
printf '%-52s %12s %10s\n' "thermocline, fresh-cached (a row inserted before each)" "$cached" "$(ratio "$direct" "$cached")"
printf '%-52s %12s\n' "fresh-cached vs no cache" "$(ratio "$uncached" "$cached")"
printf '%-52s %12s %10s\n' "thermocline, fresh-cached, in a transaction" "$in_transaction" "$(ratio "$direct" "$in_transaction")"
printf '%-52s %12s\n' "cached answer equals Postgres's" "$same"
printf '\n%-52s %12s\n' "monthly materialized view, +1 day of rows" "time (ms)"
printf '%-52s %12s\n' "full computation (CREATE), no cache" "$full"
printf '%-52s %12s\n' "REFRESH (full: $full_kind), no cache" "$full_refresh"
printf '%-52s %12s\n' "REFRESH ($kind), no cache" "$incremental"
printf '%-52s %12s\n' "REFRESH ($kind), cache warm" "$incremental_cached"
fraction() { awk -v a="$1" -v b="$2" 'BEGIN { printf "1/%.1f", b / a }'; }
printf '%-52s %12s\n' "incremental / full REFRESH, no cache" "$(fraction "$incremental" "$full_refresh")"
printf '%-52s %12s\n' "incremental / full computation, no cache" "$(fraction "$incremental" "$full")"
printf '%-52s %12s\n' "incremental with cache / full computation without" "$(fraction "$incremental_cached" "$full")"
printf '%-52s %12s\n' "refreshed views equal a fresh one" "$view_same"
rss=$(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$TC_PID/status")
printf '\nthermocline (cached) peak RSS: %s\n' "$rss"
if [[ ${#writes[@]} -gt 0 ]]; then
    printf '\n%-52s %12s %10s\n' "single-row writes, pgbench, 1 client" "latency (ms)" "cost"
    for (( i = 0; i < ${#writes[@]}; i += 3 )); do
        printf '%-52s %12s\n' "${writes[i]}, without triggers (orders_all)" "${writes[i+1]}"
        printf '%-52s %12s %10s\n' "${writes[i]}, writes recorded (orders)" "${writes[i+2]}" \
            "$(awk -v a="${writes[i+2]}" -v b="${writes[i+1]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
    done
fi
