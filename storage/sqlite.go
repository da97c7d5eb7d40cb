package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
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
	// lock is the open lock file whose flock is the instance lock.
	lock *os.File
	// lost is never closed: a flock is not lost while its file is open.
	lost chan struct{}
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
	OpAddRequest: `
		INSERT INTO requests (handle, contact, created_at) VALUES (?, ?, ?)
		ON CONFLICT (handle, contact) DO NOTHING`,
	// AddSubscription runs it too, for the request it answers (Answers).
	OpRemoveRequest: "DELETE FROM requests WHERE handle = ? AND contact = ?",
	// Run once per contact: a removed handle may have had thousands.
	OpNoticesSent: "DELETE FROM notices WHERE handle = ? AND contact = ?",
	OpUnblock:     "DELETE FROM blocked WHERE account = ? AND contact = ?",
	// Run once per contact listed, after the notices are recorded: the
	// notice of a listed subscriber takes its own stamp.
	OpRemoveHandle: `
		UPDATE notices SET since = ?
		WHERE handle = ? AND contact = ? AND account = ?
			AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.handle = notices.handle AND s.contact = notices.contact)`,
	// Run once per contact. Selecting from subscriptions skips a contact
	// that is not subscribed, which the foreign key would refuse. The
	// parameters are numbered to take the handle and the contact first,
	// as the other statements run once per contact do (execEach).
	OpKeep: `
		INSERT INTO kept (handle, contact, since)
		SELECT handle, contact, ?3 FROM subscriptions WHERE handle = ?1 AND contact = ?2
		ON CONFLICT (handle, contact) DO UPDATE SET since = excluded.since`,
	OpUnkeep: "DELETE FROM kept WHERE handle = ? AND contact = ?",
}

var _ Store = (*sqliteStore)(nil)

// OpenSQLite opens the SQLite database in the file at path, creating the
// file if it does not exist (its directory must), and brings its schema up
// to date. The database runs in WAL mode with synchronous=FULL, so a
// committed change survives a crash of the process or of the machine.
//
// The instance lock is a flock on the file path+".lock", created if needed
// and never deleted. OpenSQLite waits while another process holds it, as
// OpenWith does with the zero Options.
//
// Times are stored as integer Unix microseconds.
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	return openSQLite(ctx, path, Options{})
}

// openSQLite is OpenSQLite with the options of OpenWith.
func openSQLite(ctx context.Context, path string, opts Options) (Store, error) {
	if path == "" {
		return nil, errors.New("storage: open sqlite: empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver splits its DSN at the first '?'.
		return nil, fmt.Errorf("storage: open sqlite %q: path must not contain '?'", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		// Caught before the lock file is made beside it.
		return nil, fmt.Errorf("storage: open sqlite %q: is a directory", path)
	}
	lock, err := lockFile(ctx, path+".lock", opts.Waiting)
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %q: %w", path, err)
	}
	s, err := openSQLiteLocked(ctx, path)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("storage: open sqlite %q: %w", path, err)
	}
	s.lock = lock
	return s, nil
}

// openSQLiteLocked opens the database at path, whose instance lock the
// caller holds.
func openSQLiteLocked(ctx context.Context, path string) (*sqliteStore, error) {
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
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &sqliteStore{db: db, stmts: make(map[OpKind]*sql.Stmt), lost: make(chan struct{})}
	if err := s.upgrade(ctx); err != nil {
		db.Close()
		return nil, err
	}
	for kind, query := range sqliteStatements {
		st, err := db.PrepareContext(ctx, query)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("prepare %s: %w", kind, err)
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

// Close implements Store. The instance lock goes last, once nothing of
// this store can write any more.
func (s *sqliteStore) Close() error {
	for _, st := range s.stmts {
		st.Close()
	}
	err := s.db.Close()
	// Closing the file drops the flock; a second Close finds it closed
	// already, which is no error of the store's.
	s.lock.Close()
	if err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// Lost implements Store: the returned channel is never closed.
func (s *sqliteStore) Lost() <-chan struct{} { return s.lost }

// Ping implements Store. It reads a row in a transaction of the store's,
// which takes the database's write lock as every change does (BEGIN
// IMMEDIATE) and drops it at once, having written nothing: so it fails, as
// the next Apply would, while another process (a sqlite3 shell, a backup)
// holds that lock, and not only when the database file does not answer.
// It runs on the one connection every change uses, so it waits for a
// transaction in progress. The instance lock needs no check: a flock is
// held while its file is open, that is until Close, after which the
// transaction fails to begin.
func (s *sqliteStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var version int
		return tx.QueryRowContext(ctx, "SELECT version FROM schema_version WHERE id = 1").Scan(&version)
	})
	if err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	return nil
}

// Load implements Store.
func (s *sqliteStore) Load(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()

	var snap Snapshot
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, load := range []func(context.Context, *sql.Tx, *Snapshot) error{
			sqliteLoadAccounts, sqliteLoadHandles, sqliteLoadSubscriptions,
			sqliteLoadRequests, sqliteLoadRemoved, sqliteLoadNotices,
			sqliteLoadBlocked, sqliteLoadKept,
		} {
			if err := load(ctx, tx, &snap); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: load: %w", err)
	}
	return &snap, nil
}

func sqliteLoadAccounts(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var a Account
	var status string
	var since int64
	return sqliteEach(ctx, tx, `
		SELECT jid, online, status, explicit, hiding, status_text, since
		FROM accounts ORDER BY jid`,
		[]any{&a.JID, &a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &since},
		func() {
			a.Flags.Status = Status(status)
			a.Flags.Since = time.UnixMicro(since).UTC()
			snap.Accounts = append(snap.Accounts, a)
		})
}

func sqliteLoadHandles(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var h Handle
	var policy string
	var hiddenSince sql.NullInt64
	return sqliteEach(ctx, tx, "SELECT name, account, policy, hidden_since, web FROM handles ORDER BY name",
		[]any{&h.Name, &h.Account, &policy, &hiddenSince, &h.Web},
		func() {
			h.Policy = Policy(policy)
			h.Hidden, h.HiddenSince = hiddenSince.Valid, sqliteNullTime(hiddenSince)
			snap.Handles = append(snap.Handles, h)
		})
}

func sqliteLoadSubscriptions(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var sub Subscription
	return sqliteEach(ctx, tx, "SELECT handle, contact FROM subscriptions ORDER BY handle, contact",
		[]any{&sub.Handle, &sub.Contact},
		func() { snap.Subscriptions = append(snap.Subscriptions, sub) })
}

func sqliteLoadRequests(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var r Request
	var at int64
	return sqliteEach(ctx, tx, "SELECT handle, contact, created_at FROM requests ORDER BY handle, created_at, contact",
		[]any{&r.Handle, &r.Contact, &at},
		func() {
			r.At = time.UnixMicro(at).UTC()
			snap.Requests = append(snap.Requests, r)
		})
}

func sqliteLoadRemoved(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var r RemovedName
	var at int64
	return sqliteEach(ctx, tx, "SELECT name, account, removed_at FROM removed_names ORDER BY name",
		[]any{&r.Name, &r.Account, &at},
		func() {
			r.At = time.UnixMicro(at).UTC()
			snap.Removed = append(snap.Removed, r)
		})
}

func sqliteLoadNotices(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var n Notice
	var since sql.NullInt64
	return sqliteEach(ctx, tx, "SELECT handle, account, contact, since FROM notices ORDER BY handle, contact",
		[]any{&n.Handle, &n.Account, &n.Contact, &since},
		func() {
			n.Since = sqliteNullTime(since)
			snap.Notices = append(snap.Notices, n)
		})
}

func sqliteLoadBlocked(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var b Block
	var since int64
	return sqliteEach(ctx, tx, "SELECT account, contact, since FROM blocked ORDER BY account, contact",
		[]any{&b.Account, &b.Contact, &since},
		func() {
			b.Since = time.UnixMicro(since).UTC()
			snap.Blocked = append(snap.Blocked, b)
		})
}

func sqliteLoadKept(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	var k Kept
	var since int64
	return sqliteEach(ctx, tx, "SELECT handle, contact, since FROM kept ORDER BY handle, contact",
		[]any{&k.Handle, &k.Contact, &since},
		func() {
			k.Since = time.UnixMicro(since).UTC()
			snap.Kept = append(snap.Kept, k)
		})
}

// sqliteNullTime returns the time stored as t, or the zero time for NULL.
func sqliteNullTime(t sql.NullInt64) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return time.UnixMicro(t.Int64).UTC()
}

// sqliteStamp returns t as stored in a column where NULL stands for the
// zero time.
func sqliteStamp(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return storedTime(t).UnixMicro()
}

// sqliteEach runs query in tx and calls each after scanning each row into
// dest.
func sqliteEach(ctx context.Context, tx *sql.Tx, query string, dest []any, each func()) error {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return err
		}
		each()
	}
	return closeRows(rows)
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
	op := Op{Kind: OpAddHandle, Account: account, Handle: handle, Max: max, Now: at, Policy: PolicyAsk}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		created, err = sqliteAddHandle(ctx, tx, op)
		return err
	})
	if err != nil {
		return false, sqliteError("add handle", err)
	}
	return created, nil
}

// RemoveHandle implements Store.
func (s *sqliteStore) RemoveHandle(ctx context.Context, account, handle string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveHandle, Account: account, Handle: handle, Now: time.Now()})
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
	return applyInTx(ctx, ops, s.inBatch, applyEach(s.apply, sqliteError))
}

// batchTx is the transaction of one Apply, with the prepared statements
// bound to it as they are first used: binding one (tx.StmtContext) takes
// the connection and allocates, which at group commit cost as much as the
// statement, once per op.
type batchTx struct {
	*sql.Tx
	s     *sqliteStore
	bound map[OpKind]*sql.Stmt
}

// inBatch runs f in a transaction, as inTx does, for Apply.
func (s *sqliteStore) inBatch(ctx context.Context, f func(*batchTx) error) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		return f(&batchTx{Tx: tx, s: s, bound: make(map[OpKind]*sql.Stmt, len(s.stmts))})
	})
}

// exec runs the statement prepared for kind inside the transaction.
func (b *batchTx) exec(ctx context.Context, kind OpKind, args ...any) error {
	st := b.bound[kind]
	if st == nil {
		st = b.Tx.StmtContext(ctx, b.s.stmts[kind])
		b.bound[kind] = st
	}
	_, err := st.ExecContext(ctx, args...)
	return err
}

// execEach runs the statement prepared for kind once for each of
// contacts, with the parameters handle, the contact, then extra.
func (b *batchTx) execEach(ctx context.Context, kind OpKind, handle string, contacts []string, extra ...any) error {
	args := append([]any{handle, nil}, extra...)
	for _, contact := range contacts {
		args[1] = contact
		if err := b.exec(ctx, kind, args...); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one op inside tx.
func (s *sqliteStore) apply(ctx context.Context, b *batchTx, op Op) error {
	tx := b.Tx
	var err error
	switch op.Kind {
	case OpAddHandle:
		_, err = sqliteAddHandle(ctx, tx, op)
	case OpRemoveHandle:
		err = sqliteRemoveHandle(ctx, b, op)
	case OpSetFlags:
		f := op.Flags
		err = b.exec(ctx, OpSetFlags,
			op.Account, f.Online, string(f.Status), f.Explicit, f.Hiding, f.StatusText,
			storedTime(f.Since).UnixMicro(), storedTime(time.Now()).UnixMicro())
	case OpAddSubscription:
		if err = b.exec(ctx, OpAddSubscription, op.Handle, op.Contact); err == nil && op.Answers {
			err = b.exec(ctx, OpRemoveRequest, op.Handle, op.Contact)
		}
	case OpRemoveSubscription:
		err = b.exec(ctx, OpRemoveSubscription, op.Handle, op.Contact)
	case OpAddRequest:
		err = b.exec(ctx, OpAddRequest, op.Handle, op.Contact, storedTime(op.Now).UnixMicro())
	case OpRemoveRequest:
		err = b.exec(ctx, OpRemoveRequest, op.Handle, op.Contact)
	case OpNoticesSent:
		err = b.execEach(ctx, OpNoticesSent, op.Handle, op.Contacts)
	case OpSetPolicy:
		err = sqliteUpdateOwned(ctx, tx, op, "policy", string(op.Policy))
	case OpSetVisibility:
		// NULL is shown; the zero time is a stamp like any other.
		var since any
		if op.Hidden {
			since = storedTime(op.Now).UnixMicro()
		}
		err = sqliteUpdateOwned(ctx, tx, op, "hidden_since", since)
	case OpBlock:
		err = sqliteBlock(ctx, tx, op)
	case OpUnblock:
		err = b.exec(ctx, OpUnblock, op.Account, op.Contact)
	case OpKeep:
		err = b.execEach(ctx, OpKeep, op.Handle, op.Contacts, storedTime(op.Now).UnixMicro())
	case OpUnkeep:
		err = b.execEach(ctx, OpUnkeep, op.Handle, op.Contacts)
	case OpSetWeb:
		err = sqliteUpdateOwned(ctx, tx, op, "web", op.Web)
	}
	return err
}

func sqliteAddHandle(ctx context.Context, tx *sql.Tx, op Op) (created bool, err error) {
	account, handle := op.Account, op.Handle
	now := storedTime(op.Now).UnixMicro()
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
	if count >= op.Max {
		return false, ErrLimit
	}

	_, err = tx.ExecContext(ctx, "INSERT INTO handles (name, account, policy, created_at) VALUES (?, ?, ?, ?)",
		handle, account, string(op.Policy), now)
	if err != nil {
		return false, err
	}
	// The name is held again: no quarantine applies to it any more.
	_, err = tx.ExecContext(ctx, "DELETE FROM removed_names WHERE name = ?", handle)
	return created, err
}

func sqliteRemoveHandle(ctx context.Context, b *batchTx, op Op) error {
	tx := b.Tx
	if err := sqliteCheckOwner(ctx, tx, op.Account, op.Handle); err != nil {
		return err
	}
	// The subscribers are owed their notices even once the handle is gone,
	// and the name is remembered for its quarantine. Read before the
	// subscriptions go: every notice takes op.Stamp, then those of the
	// listed contacts their own.
	_, err := tx.ExecContext(ctx, `
		INSERT INTO notices (handle, account, contact, since)
		SELECT handle, ?, contact, ? FROM subscriptions WHERE handle = ?
		ON CONFLICT (handle, contact) DO NOTHING`,
		op.Account, sqliteStamp(op.Stamp), op.Handle)
	if err != nil {
		return err
	}
	for i, contact := range op.Contacts {
		err := b.exec(ctx, OpRemoveHandle, sqliteStamp(op.Stamps[i]), op.Handle, contact, op.Account)
		if err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `
		INSERT INTO removed_names (name, account, removed_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET account = excluded.account, removed_at = excluded.removed_at`,
		op.Handle, op.Account, storedTime(op.Now).UnixMicro())
	if err != nil {
		return err
	}
	// The subscriptions, their kept stamps and the requests go by ON
	// DELETE CASCADE.
	_, err = tx.ExecContext(ctx, "DELETE FROM handles WHERE name = ?", op.Handle)
	return err
}

// sqliteUpdateOwned sets column (a constant of the caller's) of the
// handle of op to value, once sqliteCheckOwner finds that op's account
// holds it.
func sqliteUpdateOwned(ctx context.Context, tx *sql.Tx, op Op, column string, value any) error {
	if err := sqliteCheckOwner(ctx, tx, op.Account, op.Handle); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "UPDATE handles SET "+column+" = ? WHERE name = ?", value, op.Handle)
	return err
}

func sqliteBlock(ctx context.Context, tx *sql.Tx, op Op) error {
	// An unknown account fails the foreign key: ErrNotFound.
	_, err := tx.ExecContext(ctx, `
		INSERT INTO blocked (account, contact, since) VALUES (?, ?, ?)
		ON CONFLICT (account, contact) DO NOTHING`,
		op.Account, op.Contact, storedTime(op.Now).UnixMicro())
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `
		DELETE FROM requests
		WHERE contact = ? AND handle IN (SELECT name FROM handles WHERE account = ?)`,
		op.Contact, op.Account)
	return err
}

// sqliteCheckOwner returns ErrNotFound if no account holds the handle and
// ErrNotOwner if one other than account does.
func sqliteCheckOwner(ctx context.Context, tx *sql.Tx, account, handle string) error {
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
	return nil
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
