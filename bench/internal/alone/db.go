package alone

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"presenced/bench/internal/shared"
	"presenced/storage"
)

// pgRoot is where Debian keeps each PostgreSQL version's server programs,
// in <version>/bin (15 on Debian 12).
const pgRoot = "/usr/lib/postgresql"

// findPGBin returns the bin folder of the highest PostgreSQL version under
// pgRoot that has pg_ctl.
func findPGBin() (string, error) {
	dirs, _ := filepath.Glob(filepath.Join(pgRoot, "*", "bin", "pg_ctl"))
	for i := range dirs {
		dirs[i] = filepath.Dir(dirs[i])
	}
	bin, ok := highestVersion(dirs)
	if !ok {
		return "", fmt.Errorf("no PostgreSQL server programs in %s/*/bin: apt-get install postgresql, or give -dsn", pgRoot)
	}
	return bin, nil
}

// highestVersion returns the folder …/<version>/bin of the highest numeric
// version (15 < 16.2 < 17); folders whose version is not numeric are
// ignored.
func highestVersion(bins []string) (string, bool) {
	best, bestV := "", []int(nil)
	for _, b := range bins {
		v, ok := parseVersion(filepath.Base(filepath.Dir(b)))
		if ok && (bestV == nil || slices.Compare(v, bestV) > 0) {
			best, bestV = b, v
		}
	}
	return best, bestV != nil
}

// parseVersion splits "16.2" into [16 2].
func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

// checkServerURL checks that dsn is a PostgreSQL URL the harness can
// derive other databases' URLs from.
func checkServerURL(dsn string) error {
	u, err := url.Parse(dsn)
	if err != nil {
		return fmt.Errorf("-dsn: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" || u.Host == "" {
		return fmt.Errorf("-dsn %q: want a URL postgres://user@host:port/database", dsn)
	}
	return nil
}

// databaseURL is server's URL with the database name replaced.
func databaseURL(server, name string) (string, error) {
	if err := checkServerURL(server); err != nil {
		return "", err
	}
	u, _ := url.Parse(server)
	u.Path = "/" + name
	return u.String(), nil
}

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
	} else if err := checkServerURL(dsn); err != nil {
		return nil, err
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
	dsn, err = databaseURL(d.server, name)
	if err != nil {
		return "", nil, err
	}
	if err := pgExec(ctx, d.server, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop = func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pgExec(c, d.server, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	return dsn, drop, nil
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

// startCluster starts a private PostgreSQL (the highest version installed)
// on 127.0.0.1 in tmp, as the postgres user (it refuses root), and returns
// the URL of its postgres database and a function that stops it.
func startCluster(ctx context.Context, tmp string) (string, func(), error) {
	if os.Geteuid() != 0 {
		return "", nil, errors.New("-store postgres without -dsn starts a throwaway PostgreSQL as the postgres user (runuser): run as root " +
			"(go build -o /tmp/bench ./bench as yourself, then sudo /tmp/bench alone …), or give -dsn")
	}
	pgBin, err := findPGBin()
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(tmp, "pg")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	if err := chownPostgres(tmp, dir); err != nil {
		return "", nil, err
	}
	ps, err := shared.FreePorts(1)
	if err != nil {
		return "", nil, err
	}
	port := ps[0]
	data := filepath.Join(dir, "data")
	if out, err := asPostgres(ctx, pgBin, "initdb", "-D", data, "-A", "trust", "-U", "postgres"); err != nil {
		return "", nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on", port, dir)
	if out, err := asPostgres(ctx, pgBin, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return "", nil, fmt.Errorf("pg_ctl start: %w\n%s", err, out)
	}
	stop := func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = asPostgres(c, pgBin, "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
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
func asPostgres(ctx context.Context, pgBin, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(pgBin, prog)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
