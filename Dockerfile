# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built in their own cached layer from the manifests
# alone; the runtime image is slim, runs as a non-root user and has a healthcheck.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY commands/Cargo.toml commands/
COPY queries/Cargo.toml queries/
COPY tests/harness/Cargo.toml tests/harness/
RUN mkdir -p src commands/src commands/benches queries/src tests/harness/src tests/it \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs commands/src/lib.rs queries/src/lib.rs tests/harness/src/lib.rs \
 && echo 'fn main() {}' > commands/benches/hot_path.rs && echo 'fn main() {}' > tests/it/main.rs \
 && cargo build --release --locked --bin match-stats
COPY . .
RUN touch src/main.rs src/lib.rs commands/src/lib.rs queries/src/lib.rs \
 && cargo build --release --locked --bin match-stats

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home match-stats
COPY --from=build /src/target/release/match-stats /usr/local/bin/match-stats
USER 10001
ENV HTTP_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["match-stats"]
