#!/usr/bin/env bash
# run.sh runs presenced locally for a try-out (`make run`): it installs
# Prosody from Debian if needed, starts a throwaway Prosody on 127.0.0.1 with
# two demo accounts (alice@localhost, bob@localhost), builds presenced and
# runs it in the foreground. Ctrl-C stops presenced and Prosody and deletes
# everything they wrote.
#
#   scripts/run.sh [-p|--port C2S_PORT] [--component-port PORT]
#
# The client port is PORT (environment) or -p, else 5222, else the next free
# port above it; the component port is COMPONENT_PORT or --component-port,
# else 5347 or the next free one; the web side's is WEB_PORT, else 8080 or
# the next free one, and the metrics' METRICS_PORT, else 9464 or the next.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

usage() {
	echo "usage: $0 [-p|--port C2S_PORT] [--component-port PORT]" >&2
	exit 2
}

c2s=${PORT:-}
comp=${COMPONENT_PORT:-}
while (($#)); do
	case $1 in
	-p | --port)
		(($# >= 2)) || usage
		c2s=$2
		shift 2
		;;
	--component-port)
		(($# >= 2)) || usage
		comp=$2
		shift 2
		;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done

# pick_port WANTED DEFAULT WHAT [AVOID] prints WANTED if given (and free),
# else the first free port from DEFAULT on, never one of AVOID (the ports
# picked before, separated by spaces: they are not open yet).
pick_port() {
	local wanted=$1 port=$2 what=$3 avoid=" ${4:-} "
	if [[ -n $wanted ]]; then
		if ! [[ $wanted =~ ^[0-9]+$ ]] || ((wanted < 1 || wanted > 65535)); then
			die "$what port $wanted is not a port number"
		fi
		[[ $avoid != *" $wanted "* ]] || die "$what port $wanted is taken by another of presenced's ports"
		require_port_free "$wanted" "$what" || die "choose another $what port"
		echo "$wanted"
		return
	fi
	while [[ $avoid == *" $port "* ]] || port_open "$port"; do
		((port < $2 + 50)) || die "no free $what port in $2..$port"
		port=$((port + 1))
	done
	echo "$port"
}

[[ $EUID -eq 0 ]] || die "run as root: Prosody is started under its own user with runuser"
command -v go >/dev/null || die "go is not on PATH"
ensure_packages prosody:/usr/bin/prosody

c2s=$(pick_port "$c2s" 5222 client)
comp=$(pick_port "$comp" 5347 component "$c2s")
web=$(pick_port "${WEB_PORT:-}" 8080 web "$c2s $comp")
ops=$(pick_port "${METRICS_PORT:-}" 9464 metrics "$c2s $comp $web")

dir=$(mktemp -d "${TMPDIR:-/tmp}/presenced-run.XXXXXX")
chmod 0755 "$dir" # the prosody user must reach its folder inside
pid=

# shellcheck disable=SC2317 # run by the traps below
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# Whatever our output is connected to may be gone (Ctrl-C also ends the
	# tee of `make run | tee run.log`): a failed write must not stop the
	# cleanup, nor SIGPIPE end it half way.
	trap '' PIPE
	set +e
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		log "stopping presenced"
		kill -INT "$pid" 2>/dev/null
		local i
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	log "stopping prosody and removing $dir"
	prosody_stop "$dir/prosody"
	rm -rf "$dir"
	log "stopped"
	exit "$rc"
}
trap cleanup EXIT
# Ctrl-C is how a try-out ends: clean up and exit 0, so that make adds no
# "Error 130" line.
trap 'exit 0' INT
trap 'exit 143' TERM

secret=$(random_secret)
prosody_config "$dir/prosody" "$dir" "$c2s" "$comp" "$secret"
prosody_start "$dir/prosody" "$c2s" "$comp" || {
	tail_logs "$dir/prosody-error.log" "$dir/prosody.log"
	die "prosody did not start"
}

alice_pass=$(random_secret | cut -c1-12)
bob_pass=$(random_secret | cut -c1-12)
prosody_register "$dir/prosody" alice "$alice_pass" || die "could not create alice@localhost"
prosody_register "$dir/prosody" bob "$bob_pass" || die "could not create bob@localhost"

log "building presenced"
go build -o "$dir/presenced" ./cmd/presenced

cat >"$dir/presenced.toml" <<EOF
# Written by scripts/run.sh for a local try-out.
[component]
domain = "presence.localhost"
server = "127.0.0.1:$comp"
secret = "$secret"

[storage]
driver = "sqlite"
dsn = "$dir/presence.db"

[http]
listen = "127.0.0.1:$web"
metrics_listen = "127.0.0.1:$ops"
EOF

cat <<EOF

================================================================================
 presenced runs against a throwaway Prosody (files in $dir).

 1. Log in with an XMPP client, twice (one as alice, one as bob):
      alice@localhost   password $alice_pass
      bob@localhost     password $bob_pass
    Server 127.0.0.1, port $c2s, no TLS.
      Gajim 1.7: on the Welcome page enter the address and password, tick
                 "Advanced Settings", Log In; Hostname 127.0.0.1, Port $c2s,
                 Type PLAIN, Log In; Connect, then "Connect Anyway".
      Profanity: /connect alice@localhost server 127.0.0.1 port $c2s tls disable

 2. As alice, add a handle with the ad-hoc command "Add a handle", e.g.
    alice-work (one word: handle names have no spaces):
      Gajim 1.7: Accounts > Discover Services..., select "presenced"
                 (presence.localhost), click Command, choose "Add a handle",
                 Execute, type the name, Complete.
      Profanity: /cmd exec add-handle presence.localhost
                 /field1 alice-work
                 /form submit
                 (Profanity keeps only the first word of /field1 two words,
                 without a warning. Answers show in the console, or in the
                 window of presence.localhost once there is one: /win 2.)
    presence.localhost then asks to see alice's presence: accept it.
      Gajim 1.7: the request shows under Notifications: Accept (then Add
                 Contact, so that presence.localhost shows on-line with its
                 commands under right click > Execute Command...).
      Profanity: /sub allow presence.localhost

 3. As bob, add alice-work@presence.localhost to the roster:
      Gajim 1.7: Accounts > Add Contact..., the address, Next, Add Contact.
      Profanity: /sub request alice-work@presence.localhost
    Alice's handles ask her about every request: presence.localhost sends
    her a chat message naming bob. As alice, run "Subscription requests",
    choose bob's request and Approve:
      Gajim 1.7: Accounts > Discover Services..., "presenced", Command,
                 "Subscription requests", Execute; tick the request, choose
                 Decision "Approve", Complete.
      Profanity: /cmd exec requests presence.localhost
                 /field1 add "alice-work bob@localhost"
                 /field2 approve
                 /form submit
    (A handle added with "Who may subscribe: Approve everyone" approves
    every request by itself.)
    Bob sees alice's status through the handle. Change alice's status
    (Profanity: /status set away, /status set dnd, /status set online) and
    watch it follow; run "Set my status" > Hiding (Profanity:
    /cmd exec set-status presence.localhost, /field1 hiding, /form submit)
    and the handle looks off-line to bob, whatever alice's client says.

 4. Clients without ad-hoc commands (Dino, Conversations, any client):
    open a chat with presence.localhost and send it commands, one per
    message; it answers in the chat. Send "help" for the list, e.g.:
      status            your status, and each handle's visibility
      status away       (busy, hiding, undefined, visible)
      add alice-home    (add alice-home open: approve everyone)
      requests          then "approve 1" or "deny 1"
      block bob@localhost     every handle looks off-line to bob
      unblock bob@localhost
      hide alice-work   this handle looks off-line to all of its subscribers
      show alice-work
    Profanity: /msg presence.localhost help

 5. The web side (http://127.0.0.1:$web): make a handle public with the
    chat command "web alice-work on" (or the ad-hoc command "Show handles on
    the web"), then open
      http://127.0.0.1:$web/list?h=alice-work      the live list (FIG. 8)
      http://127.0.0.1:$web/status/alice-work.svg  its icon (FIG. 9)
      http://127.0.0.1:$web/status/alice-work.json
      http://127.0.0.1:$web/healthz   http://127.0.0.1:$web/readyz
      http://127.0.0.1:$ops/metrics   (an address of its own, never public)

 Ctrl-C stops presenced and Prosody and deletes $dir.
================================================================================

EOF

log "starting presenced: $dir/presenced -config $dir/presenced.toml"
# Run in the background and wait, so that a SIGTERM to this script is
# handled at once (bash runs traps only between foreground commands).
"$dir/presenced" -config "$dir/presenced.toml" &
pid=$!
rc=0
wait "$pid" || rc=$?
pid=
log "presenced exited with status $rc"
exit "$rc"
