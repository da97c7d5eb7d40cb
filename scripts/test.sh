#!/usr/bin/env bash
# test.sh runs every check and every test of presenced (`make test`, CI):
# gofmt, go vet, staticcheck, go mod tidy, then the whole test suite with the
# race detector against real Prosody, ejabberd and PostgreSQL servers that it
# starts on loopback in a temporary folder and stops at the end.
#
# Environment: PRESENCED_KEEP_TESTENV=1 keeps the servers' folder (configs,
# data, logs) for inspection; the servers are stopped all the same.
# PRESENCED_ARTIFACTS names the folder that receives what a person should
# look at (the browser test's screenshots); by default a new temporary
# folder, kept and printed at the end.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

readonly STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

step() { printf '\n==> %s\n' "$*"; }

step gofmt
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
	printf '%s\n' "$unformatted"
	die "gofmt -l lists the files above: run gofmt -w on them"
fi

step "go vet"
go vet ./...

step staticcheck
go run "$STATICCHECK" ./...

step "go mod tidy"
# Compare before and after rather than against git's index, so that this
# works outside a git work tree and does not flag go.mod edits not yet staged.
tidy_dir=$(mktemp -d)
cp go.mod "$tidy_dir/go.mod"
[[ -f go.sum ]] && cp go.sum "$tidy_dir/go.sum"
go mod tidy
tidy_ok=1
diff -u "$tidy_dir/go.mod" go.mod || tidy_ok=0
if [[ -f go.sum ]]; then
	diff -u "$tidy_dir/go.sum" go.sum >/dev/null 2>&1 || {
		diff -u "$tidy_dir/go.sum" go.sum | head -40
		tidy_ok=0
	}
fi
rm -rf "$tidy_dir"
((tidy_ok)) || die "go mod tidy changed go.mod or go.sum (left changed): commit the result"

step "starting test servers"
envdir=$(mktemp -d "${TMPDIR:-/tmp}/presenced-test.XXXXXX")
PRESENCED_ARTIFACTS=${PRESENCED_ARTIFACTS:-$(mktemp -d "${TMPDIR:-/tmp}/presenced-artifacts.XXXXXX")}
mkdir -p "$PRESENCED_ARTIFACTS"
PRESENCED_ARTIFACTS=$(readlink -f "$PRESENCED_ARTIFACTS") # go test runs in each package's folder
export PRESENCED_ARTIFACTS
# shellcheck disable=SC2317 # run by the traps below
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	step "stopping test servers"
	if ! scripts/testenv.sh stop "$envdir"; then
		((rc)) || rc=1
	fi
	if [[ ${PRESENCED_KEEP_TESTENV:-} == 1 ]]; then
		log "kept $envdir"
	else
		rm -rf "$envdir"
	fi
	log "test artefacts (browser screenshots: look at them): $PRESENCED_ARTIFACTS"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# auto: run beside another test environment (a developer's) if there is one.
PRESENCED_TESTENV_PORT_OFFSET=${PRESENCED_TESTENV_PORT_OFFSET:-auto} scripts/testenv.sh start "$envdir"
export PRESENCED_TESTENV=$envdir/testenv.json
PRESENCED_TEST_POSTGRES=$(sed -n 's/^{"postgres":"\([^"]*\)".*/\1/p' "$PRESENCED_TESTENV")
[[ -n $PRESENCED_TEST_POSTGRES ]] || die "no postgres DSN in $PRESENCED_TESTENV"
export PRESENCED_TEST_POSTGRES

step "chromium (the browser test)"
# Headless Chromium drives the /list page in cmd/presenced's end-to-end
# tests, which fail without it.
ensure_packages chromium:/usr/bin/chromium

step "go build"
go build ./...

step "go test -race ./..."
rc=0
go test -race -count=1 -timeout 15m ./... || rc=$?
if ((rc != 0)); then
	log "go test failed (exit $rc); server logs follow"
	tail_logs "$envdir"/*.log "$envdir"/ejabberd/logs/*.log
fi
exit "$rc"
