package alone

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"presenced/bench/internal/proc"
	"presenced/bench/internal/shared"
	"presenced/storage"
)

// The 1M data set: accounts × handles each × subscribers each, subscribers
// drawn from a pool of distinct contacts.
const (
	mAccounts    = 10000
	mHandles     = 4
	mSubscribers = 25
	mContacts    = 100000
	mTotal       = mAccounts * mHandles * mSubscribers
)

// mContact is the contact of subscriber i of handle g: the slots g*25+i are
// consecutive, so the 25 subscribers of one handle are distinct, and the
// multiplier (prime to 100,000) scatters them over the pool, each contact
// serving 10 handles.
func mContact(g, i int) int { return ((g*mSubscribers + i) % mContacts) * 7919 % mContacts }

// mNames are the account, handle and contact JIDs of the data set.
func mAccount(a int) string   { return fmt.Sprintf("a%d@example.org", a) }
func mHandle(a, h int) string { return fmt.Sprintf("a%dh%d", a, h) }
func mContactJID(c int) string {
	return fmt.Sprintf("m%d@%s", c, contactDomain)
}

// fillMillion has bin, the first build, make its schema (see schema.go),
// then writes the data set in one transaction. The builds after it open
// the database at that version, and a newer one upgrades it: so the oldest
// build goes first (as scripts/bench.sh lists the baseline), and builds of
// several schema versions take -pairs 1.
func fillMillion(ctx context.Context, bin, dir, driver, dsn string) error {
	if err := createSchema(ctx, bin, dir, driver, dsn); err != nil {
		return err
	}
	if driver == storage.DriverSQLite {
		return fillSQLite(ctx, dsn)
	}
	return fillPostgres(ctx, dsn)
}

// fillSQLite writes the data set in one transaction.
func fillSQLite(ctx context.Context, path string) error {
	f, err := shared.OpenSQLiteTables(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	contacts := make([]string, mContacts)
	for c := range contacts {
		contacts[c] = mContactJID(c)
	}
	for a := 0; a < mAccounts; a++ {
		acc := mAccount(a)
		if err := f.Account(ctx, acc); err != nil {
			return err
		}
		for h := 0; h < mHandles; h++ {
			name := mHandle(a, h)
			if err := f.Handle(ctx, name, acc); err != nil {
				return err
			}
			for i := 0; i < mSubscribers; i++ {
				if err := f.Subscription(ctx, name, contacts[mContact(a*mHandles+h, i)]); err != nil {
					return err
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return f.Commit()
}

// fillPostgres writes the data set with COPY in one transaction.
func fillPostgres(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	now := time.Now().UTC().Truncate(time.Microsecond)
	// Rows are generated as COPY asks for them: 1M rows held at once would
	// cost the harness some 100 MB.
	copies := []struct {
		table string
		cols  []string
		n     int
		row   func(i int) ([]any, error)
	}{
		{"accounts", []string{"jid", "online", "status", "hiding", "status_text", "since"}, mAccounts, func(a int) ([]any, error) {
			return []any{mAccount(a), false, "undefined", false, "", now}, nil
		}},
		{"handles", []string{"name", "account"}, mAccounts * mHandles, func(g int) ([]any, error) {
			return []any{mHandle(g/mHandles, g%mHandles), mAccount(g / mHandles)}, nil
		}},
		{"subscriptions", []string{"handle", "contact"}, mTotal, func(i int) ([]any, error) {
			g := i / mSubscribers
			return []any{mHandle(g/mHandles, g%mHandles), mContactJID(mContact(g, i%mSubscribers))}, nil
		}},
	}
	for _, c := range copies {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromSlice(c.n, c.row)); err != nil {
			return fmt.Errorf("copy %s: %w", c.table, err)
		}
	}
	return tx.Commit(ctx)
}

// memSample is presenced's resident memory once settled.
type memSample struct {
	startup time.Duration // process start → handshake
	early   int64         // VmRSS just after the handshake, before the resync's stanzas
	rss     int64         // VmRSS once settled
	at      time.Duration // after the handshake
	stanzas int64         // received from the handshake to the sample
	// settled is false when presenced still sent stanzas 2 minutes
	// after the least settling time: rss was sampled all the same.
	settled bool
}

// settleLimit bounds the wait for 1 s without a stanza.
const settleLimit = 2 * time.Minute

// settledRSS starts bin on the database, waits until it is connected and
// settled (at least o.settle after the handshake and no stanza for 1 s),
// samples VmRSS and stops it.
func settledRSS(ctx context.Context, o *options, bin, dir, dsn string) (memSample, error) {
	s, err := connect(ctx, bin, dir, o.store, dsn, 2*time.Minute)
	if err != nil {
		return memSample{}, err
	}
	defer s.c.kill()
	defer s.l.conn.Close()
	n := &counter{}
	s.l.use(n)
	early, err := proc.RSS(s.c.pid())
	if err != nil {
		return memSample{}, s.c.failure(fmt.Errorf("read RSS: %w", err))
	}
	for time.Since(s.hsAt) < o.settle {
		select {
		case <-ctx.Done():
			return memSample{}, ctx.Err()
		case <-s.l.ended:
			return memSample{}, s.c.failure(fmt.Errorf("stream ended while settling: %v", s.l.err))
		case <-time.After(50 * time.Millisecond):
		}
	}
	settled := s.l.waitQuiet(time.Second, settleLimit)
	rss, err := proc.RSS(s.c.pid())
	if err != nil {
		return memSample{}, s.c.failure(fmt.Errorf("read RSS: %w", err))
	}
	m := memSample{startup: s.startup, early: early, rss: rss, at: time.Since(s.hsAt), stanzas: n.n.Load(), settled: settled}
	if _, err := s.shutdown(ctx, time.Minute); err != nil {
		return memSample{}, err
	}
	return m, nil
}

// million holds the filled database shared by the 1M runs of every build.
type million struct {
	dsn  string
	drop func()
	fill time.Duration
}

// prepareMillion fills the 1M database once.
func prepareMillion(ctx context.Context, dbs *databases, bin, tmp string) (*million, error) {
	dir := filepath.Join(tmp, "million")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	dsn, drop, err := dbs.fresh(ctx, dir)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := fillMillion(ctx, bin, dir, dbs.driver, dsn); err != nil {
		drop()
		return nil, fmt.Errorf("fill 1M subscriptions: %w", err)
	}
	return &million{dsn: dsn, drop: drop, fill: time.Since(t0)}, nil
}

// runMillion measures one build on an empty database and on the 1M one.
func runMillion(ctx context.Context, o *options, dbs *databases, m *million, bin, tmp string) (*result, error) {
	dir, err := os.MkdirTemp(tmp, "empty-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dsn, drop, err := dbs.fresh(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer drop()
	empty, err := settledRSS(ctx, o, bin, dir, dsn)
	if err != nil {
		return nil, fmt.Errorf("empty database: %w", err)
	}
	full, err := settledRSS(ctx, o, bin, filepath.Join(tmp, "million"), m.dsn)
	if err != nil {
		return nil, fmt.Errorf("1M database: %w", err)
	}
	res := &result{Build: bin}
	res.add("1M start-up", "ms", ms(full.startup))
	res.add("empty start-up", "ms", ms(empty.startup))
	res.add("1M RSS", "MB", float64(full.rss)/1e6)
	res.add("empty RSS", "MB", float64(empty.rss)/1e6)
	res.add("RSS per subscription", "bytes", float64(full.rss-empty.rss)/mTotal)
	res.add("1M RSS sampled after handshake", "s", full.at.Seconds())
	res.add("1M RSS at handshake", "MB", float64(full.early)/1e6)
	res.add("empty RSS at handshake", "MB", float64(empty.early)/1e6)
	res.add("RSS per subscription at handshake", "bytes", float64(full.early-empty.early)/mTotal)
	res.add("1M stanzas before sample", "count", float64(full.stanzas))
	settled := empty.settled && full.settled
	res.Settled = &settled
	return res, nil
}
