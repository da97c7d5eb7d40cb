package storage

import (
	"fmt"
	"time"
)

// Deadlines the backends put on their own work, whatever the caller's
// context allows.
const (
	// queryTimeout bounds every method that reads or writes a few rows.
	queryTimeout = 5 * time.Second
	// batchTimeout bounds one Apply, a transaction of many changes.
	batchTimeout = 30 * time.Second
	// loadTimeout bounds Load, which reads every row once at start.
	loadTimeout = time.Minute
	// migrateTimeout bounds the schema upgrade run by the Open functions.
	migrateTimeout = time.Minute
	// lockTimeout bounds each step on PostgreSQL's lock connection
	// (connect, take the lock, ping, begin, one op, one flush of the
	// statements Apply queues, commit), so that a dead network fails an
	// Apply well within batchTimeout, and the store soon knows that it no
	// longer holds the lock.
	lockTimeout = 5 * time.Second
	// cancelGrace is how long PostgreSQL has to answer the cancel of a
	// statement past its deadline before the connection is closed (a dead
	// network): the step fails within lockTimeout + cancelGrace.
	cancelGrace = 2 * time.Second
)

// Times are kept to the microsecond, the precision of PostgreSQL's
// timestamptz. Both backends truncate on write, so a Since read back from
// either is the one written, truncated to the microsecond and in UTC.
const timePrecision = time.Microsecond

// storedTime returns t as the backends store it.
func storedTime(t time.Time) time.Time {
	return t.UTC().Truncate(timePrecision)
}

// The schemas are lists of steps; step i (counted from 1) brings a database
// from version i-1 to version i. The version is kept in the one row of the
// schema_version table, which is not part of any step. Open applies the
// missing steps and sets the version in one transaction.
//
// A step, once released, is never edited: changes go in a new step appended
// to both lists, so that every backend has the same version numbers.

// sqliteSchemaVersionTable creates the version table if needed.
const sqliteSchemaVersionTable = `
CREATE TABLE IF NOT EXISTS schema_version (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
) STRICT`

// sqliteMigrations are the SQLite schema steps. Booleans are 0 or 1; times
// are integer Unix microseconds (UTC).
var sqliteMigrations = []string{
	// 1: accounts, handles, subscriptions.
	`
	CREATE TABLE accounts (
		jid TEXT NOT NULL PRIMARY KEY,
		online INTEGER NOT NULL CHECK (online IN (0, 1)),
		status TEXT NOT NULL CHECK (status IN ('undefined', 'away', 'busy')),
		hiding INTEGER NOT NULL CHECK (hiding IN (0, 1)),
		status_text TEXT NOT NULL,
		since INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	) STRICT;
	CREATE TABLE handles (
		name TEXT NOT NULL PRIMARY KEY,
		account TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
		created_at INTEGER NOT NULL
	) STRICT;
	CREATE INDEX handles_account ON handles (account);
	CREATE TABLE subscriptions (
		handle TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
		contact TEXT NOT NULL,
		PRIMARY KEY (handle, contact)
	) STRICT;
	`,
	// 2: whether the status was set by an explicit instruction.
	`
	ALTER TABLE accounts ADD COLUMN explicit INTEGER NOT NULL DEFAULT 0 CHECK (explicit IN (0, 1));
	`,
	// 3: subscription policies and pending requests; removed names and the
	// notices owed to the subscribers of a removed handle, which outlive it.
	// Existing handles approved everyone, so they keep doing so.
	`
	ALTER TABLE handles ADD COLUMN policy TEXT NOT NULL DEFAULT 'open' CHECK (policy IN ('ask', 'open'));
	CREATE TABLE requests (
		handle TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
		contact TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (handle, contact)
	) STRICT;
	CREATE TABLE removed_names (
		name TEXT NOT NULL PRIMARY KEY,
		account TEXT NOT NULL,
		removed_at INTEGER NOT NULL
	) STRICT;
	CREATE TABLE notices (
		handle TEXT NOT NULL,
		account TEXT NOT NULL,
		contact TEXT NOT NULL,
		PRIMARY KEY (handle, contact)
	) STRICT;
	`,
	// 4: per-handle visibility and per-contact blocking. A hidden handle
	// keeps the stamp its subscribers were left with (NULL while shown,
	// as every existing handle is); a blocked contact, the stamp it was
	// left with. A notice keeps the <delay/> stamp of the unavailable
	// notice owed; those of before are NULL, their stamp unknown. A
	// subscription may keep the stamp its subscriber was last sent while
	// it may not see the account, and loses it with the subscription.
	`
	ALTER TABLE handles ADD COLUMN hidden_since INTEGER;
	CREATE TABLE blocked (
		account TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
		contact TEXT NOT NULL,
		since INTEGER NOT NULL,
		PRIMARY KEY (account, contact)
	) STRICT;
	ALTER TABLE notices ADD COLUMN since INTEGER;
	CREATE TABLE kept (
		handle TEXT NOT NULL,
		contact TEXT NOT NULL,
		since INTEGER NOT NULL,
		PRIMARY KEY (handle, contact),
		FOREIGN KEY (handle, contact) REFERENCES subscriptions (handle, contact) ON DELETE CASCADE
	) STRICT;
	`,
	// 5: whether the handle's status is public on the web. Existing
	// handles are not.
	`
	ALTER TABLE handles ADD COLUMN web INTEGER NOT NULL DEFAULT 0 CHECK (web IN (0, 1));
	`,
}

// postgresSchemaVersionTable creates the version table if needed.
const postgresSchemaVersionTable = `
CREATE TABLE IF NOT EXISTS schema_version (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
)`

// postgresMigrations are the PostgreSQL schema steps. Text keys use the "C"
// collation so that name order is byte order, as in SQLite and Go.
var postgresMigrations = []string{
	// 1: accounts, handles, subscriptions.
	`
	CREATE TABLE accounts (
		jid TEXT COLLATE "C" NOT NULL PRIMARY KEY,
		online BOOLEAN NOT NULL,
		status TEXT NOT NULL CHECK (status IN ('undefined', 'away', 'busy')),
		hiding BOOLEAN NOT NULL,
		status_text TEXT NOT NULL,
		since TIMESTAMPTZ NOT NULL,
		created_at TIMESTAMPTZ NOT NULL DEFAULT now()
	);
	CREATE TABLE handles (
		name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
		account TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
		created_at TIMESTAMPTZ NOT NULL DEFAULT now()
	);
	CREATE INDEX handles_account ON handles (account);
	CREATE TABLE subscriptions (
		handle TEXT COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
		contact TEXT COLLATE "C" NOT NULL,
		PRIMARY KEY (handle, contact)
	);
	`,
	// 2: whether the status was set by an explicit instruction.
	`
	ALTER TABLE accounts ADD COLUMN explicit BOOLEAN NOT NULL DEFAULT false;
	`,
	// 3: subscription policies and pending requests; removed names and the
	// notices owed to the subscribers of a removed handle, which outlive it.
	// Existing handles approved everyone, so they keep doing so.
	`
	ALTER TABLE handles ADD COLUMN policy TEXT NOT NULL DEFAULT 'open' CHECK (policy IN ('ask', 'open'));
	CREATE TABLE requests (
		handle TEXT COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
		contact TEXT COLLATE "C" NOT NULL,
		created_at TIMESTAMPTZ NOT NULL,
		PRIMARY KEY (handle, contact)
	);
	CREATE TABLE removed_names (
		name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
		account TEXT COLLATE "C" NOT NULL,
		removed_at TIMESTAMPTZ NOT NULL
	);
	CREATE TABLE notices (
		handle TEXT COLLATE "C" NOT NULL,
		account TEXT COLLATE "C" NOT NULL,
		contact TEXT COLLATE "C" NOT NULL,
		PRIMARY KEY (handle, contact)
	);
	-- Each instance that takes the instance lock moves the generation on,
	-- so that one taking it back after losing it can tell whether another
	-- held it in between (postgres.go).
	CREATE TABLE instance_lock (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		generation BIGINT NOT NULL
	);
	INSERT INTO instance_lock (id, generation) VALUES (1, 0);
	`,
	// 4: per-handle visibility and per-contact blocking. A hidden handle
	// keeps the stamp its subscribers were left with (NULL while shown,
	// as every existing handle is); a blocked contact, the stamp it was
	// left with. A notice keeps the <delay/> stamp of the unavailable
	// notice owed; those of before are NULL, their stamp unknown. A
	// subscription may keep the stamp its subscriber was last sent while
	// it may not see the account, and loses it with the subscription.
	`
	ALTER TABLE handles ADD COLUMN hidden_since TIMESTAMPTZ;
	CREATE TABLE blocked (
		account TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
		contact TEXT COLLATE "C" NOT NULL,
		since TIMESTAMPTZ NOT NULL,
		PRIMARY KEY (account, contact)
	);
	ALTER TABLE notices ADD COLUMN since TIMESTAMPTZ;
	CREATE TABLE kept (
		handle TEXT COLLATE "C" NOT NULL,
		contact TEXT COLLATE "C" NOT NULL,
		since TIMESTAMPTZ NOT NULL,
		PRIMARY KEY (handle, contact),
		FOREIGN KEY (handle, contact) REFERENCES subscriptions (handle, contact) ON DELETE CASCADE
	);
	`,
	// 5: whether the handle's status is public on the web. Existing
	// handles are not.
	`
	ALTER TABLE handles ADD COLUMN web BOOLEAN NOT NULL DEFAULT false;
	`,
}

// checkSchemaVersion returns ErrSchemaTooNew, with both versions, if a
// database at version have cannot be used by a binary that knows the given
// number of steps.
func checkSchemaVersion(have, known int) error {
	if have > known {
		return fmt.Errorf("%w: database is at version %d, this binary knows up to %d", ErrSchemaTooNew, have, known)
	}
	if have < 0 {
		return fmt.Errorf("storage: invalid schema version %d", have)
	}
	return nil
}
