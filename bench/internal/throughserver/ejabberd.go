package throughserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ejabberd is a private ejabberd node run by the harness through
// ejabberdctl. Accounts and subscriptions are made through the protocol
// (in-band registration, subscribe/subscribed), since its Mnesia database
// cannot be written before it starts.
type ejabberd struct {
	dir  string
	p    ports
	node string
	beam int // pid of the node's beam.smp, once started
	// madeRun is set when the harness created /run/ejabberd (removed by
	// stop).
	madeRun bool
}

func (s *ejabberd) name() string { return "ejabberd" }

// check makes sure ejabberd is installed: ejabberdctl and its system user.
func (s *ejabberd) check() error {
	return checkInstalled("ejabberd", "ejabberdctl", "ejabberd")
}

// runDir is where ejabberdctl keeps its lock files.
const runDir = "/run/ejabberd"

// ejabberdConfig renders a loopback-only ejabberd.yml: no TLS, plain
// passwords, in-band registration open (for this harness only), no
// shapers, large queues so that fan-out is never cut.
func ejabberdConfig(p ports, secret string) string {
	return fmt.Sprintf(`# Written by presenced's load harness; loopback only, no TLS.
loglevel: warning
hosts: [%[1]s]
listen:
  - port: %[2]d
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    access: c2s
    backlog: 1024
  - port: %[3]d
    ip: "127.0.0.1"
    module: ejabberd_service
    backlog: 1024
    hosts:
      "%[4]s":
        password: "%[5]s"
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
max_fsm_queue: 1000000
acl:
  local:
    user_regexp: ""
access_rules:
  local: {allow: local}
  c2s: {allow: all}
  register: {allow: all}
modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
  mod_register:
    access: register
    ip_access: all
`, userHost, p.c2s, p.component, componentDomain, secret)
}

// prepare writes the node's configuration.
func (s *ejabberd) prepare(ctx context.Context, subs, handles int, secret string) error {
	for _, d := range []string{"spool", "logs"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"ejabberd.yml": ejabberdConfig(s.p, secret),
		// ejabberdctl sources this: a fixed distribution port means no
		// epmd; the interface keeps the distribution on loopback.
		"ejabberdctl.cfg": fmt.Sprintf("INET_DIST_INTERFACE=127.0.0.1\nERL_DIST_PORT=%d\nERL_EPMD_ADDRESS=127.0.0.1\n", s.p.dist),
		"inetrc":          "",
	}
	for name, text := range files {
		// 0640, and owned by ejabberd below: ejabberd.yml holds the
		// component secret.
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o640); err != nil {
			return err
		}
	}
	if _, err := os.Stat(runDir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(runDir, 0o755); err != nil {
			return err
		}
		s.madeRun = true
		if err := chownTree(runDir, "ejabberd"); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return chownTree(s.dir, "ejabberd")
}

// ctl runs ejabberdctl for this node.
func (s *ejabberd) ctl(ctx context.Context, args ...string) error {
	base := []string{"--config-dir", s.dir, "--spool", filepath.Join(s.dir, "spool"),
		"--logs", filepath.Join(s.dir, "logs"), "--node", s.node}
	cmd := exec.CommandContext(ctx, "ejabberdctl", append(base, args...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ejabberdctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// start starts the node and waits until it answers on its ports.
func (s *ejabberd) start(ctx context.Context) error {
	if err := s.ctl(ctx, "start"); err != nil {
		return fmt.Errorf("%w (is it installed? apt-get install ejabberd)", err)
	}
	exited := make(chan struct{}) // never closed: the node is not our child
	if err := waitXMPP(ctx, s.p, exited); err != nil {
		return fmt.Errorf("ejabberd: %w\n%s", err, tailFiles(s.logs()...))
	}
	pid, err := s.findBeam()
	if err != nil {
		return err
	}
	s.beam = pid
	return nil
}

// findBeam returns the pid of the beam.smp that runs this node, told apart
// from other nodes by its Mnesia folder.
func (s *ejabberd) findBeam() (int, error) {
	spool := []byte(filepath.Join(s.dir, "spool"))
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		if !bytes.HasPrefix(comm, []byte("beam")) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(cmdline, spool) {
			return pid, nil
		}
	}
	return 0, errors.New("ejabberd: its beam.smp process was not found")
}

func (s *ejabberd) pid() int { return s.beam }

// stop stops the node with ejabberdctl, then kills it if it is still there
// after 60 s.
func (s *ejabberd) stop() error {
	err := s.stopNode()
	if s.madeRun {
		if rerr := os.RemoveAll(runDir); rerr != nil && err == nil {
			err = rerr
		}
		s.madeRun = false
	}
	return err
}

// stopNode stops the node, if it runs.
func (s *ejabberd) stopNode() error {
	if s.beam == 0 {
		// Perhaps started but never seen: try all the same.
		if pid, err := s.findBeam(); err == nil {
			s.beam = pid
		} else {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := s.ctl(ctx, "stop")
	for ctx.Err() == nil && pidAlive(s.beam) {
		time.Sleep(200 * time.Millisecond)
	}
	if pidAlive(s.beam) {
		p, _ := os.FindProcess(s.beam)
		_ = p.Kill()
		return fmt.Errorf("ejabberd (pid %d) did not stop in 60 s and was killed (%v)", s.beam, err)
	}
	return nil
}

// pidAlive reports whether a process with that pid exists and is not a
// zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func (s *ejabberd) logs() []string {
	return []string{filepath.Join(s.dir, "logs", "error.log"), filepath.Join(s.dir, "logs", "ejabberd.log"), filepath.Join(s.dir, "logs", "erlang.log")}
}
