package roster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"presenced/storage"
)

func newTestService(t *testing.T, store storage.Store) *Service {
	t.Helper()
	s, err := New(context.Background(), store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
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
		if _, err := s.AddHandle(ctx, owner, h); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			if err := s.Subscribe(ctx, h, fmt.Sprintf("c%d@example.net", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.AddHandle(ctx, owner, "one-too-many"); err != ErrHandleLimit {
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
// refused and leaves the flags as they were.
func TestStorageDownChangesNothing(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	s := newTestService(t, store)
	const owner = "alice@example.org"
	if _, err := s.AddHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Flags(owner)
	store.setDown(true)
	if err := s.Instruct(ctx, owner, InstructHide); err == nil || !errors.Is(err, errDown) {
		t.Fatalf("Instruct(hide) with storage down = %v, want the storage error", err)
	}
	if after, _ := s.Flags(owner); after != before {
		t.Fatalf("flags changed although storage failed: %+v, was %+v", after, before)
	}
	if _, err := s.AddHandle(ctx, owner, "h2"); err == nil {
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
}

// TestSinceMarksVisibilityChanges: Since moves when the account becomes
// visible or stops being visible, and only then, so hiding and going
// off-line report the same kind of moment.
func TestSinceMarksVisibilityChanges(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := New(ctx, newMemStore(), Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	const owner = "alice@example.org"
	if _, err := s.AddHandle(ctx, owner, "h"); err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration, f func() error) time.Time {
		t.Helper()
		clock = clock.Add(d)
		if err := f(); err != nil {
			t.Fatal(err)
		}
		fl, _ := s.Flags(owner)
		return fl.Since
	}
	online := step(time.Minute, func() error {
		return s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "pc", Available: true, Status: storage.StatusUndefined})
	})
	if !online.Equal(clock) {
		t.Fatalf("Since after coming on-line = %v, want %v", online, clock)
	}
	hid := step(time.Minute, func() error { return s.Instruct(ctx, owner, InstructHide) })
	if !hid.Equal(clock) {
		t.Fatalf("Since after hiding = %v, want %v", hid, clock)
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
