// Package storage keeps presenced's durable state: accounts with their
// flags and the contacts they blocked, the handle names they own with
// their subscription policy, whether they are hidden and whether their
// status is public on the web, the contacts subscribed to each handle and
// those asking to be, the stamps kept for some of those subscribed, the
// names recently removed, and the notices owed to the subscribers of a
// removed handle.
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
//
// One process at a time serves a database: every Store holds the
// database's instance lock for its whole life (see OpenWith), so that two
// presenced started on the same data cannot both change it.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// ErrNotActive means the store lost the database's instance lock to
	// another process for good (see Store.Lost): that process serves the
	// database now, and this one must not change it.
	ErrNotActive = errors.New("storage: instance lock lost to another process")
)

// IsRowError reports whether err says that a change could not apply to the
// rows as they stand (ErrNotFound, ErrExists, ErrLimit, ErrNotOwner), as
// opposed to a failure of the database: such a change fails on its own,
// and the others of its batch can be applied without it. ErrNotActive is
// not one: no change of any batch can apply any more.
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

// Policy says what becomes of a contact's request to subscribe to a
// handle.
type Policy string

// The subscription policies. The zero value is not valid.
const (
	// PolicyAsk keeps the request pending until the owner answers it.
	PolicyAsk Policy = "ask"
	// PolicyOpen approves every request at once. Handles created before
	// policies existed have it, since they approved everyone.
	PolicyOpen Policy = "open"
)

// Valid reports whether p is one of the known policies.
func (p Policy) Valid() bool {
	return p == PolicyAsk || p == PolicyOpen
}

// Handle is a handle name (the prepared localpart), the account that owns
// it, its subscription policy, whether it is hidden and whether its status
// is public on the web.
type Handle struct {
	Name    string
	Account string
	Policy  Policy
	// Hidden is true while the handle is hidden from its subscribers, who
	// see it off-line whatever the account's flags.
	Hidden bool
	// HiddenSince is, while Hidden, the stamp the subscribers were left
	// with when the handle was hidden (to the microsecond, in UTC); it
	// means nothing otherwise.
	HiddenSince time.Time
	// Web is true when the handle's status is public on the web. A new
	// handle is not.
	Web bool
}

// Subscription is a contact (bare JID) subscribed to the presence of a
// handle.
type Subscription struct {
	Handle  string
	Contact string
}

// Request is a contact's pending request to subscribe to a handle, and
// when it was first made (to the microsecond, in UTC).
type Request struct {
	Handle  string
	Contact string
	At      time.Time
}

// RemovedName is a handle name that its account gave up, and when (to the
// microsecond, in UTC). The roster keeps such a name from other accounts
// for a while; storage only remembers it until the name is held again.
type RemovedName struct {
	Name    string
	Account string
	At      time.Time
}

// Block is a contact (bare JID) that an account blocked, and the stamp
// the contact was left with when it was (to the microsecond, in UTC): what
// the contact saw last of the account's handles is kept for it, so that a
// later notice tells it no more than it saw.
type Block struct {
	Account string
	Contact string
	Since   time.Time
}

// Notice is an unavailable and unsubscribed notice owed to a contact that
// was subscribed to a handle since removed, on behalf of the account that
// owned it. It outlives the handle, so that a restart still sends it.
type Notice struct {
	Handle  string
	Account string
	Contact string
	// Since is the <delay/> stamp of the unavailable notice (to the
	// microsecond, in UTC): see OpRemoveHandle. It is zero when unknown,
	// for a notice recorded before stamps were kept.
	Since time.Time
}

// Kept is the <delay/> stamp kept for a contact subscribed to a handle:
// the one it was last sent while it may not see the account (to the
// microsecond, in UTC), so that it is sent no newer one when it may see
// the account again. It goes with the subscription.
type Kept struct {
	Handle  string
	Contact string
	Since   time.Time
}

// Snapshot is the whole durable state, read once at start to build the
// in-memory indexes. Strings are in byte order, as Go compares them.
type Snapshot struct {
	Accounts      []Account      // in JID order
	Handles       []Handle       // in name order
	Subscriptions []Subscription // in handle, then contact order
	Requests      []Request      // in handle, then At, then contact order
	Removed       []RemovedName  // in name order
	Notices       []Notice       // in handle, then contact order
	Blocked       []Block        // in account, then contact order
	Kept          []Kept         // in handle, then contact order
}

// Store is the durable state of presenced. Every method is safe for
// concurrent use. A method that returns nil has committed its change.
type Store interface {
	// Load returns the whole state, in the orders Snapshot gives.
	Load(ctx context.Context) (*Snapshot, error)

	// AddHandle gives the handle name to the account, with PolicyAsk,
	// creating the account (with undefined, off-line, visible flags,
	// off-line since now) if it does not exist yet; it reports whether the
	// account was created. The name is no longer a RemovedName. It returns
	// ErrExists if any account holds the name and ErrLimit if the account
	// already holds max handles. ErrExists is reported over ErrLimit when
	// both apply, and a max of 0 or less admits no handle. Nothing changes
	// on error: an account created for the attempt is not kept.
	AddHandle(ctx context.Context, account, handle string, max int, now time.Time) (created bool, err error)

	// RemoveHandle takes the handle from the account and deletes its
	// subscriptions, their kept stamps and requests, recording a Notice
	// for each subscriber and the name as a RemovedName (removed now). It
	// is OpRemoveHandle with no Stamp and no Contacts, so every notice's
	// Since is zero (unknown). It returns ErrNotFound if no account holds
	// the handle and ErrNotOwner if another account holds it.
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
	// idempotent and returns ErrNotFound if the handle does not exist. (An
	// approval, which answers a pending request, is an OpAddSubscription
	// with Answers set.)
	AddSubscription(ctx context.Context, handle, contact string) error

	// RemoveSubscription forgets the subscription, and its kept stamp;
	// removing one that does not exist is not an error.
	RemoveSubscription(ctx context.Context, handle, contact string) error

	// Apply makes the changes of ops, in order, in one transaction: all of
	// them are kept, or none. It is how presenced commits a group of
	// changes with one durable write. If an op fails, Apply returns an
	// *OpError naming it, whose Err is what that op's own method would have
	// returned; a failure to commit is returned wrapped (none of the
	// sentinels). An empty batch does nothing.
	Apply(ctx context.Context, ops []Op) error

	// Ping reports whether the database answers and this store could
	// commit a change now: nil only then. It is cheap and writes nothing,
	// for a health check (presenced's /readyz). It runs where Apply does
	// (SQLite: the store's connection; PostgreSQL: the lock connection,
	// in turn with Apply), so it fails as Apply would: ErrNotActive once
	// the lock is lost for good, a wrapped error while the database or the
	// lock connection is down, after Close, or when ctx ends first. A
	// ctx that ends costs the store nothing (the instance lock stays).
	Ping(ctx context.Context) error

	// Lost returns a channel closed once this store has lost the instance
	// lock to another process for good: the process must stop serving at
	// once. Apply fails from then on with ErrNotActive.
	Lost() <-chan struct{}

	// Close releases the database and its instance lock. Methods called
	// after Close fail with an error that is none of the sentinels; a
	// second Close does nothing.
	Close() error
}

// Drivers accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Options are the settings of OpenWith that have a default: the zero
// Options are those of Open.
type Options struct {
	// Waiting is called once if another process holds the database's
	// instance lock, before Open starts waiting for it. It can be nil.
	Waiting func()
	// Log receives what the store cannot report to a caller (lock lost,
	// regained); nil discards.
	Log *slog.Logger
}

// logger returns o.Log, or a logger that discards.
func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// Open is OpenWith with the zero Options.
func Open(ctx context.Context, driver, dsn string) (Store, error) {
	return OpenWith(ctx, driver, dsn, Options{})
}

// OpenWith opens the store named by driver with the given data source name,
// takes the database's instance lock and brings its schema up to date.
//
// The lock is taken before anything is read, and held until Close: while
// another process holds it, OpenWith calls opts.Waiting and checks again
// every second until it is free or ctx ends (the error then wraps ctx's).
func OpenWith(ctx context.Context, driver, dsn string, opts Options) (Store, error) {
	switch driver {
	case DriverSQLite:
		return openSQLite(ctx, dsn, opts)
	case DriverPostgres:
		return openPostgres(ctx, dsn, opts)
	default:
		return nil, fmt.Errorf("storage: unknown driver %q", driver)
	}
}
