# Second Opinion services. `make run` shows the system working; `make test` proves it.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
SO := uv run second-opinion
ORDERS ?= 400
SEED ?= 7

.PHONY: help install run up down status test test-unit test-service test-integration test-e2e scenarios scenarios-sqlite chaos bench contracts lint

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install: ## install Python deps (uv), Java and Maven if missing, and the Kafka jars
	@bash deploy/bootstrap.sh
	@$(SO) kafka fetch

run: install ## the main job: stack on embedded SQLite, a synthetic day of traffic, a summary
	@$(SO) up --database sqlite
	@$(SO) simulate --orders $(ORDERS) --seed $(SEED)

up: install ## start broker, database, migrations and the three services (DATABASE=sqlite|postgres)
	@$(SO) up --database $(or $(DATABASE),sqlite)

down: ## stop everything `make up` started, and the tests' broker
	@$(SO) down
	@uv run python -m tests.support.broker stop

status: ## what is running
	@$(SO) status

test: install ## unit, service and integration tests, and every scenario on the real stack (PostgreSQL)
	@uv run pytest --durations=15

test-unit: ## fast tests, no broker or database server
	@uv run pytest tests/unit tests/service

test-integration: install ## tests on the real broker and database
	@uv run pytest tests/integration tests/scenarios

test-e2e: install ## the console in headless Chromium and the case API fuzzed by Schemathesis, on the real stack (PostgreSQL)
	@uv run pytest tests/e2e

scenarios-sqlite: install ## the scenarios with the services on SQLite
	@TEST_DATABASE=sqlite uv run pytest tests/scenarios

chaos: install ## a soak: 1000 orders under kill -9 and replica churn; report in .run/chaos/ (CHAOS_ARGS="--orders 300")
	@uv run python -m tests.faults.chaos $(CHAOS_ARGS)

bench: install ## throughput and latency on the real stack (PostgreSQL and SQLite), results in bench/results/ (BENCH_ARGS="--events 300 --rounds 1 --no-profile")
	@uv run python -m bench $(BENCH_ARGS)

contracts: ## regenerate the published contract (schemas/json/*.schema.json, schemas/asyncapi.json) from schemas/v1.py
	@$(SO) contracts generate

lint:
	@uv run ruff check services schemas tests migrations
