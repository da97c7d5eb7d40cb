package roster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"presenced/storage"
)

// TestHideFromAResourceOverTheLimit: a presence that asks for invisibility
// from a resource over the limit hides the account; its resource does not
// count.
func TestHideFromAResourceOverTheLimit(t *testing.T) {
	s, _ := newPendingService(t)
	for i := 0; i < DefaultMaxResources; i++ {
		s.OwnerPresence(pendingOwner, OwnerPresence{Resource: fmt.Sprint("r", i), Available: true, Status: storage.StatusUndefined})
	}
	s.settle(context.Background())
	if v, _ := s.ViewOfHandle("h"); !v.Available {
		t.Fatal("setup: not visible")
	}
	s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "r16", Available: true, Status: storage.StatusUndefined, Hide: true})
	s.settle(context.Background())
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatal("an <invisible/> presence from a resource over the limit was dropped; the account still shows")
	}
}

// TestEngineTakesWorkWhileStorageFails: however many changes wait to be
// written again while storage is down, the engine goes on taking work, so
// an owner's hide is handled at once (a stranger's subscribe and
// unsubscribe pairs on a public handle could once fill the queue of
// changes to write again and stop the engine).
func TestEngineTakesWorkWhileStorageFails(t *testing.T) {
	store := newMemStore()
	s, err := New(t.Context(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Two accounts; bob will try to hide.
	s.AddHandle(pendingOwner, "ask", storage.PolicyAsk, nil)
	s.AddHandle("bob@example.org", "bobh", storage.PolicyOpen, nil)
	s.settle(t.Context())
	s.accounts["bob@example.org"].resources["pc"] = &resource{status: storage.StatusUndefined}
	s.OwnerPresence("bob@example.org", OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined})
	s.settle(t.Context())
	if v, _ := s.ViewOfHandle("bobh"); !v.Available {
		t.Fatal("setup: bob not visible")
	}
	store.setDown(true)
	startEngine(t, s)
	// One stranger, distinct contacts so every subscribe stores a request:
	// subscribe + unsubscribe pairs, then plain subscribes.
	go func() {
		for i := 0; i < maxBatch+maxPending+eventQueue+100; i++ {
			c := fmt.Sprintf("m%d@evil.example", i)
			s.Do(func() {
				if i < maxBatch+10 {
					s.Subscribe("bobh", c, nil)
					s.Unsubscribe("bobh", c, nil)
				} else {
					s.Subscribe("bobh", c, nil) // an open handle: public
				}
			})
		}
	}()
	time.Sleep(2 * time.Second)
	hid := make(chan struct{})
	go s.Do(func() { s.Instruct("bob@example.org", InstructHide, nil); close(hid) })
	select {
	case <-hid:
	case <-time.After(3 * time.Second):
		store.setDown(false) // let the cleanup stop the engine
		t.Fatal("with storage down, bob's hide was not handled within 3 s: the engine stopped taking work")
	}
}

// TestResubscribeKeepsTheCancel: subscribe (S1, in flight), unsubscribe
// (U), subscribe (S2): S1 stays cancelled, so when [U, S2] fails and U is
// written again, memory and storage agree that there is no subscription.
func TestResubscribeKeepsTheCancel(t *testing.T) {
	s, store := newPendingService(t) // "h" is open
	ctx := context.Background()
	const c = "carol@example.net"
	s.Subscribe("h", c, nil)
	x := s.take()
	s.Unsubscribe("h", c, nil)
	s.Subscribe("h", c, nil)
	commit(ctx, store, x, nil)
	s.finish(x)
	fail(s, store, s.take()) // [U, S2] fails
	s.settle(ctx)            // U written again
	stored := store.subs[[2]string{"h", c}]
	if s.IsSubscribed("h", c) != stored {
		t.Fatalf("memory subscribed=%v, storage subscribed=%v", s.IsSubscribed("h", c), stored)
	}
}

// TestRequestAfterAWithdrawal: subscribe, unsubscribe, subscribe to an ask
// handle within one commit: the last request is pending (the one
// withdrawn before it does not count).
func TestRequestAfterAWithdrawal(t *testing.T) {
	store := newMemStore()
	s, _ := New(context.Background(), store, Options{})
	s.AddHandle(pendingOwner, "ask", storage.PolicyAsk, nil)
	s.settle(context.Background())
	const c = "carol@example.net"
	s.Subscribe("ask", c, nil)
	x := s.take()
	s.Unsubscribe("ask", c, nil)
	var out SubscribeOutcome
	s.Subscribe("ask", c, func(o SubscribeOutcome, err error) { out = o })
	commit(context.Background(), store, x, nil)
	s.finish(x)
	s.settle(context.Background())
	if len(s.Requests(pendingOwner)) != 1 {
		t.Fatalf("the request made after the withdrawal is not pending (outcome %v, requests %v)", out, s.Requests(pendingOwner))
	}
}

// TestNoShowBeforeTheResyncSettles: a write that shows the account, which
// commits while the connection is down, shows nothing during the next
// connection's resync, before the owners answered the probe.
func TestNoShowBeforeTheResyncSettles(t *testing.T) {
	store := newMemStore()
	s0, err := New(context.Background(), store, Options{})
	s, err := newSync(s0, err)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.AddHandle(ctx, pendingOwner, "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "h", "carol@example.net"); err != nil {
		t.Fatal(err)
	}
	s.MarkStale()
	if err := s.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	var rec noticeRecorder
	s.Outbox().Flush(ctx, &rec)
	// The owner comes on-line; its write is in flight when the link drops.
	s.Service.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined})
	b := s.take()
	s.Discard()
	commit(ctx, store, b, nil)
	s.finish(b)
	// Reconnect: the resync has begun, nobody has answered the probe yet.
	s.MarkStale()
	rec.got = nil
	for s.notes.busy() {
		s.pump()
	}
	s.out.deliver(ctx, &rec)
	for _, g := range rec.got {
		if strings.Contains(g, "available=true") {
			t.Fatalf("%v sent before DropStale", rec.got)
		}
	}
}

// TestHideTakenWhileStopping: once Shutdown began (while it waits for slow
// storage, up to the 30 s transaction deadline), hiding by any route is
// still taken.
func TestHideTakenWhileStopping(t *testing.T) {
	s, _ := newPendingService(t)
	s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined})
	s.settle(context.Background())
	s.stopping = true // as Shutdown sets it
	var err error
	s.Instruct(pendingOwner, InstructHide, func(e error) { err = e })
	perr := s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined, Hide: true})
	if v, _ := s.ViewOfHandle("h"); v.Available {
		t.Fatalf("hide while stopping refused (Instruct: %v, presence: %v); the account still shows", err, perr)
	}
}

// TestMootRemovalsAreNotKept: while storage fails, a stranger's subscribe
// and unsubscribe pairs on a public handle leave nothing to be written
// again: each removal cancelled a write that failed, so it has nothing to
// remove.
func TestMootRemovalsAreNotKept(t *testing.T) {
	s, store := newPendingService(t) // "h" is open
	store.setDown(true)
	for i := 0; i < 2*maxBatch; i++ {
		c := fmt.Sprintf("m%d@evil.example", i)
		s.Subscribe("h", c, nil)
		s.Unsubscribe("h", c, nil)
	}
	s.settle(context.Background())
	s.settle(context.Background())
	if n := len(s.commits.again); n != 0 {
		t.Fatalf("%d changes kept to be written again, want none", n)
	}
	if n := len(s.pendingSubs); n != 0 {
		t.Fatalf("%d subscriptions still tracked as on their way", n)
	}
}

// TestRepeatedSubscribeWritesOnce: a contact repeating its subscribe to an
// open handle while the first is being stored gets one write and one
// approval, however often it repeats.
func TestRepeatedSubscribeWritesOnce(t *testing.T) {
	s, _ := newPendingService(t) // "h" is open
	approved := 0
	for i := 0; i < 100; i++ {
		s.Subscribe("h", "carol@example.net", func(o SubscribeOutcome, err error) {
			if o == Approved {
				approved++
			}
		})
	}
	if n := len(s.commits.pending); n != 1 {
		t.Fatalf("%d writes pending for one contact's repeated subscribe, want 1", n)
	}
	s.settle(context.Background())
	if approved != 1 || s.handles["h"].storing != 0 {
		t.Fatalf("%d approvals (storing %d), want 1 (0)", approved, s.handles["h"].storing)
	}
}

// TestFlagsStepsBounded: presences while a flags write is on its way merge
// into one step, instructions past the bound are refused, and hiding past
// it still holds.
func TestFlagsStepsBounded(t *testing.T) {
	s, _ := newPendingService(t)
	s.Instruct(pendingOwner, InstructAway, nil)
	b := s.take() // a write on its way
	for i := 0; i < 1000; i++ {
		if err := s.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: i%2 == 0, Status: storage.StatusUndefined}); err != nil {
			t.Fatal(err)
		}
	}
	var busy, hid error
	for i := 0; i < maxSteps+10; i++ {
		s.Instruct(pendingOwner, InstructBusy, func(err error) { busy = err })
	}
	s.Instruct(pendingOwner, InstructHide, func(err error) { hid = err })
	if n := len(s.accounts[pendingOwner].flagsOp.steps); n > maxSteps+1 {
		t.Fatalf("%d flags steps waiting, want at most %d", n, maxSteps+1)
	}
	if !errors.Is(busy, ErrBusy) {
		t.Fatalf("an instruction past the bound: %v, want ErrBusy", busy)
	}
	if !errors.Is(hid, ErrNotStored) {
		t.Fatalf("hiding past the bound: %v, want it held, not stored yet", hid)
	}
	commit(context.Background(), newMemStore(), b, nil)
	s.finish(b)
	s.settle(context.Background())
	if f, _ := s.Flags(pendingOwner); !f.Hiding {
		t.Fatalf("hiding past the bound did not hold: %+v", f)
	}
}

// TestApprovalKeepsTheRequestUntilStored: while an approval is being
// stored the request can be decided no more, and the contact asking again
// makes no second request.
func TestApprovalKeepsTheRequestUntilStored(t *testing.T) {
	store := newMemStore()
	s, err := New(context.Background(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const c = "carol@example.net"
	s.AddHandle(pendingOwner, "ask", storage.PolicyAsk, nil)
	s.settle(context.Background())
	s.Subscribe("ask", c, nil)
	s.settle(context.Background())
	var approved, again error
	s.Approve(pendingOwner, "ask", c, func(err error) { approved = err })
	s.Approve(pendingOwner, "ask", c, func(err error) { again = err })
	var out SubscribeOutcome
	s.Subscribe("ask", c, func(o SubscribeOutcome, err error) { out = o })
	s.settle(context.Background())
	if approved != nil || !errors.Is(again, ErrNotPending) || out != Ignored {
		t.Fatalf("approve %v, approve again %v, subscribe meanwhile %v; want nil, ErrNotPending, Ignored", approved, again, out)
	}
	if !s.IsSubscribed("ask", c) || len(s.Requests(pendingOwner)) != 0 || len(store.requests) != 0 {
		t.Fatalf("subscribed %v, requests %v (stored %v); want subscribed and none", s.IsSubscribed("ask", c), s.Requests(pendingOwner), store.requests)
	}
}

// logCount is a slog.Handler that counts the records of each message, by
// level.
type logCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCount) WithGroup(string) slog.Handler            { return l }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Level.String()+" "+r.Message]++
	return nil
}

// TestFlagsNotStoredLoggedOnceAMinute: while storage is down, the flags
// writes that fail are logged as errors once a minute, not once each.
func TestFlagsNotStoredLoggedOnceAMinute(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	logs := &logCount{n: make(map[string]int)}
	s, clock, _ := ctlSetup(t, store, Options{Log: slog.New(logs)})
	const msg = "ERROR flags not stored; kept in memory and written again later"
	store.setDown(true)
	for _, in := range []Instruction{InstructAway, InstructBusy, InstructAway} {
		_ = s.Instruct(ctx, pendingOwner, in)
	}
	if n := logs.n[msg]; n != 1 {
		t.Fatalf("three failed flags writes within a minute logged %d times, want once", n)
	}
	clock.Add(time.Minute)
	_ = s.Instruct(ctx, pendingOwner, InstructBusy)
	if n := logs.n[msg]; n != 2 {
		t.Fatalf("a failed flags write a minute later: logged %d times in all, want twice", n)
	}
}
