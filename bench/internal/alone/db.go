package alone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"presenced/storage"
)

// pgBin is where Debian 12 keeps PostgreSQL 15's server programs.
const pgBin = "/usr/lib/postgresql/15/bin"

// databases hands out a fresh, empty database for each run.
type databases struct {
	driver string
	// server is the PostgreSQL URL of an existing database on the server
	// (postgres only); fresh databases are created beside it.
	server  string
	counter int
	stopPG  func() // stops a cluster the harness started; nil otherwise
}

// newDatabases prepares the store: nothing for SQLite; for PostgreSQL the
// server at dsn, or a throwaway cluster under tmp when dsn is empty.
func newDatabases(ctx context.Context, driver, dsn, tmp string) (*databases, error) {
	d := &databases{driver: driver}
	switch driver {
	case storage.DriverSQLite:
		return d, nil
	case storage.DriverPostgres:
	default:
		return nil, fmt.Errorf("-store %q: use sqlite or postgres", driver)
	}
	if dsn == "" {
		var err error
		dsn, d.stopPG, err = startCluster(ctx, tmp)
		if err != nil {
			return nil, err
		}
	}
	d.server = dsn
	return d, nil
}

// fresh returns the driver and DSN of a new empty database, and a function
// that drops it (a no-op for SQLite, whose file goes with dir).
func (d *databases) fresh(ctx context.Context, dir string) (dsn string, drop func(), err error) {
	if d.driver == storage.DriverSQLite {
		return filepath.Join(dir, "presence.db"), func() {}, nil
	}
	d.counter++
	name := fmt.Sprintf("presenced_bench_%d_%d", os.Getpid(), d.counter)
	if err := pgExec(ctx, d.server, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(d.server)
	if err != nil {
		return "", nil, fmt.Errorf("-dsn: %w", err)
	}
	u.Path = "/" + name
	drop = func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pgExec(c, d.server, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}

// close stops the cluster the harness started, if any.
func (d *databases) close() {
	if d.stopPG != nil {
		d.stopPG()
	}
}

// pgExec runs one statement on the database at dsn.
func pgExec(ctx context.Context, dsn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startCluster starts a private PostgreSQL 15 on 127.0.0.1 in tmp, as the
// postgres user (it refuses root), and returns the URL of its postgres
// database and a function that stops it.
func startCluster(ctx context.Context, tmp string) (string, func(), error) {
	if _, err := os.Stat(filepath.Join(pgBin, "pg_ctl")); err != nil {
		return "", nil, fmt.Errorf("no PostgreSQL 15 server programs in %s (give -dsn): %w", pgBin, err)
	}
	dir := filepath.Join(tmp, "pg")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	if err := chownPostgres(tmp, dir); err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	data := filepath.Join(dir, "data")
	if out, err := asPostgres(ctx, "initdb", "-D", data, "-A", "trust", "-U", "postgres"); err != nil {
		return "", nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on", port, dir)
	if out, err := asPostgres(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return "", nil, fmt.Errorf("pg_ctl start: %w\n%s", err, out)
	}
	stop := func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = asPostgres(c, "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
	}
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable", stop, nil
}

// chownPostgres gives the postgres user the cluster folder and lets it
// through tmp.
func chownPostgres(tmp, dir string) error {
	out, err := exec.Command("id", "-u", "postgres").Output()
	if err != nil {
		return errors.New("no postgres user on this machine (give -dsn)")
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if err := os.Chmod(tmp, 0o711); err != nil {
		return err
	}
	return os.Chown(dir, uid, -1)
}

// asPostgres runs one PostgreSQL program as the postgres user, in its own
// process group so that a Ctrl-C does not reach the server behind the
// harness's back.
func asPostgres(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgBin, prog)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
