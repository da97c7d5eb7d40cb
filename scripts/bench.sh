#!/usr/bin/env bash
# bench.sh is `make bench`: it builds presenced from the working tree and
# runs the load harness (bench/README.md) on this machine: the component
# alone on SQLite and on PostgreSQL, the start-up and memory test with a
# million subscriptions, and presenced through Prosody and through ejabberd
# against the null component. It installs what the harness needs if it is
# missing (Debian packages, so as root). About ten minutes.
#
# Environment: BASELINE=REV also builds that git revision and measures the
# component-alone runs of both side by side (ratios against REV), e.g.
# BASELINE=aa9c0a7 make bench. BENCH_OUT=DIR keeps the JSON figures there.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_packages prosody:/usr/bin/prosody ejabberd:/usr/sbin/ejabberdctl \
	postgresql-15:/usr/lib/postgresql/15/bin/postgres

work=$(mktemp -d)
trap 'git worktree remove --force "$work/baseline" 2>/dev/null || true; rm -rf "$work"' EXIT
out=${BENCH_OUT:-$work}
mkdir -p "$out"

log "building presenced from the working tree"
go build -o "$work/presenced" ./cmd/presenced
builds=$work/presenced
if [[ -n ${BASELINE:-} ]]; then
	log "building the baseline $BASELINE"
	git worktree add --detach "$work/baseline" "$BASELINE" >/dev/null
	(cd "$work/baseline" && go build -o "$work/presenced-baseline" ./cmd/presenced)
	builds=$work/presenced-baseline,$work/presenced
fi

run() {
	printf '\n==> go run ./bench %s\n' "$*"
	go run ./bench "$@"
}
run alone -presenced "$builds" -json "$out/alone-sqlite.json"
run alone -presenced "$builds" -store postgres -json "$out/alone-postgres.json"
run alone -presenced "$builds" -million -pairs 1 -json "$out/alone-million.json"
run server -xmpp prosody -presenced "$work/presenced" -json "$out/server-prosody.json"
run server -xmpp ejabberd -presenced "$work/presenced" -json "$out/server-ejabberd.json"
if [[ -n ${BENCH_OUT:-} ]]; then
	log "figures in $out"
fi
