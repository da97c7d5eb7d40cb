package roster

import (
	"errors"
	"sync"
	"testing"
	"time"

	"presenced/storage"
)

// walkCounts counts the state the slow way; it must run on the engine
// goroutine.
func walkCounts(s *Service) Counts {
	c := Counts{Accounts: len(s.accounts), Handles: len(s.handles), Queued: len(s.notes.queue)}
	for _, h := range s.handles {
		c.Subscriptions += len(h.subs)
		c.Pending += len(h.requests)
	}
	return c
}

// checkCounts compares Counts, but Queued (published by Run only), with
// the state.
func checkCounts(t interface{ Fatalf(string, ...any) }, s *Service) {
	got, want := s.Counts(), walkCounts(s)
	got.Queued, want.Queued = 0, 0
	if got != want {
		t.Fatalf("Counts() = %+v, the state holds %+v", got, want)
	}
}

// TestCounts: the gauges follow the state as it changes, and ObserveCommit
// is told of every transaction, failed ones included.
func TestCounts(t *testing.T) {
	store := newMemStore()
	var mu sync.Mutex
	var observed, failed int
	s, err := New(t.Context(), store, Options{ObserveCommit: func(d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		observed++
		if err != nil {
			failed++
		}
		if d < 0 {
			t.Errorf("ObserveCommit(%v)", d)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	startEngine(t, s)
	wait := func(f func(done func())) {
		t.Helper()
		ch := make(chan struct{})
		on(s, func() { f(func() { close(ch) }) })
		<-ch
		on(s, func() { checkCounts(t, s) })
	}
	const alice, bob = "alice@example.org", "bob@example.org"
	wait(func(done func()) { s.AddHandle(alice, "a1", storage.PolicyOpen, func(error) { done() }) })
	wait(func(done func()) { s.AddHandle(alice, "a2", storage.PolicyAsk, func(error) { done() }) })
	wait(func(done func()) { s.AddHandle(bob, "b1", storage.PolicyOpen, func(error) { done() }) })
	for _, c := range []string{"c1@example.net", "c2@example.net", "c3@example.net"} {
		wait(func(done func()) { s.Subscribe("a1", c, func(SubscribeOutcome, error) { done() }) })
		wait(func(done func()) { s.Subscribe("a2", c, func(SubscribeOutcome, error) { done() }) })
	}
	wait(func(done func()) { s.Subscribe("b1", "c1@example.net", func(SubscribeOutcome, error) { done() }) })
	if got, want := s.Counts(), (Counts{Accounts: 2, Handles: 3, Subscriptions: 4, Pending: 3}); got != want {
		t.Fatalf("Counts() = %+v, want %+v", got, want)
	}
	wait(func(done func()) { s.Unsubscribe("a1", "c1@example.net", func(bool, error) { done() }) })
	wait(func(done func()) { s.Approve(alice, "a2", "c1@example.net", func(error) { done() }) })
	wait(func(done func()) {
		if err := s.Deny(alice, "a2", "c2@example.net", func(error) { done() }); err != nil {
			t.Error(err)
			done()
		}
	})
	if got, want := s.Counts(), (Counts{Accounts: 2, Handles: 3, Subscriptions: 4, Pending: 1}); got != want {
		t.Fatalf("Counts() = %+v, want %+v", got, want)
	}
	wait(func(done func()) { s.RemoveHandle(alice, "a2", func(error) { done() }) })
	// Not connected: the removal notices of a2 (to c1) wait in the queue.
	if got, want := s.Counts(), (Counts{Accounts: 2, Handles: 2, Subscriptions: 3, Pending: 0, Queued: 1}); got != want {
		t.Fatalf("Counts() = %+v, want %+v", got, want)
	}

	mu.Lock()
	ok, bad := observed, failed
	mu.Unlock()
	if ok == 0 || bad != 0 {
		t.Fatalf("ObserveCommit told of %d transactions, %d failed; want some, none failed", ok, bad)
	}
	store.mu.Lock()
	store.down = true
	store.mu.Unlock()
	var addErr error
	wait(func(done func()) {
		s.AddHandle(bob, "b2", storage.PolicyOpen, func(err error) { addErr = err; done() })
	})
	if !errors.Is(addErr, errDown) {
		t.Fatalf("AddHandle with storage down = %v", addErr)
	}
	mu.Lock()
	bad = failed
	mu.Unlock()
	if bad == 0 {
		t.Fatal("ObserveCommit was not told of the failed transaction")
	}
	if got := s.Counts().Handles; got != 2 {
		t.Fatalf("Handles = %d after a failed add, want 2", got)
	}
}

// TestCountsQueued: the engine publishes the length of the fan-out queue.
func TestCountsQueued(t *testing.T) {
	s, _ := runningWithHandle(t)
	on(s, func() {
		s.online = true
		s.notes.account(s.accounts["alice@example.org"])
	})
	// The engine goes round its loop once more after the function ran:
	// the queue it publishes then is what pump left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var want int
		on(s, func() { want = len(s.notes.queue) })
		if got := s.Counts().Queued; got == want || time.Now().After(deadline) {
			if got != want {
				t.Fatalf("Queued = %d, want %d", got, want)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
}
