package roster

import (
	"context"
	"errors"
	"testing"

	"presenced/storage"
)

// Changes that meet while their writes are on their way. Each test holds a
// transaction "in flight" with take, makes another change meanwhile, then
// lets the transaction commit or fail with commit and finish, as Run does.

const pendingOwner = "alice@example.org"

func newPendingService(t *testing.T) (*Service, *memStore) {
	t.Helper()
	store := newMemStore()
	s, err := New(context.Background(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var added error
	s.AddHandle(pendingOwner, "h", func(err error) { added = err })
	s.settle(context.Background())
	if added != nil {
		t.Fatal(added)
	}
	return s, store
}

// fail commits b with storage down, as a transaction that fails.
func fail(s *Service, store *memStore, b *batch) {
	store.setDown(true)
	commit(context.Background(), store, b)
	store.setDown(false)
	s.finish(b)
}

// TestSameInstructionWaitsForTheWriteOnItsWay: a second identical
// instruction is acknowledged only once a write carrying it committed; if
// the first write fails, the second is stored on its own.
func TestSameInstructionWaitsForTheWriteOnItsWay(t *testing.T) {
	s, store := newPendingService(t)
	var first, second error
	firstDone, secondDone := false, false
	s.Instruct(pendingOwner, InstructHide, func(err error) { first, firstDone = err, true })
	b := s.take()
	s.Instruct(pendingOwner, InstructHide, func(err error) { second, secondDone = err, true })
	if secondDone {
		t.Fatal("the second hide was acknowledged while the first write was on its way")
	}
	fail(s, store, b)
	if !firstDone || first == nil {
		t.Fatalf("first hide: done %v, err %v; want refused", firstDone, first)
	}
	s.settle(context.Background())
	if !secondDone || second != nil {
		t.Fatalf("second hide: done %v, err %v; want stored", secondDone, second)
	}
	if f, _ := s.Flags(pendingOwner); !f.Hiding || !store.accounts[pendingOwner].Hiding {
		t.Fatalf("after the second hide committed: memory %+v, stored %+v; want hiding", f, store.accounts[pendingOwner])
	}
}

// TestRefusedInstructionKeepsPresence: when an instruction's write fails,
// the owner's presence decided with it or after it still holds: going
// invisible is not lost, nor is going off-line.
func TestRefusedInstructionKeepsPresence(t *testing.T) {
	ctx := context.Background()
	online := OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined}
	tests := []struct {
		name  string
		after OwnerPresence
		// whether the presence comes after the instruction's batch was
		// taken (in flight) or joins it (coalesced)
		inFlight bool
		want     func(View, storage.Flags) bool
	}{
		{"invisible after, in flight", OwnerPresence{Resource: "pc", Available: true, Hide: true}, true,
			func(v View, f storage.Flags) bool { return !v.Available && f.Hiding }},
		{"invisible, coalesced", OwnerPresence{Resource: "pc", Available: true, Hide: true}, false,
			func(v View, f storage.Flags) bool { return !v.Available && f.Hiding }},
		{"off-line, coalesced", OwnerPresence{Resource: "pc"}, false,
			func(v View, f storage.Flags) bool { return !v.Available && !f.Online }},
		{"off-line after, in flight", OwnerPresence{Resource: "pc"}, true,
			func(v View, f storage.Flags) bool { return !v.Available && !f.Online }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, store := newPendingService(t)
			s.OwnerPresence(pendingOwner, online)
			s.settle(ctx)
			var refused error
			s.Instruct(pendingOwner, InstructAway, func(err error) { refused = err })
			var b *batch
			if tt.inFlight {
				b = s.take()
			}
			s.OwnerPresence(pendingOwner, tt.after)
			if b == nil {
				b = s.take()
			}
			fail(s, store, b)
			s.settle(ctx)
			if refused == nil {
				t.Fatal("the instruction was not refused although its write failed")
			}
			v, _ := s.ViewOfHandle("h")
			f, _ := s.Flags(pendingOwner)
			if !tt.want(v, f) {
				t.Fatalf("after the refusal: view %+v, flags %+v; the presence was lost", v, f)
			}
			if f.Status == storage.StatusAway && f.Explicit {
				t.Fatalf("the refused instruction took effect: %+v", f)
			}
		})
	}
}

// TestAddOwnedWaitsForTheAddOnItsWay: adding a name one's own add is still
// storing is answered once that add is settled, with its outcome.
func TestAddOwnedWaitsForTheAddOnItsWay(t *testing.T) {
	s, store := newPendingService(t)
	var first, second error
	secondDone := false
	s.AddHandle(pendingOwner, "new", func(err error) { first = err })
	b := s.take()
	s.AddHandle(pendingOwner, "new", func(err error) { second, secondDone = err, true })
	if secondDone {
		t.Fatal("the second add was answered while the first was on its way")
	}
	fail(s, store, b)
	s.settle(context.Background())
	if first == nil || !secondDone || second != nil {
		t.Fatalf("first add %v, second add %v (done %v); want the first refused and the second stored", first, second, secondDone)
	}
	if got := s.Handles(pendingOwner); len(got) != 2 {
		t.Fatalf("handles %v, want h and new", got)
	}
}

// TestRemoveWaitsForTheRemovalOnItsWay: removing a handle whose removal is
// still storing is answered once that removal is settled.
func TestRemoveWaitsForTheRemovalOnItsWay(t *testing.T) {
	s, store := newPendingService(t)
	var first, second error
	s.RemoveHandle(pendingOwner, "h", func(err error) { first = err })
	b := s.take()
	s.RemoveHandle(pendingOwner, "h", func(err error) { second = err })
	fail(s, store, b)
	s.settle(context.Background())
	if first == nil || second != nil {
		t.Fatalf("first removal %v, second %v; want the first refused and the second done", first, second)
	}
	if got := s.Handles(pendingOwner); len(got) != 0 {
		t.Fatalf("handles %v after the second removal, want none", got)
	}
}

// TestUnsubscribeWhileSubscribing: an unsubscription that comes while the
// subscription is being stored wins, in memory and in storage, and a probe
// meanwhile is neither answered nor refused.
func TestUnsubscribeWhileSubscribing(t *testing.T) {
	s, store := newPendingService(t)
	const carol = "carol@example.net"
	s.Subscribe("h", carol, nil)
	if !s.SubscribePending("h", carol) {
		t.Fatal("SubscribePending = false while the subscription is being stored")
	}
	if s.Probe("h", carol) {
		t.Fatal("a probe was answered before the subscription was stored")
	}
	was := false
	s.Unsubscribe("h", carol, func(w bool, err error) { was = w })
	s.settle(context.Background())
	if !was {
		t.Fatal("Unsubscribe reported no subscription although one was being stored")
	}
	if s.IsSubscribed("h", carol) || store.subs[[2]string{"h", carol}] {
		t.Fatalf("carol unsubscribed but is still subscribed (memory %v, storage %v)", s.IsSubscribed("h", carol), store.subs[[2]string{"h", carol}])
	}
	if s.SubscribePending("h", carol) {
		t.Fatal("SubscribePending = true once everything is stored")
	}
	// And subscribing again afterwards works.
	var err error
	s.Subscribe("h", carol, func(e error) { err = e })
	s.settle(context.Background())
	if err != nil || !s.IsSubscribed("h", carol) {
		t.Fatalf("subscribing again: %v, subscribed %v", err, s.IsSubscribed("h", carol))
	}
}

// TestDoAfterStop: once Run has returned, Do refuses.
func TestDoAfterStop(t *testing.T) {
	s, _ := newPendingService(t)
	done := make(chan struct{})
	go func() {
		s.Run()
		close(done)
	}()
	s.Stop()
	<-done
	for i := 0; i < 100; i++ {
		if s.Do(func() {}) {
			t.Fatal("Do reported true after Run returned")
		}
	}
}

// TestShutdownStillStoresUnsubscriptions: after Shutdown's last function
// ran, and until Stop, the engine still stores unsubscriptions and refuses
// every other change.
func TestShutdownStillStoresUnsubscriptions(t *testing.T) {
	s, store := newPendingService(t)
	var subErr error
	s.Subscribe("h", "carol@example.net", func(err error) { subErr = err })
	s.settle(context.Background())
	if subErr != nil {
		t.Fatal(subErr)
	}
	done := make(chan struct{})
	go func() {
		s.Run()
		close(done)
	}()
	s.Shutdown(func() {})
	unsubscribed := make(chan error, 1)
	refused := make(chan error, 1)
	s.Do(func() {
		s.Unsubscribe("h", "carol@example.net", func(_ bool, err error) { unsubscribed <- err })
		s.Instruct(pendingOwner, InstructHide, func(err error) { refused <- err })
	})
	if err := <-unsubscribed; err != nil {
		t.Fatal(err)
	}
	if err := <-refused; !errors.Is(err, ErrStopping) {
		t.Fatalf("an instruction after Shutdown = %v, want ErrStopping", err)
	}
	s.Stop()
	<-done
	if store.subs[[2]string{"h", "carol@example.net"}] {
		t.Fatal("an unsubscription after Shutdown was not stored")
	}
}

// TestStaleResyncTellsNobody: a resync whose flags commit after its
// connection ended queues nothing and reports nothing: the next
// connection's resync does that.
func TestStaleResyncTellsNobody(t *testing.T) {
	s, store := newPendingService(t)
	var subErr error
	s.Subscribe("h", "carol@example.net", func(err error) { subErr = err })
	s.settle(context.Background())
	if subErr != nil {
		t.Fatal(subErr)
	}
	s.MarkStale()
	synced := false
	s.DropStale(func() { synced = true })
	b := s.take()
	s.Discard()   // the connection is lost
	s.MarkStale() // and another begins, before the commit came back
	commit(context.Background(), store, b)
	s.finish(b)
	if synced || s.notes.busy() {
		t.Fatalf("the old resync finished after its connection ended: synced %v, %d jobs queued", synced, len(s.notes.queue))
	}
}
