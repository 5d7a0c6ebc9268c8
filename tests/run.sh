#!/usr/bin/env bash
# Runs thermocline's whole test suite. Installs what the tests need first,
# when it is missing: PostgreSQL (server and psql), openssl, and the real
# clients the suite drives (psycopg, asyncpg, node-postgres, pgjdbc); the
# Helm chart check installs helm, PyYAML and hadolint for itself.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v psql >/dev/null || missing+=(postgresql-client)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y "${missing[@]}" >/dev/null 2>&1 ||
        { as_root apt-get update >/dev/null && as_root apt-get install -y "${missing[@]}" >/dev/null; }
fi

bash tests/clients/install.sh

cargo test "$@"

# The Helm chart and the Dockerfile: rendered, linted and cross-checked.
bash tests/helm/check.sh
