# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built in their own cached layer from the manifests
# alone (stub sources for every target the manifests declare); the runtime image is
# Debian slim with the binary, a non-root user and a healthcheck.
#   make docker-build   # docker build -t match-stats:<version> .
#   make docker-run     # the image against NATS/Redis on the host (make run's servers)
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY commands/Cargo.toml commands/
COPY queries/Cargo.toml queries/
COPY tests/harness/Cargo.toml tests/harness/
# async-nats with one fix of ours (vendor/README.md), a dependency like the others.
COPY vendor/ vendor/
RUN mkdir -p src benches commands/src commands/benches queries/src tests/harness/src tests/it tests/serial \
 && for f in src/main.rs benches/recovery.rs benches/load.rs benches/live_baselines.rs benches/catchup_baselines.rs benches/aggregates.rs benches/sync_cost.rs benches/streams.rs benches/history.rs commands/benches/hot_path.rs tests/it/main.rs tests/serial/main.rs; do echo 'fn main() {}' > "$f"; done \
 && touch src/lib.rs commands/src/lib.rs queries/src/lib.rs tests/harness/src/lib.rs \
 && cargo build --release --locked --bin match-stats
COPY . .
# The commit for match_stats_build_info (.git is not in the build context).
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=$GIT_COMMIT
# (newer mtimes than the stubs, so cargo rebuilds the workspace crates)
RUN touch src/main.rs src/lib.rs commands/src/lib.rs queries/src/lib.rs \
 && cargo build --release --locked --bin match-stats

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 match-stats \
 && useradd --system --uid 10001 --gid 10001 --no-create-home match-stats
COPY --from=build /src/target/release/match-stats /usr/local/bin/match-stats
USER 10001:10001
ENV HTTP_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["match-stats"]
