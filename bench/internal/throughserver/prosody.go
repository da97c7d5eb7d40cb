package throughserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// rosterItem is one entry of a roster as Prosody stores it.
type rosterItem struct {
	jid          string
	subscription string // "to", "from", "both"
}

// luaString quotes s as a Lua string literal.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, "\\%03d", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// prosodyAccount renders data/<host>/accounts/<user>.dat for the
// internal_plain authentication provider.
func prosodyAccount(password string) string {
	return "return {\n\t[\"password\"] = " + luaString(password) + ";\n};\n"
}

// prosodyRoster renders data/<host>/roster/<user>.dat: a roster version, no
// pending requests, and the items.
func prosodyRoster(items []rosterItem) string {
	var b strings.Builder
	b.WriteString("return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n")
	for _, it := range items {
		fmt.Fprintf(&b, "\t[%s] = {\n\t\t[\"groups\"] = {};\n\t\t[\"subscription\"] = %s;\n\t};\n",
			luaString(it.jid), luaString(it.subscription))
	}
	b.WriteString("};\n")
	return b.String()
}

// prosodyFileName encodes a node or host name as Prosody's datamanager does
// for file names: every character other than ASCII letters and digits
// becomes %XX (lower-case hex).
func prosodyFileName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// prosodyConfig renders a loopback-only Prosody configuration without TLS
// and with plain authentication (for this harness only).
func prosodyConfig(dir string, p ports, secret, gc string) string {
	gcLine := ""
	if gc != "" {
		gcLine = "gc = { mode = " + luaString(gc) + " }\n"
	}
	return fmt.Sprintf(`-- Written by presenced's load harness; loopback only, no TLS.
pidfile = %[1]s
data_path = %[2]s
certificates = %[11]s -- empty: no TLS
log = { warn = %[3]s; error = %[4]s }
%[5]s
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { %[6]d }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
component_ports = { %[7]d }
component_interfaces = { "127.0.0.1" }
http_ports = { }
https_ports = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "presence"; "ping"; }
modules_disabled = { "s2s"; "tls" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"

VirtualHost %[8]s

Component %[9]s
	component_secret = %[10]s
`, luaString(filepath.Join(dir, "prosody.pid")), luaString(filepath.Join(dir, "data")),
		luaString(filepath.Join(dir, "prosody.log")), luaString(filepath.Join(dir, "error.log")),
		gcLine, p.c2s, p.component, luaString(userHost), luaString(componentDomain), luaString(secret),
		luaString(filepath.Join(dir, "certs")))
}

// prosody is a private Prosody run by the harness.
type prosody struct {
	dir  string
	p    ports
	proc *process
	gc   string
}

func (s *prosody) name() string { return "prosody" }

// check makes sure Prosody is installed: its program and its system user.
func (s *prosody) check() error {
	return checkInstalled("prosody", "prosody", "prosody")
}

// checkInstalled reports a missing program prog or system user of the
// Debian package pkg, with how to install it.
func checkInstalled(pkg, prog, user string) error {
	if _, err := exec.LookPath(prog); err != nil {
		return fmt.Errorf("%s is not installed (no %s on PATH): apt-get install %s", pkg, prog, pkg)
	}
	if _, _, err := lookupUser(user); err != nil {
		return fmt.Errorf("%s looks not (fully) installed: %v; apt-get install %s", pkg, err, pkg)
	}
	return nil
}

// prepare writes the configuration, the accounts and the rosters: each
// subscriber holds every handle with subscription "to"; the owner holds the
// component with subscription "from", so that its presence reaches the
// component.
func (s *prosody) prepare(ctx context.Context, subs, handles int, secret string) error {
	host := filepath.Join(s.dir, "data", prosodyFileName(userHost))
	for _, d := range []string{filepath.Join(host, "accounts"), filepath.Join(host, "roster"), filepath.Join(s.dir, "certs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// 0640, and owned by prosody below: it holds the component secret.
	if err := os.WriteFile(filepath.Join(s.dir, "prosody.cfg.lua"), []byte(prosodyConfig(s.dir, s.p, secret, s.gc)), 0o640); err != nil {
		return err
	}
	items := make([]rosterItem, handles)
	for j := range items {
		items[j] = rosterItem{jid: handleJID(j), subscription: "to"}
	}
	subRoster := []byte(prosodyRoster(items))
	write := func(user string, roster []byte) error {
		f := prosodyFileName(user) + ".dat"
		if err := os.WriteFile(filepath.Join(host, "accounts", f), []byte(prosodyAccount(password(user))), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(host, "roster", f), roster, 0o644)
	}
	if err := write(ownerUser, []byte(prosodyRoster([]rosterItem{{jid: componentDomain, subscription: "from"}}))); err != nil {
		return err
	}
	for k := range subs {
		if err := write(subUser(k), subRoster); err != nil {
			return err
		}
	}
	return chownTree(s.dir, "prosody")
}

// start runs Prosody in the foreground as the prosody user and waits until
// it answers on its client port.
func (s *prosody) start(ctx context.Context) error {
	uid, gid, err := lookupUser("prosody")
	if err != nil {
		return err
	}
	cmd := exec.Command("prosody", "-F", "--config", filepath.Join(s.dir, "prosody.cfg.lua"))
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + s.dir}
	out, err := os.Create(filepath.Join(s.dir, "stdout.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	proc, err := startProcess(cmd, "prosody", true)
	if err != nil {
		return fmt.Errorf("prosody: %w (is it installed? apt-get install prosody)", err)
	}
	s.proc = proc
	if err := waitXMPP(ctx, s.p, proc.exited); err != nil {
		return fmt.Errorf("prosody: %w\n%s", err, tailFiles(s.logs()...))
	}
	return nil
}

// pid is the process whose CPU is counted: the Lua interpreter itself
// (/usr/bin/prosody execs it without forking).
func (s *prosody) pid() int { return s.proc.cmd.Process.Pid }

// stop ends Prosody: SIGTERM, then SIGKILL after 20 s.
func (s *prosody) stop() error {
	if s.proc == nil {
		return nil
	}
	return s.proc.stop(20 * time.Second)
}

// logs names the files worth showing when something fails.
func (s *prosody) logs() []string {
	return []string{filepath.Join(s.dir, "error.log"), filepath.Join(s.dir, "prosody.log"), filepath.Join(s.dir, "stdout.log")}
}

// lookupUser returns the uid and gid of a system user.
func lookupUser(name string) (uint32, uint32, error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] != name {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("/etc/passwd: bad line for %s", name)
		}
		return uint32(uid), uint32(gid), nil
	}
	return 0, 0, fmt.Errorf("no system user %q", name)
}

// chownTree gives dir and everything in it to the system user name.
func chownTree(dir, name string) error {
	uid, gid, err := lookupUser(name)
	if err != nil {
		return err
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(uid), int(gid))
	})
}
