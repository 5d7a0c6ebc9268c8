# thermocline's container image.
#
#   docker build -t thermocline .
#   docker run --rm -p 6432:6432 -p 9187:9187 \
#     -e THERMOCLINE_POSTGRES_URL="postgres://db.internal:5432/app?sslmode=require" \
#     thermocline
#
# The image sets THERMOCLINE_LISTEN and THERMOCLINE_ADMIN_LISTEN so both
# listeners are reachable from outside the container. Environment variables
# win over the config file, so change those two with `-e`, not in the file.
# For tiered tables, give the lake a volume:
#   -v thermocline-lake:/var/lib/thermocline \
#   -e THERMOCLINE_LAKE_WAREHOUSE=/var/lib/thermocline/lake
# The image has no PostgreSQL binaries: `serve --embedded-postgres` does not
# work in it.

FROM rust:1-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Dependencies first, built against stub sources, so that a change under src/
# rebuilds only thermocline itself. Cargo.toml names src/lib.rs, src/main.rs
# and the [[bench]] benches/relay.rs; the manifest loads only if each exists.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > benches/relay.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin thermocline \
    && rm -rf src benches

COPY src ./src
COPY benches ./benches
# COPY keeps the files' own modification times, which can be older than the
# stub build: drop the stub's fingerprints so Cargo cannot take it for current,
# and check that the binary is the real one.
RUN rm -rf target/release/.fingerprint/thermocline-* \
    && cargo build --release --locked --bin thermocline \
    && ./target/release/thermocline --version | grep -q '^thermocline '

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="thermocline" \
      org.opencontainers.image.description="A PostgreSQL-wire server that makes a table whole across Postgres (recent rows) and Apache Iceberg (history)" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: verify-full toward Postgres with the system roots.
# tzdata: zone names for TimeZone. Versions come from bookworm's security
# updates at build time rather than pins, which would break with each update.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 thermocline \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/thermocline --shell /usr/sbin/nologin thermocline \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/thermocline

COPY --from=builder /src/target/release/thermocline /usr/local/bin/thermocline

USER 10001:10001
WORKDIR /var/lib/thermocline
ENV THERMOCLINE_LISTEN=0.0.0.0:6432 \
    THERMOCLINE_ADMIN_LISTEN=0.0.0.0:9187
# 6432: PostgreSQL clients. 9187: /health and /ready.
EXPOSE 6432 9187
ENTRYPOINT ["thermocline"]
CMD ["serve"]
