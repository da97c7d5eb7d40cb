package alone

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"presenced/bench/internal/shared"
)

// tail keeps the last bytes written to it: presenced's stderr, shown when
// something goes wrong.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

// Write implements io.Writer.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns the kept bytes, indented for an error message.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "(presenced wrote nothing on stderr)"
	}
	return "presenced stderr (last lines):\n    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// child is one running presenced process.
type child struct {
	cmd     *exec.Cmd
	started time.Time
	stderr  *tail
	exited  chan struct{}
	waitErr error // set before exited is closed
}

// configText is presenced's configuration pointing at the harness.
func configText(server, secret, driver, dsn string) string {
	return shared.PresencedConfig(shared.Config{Domain: domain, Server: server, Secret: secret,
		ResyncDelay: "200ms", Driver: driver, DSN: dsn})
}

// startChild writes the configuration into dir and starts bin on it, in its
// own process group so that a Ctrl-C reaches the harness only.
func startChild(bin, dir, config string) (*child, error) {
	path := filepath.Join(dir, "presenced.toml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	c := &child{stderr: &tail{max: 8 << 10}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "-config", path)
	c.cmd.Dir = dir
	c.cmd.Stdout = c.stderr
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// pid is the process id of presenced.
func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports whether presenced still runs.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// failure wraps err with how presenced ended, if it did, and its stderr.
func (c *child) failure(err error) error {
	state := "still running"
	if !c.alive() {
		state = fmt.Sprintf("exited: %v", c.waitErr)
	}
	return fmt.Errorf("%w (presenced %s)\n%s", err, state, c.stderr)
}

// kill ends presenced (its whole process group) at once and waits for it,
// at most exitGrace.
func (c *child) kill() {
	if c.alive() {
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		t := time.NewTimer(exitGrace)
		defer t.Stop()
		select {
		case <-c.exited:
		case <-t.C:
		}
	}
}
