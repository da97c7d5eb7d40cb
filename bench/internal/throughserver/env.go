package throughserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"presenced/bench/internal/shared"
)

// Names of the test world.
const (
	userHost        = "localhost"
	componentDomain = "presence.localhost"
	ownerUser       = "owner"
	ownerJID        = ownerUser + "@" + userHost
)

// handleJID is the bare JID of handle j.
func handleJID(j int) string { return "h" + strconv.Itoa(j) + "@" + componentDomain }

// handleName is the localpart of handle j.
func handleName(j int) string { return "h" + strconv.Itoa(j) }

// subUser is the localpart of subscriber k.
func subUser(k int) string { return "u" + strconv.Itoa(k) }

// password is an account's password, derived from its localpart (test
// accounts on loopback only).
func password(user string) string { return "pw-" + user }

// randomSecret returns 32 random hex digits.
func randomSecret() string { return shared.RandomHex(16) }

// ports are the TCP ports of one XMPP server on 127.0.0.1.
type ports struct {
	c2s, component, dist int
}

// addr is host:port on loopback.
func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// waitXMPP waits until the server answers a client stream header on its
// c2s port and accepts connections on its component port. It gives up
// after two minutes, when exited is closed (the server died) or ctx ends.
func waitXMPP(ctx context.Context, p ports, exited <-chan struct{}) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if streamAnswers(p.c2s) && portOpen(p.component) {
			return nil
		}
		select {
		case <-exited:
			return errors.New("the server exited while starting")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on ports %d and %d after 2 minutes", p.c2s, p.component)
		}
	}
}

// streamAnswers reports whether a client stream header on port gets a
// stream header back.
func streamAnswers(port int) bool {
	c, err := net.DialTimeout("tcp", addr(port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	hdr := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='" + userHost + "' version='1.0'>"
	if _, err := c.Write([]byte(hdr)); err != nil {
		return false
	}
	var got []byte
	buf := make([]byte, 512)
	for len(got) < 4096 {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if bytes.Contains(got, []byte("<stream:stream")) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// portOpen reports whether something accepts connections on port.
func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", addr(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// process is a child process of the harness.
type process struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited
	err    error         // its exit status, once exited is closed
}

// startProcess starts cmd. With dieWithUs the child is killed if the
// harness dies without cleaning up (PR_SET_PDEATHSIG).
func startProcess(cmd *exec.Cmd, name string, dieWithUs bool) (*process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if dieWithUs {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// pid is the child's process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// alive reports whether the child still runs.
func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to grace for the child to exit, then kills
// it. It returns an error if the child had to be killed.
func (p *process) stop(grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), grace)
}

// tailFiles returns the last lines of each non-empty file, for error
// messages.
func tailFiles(paths ...string) string {
	var b bytes.Buffer
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		fmt.Fprintf(&b, "--- last lines of %s ---\n%s\n", path, bytes.Join(lines, []byte("\n")))
	}
	return b.String()
}
