# Two entry points for a fresh clone; both set up .venv themselves.
.PHONY: demo test lint setup

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/pointtrack demo $(ARGS)

test:
	@POINTTRACK_SETUP_TEST_TOOLS=1 bash scripts/setup.sh
	@.venv/bin/ruff check src tests benchmarks
	@bash scripts/test.sh $(ARGS)

lint: setup
	@.venv/bin/ruff check src tests benchmarks
