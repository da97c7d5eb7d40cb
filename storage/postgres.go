package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"
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

// postgresInstanceLock is the key of the session advisory lock that is the
// instance lock of a PostgreSQL database.
const postgresInstanceLock = 0x7072736e6c6f636b // "prsnlock"

// postgresLockHolder finds the session that holds the advisory lock of key
// $1 in the current database (a bigint key is split into classid and objid,
// with objsubid 1). Its backend_start is NULL to a role that may not see
// that session's details: one of another role is never this store's.
const postgresLockHolder = `
	SELECT l.pid, a.backend_start
	FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((l.classid::int8 << 32) | l.objid::int8) = $1`

// How the monitor watches the lock connection.
const (
	// lockPingInterval is how often it checks the connection while the lock
	// is held: a dead session has dropped the lock, and the sooner the
	// store knows, the fewer changes it takes only to fail them.
	lockPingInterval = time.Second
	// lockRetryInterval is how often it tries to connect and take the lock
	// again once the connection is lost.
	lockRetryInterval = 250 * time.Millisecond
)

// Errors of a store that cannot use its lock connection. They are no
// sentinels: the first means the database failed, the second that the
// caller did.
var (
	errLockDown = errors.New("the database connection is lost: the instance lock is not held until it is back")
	errClosed   = errors.New("store is closed")
	// errConnClosed is what dropLocked logs when the connection was
	// closed by a call that succeeded all the same.
	errConnClosed = errors.New("connection closed")
)

// postgresStore is the PostgreSQL backend.
//
// The instance lock is a session advisory lock, held by a connection of its
// own, conn: PostgreSQL drops it when that session ends, so a process whose
// connection died no longer holds it. Load and every change run on conn,
// so that nothing can commit from a process that lost the lock, and so do
// the few reads, for tests and tools. A monitor goroutine pings conn,
// and when the session is gone, connects again and takes the lock back if
// no other process took it in between.
type postgresStore struct {
	connCfg *pgx.ConnConfig // how to connect the lock connection again
	log     *slog.Logger

	// sem holds a token while conn and the fields below are in use: a
	// mutex whose wait ends with a context, so that an Apply queued behind
	// one stuck on a dead network keeps to its own deadline.
	sem    chan struct{}
	conn   *pgx.Conn // the lock connection; nil while the lock is not held
	closed bool

	// session is the last session that held the lock, and generation the
	// lock generation this store moved on to when it took it. Only open
	// and then the monitor write them, and only the monitor reads them.
	session    pgSession
	generation int64

	lost chan struct{}      // closed by the monitor once the lock is lost for good
	wake chan struct{}      // tells the monitor that conn was dropped
	stop context.CancelFunc // ends the monitor
	done chan struct{}      // closed when the monitor has returned
}

// pgSession identifies a PostgreSQL session: its backend's pid, and when
// that backend started, since a pid is reused once its backend has ended.
type pgSession struct {
	pid   uint32
	start time.Time
}

func (a pgSession) is(b pgSession) bool { return a.pid == b.pid && a.start.Equal(b.start) }

var _ Store = (*postgresStore)(nil)

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// keyword/value connection string, as understood by pgx) and brings its
// schema up to date. The returned errors never contain the password.
//
// The instance lock is a session advisory lock, held by a connection
// opened for it. OpenPostgres waits while another process holds it, as
// OpenWith does with the zero Options.
//
// Times are stored as timestamptz, to the microsecond.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	return openPostgres(ctx, dsn, Options{})
}

// openPostgres is OpenPostgres with the options of OpenWith.
func openPostgres(ctx context.Context, dsn string, opts Options) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the connection string, and pgx can only
		// hide the password from it on a best-effort basis.
		return nil, errors.New("storage: open postgres: invalid connection string")
	}
	// A statement past its deadline is cancelled on the server, and the
	// connection closed only if the server does not answer the cancel:
	// pgx's default closes it at once, which ends the session and with it
	// the instance lock, so a merely slow database would hand the
	// database over to a standby.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	s := &postgresStore{
		connCfg: cfg,
		log:     opts.logger(),
		sem:     make(chan struct{}, 1),
		lost:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if err := s.open(ctx, opts.Waiting); err != nil {
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	monitorCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.monitor(monitorCtx)
	return s, nil
}

// open takes the instance lock, waiting for it, and only then upgrades the
// schema, moving the lock generation on in the same transaction.
func (s *postgresStore) open(ctx context.Context, waiting func()) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	err = waitForLock(ctx, waiting, func() (ok bool, err error) {
		ok, s.session, err = tryLock(ctx, conn)
		return ok, err
	})
	if err == nil {
		s.generation, err = s.upgrade(ctx, conn)
	}
	if err != nil {
		// Ending the session releases the lock.
		closeConn(conn)
		return err
	}
	s.conn = conn
	return nil
}

// connect opens a lock connection, which holds no lock yet.
func (s *postgresStore) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	return pgx.ConnectConfig(ctx, s.connCfg)
}

// tryLock takes the instance lock on conn if no other session holds it, and
// returns conn's session.
func tryLock(ctx context.Context, conn *pgx.Conn) (bool, pgSession, error) {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	var ok bool
	var pid int64
	var start time.Time
	err := conn.QueryRow(ctx, `
		SELECT pg_try_advisory_lock($1), pid, backend_start
		FROM pg_stat_activity WHERE pid = pg_backend_pid()`,
		int64(postgresInstanceLock)).Scan(&ok, &pid, &start)
	return ok, pgSession{pid: uint32(pid), start: start}, err
}

// closeConn ends the session of conn, and so its locks, however it fails.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
	defer cancel()
	conn.Close(ctx)
}

// upgrade checks the schema version and applies the missing steps, all in
// one transaction on conn, which holds the instance lock. It is the one
// step of the lock connection bound by migrateTimeout rather than
// lockTimeout: a step may rewrite a large table.
func (s *postgresStore) upgrade(ctx context.Context, conn *pgx.Conn) (generation int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The instance lock already keeps two stores of this version
		// apart; an older presenced takes only this one.
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
		if version < len(postgresMigrations) {
			if err := postgresMigrate(ctx, tx, version); err != nil {
				return err
			}
		}
		// Last, in the same transaction: an instance that crashed after
		// upgrading has not taken the lock at a generation of its own.
		err = tx.QueryRow(ctx, "UPDATE instance_lock SET generation = generation + 1 WHERE id = 1 RETURNING generation").Scan(&generation)
		if err != nil {
			return fmt.Errorf("move the lock generation on: %w", err)
		}
		return nil
	})
	return generation, err
}

// postgresMigrate applies the schema steps after version in tx.
func postgresMigrate(ctx context.Context, tx pgx.Tx, version int) error {
	for i := version; i < len(postgresMigrations); i++ {
		if _, err := tx.Exec(ctx, postgresMigrations[i]); err != nil {
			return fmt.Errorf("migrate to version %d: %w", i+1, err)
		}
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO schema_version (id, version) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`,
		len(postgresMigrations))
	if err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	return nil
}

// acquire takes sem, or fails when ctx ends first. A ctx that has ended
// fails it even when sem is free, where select would pick either case at
// random: a call whose context has ended never gets to the connection.
func (s *postgresStore) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		s.release()
		return err
	}
	return nil
}

func (s *postgresStore) release() { <-s.sem }

// withConn runs f on the lock connection, once no one else uses it. It
// fails at once if ctx has ended, the store is closed or the lock is not
// held. When pgx has closed the connection (a network error, a deadline
// the server did not answer, a terminated session), the session and the
// lock with it may be gone: the connection is dropped, and the monitor
// takes the lock again. The end of ctx alone must never close it: see
// inTx.
func (s *postgresStore) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	switch {
	case s.closed:
		return errClosed
	case s.isLost():
		return ErrNotActive
	case s.conn == nil:
		return errLockDown
	}
	err := f(s.conn)
	if s.conn.IsClosed() {
		s.dropLocked(cmp.Or(err, errConnClosed))
	}
	return err
}

// isLost reports whether the lock is lost for good.
func (s *postgresStore) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// dropLocked forgets the lock connection, whose session is presumed gone,
// and has the monitor take the lock again. The caller holds sem.
func (s *postgresStore) dropLocked(err error) {
	closeConn(s.conn)
	s.conn = nil
	s.log.Error("database connection lost; the instance lock is gone until it is back", "err", err)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// monitor pings the lock connection while the lock is held, and tries to
// take the lock again while it is not, until ctx ends or the lock is lost
// for good.
func (s *postgresStore) monitor(ctx context.Context) {
	defer close(s.done)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("instance lock monitor panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	timer := time.NewTimer(lockPingInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			timer.Reset(lockRetryInterval)
			continue
		case <-timer.C:
		}
		next, ok := s.watch(ctx)
		if !ok {
			return
		}
		timer.Reset(next)
	}
}

// watch makes one check of the monitor and returns when to make the next,
// or false if the monitor is done.
func (s *postgresStore) watch(ctx context.Context) (time.Duration, bool) {
	if err := s.acquire(ctx); err != nil {
		return 0, false
	}
	if s.conn == nil {
		s.release()
		return s.retake(ctx)
	}
	defer s.release()
	pctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	if err := s.conn.Ping(pctx); err != nil {
		if ctx.Err() != nil {
			return 0, false // Close interrupted the ping
		}
		if !s.conn.IsClosed() {
			// A slow server answered the cancel of the ping: the session,
			// and the lock with it, are still there (as in withConn).
			s.log.Warn("the database is slow to answer; the instance lock holds", "err", err)
			return lockRetryInterval, true
		}
		s.dropLocked(err)
		return lockRetryInterval, true
	}
	return lockPingInterval, true
}

// What takeAgain found.
type retakeResult int

const (
	lockTaken retakeResult = iota
	lockBusy               // not taken, try again: released meanwhile, or the database failed
	lockStale              // held by this store's last session, now being ended
	lockOther              // held by another process
)

// retake connects again and tries to take the lock back, without holding
// sem: meanwhile, Apply fails at once rather than wait for the database.
func (s *postgresStore) retake(ctx context.Context) (time.Duration, bool) {
	conn, err := s.connect(ctx)
	if err != nil {
		return lockRetryInterval, true // the database does not answer yet
	}
	session, result, err := takeAgain(ctx, conn, s.session)
	if result == lockTaken {
		// Free now, the lock may have been held by another instance in
		// between, which changed the database this store's process holds
		// in memory: then this one must not serve again.
		var gen int64
		gen, err = currentGeneration(ctx, conn)
		switch {
		case err == nil && gen == s.generation:
			return s.install(ctx, conn, session)
		case err == nil:
			result = lockOther
		default:
			result = lockBusy
		}
	}
	closeConn(conn)
	switch {
	case result == lockOther:
		// Logged first: whoever waits on Lost may read the log at once.
		s.log.Error("the instance lock is held by another process (now, or in between): this store stops serving the database")
		close(s.lost)
		return 0, false
	case err != nil:
		if ctx.Err() == nil {
			s.log.Debug("instance lock not taken again yet", "err", err)
		}
	case result == lockStale:
		s.log.Info("ended this store's last database session, which still held the instance lock", "pid", s.session.pid)
	}
	return lockRetryInterval, true
}

// takeAgain tries to take the lock on conn, and returns conn's session.
// When the lock is held by last, this store's last session, PostgreSQL has
// not noticed yet that its client is gone, and might not for as long as
// TCP keepalives take (hours, by default): takeAgain ends that session.
func takeAgain(ctx context.Context, conn *pgx.Conn, last pgSession) (pgSession, retakeResult, error) {
	taken, session, err := tryLock(ctx, conn)
	if err != nil {
		return session, lockBusy, err
	} else if taken {
		return session, lockTaken, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	var pid int64
	var start *time.Time
	err = conn.QueryRow(ctx, postgresLockHolder, int64(postgresInstanceLock)).Scan(&pid, &start)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return session, lockBusy, nil // released in between
	case err != nil:
		return session, lockBusy, err
	case start == nil || !last.is(pgSession{pid: uint32(pid), start: *start}):
		return session, lockOther, nil
	}
	_, err = conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid)
	return session, lockStale, err
}

// currentGeneration reads the lock generation on conn.
func currentGeneration(ctx context.Context, conn *pgx.Conn) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	var gen int64
	err := conn.QueryRow(ctx, "SELECT generation FROM instance_lock WHERE id = 1").Scan(&gen)
	return gen, err
}

// install makes conn, of the given session, which holds the lock, the lock
// connection again.
func (s *postgresStore) install(ctx context.Context, conn *pgx.Conn, session pgSession) (time.Duration, bool) {
	if err := s.acquire(ctx); err != nil {
		closeConn(conn)
		return 0, false
	}
	defer s.release()
	s.conn, s.session = conn, session
	s.log.Info("database lock regained")
	return lockPingInterval, true
}

// Ping implements Store: pgx's Ping (an empty query, as the monitor
// sends) on the lock connection, through withConn as every change goes,
// so in turn with Apply (sem) and keeping to ctx while it waits. It fails
// with ErrNotActive once the lock is lost for good, and with errLockDown
// while the monitor takes the lock again. A ctx that ends fails the ping
// only: as with Exec, pgx fails it unsent if ctx has ended, and has
// PostgreSQL cancel it if ctx ends while it runs, and withConn never lets
// that close the lock connection (see openPostgres).
func (s *postgresStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	err := s.withConn(ctx, func(conn *pgx.Conn) error { return conn.Ping(ctx) })
	if err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	return nil
}

// Lost implements Store.
func (s *postgresStore) Lost() <-chan struct{} { return s.lost }

// Close implements Store. It waits for an Apply in progress, then ends the
// lock session after releasing the lock, so that another process can take
// it as soon as Close returns.
func (s *postgresStore) Close() error {
	s.stop()
	<-s.done
	s.sem <- struct{}{}
	defer s.release()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), lockTimeout)
		defer cancel()
		// Were it to fail, ending the session releases the lock all the same.
		s.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(postgresInstanceLock))
		closeConn(s.conn)
		s.conn = nil
	}
	return nil
}

// inTx runs f in a transaction on the lock connection and commits it if f
// returns nil. Begin, commit and rollback each have lockTimeout.
//
// pgx closes the connection, and so ends the session and its lock, when
// BEGIN fails with anything but a PostgreSQL error, when COMMIT fails
// and leaves the session in the transaction, and whenever ROLLBACK
// fails. A context that has ended before pgx sends the statement is such
// a failure: pgx returns at once, the statement unsent. So BEGIN and
// COMMIT are not given ctx: inTx checks it before each, and then runs them
// on a context of their own, bound by lockTimeout only; a cancel that
// comes while one runs only fails the statements of f, which PostgreSQL
// cancels without ending the session. Once COMMIT is sent, inTx reports
// what the database did: nil is a commit, whatever ctx did meanwhile.
func (s *postgresStore) inTx(ctx context.Context, opts pgx.TxOptions, f func(pgx.Tx) error) error {
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		bctx, cancel := stepContext(ctx)
		tx, err := conn.BeginTx(bctx, opts)
		cancel()
		if err != nil {
			return err
		}
		defer rollback(ctx, conn)
		if err := f(tx); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err // rolled back
		}
		cctx, cancel := stepContext(ctx)
		defer cancel()
		return tx.Commit(cctx)
	})
}

// stepContext returns a context for one step of the lock connection that
// ctx's end does not cancel: it ends after lockTimeout.
func stepContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), lockTimeout)
}

// rollback ends the transaction open on conn, if any (none once it is
// committed, or ended by a failed COMMIT). It runs even when ctx has
// ended: a transaction left open would make the next one fail.
//
// It does not use pgx's Rollback, which closes the connection whenever
// ROLLBACK fails. On a live session, ROLLBACK fails with a PostgreSQL
// error only when a cancel request sent for a statement of f, which had
// ended before the request was delivered, lands on it instead (pgx waits
// for that, but cannot know when the server has delivered it): ROLLBACK
// is then sent again. Only a session still in a transaction after that is
// ended, since the next transaction could not begin on it.
func rollback(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := stepContext(ctx)
	defer cancel()
	pg := conn.PgConn()
	for range 3 {
		if pg.IsClosed() || pg.TxStatus() == 'I' {
			return
		}
		_, err := conn.Exec(ctx, "rollback")
		var pgErr *pgconn.PgError
		if err != nil && !errors.As(err, &pgErr) {
			break // a network error or a deadline: pgx has closed conn, if need be
		}
	}
	if !pg.IsClosed() && pg.TxStatus() != 'I' {
		closeConn(conn)
	}
}

// Load implements Store. It reads from one snapshot of the database, on
// the lock connection, so that a store that does not hold the lock cannot
// load a state it may not serve. Its queries read every row: they have
// loadTimeout, not lockTimeout.
func (s *postgresStore) Load(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()

	var snap Snapshot
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := s.inTx(ctx, opts, func(tx pgx.Tx) error {
		for _, load := range []func(context.Context, pgx.Tx, *Snapshot) error{
			postgresLoadAccounts, postgresLoadHandles, postgresLoadSubscriptions,
			postgresLoadRequests, postgresLoadRemoved, postgresLoadNotices,
			postgresLoadBlocked, postgresLoadKept,
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

func postgresLoadAccounts(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var a Account
	var status string
	return postgresEach(ctx, tx, `
		SELECT jid, online, status, explicit, hiding, status_text, since
		FROM accounts ORDER BY jid`,
		[]any{&a.JID, &a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &a.Flags.Since},
		func() {
			a.Flags.Status = Status(status)
			a.Flags.Since = a.Flags.Since.UTC()
			snap.Accounts = append(snap.Accounts, a)
		})
}

func postgresLoadHandles(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var h Handle
	var policy string
	var hiddenSince pgtype.Timestamptz
	return postgresEach(ctx, tx, "SELECT name, account, policy, hidden_since, web FROM handles ORDER BY name",
		[]any{&h.Name, &h.Account, &policy, &hiddenSince, &h.Web},
		func() {
			h.Policy = Policy(policy)
			h.Hidden, h.HiddenSince = hiddenSince.Valid, postgresNullTime(hiddenSince)
			snap.Handles = append(snap.Handles, h)
		})
}

func postgresLoadSubscriptions(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var sub Subscription
	return postgresEach(ctx, tx, "SELECT handle, contact FROM subscriptions ORDER BY handle, contact",
		[]any{&sub.Handle, &sub.Contact},
		func() { snap.Subscriptions = append(snap.Subscriptions, sub) })
}

func postgresLoadRequests(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var r Request
	return postgresEach(ctx, tx, "SELECT handle, contact, created_at FROM requests ORDER BY handle, created_at, contact",
		[]any{&r.Handle, &r.Contact, &r.At},
		func() {
			r.At = r.At.UTC()
			snap.Requests = append(snap.Requests, r)
		})
}

func postgresLoadRemoved(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var r RemovedName
	return postgresEach(ctx, tx, "SELECT name, account, removed_at FROM removed_names ORDER BY name",
		[]any{&r.Name, &r.Account, &r.At},
		func() {
			r.At = r.At.UTC()
			snap.Removed = append(snap.Removed, r)
		})
}

func postgresLoadNotices(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var n Notice
	var since pgtype.Timestamptz
	return postgresEach(ctx, tx, "SELECT handle, account, contact, since FROM notices ORDER BY handle, contact",
		[]any{&n.Handle, &n.Account, &n.Contact, &since},
		func() {
			n.Since = postgresNullTime(since)
			snap.Notices = append(snap.Notices, n)
		})
}

func postgresLoadBlocked(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var b Block
	return postgresEach(ctx, tx, "SELECT account, contact, since FROM blocked ORDER BY account, contact",
		[]any{&b.Account, &b.Contact, &b.Since},
		func() {
			b.Since = b.Since.UTC()
			snap.Blocked = append(snap.Blocked, b)
		})
}

func postgresLoadKept(ctx context.Context, tx pgx.Tx, snap *Snapshot) error {
	var k Kept
	return postgresEach(ctx, tx, "SELECT handle, contact, since FROM kept ORDER BY handle, contact",
		[]any{&k.Handle, &k.Contact, &k.Since},
		func() {
			k.Since = k.Since.UTC()
			snap.Kept = append(snap.Kept, k)
		})
}

// postgresNullTime returns the time read as t, in UTC, or the zero time
// for NULL.
func postgresNullTime(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// postgresStamp returns t as stored in a column where NULL stands for the
// zero time.
func postgresStamp(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return storedTime(t)
}

// postgresEach runs query in tx and calls each after scanning each row
// into dest.
func postgresEach(ctx context.Context, tx pgx.Tx, query string, dest []any, each func()) error {
	rows, _ := tx.Query(ctx, query)
	_, err := pgx.ForEachRow(rows, dest, func() error {
		each()
		return nil
	})
	return err
}

// Handles implements Store.
func (s *postgresStore) Handles(ctx context.Context, account string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	var names []string
	err := s.withConn(ctx, func(conn *pgx.Conn) error {
		rows, _ := conn.Query(ctx, "SELECT name FROM handles WHERE account = $1 ORDER BY name", account)
		var err error
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
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
	err := s.withConn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `
			SELECT online, status, explicit, hiding, status_text, since
			FROM accounts WHERE jid = $1`, account).
			Scan(&a.Flags.Online, &status, &a.Flags.Explicit, &a.Flags.Hiding, &a.Flags.StatusText, &a.Flags.Since)
	})
	if err != nil {
		return Account{}, postgresError("account", err)
	}
	a.Flags.Status = Status(status)
	a.Flags.Since = a.Flags.Since.UTC()
	return a, nil
}

// AddHandle implements Store.
func (s *postgresStore) AddHandle(ctx context.Context, account, handle string, max int, at time.Time) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	op := Op{Kind: OpAddHandle, Account: account, Handle: handle, Max: max, Now: at, Policy: PolicyAsk}
	err = s.inTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		created, err = postgresAddHandle(ctx, tx, op)
		return err
	})
	if err != nil {
		return false, postgresError("add handle", err)
	}
	return created, nil
}

// RemoveHandle implements Store.
func (s *postgresStore) RemoveHandle(ctx context.Context, account, handle string) error {
	return applyOne(ctx, s, Op{Kind: OpRemoveHandle, Account: account, Handle: handle, Now: time.Now()})
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
// of the batch, on the lock connection.
func (s *postgresStore) Apply(ctx context.Context, ops []Op) error {
	inTx := func(ctx context.Context, f func(pgx.Tx) error) error { return s.inTx(ctx, pgx.TxOptions{}, f) }
	return applyInTx(ctx, ops, inTx, postgresApplyAll)
}

// postgresFlushMax is about the most statements one flush of Apply sends
// (an op may add one more), so that a flush, bound by lockTimeout as one
// op is, has a few statements' work for it rather than a whole batch's.
const postgresFlushMax = 64

// postgresApplyAll runs ops in tx, in order. The statements of the ops
// that read nothing are queued, and sent in one round trip (a pgx.Batch)
// when an op that reads comes, when postgresFlushMax are queued and at the
// end, rather than one round trip each: at group commit, most ops are of
// that kind (SetFlags, subscriptions), and each round trip holds the lock
// connection. The first statement that fails aborts the transaction, and
// PostgreSQL skips the rest of the batch: the *OpError names the op of
// that statement, as if the ops had run one by one.
func postgresApplyAll(ctx context.Context, tx pgx.Tx, ops []Op) error {
	q := postgresQueue{tx: tx}
	for i, op := range ops {
		if q.add(i, op) {
			if len(q.ops) >= postgresFlushMax {
				if err := q.flush(ctx, ops); err != nil {
					return err
				}
			}
			continue
		}
		if err := q.flush(ctx, ops); err != nil {
			return err
		}
		if err := postgresApplyTimed(ctx, tx, op); err != nil {
			return &OpError{Index: i, Err: postgresError(op.Kind.String(), err)}
		}
	}
	return q.flush(ctx, ops)
}

// postgresQueue holds the statements of Apply not sent yet.
type postgresQueue struct {
	tx    pgx.Tx
	batch *pgx.Batch
	ops   []int // ops[k] is the index of the op that queued the k-th statement
}

// queue adds a statement of the op at index i.
func (q *postgresQueue) queue(i int, sql string, args ...any) {
	if q.batch == nil {
		q.batch = &pgx.Batch{}
	}
	q.batch.Queue(sql, args...)
	q.ops = append(q.ops, i)
}

// flush sends the statements queued, in one round trip (and one more to
// prepare a statement new to the connection) bound by lockTimeout, and
// reads their results in order. The first that failed
// makes the *OpError of its op, with what that op would have returned run
// on its own: the statements before it have succeeded, and the
// transaction is aborted from there.
//
// As with tx.Exec, a ctx that has ended before the batch is sent fails it
// unsent, and one that ends while it runs has PostgreSQL cancel the
// statement under way: neither closes the connection (see inTx).
func (q *postgresQueue) flush(ctx context.Context, ops []Op) error {
	if len(q.ops) == 0 {
		return nil
	}
	batch, idx := q.batch, q.ops
	q.batch, q.ops = nil, nil
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	br := q.tx.SendBatch(ctx, batch)
	failed := -1
	var err error
	for k := range idx {
		if _, err = br.Exec(); err != nil {
			failed = idx[k]
			break
		}
	}
	// Close reads what is left, up to the end of the batch: after an
	// error, PostgreSQL has skipped it.
	if cerr := br.Close(); err == nil && cerr != nil {
		err, failed = cerr, idx[len(idx)-1]
	}
	if err != nil {
		return &OpError{Index: failed, Err: postgresError(ops[failed].Kind.String(), err)}
	}
	return nil
}

// add queues the statements of the op at index i if it reads nothing, and
// reports whether it did: those ops fail only when a statement does (a
// foreign key, for ErrNotFound). The others run on their own, with
// postgresApply.
func (q *postgresQueue) add(i int, op Op) bool {
	switch op.Kind {
	case OpSetFlags:
		f := op.Flags
		q.queue(i, `
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
		q.queue(i, `
			INSERT INTO subscriptions (handle, contact) VALUES ($1, $2)
			ON CONFLICT (handle, contact) DO NOTHING`,
			op.Handle, op.Contact)
		if op.Answers {
			q.queue(i, "DELETE FROM requests WHERE handle = $1 AND contact = $2", op.Handle, op.Contact)
		}
	case OpRemoveSubscription:
		q.queue(i, "DELETE FROM subscriptions WHERE handle = $1 AND contact = $2", op.Handle, op.Contact)
	case OpAddRequest:
		q.queue(i, `
			INSERT INTO requests (handle, contact, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (handle, contact) DO NOTHING`,
			op.Handle, op.Contact, storedTime(op.Now))
	case OpRemoveRequest:
		q.queue(i, "DELETE FROM requests WHERE handle = $1 AND contact = $2", op.Handle, op.Contact)
	case OpNoticesSent:
		if len(op.Contacts) > 0 {
			q.queue(i, "DELETE FROM notices WHERE handle = $1 AND contact = ANY ($2)", op.Handle, op.Contacts)
		}
	case OpBlock:
		// An unknown account fails the foreign key: ErrNotFound.
		q.queue(i, `
			INSERT INTO blocked (account, contact, since) VALUES ($1, $2, $3)
			ON CONFLICT (account, contact) DO NOTHING`,
			op.Account, op.Contact, storedTime(op.Now))
		q.queue(i, `
			DELETE FROM requests
			WHERE contact = $1 AND handle IN (SELECT name FROM handles WHERE account = $2)`,
			op.Contact, op.Account)
	case OpUnblock:
		q.queue(i, "DELETE FROM blocked WHERE account = $1 AND contact = $2", op.Account, op.Contact)
	case OpKeep:
		// Selecting from subscriptions skips a contact that is not
		// subscribed, which the foreign key would refuse, and lists each
		// subscription once however often it is named.
		if len(op.Contacts) > 0 {
			q.queue(i, `
				INSERT INTO kept (handle, contact, since)
				SELECT handle, contact, $3 FROM subscriptions WHERE handle = $1 AND contact = ANY ($2)
				ON CONFLICT (handle, contact) DO UPDATE SET since = excluded.since`,
				op.Handle, op.Contacts, storedTime(op.Now))
		}
	case OpUnkeep:
		if len(op.Contacts) > 0 {
			q.queue(i, "DELETE FROM kept WHERE handle = $1 AND contact = ANY ($2)", op.Handle, op.Contacts)
		}
	default:
		return false
	}
	return true
}

// postgresApplyTimed is postgresApply bound by lockTimeout, as every step
// on the lock connection.
func postgresApplyTimed(ctx context.Context, tx pgx.Tx, op Op) error {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	return postgresApply(ctx, tx, op)
}

// postgresApply runs one of the ops that read (and may fail on what they
// read) inside tx; postgresQueue.add queues the others.
func postgresApply(ctx context.Context, tx pgx.Tx, op Op) error {
	switch op.Kind {
	case OpAddHandle:
		_, err := postgresAddHandle(ctx, tx, op)
		return err
	case OpRemoveHandle:
		return postgresRemoveHandle(ctx, tx, op)
	case OpSetPolicy:
		return postgresUpdateOwned(ctx, tx, op, "policy", string(op.Policy))
	case OpSetVisibility:
		// NULL is shown; the zero time is a stamp like any other.
		var since any
		if op.Hidden {
			since = storedTime(op.Now)
		}
		return postgresUpdateOwned(ctx, tx, op, "hidden_since", since)
	case OpSetWeb:
		return postgresUpdateOwned(ctx, tx, op, "web", op.Web)
	}
	return fmt.Errorf("%s is no op to run on its own", op.Kind)
}

// postgresAddHandle adds the handle of op. The account's row is locked for
// the rest of the transaction, so that adds to one account are counted one
// after the other even from sessions other than the lock connection (an
// older presenced).
func postgresAddHandle(ctx context.Context, tx pgx.Tx, op Op) (created bool, err error) {
	account, handle := op.Account, op.Handle
	now := storedTime(op.Now)
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
	if count >= op.Max {
		return false, ErrLimit
	}

	// A concurrent transaction may have taken the name since the check
	// above: the unique violation then stands for ErrExists.
	_, err = tx.Exec(ctx, "INSERT INTO handles (name, account, policy) VALUES ($1, $2, $3)",
		handle, account, string(op.Policy))
	if err != nil {
		return false, err
	}
	// The name is held again: no quarantine applies to it any more.
	_, err = tx.Exec(ctx, "DELETE FROM removed_names WHERE name = $1", handle)
	return created, err
}

func postgresRemoveHandle(ctx context.Context, tx pgx.Tx, op Op) error {
	if err := postgresCheckOwner(ctx, tx, op.Account, op.Handle); err != nil {
		return err
	}
	// The subscribers are owed their notices even once the handle is gone,
	// and the name is remembered for its quarantine. Read before the
	// subscriptions go: every notice takes op.Stamp, then those of the
	// listed contacts their own.
	_, err := tx.Exec(ctx, `
		INSERT INTO notices (handle, account, contact, since)
		SELECT handle, $1, contact, $3 FROM subscriptions WHERE handle = $2
		ON CONFLICT (handle, contact) DO NOTHING`,
		op.Account, op.Handle, postgresStamp(op.Stamp))
	if err != nil {
		return err
	}
	if len(op.Contacts) > 0 {
		// One statement for all the listed contacts (a hidden handle may
		// list every subscriber), each once, with its last stamp: a row
		// joined twice in an UPDATE takes either.
		contacts, stamps := postgresLastStamps(op.Contacts, op.Stamps)
		_, err = tx.Exec(ctx, `
			UPDATE notices n SET since = u.since
			FROM unnest($3::text[], $4::timestamptz[]) AS u (contact, since)
			WHERE n.handle = $1 AND n.account = $2 AND n.contact = u.contact
				AND EXISTS (SELECT FROM subscriptions s WHERE s.handle = n.handle AND s.contact = n.contact)`,
			op.Handle, op.Account, contacts, stamps)
		if err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO removed_names (name, account, removed_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET account = excluded.account, removed_at = excluded.removed_at`,
		op.Handle, op.Account, storedTime(op.Now))
	if err != nil {
		return err
	}
	// The subscriptions, their kept stamps and the requests go by ON
	// DELETE CASCADE.
	_, err = tx.Exec(ctx, "DELETE FROM handles WHERE name = $1", op.Handle)
	return err
}

// postgresLastStamps returns contacts, each once, with the last of its
// stamps, as stored (NULL for the zero time).
func postgresLastStamps(contacts []string, stamps []time.Time) ([]string, []pgtype.Timestamptz) {
	last := make(map[string]int, len(contacts))
	for i, c := range contacts {
		last[c] = i
	}
	cs := make([]string, 0, len(last))
	ts := make([]pgtype.Timestamptz, 0, len(last))
	for i, c := range contacts {
		if last[c] != i {
			continue
		}
		cs = append(cs, c)
		if !stamps[i].IsZero() {
			ts = append(ts, pgtype.Timestamptz{Time: storedTime(stamps[i]), Valid: true})
		} else {
			ts = append(ts, pgtype.Timestamptz{})
		}
	}
	return cs, ts
}

// postgresUpdateOwned sets column (a constant of the caller's) of the
// handle of op to value, once postgresCheckOwner finds that op's account
// holds it.
func postgresUpdateOwned(ctx context.Context, tx pgx.Tx, op Op, column string, value any) error {
	if err := postgresCheckOwner(ctx, tx, op.Account, op.Handle); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "UPDATE handles SET "+column+" = $1 WHERE name = $2", value, op.Handle)
	return err
}

// postgresCheckOwner returns ErrNotFound if no account holds the handle and
// ErrNotOwner if one other than account does. The handle's row is locked
// for the rest of the transaction.
func postgresCheckOwner(ctx context.Context, tx pgx.Tx, account, handle string) error {
	var owner string
	err := tx.QueryRow(ctx, "SELECT account FROM handles WHERE name = $1 FOR UPDATE", handle).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	if owner != account {
		return ErrNotOwner
	}
	return nil
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
