#!/usr/bin/env bash
# The end-to-end benchmark of tiered tables: N rows over two years in one
# Postgres table (orders_all), and the same rows in a tiered table (orders,
# 30 days hot, the rest moved to Iceberg by `thermocline tier run`), queried
# directly and through thermocline in one run. Prints one table of median
# times and ratios (each run in a new session, then all runs in one warmed
# session), and thermocline's peak RSS; then streams every row to a
# client, directly and through a freshly started thermocline, as a SELECT
# and by COPY TO STDOUT, and prints the times and thermocline's peak RSS
# while streaming.
#
#   benches/tiered_bench.sh [--rows N] [--runs K] [--thermocline PATH] [--keep-workdir]
#
# Defaults: 10,000,000 rows, 5 runs per query, three times as many for the
# quick ones (the median is shown). Needs PostgreSQL 15 server binaries and
# psql; builds thermocline in release mode when no binary is given or found.
set -euo pipefail

ROWS=10000000
RUNS=5
THERMOCLINE_BIN=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --thermocline) THERMOCLINE_BIN="$2"; shift 2 ;;
    --keep-workdir) KEEP=1; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tiered_bench: unknown option $1" >&2; exit 2 ;;
    esac
done

NAME=tiered_bench
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"
start_postgres -c shared_buffers=1GB -c max_wal_size=4GB -c work_mem=64MB

log "loading $ROWS rows over two years into orders_all and orders"
started=$(date +%s)
load_sample "$ROWS" orders_all
pg <<SQL
CREATE TABLE orders (LIKE orders_all INCLUDING ALL);
INSERT INTO orders SELECT * FROM orders_all;
VACUUM ANALYZE;
SQL
log "loaded in $(( $(date +%s) - started )) s"

# The cache would answer repeated runs; this measures computing them
# (benches/cache_bench.sh measures the cache).
write_config 'cache_memory = "0"'

log "moving rows older than 30 days to Iceberg"
started=$(date +%s)
"$THERMOCLINE_BIN" tier run --config "$WORK/thermocline.toml" >&2
MOVE_SECS=$(( $(date +%s) - started ))
# One pass moved ~96% of the table at once, which leaves its heap bloated;
# the mover's steady state (a day's rows at a time, autovacuum behind it)
# keeps the hot table at its 30 days: compact it once to measure that.
pg -c "VACUUM FULL ANALYZE orders"
# The load left gigabytes of dirty buffers for the checkpointer to write
# back over the next minutes, on the cores the runs share: written now,
# before any run.
pg -c "CHECKPOINT"
# With fsync off, that and the lake's new files are still dirty in the
# kernel's page cache, written back as the runs go: written now.
sync

serve

# once_ms PORT SQL: one run in a new session, in milliseconds.
once_ms() {
    "$PSQL" -X -h 127.0.0.1 -p "$1" -U postgres -d bench -v ON_ERROR_STOP=1 \
        -c '\timing on' -c "$2" 2>&1 | awk '/^Time:/ { print $2 }'
}

# median: the median of the numbers on standard input.
median() {
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# pair_ms SQL_DIRECT SQL_THROUGH N: the medians of N runs each, directly
# and through thermocline, in new sessions. Runs alternate, so that what
# the machine does meanwhile (autovacuum, checkpoints, the page cache)
# weighs on both alike.
pair_ms() {
    local i direct="$WORK/direct.ms" through="$WORK/through.ms"
    : >"$direct"
    : >"$through"
    for i in $(seq "$3"); do
        once_ms "$PG_PORT" "$1" >>"$direct"
        once_ms "$TC_PORT" "$2" >>"$through"
    done
    printf '%s %s' "$(median <"$direct")" "$(median <"$through")"
}

# session_ms PORT SQL N: the median of N runs in one session, after one
# run that warms it (a pooled connection's case: no new backend process,
# its catalog caches warm).
session_ms() {
    local port="$1" sql="$2" i
    {
        echo '\timing on'
        for i in $(seq $(( $3 + 1 ))); do echo "$sql;"; done
    } | "$PSQL" -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 2>&1 \
        | awk '/^Time:/ { print $2 }' | tail -n +2 \
        | median
}

# Queries of a few milliseconds are run three times as often: a run of
# theirs is shorter than what the machine's scheduling moves it by.
QUICK=$(( RUNS * 3 ))
declare -a NAMES QUERIES COUNTS
NAMES+=("full-history monthly aggregate")
QUERIES+=("SELECT date_trunc('month', created_at) AS m, count(*), sum(amount) FROM TBL GROUP BY 1 ORDER BY 1")
COUNTS+=("$RUNS")
NAMES+=("last 7 days")
QUERIES+=("SELECT count(*), sum(amount) FROM TBL WHERE created_at >= now() - interval '7 days'")
COUNTS+=("$QUICK")
NAMES+=("primary-key lookup")
QUERIES+=("SELECT * FROM TBL WHERE id = $(( ROWS / 2 + 7 ))")
COUNTS+=("$QUICK")
NAMES+=("latest 10 rows")
QUERIES+=("SELECT * FROM TBL ORDER BY created_at DESC, id LIMIT 10")
COUNTS+=("$QUICK")
NAMES+=("one-year range filter")
QUERIES+=("SELECT count(*), sum(amount) FROM TBL WHERE created_at >= now() - interval '400 days' AND created_at < now() - interval '35 days'")
COUNTS+=("$RUNS")
NAMES+=("join with a dimension, by region")
QUERIES+=("SELECT c.region, count(*), sum(o.amount) FROM TBL o JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1")
COUNTS+=("$RUNS")

printf '\n%d rows, 30 days hot; moved to Iceberg in %d s; median of %d runs (%d for the last 7 days, the key lookup and the latest rows)\n' \
    "$ROWS" "$MOVE_SECS" "$RUNS" "$QUICK"
printf 'each run a new session (direct and thermocline alternating); then as many runs in one warmed session\n\n'
printf '%-34s %14s %16s %8s %14s %16s %8s\n' "query" "Postgres (ms)" "thermocline (ms)" "ratio" \
    "warm: Postgres" "warm: thermocline" "ratio"
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
for i in "${!NAMES[@]}"; do
    read -r direct through <<<"$(pair_ms "${QUERIES[$i]//TBL/orders_all}" "${QUERIES[$i]//TBL/orders}" "${COUNTS[$i]}")"
    warm_direct=$(session_ms "$PG_PORT" "${QUERIES[$i]//TBL/orders_all}" "${COUNTS[$i]}")
    warm_through=$(session_ms "$TC_PORT" "${QUERIES[$i]//TBL/orders}" "${COUNTS[$i]}")
    printf '%-34s %14s %16s %8s %14s %16s %8s\n' "${NAMES[$i]}" "$direct" "$through" \
        "$(ratio_of "$direct" "$through")" "$warm_direct" "$warm_through" "$(ratio_of "$warm_direct" "$warm_through")"
done
# The last 7 days is relayed to Postgres untouched. Postgres's own time
# on the hot table, which it reads, can differ from its time on the
# all-rows table (after the move, Postgres itself reads the hot table more
# slowly for a while): the hot table read directly shows what thermocline
# adds.
read -r hot_direct hot_through <<<"$(pair_ms "${QUERIES[1]//TBL/orders}" "${QUERIES[1]//TBL/orders}" "$QUICK")"
printf '%-34s %14s %16s %8s\n' "last 7 days, Postgres on hot table" "$hot_direct" "$hot_through" \
    "$(ratio_of "$hot_direct" "$hot_through")"
rss=$(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$TC_PID/status")
printf '\nratio: Postgres time / thermocline time (above 1: thermocline is faster)\n'
printf 'thermocline peak RSS: %s\n' "$rss"

# Every row to a client, on a freshly started server, so that its peak RSS
# is the streaming path's own.
kill "$TC_PID"
wait "$TC_PID" 2>/dev/null || true
serve
# stream_ms PORT SQL: lines psql printed and the milliseconds taken.
stream_ms() {
    local started rows
    started=$(date +%s%N)
    rows=$("$PSQL" -X -q -A -t -h 127.0.0.1 -p "$1" -U postgres -d bench -c "$2" | wc -l)
    printf '%d %d' "$rows" $(( ($(date +%s%N) - started) / 1000000 ))
}
read -r direct_rows direct_ms <<<"$(stream_ms "$PG_PORT" "SELECT * FROM orders_all")"
read -r through_rows through_ms <<<"$(stream_ms "$TC_PORT" "SELECT * FROM orders")"
stream_rss=$(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$TC_PID/status")
printf '\nstreaming every row to psql: Postgres %d rows in %d ms, thermocline %d rows in %d ms; thermocline peak RSS meanwhile: %s\n' \
    "$direct_rows" "$direct_ms" "$through_rows" "$through_ms" "$stream_rss"
# The same rows by COPY … TO STDOUT (an export, psql's \copy).
read -r direct_rows direct_ms <<<"$(stream_ms "$PG_PORT" "COPY orders_all TO STDOUT")"
read -r through_rows through_ms <<<"$(stream_ms "$TC_PORT" "COPY orders TO STDOUT")"
stream_rss=$(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$TC_PID/status")
printf 'COPY of every row TO STDOUT: Postgres %d rows in %d ms, thermocline %d rows in %d ms; thermocline peak RSS since start: %s\n' \
    "$direct_rows" "$direct_ms" "$through_rows" "$through_ms" "$stream_rss"
