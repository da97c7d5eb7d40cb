package roster

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"presenced/storage"
)

// testHealthEvery is the health loop's period in these tests: short, so
// that they do not wait long, and nothing is asserted of it but that the
// loop comes round.
const testHealthEvery = 5 * time.Millisecond

// runHealth runs s's health loop alone, every testHealthEvery, until the
// test ends, for a Service driven without Run (syncService).
func runHealth(t *testing.T, s *Service) {
	t.Helper()
	s.healthEvery = testHealthEvery
	t.Cleanup(s.startHealth())
}

// waitUntil polls f until it reports true, failing the test if it has not
// within a deadline generous enough for a loaded machine.
func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReviewStorageOKIsLastWriteOnly: a write that failed and is not
// tried again leaves StorageOK false only until a ping finds storage
// answering again.
func TestReviewStorageOKIsLastWriteOnly(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, _ := webSetup(t, store)
	runHealth(t, s.Service)
	store.setDown(true)
	s.settle(ctx)
	waitUntil(t, "StorageOK false once a health check has run", func() bool { return !s.StorageOK() })
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err == nil {
		t.Fatal("SetWeb while storage is down: no error")
	}
	if n := len(s.commits.again); n != 0 {
		t.Fatalf("%d changes to be written again, want none: the case is a write not retried", n)
	}
	store.setDown(false)
	for range 3 {
		s.settle(ctx)
	}
	waitUntil(t, "StorageOK once storage answers again", s.StorageOK)
}

// runningHealth returns a Service whose engine runs, health loop
// included, every testHealthEvery, with the handle h of alice@example.org
// stored; done is closed once Run has returned.
func runningHealth(t *testing.T) (s *Service, store *memStore, done chan struct{}) {
	t.Helper()
	store = newMemStore()
	s, err := New(t.Context(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.healthEvery = testHealthEvery
	done = make(chan struct{})
	go func() {
		defer close(done)
		s.Run()
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	added := make(chan error, 1)
	on(s, func() { s.AddHandle(pendingOwner, "h", storage.PolicyOpen, func(err error) { added <- err }) })
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	return s, store, done
}

// TestStorageDownWhileIdle: storage that goes down while nothing writes
// turns StorageOK false, by a ping, and back to true once it answers.
func TestStorageDownWhileIdle(t *testing.T) {
	s, store, _ := runningHealth(t)
	if !s.StorageOK() {
		t.Fatal("StorageOK false after a stored change")
	}
	writes := store.writeCount()
	store.setDown(true)
	pings := store.pingCount()
	waitUntil(t, "StorageOK false while storage is down", func() bool { return !s.StorageOK() })
	if store.pingCount() == pings {
		t.Fatal("StorageOK turned false without a ping")
	}
	store.setDown(false)
	waitUntil(t, "StorageOK once storage answers", s.StorageOK)
	if got := store.writeCount(); got != writes {
		t.Fatalf("%d rows written by the health loop, want none", got-writes)
	}
}

// TestHealthKeepsTheNewest: of two observations, the one that started
// last holds, whichever ends last: a ping that began before a
// transaction finished does not overwrite its outcome, nor the reverse.
func TestHealthKeepsTheNewest(t *testing.T) {
	var h health
	t0 := time.Now()
	h.record(t0, true)
	batch, ping := t0.Add(2*time.Second), t0.Add(time.Second)
	if !h.record(batch, false) || h.ok.Load() {
		t.Fatal("a failed transaction newer than all was not recorded")
	}
	if h.record(ping, true) || h.ok.Load() {
		t.Fatal("a ping that started before the transaction overwrote its outcome")
	}
	later := batch.Add(time.Second)
	if !h.record(later, true) || !h.ok.Load() {
		t.Fatal("a ping that started after the transaction was not recorded")
	}
	if h.record(batch.Add(time.Millisecond), false) || !h.ok.Load() {
		t.Fatal("a slow transaction that started before the ping overwrote it")
	}
	if d := h.due(later.Add(2*time.Second), 5*time.Second); d != 3*time.Second {
		t.Fatalf("ping due in %v, want 3s: 5s after the newest observation started", d)
	}
	if d := h.due(later.Add(6*time.Second), 5*time.Second); d > 0 {
		t.Fatalf("ping due in %v past the period, want now", d)
	}
}

// TestFinishDatesTheOutcome: finish records a transaction's outcome as
// of when the transaction ended, so a ping started later prevails.
func TestFinishDatesTheOutcome(t *testing.T) {
	s, err := New(t.Context(), newMemStore(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// failed is a committed batch of one change, which storage failed.
	failed := func(ended time.Time) *batch {
		e := &entry{op: storage.Op{Kind: storage.OpSetWeb}, apply: func(error) {}}
		return &batch{entries: []*entry{e}, ops: []storage.Op{e.op}, opOf: []int{0}, errs: []error{errDown}, ended: ended}
	}
	began := time.Now()
	s.health.record(began.Add(time.Millisecond), true) // a ping, started after
	s.finish(failed(began))
	if !s.StorageOK() {
		t.Fatal("a transaction that ended before the ping overwrote it")
	}
	s.finish(failed(began.Add(2 * time.Millisecond)))
	if s.StorageOK() {
		t.Fatal("a failed transaction newer than the ping was not recorded")
	}
	s.finish(&batch{ended: began.Add(3 * time.Millisecond)}) // wrote nothing
	if s.StorageOK() {
		t.Fatal("a batch with no op was taken for an observation of storage")
	}
}

// TestHealthLoopStopsWithService: once Run has returned, the health loop
// has too, and pings no more.
func TestHealthLoopStopsWithService(t *testing.T) {
	s, store, done := runningHealth(t)
	n := store.pingCount()
	waitUntil(t, "the health loop pings", func() bool { return store.pingCount() > n })
	s.Stop()
	<-done
	if g := healthGoroutines(); g != "" {
		t.Fatalf("health loop still running after Run returned:\n%s", g)
	}
	n = store.pingCount()
	time.Sleep(10 * testHealthEvery)
	if got := store.pingCount(); got != n {
		t.Fatalf("%d pings after Run returned", got-n)
	}
}

// healthGoroutines returns the stacks of the goroutines in a health loop.
func healthGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "roster.(*Service).healthLoop") {
			left = append(left, g)
		}
	}
	return strings.Join(left, "\n\n")
}

// busyStore runs Apply and Ping one at a time, as both backends do (the
// PostgreSQL lock connection's sem, SQLite's one connection): a Ping waits
// for a transaction under way, bound by its ctx.
type busyStore struct {
	*memStore
	sem chan struct{}
}

func (b *busyStore) Apply(ctx context.Context, ops []storage.Op) error {
	b.sem <- struct{}{}
	defer func() { <-b.sem }()
	return b.memStore.Apply(ctx, ops)
}

func (b *busyStore) Ping(ctx context.Context) error {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	return b.memStore.Ping(ctx)
}

// A ping that times out waiting for its turn behind
// a slow but successful transaction is recorded as "storage does not
// answer", and, having started after the transaction, it wins over the
// transaction's success: StorageOK is false right after storage committed.
func TestPingBehindASlowCommitDoesNotWin(t *testing.T) {
	mem := newMemStore()
	gate := make(chan struct{})
	mem.gate = gate
	store := &busyStore{memStore: mem, sem: make(chan struct{}, 1)}
	s, err := New(t.Context(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.healthEvery = time.Second // stands for 5 s
	done := make(chan struct{})
	go func() { defer close(done); s.Run() }()
	t.Cleanup(func() { s.Stop(); <-done })
	added := make(chan error, 1)
	start := time.Now()
	on(s, func() { s.AddHandle(pendingOwner, "h", storage.PolicyOpen, func(err error) { added <- err }) })
	// The transaction takes 3.3 s (lockTimeout is 5 s): the ping due at 1 s
	// waits for it, and gives up at 3 s (pingTimeout).
	time.Sleep(3300*time.Millisecond - time.Since(start))
	gate <- struct{}{}
	if err := <-added; err != nil {
		t.Fatalf("the transaction failed: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // finish has recorded the outcome
	if !s.StorageOK() {
		t.Errorf("the transaction just committed, yet StorageOK = false (readyz 503) until the next ping")
	}
}

// TestStuckTransactionFailsReadiness: a transaction that does not return
// (a disk hung in fsync) turns StorageOK false after stuckAfter health
// periods, though no ping may run meanwhile; once it returns, the next
// ping says storage answers again.
func TestStuckTransactionFailsReadiness(t *testing.T) {
	mem := newMemStore()
	gate := make(chan struct{})
	mem.gate = gate
	store := &busyStore{memStore: mem, sem: make(chan struct{}, 1)}
	s, err := New(t.Context(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.healthEvery = 50 * time.Millisecond
	done := make(chan struct{})
	go func() { defer close(done); s.Run() }()
	opened := false
	t.Cleanup(func() {
		if !opened {
			close(gate)
		}
		s.Stop()
		<-done
	})
	added := make(chan error, 1)
	on(s, func() { s.AddHandle(pendingOwner, "h", storage.PolicyOpen, func(err error) { added <- err }) })
	waitUntil(t, "StorageOK false with a transaction stuck", func() bool { return !s.StorageOK() })
	close(gate)
	opened = true
	if err := <-added; err != nil {
		t.Fatalf("the transaction, let go, failed: %v", err)
	}
	waitUntil(t, "StorageOK true once the transaction returned", s.StorageOK)
}

// applySeer is a store that records, at each Apply, whether health saw a
// transaction under way.
type applySeer struct {
	*memStore
	h     *health
	under []bool
}

func (a *applySeer) Apply(ctx context.Context, ops []storage.Op) error {
	a.under = append(a.under, a.h.since.Load() != 0)
	return a.memStore.Apply(ctx, ops)
}

// TestGoOfflineIsATransactionForHealth: GoOffline's write, like every
// other transaction, is under way for health, so that no ping starts
// meanwhile.
func TestGoOfflineIsATransactionForHealth(t *testing.T) {
	ctx := context.Background()
	store := &applySeer{memStore: newMemStore()}
	s, err := New(ctx, store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	store.h = &s.health
	s.AddHandle(pendingOwner, "h", storage.PolicyOpen, nil)
	s.settle(ctx)
	if err := s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true}); err != nil {
		t.Fatal(err)
	}
	s.settle(ctx)
	store.under = nil
	if err := s.GoOffline(ctx, time.Now(), true); err != nil {
		t.Fatal(err)
	}
	if len(store.under) == 0 || slices.Contains(store.under, false) {
		t.Fatalf("under way at each Apply of GoOffline: %v, want true at every one", store.under)
	}
}
