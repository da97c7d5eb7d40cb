package roster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"presenced/storage"
)

func newTestService(t *testing.T, store storage.Store) *syncService {
	t.Helper()
	s, err := newSync(New(context.Background(), store, Options{}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testClock is a clock that moves only when a test moves it.
type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

// Add moves the clock on by d and returns the new time.
func (c *testClock) Add(d time.Duration) time.Time {
	c.now = c.now.Add(d)
	return c.now
}

// newClockedService returns a Service on store whose clock is the returned
// testClock, starting at 2026-01-01 00:00 UTC.
func newClockedService(t *testing.T, store storage.Store) (*syncService, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := newSync(New(context.Background(), store, Options{Now: clock.Now}))
	if err != nil {
		t.Fatal(err)
	}
	return s, clock
}

// sink is a Sender that counts stanzas.
type sink struct{ presences, unsubscribed int }

func (s *sink) Presence(context.Context, string, string, View) error { s.presences++; return nil }
func (s *sink) Unsubscribed(context.Context, string, string) error   { s.unsubscribed++; return nil }

// TestOneWritePerChange checks claim 1: the flags are stored once per
// account, so one change is one write whatever the number of handles, and
// every subscriber of every handle is told.
func TestOneWritePerChange(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	const owner = "alice@example.org"
	for i := 0; i < DefaultMaxHandles; i++ {
		h := fmt.Sprintf("h%02d", i)
		if err := s.AddHandle(ctx, owner, h); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			if err := s.Subscribe(ctx, h, fmt.Sprintf("c%d@example.net", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.AddHandle(ctx, owner, "one-too-many"); err != ErrHandleLimit {
		t.Fatalf("AddHandle(65th) = %v, want ErrHandleLimit", err)
	}
	before := store.writeCount()
	if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusBusy}); err != nil {
		t.Fatal(err)
	}
	if got := store.writeCount() - before; got != 1 {
		t.Fatalf("one status change made %d writes, want 1", got)
	}
	var out sink
	if err := s.Outbox().Flush(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if out.presences != DefaultMaxHandles*3 {
		t.Fatalf("one status change sent %d presences, want %d", out.presences, DefaultMaxHandles*3)
	}
}

// TestStorageDownChangesNothing: an instruction that cannot be stored is
// refused and leaves the flags as they were, except hiding, which fails
// closed: it holds in memory at once (ErrNotStored) and is stored later.
func TestStorageDownChangesNothing(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	const owner = "alice@example.org"
	if err := s.AddHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Flags(owner)
	store.setDown(true)
	if err := s.Instruct(ctx, owner, InstructAway); err == nil || !errors.Is(err, errDown) || errors.Is(err, ErrNotStored) {
		t.Fatalf("Instruct(away) with storage down = %v, want the storage error", err)
	}
	if after, _ := s.Flags(owner); after != before {
		t.Fatalf("flags changed although storage failed: %+v, was %+v", after, before)
	}
	if err := s.Instruct(ctx, owner, InstructHide); !errors.Is(err, ErrNotStored) || !errors.Is(err, errDown) {
		t.Fatalf("Instruct(hide) with storage down = %v, want ErrNotStored with the storage error", err)
	}
	if after, _ := s.Flags(owner); !after.Hiding {
		t.Fatalf("hiding did not hold while storage failed: %+v", after)
	}
	if err := s.AddHandle(ctx, owner, "h2"); err == nil {
		t.Fatal("AddHandle with storage down succeeded")
	}
	if hs := s.Handles(owner); len(hs) != 1 {
		t.Fatalf("handles changed although storage failed: %v", hs)
	}
	if err := s.Subscribe(ctx, "h", "c@example.net"); err == nil {
		t.Fatal("Subscribe with storage down succeeded")
	}
	if s.IsSubscribed("h", "c@example.net") {
		t.Fatal("subscription recorded although storage failed")
	}
	store.setDown(false)
	if err := s.Instruct(ctx, owner, InstructHide); err != nil {
		t.Fatal(err)
	}
	if !store.accounts[owner].Hiding {
		t.Fatal("hiding not stored once storage worked again")
	}
}

// TestSinceMarksVisibilityChanges: Since moves when the account becomes
// visible or stops being visible, and only then, so hiding and going
// off-line report the same kind of moment.
func TestSinceMarksVisibilityChanges(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedService(t, newMemStore())
	const owner = "alice@example.org"
	if err := s.AddHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration, f func() error) time.Time {
		t.Helper()
		clock.Add(d)
		if err := f(); err != nil {
			t.Fatal(err)
		}
		fl, _ := s.Flags(owner)
		return fl.Since
	}
	online := step(time.Minute, func() error {
		return s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined})
	})
	if !online.Equal(clock.Now()) {
		t.Fatalf("Since after coming on-line = %v, want %v", online, clock.Now())
	}
	hid := step(time.Minute, func() error { return s.Instruct(ctx, owner, InstructHide) })
	if !hid.Equal(clock.Now()) {
		t.Fatalf("Since after hiding = %v, want %v", hid, clock.Now())
	}
	churn := step(time.Minute, func() error {
		return s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusAway})
	})
	if !churn.Equal(hid) {
		t.Fatalf("Since moved while hiding: %v, want %v", churn, hid)
	}
	off := step(time.Minute, func() error { return s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc"}) })
	if !off.Equal(hid) {
		t.Fatalf("Since moved going off-line while hiding: %v, want %v", off, hid)
	}
}

// online makes owner an account with handle h subscribed by contact, on-line
// and visible, with everything sent.
func online(t *testing.T, s *syncService, owner, h, contact string) *sink {
	t.Helper()
	ctx := context.Background()
	if err := s.AddHandle(ctx, owner, h); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, h, contact); err != nil {
		t.Fatal(err)
	}
	if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined}); err != nil {
		t.Fatal(err)
	}
	var out sink
	if err := s.Outbox().Flush(ctx, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestShutdownWithdrawsPendingHide: a change to hiding that the outbox has
// not sent yet must still be withdrawn at shutdown.
func TestShutdownWithdrawsPendingHide(t *testing.T) {
	s := newTestService(t, newMemStore())
	online(t, s, "alice@example.org", "h", "carol@example.net")
	if err := s.Instruct(context.Background(), "alice@example.org", InstructHide); err != nil {
		t.Fatal(err)
	}
	if got := s.Withdrawals(time.Now()); len(got) != 1 || got[0].Handle != "h" || fmt.Sprint(got[0].Contacts) != "[carol@example.net]" || got[0].View.Available {
		t.Fatalf("Withdrawals() = %+v, want carol, who last saw alice available, sent unavailable", got)
	}
}

// TestUnsubscribeWhenStorageFails: the contact's server has ended the
// subscription, so it ends in memory and nothing more is sent.
func TestUnsubscribeWhenStorageFails(t *testing.T) {
	store := newMemStore()
	s := newTestService(t, store)
	online(t, s, "alice@example.org", "h", "carol@example.net")
	store.setDown(true)
	was, err := s.Unsubscribe(context.Background(), "h", "carol@example.net")
	if !was || err == nil {
		t.Fatalf("Unsubscribe = %v, %v; want true and the storage error", was, err)
	}
	if s.IsSubscribed("h", "carol@example.net") {
		t.Fatal("subscription kept in memory")
	}
}

// TestDiscardKeepsRemovals: losing the connection must not lose the notice
// that a handle was removed, since no resend could rebuild it.
func TestDiscardKeepsRemovals(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	online(t, s, "alice@example.org", "h", "carol@example.net")
	if err := s.RemoveHandle(ctx, "alice@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	s.Outbox().Discard()
	// Nothing is sent while disconnected; the next connection's resync
	// sends the notice.
	s.MarkStale()
	if err := s.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	var out sink
	if err := s.Outbox().Flush(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if out.presences != 1 || out.unsubscribed != 1 {
		t.Fatalf("after Discard and a reconnect the removal sent %d presences and %d unsubscribed, want 1 and 1", out.presences, out.unsubscribed)
	}
}

// TestInstructNeedsAccount: nobody becomes an account by an instruction.
func TestInstructNeedsAccount(t *testing.T) {
	s := newTestService(t, newMemStore())
	if err := s.Instruct(context.Background(), "mallory@example.com", InstructHide); err != ErrNoAccount {
		t.Fatalf("Instruct by a stranger = %v, want ErrNoAccount", err)
	}
	if s.IsOwner("mallory@example.com") {
		t.Fatal("a stranger became an account")
	}
}

// TestExplicitStatusSurvivesResync: after a reconnect the owners' servers
// repeat the clients' old presence; an explicit status stays until the
// client changes its own.
func TestExplicitStatusSurvivesResync(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.Instruct(ctx, owner, InstructBusy); err != nil {
		t.Fatal(err)
	}
	probeAnswer := OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined}
	resync := func(s *syncService) {
		t.Helper()
		s.MarkStale()
		if err := s.OwnerPresence(ctx, owner, probeAnswer); err != nil {
			t.Fatal(err)
		}
		if err := s.DropStale(ctx); err != nil {
			t.Fatal(err)
		}
	}
	resync(s)
	if f, _ := s.Flags(owner); f.Status != storage.StatusBusy || !f.Online {
		t.Fatalf("after a reconnect: %+v, want busy and on-line", f)
	}
	// And after a restart, from storage.
	s2 := newTestService(t, store)
	resync(s2)
	if f, _ := s2.Flags(owner); f.Status != storage.StatusBusy || !f.Online {
		t.Fatalf("after a restart: %+v, want busy and on-line", f)
	}
	if err := s2.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusAway}); err != nil {
		t.Fatal(err)
	}
	if f, _ := s2.Flags(owner); f.Status != storage.StatusAway || f.Explicit {
		t.Fatalf("after the client changed its status: %+v, want away, not explicit", f)
	}
}

// failing is a Sender whose connection is gone.
type failing struct{}

func (failing) Presence(context.Context, string, string, View) error {
	return errors.New("not connected")
}
func (failing) Unsubscribed(context.Context, string, string) error {
	return errors.New("not connected")
}

// TestRemovalNoticeSurvivesFailedSend: a removal notice that could not be
// sent is kept and goes out after the next connection; at shutdown it can
// be taken for a last try.
func TestRemovalNoticeSurvivesFailedSend(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	online(t, s, "alice@example.org", "h", "carol@example.net")
	if err := s.RemoveHandle(ctx, "alice@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.Outbox().Flush(ctx, failing{}); err == nil {
		t.Fatal("Flush through a failing sender succeeded")
	}
	if got := s.Withdrawals(time.Now()); len(got) != 1 || got[0].Handle != "h" || fmt.Sprint(got[0].Contacts) != "[carol@example.net]" || !got[0].Removed {
		t.Fatalf("Withdrawals() = %+v, want the removal notice for carol", got)
	}
	if got := s.Withdrawals(time.Now()); len(got) != 0 {
		t.Fatalf("a second Withdrawals() = %+v, want the notice taken by the first", got)
	}
	// Once more, now reconnecting instead of shutting down.
	s2 := newTestService(t, newMemStore())
	online(t, s2, "alice@example.org", "h", "carol@example.net")
	if err := s2.RemoveHandle(ctx, "alice@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	_ = s2.Outbox().Flush(ctx, failing{})
	s2.MarkStale()
	if err := s2.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	var out sink
	if err := s2.Outbox().Flush(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if out.unsubscribed != 1 {
		t.Fatalf("after reconnecting the removal sent %d unsubscribed, want 1", out.unsubscribed)
	}
}

// TestExplicitStatusKeptWhileClientRepeats: a client that reconnects with
// the same status, or answers a probe late, does not end an explicit
// status; a new status does.
func TestExplicitStatusKeptWhileClientRepeats(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.Instruct(ctx, owner, InstructBusy); err != nil {
		t.Fatal(err)
	}
	for _, p := range []OwnerPresence{
		{Resource: "pc"}, // log-off
		{Resource: "pc", Available: true, Status: storage.StatusUndefined}, // back, same status
		{Resource: "phone", Available: true, Status: storage.StatusUndefined, Priority: -1},
	} {
		if err := s.OwnerPresence(ctx, owner, p); err != nil {
			t.Fatal(err)
		}
		if f, _ := s.Flags(owner); f.Status != storage.StatusBusy || !f.Explicit {
			t.Fatalf("after %+v: %+v, want explicit busy", p, f)
		}
	}
	if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusAway}); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Flags(owner); f.Status != storage.StatusAway || f.Explicit {
		t.Fatalf("after the client went away: %+v", f)
	}
}

// TestResyncHoldsOnlyShowing: during a resync, a pass that would show an
// account waits for DropStale, but hiding goes out at once.
func TestResyncHoldsOnlyShowing(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Outbox().Flush(ctx, &sink{})
	s.MarkStale()
	if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusAway}); err != nil {
		t.Fatal(err)
	}
	if n := s.Outbox().Len(); n != 0 {
		t.Fatalf("a showing pass was queued during the resync (%d jobs)", n)
	}
	if err := s.Instruct(ctx, owner, InstructHide); err != nil {
		t.Fatal(err)
	}
	if n := s.Outbox().Len(); n != 1 {
		t.Fatalf("hiding during the resync queued %d jobs, want 1", n)
	}
}

// goOffline runs GoOffline(at) and checks that owner is stored off-line
// since at.
func goOffline(t *testing.T, s *syncService, owner string, at time.Time) {
	t.Helper()
	if err := s.GoOffline(context.Background(), at, true); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Flags(owner); f.Online || !f.Since.Equal(at) {
		t.Fatalf("after GoOffline(%v): %+v, want off-line since then", at, f)
	}
}

// stampRecorder is a Sender that keeps every presence sent, in order.
type stampRecorder struct{ sent []View }

func (r *stampRecorder) Presence(_ context.Context, _, _ string, v View) error {
	r.sent = append(r.sent, v)
	return nil
}
func (r *stampRecorder) Unsubscribed(context.Context, string, string) error { return nil }

// TestWithdrawingKeepsTheStamp: while the account hides or is off-line,
// every unavailable presence that withdraws a handle (removal, unsubscribe,
// shutdown) carries the moment it stopped being visible, never a fresh one,
// which would show that the owner is active. A visible account is withdrawn
// as of the moment given.
func TestWithdrawingKeepsTheStamp(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedService(t, newMemStore())
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.Subscribe(ctx, "h", "dave@example.net"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHandle(ctx, owner, "h2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "h2", "carol@example.net"); err != nil {
		t.Fatal(err)
	}
	hidAt := clock.Add(time.Hour)
	if err := s.Instruct(ctx, owner, InstructHide); err != nil {
		t.Fatal(err)
	}
	var rec stampRecorder
	if err := s.Outbox().Flush(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	if v := s.GoneView("h", "c"); v.Available || !v.Since.Equal(hidAt) {
		t.Fatalf("GoneView while hiding = %+v, want unavailable since %v", v, hidAt)
	}
	rec.sent = nil
	if err := s.RemoveHandle(ctx, owner, "h2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Outbox().Flush(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) != 1 || rec.sent[0].Available || !rec.sent[0].Since.Equal(hidAt) {
		t.Fatalf("removal while hiding sent %+v, want one unavailable since %v", rec.sent, hidAt)
	}
	// After a reconnect nobody's view is known: shutdown withdraws every
	// subscriber, still with the moment of hiding.
	s.MarkStale()
	for _, w := range s.Withdrawals(clock.Now()) {
		if w.View.Available || !w.View.Since.Equal(hidAt) {
			t.Fatalf("Withdrawals while hiding = %+v, want unavailable since %v", w, hidAt)
		}
	}
	// A visible account is withdrawn as of the moment given, which
	// GoOffline then stores.
	if err := s.Instruct(ctx, owner, InstructVisible); err != nil {
		t.Fatal(err)
	}
	at := clock.Add(time.Minute)
	ws := s.Withdrawals(at)
	if len(ws) != 1 || ws[0].View.Available || !ws[0].View.Since.Equal(at) {
		t.Fatalf("Withdrawals of a visible account = %+v, want unavailable since %v", ws, at)
	}
	goOffline(t, s, owner, at)
}

// TestAddOwnHandleChangesNothing: adding a handle one already holds, in
// any case, is reported as such and writes nothing.
func TestAddOwnHandleChangesNothing(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	if err := s.AddHandle(ctx, "alice@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	before := store.writeCount()
	if err := s.AddHandle(ctx, "alice@example.org", "h"); err != ErrHandleOwned {
		t.Fatalf("AddHandle(own handle) = %v, want ErrHandleOwned", err)
	}
	if err := s.AddHandle(ctx, "bob@example.org", "h"); err != ErrHandleTaken {
		t.Fatalf("AddHandle(someone else's) = %v, want ErrHandleTaken", err)
	}
	if n := store.writeCount() - before; n != 0 {
		t.Fatalf("re-adding made %d writes, want 0", n)
	}
}

// TestNewAccountKeepsItsStampAcrossRestart: an account that never came
// on-line is off-line since it was created, in memory and in storage, so a
// restart sends its subscribers the stamp they already have.
func TestNewAccountKeepsItsStampAcrossRestart(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock := newClockedService(t, store)
	if err := s.AddHandle(ctx, "alice@example.org", "h"); err != nil {
		t.Fatal(err)
	}
	created := clock.Now()
	if err := s.Subscribe(ctx, "h", "carol@example.net"); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	s2, err := newSync(New(ctx, store, Options{Now: clock.Now}))
	if err != nil {
		t.Fatal(err)
	}
	s2.MarkStale()
	if err := s2.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	var rec stampRecorder
	if err := s2.Outbox().Flush(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) != 1 || rec.sent[0].Available || !rec.sent[0].Since.Equal(created) {
		t.Fatalf("after a restart the subscriber got %+v, want unavailable since %v", rec.sent, created)
	}
}

// TestStopFreezesChanges: once Stop is called, at shutdown, no change can
// come between the withdrawals and the off-line flags GoOffline stores, so
// a removal in that window cannot lose its notice; an unsubscription,
// which the contact's server has made already, still ends, and so does
// hiding, which only ever shows less (after GoOffline an account is
// off-line, so hiding then moves no stamp).
func TestStopFreezesChanges(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedService(t, newMemStore())
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.Subscribe(ctx, "h", "dave@example.net"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Flags(owner)
	s.Freeze()
	at := clock.Add(time.Minute)
	for name, err := range map[string]error{
		"Instruct":      s.Instruct(ctx, owner, InstructAway),
		"OwnerPresence": s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc"}),
		"AddHandle":     s.AddHandle(ctx, owner, "h2"),
		"RemoveHandle":  s.RemoveHandle(ctx, owner, "h"),
		"Subscribe":     s.Subscribe(ctx, "h", "erin@example.com"),
	} {
		if err != ErrStopping {
			t.Errorf("%s after Stop = %v, want ErrStopping", name, err)
		}
	}
	if after, _ := s.Flags(owner); after != before {
		t.Fatalf("flags changed after Stop: %+v, was %+v", after, before)
	}
	if err := s.Instruct(ctx, owner, InstructHide); err != nil {
		t.Fatalf("hiding after Stop = %v, want it taken", err)
	}
	if after, _ := s.Flags(owner); !after.Hiding {
		t.Fatalf("hiding after Stop did not hold: %+v", after)
	}
	if fmt.Sprint(s.Handles(owner)) != "[h]" {
		t.Fatalf("handles changed after Stop: %v", s.Handles(owner))
	}
	if was, err := s.Unsubscribe(ctx, "h", "dave@example.net"); !was || err != nil {
		t.Fatalf("Unsubscribe after Stop = %v, %v; want true, nil", was, err)
	}
	ws := s.Withdrawals(at)
	if len(ws) != 1 || fmt.Sprint(ws[0].Contacts) != "[carol@example.net]" || !ws[0].View.Since.Equal(at) {
		t.Fatalf("Withdrawals after Stop = %+v, want carol withdrawn as of %v", ws, at)
	}
	goOffline(t, s, owner, at)
}

// TestStaleResourceIsNotKnown: after a reconnect, a resource not confirmed
// yet counts as new, so the client that comes back is shown the component.
func TestStaleResourceIsNotKnown(t *testing.T) {
	s := newTestService(t, newMemStore())
	online(t, s, "alice@example.org", "h", "carol@example.net")
	if !s.HasResource("alice@example.org", "pc") {
		t.Fatal("HasResource(pc) = false for an available resource")
	}
	s.MarkStale()
	if s.HasResource("alice@example.org", "pc") {
		t.Fatal("HasResource(pc) = true for a resource not confirmed since the reconnect")
	}
}

// TestWithdrawalsSkipResubscribed: a removal notice still due at shutdown
// is not sent to a contact that subscribed again to the handle, added anew
// meanwhile: an unsubscribed would end the new subscription.
func TestWithdrawalsSkipResubscribed(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	const owner = "alice@example.org"
	online(t, s, owner, "h", "carol@example.net")
	if err := s.RemoveHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "h", "carol@example.net"); err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Withdrawals(time.Now()) {
		if w.Removed {
			t.Fatalf("Withdrawals() = %+v: a removal notice for a contact that subscribed again", w)
		}
	}
}
