# presenced: `make run` tries it locally, `make test` runs every check and test.
.PHONY: run test bench build

run:
	scripts/run.sh

test:
	scripts/test.sh

# The load harness (bench/README.md); BASELINE=REV compares with a revision.
bench:
	scripts/bench.sh

build:
	go build ./cmd/presenced
