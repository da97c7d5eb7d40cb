package roster

import (
	"context"
	"fmt"
	"testing"

	"presenced/storage"
)

// orderSender records the order of stanzas by sending account.
type orderSender struct {
	owners map[string]string // handle → owner
	seq    []string          // owner of each stanza sent
}

func (o *orderSender) Presence(ctx context.Context, handle, contact string, v View) error {
	o.seq = append(o.seq, o.owners[handle])
	return nil
}

func (o *orderSender) Unsubscribed(context.Context, string, string) error { return nil }

// bigAccount gives owner handles × subs subscriptions, straight into the
// indexes (a test helper; the protocol path is tested elsewhere).
func bigAccount(t testing.TB, s *syncService, owner string, handles, subs int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < handles; i++ {
		h := fmt.Sprintf("%s-h%02d", owner[:1], i)
		if err := s.AddHandle(ctx, owner, h); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < subs; j++ {
			if err := s.Subscribe(ctx, h, fmt.Sprintf("c%04d@example.net", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestBigFanOutDoesNotStallOthers: while one account's 64,000 stanzas go
// out, another account's change is sent after at most one slice of them.
func TestBigFanOutDoesNotStallOthers(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	bigAccount(t, s, "alice@example.org", 64, 1000)
	bigAccount(t, s, "bob@example.org", 1, 1)
	snd := &orderSender{owners: map[string]string{}}
	for _, o := range []string{"alice@example.org", "bob@example.org"} {
		for _, h := range s.Handles(o) {
			snd.owners[h] = o
		}
	}
	for _, o := range []string{"alice@example.org", "bob@example.org"} {
		if err := s.OwnerPresence(ctx, o, OwnerPresence{Resource: "r", Available: true, Status: storage.StatusAway}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Outbox().Flush(ctx, snd); err != nil {
		t.Fatal(err)
	}
	if len(snd.seq) != 64001 {
		t.Fatalf("sent %d stanzas, want 64001", len(snd.seq))
	}
	bobAt := -1
	for i, o := range snd.seq {
		if o == "bob@example.org" {
			bobAt = i
		}
	}
	// A fixed bound, not fanOutSlice: the test must fail if slicing goes.
	if bobAt < 0 || bobAt > 1000 {
		t.Fatalf("bob's change went out as stanza %d of %d, want within the first 1000", bobAt, len(snd.seq))
	}
}

// benchmarkStatusChange measures one status change of an account with
// handles × subs subscribers, through the outbox to a sender that discards;
// it reports the cost per stanza so runs of different sizes compare.
func benchmarkStatusChange(b *testing.B, handles, subs int, withhold ...func(*syncService, string)) {
	ctx := context.Background()
	s, err := newSync(New(ctx, newMemStore(), Options{}))
	if err != nil {
		b.Fatal(err)
	}
	const owner = "alice@example.org"
	bigAccount(b, s, owner, handles, subs)
	for _, w := range withhold {
		w(s, owner)
	}
	// Straight into the engine's own loop, with nothing held: the cost of
	// deciding, committing and fanning out, not of a test's recorder.
	s.SetSender(discard{})
	shows := []storage.Status{storage.StatusAway, storage.StatusBusy}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Service.OwnerPresence(owner, OwnerPresence{Resource: "r", Available: true, Status: shows[i%2]}); err != nil {
			b.Fatal(err)
		}
		s.settle(ctx)
		for s.notes.busy() {
			s.pump()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*handles*subs), "ns/stanza")
}

// BenchmarkStatusChange1 is the baseline: one handle, one subscriber.
func BenchmarkStatusChange1(b *testing.B) { benchmarkStatusChange(b, 1, 1) }

// BenchmarkStatusChange64x1000 is the patent's worst case: 64 handles with
// 1,000 subscribers each.
func BenchmarkStatusChange64x1000(b *testing.B) { benchmarkStatusChange(b, 64, 1000) }

// BenchmarkStatusChange64x1000Withheld is the worst case with the owner's
// control in use: 100 of the 1,000 contacts blocked and 8 of the 64
// handles hidden, so the pass asks of every subscriber whether it is
// withheld and sends to 56 × 900 of them (ns/stanza still counts all
// 64,000 subscribers, to compare with BenchmarkStatusChange64x1000).
func BenchmarkStatusChange64x1000Withheld(b *testing.B) {
	benchmarkStatusChange(b, 64, 1000, func(s *syncService, owner string) {
		ctx := context.Background()
		for j := 0; j < 100; j++ {
			if err := s.Block(ctx, owner, fmt.Sprintf("c%04d@example.net", j)); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.SetVisibility(ctx, owner, s.Handles(owner)[:8], true); err != nil {
			b.Fatal(err)
		}
		s.settle(ctx)
		for s.notes.busy() {
			s.pump()
		}
	})
}

// BenchmarkStatusChange64x1000Web is the worst case with every handle
// public on the web: each change also tells the web sink of 64 handles
// (a map here, as web.Statuses keeps; its streams are measured in package
// web), to compare with BenchmarkStatusChange64x1000.
func BenchmarkStatusChange64x1000Web(b *testing.B) {
	benchmarkStatusChange(b, 64, 1000, func(s *syncService, owner string) {
		s.SetWebSink(webRec{})
		if err := s.SetWeb(context.Background(), owner, s.Handles(owner), true); err != nil {
			b.Fatal(err)
		}
	})
}

// TestOneContinuationPerAccount: an owner who changes status while a big
// pass is under way keeps one pass, not a chain per change.
func TestOneContinuationPerAccount(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, newMemStore())
	const owner = "alice@example.org"
	bigAccount(t, s, owner, 64, 100)
	shows := []storage.Status{storage.StatusAway, storage.StatusBusy}
	for i := 0; i < 20; i++ {
		if err := s.OwnerPresence(ctx, owner, OwnerPresence{Resource: "r", Available: true, Status: shows[i%2]}); err != nil {
			t.Fatal(err)
		}
		// Do one slice, as the engine does between changes.
		if s.notes.busy() {
			s.pump()
		}
		passes := 0
		for _, j := range s.notes.queue {
			if j.pass != nil && j.pass.a.jid == owner {
				passes++
			}
		}
		if passes > 1 {
			t.Fatalf("after %d changes %d passes are queued, want at most 1", i+1, passes)
		}
	}
}
