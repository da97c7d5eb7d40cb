// Package shared holds what both modes of the load harness need alike:
// the XEP-0114 handshake digest, free ports and secrets, presenced's
// configuration, and the direct SQL prefill of presenced's SQLite database.
package shared

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"time"

	"presenced/storage"
)

// HandshakeDigest is the XEP-0114 handshake value: lower-case hex of
// SHA-1(stream id + secret).
func HandshakeDigest(id, secret string) string {
	sum := sha1.Sum([]byte(id + secret))
	return hex.EncodeToString(sum[:])
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePorts returns n distinct TCP ports of 127.0.0.1 that were free a
// moment ago (all held open at once, so that they differ).
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ps := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free port: %w", err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	return ps, nil
}

// Config is what presenced's configuration file says.
type Config struct {
	Domain, Server, Secret string
	ResyncDelay            string // e.g. "200ms"
	Driver, DSN            string
	// MaxHandles, when over presenced's default of 64, is written as
	// accounts.max_handles.
	MaxHandles int
	// LogLevel is log.level; empty means "warn".
	LogLevel string
}

// PresencedConfig renders presenced's configuration. It writes no key that
// older builds do not know (such as component.resource): they reject
// unknown keys.
func PresencedConfig(c Config) string {
	s := fmt.Sprintf(`[component]
domain = %q
server = %q
secret = %q
resync_delay = %q

[storage]
driver = %q
dsn = %q

[log]
level = %q
`, c.Domain, c.Server, c.Secret, c.ResyncDelay, c.Driver, c.DSN, cmp.Or(c.LogLevel, "warn"))
	if c.MaxHandles > 64 {
		s += fmt.Sprintf("\n[accounts]\nmax_handles = %d\n", c.MaxHandles)
	}
	return s
}

// SQLiteFill writes presenced's tables directly, in one transaction, far
// faster than through storage. It is the one place of the harness coupled
// to the storage schema's tables and columns.
type SQLiteFill struct {
	db               *sql.DB
	tx               *sql.Tx
	acc, handle, sub *sql.Stmt
	now              int64
}

// OpenSQLiteFill creates the schema at path through storage, then opens a
// transaction to fill it. Call Commit, and Close in every case.
func OpenSQLiteFill(ctx context.Context, path string) (*SQLiteFill, error) {
	st, err := storage.OpenSQLite(ctx, path) // creates the schema
	if err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	return OpenSQLiteTables(ctx, path)
}

// OpenSQLiteTables opens a transaction to fill the tables at path, made
// already (by a presenced build of any schema version: the fill writes
// only columns every version has).
func OpenSQLiteTables(ctx context.Context, path string) (*SQLiteFill, error) {
	var err error
	f := &SQLiteFill{now: time.Now().UTC().UnixMicro()}
	if f.db, err = sql.Open("sqlite", path+"?_foreign_keys=on&_journal_mode=WAL"); err != nil {
		return nil, err
	}
	if err := f.prepare(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// prepare begins the transaction and prepares the three inserts.
func (f *SQLiteFill) prepare(ctx context.Context) error {
	var err error
	if f.tx, err = f.db.BeginTx(ctx, nil); err != nil {
		return err
	}
	stmts := []struct {
		dst **sql.Stmt
		sql string
	}{
		{&f.acc, `INSERT INTO accounts (jid, online, status, hiding, status_text, since, created_at) VALUES (?, 0, 'undefined', 0, '', ?, ?)`},
		{&f.handle, `INSERT INTO handles (name, account, created_at) VALUES (?, ?, ?)`},
		{&f.sub, `INSERT INTO subscriptions (handle, contact) VALUES (?, ?)`},
	}
	for _, s := range stmts {
		if *s.dst, err = f.tx.PrepareContext(ctx, s.sql); err != nil {
			return fmt.Errorf("prepare %s: %w", strings.Fields(s.sql)[2], err)
		}
	}
	return nil
}

// Account adds an off-line account.
func (f *SQLiteFill) Account(ctx context.Context, jid string) error {
	if _, err := f.acc.ExecContext(ctx, jid, f.now, f.now); err != nil {
		return fmt.Errorf("prefill accounts: %w", err)
	}
	return nil
}

// Handle adds handle name of account.
func (f *SQLiteFill) Handle(ctx context.Context, name, account string) error {
	if _, err := f.handle.ExecContext(ctx, name, account, f.now); err != nil {
		return fmt.Errorf("prefill handles: %w", err)
	}
	return nil
}

// Subscription subscribes contact (a bare JID) to handle.
func (f *SQLiteFill) Subscription(ctx context.Context, handle, contact string) error {
	if _, err := f.sub.ExecContext(ctx, handle, contact); err != nil {
		return fmt.Errorf("prefill subscriptions: %w", err)
	}
	return nil
}

// Commit commits the transaction.
func (f *SQLiteFill) Commit() error { return f.tx.Commit() }

// Close rolls back what was not committed and closes the database.
func (f *SQLiteFill) Close() {
	if f.tx != nil {
		_ = f.tx.Rollback()
	}
	f.db.Close()
}

// Thousands writes n with a comma every three digits.
func Thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
