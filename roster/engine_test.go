package roster

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"presenced/storage"
)

// startEngine runs s's engine until the test ends.
func startEngine(t *testing.T, s *Service) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run()
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
}

// on runs f on the engine and waits for it.
func on(s *Service, f func()) {
	done := make(chan struct{})
	s.Do(func() {
		f()
		close(done)
	})
	<-done
}

// runningWithHandle returns a Service whose engine runs, with the handle h
// of alice@example.org already stored.
func runningWithHandle(t *testing.T) (*Service, *memStore) {
	t.Helper()
	store := newMemStore()
	s, err := New(t.Context(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	startEngine(t, s)
	added := make(chan error, 1)
	on(s, func() { s.AddHandle("alice@example.org", "h", storage.PolicyOpen, func(err error) { added <- err }) })
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	return s, store
}

// TestGroupCommit: the changes decided while a transaction commits go
// together in the next one, and each is acknowledged only once its own
// transaction committed.
func TestGroupCommit(t *testing.T) {
	s, store := runningWithHandle(t)
	before := store.applyCount()

	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()
	const n = 100
	var acked atomic.Int32
	first := make(chan struct{})
	on(s, func() {
		s.Subscribe("h", "c0@example.net", func(_ SubscribeOutcome, err error) {
			if err != nil {
				t.Error(err)
			}
			acked.Add(1)
			close(first)
		})
	})
	// The first transaction is now waiting in the store. Everything
	// decided meanwhile must wait for the next one.
	on(s, func() {
		for i := 1; i < n; i++ {
			s.Subscribe("h", fmt.Sprintf("c%d@example.net", i), func(_ SubscribeOutcome, err error) {
				if err != nil {
					t.Error(err)
				}
				acked.Add(1)
			})
		}
	})
	var subscribed bool
	on(s, func() { subscribed = s.IsSubscribed("h", "c0@example.net") })
	if got := acked.Load(); got != 0 || subscribed {
		t.Fatalf("before the commit: %d acknowledged, c0 subscribed in memory: %v; want none", got, subscribed)
	}
	gate <- struct{}{} // the first transaction commits
	<-first
	gate <- struct{}{} // the second
	store.mu.Lock()
	store.gate = nil
	store.mu.Unlock()
	for acked.Load() != n {
		on(s, func() {})
	}
	if got := store.applyCount() - before; got != 2 {
		t.Fatalf("%d subscriptions made while one commit ran took %d transactions, want 2", n, got)
	}
	on(s, func() {
		for i := 0; i < n; i++ {
			if !s.IsSubscribed("h", fmt.Sprintf("c%d@example.net", i)) {
				t.Errorf("c%d not subscribed after its commit", i)
			}
		}
	})
}

// TestEngineBackPressure: while storage does not answer, the engine takes
// at most a bounded number of changes; Do then blocks, which is what slows
// the component's reader down, instead of a queue growing in memory.
func TestEngineBackPressure(t *testing.T) {
	s, store := runningWithHandle(t)
	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()

	const total = maxBatch + maxPending + eventQueue + 1000
	var handed atomic.Int64
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 0; i < total; i++ {
			s.Do(func() { s.Subscribe("h", fmt.Sprintf("c%d@example.net", i), nil) })
			handed.Add(1)
		}
	}()
	// Wait until the producer stops making progress.
	last := int64(-1)
	for handed.Load() != last {
		last = handed.Load()
		time.Sleep(50 * time.Millisecond)
	}
	bound := int64(maxBatch + maxPending + eventQueue + 1)
	if last >= total || last > bound {
		t.Fatalf("with storage stalled the engine took %d changes, want at most %d", last, bound)
	}
	close(gate) // storage answers again: everything goes through
	store.mu.Lock()
	store.gate = nil
	store.mu.Unlock()
	<-finished
	on(s, func() {})
	var subscribers int
	for subscribers < total {
		on(s, func() { subscribers = len(s.handles["h"].subs) })
	}
}
