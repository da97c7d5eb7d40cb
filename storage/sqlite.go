package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteBusyTimeout is how long a connection waits for another process that
// holds the database lock, in milliseconds.
const sqliteBusyTimeout = 5000

// sqliteStore is the SQLite backend. It uses a single connection, so every
// statement and transaction runs alone and the transactions are trivially
// serializable.
type sqliteStore struct {
	db *sql.DB
	// stmts are the statements of the frequent ops, prepared once: at
	// group commit, preparing each statement again costs more than running
	// it.
	stmts map[OpKind]*sql.Stmt
}

// sqliteStatements are the statements prepared at open, by op.
var sqliteStatements = map[OpKind]string{
	OpSetFlags: `
		INSERT INTO accounts (jid, online, status, explicit, hiding, status_text, since, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (jid) DO UPDATE SET
			online = excluded.online,
			status = excluded.status,
			explicit = excluded.explicit,
			hiding = excluded.hiding,
			status_text = excluded.status_text,
			since = excluded.since`,
	OpAddSubscription: `
		INSERT INTO subscriptions (handle, contact) VALUES (?, ?)
		ON CONFLICT (handle, contact) DO NOTHING`,
	OpRemoveSubscription: "DELETE FROM subscriptions WHERE handle = ? AND contact = ?",
}

var _ Store = (*sqliteStore)(nil)

// OpenSQLite opens the SQLite database in the file at path, creating the
// file if it does not exist (its directory must), and brings its schema up
// to date. The database runs in WAL mode with synchronous=FULL, so a
// committed change survives a crash of the process or of the machine.
//
// Times are stored as integer Unix microseconds.
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	if path == "" {
		return nil, errors.New("storage: open sqlite: empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver splits its DSN at the first '?'.
		return nil, fmt.Errorf("storage: open sqlite %q: path must not contain '?'", path)
	}
	params := url.Values{
		"_busy_timeout": {fmt.Sprint(sqliteBusyTimeout)},
		"_foreign_keys": {"on"},
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		// Take the write lock when a transaction starts rather than when it
		// first writes, so that two processes cannot deadlock upgrading.
		"_txlock": {"immediate"},
	}
	db, err := sql.Open("sqlite", path+"?"+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %q: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &sqliteStore{db: db, stmts: make(map[OpKind]*sql.Stmt)}
	if err := s.upgrade(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open sqlite %q: %w", path, err)
	}
	for kind, query := range sqliteStatements {
		st, err := db.PrepareContext(ctx, query)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: open sqlite %q: prepare %s: %w", path, kind, err)
		}
		s.stmts[kind] = st
	}
	return s, nil
}

// upgrade checks the schema version and applies the missing steps, all in
// one transaction.
func (s *sqliteStore) upgrade(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()

	// journal_mode=WAL cannot change inside a transaction: check that the
	// DSN took effect before starting one.
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL", mode)
	}

	return s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqliteSchemaVersionTable); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		err := tx.QueryRowContext(ctx, "SELECT version FROM schema_version WHERE id = 1").Scan(&version)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read schema version: %w", err)
		}
		if err := checkSchemaVersion(version, len(sqliteMigrations)); err != nil {
			return err
		}
		if version == len(sqliteMigrations) {
			return nil
		}
		for i := version; i < len(sqliteMigrations); i++ {
			if _, err := tx.ExecContext(ctx, sqliteMigrations[i]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO schema_version (id, version) VALUES (1, ?)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version`,
			len(sqliteMigrations))
		if err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
		return nil
	})
}

// inTx runs f in a transaction and commits it if f returns nil.
func (s *sqliteStore) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Close implements Store.
func (s *sqliteStore) Close() error {
	for _, st := range s.stmts {
		st.Close()
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// Load implements Store.
func (s *sqliteStore) Load(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()

	var snap Snapshot
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT jid, online, status, explicit, hiding, status_text, since
			FROM accounts ORDER BY jid`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var a Account
			var status string
			var since int64
			if err := rows.Scan(&a.JID, &a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &since); err != nil {
				rows.Close()
				return err
			}
			a.Flags.Status = Status(status)
			a.Flags.Since = time.UnixMicro(since).UTC()
			snap.Accounts = append(snap.Accounts, a)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, "SELECT name, account FROM handles ORDER BY name")
		if err != nil {
			return err
		}
		for rows.Next() {
			var h Handle
			if err := rows.Scan(&h.Name, &h.Account); err != nil {
				rows.Close()
				return err
			}
			snap.Handles = append(snap.Handles, h)
		}
		if err := closeRows(rows); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, "SELECT handle, contact FROM subscriptions ORDER BY handle, contact")
		if err != nil {
			return err
		}
		for rows.Next() {
			var sub Subscription
			if err := rows.Scan(&sub.Handle, &sub.Contact); err != nil {
				rows.Close()
				return err
			}
			snap.Subscriptions = append(snap.Subscriptions, sub)
		}
		return closeRows(rows)
	})
	if err != nil {
		return nil, fmt.Errorf("storage: load: %w", err)
	}
	return &snap, nil
}

// closeRows closes rows and returns the error that ended the iteration, if
// any.
func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

// Handles implements Store.
func (s *sqliteStore) Handles(ctx context.Context, account string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	rows, err := s.db.QueryContext(ctx, "SELECT name FROM handles WHERE account = ? ORDER BY name", account)
	if err != nil {
		return nil, fmt.Errorf("storage: handles: %w", err)
	}
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("storage: handles: %w", err)
		}
		names = append(names, name)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("storage: handles: %w", err)
	}
	return names, nil
}

// Account implements Store.
func (s *sqliteStore) Account(ctx context.Context, account string) (Account, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	a := Account{JID: account}
	var status string
	var since int64
	err := s.db.QueryRowContext(ctx, `
		SELECT online, status, explicit, hiding, status_text, since
		FROM accounts WHERE jid = ?`, account).
		Scan(&a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return Account{}, ErrNotFound
	} else if err != nil {
		return Account{}, fmt.Errorf("storage: account: %w", err)
	}
	a.Flags.Status = Status(status)
	a.Flags.Since = time.UnixMicro(since).UTC()
	return a, nil
}

// AddHandle implements Store.
func (s *sqliteStore) AddHandle(ctx context.Context, account, handle string, max int, at time.Time) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		created, err = sqliteAddHandle(ctx, tx, account, handle, max, at)
		return err
	})
	if err != nil {
		return false, sqliteError("add handle", err)
	}
	return created, nil
}

// RemoveHandle implements Store.
func (s *sqliteStore) RemoveHandle(ctx context.Context, account, handle string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveHandle, Account: account, Handle: handle})
}

// SetFlags implements Store.
func (s *sqliteStore) SetFlags(ctx context.Context, account string, f Flags) error {
	return applyOne(ctx, s, Op{Kind: OpSetFlags, Account: account, Flags: f})
}

// AddSubscription implements Store.
func (s *sqliteStore) AddSubscription(ctx context.Context, handle, contact string) error {
	return applyOne(ctx, s, Op{Kind: OpAddSubscription, Handle: handle, Contact: contact})
}

// RemoveSubscription implements Store.
func (s *sqliteStore) RemoveSubscription(ctx context.Context, handle, contact string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveSubscription, Handle: handle, Contact: contact})
}

// Apply implements Store. The whole batch is one transaction, so it costs
// one fsync (synchronous=FULL) whatever its length.
func (s *sqliteStore) Apply(ctx context.Context, ops []Op) error {
	return applyInTx(ctx, ops, s.inTx, s.apply, sqliteError)
}

// apply runs one op inside tx.
func (s *sqliteStore) apply(ctx context.Context, tx *sql.Tx, op Op) error {
	var err error
	switch op.Kind {
	case OpAddHandle:
		_, err = sqliteAddHandle(ctx, tx, op.Account, op.Handle, op.Max, op.Now)
	case OpRemoveHandle:
		err = sqliteRemoveHandle(ctx, tx, op.Account, op.Handle)
	case OpSetFlags:
		f := op.Flags
		_, err = tx.StmtContext(ctx, s.stmts[OpSetFlags]).ExecContext(ctx,
			op.Account, f.Online, string(f.Status), f.Explicit, f.Hiding, f.StatusText,
			storedTime(f.Since).UnixMicro(), storedTime(time.Now()).UnixMicro())
	case OpAddSubscription:
		_, err = tx.StmtContext(ctx, s.stmts[OpAddSubscription]).ExecContext(ctx, op.Handle, op.Contact)
	case OpRemoveSubscription:
		_, err = tx.StmtContext(ctx, s.stmts[OpRemoveSubscription]).ExecContext(ctx, op.Handle, op.Contact)
	}
	return err
}

func sqliteAddHandle(ctx context.Context, tx *sql.Tx, account, handle string, max int, at time.Time) (created bool, err error) {
	now := storedTime(at).UnixMicro()
	res, err := tx.ExecContext(ctx, `
		INSERT INTO accounts (jid, online, status, hiding, status_text, since, created_at)
		VALUES (?, 0, 'undefined', 0, '', ?, ?)
		ON CONFLICT (jid) DO NOTHING`,
		account, now, now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	created = n == 1

	var exists bool
	err = tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM handles WHERE name = ?)", handle).Scan(&exists)
	if err != nil {
		return false, err
	}
	if exists {
		return false, ErrExists
	}

	var count int
	err = tx.QueryRowContext(ctx, "SELECT count(*) FROM handles WHERE account = ?", account).Scan(&count)
	if err != nil {
		return false, err
	}
	if count >= max {
		return false, ErrLimit
	}

	_, err = tx.ExecContext(ctx, "INSERT INTO handles (name, account, created_at) VALUES (?, ?, ?)", handle, account, now)
	return created, err
}

func sqliteRemoveHandle(ctx context.Context, tx *sql.Tx, account, handle string) error {
	var owner string
	err := tx.QueryRowContext(ctx, "SELECT account FROM handles WHERE name = ?", handle).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	if owner != account {
		return ErrNotOwner
	}
	// The subscriptions go by ON DELETE CASCADE.
	_, err = tx.ExecContext(ctx, "DELETE FROM handles WHERE name = ?", handle)
	return err
}

// sqliteError returns the sentinel error that err stands for, or err
// wrapped with the name of the operation.
func sqliteError(op string, err error) error {
	switch {
	case IsRowError(err):
		return err
	}
	var serr *sqlite.Error
	if errors.As(err, &serr) {
		switch serr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return ErrExists
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return ErrNotFound
		}
	}
	return fmt.Errorf("storage: %s: %w", op, err)
}
