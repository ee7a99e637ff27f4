.PHONY: run test lint type format check
VENV := .venv/bin

run:
	bash scripts/bootstrap.sh && $(VENV)/siamkit train

test:
	bash scripts/system-deps.sh && bash scripts/bootstrap.sh && $(VENV)/python -m pytest -q

lint:
	$(VENV)/ruff check src tests benchmarks && $(VENV)/ruff format --check src tests benchmarks

format:
	$(VENV)/ruff format src tests benchmarks && $(VENV)/ruff check --fix src tests benchmarks

type:
	$(VENV)/mypy

check: lint type test
