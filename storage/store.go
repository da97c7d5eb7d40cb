// Package storage keeps presenced's durable state: accounts with their
// flags, the handle names they own, and the contacts subscribed to each
// handle.
//
// The data model follows claim 1 of US 8,103,736: the on-line flag, the
// status flag and whether notification is allowed are stored once per
// account and shared by all of its handles, so one status change is one
// row write whatever the number of handles.
//
// Two backends implement Store: SQLite (the embedded default) and
// PostgreSQL. Open picks one by driver name. Driver errors never cross the
// interface: callers see ErrNotFound, ErrExists, ErrLimit or ErrNotOwner, or
// a wrapped error that means the database failed.
package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors returned by every Store implementation.
var (
	// ErrNotFound means the account, handle or subscription does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrExists means a handle name is already held (by any account).
	ErrExists = errors.New("storage: already exists")
	// ErrLimit means the account already holds the maximum number of handles.
	ErrLimit = errors.New("storage: handle limit reached")
	// ErrNotOwner means the handle exists but belongs to another account.
	ErrNotOwner = errors.New("storage: handle owned by another account")
	// ErrSchemaTooNew means the database was written by a newer presenced.
	ErrSchemaTooNew = errors.New("storage: database schema is newer than this binary")
)

// IsRowError reports whether err says that a change could not apply to the
// rows as they stand (ErrNotFound, ErrExists, ErrLimit, ErrNotOwner), as
// opposed to a failure of the database: such a change fails on its own,
// and the others of its batch can be applied without it.
func IsRowError(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) ||
		errors.Is(err, ErrLimit) || errors.Is(err, ErrNotOwner)
}

// Status is the patent's status flag, less hiding, which is kept apart in
// Flags.Hiding because hiding must not forget the status underneath it.
type Status string

// The user statuses. The zero value is not valid; use StatusUndefined.
const (
	StatusUndefined Status = "undefined"
	StatusAway      Status = "away"
	StatusBusy      Status = "busy"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusUndefined, StatusAway, StatusBusy:
		return true
	}
	return false
}

// Flags is the state stored once per account and associated with all of its
// handles.
type Flags struct {
	// Online is the on-line flag: set while any resource of the owner is
	// available.
	Online bool
	// Status is the status flag shown while the account is visible.
	Status Status
	// Explicit is true when Status was set by an explicit instruction
	// (set-status) rather than derived from the owner's client presence; it
	// holds until the client changes its own status.
	Explicit bool
	// Hiding is true when notification is not allowed: subscribers see the
	// account as off-line. It is sticky: only an explicit instruction lifts it.
	Hiding bool
	// StatusText is the owner's free-form <status/> text, shown with the
	// status while visible.
	StatusText string
	// Since is when what subscribers may see last changed (going off-line,
	// going hiding, coming back). It is what last activity and <delay/>
	// report, so a hiding account shows the moment it went hiding.
	Since time.Time
}

// Account is one owner (the patent's user ID: the owner's bare JID) with its
// flags.
type Account struct {
	JID   string
	Flags Flags
}

// Handle is a handle name (the prepared localpart) and the account that owns
// it.
type Handle struct {
	Name    string
	Account string
}

// Subscription is a contact (bare JID) subscribed to the presence of a
// handle.
type Subscription struct {
	Handle  string
	Contact string
}

// Snapshot is the whole durable state, read once at start to build the
// in-memory indexes.
type Snapshot struct {
	Accounts      []Account
	Handles       []Handle
	Subscriptions []Subscription
}

// Store is the durable state of presenced. Every method is safe for
// concurrent use. A method that returns nil has committed its change.
type Store interface {
	// Load returns every account, handle and subscription: accounts in JID
	// order, handles in name order, subscriptions in handle then contact
	// order (byte order, as Go compares strings).
	Load(ctx context.Context) (*Snapshot, error)

	// AddHandle gives the handle name to the account, creating the account
	// (with undefined, off-line, visible flags, off-line since now) if it
	// does not exist yet; it reports whether the account was created. It returns ErrExists if any
	// account holds the name and ErrLimit if the account already holds max
	// handles. ErrExists is reported over ErrLimit when both apply, and a max
	// of 0 or less admits no handle. Nothing changes on error: an account
	// created for the attempt is not kept.
	AddHandle(ctx context.Context, account, handle string, max int, now time.Time) (created bool, err error)

	// RemoveHandle takes the handle from the account and deletes its
	// subscriptions. It returns ErrNotFound if no account holds the handle
	// and ErrNotOwner if another account holds it.
	RemoveHandle(ctx context.Context, account, handle string) error

	// Handles lists the handles of the account in name (byte) order; an
	// unknown account has none.
	Handles(ctx context.Context, account string) ([]string, error)

	// Account returns the account's flags, or ErrNotFound.
	Account(ctx context.Context, account string) (Account, error)

	// SetFlags writes the flags of the account, creating the account if it
	// does not exist. It is one row write whatever the number of handles.
	// f.Status must be valid (the zero Status is not) or SetFlags fails
	// without writing. f.Since is kept to the microsecond (truncated) and
	// read back in UTC.
	SetFlags(ctx context.Context, account string, f Flags) error

	// AddSubscription records that contact is subscribed to handle. It is
	// idempotent and returns ErrNotFound if the handle does not exist.
	AddSubscription(ctx context.Context, handle, contact string) error

	// RemoveSubscription forgets the subscription; removing one that does not
	// exist is not an error.
	RemoveSubscription(ctx context.Context, handle, contact string) error

	// Apply makes the changes of ops, in order, in one transaction: all of
	// them are kept, or none. It is how presenced commits a group of
	// changes with one durable write. If an op fails, Apply returns an
	// *OpError naming it, whose Err is what that op's own method would have
	// returned; a failure to commit is returned as is. An empty batch does
	// nothing.
	Apply(ctx context.Context, ops []Op) error

	// Close releases the database. Methods called after Close fail with an
	// error that is none of the sentinels; a second Close does nothing.
	Close() error
}

// Drivers accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Open opens the store named by driver with the given data source name and
// brings its schema up to date.
func Open(ctx context.Context, driver, dsn string) (Store, error) {
	switch driver {
	case DriverSQLite:
		return OpenSQLite(ctx, dsn)
	case DriverPostgres:
		return OpenPostgres(ctx, dsn)
	default:
		return nil, fmt.Errorf("storage: unknown driver %q", driver)
	}
}
