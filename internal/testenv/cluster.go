package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgBinDir holds the PostgreSQL 15 server binaries that scripts/testenv.sh
// uses too.
const pgBinDir = "/usr/lib/postgresql/15/bin"

// clusterCmdTimeout bounds one initdb, start or stop of a private cluster.
const clusterCmdTimeout = 60 * time.Second

// Cluster is a PostgreSQL cluster of one test's own, on a free loopback
// port: a test may stop and start it (a storage outage) without disturbing
// the tests that use the shared cluster of scripts/testenv.sh. Stop and
// Start may be called from any goroutine.
type Cluster struct {
	dir, data, logFile string
	port               int

	mu sync.Mutex // serialises Stop and Start
}

// NewPostgresCluster creates and starts a cluster of the test's own, with
// a database "presence"; the cluster is stopped and deleted when the test
// ends. PostgreSQL refuses to run as root, so the server runs as the
// postgres user, as in scripts/testenv.sh: the test is skipped unless it
// runs as root on a machine with PostgreSQL 15.
func NewPostgresCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a private PostgreSQL cluster runs as the postgres user through runuser: run as root (make test)")
	}
	if _, err := os.Stat(filepath.Join(pgBinDir, "initdb")); err != nil {
		t.Skipf("no PostgreSQL 15 server binaries in %s (scripts/testenv.sh installs them)", pgBinDir)
	}
	dir, err := os.MkdirTemp("", "presenced-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{dir: dir, data: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "postgres.log")}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.running() {
			_ = c.pgCtl("-m", "immediate", "-w", "stop")
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("chown", "postgres:postgres", dir).Run(); err != nil {
		t.Fatalf("chown postgres %s: %v", dir, err)
	}
	if out, err := runAsPostgres(filepath.Join(pgBinDir, "initdb"), "-D", c.data, "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if c.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		t.Fatalf("connect to the private cluster: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE presence"); err != nil {
		t.Fatalf("create database presence: %v", err)
	}
	return c
}

// DSN is the URL of the cluster's database "presence".
func (c *Cluster) DSN() string { return c.dsn("presence") }

// AdminDSN is the URL of the cluster's administrative database.
func (c *Cluster) AdminDSN() string { return c.dsn("postgres") }

func (c *Cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Stop stops the cluster with a fast shutdown: it ends every session and
// refuses new ones until Start.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.pgCtl("-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("stop the private cluster: %w", err)
	}
	return nil
}

// Start starts the cluster again, on the same port, and returns once it
// accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, c.dir)
	if err := c.pgCtl("-l", c.logFile, "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return fmt.Errorf("start the private cluster: %w", err)
	}
	return nil
}

func (c *Cluster) running() bool {
	_, err := runAsPostgres(filepath.Join(pgBinDir, "pg_ctl"), "-D", c.data, "status")
	return err == nil
}

func (c *Cluster) pgCtl(args ...string) error {
	out, err := runAsPostgres(filepath.Join(pgBinDir, "pg_ctl"), append([]string{"-D", c.data}, args...)...)
	if err != nil {
		log, _ := os.ReadFile(c.logFile)
		return fmt.Errorf("pg_ctl %v: %v\n%s\n%s", args, err, out, log)
	}
	return nil
}

func runAsPostgres(bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	cmd.Dir = "/" // the postgres user may not read the test's folder
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}
