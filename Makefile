# The two commands of the README: `make demo` and `make test`. Both install what is missing.

.PHONY: setup demo test lint bench bench-quick fuzz conformance

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

# Damaged metadata of real images through each driver (tools/fuzz): no traceback, no hang,
# no write; both drivers run, either failing fails. Failing images are kept (paths printed).
FUZZ = .venv/bin/python -m tools.fuzz --count 10000 --jobs 2 --progress
fuzz: setup
	$(FUZZ) --driver ext2; status=$$?; $(FUZZ) --driver zfs && exit $$status

# pjdfstest and fsx are third-party code, built by hand outside the repository
# (tools/conformance/README.md says how); this runs them against a read-write mount.
PJDFSTEST ?= /tmp/pjdfstest
FSX ?= /tmp/fsx/fsx
conformance: setup
	.venv/bin/python -m tools.conformance --pjdfstest $(PJDFSTEST) --fsx $(FSX) --fsx-ops 100000 --json conformance.json
