# The two commands of the README: `make demo` and `make test`. Both install what is missing.

.PHONY: setup demo test lint bench bench-quick

setup:
	@tools/setup.sh

demo: setup
	@tools/demo/run.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: setup lint
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: setup
	.venv/bin/python -m tools.bench

bench-quick: setup
	.venv/bin/python -m tools.bench --quick
