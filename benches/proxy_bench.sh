#!/usr/bin/env bash
# End-to-end proxy benchmark: the same PostgreSQL 15, reached directly,
# through thermocline, and through pgbouncer (transaction pooling).
#
# Usage: benches/proxy_bench.sh [--duration SECS] [--clients N] [--scale S]
#                               [--thermocline PATH] [--targets LIST]
#                               [--modes LIST] [--keep-workdir]
# See benches/README.md for what it measures and how to read the results.

set -Eeuo pipefail

usage() {
    cat <<'EOF'
Usage: benches/proxy_bench.sh [options]

  --duration SECS     length of each throughput run (default 20); each
                      latency run lasts half of it
  --clients N         concurrent clients of the throughput runs (default 8)
  --scale S           pgbench scale factor (default 10, about 160 MB)
  --thermocline PATH  thermocline binary (default:
                      ${CARGO_TARGET_DIR:-target}/release/thermocline, built
                      with 'cargo build --release --bin thermocline' if absent)
  --targets LIST      comma-separated, any of direct,thermocline,pgbouncer
                      (default direct,thermocline,pgbouncer)
  --modes LIST        comma-separated pgbench query modes, any of
                      simple,extended,prepared (default simple,extended,prepared)
  --keep-workdir      keep the temporary directory (logs, data) afterwards
  -h, --help          this help

Environment: PG_BIN (default /usr/lib/postgresql/15/bin), CARGO_TARGET_DIR.
Exit status: 0 when every measurement ran (whether or not a goal is met),
1 when something failed to run.
EOF
}

# ---------------------------------------------------------------- options ---

DURATION=20
CLIENTS=8
SCALE=10
THERMOCLINE_BIN=""
TARGETS="direct,thermocline,pgbouncer"
MODES="simple,extended,prepared"
KEEP_WORKDIR=0
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

need_value() {
    if [[ $# -lt 2 || -z "$2" ]]; then
        echo "proxy_bench: option $1 needs a value" >&2
        exit 1
    fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) need_value "$@"; DURATION="$2"; shift 2 ;;
        --duration=*) DURATION="${1#*=}"; shift ;;
        --clients) need_value "$@"; CLIENTS="$2"; shift 2 ;;
        --clients=*) CLIENTS="${1#*=}"; shift ;;
        --scale) need_value "$@"; SCALE="$2"; shift 2 ;;
        --scale=*) SCALE="${1#*=}"; shift ;;
        --thermocline) need_value "$@"; THERMOCLINE_BIN="$2"; shift 2 ;;
        --thermocline=*) THERMOCLINE_BIN="${1#*=}"; shift ;;
        --targets) need_value "$@"; TARGETS="$2"; shift 2 ;;
        --targets=*) TARGETS="${1#*=}"; shift ;;
        --modes) need_value "$@"; MODES="$2"; shift 2 ;;
        --modes=*) MODES="${1#*=}"; shift ;;
        --keep-workdir) KEEP_WORKDIR=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "proxy_bench: unknown argument: $1" >&2; usage >&2; exit 1 ;;
    esac
done

for pair in "duration:$DURATION" "clients:$CLIENTS" "scale:$SCALE"; do
    name="${pair%%:*}"
    value="${pair#*:}"
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "proxy_bench: --$name must be a positive integer (got '$value')" >&2
        exit 1
    fi
done
if ((DURATION < 2)); then
    echo "proxy_bench: --duration must be at least 2" >&2
    exit 1
fi
LAT_DURATION=$((DURATION / 2))
THREADS=$((CLIENTS < 2 ? CLIENTS : 2))
WARMUP=$((DURATION < 3 ? 1 : 3))

IFS=',' read -r -a TARGET_LIST <<<"$TARGETS"
IFS=',' read -r -a MODE_LIST <<<"$MODES"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in
        direct | thermocline | pgbouncer) ;;
        *) echo "proxy_bench: unknown target '$t' (direct, thermocline, pgbouncer)" >&2; exit 1 ;;
    esac
done
for m in "${MODE_LIST[@]}"; do
    case "$m" in
        simple | extended | prepared) ;;
        *) echo "proxy_bench: unknown mode '$m' (simple, extended, prepared)" >&2; exit 1 ;;
    esac
done
if [[ ${#TARGET_LIST[@]} -eq 0 || ${#MODE_LIST[@]} -eq 0 ]]; then
    echo "proxy_bench: --targets and --modes must not be empty" >&2
    exit 1
fi

has_target() {
    local t
    for t in "${TARGET_LIST[@]}"; do
        [[ "$t" == "$1" ]] && return 0
    done
    return 1
}

log() { printf '[proxy_bench] %s\n' "$*" >&2; }

# --------------------------------------------------------------- cleanup ---

WORK=""
PG_DATA=""
PG_STARTED=0
BOUNCER_PIDFILE=""
THERMO_PID=""
CHILD_PID=""
CLEANED=0

# shellcheck disable=SC2317  # called from traps
cleanup() {
    [[ $CLEANED -eq 1 ]] && return 0
    CLEANED=1
    set +e
    # Finish cleaning even if another signal comes, or if stderr has gone
    # (a pipe whose reader was interrupted too).
    trap '' INT TERM HUP PIPE
    if [[ -n "$CHILD_PID" ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    if [[ -n "$THERMO_PID" ]] && kill -0 "$THERMO_PID" 2>/dev/null; then
        kill -TERM "$THERMO_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$THERMO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$THERMO_PID" 2>/dev/null
        wait "$THERMO_PID" 2>/dev/null
    fi
    if [[ -n "$BOUNCER_PIDFILE" && -s "$BOUNCER_PIDFILE" ]]; then
        local bpid
        bpid="$(cat "$BOUNCER_PIDFILE" 2>/dev/null)"
        if [[ -n "$bpid" ]] && kill -0 "$bpid" 2>/dev/null; then
            kill -TERM "$bpid" 2>/dev/null
            for _ in $(seq 50); do
                kill -0 "$bpid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$bpid" 2>/dev/null
        fi
    fi
    if [[ $PG_STARTED -eq 1 && -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 20 stop >/dev/null 2>&1 ||
            as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop >/dev/null 2>&1
        if [[ -f "$PG_DATA/postmaster.pid" ]]; then
            local ppid
            ppid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)"
            [[ "$ppid" =~ ^[0-9]+$ ]] && kill -KILL "$ppid" 2>/dev/null
        fi
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ $KEEP_WORKDIR -eq 1 ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

# shellcheck disable=SC2317  # called from traps
on_signal() {
    trap '' INT TERM HUP PIPE
    set +e
    log "interrupted ($1), cleaning up"
    cleanup
    case "$1" in
        INT) exit 130 ;;
        TERM) exit 143 ;;
        *) exit 129 ;;
    esac
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

show_log() {
    # show_log FILE LABEL: the end of a log, to explain a failure.
    if [[ -s "$1" ]]; then
        echo "---- last lines of $2 ($1) ----" >&2
        tail -n 30 "$1" >&2
        echo "----" >&2
    fi
}

die() {
    log "error: $*"
    if [[ -n "$WORK" ]]; then
        show_log "$WORK/postgres.log" "postgres log"
        show_log "$WORK/pgbouncer/pgbouncer.log" "pgbouncer log"
        show_log "$WORK/thermocline.log" "thermocline log"
    fi
    exit 1
}

# ------------------------------------------------------------- utilities ---

if [[ $EUID -eq 0 ]]; then
    if ! getent passwd postgres >/dev/null; then
        echo "proxy_bench: running as root needs a 'postgres' user to run PostgreSQL and pgbouncer" >&2
        exit 1
    fi
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

USED_PORTS=" "
FREE_PORT=""
free_port() {
    # Sets FREE_PORT to a port in 20000-32767 (below Linux's ephemeral range)
    # that nothing listens on and that this script has not handed out yet.
    local p _
    for _ in $(seq 200); do
        p=$((20000 + (RANDOM % 12768)))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            FREE_PORT="$p"
            return 0
        fi
    done
    die "no free port found in 20000-32767"
}

wait_ready() {
    # wait_ready PORT NAME [PID]: until 'select 1' works on PORT (60 s at most).
    local port="$1" name="$2" pid="${3:-}" i
    for i in $(seq 600); do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited before accepting connections"
        fi
        if "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -v ON_ERROR_STOP=1 -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not accept connections on 127.0.0.1:$port within 60 s (after $i tries)"
}

percentile() {
    # percentile FILE P: nearest-rank percentile of a sorted one-column file.
    awk -v p="$2" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "-"; exit }
            r = p / 100 * NR
            i = int(r); if (i < r) i++
            if (i < 1) i = 1
            print v[i]
        }' "$1"
}

ratio() {
    # ratio A B: A/B with 3 decimals, or "-" if either is missing.
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) { print "-"; exit }
        printf "%.3f\n", a / b }'
}

diff_us() {
    # diff_us A B: A-B, signed, or "-".
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || a == "" || b == "") { print "-"; exit }
        printf "%+d\n", a - b }'
}

# run_pgbench OUTFILE ARGS...: pgbench in the background so that a signal is
# handled at once; returns pgbench's exit status.
run_pgbench() {
    local out="$1" rc=0
    shift
    "$PG_BIN/pgbench" "$@" >"$out" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# ---------------------------------------------------------- prerequisites ---

for b in postgres initdb pg_ctl pgbench psql; do
    [[ -x "$PG_BIN/$b" ]] || { echo "proxy_bench: $PG_BIN/$b not found (PostgreSQL 15 server packages)" >&2; exit 1; }
done

PGBOUNCER=""
if has_target pgbouncer; then
    PGBOUNCER="$(command -v pgbouncer || true)"
    [[ -z "$PGBOUNCER" && -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer
    if [[ -z "$PGBOUNCER" ]]; then
        if [[ $EUID -ne 0 ]]; then
            echo "proxy_bench: pgbouncer is not installed (apt-get install pgbouncer), or leave it out with --targets" >&2
            exit 1
        fi
        log "installing pgbouncer"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >/dev/null ||
                { echo "proxy_bench: could not install pgbouncer" >&2; exit 1; }
        fi
        # The package enables a system-wide service; this benchmark runs its own.
        PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
    fi
fi

if has_target thermocline; then
    if [[ -z "$THERMOCLINE_BIN" ]]; then
        target_dir="${CARGO_TARGET_DIR:-target}"
        [[ "$target_dir" = /* ]] || target_dir="$REPO_ROOT/$target_dir"
        THERMOCLINE_BIN="$target_dir/release/thermocline"
        if [[ ! -x "$THERMOCLINE_BIN" ]]; then
            log "building thermocline in release mode (the first build takes a while)"
            (cd "$REPO_ROOT" && cargo build --release --bin thermocline) ||
                { echo "proxy_bench: cargo build failed" >&2; exit 1; }
        fi
    fi
    [[ -x "$THERMOCLINE_BIN" ]] || { echo "proxy_bench: thermocline binary not found: $THERMOCLINE_BIN" >&2; exit 1; }
fi

# Every target is reached over TCP on 127.0.0.1 without TLS, as user postgres.
export PGSSLMODE=disable
unset PGOPTIONS PGSERVICE PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGCONNECT_TIMEOUT 2>/dev/null || true

# -------------------------------------------------------------- postgres ---

WORK="$(mktemp -d "${TMPDIR:-/tmp}/proxy_bench.XXXXXX")"
PG_DATA="$WORK/pgdata"
SOCK_DIR="$WORK/sock"
mkdir -p "$SOCK_DIR" "$WORK/pgbouncer" "$WORK/pgbench"
if [[ $EUID -eq 0 ]]; then
    chown -R postgres: "$WORK"
    chmod 755 "$WORK"
fi

free_port
PG_PORT="$FREE_PORT"
# Room for every client of every target, pgbouncer's pool and a few spares.
MAX_CONN=$((CLIENTS * 3 + 30))
((MAX_CONN < 100)) && MAX_CONN=100

log "initdb into $PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync \
    >"$WORK/initdb.log" 2>&1 || { show_log "$WORK/initdb.log" "initdb"; die "initdb failed"; }

cat >>"$PG_DATA/postgresql.conf" <<EOF

# proxy_bench
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = $MAX_CONN
shared_buffers = 512MB
# A throw-away cluster and a read-only workload: durability is not measured.
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF

log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
PG_STARTED=1
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/postgres.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start"
wait_ready "$PG_PORT" PostgreSQL
PG_VERSION="$("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'show server_version')"

log "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
    >"$WORK/pgbench-init.log" 2>&1 || { show_log "$WORK/pgbench-init.log" "pgbench -i"; die "pgbench -i failed"; }
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c 'vacuum analyze' -c 'checkpoint' >/dev/null

declare -A PORT=([direct]="$PG_PORT")

# ------------------------------------------------------------- pgbouncer ---

BOUNCER_VERSION=""
BOUNCER_PREPARED=0
if has_target pgbouncer; then
    BOUNCER_VERSION="$("$PGBOUNCER" --version 2>/dev/null | head -n 1 | awk '{print $2}')"
    # pgbouncer tracks protocol-level prepared statements in transaction
    # pooling from 1.21 on (max_prepared_statements); before, -M prepared
    # fails or runs statements on the wrong server connection.
    if printf '%s\n%s\n' "1.21" "$BOUNCER_VERSION" | sort -V -C; then
        BOUNCER_PREPARED=1
    fi
    free_port
    BPORT="$FREE_PORT"
    BDIR="$WORK/pgbouncer"
    BOUNCER_PIDFILE="$BDIR/pgbouncer.pid"
    {
        echo '"postgres" ""'
    } >"$BDIR/userlist.txt"
    cat >"$BDIR/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = trust
auth_file = $BDIR/userlist.txt
pool_mode = transaction
default_pool_size = $((CLIENTS + 2))
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $((CLIENTS + 50))
max_db_connections = 0
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits,options
logfile = $BDIR/pgbouncer.log
pidfile = $BOUNCER_PIDFILE
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 60
EOF
    if [[ $BOUNCER_PREPARED -eq 1 ]]; then
        echo "max_prepared_statements = 100" >>"$BDIR/pgbouncer.ini"
    fi
    [[ $EUID -eq 0 ]] && chown -R postgres: "$BDIR"
    log "starting pgbouncer $BOUNCER_VERSION on 127.0.0.1:$BPORT (transaction pooling)"
    (cd "$BDIR" && as_pg "$PGBOUNCER" -d "$BDIR/pgbouncer.ini") >"$WORK/pgbouncer-start.log" 2>&1 ||
        { show_log "$WORK/pgbouncer-start.log" "pgbouncer start"; die "pgbouncer did not start"; }
    for _ in $(seq 50); do
        [[ -s "$BOUNCER_PIDFILE" ]] && break
        sleep 0.1
    done
    [[ -s "$BOUNCER_PIDFILE" ]] || die "pgbouncer wrote no pid file"
    wait_ready "$BPORT" pgbouncer "$(cat "$BOUNCER_PIDFILE")"
    PORT[pgbouncer]="$BPORT"
fi

# ----------------------------------------------------------- thermocline ---

if has_target thermocline; then
    free_port
    TPORT="$FREE_PORT"
    log "starting thermocline ($THERMOCLINE_BIN) on 127.0.0.1:$TPORT"
    (cd "$WORK" && exec "$THERMOCLINE_BIN" serve \
        --listen "127.0.0.1:$TPORT" \
        --admin-listen 127.0.0.1:0 \
        --postgres-url "postgres://127.0.0.1:$PG_PORT/postgres?sslmode=disable") \
        </dev/null >"$WORK/thermocline.log" 2>&1 &
    THERMO_PID=$!
    wait_ready "$TPORT" thermocline "$THERMO_PID"
    PORT[thermocline]="$TPORT"
fi

# ----------------------------------------------------------- measurements ---

declare -A TPS=() P50=() P99=() NOTE=()
FAILED=0

mode_supported() {
    # mode_supported TARGET MODE
    [[ "$1" == pgbouncer && "$2" == prepared && $BOUNCER_PREPARED -eq 0 ]] && return 1
    return 0
}

measure() {
    local target="$1" mode="$2" port="${PORT[$1]}" key="$1/$2" out
    local common=(-n -S -M "$mode" -h 127.0.0.1 -p "$port" -U postgres)

    out="$WORK/pgbench/$target-$mode-throughput.out"
    log "$target $mode: throughput, $CLIENTS clients, ${DURATION}s"
    if run_pgbench "$out" "${common[@]}" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" postgres; then
        TPS[$key]="$(sed -nE 's/^tps = ([0-9.]+) \((without initial connection time|excluding connections establishing)\).*/\1/p' "$out" | head -n 1)"
        [[ -n "${TPS[$key]}" ]] || { TPS[$key]="-"; NOTE[$key]="no tps in pgbench output"; FAILED=1; }
    else
        TPS[$key]="-"
        NOTE[$key]="throughput run failed"
        FAILED=1
        show_log "$out" "pgbench ($target, $mode, throughput)"
    fi

    out="$WORK/pgbench/$target-$mode-latency.out"
    local prefix="$WORK/pgbench/$target-$mode-lat" samples="$WORK/pgbench/$target-$mode-lat.sorted"
    log "$target $mode: latency, 1 client, ${LAT_DURATION}s"
    if run_pgbench "$out" "${common[@]}" -c 1 -j 1 -T "$LAT_DURATION" \
        --log --log-prefix="$prefix" postgres; then
        # Per-transaction log: client transaction latency_us script epoch epoch_us.
        cat "$prefix".* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n >"$samples"
        if [[ -s "$samples" ]]; then
            P50[$key]="$(percentile "$samples" 50)"
            P99[$key]="$(percentile "$samples" 99)"
        else
            P50[$key]="-"; P99[$key]="-"
            NOTE[$key]="${NOTE[$key]:+${NOTE[$key]}; }empty latency log"
            FAILED=1
        fi
    else
        P50[$key]="-"; P99[$key]="-"
        NOTE[$key]="${NOTE[$key]:+${NOTE[$key]}; }latency run failed"
        FAILED=1
        show_log "$out" "pgbench ($target, $mode, latency)"
    fi
    rm -f "$prefix".*
}

# Warm each target (caches, pools, the relay's upstream connections) once.
for target in "${TARGET_LIST[@]}"; do
    log "$target: ${WARMUP}s warm-up"
    run_pgbench "$WORK/pgbench/$target-warmup.out" -n -S -M simple -h 127.0.0.1 \
        -p "${PORT[$target]}" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$WARMUP" postgres ||
        log "$target: warm-up failed (see the measurements below)"
done

# Mode by mode, every target in turn, so that drift on the machine spreads
# over all of them alike.
for mode in "${MODE_LIST[@]}"; do
    for target in "${TARGET_LIST[@]}"; do
        if mode_supported "$target" "$mode"; then
            measure "$target" "$mode"
        else
            TPS[$target/$mode]="-"; P50[$target/$mode]="-"; P99[$target/$mode]="-"
            NOTE[$target/$mode]="skipped: pgbouncer $BOUNCER_VERSION < 1.21 has no prepared statements in transaction pooling"
        fi
    done
done

# ----------------------------------------------------------------- report ---

echo
echo "thermocline proxy benchmark"
echo "  PostgreSQL $PG_VERSION, scale $SCALE, pgbench -S (select-only)"
echo "  throughput: $CLIENTS clients, $THREADS threads, ${DURATION}s; latency: 1 client, ${LAT_DURATION}s"
has_target pgbouncer && echo "  pgbouncer $BOUNCER_VERSION, pool_mode=transaction, default_pool_size=$((CLIENTS + 2))"
has_target thermocline && echo "  thermocline: $THERMOCLINE_BIN"
echo "  machine: $(nproc) CPUs, $(uname -sr); everything runs on this one machine"
echo

fmt='%-12s %-9s %11s %9s %8s %8s %10s %10s'
row() {
    # row TARGET MODE TPS RATIO P50 P99 ADD50 ADD99 [NOTE]
    # shellcheck disable=SC2059
    printf "$fmt" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8"
    if [[ -n "${9:-}" ]]; then printf '  %s' "$9"; fi
    printf '\n'
}
row target mode TPS vs_direct "p50 µs" "p99 µs" "+p50 µs" "+p99 µs"
row ------------ --------- ----------- --------- -------- -------- ---------- ----------
for mode in "${MODE_LIST[@]}"; do
    d="direct/$mode"
    for target in "${TARGET_LIST[@]}"; do
        k="$target/$mode"
        tps="${TPS[$k]}"
        [[ "$tps" != "-" ]] && tps="$(awk -v v="$tps" 'BEGIN { printf "%.0f", v }')"
        if [[ "$target" == direct ]]; then
            r="1.000"; a50=""; a99=""
            [[ "${TPS[$k]}" == "-" ]] && r="-"
        else
            r="$(ratio "${TPS[$k]}" "${TPS[$d]:--}")"
            a50="$(diff_us "${P50[$k]}" "${P50[$d]:--}")"
            a99="$(diff_us "${P99[$k]}" "${P99[$d]:--}")"
        fi
        row "$target" "$mode" "$tps" "$r" "${P50[$k]}" "${P99[$k]}" "$a50" "$a99" "${NOTE[$k]:-}"
    done
done

echo
goal_line() {
    # goal_line TEXT VALUE UNIT OP LIMIT: "TEXT = VALUE UNIT (goal OP LIMIT): met".
    local text="$1" value="${2#+}" unit="$3" op="$4" limit="$5" verdict
    if [[ "$value" == "-" ]]; then
        echo "$text = n/a (goal $op $limit)"
        return
    fi
    verdict="$(awk -v v="$value" -v l="$limit" -v op="$op" 'BEGIN {
        ok = (op == "≥") ? (v >= l) : (v < l)
        print ok ? "met" : "NOT met" }')"
    echo "$text = $value${unit:+ $unit} (goal $op $limit): $verdict"
}

if has_target thermocline; then
    for mode in "${MODE_LIST[@]}"; do
        k="thermocline/$mode"
        echo "[$mode]"
        if has_target pgbouncer; then
            goal_line "thermocline TPS / pgbouncer TPS" "$(ratio "${TPS[$k]}" "${TPS[pgbouncer/$mode]}")" "" "≥" 1.0
        fi
        if has_target direct; then
            goal_line "thermocline TPS / direct TPS" "$(ratio "${TPS[$k]}" "${TPS[direct/$mode]}")" "" "≥" 0.85
            goal_line "added p50" "$(diff_us "${P50[$k]}" "${P50[direct/$mode]}")" "µs" "<" 50
        fi
    done
else
    echo "thermocline was not measured (--targets $TARGETS): no goal checked"
    if has_target pgbouncer && has_target direct; then
        for mode in "${MODE_LIST[@]}"; do
            echo "[$mode] pgbouncer TPS / direct TPS = $(ratio "${TPS[pgbouncer/$mode]}" "${TPS[direct/$mode]}")"
        done
    fi
fi

if [[ $FAILED -ne 0 ]]; then
    log "some measurements failed (see above)"
    exit 1
fi
exit 0
