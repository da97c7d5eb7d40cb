package roster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"presenced/storage"
)

// The owner's control (control.go): blocking a contact, hiding a handle,
// kicking a subscriber.

// Block blocks contact and returns the outcome of its write.
func (s *syncService) Block(ctx context.Context, owner, contact string) error {
	return s.wait(ctx, func(done func(error)) { s.Service.Block(owner, contact, done) })
}

// Unblock lifts the block and returns the outcome of its write.
func (s *syncService) Unblock(ctx context.Context, owner, contact string) error {
	return s.wait(ctx, func(done func(error)) { s.Service.Unblock(owner, contact, done) })
}

// SetVisibility hides or shows the handles named.
func (s *syncService) SetVisibility(ctx context.Context, owner string, names []string, hidden bool) error {
	return s.wait(ctx, func(done func(error)) { s.Service.SetVisibility(owner, names, hidden, done) })
}

// Kick returns what Kick returns and, when it took the subscription, the
// outcome of its write.
func (s *syncService) Kick(ctx context.Context, owner, h, contact string) (View, error) {
	var v View
	err := s.wait(ctx, func(done func(error)) {
		var err error
		if v, err = s.Service.Kick(owner, h, contact, done); err != nil {
			done(err)
		}
	})
	return v, err
}

// stanza is one stanza a ctlRecorder received.
type stanza struct {
	handle, contact string
	v               View
	unsubscribed    bool
}

func (st stanza) String() string {
	if st.unsubscribed {
		return fmt.Sprintf("%s→%s unsubscribed", st.handle, st.contact)
	}
	if st.v.Available {
		return fmt.Sprintf("%s→%s available %s", st.handle, st.contact, st.v.Status)
	}
	return fmt.Sprintf("%s→%s unavailable since %s", st.handle, st.contact, st.v.Since.Format("15:04"))
}

// ctlRecorder is a legacySender that keeps every stanza, in order.
type ctlRecorder struct{ got []stanza }

func (r *ctlRecorder) Presence(_ context.Context, handle, contact string, v View) error {
	r.got = append(r.got, stanza{handle: handle, contact: contact, v: v})
	return nil
}

func (r *ctlRecorder) Unsubscribed(_ context.Context, handle, contact string) error {
	r.got = append(r.got, stanza{handle: handle, contact: contact, unsubscribed: true})
	return nil
}

// to returns the stanzas contact received.
func (r *ctlRecorder) to(contact string) []stanza {
	var out []stanza
	for _, st := range r.got {
		if st.contact == contact {
			out = append(out, st)
		}
	}
	return out
}

func (r *ctlRecorder) reset() { r.got = nil }

const (
	carolJID = "carol@example.net"
	daveJID  = "dave@example.net"
	erinJID  = "erin@example.com"
	bobJID   = "bob@example.org"
)

// ctlSetup is alice (pendingOwner) with the open handle h, subscribed by
// carol and dave, visible, and everything sent; the clock stands at
// 01:00.
func ctlSetup(t *testing.T, store *memStore, opts Options) (*syncService, *testClock, *ctlRecorder) {
	t.Helper()
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	opts.Now = clock.Now
	s, err := newSync(New(ctx, store, opts))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddHandle(ctx, pendingOwner, "h"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{carolJID, daveJID} {
		if err := s.Subscribe(ctx, "h", c); err != nil {
			t.Fatal(err)
		}
		s.Probe("h", c)
	}
	clock.Add(time.Hour)
	logOn(t, s)
	rec := &ctlRecorder{}
	flushTo(t, s, rec)
	rec.reset()
	return s, clock, rec
}

// blockNow makes alice block contact a minute later by clock, failing the
// test if that fails, and returns the moment of the block.
func blockNow(t *testing.T, s *syncService, clock *testClock, contact string) time.Time {
	t.Helper()
	at := clock.Add(time.Minute)
	if err := s.Block(context.Background(), pendingOwner, contact); err != nil {
		t.Fatal(err)
	}
	return at
}

func logOn(t *testing.T, s *syncService) {
	t.Helper()
	if err := s.OwnerPresence(context.Background(), pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined}); err != nil {
		t.Fatal(err)
	}
}

func logOff(t *testing.T, s *syncService) {
	t.Helper()
	if err := s.OwnerPresence(context.Background(), pendingOwner, OwnerPresence{Resource: "pc"}); err != nil {
		t.Fatal(err)
	}
}

func flushTo(t *testing.T, s *syncService, rec *ctlRecorder) {
	t.Helper()
	if err := s.Outbox().Flush(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
}

// unavailable is the one stanza of an unavailable presence since at.
func unavailable(h, c string, at time.Time) string {
	return stanza{handle: h, contact: c, v: View{Since: at}}.String()
}

func wantStanzas(t *testing.T, what string, got []stanza, want ...string) {
	t.Helper()
	var g []string
	for _, st := range got {
		g = append(g, st.String())
	}
	if !slices.Equal(g, want) {
		t.Fatalf("%s: got %q, want %q", what, g, want)
	}
}

// restartFrom makes a new Service from store, as after a crash or a
// restart, and resyncs it with nobody answering the probes.
func restartFrom(t *testing.T, store *memStore, clock *testClock, opts Options) *syncService {
	t.Helper()
	ctx := context.Background()
	opts.Now = clock.Now
	s, err := newSync(New(ctx, store, opts))
	if err != nil {
		t.Fatal(err)
	}
	s.MarkStale()
	if err := s.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBlockSendsUnavailableAtOnce: blocking a contact of a visible account
// sends it unavailable, stamped now, at once (before the block is stored);
// the block is stored with that stamp.
func TestBlockSendsUnavailableAtOnce(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	blockAt := clock.Add(time.Minute)
	var stored error
	called := false
	s.Service.Block(pendingOwner, carolJID, func(err error) { stored, called = err, true })
	if called {
		t.Fatal("Block reported before its write was made")
	}
	if !s.IsBlocked(pendingOwner, carolJID) {
		t.Fatal("the block waits for its write")
	}
	if err := s.out.deliver(ctx, rec); err != nil {
		t.Fatal(err)
	}
	wantStanzas(t, "sent at once", rec.got, unavailable("h", carolJID, blockAt))
	clock.Add(time.Minute)
	s.settle(ctx)
	if !called || stored != nil {
		t.Fatalf("Block stored: called %v, err %v", called, stored)
	}
	if got := store.blocked[[2]string{pendingOwner, carolJID}]; !got.Equal(blockAt) {
		t.Fatalf("stored block since %v, want %v", got, blockAt)
	}
	if v, _ := s.ViewFor("h", carolJID); v != (View{Since: blockAt}) {
		t.Fatalf("ViewFor(carol) = %+v, want unavailable since %v", v, blockAt)
	}
	if v, _ := s.ViewFor("h", daveJID); !v.Available {
		t.Fatalf("ViewFor(dave) = %+v, want available", v)
	}
	if v, _ := s.ViewOfHandle("h"); !v.Available {
		t.Fatalf("ViewOfHandle = %+v, want available: only carol is blocked", v)
	}
	if got := s.Blocked(pendingOwner); fmt.Sprint(got) != "["+carolJID+"]" {
		t.Fatalf("Blocked = %v", got)
	}
	// Blocking again changes nothing and sends nothing.
	rec.reset()
	if err := s.Block(ctx, pendingOwner, carolJID); err != ErrAlreadyBlocked {
		t.Fatalf("blocking again = %v, want ErrAlreadyBlocked", err)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "blocking again", rec.got)
	if got := store.blocked[[2]string{pendingOwner, carolJID}]; !got.Equal(blockAt) {
		t.Fatalf("blocking again moved the stored stamp to %v, want %v", got, blockAt)
	}
}

// TestBlockWhileOfflineSendsNothing: blocking a contact that already has
// the account's off-line presence sends nothing, not even the same
// presence again (that would show the owner did something), and the
// contact is left with that stamp.
func TestBlockWhileOfflineSendsNothing(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	offAt := clock.Add(time.Minute)
	logOff(t, s)
	flushTo(t, s, rec)
	wantStanzas(t, "going off-line", rec.to(carolJID), unavailable("h", carolJID, offAt))
	rec.reset()
	clock.Add(time.Hour)
	s.Service.Block(pendingOwner, carolJID, nil)
	if len(s.out.held) != 0 {
		t.Fatalf("blocking a contact that has the off-line presence sent %v", s.out.held)
	}
	s.settle(ctx)
	flushTo(t, s, rec)
	wantStanzas(t, "after the block", rec.got)
	if got := store.blocked[[2]string{pendingOwner, carolJID}]; !got.Equal(offAt) {
		t.Fatalf("stored block since %v, want the account's own %v", got, offAt)
	}
	// The owner comes back: dave sees it, carol does not.
	clock.Add(time.Minute)
	logOn(t, s)
	flushTo(t, s, rec)
	if got := rec.to(carolJID); len(got) != 0 {
		t.Fatalf("blocked carol got %v", got)
	}
	if got := rec.to(daveJID); len(got) != 1 || !got[0].v.Available {
		t.Fatalf("dave got %v, want alice available", got)
	}
	rec.reset()
	if !s.Probe("h", carolJID) {
		t.Fatal("Probe by blocked carol = false: she is still a subscriber")
	}
	flushTo(t, s, rec)
	wantStanzas(t, "carol's probe", rec.got, unavailable("h", carolJID, offAt))
}

// TestBlockedContactSeesNothingLater: whatever the owner does after the
// block, the blocked contact gets nothing, and its probes are answered
// with the block's stamp; the other subscribers follow the account.
func TestBlockedContactSeesNothingLater(t *testing.T) {
	ctx := context.Background()
	s, clock, rec := ctlSetup(t, newMemStore(), Options{})
	blockAt := blockNow(t, s, clock, carolJID)
	flushTo(t, s, rec)
	wantStanzas(t, "the block", rec.got, unavailable("h", carolJID, blockAt))
	rec.reset()
	for _, step := range []func(){
		func() { s.Instruct(ctx, pendingOwner, InstructAway) },
		func() { logOff(t, s) },
		func() { logOn(t, s) },
		func() { s.Instruct(ctx, pendingOwner, InstructHide) },
		func() { s.Instruct(ctx, pendingOwner, InstructVisible) },
	} {
		clock.Add(time.Minute)
		step()
		flushTo(t, s, rec)
	}
	if got := rec.to(carolJID); len(got) != 0 {
		t.Fatalf("blocked carol got %v", got)
	}
	if got := rec.to(daveJID); len(got) != 5 {
		t.Fatalf("dave got %v, want 5 changes", got)
	}
	rec.reset()
	s.Probe("h", carolJID)
	flushTo(t, s, rec)
	wantStanzas(t, "carol's probe", rec.got, unavailable("h", carolJID, blockAt))
	// A new handle: carol subscribes, and sees it off-line since the block.
	if err := s.AddHandle(ctx, pendingOwner, "h2"); err != nil {
		t.Fatal(err)
	}
	rec.reset()
	if out, err := s.SubscribeOutcome(ctx, "h2", carolJID); out != Approved || err != nil {
		t.Fatalf("blocked carol subscribing to an open handle: %v, %v; want Approved", out, err)
	}
	s.Probe("h2", carolJID)
	flushTo(t, s, rec)
	wantStanzas(t, "carol's probe of h2", rec.got, unavailable("h2", carolJID, blockAt))
}

// TestWithdrawalsOfWithheldSubscribers: at shutdown, a withheld
// subscriber already sent its unavailable presence is not withdrawn
// again; after a reconnect it is, with its own stamp, apart from the
// others.
func TestWithdrawalsOfWithheldSubscribers(t *testing.T) {
	s, clock, rec := ctlSetup(t, newMemStore(), Options{})
	blockAt := blockNow(t, s, clock, carolJID)
	flushTo(t, s, rec)
	at := clock.Add(time.Minute)
	ws := s.Withdrawals(at)
	if len(ws) != 1 || fmt.Sprint(ws[0].Contacts) != "["+daveJID+"]" || ws[0].View != (View{Since: at}) {
		t.Fatalf("Withdrawals = %+v, want dave alone, as of %v", ws, at)
	}
	s.MarkStale()
	ws = s.Withdrawals(at)
	got := map[string]View{}
	for _, w := range ws {
		for _, c := range w.Contacts {
			got[c] = w.View
		}
	}
	if len(ws) != 2 || got[carolJID] != (View{Since: blockAt}) || got[daveJID] != (View{Since: at}) {
		t.Fatalf("Withdrawals after a reconnect = %+v, want carol since %v and dave since %v", ws, blockAt, at)
	}
}

// TestUnblockSendsTheCurrentView: an unblock takes effect once stored,
// and the contact is then sent what the others see; if that is the very
// presence it was left with, nothing.
func TestUnblockSendsTheCurrentView(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	clock.Add(time.Minute)
	if err := s.Block(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if err := s.Instruct(ctx, pendingOwner, InstructBusy); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	rec.reset()
	var unblocked error
	called := false
	s.Service.Unblock(pendingOwner, carolJID, func(err error) { unblocked, called = err, true })
	if !s.IsBlocked(pendingOwner, carolJID) || called {
		t.Fatal("the unblock took effect before it was stored")
	}
	s.settle(ctx)
	if !called || unblocked != nil || s.IsBlocked(pendingOwner, carolJID) || len(s.Blocked(pendingOwner)) != 0 {
		t.Fatalf("Unblock: called %v, err %v, blocked %v", called, unblocked, s.IsBlocked(pendingOwner, carolJID))
	}
	if _, ok := store.blocked[[2]string{pendingOwner, carolJID}]; ok {
		t.Fatal("the unblock was not stored")
	}
	flushTo(t, s, rec)
	if got := rec.to(carolJID); len(got) != 1 || !got[0].v.Available || got[0].v.Status != storage.StatusBusy {
		t.Fatalf("unblocked carol got %v, want alice available and busy", got)
	}
	if got := rec.to(daveJID); len(got) != 0 {
		t.Fatalf("dave got %v from carol's unblock", got)
	}
	if err := s.Unblock(ctx, pendingOwner, carolJID); err != ErrNotBlocked {
		t.Fatalf("Unblock again = %v, want ErrNotBlocked", err)
	}
	if err := s.Unblock(ctx, pendingOwner, "nobody@example.net"); err != ErrNotBlocked {
		t.Fatalf("Unblock of a stranger = %v, want ErrNotBlocked", err)
	}
	if err := s.Unblock(ctx, "zed@example.org", carolJID); err != ErrNoAccount {
		t.Fatalf("Unblock by a stranger = %v, want ErrNoAccount", err)
	}
	if err := s.Block(ctx, "zed@example.org", carolJID); err != ErrNoAccount {
		t.Fatalf("Block by a stranger = %v, want ErrNoAccount", err)
	}

	// Off-line: the account's presence is the one carol was left with, so
	// her unblock sends nothing; she sees the owner come back.
	offAt := clock.Add(time.Minute)
	logOff(t, s)
	flushTo(t, s, rec)
	clock.Add(time.Minute)
	if err := s.Block(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if err := s.Unblock(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	rec.reset()
	flushTo(t, s, rec)
	if got := rec.got; len(got) != 0 {
		t.Fatalf("unblocking carol, who has alice's off-line presence since %v, sent %v", offAt, got)
	}
	logOn(t, s)
	flushTo(t, s, rec)
	if got := rec.to(carolJID); len(got) != 1 || !got[0].v.Available {
		t.Fatalf("carol got %v when alice came back, want her available", got)
	}
}

// TestBlockWinsOverAnUnblockOnItsWay: a block decided while an unblock is
// being stored (held in commit by the store's gate) wins: the contact
// stays blocked, in memory and in storage, with its stamp, and is sent
// nothing.
func TestBlockWinsOverAnUnblockOnItsWay(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	blockAt := blockNow(t, s, clock, carolJID)
	flushTo(t, s, rec)
	rec.reset()
	startEngine(t, s.Service)
	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()
	unblocked, blocked := make(chan error, 1), make(chan error, 1)
	on(s.Service, func() { s.Service.Unblock(pendingOwner, carolJID, func(err error) { unblocked <- err }) })
	// The unblock's transaction waits in the store now.
	on(s.Service, func() {
		clock.Add(time.Minute)
		s.Service.Block(pendingOwner, carolJID, func(err error) { blocked <- err })
	})
	gate <- struct{}{} // the unblock commits
	if err := <-unblocked; err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{} // the block
	store.mu.Lock()
	store.gate = nil
	store.mu.Unlock()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	var isBlocked bool
	var v View
	on(s.Service, func() {
		isBlocked = s.IsBlocked(pendingOwner, carolJID)
		v, _ = s.ViewFor("h", carolJID)
		s.Service.Instruct(pendingOwner, InstructAway, nil)
	})
	if !isBlocked || v != (View{Since: blockAt}) {
		t.Fatalf("after the block that came during the unblock: blocked %v, ViewFor %+v; want blocked since %v", isBlocked, v, blockAt)
	}
	for {
		var idle bool
		on(s.Service, func() { idle = s.Idle() })
		if idle {
			break
		}
	}
	store.mu.Lock()
	stored, ok := store.blocked[[2]string{pendingOwner, carolJID}]
	store.mu.Unlock()
	if !ok || !stored.Equal(blockAt) {
		t.Fatalf("stored block: %v (%v), want since %v", stored, ok, blockAt)
	}
	on(s.Service, func() {
		s.Service.Probe("h", carolJID)
		for s.notes.busy() {
			s.pump()
		}
		if err := s.out.deliver(ctx, rec); err != nil {
			t.Error(err)
		}
	})
	wantStanzas(t, "carol, blocked again while unblocking", rec.to(carolJID), unavailable("h", carolJID, blockAt))
	if got := rec.to(daveJID); len(got) != 1 || got[0].v.Status != storage.StatusAway {
		t.Fatalf("dave got %v, want alice away", got)
	}
}

// TestHideWinsOverAShowOnItsWay: a hide decided while a show of the same
// handle is being stored wins, with the stamp the subscribers were left
// with.
func TestHideWinsOverAShowOnItsWay(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	hidAt := clock.Add(time.Minute)
	var hid error
	s.Service.SetVisibility(pendingOwner, []string{"h"}, true, func(err error) { hid = err })
	if v, _ := s.ViewOfHandle("h"); v != (View{Since: hidAt}) {
		t.Fatalf("ViewOfHandle of a hidden handle = %+v, want off-line since %v at once", v, hidAt)
	}
	s.settle(ctx)
	if hid != nil {
		t.Fatal(hid)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "hiding", rec.got, unavailable("h", carolJID, hidAt), unavailable("h", daveJID, hidAt))
	rec.reset()
	clock.Add(time.Minute)
	var shown, hidAgain error
	s.Service.SetVisibility(pendingOwner, []string{"h"}, false, func(err error) { shown = err })
	b := s.take() // the show is being stored
	clock.Add(time.Minute)
	s.Service.SetVisibility(pendingOwner, []string{"h"}, true, func(err error) { hidAgain = err })
	commit(ctx, store, b, nil)
	s.finish(b)
	s.settle(ctx)
	if shown != nil || hidAgain != nil {
		t.Fatalf("show %v, hide %v", shown, hidAgain)
	}
	if infos := s.HandleInfos(pendingOwner); len(infos) != 1 || !infos[0].Hidden || infos[0].Subscribers != 2 {
		t.Fatalf("HandleInfos = %+v, want h hidden with 2 subscribers", infos)
	}
	if got, ok := store.hidden["h"]; !ok || !got.Equal(hidAt) {
		t.Fatalf("stored hidden since %v (%v), want %v", got, ok, hidAt)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "show and hide", rec.got)
	s.Probe("h", carolJID)
	flushTo(t, s, rec)
	wantStanzas(t, "carol's probe", rec.got, unavailable("h", carolJID, hidAt))
	// Shown, and stored: the subscribers see the account again.
	rec.reset()
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h", "h"}, false); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	if got := rec.got; len(got) != 2 || !got[0].v.Available || !got[1].v.Available {
		t.Fatalf("showing h sent %v, want alice available to both", got)
	}
	if _, ok := store.hidden["h"]; ok {
		t.Fatal("the show was not stored")
	}
}

// TestHiddenHandleAloneLooksOffline: a hidden handle looks off-line to all
// its subscribers whatever the account does; the account's other handles
// go on following it. A name that is not the owner's changes nothing.
func TestHiddenHandleAloneLooksOffline(t *testing.T) {
	ctx := context.Background()
	s, clock, rec := ctlSetup(t, newMemStore(), Options{})
	if err := s.AddHandle(ctx, pendingOwner, "h2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "h2", carolJID); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHandle(ctx, bobJID, "bobh"); err != nil {
		t.Fatal(err)
	}
	s.Probe("h2", carolJID)
	flushTo(t, s, rec)
	rec.reset()
	for _, names := range [][]string{{"h", "bobh"}, {"h", "nope"}} {
		if err := s.SetVisibility(ctx, pendingOwner, names, true); err != ErrUnknownHandle {
			t.Fatalf("SetVisibility(%v) = %v, want ErrUnknownHandle", names, err)
		}
	}
	if infos := s.HandleInfos(pendingOwner); infos[0].Hidden || infos[1].Hidden {
		t.Fatalf("a refused SetVisibility hid a handle: %+v", infos)
	}
	hidAt := clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if err := s.Instruct(ctx, pendingOwner, InstructAway); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "hiding h, then going away", rec.got,
		unavailable("h", carolJID, hidAt), unavailable("h", daveJID, hidAt),
		stanza{handle: "h2", contact: carolJID, v: View{Available: true, Status: storage.StatusAway}}.String())
	if v, _ := s.ViewOfHandle("h2"); !v.Available {
		t.Fatalf("ViewOfHandle(h2) = %+v", v)
	}
	if v, _ := s.ViewFor("h", daveJID); v != (View{Since: hidAt}) {
		t.Fatalf("ViewFor(h, dave) = %+v", v)
	}
}

// TestHiddenAndBlockedTakeTheEarlierStamp: a blocked subscriber of a
// hidden handle is left with the earlier of the two stamps, in memory and
// after a restart.
func TestHiddenAndBlockedTakeTheEarlierStamp(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	if err := s.AddHandle(ctx, pendingOwner, "h2"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{carolJID, daveJID} {
		if err := s.Subscribe(ctx, "h2", c); err != nil {
			t.Fatal(err)
		}
		s.Probe("h2", c)
	}
	flushTo(t, s, rec)
	rec.reset()
	// h hidden first, then carol blocked; dave blocked first, then h2
	// hidden.
	hidH := clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	blockCarol := blockNow(t, s, clock, carolJID)
	blockDave := blockNow(t, s, clock, daveJID)
	flushTo(t, s, rec)
	clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h2"}, true); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	want := map[[2]string]time.Time{
		{"h", carolJID}: hidH, {"h", daveJID}: hidH,
		{"h2", carolJID}: blockCarol, {"h2", daveJID}: blockDave,
	}
	var wantSent []string
	for _, k := range [][2]string{{"h", carolJID}, {"h", daveJID}, {"h2", carolJID}, {"h2", daveJID}} {
		wantSent = append(wantSent, unavailable(k[0], k[1], want[k]))
	}
	wantStanzas(t, "hide, block, block, hide", rec.got, wantSent...)
	check := func(s *syncService, when string) {
		t.Helper()
		rec.reset()
		for k, at := range want {
			if v, _ := s.ViewFor(k[0], k[1]); v != (View{Since: at}) {
				t.Errorf("%s: ViewFor(%s, %s) = %+v, want since %v", when, k[0], k[1], v, at)
			}
			if v := s.GoneView(k[0], k[1]); v != (View{Since: at}) {
				t.Errorf("%s: GoneView(%s, %s) = %+v, want since %v", when, k[0], k[1], v, at)
			}
		}
	}
	check(s, "in memory")
	clock.Add(time.Hour)
	// A crash: nothing withdrew anything.
	s2 := restartFrom(t, store, clock, Options{})
	check(s2, "after a restart")
	flushTo(t, s2, rec)
	got := map[[2]string]View{}
	for _, st := range rec.got {
		got[[2]string{st.handle, st.contact}] = st.v
	}
	for k, at := range want {
		if got[k] != (View{Since: at}) {
			t.Errorf("after a restart %s got %+v from %s, want unavailable since %v", k[1], got[k], k[0], at)
		}
	}
	if fmt.Sprint(s2.Blocked(pendingOwner)) != fmt.Sprint([]string{carolJID, daveJID}) {
		t.Errorf("Blocked after a restart = %v", s2.Blocked(pendingOwner))
	}
	if infos := s2.HandleInfos(pendingOwner); !infos[0].Hidden || !infos[1].Hidden {
		t.Errorf("HandleInfos after a restart = %+v", infos)
	}
}

// TestBlockHoldsThroughAnOutage: a block holds while storage fails (told
// ErrNotStored) and is written again until stored, with its stamp.
func TestBlockHoldsThroughAnOutage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	blockAt := clock.Add(time.Minute)
	store.setDown(true)
	if err := s.Block(ctx, pendingOwner, carolJID); !errors.Is(err, ErrNotStored) || !errors.Is(err, errDown) {
		t.Fatalf("Block with storage down = %v, want ErrNotStored", err)
	}
	if !s.IsBlocked(pendingOwner, carolJID) {
		t.Fatal("the block did not hold")
	}
	flushTo(t, s, rec)
	wantStanzas(t, "the block", rec.got, unavailable("h", carolJID, blockAt))
	clock.Add(time.Minute)
	s.settle(ctx) // fails again
	store.setDown(false)
	logOff(t, s) // stored after the block
	logOn(t, s)
	if got, ok := store.blocked[[2]string{pendingOwner, carolJID}]; !ok || !got.Equal(blockAt) {
		t.Fatalf("stored block %v (%v), want since %v", got, ok, blockAt)
	}
	if !s.Idle() {
		t.Fatal("writes still to be made")
	}
	rec.reset()
	flushTo(t, s, rec)
	if got := rec.to(carolJID); len(got) != 0 {
		t.Fatalf("blocked carol got %v", got)
	}
}

// TestUnblockFailsInAnOutage: an unblock that cannot be stored fails, and
// the block holds.
func TestUnblockFailsInAnOutage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	blockAt := blockNow(t, s, clock, carolJID)
	flushTo(t, s, rec)
	rec.reset()
	store.setDown(true)
	err := s.Unblock(ctx, pendingOwner, carolJID)
	store.setDown(false)
	if err == nil || !errors.Is(err, errDown) || errors.Is(err, ErrNotStored) {
		t.Fatalf("Unblock with storage down = %v, want the storage error", err)
	}
	if !s.IsBlocked(pendingOwner, carolJID) || !s.Idle() {
		t.Fatalf("after the failed unblock: blocked %v, idle %v", s.IsBlocked(pendingOwner, carolJID), s.Idle())
	}
	clock.Add(time.Minute)
	if err := s.Instruct(ctx, pendingOwner, InstructBusy); err != nil {
		t.Fatal(err)
	}
	s.Probe("h", carolJID)
	flushTo(t, s, rec)
	wantStanzas(t, "carol after the failed unblock", rec.to(carolJID), unavailable("h", carolJID, blockAt))
	// A show fails likewise, and the hide holds.
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	store.setDown(true)
	err = s.SetVisibility(ctx, pendingOwner, []string{"h"}, false)
	store.setDown(false)
	if err == nil || errors.Is(err, ErrNotStored) {
		t.Fatalf("show with storage down = %v, want refused", err)
	}
	if infos := s.HandleInfos(pendingOwner); !infos[0].Hidden {
		t.Fatal("a show that was not stored took effect")
	}
}

// TestBlockLimit: an account blocks at most Options.MaxBlocked contacts.
func TestBlockLimit(t *testing.T) {
	ctx := context.Background()
	s, _, _ := ctlSetup(t, newMemStore(), Options{MaxBlocked: 2})
	for _, c := range []string{carolJID, daveJID} {
		if err := s.Block(ctx, pendingOwner, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Block(ctx, pendingOwner, erinJID); err != ErrBlockLimit {
		t.Fatalf("a third block = %v, want ErrBlockLimit", err)
	}
	if err := s.Block(ctx, pendingOwner, carolJID); err != ErrAlreadyBlocked {
		t.Fatalf("blocking carol again at the limit = %v, want ErrAlreadyBlocked", err)
	}
	if s.IsBlocked(pendingOwner, erinJID) || len(s.Blocked(pendingOwner)) != 2 {
		t.Fatalf("Blocked = %v", s.Blocked(pendingOwner))
	}
	if err := s.Unblock(ctx, pendingOwner, daveJID); err != nil {
		t.Fatal(err)
	}
	if err := s.Block(ctx, pendingOwner, erinJID); err != nil {
		t.Fatalf("a block after an unblock = %v", err)
	}
	if got := fmt.Sprint(s.Blocked(pendingOwner)); got != fmt.Sprint([]string{carolJID, erinJID}) {
		t.Fatalf("Blocked = %v", got)
	}
}

// TestRemoveHiddenHandleKeepsTheStamp: the removal notices of a hidden
// handle carry the stamp its subscribers were left with, those of a
// blocked subscriber its own, the others the account's; and so do the
// notices loaded after a crash that came before they were written.
func TestRemoveHiddenHandleKeepsTheStamp(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	if err := s.AddHandle(ctx, pendingOwner, "h2"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{carolJID, daveJID, erinJID} {
		if err := s.Subscribe(ctx, "h2", c); err != nil {
			t.Fatal(err)
		}
		s.Probe("h2", c)
	}
	hidAt := clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	blockAt := blockNow(t, s, clock, erinJID)
	flushTo(t, s, rec)
	clock.Add(time.Minute)
	logOff(t, s) // the stamp of the hidden handle stays
	removeAt := clock.Add(time.Minute)
	logOn(t, s)
	flushTo(t, s, rec)
	rec.reset()
	for _, h := range []string{"h", "h2"} {
		if err := s.RemoveHandle(ctx, pendingOwner, h); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		unavailable("h", carolJID, hidAt), stanza{handle: "h", contact: carolJID, unsubscribed: true}.String(),
		unavailable("h", daveJID, hidAt), stanza{handle: "h", contact: daveJID, unsubscribed: true}.String(),
		unavailable("h2", carolJID, removeAt), stanza{handle: "h2", contact: carolJID, unsubscribed: true}.String(),
		unavailable("h2", daveJID, removeAt), stanza{handle: "h2", contact: daveJID, unsubscribed: true}.String(),
		unavailable("h2", erinJID, blockAt), stanza{handle: "h2", contact: erinJID, unsubscribed: true}.String(),
	}
	// The process dies before anything was written.
	clock.Add(time.Hour)
	s2 := restartFrom(t, store, clock, Options{})
	flushTo(t, s2, rec)
	wantStanzas(t, "after a crash", rec.got, want...)
	rec.reset()
	flushTo(t, s, rec)
	wantStanzas(t, "without the crash", rec.got, want...)
}

// TestKick: kicking ends one subscription at once and returns the
// unavailable presence to send first: the withheld stamp for a withheld
// subscriber, the account's own while off-line, else now. Kicking a
// non-subscriber, or on another's handle, changes and sends nothing.
func TestKick(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	if err := s.AddHandle(ctx, bobJID, "bobh"); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "bobh", erinJID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		owner, h, contact string
		want              error
	}{
		{pendingOwner, "h", erinJID, ErrNotSubscribed},
		{pendingOwner, "bobh", erinJID, ErrUnknownHandle},
		{pendingOwner, "nope", carolJID, ErrUnknownHandle},
		{bobJID, "h", carolJID, ErrUnknownHandle},
	} {
		if _, err := s.Kick(ctx, c.owner, c.h, c.contact); err != c.want {
			t.Errorf("Kick(%s, %s, %s) = %v, want %v", c.owner, c.h, c.contact, err, c.want)
		}
	}
	flushTo(t, s, rec)
	if len(rec.got) != 0 || !s.IsSubscribed("bobh", erinJID) {
		t.Fatalf("refused kicks sent %v (erin still subscribed: %v)", rec.got, s.IsSubscribed("bobh", erinJID))
	}
	kickAt := clock.Add(time.Minute)
	v, err := s.Kick(ctx, pendingOwner, "h", daveJID)
	if err != nil || v != (View{Since: kickAt}) {
		t.Fatalf("Kick(dave) = %+v, %v; want unavailable since %v", v, err, kickAt)
	}
	if s.IsSubscribed("h", daveJID) || store.subs[[2]string{"h", daveJID}] {
		t.Fatal("dave still subscribed after the kick")
	}
	if subs, _, _ := s.Subscribers(pendingOwner, "h", 0); fmt.Sprint(subs) != "["+carolJID+"]" {
		t.Fatalf("Subscribers = %v", subs)
	}
	if _, _, err := s.Subscribers(bobJID, "h", 0); err != ErrUnknownHandle {
		t.Fatalf("Subscribers of another's handle = %v", err)
	}
	blockAt := blockNow(t, s, clock, carolJID)
	clock.Add(time.Minute)
	if v, err := s.Kick(ctx, pendingOwner, "h", carolJID); err != nil || v != (View{Since: blockAt}) {
		t.Fatalf("Kick(blocked carol) = %+v, %v; want unavailable since %v", v, err, blockAt)
	}
	// bob off-line since he was made: his own stamp.
	created, _ := s.Flags(bobJID)
	clock.Add(time.Minute)
	if v, err := s.Kick(ctx, bobJID, "bobh", erinJID); err != nil || v != (View{Since: created.Since}) {
		t.Fatalf("Kick(erin) of an off-line account = %+v, %v; want unavailable since %v", v, err, created.Since)
	}
	rec.reset()
	flushTo(t, s, rec)
	wantStanzas(t, "the service itself after the kicks", rec.got, unavailable("h", carolJID, blockAt))
	// The component sends the kicked ones their presence; the service
	// sent nothing of its own but the block's.
}

// TestBlockedContactsRequests: blocking drops the contact's pending
// requests at once, without telling the owner, and its requests to ask
// handles are ignored from then on; to an open handle it subscribes as
// anyone does, and sees the account off-line.
func TestBlockedContactsRequests(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	for _, h := range []string{"ask", "ask2"} {
		if err := s.AddHandleWith(ctx, pendingOwner, h, storage.PolicyAsk); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := s.SubscribeOutcome(ctx, "ask", erinJID); out != Requested || err != nil {
		t.Fatalf("erin's request: %v, %v", out, err)
	}
	if out, err := s.SubscribeOutcome(ctx, "ask", daveJID); out != Requested || err != nil {
		t.Fatalf("dave's request: %v, %v", out, err)
	}
	// erin's second request is being stored when she is blocked.
	s.Service.Subscribe("ask2", erinJID, nil)
	b := s.take()
	blockAt := clock.Add(time.Minute)
	s.Service.Block(pendingOwner, erinJID, nil)
	if got := s.Requests(pendingOwner); len(got) != 1 || got[0].Contact != daveJID {
		t.Fatalf("requests right after the block = %+v, want dave's alone", got)
	}
	commit(ctx, store, b, nil)
	s.finish(b)
	s.settle(ctx)
	if got := s.Requests(pendingOwner); len(got) != 1 || got[0].Contact != daveJID {
		t.Fatalf("requests once stored = %+v, want dave's alone", got)
	}
	if len(store.requests) != 1 {
		t.Fatalf("stored requests = %v, want dave's alone", store.requests)
	}
	if out, err := s.SubscribeOutcome(ctx, "ask", erinJID); out != Ignored || err != nil {
		t.Fatalf("blocked erin asking = %v, %v; want Ignored, nil", out, err)
	}
	if err := s.Approve(ctx, pendingOwner, "ask", erinJID); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approving blocked erin = %v, want ErrNotPending", err)
	}
	if got := s.Requests(pendingOwner); len(got) != 1 || got[0].Contact != daveJID || len(store.requests) != 1 {
		t.Fatalf("requests after blocked erin asked = %+v (stored %v)", got, store.requests)
	}
	if infos := s.HandleInfos(pendingOwner); infos[0].Requests != 1 || infos[1].Requests != 0 {
		t.Fatalf("HandleInfos = %+v", infos)
	}
	// An open handle approves her; she sees alice off-line since the block.
	rec.reset()
	if out, err := s.SubscribeOutcome(ctx, "h", erinJID); out != Approved || err != nil {
		t.Fatalf("blocked erin to an open handle = %v, %v; want Approved", out, err)
	}
	if !s.Probe("h", erinJID) {
		t.Fatal("Probe by erin = false")
	}
	flushTo(t, s, rec)
	wantStanzas(t, "erin's probe", rec.got, unavailable("h", erinJID, blockAt))
	// After a restart the block still holds.
	s2 := restartFrom(t, store, clock, Options{})
	if out, err := s2.SubscribeOutcome(ctx, "ask2", erinJID); out != Ignored || err != nil {
		t.Fatalf("after a restart blocked erin asking = %v, %v; want Ignored, nil", out, err)
	}
}

// TestPartialLiftKeepsTheStamp: a contact withheld both by a block and
// by a hidden handle, and unblocked, is still withheld by the hidden
// handle, whose stamp is another: it keeps the one it has (a new one
// would tell it that something happened), is sent nothing, and keeps it
// across a restart; once the handle is shown and the account is visible,
// it sees the account.
func TestPartialLiftKeepsTheStamp(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	blockAt := blockNow(t, s, clock, carolJID)
	offAt := clock.Add(time.Minute)
	logOff(t, s)
	clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "block, off-line, hide", rec.got, unavailable("h", carolJID, blockAt), unavailable("h", daveJID, offAt))
	rec.reset()
	clock.Add(time.Minute)
	if err := s.Unblock(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "unblocking carol, still withheld by the hidden handle", rec.got)
	if v, _ := s.ViewFor("h", carolJID); v != (View{Since: blockAt}) {
		t.Fatalf("ViewFor(h, carol) = %+v, want the stamp she has, %v", v, blockAt)
	}
	// A restart sends her the stamp she kept, stored.
	clock.Add(time.Hour)
	s2 := restartFrom(t, store, clock, Options{})
	rec.reset()
	flushTo(t, s2, rec)
	if got := rec.to(carolJID); len(got) != 1 || got[0].v != (View{Since: blockAt}) {
		t.Fatalf("after a restart carol, still withheld, got %v; she kept %v", got, blockAt)
	}
}

// TestLiftWhileNotVisibleKeepsTheStamp: a handle hidden while the account
// was visible, then the account hiding, then the handle shown while it
// hides: its subscribers are sent nothing (a new stamp now would tell
// them that the owner is active) and keep the hidden stamp; once the
// owner is visible again they see the account. The same for a contact
// unblocked while the account hides.
func TestLiftWhileNotVisibleKeepsTheStamp(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	if err := s.Subscribe(ctx, "h", erinJID); err != nil {
		t.Fatal(err)
	}
	s.Probe("h", erinJID)
	flushTo(t, s, rec)
	hideAt := clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	// Blocked after the hiding of the handle, erin keeps its stamp.
	clock.Add(time.Minute)
	if err := s.Block(ctx, pendingOwner, erinJID); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if err := s.Instruct(ctx, pendingOwner, InstructHide); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	rec.reset()
	clock.Add(time.Hour)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Unblock(ctx, pendingOwner, erinJID); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	wantStanzas(t, "showing the handle and unblocking erin while hiding", rec.got)
	for c, want := range map[string]time.Time{carolJID: hideAt, daveJID: hideAt, erinJID: hideAt} {
		if v, _ := s.ViewFor("h", c); v != (View{Since: want}) {
			t.Errorf("ViewFor(h, %s) = %+v while hiding, want the stamp it has, %v", c, v, want)
		}
	}
	// Across a restart, still hiding: the same stamps.
	s2 := restartFrom(t, store, clock, Options{})
	rec.reset()
	flushTo(t, s2, rec)
	for _, st := range rec.got {
		if want := map[string]time.Time{carolJID: hideAt, daveJID: hideAt, erinJID: hideAt}[st.contact]; st.v != (View{Since: want}) {
			t.Errorf("after a restart %s got %+v, want unavailable since %v", st.contact, st.v, want)
		}
	}
	// Visible again: every one of them sees the account.
	rec.reset()
	if err := s2.Instruct(ctx, pendingOwner, InstructVisible); err != nil {
		t.Fatal(err)
	}
	if err := s2.OwnerPresence(ctx, pendingOwner, OwnerPresence{Resource: "r", Available: true, Status: storage.StatusUndefined}); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s2, rec)
	for _, c := range []string{carolJID, daveJID, erinJID} {
		if got := rec.to(c); len(got) == 0 || !got[len(got)-1].v.Available {
			t.Errorf("%s, nothing withholding it and the owner visible, got %v; want available", c, got)
		}
	}
	if len(store.kept) != 0 {
		t.Errorf("kept stamps left on record once visible: %v", store.kept)
	}
}

// TestPartialLiftSendsNoDuplicate: a contact withheld both by a block and
// by a hidden handle, with the same stamp, is sent nothing when one of
// them is lifted: it has the very presence it is still left with.
func TestPartialLiftSendsNoDuplicate(t *testing.T) {
	ctx := context.Background()
	for _, lift := range []string{"unblock", "show"} {
		t.Run(lift, func(t *testing.T) {
			s, clock, rec := ctlSetup(t, newMemStore(), Options{})
			offAt := clock.Add(time.Minute)
			logOff(t, s)
			flushTo(t, s, rec)
			clock.Add(time.Minute)
			if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
				t.Fatal(err)
			}
			clock.Add(time.Minute)
			if err := s.Block(ctx, pendingOwner, carolJID); err != nil {
				t.Fatal(err)
			}
			flushTo(t, s, rec)
			rec.reset()
			clock.Add(time.Minute)
			var err error
			if lift == "unblock" {
				err = s.Unblock(ctx, pendingOwner, carolJID)
			} else {
				err = s.SetVisibility(ctx, pendingOwner, []string{"h"}, false)
			}
			if err != nil {
				t.Fatal(err)
			}
			flushTo(t, s, rec)
			// She stays withheld by the other reason, with the same
			// stamp: sending it again would show the owner did something.
			if got := rec.to(carolJID); len(got) != 0 {
				t.Errorf("%s of one of two withholdings sent carol %v; she has unavailable since %v already", lift, got, offAt)
			}
		})
	}
}

// TestControlWhileStopping: once stopping, what only shows less (a block,
// a hide, a kick) is taken; what shows more (an unblock, a show) is not.
func TestControlWhileStopping(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, _ := ctlSetup(t, store, Options{})
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Block(ctx, pendingOwner, erinJID); err != nil {
		t.Fatal(err)
	}
	s.Freeze()
	blockAt := clock.Add(time.Minute)
	if err := s.Block(ctx, pendingOwner, carolJID); err != nil {
		t.Fatalf("Block while stopping = %v, want it taken", err)
	}
	if err := s.Unblock(ctx, pendingOwner, erinJID); err != ErrStopping {
		t.Fatalf("Unblock while stopping = %v, want ErrStopping", err)
	}
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, false); err != ErrStopping {
		t.Fatalf("show while stopping = %v, want ErrStopping", err)
	}
	if _, err := s.Kick(ctx, pendingOwner, "h", daveJID); err != nil {
		t.Fatalf("Kick while stopping = %v, want it taken", err)
	}
	if !s.IsBlocked(pendingOwner, carolJID) || !s.IsBlocked(pendingOwner, erinJID) || !s.HandleInfos(pendingOwner)[0].Hidden || s.IsSubscribed("h", daveJID) {
		t.Fatalf("while stopping: blocked %v, hidden %+v, dave subscribed %v", s.Blocked(pendingOwner), s.HandleInfos(pendingOwner), s.IsSubscribed("h", daveJID))
	}
	if got := store.blocked[[2]string{pendingOwner, carolJID}]; !got.Equal(blockAt) {
		t.Fatalf("stored block of carol since %v, want %v", got, blockAt)
	}
}

// TestBlockAfterTwoUnblocksWins: two unblocks of one contact on their way
// in two transactions, then a block: the block, decided last and stored
// last, wins once the second unblock is stored; and that unblock lifts no
// other contact's block either (the first freed the unblocked contact's
// number, which a contact blocked meanwhile may be given).
func TestBlockAfterTwoUnblocksWins(t *testing.T) {
	for _, c := range []struct {
		name, unblocked, blocked string
	}{
		{"same contact", carolJID, carolJID},            // carol is subscribed: she keeps her number
		{"another contact", "zoe@example.net", erinJID}, // zoe subscribes to nothing: erin gets her number
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			store := newMemStore()
			s, _, rec := ctlSetup(t, store, Options{})
			if err := s.Block(ctx, pendingOwner, c.unblocked); err != nil {
				t.Fatal(err)
			}
			flushTo(t, s, rec)
			var first, second, blocked error
			s.Service.Unblock(pendingOwner, c.unblocked, func(err error) { first = err })
			b := s.take() // the first unblock is being stored
			s.Service.Unblock(pendingOwner, c.unblocked, func(err error) { second = err })
			commit(ctx, store, b, nil)
			s.finish(b)
			if first != nil || s.IsBlocked(pendingOwner, c.unblocked) {
				t.Fatalf("first unblock: %v, blocked %v", first, s.IsBlocked(pendingOwner, c.unblocked))
			}
			// Blocked while the second unblock waits to be stored.
			s.Service.Block(pendingOwner, c.blocked, func(err error) { blocked = err })
			s.settle(ctx)
			if second != nil || blocked != nil {
				t.Fatalf("second unblock %v, block %v", second, blocked)
			}
			if _, ok := store.blocked[[2]string{pendingOwner, c.blocked}]; !ok {
				t.Fatalf("%s's block was not stored", c.blocked)
			}
			// Regression: the unblocks on their way were kept by the
			// contact's number and not told of a block decided after the
			// first was stored, so the second lifted the new block.
			if !s.IsBlocked(pendingOwner, c.blocked) {
				t.Fatalf("%s is not blocked once its block was stored: an unblock decided before it lifted it", c.blocked)
			}
			flushTo(t, s, rec)
			got := rec.to(c.blocked)
			for _, st := range got {
				if st.v.Available {
					t.Errorf("blocked %s got %v: alice shown", c.blocked, got)
				}
			}
		})
	}
}

// TestWithholdAgainBeforeThePass: a contact withheld again (blocked, or
// the handle hidden) after it was unblocked or shown, but before the pass
// that shows it the account reached it, is left with what it last
// received, and that is what ViewFor (its probes, a kick, a removal, a
// restart) tells it; it is never shown the account.
func TestWithholdAgainBeforeThePass(t *testing.T) {
	for _, how := range []string{"block", "hide"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			s, clock, rec := ctlSetup(t, newMemStore(), Options{})
			withhold := func() {
				t.Helper()
				var err error
				if how == "block" {
					err = s.Block(ctx, pendingOwner, carolJID)
				} else {
					err = s.SetVisibility(ctx, pendingOwner, []string{"h"}, true)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			first := clock.Add(time.Minute)
			withhold()
			flushTo(t, s, rec)
			clock.Add(time.Minute)
			var err error
			if how == "block" {
				err = s.Unblock(ctx, pendingOwner, carolJID)
			} else {
				err = s.SetVisibility(ctx, pendingOwner, []string{"h"}, false)
			}
			if err != nil {
				t.Fatal(err)
			}
			// The pass that shows carol the account is queued, not done.
			clock.Add(time.Minute)
			withhold()
			flushTo(t, s, rec)
			got := rec.to(carolJID)
			last := got[len(got)-1].v
			for _, st := range got {
				if st.v.Available {
					t.Fatalf("carol got %v: shown the account between two withholdings", got)
				}
			}
			// Regression: a lift left the withheld code for the pass to
			// overwrite, so a contact withheld again before that pass was
			// taken to have its new stamp and sent nothing.
			if v, _ := s.ViewFor("h", carolJID); v != last {
				t.Errorf("carol was left with %+v (got %v; first stamp %v), but ViewFor says %+v", last, got, first.Format("15:04"), v)
			}
		})
	}
}

// TestSubscribeUnsubscribeRepeatedIsBounded: a contact repeating subscribe
// and unsubscribe to an open handle while a transaction commits starts at
// most maxWritesOnWay writes of its row, not one pair per repetition.
func TestSubscribeUnsubscribeRepeatedIsBounded(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, _ := ctlSetup(t, store, Options{})
	before := len(s.commits.pending)
	for i := 0; i < 100; i++ {
		s.Service.Subscribe("h", erinJID, nil)
		s.Service.Unsubscribe("h", erinJID, nil)
	}
	if n := len(s.commits.pending) - before; n > 2*maxWritesOnWay {
		t.Fatalf("100 subscribe/unsubscribe pairs queued %d writes, want at most %d", n, 2*maxWritesOnWay)
	}
	s.settle(ctx)
	if s.IsSubscribed("h", erinJID) {
		t.Fatal("erin, who unsubscribed last, is subscribed")
	}
	// Once the writes are done, a subscription is taken again.
	if err := s.Subscribe(ctx, "h", erinJID); err != nil || !s.IsSubscribed("h", erinJID) {
		t.Fatalf("subscribing after the writes are done: %v, subscribed %v", err, s.IsSubscribed("h", erinJID))
	}
}

// TestRequestUnrequestRepeatedIsBounded: a contact repeating subscribe
// and unsubscribe to an ask handle while a transaction commits starts at
// most maxWritesOnWay writes of its request row, so it cannot use up the
// handle's pending requests: another contact's request is still taken.
func TestRequestUnrequestRepeatedIsBounded(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, _ := ctlSetup(t, store, Options{})
	if err := s.AddHandleWith(ctx, pendingOwner, "ask", storage.PolicyAsk); err != nil {
		t.Fatal(err)
	}
	before := len(s.commits.pending)
	for i := 0; i < 150; i++ {
		s.Service.Subscribe("ask", erinJID, nil)
		s.Service.Unsubscribe("ask", erinJID, nil)
	}
	h := s.handles["ask"]
	if n := len(s.commits.pending) - before; n > 2*maxWritesOnWay || h.asking > maxWritesOnWay {
		t.Fatalf("150 subscribe/unsubscribe pairs queued %d writes, %d requests being stored; want at most %d and %d", n, h.asking, 2*maxWritesOnWay, maxWritesOnWay)
	}
	var got SubscribeOutcome = -1
	s.Service.Subscribe("ask", "frank@example.com", func(o SubscribeOutcome, err error) { got = o })
	s.settle(ctx)
	if got != Requested || fmt.Sprint(s.Requests(pendingOwner)) == "[]" {
		t.Fatalf("another contact's request: %v, requests %v; want Requested and listed", got, s.Requests(pendingOwner))
	}
	if h.hasRequest(erinJID) {
		t.Fatal("erin, who unsubscribed last, has a request")
	}
}

// TestLastSubscribeOverTheBoundIsDone: a subscribe held back by its row's
// bound is decided once the row's writes have ended, to an open handle as
// to an ask one: what the contact asked for last is not lost.
func TestLastSubscribeOverTheBoundIsDone(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, _ := ctlSetup(t, store, Options{})
	if err := s.AddHandleWith(ctx, pendingOwner, "ask", storage.PolicyAsk); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		handle string
		want   SubscribeOutcome
	}{{"h", Approved}, {"ask", Requested}} {
		for i := 0; i < 5; i++ {
			s.Service.Subscribe(c.handle, erinJID, nil)
			s.Service.Unsubscribe(c.handle, erinJID, nil)
		}
		var got SubscribeOutcome = -1
		var err error
		s.Service.Subscribe(c.handle, erinJID, func(o SubscribeOutcome, e error) { got, err = o, e })
		s.settle(ctx)
		if got != c.want || err != nil {
			t.Fatalf("%s: the last subscribe = %v, %v; want %v", c.handle, got, err, c.want)
		}
	}
	if !s.IsSubscribed("h", erinJID) || !s.handles["ask"].hasRequest(erinJID) {
		t.Fatalf("subscribed %v, requesting %v; want both", s.IsSubscribed("h", erinJID), s.handles["ask"].hasRequest(erinJID))
	}
}

// TestHeldBackSubscribeDroppedOnce: a subscribe held back by its row's
// bound is answered Ignored once, when a later subscribe replaces it or
// an unsubscribe drops it, and never decided then.
func TestHeldBackSubscribeDroppedOnce(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, _ := ctlSetup(t, store, Options{})
	for i := 0; i < maxWritesOnWay; i++ {
		s.Service.Subscribe("h", erinJID, nil)
		s.Service.Unsubscribe("h", erinJID, nil)
	}
	var answers []SubscribeOutcome
	record := func(o SubscribeOutcome, err error) { answers = append(answers, o) }
	s.Service.Subscribe("h", erinJID, record) // held back
	s.Service.Subscribe("h", erinJID, record) // replaces it
	s.Service.Unsubscribe("h", erinJID, nil)  // drops it
	s.settle(ctx)
	if fmt.Sprint(answers) != fmt.Sprint([]SubscribeOutcome{Ignored, Ignored}) || s.IsSubscribed("h", erinJID) {
		t.Fatalf("answers %v, subscribed %v; want two Ignored and not subscribed", answers, s.IsSubscribed("h", erinJID))
	}
}
