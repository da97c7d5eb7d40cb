package alone

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"presenced/bench/internal/shared"
	"presenced/storage"
)

// The harness compares builds of different schema versions, and a build
// refuses a database that a newer one made. So each build makes the schema
// of its own version in the fresh database of its run (createSchema), and
// the harness then writes its rows with plain SQL into columns every
// version has: a handle written so gets the schema's default policy, open.

// createSchema runs bin against the database, with no XMPP server to
// reach, until it logs that its storage is open, then stops it.
func createSchema(ctx context.Context, bin, dir, driver, dsn string) error {
	sub := filepath.Join(dir, "schema")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	cfg := shared.PresencedConfig(shared.Config{Domain: domain, Server: "127.0.0.1:1", Secret: "none",
		ResyncDelay: "200ms", Driver: driver, DSN: dsn, LogLevel: "info"})
	c, err := startChild(bin, sub, cfg)
	if err != nil {
		return err
	}
	defer c.kill()
	deadline := time.After(time.Minute)
	for !strings.Contains(c.stderr.String(), "storage open") {
		select {
		case <-c.exited:
			return fmt.Errorf("create the schema with %s: %s", bin, c.stderr)
		case <-deadline:
			return fmt.Errorf("create the schema with %s: no 'storage open' within a minute: %s", bin, c.stderr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("create the schema with %s: it did not stop on SIGTERM", bin)
	}
}

// prepare has bin make its schema in the fresh database, then creates the
// owner and its handles h0…h(H-1) there, open to every subscriber.
func prepare(ctx context.Context, bin, dir, driver, dsn string, handles int) error {
	if err := createSchema(ctx, bin, dir, driver, dsn); err != nil {
		return err
	}
	if driver == storage.DriverSQLite {
		f, err := shared.OpenSQLiteTables(ctx, dsn)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Account(ctx, owner); err != nil {
			return err
		}
		for j := 0; j < handles; j++ {
			if err := f.Handle(ctx, fmt.Sprintf("h%d", j), owner); err != nil {
				return err
			}
		}
		return f.Commit()
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	now := time.Now().UTC()
	batch := &pgx.Batch{}
	batch.Queue(`INSERT INTO accounts (jid, online, status, hiding, status_text, since) VALUES ($1, false, 'undefined', false, '', $2)`, owner, now)
	for j := 0; j < handles; j++ {
		batch.Queue(`INSERT INTO handles (name, account) VALUES ($1, $2)`, fmt.Sprintf("h%d", j), owner)
	}
	return conn.SendBatch(ctx, batch).Close()
}
