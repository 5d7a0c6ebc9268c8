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
# the rest moved to Iceberg first), think time 0-1000 ms between statements,
# 1% of statements federated. Needs PostgreSQL server binaries and psql;
# builds thermocline and the driver in release mode.
set -euo pipefail

CLIENTS=500 SECONDS_=600 ROWS=1000000 THINK=500 FEDERATED=0.01
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

NAME=soak
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

# Two sockets per client in thermocline, one in the driver.
ulimit -n "$(( CLIENTS * 4 + 1024 ))" 2>/dev/null || log "could not raise the open-file limit; many clients may fail to connect"

log "building the soak driver"
(cd "$REPO" && cargo bench --bench soak --no-run 2>&1 | tail -1) >&2

start_postgres -c shared_buffers=512MB -c max_connections=$(( CLIENTS + 100 ))
load_sample "$ROWS" orders
pg -c "VACUUM ANALYZE"

write_config "max_client_connections = $(( CLIENTS + 50 ))" 'federated_queue_timeout = "120s"'

log "moving rows older than 30 days to Iceberg"
"$THERMOCLINE_BIN" tier run --config "$WORK/thermocline.toml" >&2
serve

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
