package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgreSQL error codes that stand for sentinel errors.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// postgresMigrationLock is the key of the advisory lock held while the
// schema is checked and upgraded, so that two processes opening the same
// database at once do not both try to create it.
const postgresMigrationLock = 0x70726573656e6365 // "presence"

// postgresStore is the PostgreSQL backend.
type postgresStore struct {
	pool *pgxpool.Pool
}

var _ Store = (*postgresStore)(nil)

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// keyword/value connection string, as understood by pgx) and brings its
// schema up to date. The returned errors never contain the password.
//
// Times are stored as timestamptz, to the microsecond.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the connection string, and pgx can only
		// hide the password from it on a best-effort basis.
		return nil, errors.New("storage: open postgres: invalid connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	s := &postgresStore{pool: pool}
	if err := s.upgrade(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	return s, nil
}

// upgrade checks the schema version and applies the missing steps, all in
// one transaction.
func (s *postgresStore) upgrade(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()

	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(postgresMigrationLock)); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		if _, err := tx.Exec(ctx, postgresSchemaVersionTable); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, "SELECT version FROM schema_version WHERE id = 1").Scan(&version)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read schema version: %w", err)
		}
		if err := checkSchemaVersion(version, len(postgresMigrations)); err != nil {
			return err
		}
		if version == len(postgresMigrations) {
			return nil
		}
		for i := version; i < len(postgresMigrations); i++ {
			if _, err := tx.Exec(ctx, postgresMigrations[i]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO schema_version (id, version) VALUES (1, $1)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version`,
			len(postgresMigrations))
		if err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
		return nil
	})
}

// Close implements Store.
func (s *postgresStore) Close() error {
	s.pool.Close()
	return nil
}

// Load implements Store. It reads from one snapshot of the database.
func (s *postgresStore) Load(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()

	var snap Snapshot
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, s.pool, opts, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `
			SELECT jid, online, status, explicit, hiding, status_text, since
			FROM accounts ORDER BY jid`)
		var a Account
		var status string
		_, err := pgx.ForEachRow(rows, []any{&a.JID, &a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &a.Flags.Since}, func() error {
			a.Flags.Status = Status(status)
			a.Flags.Since = a.Flags.Since.UTC()
			snap.Accounts = append(snap.Accounts, a)
			return nil
		})
		if err != nil {
			return err
		}

		rows, _ = tx.Query(ctx, "SELECT name, account FROM handles ORDER BY name")
		var h Handle
		_, err = pgx.ForEachRow(rows, []any{&h.Name, &h.Account}, func() error {
			snap.Handles = append(snap.Handles, h)
			return nil
		})
		if err != nil {
			return err
		}

		rows, _ = tx.Query(ctx, "SELECT handle, contact FROM subscriptions ORDER BY handle, contact")
		var sub Subscription
		_, err = pgx.ForEachRow(rows, []any{&sub.Handle, &sub.Contact}, func() error {
			snap.Subscriptions = append(snap.Subscriptions, sub)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: load: %w", err)
	}
	return &snap, nil
}

// Handles implements Store.
func (s *postgresStore) Handles(ctx context.Context, account string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	rows, _ := s.pool.Query(ctx, "SELECT name FROM handles WHERE account = $1 ORDER BY name", account)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("storage: handles: %w", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	return names, nil
}

// Account implements Store.
func (s *postgresStore) Account(ctx context.Context, account string) (Account, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	a := Account{JID: account}
	var status string
	err := s.pool.QueryRow(ctx, `
		SELECT online, status, explicit, hiding, status_text, since
		FROM accounts WHERE jid = $1`, account).
		Scan(&a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &a.Flags.Since)
	if err != nil {
		return Account{}, postgresError("account", err)
	}
	a.Flags.Status = Status(status)
	a.Flags.Since = a.Flags.Since.UTC()
	return a, nil
}

// AddHandle implements Store. The account's row is locked for the rest of
// the transaction, so concurrent adds to one account are counted one after
// the other.
func (s *postgresStore) AddHandle(ctx context.Context, account, handle string, max int, at time.Time) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		created, err = postgresAddHandle(ctx, tx, account, handle, max, at)
		return err
	})
	if err != nil {
		return false, postgresError("add handle", err)
	}
	return created, nil
}

// RemoveHandle implements Store.
func (s *postgresStore) RemoveHandle(ctx context.Context, account, handle string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveHandle, Account: account, Handle: handle})
}

// SetFlags implements Store.
func (s *postgresStore) SetFlags(ctx context.Context, account string, f Flags) error {
	return applyOne(ctx, s, Op{Kind: OpSetFlags, Account: account, Flags: f})
}

// AddSubscription implements Store.
func (s *postgresStore) AddSubscription(ctx context.Context, handle, contact string) error {
	return applyOne(ctx, s, Op{Kind: OpAddSubscription, Handle: handle, Contact: contact})
}

// RemoveSubscription implements Store.
func (s *postgresStore) RemoveSubscription(ctx context.Context, handle, contact string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveSubscription, Handle: handle, Contact: contact})
}

// Apply implements Store: one transaction, one commit, whatever the length
// of the batch.
func (s *postgresStore) Apply(ctx context.Context, ops []Op) error {
	inTx := func(ctx context.Context, f func(pgx.Tx) error) error { return pgx.BeginFunc(ctx, s.pool, f) }
	return applyInTx(ctx, ops, inTx, postgresApply, postgresError)
}

// postgresApply runs one op inside tx.
func postgresApply(ctx context.Context, tx pgx.Tx, op Op) error {
	var err error
	switch op.Kind {
	case OpAddHandle:
		_, err = postgresAddHandle(ctx, tx, op.Account, op.Handle, op.Max, op.Now)
	case OpRemoveHandle:
		err = postgresRemoveHandle(ctx, tx, op.Account, op.Handle)
	case OpSetFlags:
		f := op.Flags
		_, err = tx.Exec(ctx, `
			INSERT INTO accounts (jid, online, status, explicit, hiding, status_text, since)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (jid) DO UPDATE SET
				online = excluded.online,
				status = excluded.status,
				explicit = excluded.explicit,
				hiding = excluded.hiding,
				status_text = excluded.status_text,
				since = excluded.since`,
			op.Account, f.Online, string(f.Status), f.Explicit, f.Hiding, f.StatusText, storedTime(f.Since))
	case OpAddSubscription:
		_, err = tx.Exec(ctx, `
			INSERT INTO subscriptions (handle, contact) VALUES ($1, $2)
			ON CONFLICT (handle, contact) DO NOTHING`,
			op.Handle, op.Contact)
	case OpRemoveSubscription:
		_, err = tx.Exec(ctx, "DELETE FROM subscriptions WHERE handle = $1 AND contact = $2", op.Handle, op.Contact)
	}
	return err
}

func postgresAddHandle(ctx context.Context, tx pgx.Tx, account, handle string, max int, at time.Time) (created bool, err error) {
	now := storedTime(at)
	tag, err := tx.Exec(ctx, `
		INSERT INTO accounts (jid, online, status, hiding, status_text, since)
		VALUES ($1, FALSE, 'undefined', FALSE, '', $2)
		ON CONFLICT (jid) DO NOTHING`,
		account, now)
	if err != nil {
		return false, err
	}
	created = tag.RowsAffected() == 1
	if _, err := tx.Exec(ctx, "SELECT FROM accounts WHERE jid = $1 FOR UPDATE", account); err != nil {
		return false, err
	}

	var exists bool
	err = tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM handles WHERE name = $1)", handle).Scan(&exists)
	if err != nil {
		return false, err
	}
	if exists {
		return false, ErrExists
	}

	var count int
	err = tx.QueryRow(ctx, "SELECT count(*) FROM handles WHERE account = $1", account).Scan(&count)
	if err != nil {
		return false, err
	}
	if count >= max {
		return false, ErrLimit
	}

	// A concurrent transaction may have taken the name since the check
	// above: the unique violation then stands for ErrExists.
	_, err = tx.Exec(ctx, "INSERT INTO handles (name, account) VALUES ($1, $2)", handle, account)
	return created, err
}

func postgresRemoveHandle(ctx context.Context, tx pgx.Tx, account, handle string) error {
	var owner string
	err := tx.QueryRow(ctx, "SELECT account FROM handles WHERE name = $1 FOR UPDATE", handle).Scan(&owner)
	if err != nil {
		return err
	}
	if owner != account {
		return ErrNotOwner
	}
	// The subscriptions go by ON DELETE CASCADE.
	_, err = tx.Exec(ctx, "DELETE FROM handles WHERE name = $1", handle)
	return err
}

// postgresError returns the sentinel error that err stands for, or err
// wrapped with the name of the operation.
func postgresError(op string, err error) error {
	switch {
	case IsRowError(err):
		return err
	case errors.Is(err, pgx.ErrNoRows):
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgUniqueViolation:
			return ErrExists
		case pgForeignKeyViolation:
			return ErrNotFound
		}
	}
	return fmt.Errorf("storage: %s: %w", op, err)
}
