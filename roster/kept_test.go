package roster

// Kept stamps across outages, crashes and resyncs (regressions of a
// review of the lift rule, doc/control.md "Lifting").

import (
	"context"
	"testing"
	"time"
)

// keptSetup: handle h hidden at H1 while visible, owner off-line at T2,
// h shown (while off-line): carol and dave keep H1.
func keptSetup(t *testing.T) (*syncService, *memStore, *testClock, *ctlRecorder, time.Time) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	h1 := clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, true); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	logOff(t, s)
	clock.Add(time.Minute)
	if err := s.SetVisibility(ctx, pendingOwner, []string{"h"}, false); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	if len(store.kept) == 0 {
		t.Fatal("no kept rows")
	}
	rec.reset()
	return s, store, clock, rec, h1
}

// Outage variant: the unkeep of visibleAgain fails, is not retried.
func TestUnkeepLostInOutage(t *testing.T) {
	ctx := context.Background()
	s, store, clock, rec, h1 := keptSetup(t)
	store.setDown(true)
	clock.Add(time.Minute)
	s.Service.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true})
	s.settle(ctx) // presence holds in memory: visible, visibleAgain, OpUnkeep fails
	s.settle(ctx)
	flushTo(t, s, rec)
	store.setDown(false)
	clock.Add(time.Minute)
	s.settle(ctx)
	flushTo(t, s, rec)
	rec.reset()
	at := clock.Add(time.Minute)
	for _, w := range s.Withdrawals(at) {
		for _, c := range w.Contacts {
			rec.Presence(ctx, w.Handle, c, w.View)
		}
	}
	if err := s.GoOffline(ctx, at, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("at shutdown: %v (kept rows %v)", rec.got, store.kept)
	rec.reset()
	clock.Add(time.Hour)
	s2 := restartFrom(t, store, clock, Options{})
	flushTo(t, s2, rec)
	for _, st := range rec.got {
		if st.v.Since.Equal(h1) {
			t.Errorf("after restart %s got %v: back to the old kept stamp, after unavailable since %v at shutdown", st.contact, st, at)
		}
	}
}

// Crash variant: flags (visible) committed, the unkeep queued behind it not yet.
func TestUnkeepCrashWindow(t *testing.T) {
	ctx := context.Background()
	s, store, clock, rec, h1 := keptSetup(t)
	clock.Add(time.Minute)
	if err := s.Service.OwnerPresence(pendingOwner, OwnerPresence{Resource: "pc", Available: true}); err != nil {
		t.Fatal(err)
	}
	b := s.take()
	commit(ctx, s.store, b, nil)
	s.finish(b) // visible committed; OpUnkeep now pending
	flushTo(t, s, rec)
	t.Logf("before crash: %v", rec.got)
	rec.reset()
	crash := clock.Add(time.Minute)
	s2 := restartFrom(t, store, clock, Options{})
	flushTo(t, s2, rec)
	for _, st := range rec.got {
		if st.v.Since.Equal(h1) {
			t.Errorf("after crash %s got %v, others %v: seen available, now the old kept stamp", st.contact, st, crash)
		}
	}
}

func TestLiftDuringResyncKeepsTheResync(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s, clock, rec := ctlSetup(t, store, Options{})
	clock.Add(time.Minute)
	logOff(t, s)
	clock.Add(time.Minute)
	if err := s.Block(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	rec.reset()
	s.Discard()
	s.MarkStale()
	if err := s.Unblock(ctx, pendingOwner, carolJID); err != nil {
		t.Fatal(err)
	}
	if err := s.DropStale(ctx); err != nil {
		t.Fatal(err)
	}
	flushTo(t, s, rec)
	t.Logf("after reconnect: carol %v dave %v", rec.to(carolJID), rec.to(daveJID))
	if len(rec.to(carolJID)) == 0 {
		t.Errorf("carol not resynced")
	}
}
