// Package testenv gives tests the real servers started by scripts/testenv.sh:
// PostgreSQL and the XMPP servers (Prosody, ejabberd) with a component port
// for presenced.
//
// The script writes a JSON file and the test command names it in the
// environment variable PRESENCED_TESTENV. Without it, Load skips the test, so
// `go test ./...` passes anywhere and `make test` runs everything.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the environment variable holding the path of the JSON file
// written by scripts/testenv.sh.
const EnvVar = "PRESENCED_TESTENV"

// serverCmdTimeout bounds one start or stop of an XMPP server. ejabberd can
// take most of a minute to start on a loaded machine.
const serverCmdTimeout = 3 * time.Minute

// Env describes the running test servers.
type Env struct {
	// Postgres is the DSN of the cluster's administrative database; use
	// NewPostgresDB to get a database of one's own.
	Postgres string `json:"postgres"`
	// Servers lists the XMPP servers, Prosody first.
	Servers []Server `json:"servers"`
}

// Server is one XMPP server of the test environment.
type Server struct {
	// Name is "prosody" or "ejabberd"; it suits t.Run.
	Name string `json:"name"`
	// C2S is the host:port of the client port.
	C2S string `json:"c2s"`
	// Component is the host:port of the XEP-0114 component port.
	Component string `json:"component"`
	// Domain is the users' domain ("localhost").
	Domain string `json:"domain"`
	// ComponentDomain is the domain the component may claim.
	ComponentDomain string `json:"component_domain"`
	// Secret is the component's shared secret.
	Secret string `json:"secret"`
	// StartCmd starts this server alone again, keeping its data, and
	// returns once it accepts client and component streams.
	StartCmd []string `json:"start"`
	// StopCmd stops this server alone.
	StopCmd []string `json:"stop"`

	lockPath string // file that Shared and Exclusive lock
}

// Load reads the environment named by PRESENCED_TESTENV. It skips the test
// when the variable is unset and fails it when the file is unusable.
func Load(t testing.TB) *Env {
	t.Helper()
	path := os.Getenv(EnvVar)
	if path == "" {
		t.Skipf("%s is not set: run scripts/test.sh (make test) to start the test servers", EnvVar)
	}
	env, err := ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	return env
}

// ReadFile reads and checks a testenv.json file.
func ReadFile(path string) (*Env, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env Env
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(env.Servers) == 0 {
		return nil, fmt.Errorf("%s lists no XMPP server", path)
	}
	for i := range env.Servers {
		env.Servers[i].lockPath = filepath.Join(filepath.Dir(path), "lock-"+env.Servers[i].Name)
	}
	for _, s := range env.Servers {
		if s.Name == "" || s.C2S == "" || s.Component == "" || s.Domain == "" ||
			s.ComponentDomain == "" || len(s.StartCmd) == 0 || len(s.StopCmd) == 0 {
			return nil, fmt.Errorf("%s: server %q lacks a field", path, s.Name)
		}
	}
	return &env, nil
}

// Server returns the server called name, failing the test if there is none.
func (e *Env) Server(t testing.TB, name string) Server {
	t.Helper()
	for _, s := range e.Servers {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("test environment has no XMPP server %q", name)
	return Server{}
}

// Stop stops the server. A test that stops a server should hold it with
// Exclusive and register Start in t.Cleanup first, so that later tests find
// it running.
func (s Server) Stop(t testing.TB) {
	t.Helper()
	run(t, s.Name+" stop", s.StopCmd)
}

// Start starts the server again and returns once it accepts client and
// component streams. Starting a running server does nothing.
func (s Server) Start(t testing.TB) {
	t.Helper()
	run(t, s.Name+" start", s.StartCmd)
}

func run(t testing.TB, what string, argv []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), serverCmdTimeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %q: %v\n%s", what, argv, err, out)
	}
	t.Logf("%s took %v", what, time.Since(start).Round(time.Millisecond))
}

// NewPostgresDB creates an empty database on the cluster of adminDSN, drops
// it when the test ends, and returns its DSN.
func NewPostgresDB(t testing.TB, adminDSN string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("connect to %s: %v", redact(adminDSN), err)
	}
	defer func() { _ = conn.Close(context.Background()) }()

	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "presenced_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminDSN)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(context.Background()) }()
		// WITH (FORCE) ends sessions the code under test left open.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	u, err := url.Parse(adminDSN)
	if err != nil || u.Scheme == "" {
		t.Fatalf("admin DSN must be a URL (postgres://…): %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides the password of a DSN for messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

// Shared declares, until the test ends, that the test needs the server to
// stay up: it waits while another test, in this or any other test binary,
// holds the server with Exclusive. Tests that connect to a server while
// `go test ./...` may run a restarting test in another package should call
// it first.
func (s Server) Shared(t testing.TB) { s.lock(t, syscall.LOCK_SH, "shared") }

// Exclusive takes the server for this test alone until it ends: it waits
// until no other test holds it, Shared or Exclusive. Call it before Stop.
// A test must not call both Shared and Exclusive on one server: it would
// wait for itself.
func (s Server) Exclusive(t testing.TB) { s.lock(t, syscall.LOCK_EX, "exclusive") }

func (s Server) lock(t testing.TB, how int, what string) {
	t.Helper()
	if s.lockPath == "" {
		t.Fatalf("%s: server not loaded with Load or ReadFile", s.Name)
	}
	f, err := os.OpenFile(s.lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("%s %s lock: %v", s.Name, what, err)
	}
	// Closing the file releases the lock.
	t.Cleanup(func() { _ = f.Close() })
	fd := int(f.Fd())
	if err := syscall.Flock(fd, how|syscall.LOCK_NB); err == nil {
		return
	}
	t.Logf("waiting for a %s lock on %s", what, s.Name)
	start := time.Now()
	for {
		err := syscall.Flock(fd, how)
		if err == nil {
			break
		}
		if err != syscall.EINTR {
			t.Fatalf("%s %s lock: %v", s.Name, what, err)
		}
	}
	t.Logf("got the %s lock on %s after %v", what, s.Name, time.Since(start).Round(time.Millisecond))
}
