# presenced: `make run` tries it locally, `make test` runs every check and test.
.PHONY: run test build

run:
	scripts/run.sh

test:
	scripts/test.sh

build:
	go build ./cmd/presenced
