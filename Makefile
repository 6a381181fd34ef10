# agentledger: every habit in one place. `make help` lists the targets.
.DEFAULT_GOAL := help
PY ?= python3

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: ## install with dev tools (editable), at the versions CI tests
	$(PY) -m pip install -e '.[dev]' -c constraints.txt

constraints: ## re-pin constraints.txt from a fresh dev install (keeps existing pins; rm it first to upgrade all)
	rm -rf .venv-constraints && $(PY) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q -e '.[dev]' $$(test -f constraints.txt && echo -c constraints.txt)
	{ head -2 constraints.txt; .venv-constraints/bin/pip freeze --exclude-editable | grep -v '^agentledger'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-constraints

lint: ## ruff, mypy, import-linter
	ruff check . && ruff format --check . && bash .ci/typecheck && lint-imports

fmt: ## format the code
	ruff check --fix . && ruff format .

test: ## the whole suite (starts its own nats-server and PostgreSQL)
	pytest -q

bench: ## end-to-end benchmark (prints figures; see BENCHMARKS.md)
	$(PY) bench/e2e.py

bench-replay: ## replay, export and import speed on SQLite and PostgreSQL
	$(PY) bench/replay.py

bench-fuzz: ## 10,000 hostile task messages through a real worker (each: one clear outcome)
	$(PY) bench/fuzz.py

bench-graph: ## durable graph step overhead and an 8-way agent fan-out, against plain pydantic-graph
	$(PY) bench/graph.py

bench-chaos: ## 1,000 tasks on PostgreSQL through worker kills and NATS/PostgreSQL restarts
	$(PY) bench/chaos.py

bench-dashboard: ## the dashboard's live latency at 50 runs/s in headless chromium, against the relay alone
	$(PY) bench/dashboard.py

demo: ## the one-command demo on the embedded defaults
	agentledger demo

schema: ## regenerate the committed contract (JSON schemas + AsyncAPI)
	agentledger schema --out contracts

ci: ## what CI runs, from a fresh venv
	bash .ci/run

.PHONY: help install constraints lint fmt test bench bench-replay bench-fuzz bench-graph bench-chaos bench-dashboard demo schema ci
