package roster

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"presenced/storage"
)

// Bounds of the engine's queues. None grows with the rate of input: when
// the pending batch is full the engine stops taking work, Do blocks, and
// the component's reader stops reading from the XMPP server (TCP
// back-pressure).
const (
	// eventQueue is how many functions given to Do may wait.
	eventQueue = 256
	// maxBatch is the most changes one transaction commits.
	maxBatch = 1024
	// maxPending is how many changes may wait for a transaction before the
	// engine stops taking work.
	maxPending = 4 * maxBatch
)

// entry is one change waiting to be committed.
type entry struct {
	op storage.Op // a Kind of 0 writes nothing (AfterCommit)
	// acct is set for a flags write, whose op is made when its batch is
	// taken, from the flags last decided then; steps are the changes that
	// decided them.
	acct  *account
	steps []flagStep
	// apply runs on the engine goroutine once the batch committed (nil)
	// or failed.
	apply func(error)
	// must is set for a change that took effect at once and is written
	// until it is stored: when its write fails through the database,
	// apply is told ErrNotStored once, and the entry is tried again.
	must bool
	// told is set once apply has run.
	told bool
	// skip, if set, reports that the change has become moot (a removal of
	// a row whose writes all failed): it is left unwritten, as if stored.
	skip func() bool
}

// committer holds the changes waiting for a transaction.
type committer struct {
	pending []*entry
	// again holds the changes whose write failed and is tried again, in
	// the order they were made; they go first in the next transaction,
	// so that the changes made after them are stored after them too.
	again    []*entry
	inFlight bool
	// retryAt is when the next transaction may be tried for the changes
	// in again alone; delay is the wait after the next failure.
	retryAt time.Time
	delay   time.Duration
}

// Waits between attempts to store what failed to be stored.
const (
	minRetry = 250 * time.Millisecond
	maxRetry = 5 * time.Second
)

func (c *committer) add(e *entry) { c.pending = append(c.pending, e) }

// retry queues e to be written again after a wait.
func (c *committer) retry(e *entry) {
	if len(c.again) == 0 {
		c.delay = max(minRetry, min(2*c.delay, maxRetry))
		c.retryAt = time.Now().Add(c.delay)
	}
	c.again = append(c.again, e)
}

// due reports whether a transaction is to be started now. While changes
// wait to be written again, storage failed lately: the next transaction
// waits for retryAt, unless a full batch is pending (the engine must not
// stop taking work, a hide among it). The clock is read only then.
func (c *committer) due() bool {
	switch {
	case c.inFlight:
		return false
	case len(c.again) == 0:
		return len(c.pending) > 0
	case len(c.pending) >= maxBatch:
		return true
	}
	return !time.Now().Before(c.retryAt)
}

// batch is one transaction's worth of changes.
type batch struct {
	entries []*entry
	ops     []storage.Op
	opOf    []int // index in ops of each entry's op, or -1
	errs    []error
	// ended is when the transaction whose outcome b.errs hold ended (the
	// last one: see commit), which dates the outcome for StorageOK (see
	// health).
	ended time.Time
}

// take takes the changes for one transaction: every change to be written
// again, in the order they were made (so whatever was decided after them
// is stored after them, and none is starved), then up to maxBatch pending
// ones. A change that has become moot is done with, unwritten.
func (s *Service) take() *batch {
	c := &s.commits
	n := min(len(c.pending), maxBatch)
	b := &batch{entries: make([]*entry, 0, len(c.again)+n)}
	for _, e := range slices.Concat(c.again, c.pending[:n]) {
		if e.skip != nil && e.skip() {
			s.tell(e, nil)
			continue
		}
		b.entries = append(b.entries, e)
	}
	b.opOf = make([]int, len(b.entries))
	c.again = nil
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = nil
	}
	for i, e := range b.entries {
		if e.acct != nil {
			e.op = storage.Op{Kind: storage.OpSetFlags, Account: e.acct.jid, Flags: e.acct.want}
			if e.acct.flagsOp == e {
				e.acct.flagsOp = nil
			}
			e.acct.writing = e
		}
		b.opOf[i] = -1
		if e.op.Kind != 0 {
			b.opOf[i] = len(b.ops)
			b.ops = append(b.ops, e.op)
		}
	}
	return b
}

// commit writes b's ops in one transaction and records each op's error in
// b.errs. An op that fails on its own (storage.IsRowError: the row was
// taken, or gone) is left out and the rest tried again, so that one bad
// change does not fail the others; any other failure fails them all.
//
// observe, if not nil, is told the duration and outcome of every
// transaction (Options.ObserveCommit).
func commit(ctx context.Context, store storage.Store, b *batch, observe func(time.Duration, error)) {
	defer func() { b.ended = time.Now() }() // dated even should the store panic
	b.errs = make([]error, len(b.ops))
	live := make([]int, len(b.ops))
	for i := range live {
		live[i] = i
	}
	for len(live) > 0 {
		ops := make([]storage.Op, len(live))
		for i, k := range live {
			ops[i] = b.ops[k]
		}
		began := time.Now()
		err := store.Apply(ctx, ops)
		if observe != nil {
			observe(time.Since(began), err)
		}
		if err == nil {
			return
		}
		var oe *storage.OpError
		if errors.As(err, &oe) && oe.Index >= 0 && oe.Index < len(live) && storage.IsRowError(oe.Err) {
			b.errs[live[oe.Index]] = oe.Err
			live = append(live[:oe.Index], live[oe.Index+1:]...)
			continue
		}
		for _, k := range live {
			b.errs[k] = err
		}
		return
	}
}

// commitBatch commits b as a transaction under way for health (no ping
// meanwhile) and observed (Options.ObserveCommit).
func (s *Service) commitBatch(ctx context.Context, b *batch) {
	s.health.committing(len(b.ops), func() { commit(ctx, s.store, b, s.observe) })
}

// finish applies a committed batch to memory, in the order its changes
// were made. A change that must be stored and failed through the database
// is queued to be written again.
func (s *Service) finish(b *batch) {
	failed := false
	for i, e := range b.entries {
		var err error
		if k := b.opOf[i]; k >= 0 {
			err = b.errs[k]
		}
		if err != nil && e.must && !storage.IsRowError(err) && !errors.Is(err, storage.ErrNotActive) {
			failed = true
			if e.skip != nil && e.skip() {
				s.tell(e, nil) // moot now: what it removed was never stored
				continue
			}
			s.commits.retry(e)
			s.tell(e, fmt.Errorf("%w: %w", ErrNotStored, err))
			continue
		}
		if err != nil && !storage.IsRowError(err) {
			failed = true
		}
		s.tell(e, err)
	}
	if !failed && len(s.commits.again) == 0 {
		s.commits.delay = 0
	}
	if len(b.ops) > 0 {
		// An observation of storage, unless a ping started since.
		s.health.record(b.ended, !failed)
	}
}

// tell runs e's callback with err, unless it ran before (a change told
// ErrNotStored is not told again when it is stored, or given up).
func (s *Service) tell(e *entry, err error) {
	if e.told {
		return
	}
	e.told = true
	s.safely("commit callback", func() { e.apply(err) })
}

// settle commits every pending change synchronously and applies it, and
// tries once what is to be written again. It is for tests and tools that
// drive a Service without Run.
func (s *Service) settle(ctx context.Context) {
	for first := true; first || len(s.commits.pending) > 0; first = false {
		if len(s.commits.pending) == 0 && len(s.commits.again) == 0 {
			return
		}
		b := s.take()
		s.commitBatch(ctx, b)
		s.finish(b)
	}
}

// engine is the Service's goroutine plumbing.
type engine struct {
	events   chan func()
	requests chan *batch
	results  chan *batch
	done     chan struct{} // closed when Run returns
	// last runs once everything pending is committed, after Shutdown;
	// once stop is set too, Run returns.
	last func()
	stop bool
}

func (e *engine) init() {
	e.events = make(chan func(), eventQueue)
	e.requests = make(chan *batch, 1)
	e.results = make(chan *batch, 1)
	e.done = make(chan struct{})
}

// Do runs f on the engine goroutine. It blocks while the engine's queue is
// full, and reports false, without running f, once Run has returned (a
// call that races with Run's return may report true for an f that never
// runs).
func (s *Service) Do(f func()) bool {
	select {
	case <-s.eng.done:
		return false
	default:
	}
	select {
	case s.eng.events <- f:
		return true
	case <-s.eng.done:
		return false
	}
}

// Shutdown freezes the Service for good: every change but an
// unsubscription (which the contact's server has made already) is refused
// from now on, and once the changes already made are committed, last runs
// on the engine goroutine (the component withdraws there and calls
// GoOffline), the web showing every handle off-line first. Shutdown returns when last has run. The engine goes on, so
// that unsubscriptions read until the stream closes are still stored,
// until Stop.
func (s *Service) Shutdown(last func()) {
	ran := make(chan struct{})
	if !s.Do(func() {
		s.stopping = true
		s.eng.last = func() {
			defer close(ran)
			// Whatever last does (a component that was abandoned
			// withdraws nothing), nothing vouches for the handles
			// from now on: the web shows them off-line at once.
			s.unvouch()
			last()
		}
	}) {
		return
	}
	select {
	case <-ran:
	case <-s.eng.done:
	}
}

// Stop ends the engine once the changes already made are committed (and
// refuses new ones but unsubscriptions meanwhile); Run then returns, and
// so does Stop.
func (s *Service) Stop() {
	s.Do(func() {
		s.stopping = true
		s.eng.stop = true
	})
	<-s.eng.done
}

// Run is the engine: it runs the functions given to Do, one at a time,
// commits the changes they make in groups (one transaction in flight;
// whatever is decided meanwhile goes in the next), and does the fan-out a
// slice at a time between them. When it has nothing left to do right now,
// it flushes the Sender. Beside it, the health loop checks storage while
// nothing writes (StorageOK). It returns after Stop, once the committer
// and the health loop have nothing left under way.
func (s *Service) Run() {
	e := &s.eng
	go s.commitLoop()
	stopHealth := s.startHealth()
	defer close(e.done)
	defer close(e.requests)
	defer stopHealth()
	for {
		s.countQueue()
		if s.commits.due() {
			s.commits.inFlight = true
			e.requests <- s.take()
		}
		// What is to be written again does not hold shutdown up: the
		// last transaction (GoOffline, or the one below) tries it once
		// more.
		settled := !s.commits.inFlight && len(s.commits.pending) == 0
		if e.last != nil && settled {
			last := e.last
			e.last = nil
			s.safely("shutdown", last)
			continue
		}
		if e.stop && settled {
			s.lastTry()
			return
		}
		events := e.events
		if len(s.commits.pending) >= maxPending {
			events = nil
		}
		if s.online && s.notes.busy() {
			if !s.next(events) {
				s.pump()
			}
			continue
		}
		// Nothing to send before the next event: flush only if none is
		// waiting, so that a burst of stanzas gets its answers in one
		// write.
		if !s.next(events) {
			s.out.Flush()
			s.wait(events)
		}
	}
}

// next handles one function from events (nil: none taken) or one
// committed batch, if one is waiting; it reports whether it handled
// anything.
func (s *Service) next(events chan func()) bool {
	select {
	case f := <-events:
		s.safely("event", f)
	case b := <-s.eng.results:
		s.committed(b)
	default:
		return false
	}
	return true
}

// wait blocks until there is an event, a committed batch, or time to try
// again what failed to be stored.
func (s *Service) wait(events chan func()) {
	var retry <-chan time.Time
	if c := &s.commits; !c.inFlight && (len(c.again) > 0) {
		t := time.NewTimer(time.Until(c.retryAt))
		defer t.Stop()
		retry = t.C
	}
	select {
	case f := <-events:
		s.safely("event", f)
	case b := <-s.eng.results:
		s.committed(b)
	case <-retry:
	}
}

// lastTry tries once more, at the end, to store what failed to be.
func (s *Service) lastTry() {
	if len(s.commits.again) == 0 {
		return
	}
	n := len(s.commits.again)
	s.settle(context.Background())
	if left := len(s.commits.again); left > 0 {
		s.log.Error("changes lost: they could not be stored before the end", "changes", left, "of", n)
	}
}

// committed takes back a batch the committer has done.
func (s *Service) committed(b *batch) {
	s.commits.inFlight = false
	s.finish(b)
}

// commitLoop commits the batches Run hands it, one at a time.
func (s *Service) commitLoop() {
	for b := range s.eng.requests {
		func() {
			defer func() {
				if r := recover(); r != nil {
					err := fmt.Errorf("roster: panic in commit: %v", r)
					s.log.Error("panic", "where", "commit", "panic", r, "stack", string(debug.Stack()))
					b.errs = make([]error, len(b.ops))
					for i := range b.errs {
						b.errs[i] = err
					}
				}
			}()
			// Each transaction has its own deadline inside the store.
			s.commitBatch(context.Background(), b)
		}()
		s.eng.results <- b
	}
}

// safely runs f, logging a panic rather than dying of it.
func (s *Service) safely(where string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic", "where", where, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	f()
}

// Idle reports whether the engine has nothing left to do: no change
// waiting for or in a transaction, none to be written again, and no
// fan-out queued while connected.
func (s *Service) Idle() bool {
	c := &s.commits
	return !c.inFlight && len(c.pending) == 0 && len(c.again) == 0 && (!s.online || !s.notes.busy())
}
