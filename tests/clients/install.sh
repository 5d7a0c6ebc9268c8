#!/usr/bin/env bash
# Installs the real PostgreSQL clients that tests/clients/run.sh drives:
#   psql      Debian's postgresql-client (/usr/bin/psql)
#   psycopg   psycopg 3 (binary wheel) in a Python venv
#   asyncpg   asyncpg in the same venv
#   node-pg   node-postgres (pg), from package-lock.json, with `npm ci`
#   pgjdbc    Debian's libpostgresql-jdbc-java (/usr/share/java/postgresql.jar)
#   s3s-fs    an S3-compatible server (crates.io, built with cargo install)
#
# Idempotent, and quick when everything is already in place: each part keeps a
# stamp (a hash of what it was installed from) and is redone only when that
# changes or the installed files are gone.
#
# Meant for Debian 12 as root, with access to Debian's packages, PyPI and the
# npm registry. Tools go to ${THERMOCLINE_TOOLS:-$HOME/.cache/thermocline-tools}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${THERMOCLINE_TOOLS:-$HOME/.cache/thermocline-tools}"
JDBC_JAR=/usr/share/java/postgresql.jar

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: $*"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    log "apt-get install $*"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; then
        if [ "$APT_UPDATED" = 0 ]; then
            log "apt-get install failed; running apt-get update and retrying"
            "${sudo[@]}" apt-get update -q >&2
            APT_UPDATED=1
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
        else
            return 1
        fi
    fi
}

mkdir -p "$TOOLS"

# --- system packages --------------------------------------------------------
want=()
command -v psql >/dev/null || want+=(postgresql-client)
[ -f "$JDBC_JAR" ] || want+=(libpostgresql-jdbc-java)
[ -d /usr/share/zoneinfo/Europe ] || want+=(tzdata)
command -v javac >/dev/null || want+=(openjdk-17-jdk-headless)
command -v node >/dev/null || want+=(nodejs)
command -v npm >/dev/null || want+=(npm)
command -v python3 >/dev/null || want+=(python3)
if [ "${#want[@]}" -gt 0 ]; then
    apt_install "${want[@]}"
fi

# --- Python venv: psycopg + asyncpg -----------------------------------------
VENV="$TOOLS/venv"
py_stamp="$(hash_of "$HERE/requirements.txt")"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.thermocline-stamp" 2>/dev/null)" = "$py_stamp" ] \
    && "$VENV/bin/python" -c 'import psycopg, asyncpg, pyiceberg' 2>/dev/null; then
    :
else
    log "creating Python venv in $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt_install python3-venv
        /usr/bin/python3 -m venv "$VENV" >&2
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt" >&2
    "$VENV/bin/python" -c 'import psycopg, asyncpg, pyiceberg' || die "psycopg/asyncpg do not import after install"
    printf '%s\n' "$py_stamp" > "$VENV/.thermocline-stamp"
fi

# --- node-postgres ----------------------------------------------------------
NODE_DIR="$HERE/node"
node_stamp="$(hash_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
if [ -f "$NODE_DIR/node_modules/pg/package.json" ] \
    && [ "$(cat "$NODE_DIR/node_modules/.thermocline-stamp" 2>/dev/null)" = "$node_stamp" ]; then
    :
else
    log "npm ci in $NODE_DIR"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s\n' "$node_stamp" > "$NODE_DIR/node_modules/.thermocline-stamp"
fi

# --- pgjdbc client ----------------------------------------------------------
JAVA_OUT="$TOOLS/java"
java_stamp="$(hash_of "$HERE/PgjdbcClient.java" "$HERE/tiered/TieredPgjdbc.java" "$JDBC_JAR")"
if [ -f "$JAVA_OUT/PgjdbcClient.class" ] && [ -f "$JAVA_OUT/TieredPgjdbc.class" ] && [ "$(cat "$JAVA_OUT/.thermocline-stamp" 2>/dev/null)" = "$java_stamp" ]; then
    :
else
    log "compiling PgjdbcClient.java into $JAVA_OUT"
    rm -rf "$JAVA_OUT"
    mkdir -p "$JAVA_OUT"
    javac -nowarn -encoding UTF-8 -cp "$JDBC_JAR" -d "$JAVA_OUT" "$HERE/PgjdbcClient.java" "$HERE/tiered/TieredPgjdbc.java" >&2
    printf '%s\n' "$java_stamp" > "$JAVA_OUT/.thermocline-stamp"
fi

# --- s3s-fs: an S3-compatible server over a local directory ----------------
# The lake-in-S3 test writes and reads the lake through it.
S3S_VERSION=0.14.1
S3S_DIR="$TOOLS/s3s"
if [ -x "$S3S_DIR/bin/s3s-fs" ] && [ "$(cat "$S3S_DIR/.thermocline-stamp" 2>/dev/null)" = "$S3S_VERSION" ]; then
    :
else
    command -v cargo >/dev/null || die "cargo not found; it builds s3s-fs"
    log "building s3s-fs $S3S_VERSION into $S3S_DIR (cargo install)"
    cargo install "s3s-fs@$S3S_VERSION" --locked --features binary --root "$S3S_DIR" >&2
    printf '%s\n' "$S3S_VERSION" > "$S3S_DIR/.thermocline-stamp"
fi

log "clients ready in $TOOLS and $NODE_DIR/node_modules"
