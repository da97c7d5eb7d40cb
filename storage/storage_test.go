package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
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
		_, err = s.pool.Exec(context.Background(), query, args...)
	default:
		t.Fatalf("unknown store %T", s)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
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
		err = s.pool.QueryRow(context.Background(), query).Scan(&n)
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

var sentinels = []error{ErrNotFound, ErrExists, ErrLimit, ErrNotOwner, ErrSchemaTooNew}

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
	if !slices.Equal(got.Handles, want.Handles) {
		t.Fatalf("Load: handles %+v, want %+v", got.Handles, want.Handles)
	}
	if !slices.Equal(got.Subscriptions, want.Subscriptions) {
		t.Fatalf("Load: subscriptions %+v, want %+v", got.Subscriptions, want.Subscriptions)
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
			{Kind: OpAddHandle, Account: "a@example.org", Handle: "h1", Max: 5, Now: at},
			{Kind: OpAddHandle, Account: "a@example.org", Handle: "h2", Max: 5, Now: at},
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
			{"taken", Op{Kind: OpAddHandle, Account: "b@example.org", Handle: "h", Max: 5}, ErrExists},
			{"limit", Op{Kind: OpAddHandle, Account: "b@example.org", Handle: "x", Max: 0}, ErrLimit},
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
					{Kind: OpAddHandle, Account: "a@example.org", Handle: "later", Max: 5},
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
		// The deferred Close runs a second time: it must not fail.
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
	return &Snapshot{
		Accounts: []Account{
			{JID: "a@example.org", Flags: fa},
			{JID: "b@example.org", Flags: fb},
			{JID: "c@example.org", Flags: Flags{Status: StatusUndefined}},
		},
		Handles: []Handle{
			{Name: "a1", Account: "a@example.org"},
			{Name: "b1", Account: "b@example.org"},
			{Name: "b2", Account: "b@example.org"},
		},
		Subscriptions: []Subscription{
			{"a1", "z@example.net"}, {"b1", "x@example.net"}, {"b1", "y@example.net"}, {"b2", "x@example.net"},
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
		Handles:       []Handle{{Name: "a1", Account: "a@example.org"}},
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
