package testenv

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

const sample = `{"postgres":"postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable",
 "servers":[
  {"name":"prosody","c2s":"127.0.0.1:15222","component":"127.0.0.1:15347","domain":"localhost",
   "component_domain":"presence.localhost","secret":"s",
   "start":["/x/testenv.sh","server-start","/d","prosody"],"stop":["/x/testenv.sh","server-stop","/d","prosody"]}]}`

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "testenv.json")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadFile(t *testing.T) {
	env, err := ReadFile(writeFile(t, sample))
	if err != nil {
		t.Fatalf("ReadFile(sample) error: %v", err)
	}
	s := env.Server(t, "prosody")
	if s.Component != "127.0.0.1:15347" || s.ComponentDomain != "presence.localhost" ||
		strings.Join(s.StopCmd, " ") != "/x/testenv.sh server-stop /d prosody" {
		t.Errorf("ReadFile(sample) server = %+v", s)
	}

	tests := []struct{ name, text, want string }{
		{"not json", "{", "parse"},
		{"no servers", `{"postgres":"x","servers":[]}`, "no XMPP server"},
		{"no start", strings.Replace(sample, `"start"`, `"begin"`, 1), "lacks a field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadFile(writeFile(t, tt.text)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ReadFile = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// tryLock reports whether a lock of kind how on path is free right now.
func tryLock(t *testing.T, path string, how int) bool {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB) == nil
}

func TestLocks(t *testing.T) {
	env, err := ReadFile(writeFile(t, sample))
	if err != nil {
		t.Fatal(err)
	}
	s := env.Servers[0]
	t.Run("shared", func(t *testing.T) {
		s.Shared(t)
		if !tryLock(t, s.lockPath, syscall.LOCK_SH) {
			t.Errorf("a second shared lock is refused while Shared is held")
		}
		if tryLock(t, s.lockPath, syscall.LOCK_EX) {
			t.Errorf("an exclusive lock is granted while Shared is held")
		}
	})
	t.Run("exclusive", func(t *testing.T) {
		s.Exclusive(t)
		if tryLock(t, s.lockPath, syscall.LOCK_SH) {
			t.Errorf("a shared lock is granted while Exclusive is held")
		}
	})
	if !tryLock(t, s.lockPath, syscall.LOCK_EX) {
		t.Errorf("the lock is still held after the tests that took it ended")
	}
}

func TestNewPostgresDB(t *testing.T) {
	env := Load(t)
	ctx := context.Background()
	var name string
	t.Run("use", func(t *testing.T) {
		dsn := NewPostgresDB(t, env.Postgres)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		name = strings.TrimPrefix(u.Path, "/")
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect to the new database: %v", err)
		}
		// Left open on purpose: the cleanup must drop the database anyway.
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
	})
	admin, err := pgx.Connect(ctx, env.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

// TestPostgresCluster: a private cluster serves its database, refuses
// connections while stopped, and serves the same data after a start.
func TestPostgresCluster(t *testing.T) {
	Load(t) // the servers of make test are installed; nothing of theirs is used
	c := NewPostgresCluster(t)
	ctx := context.Background()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, c.DSN())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatalf("write to the private cluster: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("the stopped cluster still accepts connections")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("connect after Start: %v", err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
		t.Fatalf("after a restart the table holds %d (%v), want 7", v, err)
	}
}
