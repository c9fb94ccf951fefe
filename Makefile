# movie-recs: every command an operator or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8080
MODEL_REGISTRY ?= model_registry
WATCH_PORT ?= 9000
CARGO ?= cargo

.PHONY: help run test lint bench bench-http bench-train watch build deploy demo-registry clean-demo \
	test-cargo test-fuzz test-openapi fuzz test-arm64 soak docs-check observe drill test-drill

help: ## List the targets (with this make's settings: PORT=$(PORT), WATCH_PORT=$(WATCH_PORT), MODEL_REGISTRY=$(MODEL_REGISTRY))
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) \
		| sed -e 's/\$$(PORT)/$(PORT)/g' -e 's/\$$(WATCH_PORT)/$(WATCH_PORT)/g' -e 's|\$$(MODEL_REGISTRY)|$(MODEL_REGISTRY)|g' \
		| awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## Serve model_registry/ on 127.0.0.1:$(PORT) (all routes, /metrics included)
	$(CARGO) build --release -p recs --bin recs
	MODEL_REGISTRY=$(MODEL_REGISTRY) PORT=$(PORT) ./target/release/recs serve

test: test-cargo test-fuzz test-openapi test-drill docs-check test-arm64 ## Unit, property, handler, end-to-end and fault tests, every fuzz target for 5 s, the OpenAPI check, every alert drill, the docs' local commands, and the serving, registry and training tests on aarch64 under qemu (../shared required under CI=true)

test-cargo: ## cargo test: unit, property (proptest), handler and end-to-end tests
	$(CARGO) test --workspace --no-fail-fast

FUZZ_SHORT ?= 5
FUZZ_LONG ?= 300

test-fuzz: ## Every fuzz target for 5 s (FUZZ_SHORT; cargo fuzz, installed when absent)
	bash scripts/fuzz.sh $(FUZZ_SHORT)

fuzz: ## Every fuzz target for 300 s (FUZZ_LONG); prints cases run and cases/s per target
	bash scripts/fuzz.sh $(FUZZ_LONG)

test-openapi: ## schemathesis (installed from PyPI when absent) against a real `recs serve`
	bash scripts/openapi_check.sh

soak: ## One million requests (users, errors, switches) against the local server; RSS after warm-up must grow < 5 %
	bash scripts/soak.sh

test-arm64: ## Build for aarch64 (Debian cross gcc) and run the core/serve/train/drift/telemetry and end-to-end tests under qemu-user
	bash scripts/test_arm64.sh

lint: ## rustfmt, clippy (-D warnings), what each function links (scripts/check_deps.sh), and the infra checks
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash scripts/check_deps.sh
	bash infra/lint.sh

bench: ## Recommend p50/p99 vs the bandwidth floor; S3 cold start and switch latency; drift events/s; HNSW recall@10 and speed-up (10^6 items: ANN_BENCH_1M=1); filter, explain and batch costs
	$(CARGO) bench -p recs-serve --bench recommend
	$(CARGO) bench -p recs --bench s3_cold_start
	$(CARGO) bench -p recs --bench drift
	$(CARGO) bench -p recs-core --bench ann
	$(CARGO) bench -p recs-core --bench catalog

watch: ## Run the Lambda functions under `cargo lambda watch` on 127.0.0.1:$(WATCH_PORT)
	@command -v cargo-lambda >/dev/null || { echo "installing cargo-lambda from PyPI"; pip install --quiet cargo-lambda; }
	@command -v cargo-lambda >/dev/null || { echo "cargo-lambda is not on PATH after pip install; add pip's bin dir to PATH" >&2; exit 1; }
	$(CARGO) lambda watch --invoke-address 127.0.0.1 --invoke-port $(WATCH_PORT)

# Every function infra/template.yaml deploys (make lint checks the two lists agree).
FUNCTIONS := recommend health switch drift retrain batch

build: ## Lambda binaries for arm64, every function infra/template.yaml deploys (target/lambda/<function>/bootstrap; sam deploy zips each folder)
	@command -v cargo-lambda >/dev/null || pip install --quiet cargo-lambda ziglang
	rustup target add aarch64-unknown-linux-gnu
	# One build per function: cargo unifies features across the packages of one build,
	# so building them together would link recommend's HNSW index into health and switch.
	for f in $(FUNCTIONS); do $(CARGO) lambda build --release --arm64 -p $$f || exit 1; done

deploy: build ## sam deploy --guided (needs AWS credentials and the SAM CLI; not run in CI)
	@command -v sam >/dev/null || { echo "install the AWS SAM CLI: pip install aws-sam-cli" >&2; exit 1; }
	cd infra && sam deploy --guided

demo-registry: ## Rebuild model_registry/: v0.1 and v0.2 (ALS, other hyper-parameters) and v_popularity from `recs gen-data` ratings
	rm -rf $(MODEL_REGISTRY) demo-data
	$(CARGO) build --release -p recs --bin recs
	./target/release/recs gen-data --out demo-data
	./target/release/recs split --ratings demo-data/ratings.csv --method holdout --seed 42 --out demo-data/split > demo-data/split.json
	RECS_SIMD=portable ./target/release/recs train --ratings demo-data/split/train.tsv --test demo-data/split/test.tsv \
		--registry $(MODEL_REGISTRY) --version v0.1 --seed 42 \
		--factors 128 --regularization 60 --alpha 12 --confidence alpha --reg-exponent 0 --iterations 25 > demo-data/train.json
	cp demo-data/movie_titles.csv $(MODEL_REGISTRY)/movie_titles.csv
	./target/release/recs verify --registry $(MODEL_REGISTRY) v0.1
	./target/release/recs verify --registry $(MODEL_REGISTRY) v_popularity
	# A second, smaller ALS model (other hyper-parameters), so switch and rollback have somewhere to go;
	# --no-gate: it is deliberately the lighter model, a little below v0.1 on NDCG@10.
	RECS_SIMD=portable ./target/release/recs train --ratings demo-data/split/train.tsv --test demo-data/split/test.tsv \
		--registry $(MODEL_REGISTRY) --version v0.2 --factors 32 --regularization 20 --alpha 8 --iterations 15 --seed 7 \
		--confidence alpha --reg-exponent 0 \
		--no-popularity --no-gate > demo-data/train-v0.2.json
	# Drift baselines from the synthetic events' own distribution (recs drift gen-events, as
	# the drills and the runbook's rehearsals generate them): an unshifted window is quiet and
	# a --shift one fires (gen-data's ratings follow another rating distribution).
	./target/release/recs drift gen-events --registry $(MODEL_REGISTRY) --seed 11 --ratings-csv demo-data/baseline-events.csv
	for v in v0.1 v_popularity v0.2; do \
		./target/release/recs drift baseline --ratings demo-data/baseline-events.csv --registry $(MODEL_REGISTRY) --version $$v || exit 1; \
	done
	./target/release/recs verify --registry $(MODEL_REGISTRY) v0.2
	# latest.txt -> v0.2; active.json (v0.1, pinned when v0.2 was published) is not tracked,
	# so a fresh checkout serves v0.2.
	./target/release/recs verify --registry $(MODEL_REGISTRY)
	@du -sh $(MODEL_REGISTRY)

bench-http: ## recs serve under wrk load: RSS after sustained /recommend traffic, /recommend vs /healthz requests per second (scripts/bench_http.sh)
	bash scripts/bench_http.sh

bench-train: ## Train/eval benchmark vs implicit 0.7.3 (ml-100k NDCG, ml-1m CPU time), ratios; needs ../shared
	bash scripts/bench_train.sh

# Free ports by default (CI, or beside `make run` / `make observe`); DOCS_PORTS="--port 8080 --prom-port 9090" for the documented ones.
DOCS_PORTS ?= --port 0 --prom-port 0

docs-check: ## Run every local command of README.md and docs/*.md (fenced `bash local` blocks) against recs serve + Prometheus
	$(CARGO) build -p recs --bin recs
	@bash scripts/drill_prereqs.sh
	python3 scripts/doc_commands.py --recs target/debug/recs $(DOCS_PORTS)

ALERT ?= all
DRILL_JOBS ?= 3

drill: ## Drill ALERT (default all) on both builds: recs serve + Prometheus, and the Lambda handlers + CloudWatch evaluation
	$(CARGO) build -p recs --bin recs
	@bash scripts/drill_prereqs.sh
	# the expected failures (injected 5xx, corrupt loads) would log thousands of lines: RUST_LOG=info to see them
	RUST_LOG=$${RUST_LOG:-off} RECS_FAULT_INJECTION=1 ./target/debug/recs drill $(ALERT) --jobs $(DRILL_JOBS)

test-drill: ## The CloudWatch evaluator's own checks, then every alert drill with short windows
	python3 infra/tests/test_cw_eval.py
	$(MAKE) drill ALERT=all

observe: ## Prometheus (and Alertmanager when installed) scraping recs serve on $(PORT) with the generated rules; Ctrl-C stops
	PORT=$(PORT) bash infra/observe.sh
