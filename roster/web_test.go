package roster

import (
	"context"
	"testing"
	"time"

	"presenced/storage"
)

// webRec is a WebSink that remembers the last word of each handle.
type webRec map[string]WebStatus

func (w webRec) WebChanged(h string, st WebStatus) { w[h] = st }

func (s *syncService) SetWeb(ctx context.Context, owner string, names []string, public bool) error {
	return s.wait(ctx, func(done func(error)) { s.Service.SetWeb(owner, names, public, done) })
}

// webSetup is ctlSetup with a web sink, connected and resynced: alice
// on-line with handle h, not public yet.
func webSetup(t *testing.T, store *memStore) (*syncService, *testClock, webRec) {
	t.Helper()
	s, clock, _ := ctlSetup(t, store, Options{})
	w := webRec{}
	s.SetWebSink(w)
	s.MarkStale()
	logOn(t, s) // the owner answers the probe
	if err := s.DropStale(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, clock, w
}

func TestWebFollowsTheView(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	if got := s.WebStatus("h"); got != WebOffline {
		t.Fatalf("a handle not public: %s, want offline", got)
	}
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	if w["h"] != WebAvailable || s.WebStatus("h") != WebAvailable {
		t.Fatalf("public and on-line: sink %s, WebStatus %s", w["h"], s.WebStatus("h"))
	}
	for _, c := range []struct {
		do   func()
		want WebStatus
	}{
		{func() { _ = s.Instruct(ctx, pendingOwner, InstructAway) }, WebAway},
		{func() { _ = s.Instruct(ctx, pendingOwner, InstructBusy) }, WebBusy},
		{func() { _ = s.Instruct(ctx, pendingOwner, InstructHide) }, WebOffline},
		{func() { _ = s.Instruct(ctx, pendingOwner, InstructVisible) }, WebAvailable},
		{func() { _ = s.SetVisibility(ctx, pendingOwner, []string{"h"}, true) }, WebOffline},
		{func() { _ = s.SetVisibility(ctx, pendingOwner, []string{"h"}, false) }, WebAvailable},
		{func() { logOff(t, s) }, WebOffline},
		{func() { logOn(t, s) }, WebAvailable},
		{func() { s.Discard() }, WebOffline},          // the connection lost: nothing vouches
		{func() { s.MarkStale() }, WebOffline},        // resyncing: not yet
		{func() { _ = s.DropStale(ctx) }, WebOffline}, // nobody answered: off-line
	} {
		c.do()
		s.settle(ctx)
		if w["h"] != c.want || s.WebStatus("h") != c.want {
			t.Fatalf("sink %s, WebStatus %s; want %s", w["h"], s.WebStatus("h"), c.want)
		}
	}
	// Off the web: off-line at once, and a name nobody holds the same.
	s.MarkStale()
	logOn(t, s)
	_ = s.DropStale(ctx)
	if w["h"] != WebAvailable {
		t.Fatalf("resynced on-line: %s", w["h"])
	}
	store.setDown(true)
	err := s.SetWeb(ctx, pendingOwner, []string{"h"}, false)
	if w["h"] != WebOffline || s.WebStatus("h") != WebOffline {
		t.Fatalf("off the web while storage fails (%v): %s", err, w["h"])
	}
	store.setDown(false)
	if s.WebStatus("nobody") != WebOffline {
		t.Fatal("a name nobody holds is not off-line")
	}
	if err := s.SetWeb(ctx, pendingOwner, []string{"nobody"}, true); err != ErrUnknownHandle {
		t.Fatalf("SetWeb of a name not held = %v", err)
	}
}

func TestWebOffWinsOverOnInFlight(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	var on, off error
	s.Service.SetWeb(pendingOwner, []string{"h"}, true, func(err error) { on = err })
	b := s.take() // on is being stored
	s.Service.SetWeb(pendingOwner, []string{"h"}, false, func(err error) { off = err })
	commit(ctx, store, b, nil)
	s.finish(b)
	s.settle(ctx)
	if on != nil || off != nil || w["h"] == WebAvailable || s.WebStatus("h") != WebOffline {
		t.Fatalf("on %v, off %v: sink %q, WebStatus %s; want offline", on, off, w["h"], s.WebStatus("h"))
	}
	snap, _ := store.Load(ctx)
	for _, h := range snap.Handles {
		if h.Name == "h" && h.Web {
			t.Fatal("storage says public after an off decided last")
		}
	}
}

func TestWebRemovedAndRestarted(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, w := webSetup(t, store)
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	// Public survives a restart, off-line until resynced and on-line.
	s2 := restartFrom(t, store, clock, Options{})
	w2 := webRec{}
	s2.SetWebSink(w2)
	if s2.WebStatus("h") != WebOffline {
		t.Fatal("after a restart nobody answered: want offline")
	}
	s2.MarkStale()
	if err := s2.OwnerPresence(ctx, pendingOwner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusAway}); err != nil {
		t.Fatal(err)
	}
	_ = s2.DropStale(ctx)
	if w2["h"] != WebAway {
		t.Fatalf("public after a restart: %q, want away", w2["h"])
	}
	clock.Add(time.Minute)
	if err := s2.RemoveHandle(ctx, pendingOwner, "h"); err != nil {
		t.Fatal(err)
	}
	if w2["h"] != WebOffline || s2.WebStatus("h") != WebOffline {
		t.Fatalf("removed: %q", w2["h"])
	}
	_ = w
}

// TestWebOfflineOnceWithdrawn: at shutdown the web shows a public handle
// off-line as soon as the withdrawals are made, not only once GoOffline
// runs after the output drained: its subscribers are told unavailable by
// then.
func TestWebOfflineOnceWithdrawn(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	if w["h"] != WebAvailable {
		t.Fatalf("public and on-line: %s", w["h"])
	}
	if wd := s.Withdrawals(time.Now()); len(wd) == 0 {
		t.Fatal("no withdrawal for the visible handle")
	}
	if w["h"] != WebOffline || s.WebStatus("h") != WebOffline {
		t.Fatalf("withdrawn: sink %s, WebStatus %s; want offline", w["h"], s.WebStatus("h"))
	}
}

// TestWebOfflineAtShutdownWithoutWithdrawals: a shutdown whose last
// function withdraws nothing (the component was abandoned: another
// instance speaks for the handles) still takes them off the web.
func TestWebOfflineAtShutdownWithoutWithdrawals(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.Run()
		close(done)
	}()
	var inLast WebStatus
	s.Shutdown(func() { inLast = w["h"] })
	s.Stop()
	<-done
	if inLast != WebOffline || w["h"] != WebOffline {
		t.Fatalf("shut down without withdrawals: %s when last ran, %s after; want offline", inLast, w["h"])
	}
}

// TestSetWebNameTwiceWritesOnce: a name given twice to SetWeb is one
// change: one write, one web-on on its way.
func TestSetWebNameTwiceWritesOnce(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	before := len(s.commits.pending)
	s.Service.SetWeb(pendingOwner, []string{"h", "h"}, true, nil)
	if n, h := len(s.commits.pending)-before, s.handles["h"]; n != 1 || h.webbing != 1 {
		t.Fatalf("[h h] queued %d writes, %d web-ons on their way; want 1 and 1", n, h.webbing)
	}
	s.settle(ctx)
	if w["h"] != WebAvailable {
		t.Fatalf("public: %s", w["h"])
	}
}

// TestWebOfflineWhileResyncing: a reconnection shows every public handle
// off-line until the resync settles, whether or not the lost connection
// was told first (Discard).
func TestWebOfflineWhileResyncing(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, _, w := webSetup(t, store)
	if err := s.SetWeb(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	for _, discard := range []bool{true, false} {
		if w["h"] != WebAvailable {
			t.Fatalf("resynced on-line: %s", w["h"])
		}
		if discard {
			s.Discard()
		}
		s.MarkStale()
		if w["h"] != WebOffline {
			t.Fatalf("resyncing (discarded %v): %s, want offline", discard, w["h"])
		}
		logOn(t, s)
		if err := s.DropStale(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
