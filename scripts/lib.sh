# shellcheck shell=bash
# Shared helpers for scripts/testenv.sh and scripts/run.sh. Source it; it
# defines functions and a few constants and starts nothing by itself.
#
# Every server started here listens on 127.0.0.1 only, and every server runs
# as its own system user (Prosody, ejabberd and PostgreSQL refuse root).

# Timeout, in seconds, for a server to start accepting connections.
: "${PRESENCED_START_TIMEOUT:=90}"

# log writes a line to stderr; a write that fails (stderr gone) is ignored.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2 || true; }
die() {
	log "error: $*"
	exit 1
}

# random_secret prints 32 random hex digits.
random_secret() {
	od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# json_str prints its argument as a JSON string literal.
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

# ensure_packages PKG:PATH ... installs, from Debian, each package PKG whose
# PATH does not exist. It runs apt-get update at most once per script run and
# waits for a dpkg lock held by another apt-get rather than failing on it.
_apt_updated=0
ensure_packages() {
	local spec missing=()
	for spec in "$@"; do
		[[ -e ${spec#*:} ]] || missing+=("${spec%%:*}")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]} from Debian"
	local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 -q)
	if ((!_apt_updated)); then
		local i
		for i in 1 2 3 4 5; do
			"${apt[@]}" update && break
			((i < 5)) || die "apt-get update failed"
			sleep 10 # most likely another apt-get holds the lists lock
		done
		_apt_updated=1
	fi
	# The packages' own daemons would listen on every interface with the
	# packaged configuration: forbid starting services while installing
	# (Debian's policy-rc.d; Docker-made images ship one already).
	local policy=/usr/sbin/policy-rc.d added_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# added by presenced scripts/lib.sh during apt-get install\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		added_policy=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}" || rc=$?
	if ((added_policy)); then
		rm -f "$policy"
	fi
	((rc == 0)) || die "apt-get install ${missing[*]} failed"
	for spec in "$@"; do
		[[ -e ${spec#*:} ]] || die "${spec%%:*} installed but ${spec#*:} is missing"
	done
}

# port_open PORT succeeds when something accepts TCP connections on
# 127.0.0.1:PORT.
port_open() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# port_owner PORT prints what listens on PORT, for error messages.
port_owner() {
	ss -Hltnp "sport = :$1" 2>/dev/null | awk '{print $4, $6}'
}

# xmpp_answers PORT NS TO succeeds when the XMPP server on 127.0.0.1:PORT
# answers a stream header in namespace NS addressed to TO with a stream
# header of its own. It authenticates nothing, so it does not take the slot
# of a component.
xmpp_answers() {
	local hdr="<?xml version='1.0'?><stream:stream xmlns='$2' xmlns:stream='http://etherx.jabber.org/streams' to='$3' version='1.0'>"
	local reply
	# The answer starts with an XML declaration and the stream header: 60
	# bytes are plenty, and the server has sent them all as soon as it answers.
	# shellcheck disable=SC2016 # expanded by the inner shell
	reply=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "%s" "$2" >&3
		head -c 60 <&3
	' _ "$1" "$hdr" 2>/dev/null) || true
	[[ $reply == *"<stream:stream"* ]]
}

# wait_xmpp NAME C2S_PORT DOMAIN COMPONENT_PORT COMPONENT_DOMAIN waits until
# the server answers streams on both its client and its component port.
wait_xmpp() {
	local name=$1 c2s=$2 domain=$3 comp=$4 cdomain=$5 deadline=$((SECONDS + PRESENCED_START_TIMEOUT))
	until xmpp_answers "$c2s" jabber:client "$domain" &&
		xmpp_answers "$comp" jabber:component:accept "$cdomain"; do
		((SECONDS < deadline)) || {
			log "$name does not answer on ports $c2s and $comp after ${PRESENCED_START_TIMEOUT}s"
			return 1
		}
		sleep 0.3
	done
}

# wait_port_free PORT SECONDS waits until nothing listens on PORT.
wait_port_free() {
	local deadline=$((SECONDS + $2))
	while port_open "$1"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# require_port_free PORT WHAT fails with a message naming the listener when
# PORT is taken.
require_port_free() {
	if port_open "$1"; then
		log "port $1 (for $2) is already in use: $(port_owner "$1")"
		return 1
	fi
}

# tail_logs FILE... prints the end of each existing FILE to stderr.
tail_logs() {
	local f
	for f in "$@"; do
		[[ -s $f ]] || continue
		printf '\n===== last lines of %s =====\n' "$f" >&2
		tail -n 40 "$f" >&2
	done
}

# pid_alive PIDFILE succeeds when PIDFILE names a running process.
pid_alive() {
	local pid
	[[ -s $1 ]] && pid=$(<"$1") && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile PIDFILE NAME sends SIGTERM to the process named in PIDFILE,
# waits up to 20 s for it to exit, then kills it.
stop_pidfile() {
	local pidfile=$1 name=$2 pid i
	pid_alive "$pidfile" || return 0
	pid=$(<"$pidfile")
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || {
			rm -f "$pidfile"
			return 0
		}
		sleep 0.2
	done
	log "$name (pid $pid) ignored SIGTERM; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$pidfile"
}

# ---------------------------------------------------------------- Prosody --

# prosody_config PDIR LOGDIR C2S_PORT COMPONENT_PORT SECRET writes
# PDIR/prosody.cfg.lua: host "localhost", component "presence.localhost",
# loopback only, no TLS, plain authentication and in-band registration
# allowed (local testing only). Data and the pid file live in PDIR, logs in
# LOGDIR/prosody.log and LOGDIR/prosody-error.log.
prosody_config() {
	local pdir=$1 logdir=$2 c2s=$3 comp=$4 secret=$5
	mkdir -p "$pdir/data" "$pdir/certs" "$logdir"
	cat >"$pdir/prosody.cfg.lua" <<EOF
-- Generated by scripts/lib.sh for local tests. Never expose it: it allows
-- plain-text passwords without TLS and registration by anyone.
pidfile = "$pdir/prosody.pid"
data_path = "$pdir/data"
certificates = "$pdir/certs" -- empty: no TLS
log = { info = "$logdir/prosody.log"; error = "$logdir/prosody-error.log" }
gc = { mode = "generational" }

interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $c2s }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
component_ports = { $comp }
component_interfaces = { "127.0.0.1" }
http_ports = { }
https_ports = { }

modules_enabled = { "roster"; "saslauth"; "disco"; "presence"; "ping"; "register"; }
modules_disabled = { "s2s"; "tls" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
allow_registration = true

VirtualHost "localhost"

Component "presence.localhost"
	component_secret = "$secret"
EOF
	touch "$logdir/prosody.log" "$logdir/prosody-error.log"
	chown -R prosody:prosody "$pdir" "$logdir/prosody.log" "$logdir/prosody-error.log"
}

# prosody_running PDIR succeeds when the Prosody of PDIR runs.
prosody_running() { pid_alive "$1/prosody.pid"; }

# prosody_start PDIR C2S_PORT COMPONENT_PORT starts the Prosody configured in
# PDIR in the background and waits until it answers on both ports.
prosody_start() {
	local pdir=$1 c2s=$2 comp=$3
	if prosody_running "$pdir"; then
		log "prosody already runs (pid $(<"$pdir/prosody.pid"))"
	else
		require_port_free "$c2s" "prosody c2s" || return 1
		require_port_free "$comp" "prosody components" || return 1
		(cd / && runuser -u prosody -- prosody -D --config "$pdir/prosody.cfg.lua") </dev/null || {
			log "prosody failed to start"
			return 1
		}
	fi
	wait_xmpp prosody "$c2s" localhost "$comp" presence.localhost
}

# prosody_stop PDIR stops the Prosody of PDIR if it runs.
prosody_stop() { stop_pidfile "$1/prosody.pid" prosody; }

# prosody_register PDIR USER PASSWORD creates USER@localhost.
prosody_register() {
	(cd / && runuser -u prosody -- prosodyctl --config "$1/prosody.cfg.lua" register "$2" localhost "$3") </dev/null
}
