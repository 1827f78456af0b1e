# The two commands of the README: `make demo` and `make test`. Both install what is missing.

.PHONY: setup demo test lint bench bench-quick conformance

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

# pjdfstest and fsx are third-party code, built by hand outside the repository
# (tools/conformance/README.md says how); this runs them against a read-write mount.
PJDFSTEST ?= /tmp/pjdfstest
FSX ?= /tmp/fsx/fsx
conformance: setup
	.venv/bin/python -m tools.conformance --pjdfstest $(PJDFSTEST) --fsx $(FSX) --fsx-ops 100000 --json conformance.json
