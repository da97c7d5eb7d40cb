package roster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Storage health (StorageOK, which /readyz reports). The outcome of the
// last write alone goes stale: a write that failed and is not tried again
// would leave it false long after the database is back, and a database
// that goes down while nothing writes would leave it true. So a health
// loop pings the store whenever no observation is recent.
const (
	// defaultHealthEvery is how old the most recent observation of
	// storage may get before the health loop pings the store.
	defaultHealthEvery = 5 * time.Second
	// pingTimeout bounds one ping: a database slower than that to answer
	// one query does not answer, as far as readiness goes.
	pingTimeout = 2 * time.Second
)

// health is what is known of storage: the most recent observation,
// whichever its kind, the outcome of a transaction (dated when it ended)
// or the answer of a ping (dated when it started). An observation dated
// before the one recorded is older news, and is dropped. No ping starts
// while a transaction is under way, so a ping's answer is newer than
// every transaction that ended before it, and a transaction's outcome
// newer than every ping that started before it ended (a ping that failed
// while it ran, maybe waiting for it, is dropped: see ping). Only a
// transaction stuck for stuckAfter health periods is recorded as a
// failure meanwhile, which its outcome replaces once it ends.
//
// The rule for goroutines: record and due take mu (held only to compare
// and store, never while storage is asked); ok is also stored under mu,
// but read without it, so that StorageOK is one atomic load from any
// goroutine.
type health struct {
	mu sync.Mutex
	at time.Time // the date of the observation recorded
	ok atomic.Bool

	// begun counts the transactions begun, and since is when the one
	// under way began (UnixNano; 0: none), for ping: a ping that waited
	// its turn behind a slow transaction and timed out says nothing that
	// the transaction's own outcome will not say better, unless the
	// transaction is stuck. One transaction runs at a time (commitLoop).
	begun atomic.Uint64
	since atomic.Int64
}

// committing runs f, a transaction of ops operations, as under way. One of
// none (a batch of callbacks only) asks storage nothing.
func (h *health) committing(ops int, f func()) {
	if ops == 0 {
		f()
		return
	}
	// In this order, and ping reads them in the other: a ping that saw
	// no transaction under way sees begun move if one began meanwhile.
	h.since.Store(time.Now().UnixNano())
	h.begun.Add(1)
	defer h.since.Store(0)
	f()
}

// stuckAfter is how long a transaction may be under way before readiness
// takes storage for failing, in health periods: a write that never
// returns (a disk that hangs in fsync) must not leave /readyz at 200.
const stuckAfter = 2

// record records an observation of storage dated at: ok unless storage
// failed. It reports whether it was kept, that is whether it is not older
// than the one recorded.
func (h *health) record(at time.Time, ok bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if at.Before(h.at) {
		return false
	}
	h.at = at
	h.ok.Store(ok)
	return true
}

// due returns how long after now the next ping is due: every after the
// date of the most recent observation (0 or less: now).
func (h *health) due(now time.Time, every time.Duration) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at.Add(every).Sub(now)
}

// StorageOK reports whether storage answered at the most recent
// observation: the outcome of the last transaction that wrote anything,
// or the health loop's last ping, whichever started last (see health). It
// may be called from any goroutine.
func (s *Service) StorageOK() bool { return s.health.ok.Load() }

// startHealth starts the health loop and returns the function that ends
// it, which returns once the loop has returned (a ping under way is
// canceled).
func (s *Service) startHealth() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.healthLoop(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// healthLoop pings the store whenever the most recent observation of
// storage is s.healthEvery old, until ctx ends. It runs on a goroutine of
// its own, so that the engine never waits for a ping: transactions record
// their outcome from the engine (finish) meanwhile.
func (s *Service) healthLoop(ctx context.Context) {
	t := time.NewTimer(s.healthEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := s.health.due(time.Now(), s.healthEvery)
		if wait <= 0 {
			s.ping(ctx)
			wait = s.healthEvery
		}
		t.Reset(wait)
	}
}

// ping asks the store whether it answers and records the answer, unless
// ctx ended meanwhile: a ping cut short by Stop says nothing of storage.
// A panic of the store is a failure to answer.
//
// No ping is made while a transaction is under way, whose outcome is
// about to be recorded, but one under way for stuckAfter health periods
// is a failure; and a ping that failed while one was, which it may have
// waited for on the one connection both use, is not recorded either: the
// transaction's outcome tells.
func (s *Service) ping(ctx context.Context) {
	begun := s.health.begun.Load()
	if t := s.health.since.Load(); t != 0 {
		if d := time.Since(time.Unix(0, t)); d > stuckAfter*s.healthEvery {
			if s.health.record(time.Now(), false) {
				s.log.Warn("storage does not answer: a transaction is stuck", "for", d.Round(time.Second))
			}
		}
		return
	}
	began := time.Now()
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	err := errPingPanic
	s.safely("ping", func() { err = s.store.Ping(pctx) })
	if ctx.Err() != nil {
		return
	}
	if err != nil && (s.health.begun.Load() != begun || s.health.since.Load() != 0) {
		return
	}
	was := s.StorageOK()
	if s.health.record(began, err == nil) && was != (err == nil) {
		if err != nil {
			s.log.Warn("storage does not answer", "err", err)
		} else {
			s.log.Info("storage answers again")
		}
	}
}

var errPingPanic = errors.New("roster: panic in ping")
