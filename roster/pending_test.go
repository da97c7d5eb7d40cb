package roster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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
	s.AddHandle(pendingOwner, "h", storage.PolicyOpen, func(err error) { added = err })
	s.settle(context.Background())
	if added != nil {
		t.Fatal(added)
	}
	return s, store
}

// fail commits b with storage down, as a transaction that fails.
func fail(s *Service, store *memStore, b *batch) {
	store.setDown(true)
	commit(context.Background(), store, b, nil)
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
	s.Instruct(pendingOwner, InstructAway, func(err error) { first, firstDone = err, true })
	b := s.take()
	s.Instruct(pendingOwner, InstructAway, func(err error) { second, secondDone = err, true })
	if secondDone {
		t.Fatal("the second instruction was acknowledged while the first write was on its way")
	}
	fail(s, store, b)
	if !firstDone || first == nil || errors.Is(first, ErrNotStored) {
		t.Fatalf("first instruction: done %v, err %v; want refused", firstDone, first)
	}
	s.settle(context.Background())
	if !secondDone || second != nil {
		t.Fatalf("second instruction: done %v, err %v; want stored", secondDone, second)
	}
}

// TestHidingHoldsWhenNotStored: hiding takes effect at once, before its
// write commits; when the write fails it holds all the same (told
// ErrNotStored), nothing shows the account meanwhile, and it is written
// again until it is stored.
func TestHidingHoldsWhenNotStored(t *testing.T) {
	s, store := newPendingService(t)
	s.accounts[pendingOwner].resources["pc"] = &resource{status: storage.StatusUndefined}
	if err := s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined}); err != nil {
		t.Fatal(err)
	}
	s.settle(context.Background())
	if v, _ := s.ViewOfHandle("h"); !v.Available {
		t.Fatal("the owner is not visible to begin with")
	}
	var hid error
	hidDone := false
	s.Instruct(pendingOwner, InstructHide, func(err error) { hid, hidDone = err, true })
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatal("hiding waits for its write to show")
	}
	fail(s, store, s.take())
	if !hidDone || !errors.Is(hid, ErrNotStored) {
		t.Fatalf("hide with storage down: done %v, err %v; want ErrNotStored", hidDone, hid)
	}
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatal("the account shows again after its hiding failed to be stored")
	}
	if store.accounts[pendingOwner].Hiding {
		t.Fatal("hiding stored although storage was down")
	}
	store.setDown(true)
	s.settle(context.Background()) // a retry that fails again
	store.setDown(false)
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatal("the account shows after a second failed write")
	}
	s.settle(context.Background())
	if !store.accounts[pendingOwner].Hiding {
		t.Fatal("hiding was not written again once storage worked")
	}
	if !s.Idle() {
		t.Fatal("the engine still has writes to make after they were stored")
	}
}

// TestVisibleWriteOnItsWayDoesNotUndoHiding: a write that shows the
// account, committing after a hide was decided, does not show it.
func TestVisibleWriteOnItsWayDoesNotUndoHiding(t *testing.T) {
	s, store := newPendingService(t)
	s.Instruct(pendingOwner, InstructHide, nil)
	s.settle(context.Background())
	s.accounts[pendingOwner].resources["pc"] = &resource{status: storage.StatusUndefined}
	s.Instruct(pendingOwner, InstructVisible, nil)
	b := s.take()
	s.Instruct(pendingOwner, InstructHide, nil)
	commit(context.Background(), store, b, nil)
	s.finish(b)
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatal("the account showed when an earlier visible write committed after it hid again")
	}
	s.settle(context.Background())
	if v, _ := s.ViewOfHandle("h"); v.Available || !store.accounts[pendingOwner].Hiding {
		t.Fatalf("after everything is stored: view %+v, stored %+v; want hidden", v, store.accounts[pendingOwner])
	}
}

// TestAddOwnedWaitsForTheAddOnItsWay: adding a name one's own add is still
// storing is answered once that add is settled, with its outcome.
func TestAddOwnedWaitsForTheAddOnItsWay(t *testing.T) {
	s, store := newPendingService(t)
	var first, second error
	secondDone := false
	s.AddHandle(pendingOwner, "new", storage.PolicyOpen, func(err error) { first = err })
	b := s.take()
	s.AddHandle(pendingOwner, "new", storage.PolicyOpen, func(err error) { second, secondDone = err, true })
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

// TestRemovalHoldsWhenNotStored: a removal takes effect at once; when its
// write fails it holds (told ErrNotStored) and is written again until it
// is stored, with nothing made after it stored before it.
func TestRemovalHoldsWhenNotStored(t *testing.T) {
	s, store := newPendingService(t)
	var first, second error
	s.RemoveHandle(pendingOwner, "h", func(err error) { first = err })
	if got := s.Handles(pendingOwner); len(got) != 0 {
		t.Fatalf("handles %v while the removal is on its way, want none", got)
	}
	fail(s, store, s.take())
	if !errors.Is(first, ErrNotStored) {
		t.Fatalf("removal with storage down: %v, want ErrNotStored", first)
	}
	s.RemoveHandle(pendingOwner, "h", func(err error) { second = err })
	if !errors.Is(second, ErrUnknownHandle) {
		t.Fatalf("second removal: %v, want ErrUnknownHandle", second)
	}
	// The owner takes the name back: its add is stored after the removal.
	var again error
	s.AddHandle(pendingOwner, "h", storage.PolicyOpen, func(err error) { again = err })
	s.settle(context.Background())
	if again != nil {
		t.Fatalf("adding the name back: %v", again)
	}
	if store.handles["h"] != pendingOwner || !s.Idle() {
		t.Fatalf("after the retry the store holds h for %q (idle %v), want the owner's new handle", store.handles["h"], s.Idle())
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
	s.Subscribe("h", carol, func(_ SubscribeOutcome, e error) { err = e })
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
	s.Subscribe("h", "carol@example.net", func(_ SubscribeOutcome, err error) { subErr = err })
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
		s.Instruct(pendingOwner, InstructAway, func(err error) { refused <- err })
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
	s.Subscribe("h", "carol@example.net", func(_ SubscribeOutcome, err error) { subErr = err })
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
	commit(context.Background(), store, b, nil)
	s.finish(b)
	if synced || s.notes.busy() {
		t.Fatalf("the old resync finished after its connection ended: synced %v, %d jobs queued", synced, len(s.notes.queue))
	}
}

// noticeRecorder is a legacySender that lists what each contact got.
type noticeRecorder struct{ got []string }

func (r *noticeRecorder) Presence(_ context.Context, handle, contact string, v View) error {
	r.got = append(r.got, fmt.Sprintf("%s→%s available=%v", handle, contact, v.Available))
	return nil
}

func (r *noticeRecorder) Unsubscribed(_ context.Context, handle, contact string) error {
	r.got = append(r.got, fmt.Sprintf("%s→%s unsubscribed", handle, contact))
	return nil
}

// TestRemovalNoticesSurviveACrash: the notices owed to a removed handle's
// subscribers are stored with the removal, so a crash before they were
// written still tells the subscribers after the restart; once written,
// they are owed no more.
func TestRemovalNoticesSurviveACrash(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	if err := s.AddHandle(ctx, pendingOwner, "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "h", "carol@example.net"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveHandle(ctx, pendingOwner, "h"); err != nil {
		t.Fatal(err)
	}
	// The process dies before anything was written.
	s2 := newTestService(t, store)
	s2.MarkStale()
	if err := s2.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	rec := &noticeRecorder{}
	if err := s2.Outbox().Flush(ctx, rec); err != nil {
		t.Fatal(err)
	}
	want := "[h→carol@example.net available=false h→carol@example.net unsubscribed]"
	if fmt.Sprint(rec.got) != want {
		t.Fatalf("after the restart carol got %v, want %s", rec.got, want)
	}
	s2.out.written = s2.out.mark
	s2.confirm()
	s2.settle(ctx)
	if len(store.notices) != 0 {
		t.Fatalf("notices still owed once written: %v", store.notices)
	}
}

// TestQuarantineReservedAndAccountLimit: a name another account removed
// is out of reach until the quarantine has passed, but not for the account
// that removed it; reserved names are refused; so is a new account past
// the limit.
func TestQuarantineReservedAndAccountLimit(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := newSync(New(ctx, newMemStore(), Options{Now: clock.Now, Quarantine: time.Hour, Reserved: []string{"admin"}, MaxAccounts: 2}))
	if err != nil {
		t.Fatal(err)
	}
	const bob = "bob@example.org"
	for _, step := range []struct {
		owner, name string
		remove      bool
		want        error
	}{
		{pendingOwner, "admin", false, ErrReserved},
		{pendingOwner, "q", false, nil},
		{pendingOwner, "q", true, nil},
		{bob, "q", false, ErrQuarantined},
		{pendingOwner, "q", false, nil}, // its own name back at once
		{pendingOwner, "q", true, nil},
		{bob, "b", false, nil},
		{"zed@example.org", "z", false, ErrAccountLimit},
	} {
		var err error
		if step.remove {
			err = s.RemoveHandle(ctx, step.owner, step.name)
		} else {
			err = s.AddHandle(ctx, step.owner, step.name)
		}
		if !errors.Is(err, step.want) || (step.want == nil && err != nil) {
			t.Fatalf("%+v: %v", step, err)
		}
	}
	clock.Add(time.Hour)
	if err := s.AddHandle(ctx, bob, "q"); err != nil {
		t.Fatalf("after the quarantine: %v", err)
	}
}
