package storage

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresEnv names the environment variable that holds an admin DSN for the
// PostgreSQL tests, e.g.
// postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable.
const postgresEnv = "PRESENCED_TEST_POSTGRES"

func TestStore(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		runConformance(t, DriverSQLite, sqliteDSN)
	})
	t.Run("postgres", func(t *testing.T) {
		if os.Getenv(postgresEnv) == "" {
			t.Skipf("%s is empty: set it to an admin DSN to test the PostgreSQL backend", postgresEnv)
		}
		runConformance(t, DriverPostgres, postgresDSN)
	})
}

// sqliteDSN returns the path of a new SQLite database.
func sqliteDSN(t testing.TB) string {
	return filepath.Join(t.TempDir(), "presenced.db")
}

// postgresDSN creates an empty PostgreSQL database, dropped when the test
// ends, and returns its DSN.
func postgresDSN(t testing.TB) string {
	admin := os.Getenv(postgresEnv)
	if admin == "" {
		t.Skipf("%s is empty", postgresEnv)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect with %s: %v", postgresEnv, err)
	}
	name := "presenced_test_" + hex.EncodeToString(randomBytes(t, 8))
	// A linguistic collation, as production databases often have, shows
	// up any order that depends on the database default. It needs ICU
	// (PostgreSQL 15 or later built with it); fall back to the default.
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
	if err != nil {
		t.Logf("create database with an ICU collation: %v; using the default", err)
		_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	}
	if err != nil {
		conn.Close(ctx)
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			t.Fatalf("parse %s: %v", postgresEnv, err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String()
	}
	// Keyword/value form: a later keyword overrides an earlier one.
	return admin + " dbname=" + name
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// openStore opens the store at dsn and closes it when the test ends.
func openStore(t testing.TB, driver, dsn string) Store {
	t.Helper()
	s, err := Open(context.Background(), driver, dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// execRaw runs a statement on the database behind s, bypassing the Store
// interface.
func execRaw(t testing.TB, s Store, query string, args ...any) {
	t.Helper()
	var err error
	switch s := s.(type) {
	case *sqliteStore:
		_, err = s.db.Exec(query, args...)
	case *postgresStore:
		err = rawPostgres(s, func(c *pgx.Conn) error {
			_, err := c.Exec(context.Background(), query, args...)
			return err
		})
	default:
		t.Fatalf("unknown store %T", s)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// rawPostgres runs f on a connection of its own to the database of s, not
// the store's lock connection.
func rawPostgres(s *postgresStore, f func(*pgx.Conn) error) error {
	c, err := pgx.ConnectConfig(context.Background(), s.connCfg)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return f(c)
}

// queryInt runs a query returning one integer on the database behind s.
func queryInt(t testing.TB, s Store, query string) int {
	t.Helper()
	var n int
	var err error
	switch s := s.(type) {
	case *sqliteStore:
		err = s.db.QueryRow(query).Scan(&n)
	case *postgresStore:
		err = rawPostgres(s, func(c *pgx.Conn) error {
			return c.QueryRow(context.Background(), query).Scan(&n)
		})
	default:
		t.Fatalf("unknown store %T", s)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// migrationCount is the schema version the binary brings s to.
func migrationCount(s Store) int {
	if _, ok := s.(*postgresStore); ok {
		return len(postgresMigrations)
	}
	return len(sqliteMigrations)
}

var sentinels = []error{ErrNotFound, ErrExists, ErrLimit, ErrNotOwner, ErrSchemaTooNew, ErrNotActive}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// wantErr fails the test unless errors.Is(err, want).
func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustAdd(t testing.TB, s Store, account, handle string, max int) bool {
	t.Helper()
	created, err := s.AddHandle(context.Background(), account, handle, max, time.Now())
	must(t, fmt.Sprintf("AddHandle(%q, %q)", account, handle), err)
	return created
}

func wantHandles(t testing.TB, s Store, account string, want ...string) {
	t.Helper()
	got, err := s.Handles(context.Background(), account)
	must(t, "Handles", err)
	if !slices.Equal(got, want) {
		t.Fatalf("Handles(%q) = %q, want %q", account, got, want)
	}
}

func wantNoAccount(t testing.TB, s Store, account string) {
	t.Helper()
	_, err := s.Account(context.Background(), account)
	wantErr(t, fmt.Sprintf("Account(%q)", account), err, ErrNotFound)
}

// sameFlags reports whether the flags are equal, with Since compared as an
// instant to the microsecond.
func sameFlags(a, b Flags) bool {
	return a.Online == b.Online && a.Status == b.Status && a.Hiding == b.Hiding &&
		a.StatusText == b.StatusText &&
		a.Since.Truncate(time.Microsecond).Equal(b.Since.Truncate(time.Microsecond))
}

func wantFlags(t testing.TB, s Store, account string, want Flags) {
	t.Helper()
	a, err := s.Account(context.Background(), account)
	must(t, "Account", err)
	if a.JID != account {
		t.Errorf("Account(%q).JID = %q", account, a.JID)
	}
	if !sameFlags(a.Flags, want) {
		t.Fatalf("Account(%q).Flags = %+v, want %+v", account, a.Flags, want)
	}
	if a.Flags.Since.Location() != time.UTC {
		t.Errorf("Account(%q).Flags.Since is in %v, want UTC", account, a.Flags.Since.Location())
	}
}

func wantSnapshot(t testing.TB, got, want *Snapshot) {
	t.Helper()
	if len(got.Accounts) != len(want.Accounts) {
		t.Fatalf("Load: %d accounts %+v, want %+v", len(got.Accounts), got.Accounts, want.Accounts)
	}
	for i := range got.Accounts {
		g, w := got.Accounts[i], want.Accounts[i]
		if g.JID != w.JID || !sameFlags(g.Flags, w.Flags) {
			t.Fatalf("Load: account %d is %+v, want %+v", i, g, w)
		}
	}
	if !slices.EqualFunc(got.Handles, want.Handles, sameHandle) {
		t.Fatalf("Load: handles %+v, want %+v", got.Handles, want.Handles)
	}
	if !slices.Equal(got.Subscriptions, want.Subscriptions) {
		t.Fatalf("Load: subscriptions %+v, want %+v", got.Subscriptions, want.Subscriptions)
	}
	if !slices.EqualFunc(got.Requests, want.Requests, sameRequest) {
		t.Fatalf("Load: requests %+v, want %+v", got.Requests, want.Requests)
	}
	sameRemoved := func(g, w RemovedName) bool {
		return g.Name == w.Name && g.Account == w.Account && sameStoredTime(g.At, w.At)
	}
	if !slices.EqualFunc(got.Removed, want.Removed, sameRemoved) {
		t.Fatalf("Load: removed names %+v, want %+v", got.Removed, want.Removed)
	}
	if !slices.EqualFunc(got.Notices, want.Notices, sameNotice) {
		t.Fatalf("Load: notices %+v, want %+v", got.Notices, want.Notices)
	}
	if !slices.EqualFunc(got.Blocked, want.Blocked, sameBlock) {
		t.Fatalf("Load: blocked %+v, want %+v", got.Blocked, want.Blocked)
	}
	if !slices.EqualFunc(got.Kept, want.Kept, sameKept) {
		t.Fatalf("Load: kept %+v, want %+v", got.Kept, want.Kept)
	}
}

// sameHandle reports whether g, read back from a store, is w as stored. A
// shown handle has no HiddenSince.
func sameHandle(g, w Handle) bool {
	return g.Name == w.Name && g.Account == w.Account && g.Policy == w.Policy &&
		g.Hidden == w.Hidden && sameStoredTime(g.HiddenSince, w.HiddenSince) && g.Web == w.Web
}

// sameNotice reports whether g, read back from a store, is w as stored.
func sameNotice(g, w Notice) bool {
	return g.Handle == w.Handle && g.Account == w.Account && g.Contact == w.Contact &&
		sameStoredTime(g.Since, w.Since)
}

// sameBlock reports whether g, read back from a store, is w as stored.
func sameBlock(g, w Block) bool {
	return g.Account == w.Account && g.Contact == w.Contact && sameStoredTime(g.Since, w.Since)
}

// sameKept reports whether g, read back from a store, is w as stored.
func sameKept(g, w Kept) bool {
	return g.Handle == w.Handle && g.Contact == w.Contact && sameStoredTime(g.Since, w.Since)
}

// sameRequest reports whether g, read back from a store, is w as stored.
func sameRequest(g, w Request) bool {
	return g.Handle == w.Handle && g.Contact == w.Contact && sameStoredTime(g.At, w.At)
}

// sameStoredTime reports whether got, read back from a store, is want as
// stored: the same instant to the microsecond, in UTC.
func sameStoredTime(got, want time.Time) bool {
	return got.Location() == time.UTC && got.Equal(want.Truncate(time.Microsecond))
}

// load returns what s.Load returns, failing the test on error.
func load(t testing.TB, s Store) *Snapshot {
	t.Helper()
	snap, err := s.Load(context.Background())
	must(t, "Load", err)
	return snap
}

// mustApply applies ops to s, failing the test on error.
func mustApply(t testing.TB, s Store, ops ...Op) {
	t.Helper()
	must(t, fmt.Sprintf("Apply(%+v)", ops), s.Apply(context.Background(), ops))
}

// wantOpError fails the test unless err is an *OpError at index i whose
// error is want, or, for a nil want, none of the sentinels.
func wantOpError(t testing.TB, what string, err error, i int, want error) {
	t.Helper()
	var oe *OpError
	switch {
	case !errors.As(err, &oe) || oe.Index != i:
		t.Fatalf("%s = %v, want an *OpError at index %d", what, err, i)
	case want == nil && isSentinel(err):
		t.Fatalf("%s = %v, want no sentinel", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
}

// runConformance checks that a backend implements Store as documented.
// freshDSN returns the DSN of a new, empty database for the driver; each
// subtest gets its own.
func runConformance(t *testing.T, driver string, freshDSN func(t testing.TB) string) {
	open := func(t *testing.T) Store {
		return openStore(t, driver, freshDSN(t))
	}
	ctx := context.Background()

	t.Run("SchemaVersion", func(t *testing.T) {
		s := open(t)
		if got, want := queryInt(t, s, "SELECT version FROM schema_version"), migrationCount(s); got != want {
			t.Fatalf("schema version %d, want %d", got, want)
		}
		if n := queryInt(t, s, "SELECT count(*) FROM schema_version"); n != 1 {
			t.Fatalf("schema_version has %d rows, want 1", n)
		}
	})

	t.Run("ReopenKeepsVersion", func(t *testing.T) {
		dsn := freshDSN(t)
		s, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		must(t, "close", s.Close())
		s = openStore(t, driver, dsn)
		if got, want := queryInt(t, s, "SELECT version FROM schema_version"), migrationCount(s); got != want {
			t.Fatalf("schema version %d, want %d", got, want)
		}
	})

	t.Run("SchemaTooNew", func(t *testing.T) {
		dsn := freshDSN(t)
		s, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		newer := migrationCount(s) + 1
		execRaw(t, s, "UPDATE schema_version SET version = version + 1")
		must(t, "close", s.Close())

		s, err = Open(ctx, driver, dsn)
		if err == nil {
			s.Close()
			t.Fatal("open: no error for a newer schema")
		}
		wantErr(t, "open", err, ErrSchemaTooNew)
		if !strings.Contains(err.Error(), fmt.Sprint(newer)) || !strings.Contains(err.Error(), fmt.Sprint(newer-1)) {
			t.Errorf("error %q does not give both versions", err)
		}
	})

	t.Run("AddHandleCreatesAccount", func(t *testing.T) {
		s := open(t)
		since := time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)
		created, err := s.AddHandle(ctx, "alice@example.org", "alice", 3, since)
		must(t, "AddHandle", err)
		if !created {
			t.Error("AddHandle on a new account: created = false")
		}
		a, err := s.Account(ctx, "alice@example.org")
		must(t, "Account", err)
		f := a.Flags
		if f.Online || f.Status != StatusUndefined || f.Hiding || f.StatusText != "" {
			t.Errorf("new account flags %+v, want off-line, undefined, visible, no text", f)
		}
		if want := since.Truncate(time.Microsecond); !f.Since.Equal(want) {
			t.Errorf("new account Since %v, want the moment given, %v", f.Since, want)
		}
		wantHandles(t, s, "alice@example.org", "alice")

		created, err = s.AddHandle(ctx, "alice@example.org", "alice2", 3, time.Now())
		must(t, "AddHandle", err)
		if created {
			t.Error("AddHandle on an existing account: created = true")
		}
		wantFlags(t, s, "alice@example.org", f)
		wantHandles(t, s, "alice@example.org", "alice", "alice2")
	})

	t.Run("AddHandleLimit", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a1", 2)
		mustAdd(t, s, "a@example.org", "a2", 2)
		_, err := s.AddHandle(ctx, "a@example.org", "a3", 2, time.Now())
		wantErr(t, "AddHandle over the limit", err, ErrLimit)
		wantHandles(t, s, "a@example.org", "a1", "a2")
		// A higher limit lets it in.
		mustAdd(t, s, "a@example.org", "a3", 3)
		wantHandles(t, s, "a@example.org", "a1", "a2", "a3")
		// The name is free for someone else.
		mustAdd(t, s, "b@example.org", "a4", 1)
	})

	t.Run("AddHandleLimitNewAccount", func(t *testing.T) {
		s := open(t)
		for _, max := range []int{0, -1} {
			_, err := s.AddHandle(ctx, "new@example.org", "new", max, time.Now())
			wantErr(t, fmt.Sprintf("AddHandle with max %d", max), err, ErrLimit)
			wantNoAccount(t, s, "new@example.org")
		}
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		wantSnapshot(t, snap, &Snapshot{})
	})

	t.Run("AddHandleTakenByOther", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "shared", 5)

		// A new account is not left behind.
		_, err := s.AddHandle(ctx, "b@example.org", "shared", 5, time.Now())
		wantErr(t, "AddHandle of a taken name", err, ErrExists)
		wantNoAccount(t, s, "b@example.org")
		wantHandles(t, s, "b@example.org")

		// An existing account is untouched.
		flags := Flags{Online: true, Status: StatusBusy, StatusText: "x", Since: time.Unix(1000, 0)}
		must(t, "SetFlags", s.SetFlags(ctx, "c@example.org", flags))
		mustAdd(t, s, "c@example.org", "c", 5)
		_, err = s.AddHandle(ctx, "c@example.org", "shared", 5, time.Now())
		wantErr(t, "AddHandle of a taken name", err, ErrExists)
		wantFlags(t, s, "c@example.org", flags)
		wantHandles(t, s, "c@example.org", "c")
		wantHandles(t, s, "a@example.org", "shared")
	})

	t.Run("AddHandleTakenBySelf", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "mine", 5)
		_, err := s.AddHandle(ctx, "a@example.org", "mine", 5, time.Now())
		wantErr(t, "AddHandle of an own name", err, ErrExists)
		wantHandles(t, s, "a@example.org", "mine")
	})

	t.Run("AddHandleExistsBeforeLimit", func(t *testing.T) {
		// When both apply, the name being taken is reported.
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 1)
		_, err := s.AddHandle(ctx, "a@example.org", "a", 1, time.Now())
		wantErr(t, "AddHandle", err, ErrExists)
	})

	t.Run("RemoveHandle", func(t *testing.T) {
		s := open(t)
		flags := Flags{Online: true, Status: StatusAway, Since: time.Unix(2000, 0)}
		must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", flags))
		mustAdd(t, s, "a@example.org", "one", 5)
		mustAdd(t, s, "a@example.org", "two", 5)
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "one"))
		wantHandles(t, s, "a@example.org", "two")
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "two"))
		wantHandles(t, s, "a@example.org")
		// The account and its flags stay.
		wantFlags(t, s, "a@example.org", flags)
		// The name is free again.
		mustAdd(t, s, "b@example.org", "one", 5)
		wantErr(t, "RemoveHandle again", s.RemoveHandle(ctx, "a@example.org", "two"), ErrNotFound)
	})

	t.Run("RemoveHandleNotFound", func(t *testing.T) {
		s := open(t)
		wantErr(t, "RemoveHandle unknown account", s.RemoveHandle(ctx, "a@example.org", "nobody"), ErrNotFound)
		mustAdd(t, s, "a@example.org", "a", 5)
		wantErr(t, "RemoveHandle unknown handle", s.RemoveHandle(ctx, "a@example.org", "nobody"), ErrNotFound)
	})

	t.Run("RemoveHandleNotOwner", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 5)
		mustAdd(t, s, "b@example.org", "b", 5)
		must(t, "AddSubscription", s.AddSubscription(ctx, "a", "c@example.net"))
		wantErr(t, "RemoveHandle", s.RemoveHandle(ctx, "b@example.org", "a"), ErrNotOwner)
		wantErr(t, "RemoveHandle", s.RemoveHandle(ctx, "nobody@example.org", "a"), ErrNotOwner)
		wantHandles(t, s, "a@example.org", "a")
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		if want := []Subscription{{"a", "c@example.net"}}; !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %v, want %v", snap.Subscriptions, want)
		}
		wantNoAccount(t, s, "nobody@example.org")
	})

	t.Run("RemoveHandleDeletesSubscriptions", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "gone", 5)
		mustAdd(t, s, "a@example.org", "kept", 5)
		for _, c := range []string{"x@example.net", "y@example.net"} {
			must(t, "AddSubscription", s.AddSubscription(ctx, "gone", c))
			must(t, "AddSubscription", s.AddSubscription(ctx, "kept", c))
		}
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "gone"))
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		want := []Subscription{{"kept", "x@example.net"}, {"kept", "y@example.net"}}
		if !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %v, want %v", snap.Subscriptions, want)
		}
		// A new holder of the name starts with no subscribers.
		mustAdd(t, s, "b@example.org", "gone", 5)
		snap, err = s.Load(ctx)
		must(t, "Load", err)
		if !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %v, want %v", snap.Subscriptions, want)
		}
	})

	t.Run("HandlesSorted", func(t *testing.T) {
		s := open(t)
		names := []string{"zed", "alpha", "émile", "alpha2", "_x", "10", "9", "ärger", "b"}
		for _, n := range names {
			mustAdd(t, s, "a@example.org", n, 100)
		}
		mustAdd(t, s, "b@example.org", "other", 100)
		want := slices.Clone(names)
		sort.Strings(want)
		wantHandles(t, s, "a@example.org", want...)
	})

	t.Run("HandlesUnknownAccount", func(t *testing.T) {
		s := open(t)
		wantHandles(t, s, "nobody@example.org")
	})

	t.Run("AccountNotFound", func(t *testing.T) {
		s := open(t)
		wantNoAccount(t, s, "nobody@example.org")
		mustAdd(t, s, "a@example.org", "a", 5)
		wantNoAccount(t, s, "A@example.org")
	})

	t.Run("SetFlags", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 5)
		zone := time.FixedZone("UTC+5:30", 5*3600+1800)
		for _, f := range []Flags{
			{Online: true, Status: StatusAway, StatusText: "lunch", Since: time.Date(2024, 3, 1, 12, 30, 45, 123456789, zone)},
			{Online: true, Status: StatusBusy, Explicit: true, Hiding: true, StatusText: "héllo\nwörld ✓", Since: time.Date(2030, 1, 2, 3, 4, 5, 999999999, time.UTC)},
			{Online: false, Status: StatusUndefined, Since: time.Date(1999, 12, 31, 23, 59, 59, 1000, time.Local)},
			{Online: false, Status: StatusAway, Hiding: true, Since: time.Date(1960, 6, 1, 0, 0, 0, 1500, time.UTC)},
			{Status: StatusUndefined, Since: time.Time{}},
		} {
			must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", f))
			a, err := s.Account(ctx, "a@example.org")
			must(t, "Account", err)
			got := a.Flags
			if got.Online != f.Online || got.Status != f.Status || got.Explicit != f.Explicit || got.Hiding != f.Hiding || got.StatusText != f.StatusText {
				t.Errorf("flags %+v, want %+v", got, f)
			}
			if want := f.Since.Truncate(time.Microsecond); !got.Since.Equal(want) {
				t.Errorf("Since %v, want %v", got.Since, want)
			}
			if got.Since.Location() != time.UTC {
				t.Errorf("Since in %v, want UTC", got.Since.Location())
			}
			if f.Since.IsZero() && !got.Since.IsZero() {
				t.Errorf("zero Since read back as %v", got.Since)
			}
		}
		wantHandles(t, s, "a@example.org", "a")
	})

	t.Run("SetFlagsCreatesAccount", func(t *testing.T) {
		s := open(t)
		f := Flags{Online: true, Status: StatusBusy, StatusText: "new", Since: time.Unix(1700000000, 5000)}
		must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", f))
		wantFlags(t, s, "a@example.org", f)
		wantHandles(t, s, "a@example.org")
		// AddHandle then finds the account.
		if mustAdd(t, s, "a@example.org", "a", 5) {
			t.Error("AddHandle after SetFlags: created = true")
		}
		wantFlags(t, s, "a@example.org", f)
	})

	t.Run("SetFlagsInvalidStatus", func(t *testing.T) {
		s := open(t)
		for _, st := range []Status{"", "hiding", "Away"} {
			err := s.SetFlags(ctx, "a@example.org", Flags{Status: st, Since: time.Now()})
			if err == nil {
				t.Fatalf("SetFlags with status %q: no error", st)
			}
			if isSentinel(err) {
				t.Fatalf("SetFlags with status %q: sentinel error %v", st, err)
			}
			wantNoAccount(t, s, "a@example.org")
		}
		f := Flags{Status: StatusAway, Since: time.Unix(5, 0)}
		must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", f))
		if err := s.SetFlags(ctx, "a@example.org", Flags{Online: true}); err == nil {
			t.Fatal("SetFlags with zero status: no error")
		}
		wantFlags(t, s, "a@example.org", f)
	})

	t.Run("SetFlagsIsolated", func(t *testing.T) {
		s := open(t)
		fa := Flags{Online: true, Status: StatusAway, Since: time.Unix(10, 0)}
		fb := Flags{Status: StatusBusy, Hiding: true, Since: time.Unix(20, 0)}
		must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", fa))
		must(t, "SetFlags", s.SetFlags(ctx, "b@example.org", fb))
		wantFlags(t, s, "a@example.org", fa)
		wantFlags(t, s, "b@example.org", fb)
	})

	t.Run("Subscriptions", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		for range 3 {
			must(t, "AddSubscription", s.AddSubscription(ctx, "h", "c@example.net"))
		}
		must(t, "AddSubscription", s.AddSubscription(ctx, "h", "b@example.net"))
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		want := []Subscription{{"h", "b@example.net"}, {"h", "c@example.net"}}
		if !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %v, want %v", snap.Subscriptions, want)
		}
		for range 2 {
			must(t, "RemoveSubscription", s.RemoveSubscription(ctx, "h", "c@example.net"))
		}
		must(t, "RemoveSubscription of none", s.RemoveSubscription(ctx, "h", "nobody@example.net"))
		must(t, "RemoveSubscription of an unknown handle", s.RemoveSubscription(ctx, "nohandle", "c@example.net"))
		snap, err = s.Load(ctx)
		must(t, "Load", err)
		if want := want[:1]; !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %v, want %v", snap.Subscriptions, want)
		}
	})

	t.Run("AddSubscriptionUnknownHandle", func(t *testing.T) {
		s := open(t)
		wantErr(t, "AddSubscription", s.AddSubscription(ctx, "nohandle", "c@example.net"), ErrNotFound)
		mustAdd(t, s, "a@example.org", "h", 5)
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "h"))
		wantErr(t, "AddSubscription after remove", s.AddSubscription(ctx, "h", "c@example.net"), ErrNotFound)
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		if len(snap.Subscriptions) != 0 {
			t.Fatalf("subscriptions %v, want none", snap.Subscriptions)
		}
	})

	t.Run("ApplyBatch", func(t *testing.T) {
		s := open(t)
		at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		f := Flags{Online: true, Status: StatusBusy, StatusText: "in a meeting", Since: at}
		ops := []Op{
			{Kind: OpAddHandle, Account: "a@example.org", Handle: "h1", Max: 5, Now: at, Policy: PolicyAsk},
			{Kind: OpAddHandle, Account: "a@example.org", Handle: "h2", Max: 5, Now: at, Policy: PolicyAsk},
			{Kind: OpAddSubscription, Handle: "h1", Contact: "c@example.net"},
			{Kind: OpAddSubscription, Handle: "h2", Contact: "c@example.net"},
			{Kind: OpAddSubscription, Handle: "h2", Contact: "d@example.net"},
			{Kind: OpRemoveSubscription, Handle: "h2", Contact: "c@example.net"},
			{Kind: OpSetFlags, Account: "a@example.org", Flags: f},
			{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "h1"},
		}
		must(t, "Apply", s.Apply(ctx, ops))
		wantHandles(t, s, "a@example.org", "h2")
		wantFlags(t, s, "a@example.org", f)
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		if want := []Subscription{{"h2", "d@example.net"}}; !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions after Apply %v, want %v", snap.Subscriptions, want)
		}
		must(t, "Apply(nil)", s.Apply(ctx, nil))
	})

	t.Run("ApplyFailingOpKeepsNothing", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		tests := []struct {
			name string
			bad  Op
			want error
		}{
			{"taken", Op{Kind: OpAddHandle, Account: "b@example.org", Handle: "h", Max: 5, Policy: PolicyAsk}, ErrExists},
			{"limit", Op{Kind: OpAddHandle, Account: "b@example.org", Handle: "x", Max: 0, Policy: PolicyAsk}, ErrLimit},
			{"not owner", Op{Kind: OpRemoveHandle, Account: "b@example.org", Handle: "h"}, ErrNotOwner},
			{"no handle", Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "none"}, ErrNotFound},
			{"subscribe unknown", Op{Kind: OpAddSubscription, Handle: "none", Contact: "c@example.net"}, ErrNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ops := []Op{
					{Kind: OpAddSubscription, Handle: "h", Contact: "c@example.net"},
					{Kind: OpSetFlags, Account: "a@example.org", Flags: Flags{Status: StatusAway, Hiding: true}},
					tt.bad,
					{Kind: OpAddHandle, Account: "a@example.org", Handle: "later", Max: 5, Policy: PolicyAsk},
				}
				err := s.Apply(ctx, ops)
				var oe *OpError
				if !errors.As(err, &oe) || oe.Index != 2 || !errors.Is(err, tt.want) {
					t.Fatalf("Apply with a bad op at 2 = %v, want an *OpError at index 2 wrapping %v", err, tt.want)
				}
				snap, err := s.Load(ctx)
				must(t, "Load", err)
				if len(snap.Subscriptions) != 0 {
					t.Fatalf("subscriptions %v kept from a failed batch", snap.Subscriptions)
				}
				wantHandles(t, s, "a@example.org", "h")
				wantNoAccount(t, s, "b@example.org")
				a, err := s.Account(ctx, "a@example.org")
				must(t, "Account", err)
				if a.Flags.Hiding {
					t.Fatal("flags of a failed batch were kept")
				}
			})
		}
	})

	t.Run("ApplyInvalidStatusWritesNothing", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		err := s.Apply(ctx, []Op{
			{Kind: OpAddSubscription, Handle: "h", Contact: "c@example.net"},
			{Kind: OpSetFlags, Account: "a@example.org", Flags: Flags{}},
		})
		var oe *OpError
		if !errors.As(err, &oe) || oe.Index != 1 || isSentinel(err) {
			t.Fatalf("Apply with an invalid status = %v, want a non-sentinel *OpError at index 1", err)
		}
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		if len(snap.Subscriptions) != 0 {
			t.Fatalf("subscriptions %v kept from a refused batch", snap.Subscriptions)
		}
	})

	t.Run("ApplyLongBatchRowError", func(t *testing.T) {
		// A row error anywhere in a long batch of ops that write without
		// reading (PostgreSQL sends those many at a time), some of two
		// statements, with ops that read among them, names its op and
		// keeps nothing; the batch without it applies.
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		at := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
		good := longBatch(150, at)
		mustApply(t, s, Op{Kind: OpAddRequest, Handle: "h", Contact: "c001@example.net", Now: at})
		before := load(t, s)
		bad := []struct {
			op   Op
			want error
		}{
			{Op{Kind: OpAddSubscription, Handle: "none", Contact: "c@example.net", Answers: true}, ErrNotFound},
			{Op{Kind: OpAddRequest, Handle: "none", Contact: "c@example.net", Now: at}, ErrNotFound},
			{Op{Kind: OpBlock, Account: "nobody@example.org", Contact: "c@example.net", Now: at}, ErrNotFound},
			{Op{Kind: OpSetPolicy, Account: "b@example.org", Handle: "h", Policy: PolicyOpen}, ErrNotOwner},
		}
		for n, i := range []int{0, 1, 2, 40, 41, 63, 64, 65, 66, 100, 149, 150} {
			b := bad[n%len(bad)]
			err := s.Apply(ctx, slices.Insert(slices.Clone(good), i, b.op))
			wantOpError(t, fmt.Sprintf("Apply with %v at %d", b.op.Kind, i), err, i, b.want)
			wantSnapshot(t, load(t, s), before)
		}
		mustApply(t, s, good...)
		snap := load(t, s)
		if len(snap.Accounts) != 50 || len(snap.Subscriptions) != 49 || len(snap.Blocked) != 50 || len(snap.Requests) != 0 {
			t.Fatalf("after the batch: %d accounts, %d subscriptions, %d blocked, %d requests; want 50, 49, 50, 0",
				len(snap.Accounts), len(snap.Subscriptions), len(snap.Blocked), len(snap.Requests))
		}
		if h := snap.Handles[0]; !h.Web || h.Policy != PolicyOpen {
			t.Fatalf("handle after the batch %+v, want on the web and open", h)
		}
	})

	t.Run("LoadEmpty", func(t *testing.T) {
		s := open(t)
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		wantSnapshot(t, snap, &Snapshot{})
	})

	t.Run("Load", func(t *testing.T) {
		s := open(t)
		want := populate(t, s)
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		wantSnapshot(t, snap, want)
	})

	t.Run("Persistence", func(t *testing.T) {
		dsn := freshDSN(t)
		s, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		want := populate(t, s)
		must(t, "close", s.Close())

		s = openStore(t, driver, dsn)
		snap, err := s.Load(ctx)
		must(t, "Load", err)
		wantSnapshot(t, snap, want)
		// Constraints still hold.
		_, err = s.AddHandle(ctx, "z@example.org", "b1", 5, time.Now())
		wantErr(t, "AddHandle after reopen", err, ErrExists)
	})

	t.Run("ConcurrentSameName", func(t *testing.T) {
		s := open(t)
		const racers = 8
		for round := range 5 {
			name := fmt.Sprintf("contested%d", round)
			errs := race(racers, func(i int) error {
				_, err := s.AddHandle(ctx, fmt.Sprintf("r%d-%d@example.org", round, i), name, 5, time.Now())
				return err
			})
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil:
					if winner >= 0 {
						t.Fatalf("round %d: racers %d and %d both got %q", round, winner, i, name)
					}
					winner = i
				case !errors.Is(err, ErrExists):
					t.Fatalf("round %d: racer %d: %v, want nil or ErrExists", round, i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: nobody got %q", round, name)
			}
			for i := range racers {
				account := fmt.Sprintf("r%d-%d@example.org", round, i)
				if i == winner {
					wantHandles(t, s, account, name)
				} else {
					wantNoAccount(t, s, account)
				}
			}
		}
	})

	t.Run("ConcurrentLimit", func(t *testing.T) {
		s := open(t)
		const max, racers = 3, 8
		for round := range 10 {
			account := fmt.Sprintf("a%d@example.org", round)
			for i := range max - 1 {
				mustAdd(t, s, account, fmt.Sprintf("h%d-%d", round, i), max)
			}
			errs := race(racers, func(i int) error {
				_, err := s.AddHandle(ctx, account, fmt.Sprintf("new%d-%d", round, i), max, time.Now())
				return err
			})
			ok := 0
			for i, err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, ErrLimit):
					t.Fatalf("round %d: racer %d: %v, want nil or ErrLimit", round, i, err)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d racers succeeded, want 1", round, ok)
			}
			handles, err := s.Handles(ctx, account)
			must(t, "Handles", err)
			if len(handles) != max {
				t.Fatalf("round %d: account holds %v, want %d handles", round, handles, max)
			}
		}
	})

	t.Run("ConcurrentNewAccount", func(t *testing.T) {
		s := open(t)
		const racers = 8
		created := make([]bool, racers)
		errs := race(racers, func(i int) error {
			var err error
			created[i], err = s.AddHandle(ctx, "a@example.org", fmt.Sprintf("h%d", i), racers, time.Now())
			return err
		})
		n := 0
		for i := range racers {
			must(t, fmt.Sprintf("racer %d", i), errs[i])
			if created[i] {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d racers created the account, want 1", n)
		}
	})

	t.Run("Closed", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 5)
		must(t, "close", s.Close())
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s on a closed store: no error", what)
			} else if isSentinel(err) {
				t.Errorf("%s on a closed store: sentinel error %v", what, err)
			}
		}
		_, err := s.Load(ctx)
		check("Load", err)
		_, err = s.AddHandle(ctx, "a@example.org", "b", 5, time.Now())
		check("AddHandle", err)
		check("RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "a"))
		_, err = s.Handles(ctx, "a@example.org")
		check("Handles", err)
		_, err = s.Account(ctx, "a@example.org")
		check("Account", err)
		check("SetFlags", s.SetFlags(ctx, "a@example.org", Flags{Status: StatusAway}))
		check("AddSubscription", s.AddSubscription(ctx, "a", "c@example.net"))
		check("RemoveSubscription", s.RemoveSubscription(ctx, "a", "c@example.net"))
		check("Ping", s.Ping(ctx))
		// The deferred Close runs a second time: it must not fail.
	})

	// Ping answers nil while the store can commit, also right after a
	// change, and fails once the store is closed.
	t.Run("Ping", func(t *testing.T) {
		dsn := freshDSN(t)
		s, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		must(t, "Ping", s.Ping(ctx))
		mustAdd(t, s, "a@example.org", "a", 5)
		must(t, "Ping after a change", s.Ping(ctx))
		if snap := load(t, s); len(snap.Handles) != 1 || len(snap.Accounts) != 1 {
			t.Fatalf("Ping changed the database: %+v", snap)
		}
		must(t, "close", s.Close())
		if err := s.Ping(ctx); err == nil || isSentinel(err) {
			t.Fatalf("Ping after Close = %v, want a non-sentinel error", err)
		}
		// Reopened, the same database answers again.
		s = openStore(t, driver, dsn)
		must(t, "Ping once reopened", s.Ping(ctx))
	})

	t.Run("CanceledContext", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 5)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := s.Account(cctx, "a@example.org")
		if err == nil || isSentinel(err) {
			t.Fatalf("Account with a canceled context: %v, want a non-sentinel error", err)
		}
		_, err = s.AddHandle(cctx, "a@example.org", "b", 5, time.Now())
		if err == nil || isSentinel(err) {
			t.Fatalf("AddHandle with a canceled context: %v, want a non-sentinel error", err)
		}
		wantHandles(t, s, "a@example.org", "a")
	})

	// A canceled context fails every method, every time, and costs the
	// store nothing: the next call with a live context works at once.
	t.Run("CanceledContextRepeated", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "a", 5)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		calls := []struct {
			name string
			call func() error
		}{
			{"Account", func() error { _, err := s.Account(cctx, "a@example.org"); return err }},
			{"Handles", func() error { _, err := s.Handles(cctx, "a@example.org"); return err }},
			{"AddHandle", func() error { _, err := s.AddHandle(cctx, "a@example.org", "b", 5, time.Now()); return err }},
			{"RemoveHandle", func() error { return s.RemoveHandle(cctx, "a@example.org", "a") }},
			{"SetFlags", func() error { return s.SetFlags(cctx, "a@example.org", Flags{Status: StatusAway}) }},
			{"AddSubscription", func() error { return s.AddSubscription(cctx, "a", "c@example.net") }},
			{"RemoveSubscription", func() error { return s.RemoveSubscription(cctx, "a", "c@example.net") }},
			{"Apply", func() error {
				return s.Apply(cctx, []Op{{Kind: OpAddSubscription, Handle: "a", Contact: "c@example.net"}})
			}},
			{"Load", func() error { _, err := s.Load(cctx); return err }},
			{"Ping", func() error { return s.Ping(cctx) }},
		}
		for i := range 50 {
			for _, c := range calls {
				if err := c.call(); err == nil || isSentinel(err) {
					t.Fatalf("round %d: %s with a canceled context: %v, want a non-sentinel error", i, c.name, err)
				}
				wantHandles(t, s, "a@example.org", "a")
			}
		}
		if snap := load(t, s); len(snap.Handles) != 1 || len(snap.Subscriptions) != 0 || snap.Accounts[0].Flags.Status == StatusAway {
			t.Fatalf("a canceled call changed the database: %+v", snap)
		}
	})

	t.Run("AddHandlePolicy", func(t *testing.T) {
		s := open(t)
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		mustApply(t, s,
			Op{Kind: OpAddHandle, Account: "a@example.org", Handle: "open", Max: 5, Now: at, Policy: PolicyOpen},
			Op{Kind: OpAddHandle, Account: "a@example.org", Handle: "ask", Max: 5, Now: at, Policy: PolicyAsk},
		)
		// The method asks.
		mustAdd(t, s, "a@example.org", "method", 5)
		want := []Handle{
			{Name: "ask", Account: "a@example.org", Policy: PolicyAsk},
			{Name: "method", Account: "a@example.org", Policy: PolicyAsk},
			{Name: "open", Account: "a@example.org", Policy: PolicyOpen},
		}
		if got := load(t, s).Handles; !slices.Equal(got, want) {
			t.Fatalf("handles %+v, want %+v", got, want)
		}
		for _, p := range []Policy{"", "closed", "Open"} {
			err := s.Apply(ctx, []Op{
				{Kind: OpAddSubscription, Handle: "ask", Contact: "c@example.net"},
				{Kind: OpAddHandle, Account: "b@example.org", Handle: "bad", Max: 5, Now: at, Policy: p},
			})
			wantOpError(t, fmt.Sprintf("AddHandle with policy %q", p), err, 1, nil)
		}
		wantNoAccount(t, s, "b@example.org")
		if snap := load(t, s); !slices.Equal(snap.Handles, want) || len(snap.Subscriptions) != 0 {
			t.Fatalf("a refused batch was kept: %+v", snap)
		}
	})

	t.Run("RemoveHandleOwesNotices", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "gone", 5)
		mustAdd(t, s, "a@example.org", "kept", 5)
		mustAdd(t, s, "b@example.org", "other", 5)
		for _, sub := range []Subscription{{"gone", "y@example.net"}, {"gone", "x@example.net"}, {"kept", "x@example.net"}, {"other", "z@example.net"}} {
			must(t, "AddSubscription", s.AddSubscription(ctx, sub.Handle, sub.Contact))
		}
		at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
		mustApply(t, s,
			Op{Kind: OpAddRequest, Handle: "gone", Contact: "r@example.net", Now: at},
			Op{Kind: OpAddRequest, Handle: "kept", Contact: "r@example.net", Now: at},
		)
		mustApply(t, s, Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "gone", Now: at})
		snap := load(t, s)
		want := &Snapshot{
			Accounts:      snap.Accounts,
			Handles:       []Handle{{Name: "kept", Account: "a@example.org", Policy: PolicyAsk}, {Name: "other", Account: "b@example.org", Policy: PolicyAsk}},
			Subscriptions: []Subscription{{"kept", "x@example.net"}, {"other", "z@example.net"}},
			// The request to the removed handle goes with it.
			Requests: []Request{{"kept", "r@example.net", at}},
			Removed:  []RemovedName{{"gone", "a@example.org", at}},
			// One per subscriber of the removed handle, none for the others.
			Notices: []Notice{{Handle: "gone", Account: "a@example.org", Contact: "x@example.net"}, {Handle: "gone", Account: "a@example.org", Contact: "y@example.net"}},
		}
		wantSnapshot(t, snap, want)

		// A removal that fails writes nothing.
		wantErr(t, "RemoveHandle of another's", s.RemoveHandle(ctx, "a@example.org", "other"), ErrNotOwner)
		wantErr(t, "RemoveHandle of none", s.RemoveHandle(ctx, "a@example.org", "none"), ErrNotFound)
		wantSnapshot(t, load(t, s), want)

		// Held again, the name is no longer removed; the notices owed for
		// its last holder stay owed.
		mustAdd(t, s, "b@example.org", "gone", 5)
		snap = load(t, s)
		if len(snap.Removed) != 0 {
			t.Fatalf("removed names %+v after the name was taken again, want none", snap.Removed)
		}
		if !slices.Equal(snap.Notices, want.Notices) {
			t.Fatalf("notices %+v, want %+v", snap.Notices, want.Notices)
		}

		// Removed again: the removal is the new one, and a notice already
		// owed to a contact is not owed twice.
		must(t, "AddSubscription", s.AddSubscription(ctx, "gone", "x@example.net"))
		must(t, "AddSubscription", s.AddSubscription(ctx, "gone", "w@example.net"))
		before := time.Now()
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "b@example.org", "gone"))
		after := time.Now()
		snap = load(t, s)
		wantNotices := []Notice{{Handle: "gone", Account: "b@example.org", Contact: "w@example.net"}, {Handle: "gone", Account: "a@example.org", Contact: "x@example.net"}, {Handle: "gone", Account: "a@example.org", Contact: "y@example.net"}}
		if !slices.Equal(snap.Notices, wantNotices) {
			t.Fatalf("notices %+v, want %+v", snap.Notices, wantNotices)
		}
		if len(snap.Removed) != 1 || snap.Removed[0].Name != "gone" || snap.Removed[0].Account != "b@example.org" ||
			snap.Removed[0].At.Before(before.Truncate(time.Microsecond)) || snap.Removed[0].At.After(after) {
			t.Fatalf("removed names %+v, want gone by b@example.org between %v and %v", snap.Removed, before, after)
		}
	})

	t.Run("Requests", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "a@example.org", "g", 5)
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 999, time.UTC)
		sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
		mustApply(t, s,
			Op{Kind: OpAddRequest, Handle: "h", Contact: "c@example.net", Now: sec(2)},
			Op{Kind: OpAddRequest, Handle: "h", Contact: "d@example.net", Now: sec(1)},
			Op{Kind: OpAddRequest, Handle: "h", Contact: "b@example.net", Now: sec(1)},
			Op{Kind: OpAddRequest, Handle: "g", Contact: "z@example.net", Now: sec(5)},
		)
		// Asked again, a request keeps its first time.
		mustApply(t, s, Op{Kind: OpAddRequest, Handle: "h", Contact: "c@example.net", Now: sec(10)})
		want := []Request{
			{"g", "z@example.net", sec(5)},
			{"h", "b@example.net", sec(1)},
			{"h", "d@example.net", sec(1)},
			{"h", "c@example.net", sec(2)},
		}
		snap := load(t, s)
		wantSnapshot(t, snap, &Snapshot{Accounts: snap.Accounts, Handles: snap.Handles, Requests: want})

		mustApply(t, s,
			Op{Kind: OpRemoveRequest, Handle: "h", Contact: "d@example.net"},
			Op{Kind: OpRemoveRequest, Handle: "h", Contact: "d@example.net"},
			Op{Kind: OpRemoveRequest, Handle: "h", Contact: "nobody@example.net"},
			Op{Kind: OpRemoveRequest, Handle: "none", Contact: "c@example.net"},
		)
		want = slices.Delete(want, 2, 3)
		if got := load(t, s).Requests; !slices.EqualFunc(got, want, sameRequest) {
			t.Fatalf("requests %+v, want %+v", got, want)
		}

		err := s.Apply(ctx, []Op{
			{Kind: OpAddRequest, Handle: "h", Contact: "e@example.net", Now: t0},
			{Kind: OpAddRequest, Handle: "none", Contact: "e@example.net", Now: t0},
		})
		wantOpError(t, "AddRequest to an unknown handle", err, 1, ErrNotFound)
		if got := load(t, s).Requests; len(got) != len(want) {
			t.Fatalf("requests %+v kept from a failed batch", got)
		}
	})

	t.Run("AddSubscriptionAnswersRequest", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "a@example.org", "g", 5)
		at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
		for _, r := range []Request{{"h", "c@example.net", at}, {"h", "d@example.net", at}, {"g", "c@example.net", at}, {"g", "e@example.net", at}} {
			mustApply(t, s, Op{Kind: OpAddRequest, Handle: r.Handle, Contact: r.Contact, Now: r.At})
		}
		mustApply(t, s, Op{Kind: OpAddSubscription, Handle: "h", Contact: "c@example.net", Answers: true})
		mustApply(t, s, Op{Kind: OpAddSubscription, Handle: "g", Contact: "e@example.net", Answers: true})
		// Without Answers, the request stays.
		must(t, "AddSubscription", s.AddSubscription(ctx, "h", "d@example.net"))
		snap := load(t, s)
		if want := []Request{{"g", "c@example.net", at}, {"h", "d@example.net", at}}; !slices.EqualFunc(snap.Requests, want, sameRequest) {
			t.Fatalf("requests %+v, want %+v", snap.Requests, want)
		}
		if want := []Subscription{{"g", "e@example.net"}, {"h", "c@example.net"}, {"h", "d@example.net"}}; !slices.Equal(snap.Subscriptions, want) {
			t.Fatalf("subscriptions %+v, want %+v", snap.Subscriptions, want)
		}
	})

	t.Run("NoticesSent", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h1", 5)
		mustAdd(t, s, "a@example.org", "h2", 5)
		for _, sub := range []Subscription{{"h1", "x@example.net"}, {"h1", "y@example.net"}, {"h1", "z@example.net"}, {"h2", "x@example.net"}} {
			must(t, "AddSubscription", s.AddSubscription(ctx, sub.Handle, sub.Contact))
		}
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "h1"))
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "h2"))
		if n := len(load(t, s).Notices); n != 4 {
			t.Fatalf("%d notices, want 4", n)
		}
		mustApply(t, s,
			Op{Kind: OpNoticesSent, Handle: "h1", Contacts: []string{"x@example.net", "z@example.net", "nobody@example.net"}},
			Op{Kind: OpNoticesSent, Handle: "h1"},
			Op{Kind: OpNoticesSent, Handle: "none", Contacts: []string{"x@example.net"}},
		)
		want := []Notice{{Handle: "h1", Account: "a@example.org", Contact: "y@example.net"}, {Handle: "h2", Account: "a@example.org", Contact: "x@example.net"}}
		if got := load(t, s).Notices; !slices.Equal(got, want) {
			t.Fatalf("notices %+v, want %+v", got, want)
		}
		// Sent twice (a retried batch) is no error.
		mustApply(t, s,
			Op{Kind: OpNoticesSent, Handle: "h2", Contacts: []string{"x@example.net"}},
			Op{Kind: OpNoticesSent, Handle: "h2", Contacts: []string{"x@example.net"}},
		)
		if got := load(t, s).Notices; !slices.Equal(got, want[:1]) {
			t.Fatalf("notices %+v, want %+v", got, want[:1])
		}
	})

	t.Run("SetPolicy", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		policyOf := func(name string) Policy {
			t.Helper()
			for _, h := range load(t, s).Handles {
				if h.Name == name {
					return h.Policy
				}
			}
			t.Fatalf("no handle %q", name)
			return ""
		}
		for _, p := range []Policy{PolicyOpen, PolicyOpen, PolicyAsk, PolicyOpen} {
			mustApply(t, s, Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h", Policy: p})
			if got := policyOf("h"); got != p {
				t.Fatalf("policy %q after SetPolicy(%q)", got, p)
			}
		}
		if got := policyOf("g"); got != PolicyAsk {
			t.Fatalf("policy of another handle %q, want %q", got, PolicyAsk)
		}
		tests := []struct {
			name string
			op   Op
			want error // nil: none of the sentinels
		}{
			{"not owner", Op{Kind: OpSetPolicy, Account: "b@example.org", Handle: "h", Policy: PolicyAsk}, ErrNotOwner},
			{"unknown account", Op{Kind: OpSetPolicy, Account: "nobody@example.org", Handle: "h", Policy: PolicyAsk}, ErrNotOwner},
			{"no handle", Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "none", Policy: PolicyAsk}, ErrNotFound},
			{"zero policy", Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h"}, nil},
			{"invalid policy", Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h", Policy: "closed"}, nil},
		}
		for _, tt := range tests {
			err := s.Apply(ctx, []Op{{Kind: OpSetPolicy, Account: "b@example.org", Handle: "g", Policy: PolicyOpen}, tt.op})
			wantOpError(t, "SetPolicy "+tt.name, err, 1, tt.want)
			if got := policyOf("h"); got != PolicyOpen {
				t.Fatalf("%s: policy %q, want it unchanged", tt.name, got)
			}
			if got := policyOf("g"); got != PolicyAsk {
				t.Fatalf("%s: policy of g %q kept from a failed batch", tt.name, got)
			}
		}
	})

	t.Run("SetVisibility", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		zone := time.FixedZone("UTC-3", -3*3600)
		t1 := time.Date(2026, 4, 5, 6, 7, 8, 123456789, zone)
		t2 := time.Date(2026, 4, 6, 0, 0, 0, 999, zone)
		g := Handle{Name: "g", Account: "b@example.org", Policy: PolicyAsk}
		wantHandlesLoaded := func(what string, want ...Handle) {
			t.Helper()
			if got := load(t, s).Handles; !slices.EqualFunc(got, want, sameHandle) {
				t.Fatalf("%s: handles %+v, want %+v", what, got, want)
			}
		}

		mustApply(t, s, Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Hidden: true, Now: t1})
		wantHandlesLoaded("hidden", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk, Hidden: true, HiddenSince: t1})
		// Hidden again, the handle takes the new moment.
		mustApply(t, s, Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Hidden: true, Now: t2})
		wantHandlesLoaded("hidden again", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk, Hidden: true, HiddenSince: t2})
		// Shown, it has no stamp any more; shown twice is no error.
		for range 2 {
			mustApply(t, s, Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Now: t1})
			wantHandlesLoaded("shown", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk})
		}
		// The zero time is a stamp like another: the handle is hidden.
		mustApply(t, s, Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Hidden: true})
		wantHandlesLoaded("hidden at the zero time", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk, Hidden: true})
		// The policy is apart from the visibility.
		mustApply(t, s, Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h", Policy: PolicyOpen})
		wantHandlesLoaded("policy set", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyOpen, Hidden: true})
		for _, h := range load(t, s).Handles {
			if h.HiddenSince.Location() != time.UTC {
				t.Errorf("handle %q: HiddenSince in %v, want UTC", h.Name, h.HiddenSince.Location())
			}
		}
	})

	t.Run("SetVisibilityErrors", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		at := time.Date(2026, 4, 5, 6, 7, 8, 0, time.UTC)
		tests := []struct {
			name string
			op   Op
			want error
		}{
			{"not owner", Op{Kind: OpSetVisibility, Account: "b@example.org", Handle: "h", Hidden: true, Now: at}, ErrNotOwner},
			{"unknown account", Op{Kind: OpSetVisibility, Account: "nobody@example.org", Handle: "h", Hidden: true, Now: at}, ErrNotOwner},
			{"no handle", Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "none", Hidden: true, Now: at}, ErrNotFound},
			{"show not owner", Op{Kind: OpSetVisibility, Account: "b@example.org", Handle: "h"}, ErrNotOwner},
		}
		for _, tt := range tests {
			err := s.Apply(ctx, []Op{{Kind: OpSetVisibility, Account: "b@example.org", Handle: "g", Hidden: true, Now: at}, tt.op})
			wantOpError(t, "SetVisibility "+tt.name, err, 1, tt.want)
			for _, h := range load(t, s).Handles {
				if h.Hidden {
					t.Fatalf("%s: handle %+v hidden by a failed batch", tt.name, h)
				}
			}
		}
		wantNoAccount(t, s, "nobody@example.org")
	})

	t.Run("SetWeb", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		at := time.Date(2026, 4, 5, 6, 7, 8, 123456789, time.FixedZone("UTC+1", 3600))
		g := Handle{Name: "g", Account: "b@example.org", Policy: PolicyAsk}
		wantHandlesLoaded := func(what string, want ...Handle) {
			t.Helper()
			if got := load(t, s).Handles; !slices.EqualFunc(got, want, sameHandle) {
				t.Fatalf("%s: handles %+v, want %+v", what, got, want)
			}
		}

		// A new handle is not public.
		wantHandlesLoaded("new", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk})
		// Made public twice is no error.
		for range 2 {
			mustApply(t, s, Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "h", Web: true})
			wantHandlesLoaded("public", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyAsk, Web: true})
		}
		// The policy and the visibility are apart from it.
		mustApply(t, s,
			Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h", Policy: PolicyOpen},
			Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Hidden: true, Now: at},
		)
		wantHandlesLoaded("policy set and hidden", g,
			Handle{Name: "h", Account: "a@example.org", Policy: PolicyOpen, Hidden: true, HiddenSince: at, Web: true})
		// Not public any more, it keeps them.
		for range 2 {
			mustApply(t, s, Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "h"})
			wantHandlesLoaded("not public", g, Handle{Name: "h", Account: "a@example.org", Policy: PolicyOpen, Hidden: true, HiddenSince: at})
		}
		// A name held again starts not public.
		mustApply(t, s,
			Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "h", Web: true},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "h", Now: at},
		)
		mustAdd(t, s, "b@example.org", "h", 5)
		wantHandlesLoaded("taken again", g, Handle{Name: "h", Account: "b@example.org", Policy: PolicyAsk})
	})

	t.Run("SetWebErrors", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		tests := []struct {
			name string
			op   Op
			want error
		}{
			{"not owner", Op{Kind: OpSetWeb, Account: "b@example.org", Handle: "h", Web: true}, ErrNotOwner},
			{"unknown account", Op{Kind: OpSetWeb, Account: "nobody@example.org", Handle: "h", Web: true}, ErrNotOwner},
			{"no handle", Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "none", Web: true}, ErrNotFound},
			{"unset not owner", Op{Kind: OpSetWeb, Account: "b@example.org", Handle: "h"}, ErrNotOwner},
			{"unset no handle", Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "none"}, ErrNotFound},
		}
		for _, tt := range tests {
			err := s.Apply(ctx, []Op{{Kind: OpSetWeb, Account: "b@example.org", Handle: "g", Web: true}, tt.op})
			wantOpError(t, "SetWeb "+tt.name, err, 1, tt.want)
			if !IsRowError(err) {
				t.Fatalf("SetWeb %s: IsRowError(%v) = false", tt.name, err)
			}
			for _, h := range load(t, s).Handles {
				if h.Web {
					t.Fatalf("%s: handle %+v made public by a failed batch", tt.name, h)
				}
			}
		}
		wantNoAccount(t, s, "nobody@example.org")
	})

	t.Run("Block", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h1", 5)
		mustAdd(t, s, "a@example.org", "h2", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		zone := time.FixedZone("UTC+2", 2*3600)
		t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		t1 := time.Date(2026, 3, 2, 10, 11, 12, 345678901, zone)
		t2 := t1.Add(time.Hour)
		for _, r := range []Request{
			{"h1", "c@example.net", t0}, {"h2", "c@example.net", t0}, {"g", "c@example.net", t0},
			{"h1", "d@example.net", t0}, {"h2", "e@example.net", t0},
		} {
			mustApply(t, s, Op{Kind: OpAddRequest, Handle: r.Handle, Contact: r.Contact, Now: r.At})
		}
		mustApply(t, s, Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t1})
		snap := load(t, s)
		// The contact's requests to the account's handles go; those to
		// another account's handle, and the other contacts', stay.
		wantRequests := []Request{{"g", "c@example.net", t0}, {"h1", "d@example.net", t0}, {"h2", "e@example.net", t0}}
		if !slices.EqualFunc(snap.Requests, wantRequests, sameRequest) {
			t.Fatalf("requests %+v, want %+v", snap.Requests, wantRequests)
		}
		want := []Block{{"a@example.org", "c@example.net", t1}}
		if !slices.EqualFunc(snap.Blocked, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", snap.Blocked, want)
		}
		// Blocked again, alone or twice in a batch, the contact keeps its
		// first stamp.
		mustApply(t, s, Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t2})
		mustApply(t, s,
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t2},
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t0},
		)
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v after blocking again, want %+v", got, want)
		}
		for _, b := range load(t, s).Blocked {
			if b.Since.Location() != time.UTC {
				t.Errorf("block %+v: Since in %v, want UTC", b, b.Since.Location())
			}
		}
		// A request made after the block is kept (the roster refuses it,
		// not storage), and goes with a block made again.
		mustApply(t, s, Op{Kind: OpAddRequest, Handle: "h1", Contact: "c@example.net", Now: t2})
		mustApply(t, s, Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t2})
		if got := load(t, s).Requests; !slices.EqualFunc(got, wantRequests, sameRequest) {
			t.Fatalf("requests %+v, want %+v", got, wantRequests)
		}
		// An account with no handle, created by SetFlags, blocks too.
		must(t, "SetFlags", s.SetFlags(ctx, "n@example.org", Flags{Status: StatusAway}))
		mustApply(t, s, Op{Kind: OpBlock, Account: "n@example.org", Contact: "c@example.net", Now: t0})
		want = append(want, Block{"n@example.org", "c@example.net", t0})
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", got, want)
		}
	})

	t.Run("BlockUnknownAccount", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		mustApply(t, s, Op{Kind: OpAddRequest, Handle: "h", Contact: "c@example.net", Now: at})
		err := s.Apply(ctx, []Op{
			{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: at},
			{Kind: OpBlock, Account: "nobody@example.org", Contact: "c@example.net", Now: at},
		})
		wantOpError(t, "Block by an unknown account", err, 1, ErrNotFound)
		if !IsRowError(err) {
			t.Fatalf("IsRowError(%v) = false", err)
		}
		snap := load(t, s)
		if len(snap.Blocked) != 0 || len(snap.Requests) != 1 {
			t.Fatalf("a failed batch was kept: blocked %+v, requests %+v", snap.Blocked, snap.Requests)
		}
		wantNoAccount(t, s, "nobody@example.org")
	})

	t.Run("Unblock", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "b@example.org", "g", 5)
		t1 := time.Date(2026, 3, 1, 0, 0, 0, 1000, time.UTC)
		t2 := t1.Add(time.Minute)
		mustApply(t, s,
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t1},
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "d@example.net", Now: t1},
			Op{Kind: OpBlock, Account: "b@example.org", Contact: "c@example.net", Now: t1},
		)
		mustApply(t, s, Op{Kind: OpUnblock, Account: "a@example.org", Contact: "c@example.net"})
		want := []Block{{"a@example.org", "d@example.net", t1}, {"b@example.org", "c@example.net", t1}}
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", got, want)
		}
		// Unblocking one not blocked, or by an unknown account, is no error.
		mustApply(t, s,
			Op{Kind: OpUnblock, Account: "a@example.org", Contact: "c@example.net"},
			Op{Kind: OpUnblock, Account: "a@example.org", Contact: "nobody@example.net"},
			Op{Kind: OpUnblock, Account: "nobody@example.org", Contact: "c@example.net"},
		)
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", got, want)
		}
		wantNoAccount(t, s, "nobody@example.org")
		// Blocked anew, the contact takes the new moment.
		mustApply(t, s, Op{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: t2})
		want = []Block{{"a@example.org", "c@example.net", t2}, {"a@example.org", "d@example.net", t1}, {"b@example.org", "c@example.net", t1}}
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", got, want)
		}
	})

	t.Run("BlockedOrder", func(t *testing.T) {
		s := open(t)
		accounts := []string{"b@example.org", "a@example.org", "ä@example.org", "A@example.org"}
		contacts := []string{"z@example.net", "y@example.net", "é@example.net", "Y@example.net", "10@example.net", "9@example.net"}
		at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		var want []Block
		for i, a := range accounts {
			mustAdd(t, s, a, fmt.Sprintf("h%d", i), 5)
			for j, c := range contacts {
				when := at.Add(time.Duration(len(contacts)-j) * time.Second)
				mustApply(t, s, Op{Kind: OpBlock, Account: a, Contact: c, Now: when})
				want = append(want, Block{a, c, when})
			}
		}
		slices.SortFunc(want, func(x, y Block) int {
			return cmp.Or(strings.Compare(x.Account, y.Account), strings.Compare(x.Contact, y.Contact))
		})
		if got := load(t, s).Blocked; !slices.EqualFunc(got, want, sameBlock) {
			t.Fatalf("blocked %+v, want %+v", got, want)
		}
	})

	t.Run("RemoveHandleNoticeSince", func(t *testing.T) {
		s := open(t)
		zone := time.FixedZone("UTC+9", 9*3600)
		base := time.Date(2026, 6, 1, 12, 0, 0, 0, zone)
		at := func(minutes int) time.Time { return base.Add(time.Duration(minutes)*time.Minute + 123456789) }
		stamp, early, hidden, late := at(50), at(10), at(20), at(30)
		for _, h := range []string{"plain", "hidden", "nostamp"} {
			mustAdd(t, s, "a@example.org", h, 5)
			for _, c := range []string{"p@example.net", "e@example.net", "l@example.net"} {
				must(t, "AddSubscription", s.AddSubscription(ctx, h, c))
			}
		}
		mustAdd(t, s, "x@example.org", "other", 5)
		mustApply(t, s,
			Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "hidden", Hidden: true, Now: hidden},
			// The rows no longer decide the stamps: e's block counts for
			// nothing unless e is listed.
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "e@example.net", Now: early},
		)
		removed := at(60)
		mustApply(t, s,
			// l is listed twice, and takes its last stamp; n is listed but
			// no subscriber, so it is owed nothing.
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "plain", Now: removed, Stamp: stamp,
				Contacts: []string{"l@example.net", "n@example.net", "l@example.net"}, Stamps: []time.Time{early, early, late}},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "hidden", Now: removed, Stamp: stamp,
				Contacts: []string{"e@example.net"}, Stamps: []time.Time{early}},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "nostamp", Now: removed,
				Contacts: []string{"e@example.net", "l@example.net", "p@example.net"}, Stamps: []time.Time{hidden, {}, late}},
		)
		want := []Notice{
			// Hidden: Stamp for those not listed, the hiding apart.
			{"hidden", "a@example.org", "e@example.net", early},
			{"hidden", "a@example.org", "l@example.net", stamp},
			{"hidden", "a@example.org", "p@example.net", stamp},
			// No Stamp: unknown, but for those listed with one.
			{"nostamp", "a@example.org", "e@example.net", hidden},
			{"nostamp", "a@example.org", "l@example.net", time.Time{}},
			{"nostamp", "a@example.org", "p@example.net", late},
			// Stamp for the blocked too, when not listed.
			{"plain", "a@example.org", "e@example.net", stamp},
			{"plain", "a@example.org", "l@example.net", late},
			{"plain", "a@example.org", "p@example.net", stamp},
		}
		snap := load(t, s)
		if !slices.EqualFunc(snap.Notices, want, sameNotice) {
			t.Fatalf("notices %+v, want %+v", snap.Notices, want)
		}
		for _, n := range snap.Notices {
			if n.Since.Location() != time.UTC {
				t.Errorf("notice %+v: Since in %v, want UTC", n, n.Since.Location())
			}
		}
		// The blocks outlive the handles.
		if len(snap.Blocked) != 1 {
			t.Fatalf("blocked %+v, want 1", snap.Blocked)
		}

		// A notice another account owes for the name keeps its stamp,
		// listed or not; one unsubscribed in the batch is no subscriber.
		mustAdd(t, s, "x@example.org", "reused", 5)
		must(t, "AddSubscription", s.AddSubscription(ctx, "reused", "p@example.net"))
		mustApply(t, s, Op{Kind: OpRemoveHandle, Account: "x@example.org", Handle: "reused", Now: removed, Stamp: early})
		mustAdd(t, s, "a@example.org", "reused", 5)
		for _, c := range []string{"p@example.net", "q@example.net", "r@example.net"} {
			must(t, "AddSubscription", s.AddSubscription(ctx, "reused", c))
		}
		mustApply(t, s,
			Op{Kind: OpRemoveSubscription, Handle: "reused", Contact: "r@example.net"},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "reused", Now: removed, Stamp: stamp,
				Contacts: []string{"p@example.net", "r@example.net"}, Stamps: []time.Time{late, late}},
		)
		want = append(want,
			Notice{"reused", "x@example.org", "p@example.net", early},
			Notice{"reused", "a@example.org", "q@example.net", stamp},
		)
		if got := load(t, s).Notices; !slices.EqualFunc(got, want, sameNotice) {
			t.Fatalf("notices %+v, want %+v", got, want)
		}

		// Stamps not matching Contacts are refused, and nothing is kept.
		mustAdd(t, s, "a@example.org", "mismatch", 5)
		must(t, "AddSubscription", s.AddSubscription(ctx, "mismatch", "p@example.net"))
		before := load(t, s)
		for _, stamps := range [][]time.Time{nil, {late, late}} {
			err := s.Apply(ctx, []Op{
				{Kind: OpSetVisibility, Account: "a@example.org", Handle: "mismatch", Hidden: true, Now: late},
				{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "mismatch", Now: removed, Stamp: stamp,
					Contacts: []string{"p@example.net"}, Stamps: stamps},
			})
			wantOpError(t, fmt.Sprintf("RemoveHandle with %d stamps for 1 contact", len(stamps)), err, 1, nil)
			wantSnapshot(t, load(t, s), before)
		}
		err := s.Apply(ctx, []Op{{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "mismatch", Now: removed, Stamps: []time.Time{late}}})
		wantOpError(t, "RemoveHandle with 1 stamp for no contact", err, 0, nil)
		wantSnapshot(t, load(t, s), before)

		// The method records no stamp of its own.
		mustAdd(t, s, "a@example.org", "method", 5)
		must(t, "AddSubscription", s.AddSubscription(ctx, "method", "p@example.net"))
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "method"))
		for _, n := range load(t, s).Notices {
			if n.Handle == "method" && !n.Since.IsZero() {
				t.Fatalf("notice %+v recorded by RemoveHandle, want a zero Since", n)
			}
		}
		// A name held again starts shown.
		mustAdd(t, s, "b@example.org", "hidden", 5)
		for _, h := range load(t, s).Handles {
			if h.Name == "hidden" && (h.Hidden || !h.HiddenSince.IsZero()) {
				t.Fatalf("handle %+v taken again is hidden", h)
			}
		}
	})

	t.Run("Keep", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, "a@example.org", "h", 5)
		mustAdd(t, s, "a@example.org", "g", 5)
		mustAdd(t, s, "b@example.org", "o", 5)
		for _, sub := range []Subscription{{"h", "c@example.net"}, {"h", "d@example.net"}, {"g", "c@example.net"}, {"o", "c@example.net"}} {
			must(t, "AddSubscription", s.AddSubscription(ctx, sub.Handle, sub.Contact))
		}
		zone := time.FixedZone("UTC-5", -5*3600)
		t0 := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
		t1 := time.Date(2026, 9, 2, 3, 4, 5, 678901234, zone)
		t2 := t1.Add(time.Hour + 999)
		wantKept := func(what string, want ...Kept) {
			t.Helper()
			got := load(t, s).Kept
			if !slices.EqualFunc(got, want, sameKept) {
				t.Fatalf("%s: kept %+v, want %+v", what, got, want)
			}
			for _, k := range got {
				if k.Since.Location() != time.UTC {
					t.Errorf("%s: kept %+v: Since in %v, want UTC", what, k, k.Since.Location())
				}
			}
		}

		mustApply(t, s,
			Op{Kind: OpKeep, Handle: "h", Contacts: []string{"d@example.net", "c@example.net"}, Now: t1},
			Op{Kind: OpKeep, Handle: "g", Contacts: []string{"c@example.net"}, Now: t2},
			Op{Kind: OpKeep, Handle: "o", Contacts: []string{"c@example.net"}, Now: t0},
		)
		wantKept("kept", Kept{"g", "c@example.net", t2}, Kept{"h", "c@example.net", t1}, Kept{"h", "d@example.net", t1}, Kept{"o", "c@example.net", t0})

		// Kept again, alone, twice in a batch or twice in one op, a stamp
		// takes the last one.
		mustApply(t, s, Op{Kind: OpKeep, Handle: "h", Contacts: []string{"c@example.net"}, Now: t2})
		mustApply(t, s,
			Op{Kind: OpKeep, Handle: "h", Contacts: []string{"d@example.net"}, Now: t2},
			Op{Kind: OpKeep, Handle: "h", Contacts: []string{"d@example.net", "d@example.net"}, Now: t0},
		)
		wantKept("kept again", Kept{"g", "c@example.net", t2}, Kept{"h", "c@example.net", t2}, Kept{"h", "d@example.net", t0}, Kept{"o", "c@example.net", t0})

		// A contact not subscribed, or every contact of an unknown handle,
		// is skipped without error, and the rest of the op applies.
		mustApply(t, s,
			Op{Kind: OpKeep, Handle: "h", Contacts: []string{"x@example.net", "d@example.net"}, Now: t1},
			Op{Kind: OpKeep, Handle: "none", Contacts: []string{"c@example.net"}, Now: t1},
			Op{Kind: OpKeep, Handle: "g", Now: t1},
		)
		wantKept("skipped", Kept{"g", "c@example.net", t2}, Kept{"h", "c@example.net", t2}, Kept{"h", "d@example.net", t1}, Kept{"o", "c@example.net", t0})

		// Unkept, a stamp is forgotten; one not kept is no error.
		mustApply(t, s,
			Op{Kind: OpUnkeep, Handle: "h", Contacts: []string{"c@example.net", "x@example.net"}},
			Op{Kind: OpUnkeep, Handle: "h", Contacts: []string{"c@example.net"}},
			Op{Kind: OpUnkeep, Handle: "none", Contacts: []string{"c@example.net"}},
			Op{Kind: OpUnkeep, Handle: "g"},
		)
		wantKept("unkept", Kept{"g", "c@example.net", t2}, Kept{"h", "d@example.net", t1}, Kept{"o", "c@example.net", t0})

		// The stamp goes with the subscription, and does not come back
		// with it; kept in the batch that subscribes, it is kept.
		must(t, "RemoveSubscription", s.RemoveSubscription(ctx, "h", "d@example.net"))
		must(t, "AddSubscription", s.AddSubscription(ctx, "h", "d@example.net"))
		wantKept("unsubscribed", Kept{"g", "c@example.net", t2}, Kept{"o", "c@example.net", t0})
		mustApply(t, s,
			Op{Kind: OpAddSubscription, Handle: "h", Contact: "e@example.net"},
			Op{Kind: OpKeep, Handle: "h", Contacts: []string{"e@example.net", "d@example.net"}, Now: t1},
			Op{Kind: OpRemoveSubscription, Handle: "h", Contact: "d@example.net"},
		)
		wantKept("subscribed in the batch", Kept{"g", "c@example.net", t2}, Kept{"h", "e@example.net", t1}, Kept{"o", "c@example.net", t0})

		// And with the handle; another account's stay.
		must(t, "RemoveHandle", s.RemoveHandle(ctx, "a@example.org", "g"))
		mustApply(t, s, Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "h", Now: t2})
		wantKept("handles removed", Kept{"o", "c@example.net", t0})
		mustAdd(t, s, "a@example.org", "g", 5)
		must(t, "AddSubscription", s.AddSubscription(ctx, "g", "c@example.net"))
		wantKept("handle taken again", Kept{"o", "c@example.net", t0})
	})

	t.Run("KeptOrder", func(t *testing.T) {
		s := open(t)
		handles := []string{"b", "a", "ä", "A"}
		contacts := []string{"z@example.net", "y@example.net", "é@example.net", "Y@example.net", "10@example.net", "9@example.net"}
		at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		var want []Kept
		for _, h := range handles {
			mustAdd(t, s, "a@example.org", h, 5)
			for j, c := range contacts {
				must(t, "AddSubscription", s.AddSubscription(ctx, h, c))
				when := at.Add(time.Duration(len(contacts)-j) * time.Second)
				mustApply(t, s, Op{Kind: OpKeep, Handle: h, Contacts: []string{c}, Now: when})
				want = append(want, Kept{h, c, when})
			}
		}
		slices.SortFunc(want, func(x, y Kept) int {
			return cmp.Or(strings.Compare(x.Handle, y.Handle), strings.Compare(x.Contact, y.Contact))
		})
		if got := load(t, s).Kept; !slices.EqualFunc(got, want, sameKept) {
			t.Fatalf("kept %+v, want %+v", got, want)
		}
	})

	t.Run("NewOpsRowErrors", func(t *testing.T) {
		// A row error of one of the new ops names it, and keeps nothing:
		// the rest of the batch applies without it.
		at := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
		good := []Op{
			{Kind: OpSetVisibility, Account: "a@example.org", Handle: "h", Hidden: true, Now: at},
			{Kind: OpBlock, Account: "a@example.org", Contact: "c@example.net", Now: at},
			{Kind: OpUnblock, Account: "a@example.org", Contact: "d@example.net"},
			{Kind: OpKeep, Handle: "h", Contacts: []string{"s@example.net", "nobody@example.net"}, Now: at},
			{Kind: OpUnkeep, Handle: "h", Contacts: []string{"k@example.net"}},
			{Kind: OpSetWeb, Account: "a@example.org", Handle: "h", Web: true},
		}
		for _, tt := range []struct {
			name string
			bad  Op
			want error
		}{
			{"visibility not owner", Op{Kind: OpSetVisibility, Account: "b@example.org", Handle: "h", Hidden: true, Now: at}, ErrNotOwner},
			{"visibility no handle", Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "none", Now: at}, ErrNotFound},
			{"block unknown account", Op{Kind: OpBlock, Account: "nobody@example.org", Contact: "c@example.net", Now: at}, ErrNotFound},
			{"web not owner", Op{Kind: OpSetWeb, Account: "b@example.org", Handle: "h", Web: true}, ErrNotOwner},
			{"web no handle", Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "none", Web: true}, ErrNotFound},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				mustAdd(t, s, "a@example.org", "h", 5)
				mustAdd(t, s, "b@example.org", "g", 5)
				mustApply(t, s,
					Op{Kind: OpAddRequest, Handle: "h", Contact: "c@example.net", Now: at},
					Op{Kind: OpBlock, Account: "a@example.org", Contact: "d@example.net", Now: at},
					Op{Kind: OpAddSubscription, Handle: "h", Contact: "s@example.net"},
					Op{Kind: OpAddSubscription, Handle: "h", Contact: "k@example.net"},
					Op{Kind: OpKeep, Handle: "h", Contacts: []string{"k@example.net"}, Now: at},
				)
				before := load(t, s)
				ops := slices.Insert(slices.Clone(good), 1, tt.bad)
				err := s.Apply(ctx, ops)
				wantOpError(t, "Apply", err, 1, tt.want)
				if !IsRowError(err) {
					t.Fatalf("IsRowError(%v) = false", err)
				}
				wantSnapshot(t, load(t, s), before)

				mustApply(t, s, good...)
				snap := load(t, s)
				wantSnapshot(t, snap, &Snapshot{
					Accounts: snap.Accounts,
					Handles: []Handle{
						{Name: "g", Account: "b@example.org", Policy: PolicyAsk},
						{Name: "h", Account: "a@example.org", Policy: PolicyAsk, Hidden: true, HiddenSince: at, Web: true},
					},
					Subscriptions: []Subscription{{"h", "k@example.net"}, {"h", "s@example.net"}},
					Blocked:       []Block{{"a@example.org", "c@example.net", at}},
					Kept:          []Kept{{"h", "s@example.net", at}},
				})
			})
		}
	})

	t.Run("MigrateFromV2", func(t *testing.T) {
		// A database as version 2 left it, with its steps as released
		// (step 1 is checked against a frozen copy by
		// TestSQLiteMigrateFromV1; released steps are never edited).
		dsn := freshDSN(t)
		versionTable, steps, epoch := sqliteSchemaVersionTable, sqliteMigrations, "0"
		if driver == DriverPostgres {
			versionTable, steps, epoch = postgresSchemaVersionTable, postgresMigrations, "'1970-01-01 00:00:00+00'"
		}
		execDSN(t, driver, dsn,
			versionTable, steps[0], steps[1],
			"INSERT INTO schema_version (id, version) VALUES (1, 2)",
			"INSERT INTO accounts (jid, online, status, explicit, hiding, status_text, since, created_at) VALUES ('a@example.org', TRUE, 'away', TRUE, FALSE, 'out', "+epoch+", "+epoch+")",
			"INSERT INTO handles (name, account, created_at) VALUES ('a1', 'a@example.org', "+epoch+"), ('a2', 'a@example.org', "+epoch+")",
			"INSERT INTO subscriptions (handle, contact) VALUES ('a1', 'c@example.net')",
		)
		s := openStore(t, driver, dsn)
		if got, want := queryInt(t, s, "SELECT version FROM schema_version"), migrationCount(s); got != want {
			t.Fatalf("schema version %d, want %d", got, want)
		}
		// The handles of before approved everyone: they still do.
		wantSnapshot(t, load(t, s), &Snapshot{
			Accounts:      []Account{{JID: "a@example.org", Flags: Flags{Online: true, Status: StatusAway, Explicit: true, StatusText: "out", Since: time.Unix(0, 0)}}},
			Handles:       []Handle{{Name: "a1", Account: "a@example.org", Policy: PolicyOpen}, {Name: "a2", Account: "a@example.org", Policy: PolicyOpen}},
			Subscriptions: []Subscription{{"a1", "c@example.net"}},
		})
		// The new tables work with the old rows.
		at := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
		mustAdd(t, s, "a@example.org", "a3", 5)
		mustApply(t, s,
			Op{Kind: OpAddRequest, Handle: "a2", Contact: "r@example.net", Now: at},
			Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "a2", Policy: PolicyAsk},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "a1", Now: at},
		)
		wantSnapshot(t, load(t, s), &Snapshot{
			Accounts: []Account{{JID: "a@example.org", Flags: Flags{Online: true, Status: StatusAway, Explicit: true, StatusText: "out", Since: time.Unix(0, 0)}}},
			Handles:  []Handle{{Name: "a2", Account: "a@example.org", Policy: PolicyAsk}, {Name: "a3", Account: "a@example.org", Policy: PolicyAsk}},
			Requests: []Request{{"a2", "r@example.net", at}},
			Removed:  []RemovedName{{"a1", "a@example.org", at}},
			Notices:  []Notice{{Handle: "a1", Account: "a@example.org", Contact: "c@example.net"}},
		})
	})

	t.Run("MigrateFromV3", func(t *testing.T) {
		// A database as version 3 left it, with its steps as released.
		dsn := freshDSN(t)
		versionTable, steps, epoch := sqliteSchemaVersionTable, sqliteMigrations, "0"
		if driver == DriverPostgres {
			versionTable, steps, epoch = postgresSchemaVersionTable, postgresMigrations, "'1970-01-01 00:00:00+00'"
		}
		execDSN(t, driver, dsn,
			versionTable, steps[0], steps[1], steps[2],
			"INSERT INTO schema_version (id, version) VALUES (1, 3)",
			"INSERT INTO accounts (jid, online, status, explicit, hiding, status_text, since, created_at) VALUES ('a@example.org', FALSE, 'busy', FALSE, TRUE, '', "+epoch+", "+epoch+")",
			"INSERT INTO handles (name, account, policy, created_at) VALUES ('a1', 'a@example.org', 'ask', "+epoch+"), ('a2', 'a@example.org', 'open', "+epoch+")",
			"INSERT INTO subscriptions (handle, contact) VALUES ('a1', 'c@example.net'), ('a2', 'c@example.net')",
			"INSERT INTO requests (handle, contact, created_at) VALUES ('a1', 'r@example.net', "+epoch+")",
			"INSERT INTO removed_names (name, account, removed_at) VALUES ('old', 'a@example.org', "+epoch+")",
			"INSERT INTO notices (handle, account, contact) VALUES ('old', 'a@example.org', 'n@example.net')",
		)
		s := openStore(t, driver, dsn)
		if got, want := queryInt(t, s, "SELECT version FROM schema_version"), migrationCount(s); got != want {
			t.Fatalf("schema version %d, want %d", got, want)
		}
		epochTime := time.Unix(0, 0)
		account := Account{JID: "a@example.org", Flags: Flags{Status: StatusBusy, Hiding: true, Since: epochTime}}
		// The handles of before are shown, and the stamps of the notices
		// of before unknown.
		want := &Snapshot{
			Accounts:      []Account{account},
			Handles:       []Handle{{Name: "a1", Account: "a@example.org", Policy: PolicyAsk}, {Name: "a2", Account: "a@example.org", Policy: PolicyOpen}},
			Subscriptions: []Subscription{{"a1", "c@example.net"}, {"a2", "c@example.net"}},
			Requests:      []Request{{"a1", "r@example.net", epochTime}},
			Removed:       []RemovedName{{"old", "a@example.org", epochTime}},
			Notices:       []Notice{{Handle: "old", Account: "a@example.org", Contact: "n@example.net"}},
		}
		wantSnapshot(t, load(t, s), want)
		// The new columns and table work with the old rows.
		hidden := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
		blocked := hidden.Add(-time.Hour)
		mustApply(t, s,
			Op{Kind: OpSetVisibility, Account: "a@example.org", Handle: "a2", Hidden: true, Now: hidden},
			Op{Kind: OpBlock, Account: "a@example.org", Contact: "r@example.net", Now: blocked},
			Op{Kind: OpKeep, Handle: "a1", Contacts: []string{"c@example.net"}, Now: blocked},
			Op{Kind: OpKeep, Handle: "a2", Contacts: []string{"c@example.net"}, Now: blocked},
			Op{Kind: OpRemoveHandle, Account: "a@example.org", Handle: "a1", Now: hidden, Stamp: hidden.Add(time.Hour)},
		)
		wantSnapshot(t, load(t, s), &Snapshot{
			Accounts:      []Account{account},
			Handles:       []Handle{{Name: "a2", Account: "a@example.org", Policy: PolicyOpen, Hidden: true, HiddenSince: hidden}},
			Subscriptions: []Subscription{{"a2", "c@example.net"}},
			Kept:          []Kept{{"a2", "c@example.net", blocked}},
			Removed:       []RemovedName{{"a1", "a@example.org", hidden}, {"old", "a@example.org", epochTime}},
			Notices: []Notice{
				{Handle: "a1", Account: "a@example.org", Contact: "c@example.net", Since: hidden.Add(time.Hour)},
				{Handle: "old", Account: "a@example.org", Contact: "n@example.net"},
			},
			Blocked: []Block{{"a@example.org", "r@example.net", blocked}},
		})
	})

	t.Run("MigrateFromV4", func(t *testing.T) {
		// A database as version 4 left it, with its steps as released.
		dsn := freshDSN(t)
		versionTable, steps, epoch, second := sqliteSchemaVersionTable, sqliteMigrations, "0", "1000000"
		if driver == DriverPostgres {
			versionTable, steps = postgresSchemaVersionTable, postgresMigrations
			epoch, second = "'1970-01-01 00:00:00+00'", "'1970-01-01 00:00:01+00'"
		}
		execDSN(t, driver, dsn,
			versionTable, steps[0], steps[1], steps[2], steps[3],
			"INSERT INTO schema_version (id, version) VALUES (1, 4)",
			"INSERT INTO accounts (jid, online, status, explicit, hiding, status_text, since, created_at) VALUES ('a@example.org', TRUE, 'away', TRUE, FALSE, 'out', "+epoch+", "+epoch+")",
			"INSERT INTO handles (name, account, policy, hidden_since, created_at) VALUES ('a1', 'a@example.org', 'ask', NULL, "+epoch+"), ('a2', 'a@example.org', 'open', "+second+", "+epoch+")",
			"INSERT INTO subscriptions (handle, contact) VALUES ('a1', 'c@example.net'), ('a2', 'c@example.net')",
			"INSERT INTO kept (handle, contact, since) VALUES ('a2', 'c@example.net', "+second+")",
			"INSERT INTO blocked (account, contact, since) VALUES ('a@example.org', 'b@example.net', "+epoch+")",
		)
		s := openStore(t, driver, dsn)
		if got, want := queryInt(t, s, "SELECT version FROM schema_version"), migrationCount(s); got != want {
			t.Fatalf("schema version %d, want %d", got, want)
		}
		epochTime, secondTime := time.Unix(0, 0), time.Unix(1, 0)
		account := Account{JID: "a@example.org", Flags: Flags{Online: true, Status: StatusAway, Explicit: true, StatusText: "out", Since: epochTime}}
		// The handles of before are not public, and keep their policy and
		// visibility.
		want := &Snapshot{
			Accounts: []Account{account},
			Handles: []Handle{
				{Name: "a1", Account: "a@example.org", Policy: PolicyAsk},
				{Name: "a2", Account: "a@example.org", Policy: PolicyOpen, Hidden: true, HiddenSince: secondTime},
			},
			Subscriptions: []Subscription{{"a1", "c@example.net"}, {"a2", "c@example.net"}},
			Blocked:       []Block{{"a@example.org", "b@example.net", epochTime}},
			Kept:          []Kept{{"a2", "c@example.net", secondTime}},
		}
		wantSnapshot(t, load(t, s), want)
		// The new column works with the old rows, and a new handle is not
		// public either.
		mustApply(t, s, Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "a2", Web: true})
		mustAdd(t, s, "a@example.org", "a3", 5)
		want.Handles = []Handle{
			{Name: "a1", Account: "a@example.org", Policy: PolicyAsk},
			{Name: "a2", Account: "a@example.org", Policy: PolicyOpen, Hidden: true, HiddenSince: secondTime, Web: true},
			{Name: "a3", Account: "a@example.org", Policy: PolicyAsk},
		}
		wantSnapshot(t, load(t, s), want)
	})

	t.Run("NotLost", func(t *testing.T) {
		s := open(t)
		select {
		case <-s.Lost():
			t.Fatal("Lost() is closed on a store that holds its lock")
		default:
		}
	})

	t.Run("InstanceLockWaits", func(t *testing.T) {
		dsn := freshDSN(t)
		first, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		var waits atomic.Int32
		waiting := make(chan struct{})
		var second Store
		var openErr error // set with second, before opened is closed
		opened := make(chan struct{})
		go func() {
			defer close(opened)
			second, openErr = OpenWith(ctx, driver, dsn, Options{Waiting: func() {
				if waits.Add(1) == 1 {
					close(waiting)
				}
			}})
		}()
		t.Cleanup(func() {
			first.Close()
			<-opened
			if second != nil {
				second.Close()
			}
		})

		select {
		case <-waiting:
		case <-opened:
			t.Fatalf("second open returned (%v) while the first store holds the lock", openErr)
		case <-time.After(10 * time.Second):
			t.Fatal("second open neither waits nor returns")
		}
		// It keeps waiting past more than one check.
		select {
		case <-opened:
			t.Fatalf("second open returned (%v) while the first store holds the lock", openErr)
		case <-time.After(lockPollInterval + lockPollInterval/2):
		}
		mustAdd(t, first, "a@example.org", "first", 5)

		must(t, "close the first store", first.Close())
		select {
		case <-opened:
		case <-time.After(10 * time.Second):
			t.Fatal("second open still waits after the first store closed")
		}
		must(t, "second open", openErr)
		if n := waits.Load(); n != 1 {
			t.Errorf("Waiting called %d times, want 1", n)
		}
		// The second store serves the database, as the first left it.
		mustAdd(t, second, "a@example.org", "second", 5)
		wantHandles(t, second, "a@example.org", "first", "second")
	})

	t.Run("InstanceLockWaitCanceled", func(t *testing.T) {
		dsn := freshDSN(t)
		first := openStore(t, driver, dsn)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		waiting := make(chan struct{}, 10)
		opened := make(chan error, 1)
		go func() {
			s, err := OpenWith(cctx, driver, dsn, Options{Waiting: func() { waiting <- struct{}{} }})
			if err == nil {
				s.Close()
			}
			opened <- err
		}()
		select {
		case <-waiting:
		case err := <-opened:
			t.Fatalf("second open returned (%v) while the first store holds the lock", err)
		case <-time.After(10 * time.Second):
			t.Fatal("second open neither waits nor returns")
		}
		time.Sleep(lockPollInterval / 4)
		cancel()
		select {
		case err := <-opened:
			if !errors.Is(err, context.Canceled) || isSentinel(err) {
				t.Fatalf("open with its context canceled while waiting = %v, want a wrapped context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("canceling the context does not end the wait")
		}
		if n := len(waiting); n != 0 {
			t.Errorf("Waiting called %d more times", n)
		}
		// The first store is untouched.
		mustAdd(t, first, "a@example.org", "a", 5)
	})

	t.Run("CloseReleasesAll", func(t *testing.T) {
		dsn := freshDSN(t)
		s, err := Open(ctx, driver, dsn)
		must(t, "open", err)
		mustAdd(t, s, "a@example.org", "a", 5)
		must(t, "Load", func() error { _, err := s.Load(ctx); return err }())
		must(t, "close", s.Close())
		wantNoStoreGoroutines(t)
		// The lock is free as soon as Close returns.
		s, err = OpenWith(ctx, driver, dsn, Options{Waiting: func() { t.Error("Waiting called after the store closed") }})
		must(t, "reopen", err)
		must(t, "close", s.Close())
		wantNoStoreGoroutines(t)
	})
}

// race runs f(0) … f(n-1) at once and returns their errors.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// populate fills s with a few accounts, handles and subscriptions and
// returns what Load should return.
func populate(t testing.TB, s Store) *Snapshot {
	t.Helper()
	ctx := context.Background()
	fa := Flags{Online: true, Status: StatusAway, StatusText: "out", Since: time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC)}
	fb := Flags{Status: StatusBusy, Explicit: true, Hiding: true, Since: time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("x", -7200))}
	mustAdd(t, s, "b@example.org", "b2", 5)
	mustAdd(t, s, "b@example.org", "b1", 5)
	mustAdd(t, s, "a@example.org", "a1", 5)
	must(t, "SetFlags", s.SetFlags(ctx, "a@example.org", fa))
	must(t, "SetFlags", s.SetFlags(ctx, "b@example.org", fb))
	must(t, "SetFlags", s.SetFlags(ctx, "c@example.org", Flags{Status: StatusUndefined}))
	for _, sub := range []Subscription{
		{"b1", "y@example.net"}, {"a1", "z@example.net"}, {"b1", "x@example.net"}, {"b2", "x@example.net"},
	} {
		must(t, "AddSubscription", s.AddSubscription(ctx, sub.Handle, sub.Contact))
	}
	hidden := time.Date(2025, 7, 8, 9, 10, 11, 121314151, time.FixedZone("y", 3600))
	blocked := time.Date(2025, 2, 3, 4, 5, 6, 70809, time.UTC)
	mustApply(t, s,
		Op{Kind: OpSetVisibility, Account: "b@example.org", Handle: "b2", Hidden: true, Now: hidden},
		Op{Kind: OpBlock, Account: "b@example.org", Contact: "w@example.net", Now: blocked},
		Op{Kind: OpBlock, Account: "a@example.org", Contact: "w@example.net", Now: hidden},
		Op{Kind: OpBlock, Account: "a@example.org", Contact: "v@example.net", Now: blocked},
		Op{Kind: OpKeep, Handle: "b2", Contacts: []string{"x@example.net"}, Now: hidden},
		Op{Kind: OpKeep, Handle: "b1", Contacts: []string{"y@example.net", "x@example.net"}, Now: blocked},
		Op{Kind: OpSetWeb, Account: "b@example.org", Handle: "b1", Web: true},
	)
	return &Snapshot{
		Accounts: []Account{
			{JID: "a@example.org", Flags: fa},
			{JID: "b@example.org", Flags: fb},
			{JID: "c@example.org", Flags: Flags{Status: StatusUndefined}},
		},
		Handles: []Handle{
			{Name: "a1", Account: "a@example.org", Policy: PolicyAsk},
			{Name: "b1", Account: "b@example.org", Policy: PolicyAsk, Web: true},
			{Name: "b2", Account: "b@example.org", Policy: PolicyAsk, Hidden: true, HiddenSince: hidden},
		},
		Subscriptions: []Subscription{
			{"a1", "z@example.net"}, {"b1", "x@example.net"}, {"b1", "y@example.net"}, {"b2", "x@example.net"},
		},
		Blocked: []Block{
			{"a@example.org", "v@example.net", blocked}, {"a@example.org", "w@example.net", hidden}, {"b@example.org", "w@example.net", blocked},
		},
		Kept: []Kept{
			{"b1", "x@example.net", blocked}, {"b1", "y@example.net", blocked}, {"b2", "x@example.net", hidden},
		},
	}
}

// sqliteSchemaV1 is a frozen copy of SQLite schema version 1, as released.
// It must never change: it stands for databases already in the field.
const sqliteSchemaV1 = `
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
CREATE TABLE schema_version (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
) STRICT;
INSERT INTO schema_version (id, version) VALUES (1, 1);
`

func TestSQLiteMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path)
	must(t, "open", err)
	since := time.Date(2024, 2, 29, 23, 59, 58, 654321000, time.UTC)
	for _, stmt := range []string{
		sqliteSchemaV1,
		fmt.Sprintf(`INSERT INTO accounts VALUES ('a@example.org', 1, 'busy', 1, 'meeting', %d, 0)`, since.UnixMicro()),
		`INSERT INTO handles VALUES ('a1', 'a@example.org', 0)`,
		`INSERT INTO subscriptions VALUES ('a1', 'c@example.net')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	must(t, "close", db.Close())

	s := openStore(t, DriverSQLite, path)
	if got, want := queryInt(t, s, "SELECT version FROM schema_version"), len(sqliteMigrations); got != want {
		t.Fatalf("schema version %d, want %d", got, want)
	}
	snap, err := s.Load(ctx)
	must(t, "Load", err)
	wantSnapshot(t, snap, &Snapshot{
		Accounts:      []Account{{JID: "a@example.org", Flags: Flags{Online: true, Status: StatusBusy, Hiding: true, StatusText: "meeting", Since: since}}},
		Handles:       []Handle{{Name: "a1", Account: "a@example.org", Policy: PolicyOpen}},
		Subscriptions: []Subscription{{"a1", "c@example.net"}},
	})

	// The upgraded schema is the one a new database gets: step 1 has not
	// been edited since release.
	fresh := openStore(t, DriverSQLite, sqliteDSN(t))
	if got, want := sqliteSchema(t, s), sqliteSchema(t, fresh); !slices.Equal(got, want) {
		t.Fatalf("upgraded schema differs from a new one:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// sqliteSchema lists the schema objects of the database, whitespace
// normalized.
func sqliteSchema(t testing.TB, s Store) []string {
	t.Helper()
	rows, err := s.(*sqliteStore).db.Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
	must(t, "read schema", err)
	defer rows.Close()
	var objs []string
	for rows.Next() {
		var typ, name, table, def string
		must(t, "scan schema", rows.Scan(&typ, &name, &table, &def))
		def = strings.Join(strings.Fields(strings.ReplaceAll(def, "(", " ( ")), " ")
		objs = append(objs, fmt.Sprintf("%s %s on %s: %s", typ, name, table, def))
	}
	must(t, "read schema", rows.Err())
	return objs
}

func TestSQLitePragmas(t *testing.T) {
	s := openStore(t, DriverSQLite, sqliteDSN(t))
	db := s.(*sqliteStore).db
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": fmt.Sprint(sqliteBusyTimeout),
	} {
		var got string
		must(t, pragma, db.QueryRow("PRAGMA "+pragma).Scan(&got))
		if !strings.EqualFold(got, want) {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
}

// TestSQLitePingWriteLocked: while another process holds the database's
// write lock, every Apply would fail once busy_timeout is up: Ping fails
// too, within its caller's deadline, and answers again once the lock is
// released.
func TestSQLitePingWriteLocked(t *testing.T) {
	ctx := context.Background()
	path := sqliteDSN(t)
	s := openStore(t, DriverSQLite, path)
	must(t, "Ping", s.Ping(ctx))

	// Another handle on the file, as a sqlite3 shell would be.
	other, err := sql.Open("sqlite", path+"?_busy_timeout=0")
	must(t, "open a second handle", err)
	defer other.Close()
	conn, err := other.Conn(ctx)
	must(t, "connect the second handle", err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	must(t, "BEGIN IMMEDIATE on the second handle", err)

	const deadline = 300 * time.Millisecond
	pctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err = s.Ping(pctx)
	took := time.Since(start)
	if err == nil || isSentinel(err) {
		t.Fatalf("Ping while another connection holds the write lock = %v, want a non-sentinel error", err)
	}
	t.Logf("Ping: %v after %v", err, took)
	if took > deadline+time.Second {
		t.Fatalf("Ping while the write lock is held took %v, past its deadline of %v", took, deadline)
	}

	_, err = conn.ExecContext(ctx, "ROLLBACK")
	must(t, "ROLLBACK on the second handle", err)
	must(t, "Ping once the write lock is released", s.Ping(ctx))
	mustAdd(t, s, "a@example.org", "a", 5)
}

func TestOpenSQLiteBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{
		"",
		filepath.Join(dir, "missing", "presenced.db"),
		filepath.Join(dir, "what?.db"),
		dir,
	} {
		s, err := OpenSQLite(context.Background(), path)
		if err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q): no error", path)
			continue
		}
		if !strings.HasPrefix(err.Error(), "storage: open sqlite") {
			t.Errorf("OpenSQLite(%q): error %q lacks context", path, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("OpenSQLite created a directory: %v", err)
	}
}

func TestOpenPostgresHidesPassword(t *testing.T) {
	const secret = "s3cr3tpw"
	for _, dsn := range []string{
		"postgres://presenced:" + secret + "@127.0.0.1:1/presenced?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=presenced password=" + secret + " dbname=presenced sslmode=disable connect_timeout=2",
		"postgres://presenced:" + secret + "@[::1/presenced",
		"host=127.0.0.1 password='" + secret + " dbname=x",
	} {
		s, err := OpenPostgres(context.Background(), dsn)
		if err == nil {
			s.Close()
			t.Errorf("OpenPostgres: no error")
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("OpenPostgres error shows the password: %v", err)
		}
	}
}

func TestOpenUnknownDriver(t *testing.T) {
	if _, err := Open(context.Background(), "mysql", "x"); err == nil {
		t.Fatal("Open with an unknown driver: no error")
	}
}

// longBatch returns n ops of a group commit for account a@example.org,
// which holds handle h: one in three a SetFlags of another account, an
// approval of a subscription to h, or a block by a@example.org, with a
// SetWeb and a SetPolicy of h, which read, at 40 and 120 if n allows.
func longBatch(n int, at time.Time) []Op {
	var ops []Op
	for i := range n {
		c := fmt.Sprintf("c%03d@example.net", i)
		switch {
		case i == 40:
			ops = append(ops, Op{Kind: OpSetWeb, Account: "a@example.org", Handle: "h", Web: true})
		case i == 120:
			ops = append(ops, Op{Kind: OpSetPolicy, Account: "a@example.org", Handle: "h", Policy: PolicyOpen})
		case i%3 == 0:
			ops = append(ops, Op{Kind: OpSetFlags, Account: fmt.Sprintf("u%03d@example.org", i), Flags: Flags{Status: StatusAway, Since: at}})
		case i%3 == 1:
			ops = append(ops, Op{Kind: OpAddSubscription, Handle: "h", Contact: c, Answers: true})
		default:
			ops = append(ops, Op{Kind: OpBlock, Account: "a@example.org", Contact: c, Now: at})
		}
	}
	return ops
}

// BenchmarkApplySetFlags1024 is a full group commit of status changes:
// 1,024 SetFlags of as many accounts in one Apply.
func BenchmarkApplySetFlags1024(b *testing.B) {
	for _, d := range []struct {
		driver string
		dsn    func(testing.TB) string
	}{{DriverSQLite, sqliteDSN}, {DriverPostgres, postgresDSN}} {
		b.Run(d.driver, func(b *testing.B) {
			s := openStore(b, d.driver, d.dsn(b))
			ctx := context.Background()
			ops := make([]Op, 1024)
			for i := range ops {
				ops[i] = Op{Kind: OpSetFlags, Account: fmt.Sprintf("u%04d@example.org", i), Flags: Flags{Status: StatusAway, StatusText: "bench"}}
			}
			for n := 0; b.Loop(); n++ {
				for i := range ops {
					ops[i].Flags.Online = n%2 == 0
					ops[i].Flags.Since = time.Unix(int64(n), 0)
				}
				if err := s.Apply(ctx, ops); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSetFlags(b *testing.B) {
	s := openStore(b, DriverSQLite, sqliteDSN(b))
	ctx := context.Background()
	f := Flags{Status: StatusAway, StatusText: "bench"}
	for i := 0; b.Loop(); i++ {
		f.Online = i%2 == 0
		f.Since = time.Unix(int64(i), 0)
		if err := s.SetFlags(ctx, "bench@example.org", f); err != nil {
			b.Fatal(err)
		}
	}
}

// execDSN runs statements on the database at dsn, without a Store.
func execDSN(t testing.TB, driver, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	var exec func(string) error
	switch driver {
	case DriverSQLite:
		db, err := sql.Open("sqlite", dsn)
		must(t, "open", err)
		defer db.Close()
		exec = func(q string) error { _, err := db.Exec(q); return err }
	case DriverPostgres:
		conn, err := pgx.Connect(ctx, dsn)
		must(t, "connect", err)
		defer conn.Close(ctx)
		exec = func(q string) error { _, err := conn.Exec(ctx, q); return err }
	default:
		t.Fatalf("unknown driver %q", driver)
	}
	for _, q := range stmts {
		if err := exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// storeGoroutineFrames name the functions of the goroutines that a store
// starts, directly or through its drivers, and that Close must end.
var storeGoroutineFrames = []string{
	"storage.(*postgresStore)",
	"storage.(*sqliteStore)",
	"pgxpool.(*Pool)",
	"database/sql.(*DB)",
}

// wantNoStoreGoroutines fails the test if a goroutine of a store is still
// running a few seconds after every store of the test was closed (the
// pool's own goroutines end soon after Close rather than during it).
func wantNoStoreGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			for _, frame := range storeGoroutineFrames {
				if strings.Contains(g, frame) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logRecorder is a slog.Handler that keeps what is logged, for tests to
// read.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// count returns how many records at level have a message containing msg.
func (h *logRecorder) count(level slog.Level, msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

// wantLogged fails the test unless msg was logged at level n times.
func (h *logRecorder) wantLogged(t testing.TB, level slog.Level, msg string, n int) {
	t.Helper()
	if got := h.count(level, msg); got != n {
		h.mu.Lock()
		defer h.mu.Unlock()
		t.Fatalf("logged %q at %v %d times, want %d; the log: %v", msg, level, got, n, h.records)
	}
}

// postgresDatabase returns the name of the database of dsn.
func postgresDatabase(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	must(t, "parse DSN", err)
	return cfg.Database
}

// adminConn connects with the admin DSN, for the duration of the test.
func adminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv(postgresEnv))
	must(t, "connect with "+postgresEnv, err)
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// instanceLockHolder returns the backend that holds the instance lock of
// database db, or 0. It reads pg_locks as an administrator would, apart
// from the store's own query.
func instanceLockHolder(t testing.TB, admin *pgx.Conn, db string) uint32 {
	t.Helper()
	var pid int64
	err := admin.QueryRow(context.Background(), `
		SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1
			AND l.classid = ($2::int8 >> 32)::oid AND l.objid = ($2::int8 & 4294967295)::oid AND l.objsubid = 1`,
		db, int64(postgresInstanceLock)).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	must(t, "read pg_locks", err)
	return uint32(pid)
}

// lockConnPID returns the backend of the lock connection of s, or 0 while
// it has none.
func lockConnPID(s Store) uint32 {
	ps := s.(*postgresStore)
	ps.sem <- struct{}{}
	defer ps.release()
	if ps.conn == nil {
		return 0
	}
	return ps.conn.PgConn().PID()
}

// waitFor calls f every 50 ms until it returns true, and fails the test if
// it has not within d.
func waitFor(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var subscribeOp = []Op{{Kind: OpAddSubscription, Handle: "h", Contact: "c@example.net"}}

func TestPostgresLockRegained(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	db := postgresDatabase(t, dsn)
	admin := adminConn(t)
	logs := &logRecorder{}
	s, err := OpenWith(ctx, DriverPostgres, dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer s.Close()
	mustAdd(t, s, "a@example.org", "h", 5)

	old := instanceLockHolder(t, admin, db)
	if old == 0 || old != lockConnPID(s) {
		t.Fatalf("lock held by backend %d, want the lock connection's, %d", old, lockConnPID(s))
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "terminated backend gone", func() bool {
		return queryInt(t, s, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", old)) == 0
	})

	// The session is gone, and the lock with it: nothing commits.
	err = s.Apply(ctx, subscribeOp)
	if err == nil || isSentinel(err) {
		t.Fatalf("Apply once the lock session is terminated = %v, want a non-sentinel error", err)
	}

	// The monitor connects again and takes the lock back.
	waitFor(t, 10*time.Second, "Apply works again", func() bool { return s.Apply(ctx, subscribeOp) == nil })
	if now := instanceLockHolder(t, admin, db); now == 0 || now == old || now != lockConnPID(s) {
		t.Fatalf("lock held by backend %d, want the new lock connection's, %d (not %d)", now, lockConnPID(s), old)
	}
	if want := []Subscription{{"h", "c@example.net"}}; !slices.Equal(load(t, s).Subscriptions, want) {
		t.Fatalf("subscriptions %+v, want %+v", load(t, s).Subscriptions, want)
	}
	select {
	case <-s.Lost():
		t.Fatal("Lost() closed, though no other process took the lock")
	default:
	}
	logs.wantLogged(t, slog.LevelError, "database connection lost", 1)
	logs.wantLogged(t, slog.LevelInfo, "database lock regained", 1)

	must(t, "close", s.Close())
	if pid := instanceLockHolder(t, admin, db); pid != 0 {
		t.Fatalf("lock held by backend %d after Close", pid)
	}
	wantNoStoreGoroutines(t)
}

func TestPostgresLockLost(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	proxy := startProxy(t, dsn)
	logs := &logRecorder{}
	first, err := OpenWith(ctx, DriverPostgres, proxy.dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer first.Close()
	mustAdd(t, first, "a@example.org", "h", 5)

	// The network between the first store and the database breaks: the
	// database ends the session, and the lock with it.
	proxy.cut()
	err = first.Apply(ctx, subscribeOp)
	if err == nil || isSentinel(err) {
		t.Fatalf("Apply once the connection is cut = %v, want a non-sentinel error", err)
	}
	waitFor(t, 10*time.Second, "first store notices the loss", func() bool {
		return logs.count(slog.LevelError, "database connection lost") == 1
	})

	// Meanwhile another process takes the lock.
	second := openStore(t, DriverPostgres, dsn)
	mustAdd(t, second, "b@example.org", "g", 5)

	// The network is back: the first store finds the lock taken.
	proxy.restore()
	select {
	case <-first.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost() not closed once another process holds the lock")
	}
	err = first.Apply(ctx, subscribeOp)
	wantErr(t, "Apply once lost", err, ErrNotActive)
	if IsRowError(err) {
		t.Fatalf("IsRowError(%v) = true", err)
	}
	_, err = first.Load(ctx)
	wantErr(t, "Load once lost", err, ErrNotActive)
	_, err = first.AddHandle(ctx, "a@example.org", "x", 5, time.Now())
	wantErr(t, "AddHandle once lost", err, ErrNotActive)
	wantErr(t, "Ping once lost", first.Ping(ctx), ErrNotActive)
	logs.wantLogged(t, slog.LevelError, "held by another process", 1)
	logs.wantLogged(t, slog.LevelInfo, "database lock regained", 0)

	// The second store serves, and nothing of the first's failed changes
	// got in.
	must(t, "Apply on the second store", second.Apply(ctx, []Op{{Kind: OpAddSubscription, Handle: "g", Contact: "c@example.net"}}))
	snap := load(t, second)
	if want := []Subscription{{"g", "c@example.net"}}; !slices.Equal(snap.Subscriptions, want) {
		t.Fatalf("subscriptions %+v, want %+v", snap.Subscriptions, want)
	}

	must(t, "close", first.Close())
	must(t, "close", second.Close())
	wantNoStoreGoroutines(t)
}

// TestPostgresLockHeldInBetween: a store that lost its lock, while another
// process took it, changed the database and let it go again, does not take
// it back: its memory of the database is stale.
func TestPostgresLockHeldInBetween(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	proxy := startProxy(t, dsn)
	logs := &logRecorder{}
	first, err := OpenWith(ctx, DriverPostgres, proxy.dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer first.Close()
	mustAdd(t, first, "a@example.org", "h", 5)

	proxy.cut()
	waitFor(t, 10*time.Second, "first store notices the loss", func() bool {
		_ = first.Apply(ctx, subscribeOp)
		return logs.count(slog.LevelError, "database connection lost") == 1
	})
	// Another process takes the lock, serves, and stops.
	second := openStore(t, DriverPostgres, dsn)
	mustAdd(t, second, "b@example.org", "g", 5)
	must(t, "close the second store", second.Close())

	proxy.restore()
	select {
	case <-first.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost() not closed although another process held the lock in between")
	}
	wantErr(t, "Apply once lost", first.Apply(ctx, subscribeOp), ErrNotActive)
	logs.wantLogged(t, slog.LevelInfo, "database lock regained", 0)
	must(t, "close", first.Close())
	wantNoStoreGoroutines(t)
}

func TestPostgresLockDeadNetwork(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	db := postgresDatabase(t, dsn)
	admin := adminConn(t)
	proxy := startProxy(t, dsn)
	logs := &logRecorder{}
	s, err := OpenWith(ctx, DriverPostgres, proxy.dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer s.Close()
	mustAdd(t, s, "a@example.org", "h", 5)
	old := instanceLockHolder(t, admin, db)

	// Packets of the store's connections stop getting through, and nothing
	// says so: Apply fails on its own deadline, not the caller's (there is
	// none) nor batchTimeout.
	proxy.stall()
	start := time.Now()
	err = s.Apply(ctx, subscribeOp)
	if took := time.Since(start); err == nil || isSentinel(err) || took > 2*lockTimeout {
		t.Fatalf("Apply on a dead network = %v after %v, want a non-sentinel error within %v", err, took, 2*lockTimeout)
	}

	// The database still counts the old session, which holds the lock: it
	// is no other process's, and the store ends it to take the lock back.
	waitFor(t, 15*time.Second, "Apply works again", func() bool { return s.Apply(ctx, subscribeOp) == nil })
	if now := instanceLockHolder(t, admin, db); now == old || now != lockConnPID(s) {
		t.Fatalf("lock held by backend %d, want the new lock connection's, %d (not %d)", now, lockConnPID(s), old)
	}
	if n := queryInt(t, s, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", old)); n != 0 {
		t.Fatalf("the stalled session %d is still there", old)
	}
	select {
	case <-s.Lost():
		t.Fatal("Lost() closed, though the lock was held by the store's own old session")
	default:
	}
	logs.wantLogged(t, slog.LevelError, "database connection lost", 1)
	logs.wantLogged(t, slog.LevelInfo, "ended this store's last database session", 1)
	logs.wantLogged(t, slog.LevelInfo, "database lock regained", 1)
	must(t, "close", s.Close())
	wantNoStoreGoroutines(t)
}

// pgProxy forwards TCP connections to a PostgreSQL server, and can cut
// them or stall them, as a broken network would.
type pgProxy struct {
	dsn             string // the DSN to connect through the proxy
	ln              net.Listener
	network, target string
	wg              sync.WaitGroup

	mu      sync.Mutex
	cond    *sync.Cond // signaled when stalled or closed changes
	down    bool       // new connections are refused
	closed  bool
	conns   map[net.Conn]bool // both ends of every forwarded connection
	stalled map[net.Conn]bool // ends that forward nothing until resume
}

// startProxy starts a proxy to the server of dsn, stopped when the test
// ends.
func startProxy(t testing.TB, dsn string) *pgProxy {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	must(t, "parse DSN", err)
	p := &pgProxy{
		network: "tcp",
		target:  net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
		conns:   make(map[net.Conn]bool),
		stalled: make(map[net.Conn]bool),
	}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.target = "unix", filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
	}
	p.cond = sync.NewCond(&p.mu)
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	must(t, "listen", err)
	host, port, _ := net.SplitHostPort(p.ln.Addr().String())
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Host = p.ln.Addr().String()
		p.dsn = u.String()
	} else {
		p.dsn = dsn + " host=" + host + " port=" + port
	}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		p.ln.Close()
		p.mu.Lock()
		p.closed = true
		p.cond.Broadcast()
		p.mu.Unlock()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *pgProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		s, err := net.Dial(p.network, p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(s, c) })
		p.wg.Go(func() { p.forward(c, s) })
	}
}

// forward copies from src to dst until either fails, then closes both.
func (p *pgProxy) forward(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for (p.stalled[src] || p.stalled[dst]) && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every connection and refuses new ones until restore.
func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	clear(p.stalled)
	p.cond.Broadcast()
}

func (p *pgProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// stall stops forwarding anything on the connections open now, without
// closing any, as when a network dies silently; new connections go
// through, as they would by another route.
func (p *pgProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.stalled[c] = true
	}
}

func TestSQLiteLockFile(t *testing.T) {
	path := sqliteDSN(t)
	s, err := OpenSQLite(context.Background(), path)
	must(t, "open", err)
	fi, err := os.Stat(path + ".lock")
	must(t, "stat the lock file", err)
	if mode := fi.Mode(); mode != 0o600 {
		t.Errorf("lock file mode %v, want -rw-------", mode)
	}
	must(t, "close", s.Close())
	if _, err := os.Stat(path + ".lock"); err != nil {
		t.Errorf("lock file after Close: %v, want it kept", err)
	}
}

func TestErrNotActiveIsNoRowError(t *testing.T) {
	for _, err := range []error{ErrNotActive, fmt.Errorf("storage: apply: %w", ErrNotActive)} {
		if IsRowError(err) {
			t.Errorf("IsRowError(%v) = true, want false", err)
		}
	}
}

func TestOpKindString(t *testing.T) {
	for kind, want := range map[OpKind]string{
		OpAddHandle:          "add handle",
		OpRemoveHandle:       "remove handle",
		OpSetFlags:           "set flags",
		OpAddSubscription:    "add subscription",
		OpRemoveSubscription: "remove subscription",
		OpAddRequest:         "add request",
		OpRemoveRequest:      "remove request",
		OpNoticesSent:        "notices sent",
		OpSetPolicy:          "set policy",
		OpSetVisibility:      "set visibility",
		OpBlock:              "block",
		OpUnblock:            "unblock",
		OpKeep:               "keep",
		OpUnkeep:             "unkeep",
		OpSetWeb:             "set web",
		OpKind(99):           "op 99",
	} {
		if got := kind.String(); got != want {
			t.Errorf("OpKind(%d).String() = %q, want %q", int(kind), got, want)
		}
	}
}

func TestPolicyValid(t *testing.T) {
	for p, want := range map[Policy]bool{PolicyAsk: true, PolicyOpen: true, "": false, "Ask": false, "closed": false} {
		if got := p.Valid(); got != want {
			t.Errorf("Policy(%q).Valid() = %v, want %v", p, got, want)
		}
	}
}

// TestPostgresSlowStatementKeepsTheLock: a statement past its deadline is
// cancelled on the server; the lock connection, and the lock with it,
// stay (a slow database must not hand the database over to a standby).
func TestPostgresSlowStatementKeepsTheLock(t *testing.T) {
	dsn := postgresDSN(t)
	logs := &logRecorder{}
	st, err := OpenWith(context.Background(), DriverPostgres, dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer st.Close()
	s := st.(*postgresStore)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SELECT pg_sleep(3)")
		return err
	})
	if err == nil {
		t.Fatal("a statement past its deadline succeeded")
	}
	mustAdd(t, st, "a@example.org", "h", 5)
	logs.wantLogged(t, slog.LevelError, "database connection lost", 0)
}

// TestPostgresCanceledKeepsLock: a caller's context that ends, before a
// call, during a statement, between the statements and the commit, or at
// any moment of a short call, fails that call at most; the lock
// connection, and so the instance lock, stays.
func TestPostgresCanceledKeepsLock(t *testing.T) {
	ctx := context.Background()
	dsn := postgresDSN(t)
	logs := &logRecorder{}
	st, err := OpenWith(ctx, DriverPostgres, dsn, Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer st.Close()
	s := st.(*postgresStore)
	mustAdd(t, s, "a@example.org", "a", 100)
	pid := lockConnPID(s)
	keptLock := func(what string) {
		t.Helper()
		if got := lockConnPID(s); got != pid {
			t.Fatalf("%s: lock connection of backend %d, want %d still", what, got, pid)
		}
		if _, err := s.Handles(ctx, "a@example.org"); err != nil {
			t.Fatalf("%s: Handles: %v", what, err)
		}
	}

	// Canceled while a statement runs: PostgreSQL cancels it.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err = s.inTx(cctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(cctx, "SELECT pg_sleep(10)")
		return err
	})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a statement canceled after 50 ms returned %v after %v", err, time.Since(start))
	}
	keptLock("canceled during a statement")

	// Canceled once the statements are done, before the commit: nothing
	// is committed.
	cctx, cancel = context.WithCancel(ctx)
	err = s.inTx(cctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(cctx, "INSERT INTO handles (name, account, policy) VALUES ('uncommitted', 'a@example.org', 'ask')")
		cancel()
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a transaction canceled before its commit returned %v, want %v", err, context.Canceled)
	}
	keptLock("canceled before the commit")
	wantHandles(t, s, "a@example.org", "a")

	// Canceled at any moment of a short call, over and over; a call that
	// returns nil has committed.
	added := []string{"a"}
	for i := range 50 {
		name := fmt.Sprintf("h%02d", i)
		cctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(time.Duration(i%10)*200*time.Microsecond, cancel)
		var err error
		if i%2 == 0 {
			_, err = s.AddHandle(cctx, "a@example.org", name, 100, time.Now())
		} else {
			err = s.Apply(cctx, []Op{
				{Kind: OpSetFlags, Account: "a@example.org", Flags: Flags{Status: StatusAway}},
				{Kind: OpAddHandle, Account: "a@example.org", Handle: name, Max: 100, Now: time.Now(), Policy: PolicyAsk},
			})
		}
		timer.Stop()
		cancel()
		if err == nil {
			added = append(added, name)
		} else if isSentinel(err) {
			t.Fatalf("round %d: a canceled call returned the sentinel error %v", i, err)
		}
		keptLock(fmt.Sprintf("round %d (%v)", i, err))
	}
	t.Logf("%d of 50 canceled calls committed", len(added)-1)
	wantHandles(t, s, "a@example.org", added...)

	// Pings canceled at any moment, over and over: the same.
	for i := range 50 {
		cctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(time.Duration(i%10)*100*time.Microsecond, cancel)
		err := s.Ping(cctx)
		timer.Stop()
		cancel()
		if err != nil && isSentinel(err) {
			t.Fatalf("round %d: a canceled Ping returned the sentinel error %v", i, err)
		}
		keptLock(fmt.Sprintf("ping round %d (%v)", i, err))
	}
	must(t, "Ping", s.Ping(ctx))
	logs.wantLogged(t, slog.LevelError, "database connection lost", 0)
}

// TestPostgresBatchFailuresKeepLock: a long batch whose statements go
// many at a time, failed by a row error or by its caller's context ending
// at any moment, fails that Apply only: the lock connection stays, and
// the next Apply works. One that returns nil has committed.
func TestPostgresBatchFailuresKeepLock(t *testing.T) {
	ctx := context.Background()
	logs := &logRecorder{}
	st, err := OpenWith(ctx, DriverPostgres, postgresDSN(t), Options{Log: slog.New(logs)})
	must(t, "open", err)
	defer st.Close()
	s := st.(*postgresStore)
	mustAdd(t, s, "a@example.org", "h", 5)
	pid := lockConnPID(s)
	at := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	good := longBatch(300, at)
	for i := range 20 {
		ops := slices.Insert(slices.Clone(good), 10*i+5, Op{Kind: OpAddSubscription, Handle: "none", Contact: "c@example.net"})
		wantOpError(t, fmt.Sprintf("round %d", i), s.Apply(ctx, ops), 10*i+5, ErrNotFound)
		if got := lockConnPID(s); got != pid {
			t.Fatalf("round %d: lock connection of backend %d, want %d still", i, got, pid)
		}
	}
	// The cancels are spread over the time a batch takes.
	start := time.Now()
	mustApply(t, s, good...)
	took := time.Since(start)
	committed := 0
	for i := range 50 {
		cctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(took*time.Duration(i)/40, cancel)
		ops := slices.Clone(good)
		for k := range ops {
			ops[k].Flags.StatusText = strconv.Itoa(i)
		}
		err := s.Apply(cctx, ops)
		timer.Stop()
		cancel()
		switch {
		case err == nil:
			committed++
			a, err := s.Account(ctx, "u000@example.org")
			must(t, "Account", err)
			if a.Flags.StatusText != strconv.Itoa(i) {
				t.Fatalf("round %d: Apply returned nil, but the status text is %q", i, a.Flags.StatusText)
			}
		case isSentinel(err):
			t.Fatalf("round %d: a canceled Apply returned the sentinel error %v", i, err)
		}
		if got := lockConnPID(s); got != pid {
			t.Fatalf("round %d (%v): lock connection of backend %d, want %d still", i, err, got, pid)
		}
	}
	t.Logf("%d of 50 canceled batches committed", committed)
	mustApply(t, s, good...)
	logs.wantLogged(t, slog.LevelError, "database connection lost", 0)
}

// TestPostgresPingWaitsForApply: Ping takes the lock connection in turn
// with Apply, and keeps to its caller's deadline while it waits.
func TestPostgresPingWaitsForApply(t *testing.T) {
	st := openStore(t, DriverPostgres, postgresDSN(t))
	s := st.(*postgresStore)
	pid := lockConnPID(s)
	s.sem <- struct{}{} // as an Apply in progress holds it
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Ping(ctx)
	s.release()
	if !errors.Is(err, context.DeadlineExceeded) || isSentinel(err) {
		t.Fatalf("Ping while the lock connection is in use = %v, want its deadline", err)
	}
	must(t, "Ping once free", s.Ping(context.Background()))
	if got := lockConnPID(s); got != pid {
		t.Fatalf("lock connection of backend %d, want %d still", got, pid)
	}
}

// TestPostgresPingDatabaseDown: while the database cannot be reached, and
// nothing writes, Ping fails (but not with ErrNotActive: the lock is not
// lost for good); once it can, Ping answers again, after the monitor has
// taken the lock back.
func TestPostgresPingDatabaseDown(t *testing.T) {
	ctx := context.Background()
	proxy := startProxy(t, postgresDSN(t))
	s, err := OpenWith(ctx, DriverPostgres, proxy.dsn, Options{Log: slog.New(&logRecorder{})})
	must(t, "open", err)
	defer s.Close()
	must(t, "Ping", s.Ping(ctx))

	proxy.cut()
	for i := range 3 {
		err := s.Ping(ctx)
		if err == nil || isSentinel(err) {
			t.Fatalf("Ping %d while the database is cut off = %v, want a non-sentinel error", i, err)
		}
		time.Sleep(lockRetryInterval)
	}
	proxy.restore()
	waitFor(t, 10*time.Second, "Ping answers again", func() bool { return s.Ping(ctx) == nil })
	select {
	case <-s.Lost():
		t.Fatal("Lost() closed, though no other process took the lock")
	default:
	}
	must(t, "close", s.Close())
	wantNoStoreGoroutines(t)
}
