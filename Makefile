# rekognition-batch: `make demo` runs the job on the local stack; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-fast lint bench bench-scale local-stack clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## The job on the local stack: start moto's S3 and our Rekognition endpoint, seed the samples,
## run the job into ./demo-output, print the summary and a DuckDB query, stop the servers.
## MORE=1: also ppe, custom_labels (the run starts and stops the local model), a moderation adapter
## and user_search with the face users of s3://rekbatch-demo/people/.
demo: setup
	$(BIN)/python scripts/demo.py --output demo-output $(if $(MORE),--more-analyses)

test: setup
	$(BIN)/pytest

## The tests that start no server (all but those marked integration), in under a minute: a tenth of
## the Hypothesis examples; a test that starts a server, a process or a Dask cluster fails.
test-fast: setup
	$(BIN)/pytest -m "not integration" --hypothesis-profile=fast --forbid-servers

lint: setup
	$(BIN)/ruff check batch local_stack tests scripts
	$(BIN)/mypy --warn-unreachable batch local_stack

bench: setup
	$(BIN)/python scripts/bench_endpoint.py
	$(BIN)/python scripts/bench_job.py
	$(BIN)/python scripts/bench_regions.py
	$(BIN)/python scripts/bench_listing.py
	$(BIN)/python scripts/bench_start.py --repeat 3

## The driver's planning path at 100k, 1M and 10M keys, after 1 and 365 committed runs (minutes, and
## tens of GB of temp files at 10M; not part of `make test`): SIZES=100k,1M for a quick look.
SIZES ?= 100k,1M,10M
bench-scale: setup
	$(BIN)/python scripts/bench_scale.py --sizes $(SIZES)

## Both local servers with the sample bucket, until Ctrl-C; prints the variables to export.
local-stack: setup
	$(BIN)/python -m local_stack stack --seed-bucket rekbatch-demo --seed-prefix photos/

clean:
	rm -rf demo-output .pytest_cache .hypothesis
