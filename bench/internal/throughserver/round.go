package throughserver

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// mode says which presences from handles a round counts.
type mode int

const (
	modeShow        mode = iota + 1 // available with <show> equal to round.show
	modeAvailable                   // available, any show
	modeUnavailable                 // type='unavailable'
	modeSubscribed                  // type='subscribed'
)

// round is one closed-loop measurement: every client must receive one
// matching presence from each of the handles h0…h(handles-1).
type round struct {
	mode    mode
	show    string
	handles int

	remaining atomic.Int64  // clients not yet complete
	done      chan struct{} // closed when remaining reaches 0
}

func newRound(m mode, show string, handles, clients int) *round {
	r := &round{mode: m, show: show, handles: handles, done: make(chan struct{})}
	r.remaining.Store(int64(clients))
	if clients == 0 || handles == 0 {
		close(r.done)
	}
	return r
}

// matches reports whether a presence of type typ with show counts.
func (r *round) matches(typ, show []byte) bool {
	switch r.mode {
	case modeShow:
		return len(typ) == 0 && string(show) == r.show
	case modeAvailable:
		return len(typ) == 0
	case modeUnavailable:
		return string(typ) == "unavailable"
	case modeSubscribed:
		return string(typ) == "subscribed"
	}
	return false
}

// tally is one client's count for the current round. Its mutex is held by
// the client's reader for each read's worth of stanzas.
type tally struct {
	mu          sync.Mutex
	r           *round
	seen        []uint64 // bit j: handle j counted
	got, dup    int      // distinct handles counted; repeats of counted ones
	other       int      // presences from handles that did not match
	first, last time.Time
}

// arm resets the tally for r (nil: count nothing).
func (t *tally) arm(r *round) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.r = r
	t.got, t.dup, t.other = 0, 0, 0
	t.first, t.last = time.Time{}, time.Time{}
	if r == nil {
		return
	}
	n := (r.handles + 63) / 64
	if cap(t.seen) < n {
		t.seen = make([]uint64, n)
	}
	t.seen = t.seen[:n]
	clear(t.seen)
}

// count records one presence from handle j. The caller holds t.mu.
func (t *tally) count(j int, typ, show []byte, now time.Time) {
	r := t.r
	if r == nil {
		return
	}
	if j >= r.handles || !r.matches(typ, show) {
		t.other++
		return
	}
	w, b := j/64, uint64(1)<<(j%64)
	if t.seen[w]&b != 0 {
		t.dup++
		return
	}
	t.seen[w] |= b
	t.got++
	if t.first.IsZero() {
		t.first = now
	}
	t.last = now
	if t.got == r.handles && r.remaining.Add(-1) == 0 {
		close(r.done)
	}
}

// outcome is what a round delivered.
type outcome struct {
	Expected   int `json:"expected"`
	Delivered  int `json:"delivered"` // distinct (client, handle) pairs
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
	Other      int `json:"other"` // presences from handles that did not match the round
	// Duration runs from the trigger's first byte to the last counted
	// presence (the last client complete when nothing is missing).
	Duration time.Duration `json:"duration_ns"`
	// First runs from the trigger to the first counted presence at any
	// client.
	First    time.Duration `json:"first_ns"`
	Complete bool          `json:"complete"`
}

// runRound arms every client for r, calls trigger (which sends the stanzas
// that start the round and returns the time their first byte was written),
// and waits until every client is complete, ctx ends or timeout has passed
// since the call: the time trigger takes counts against it.
func runRound(ctx context.Context, clients []*client, r *round, timeout time.Duration, trigger func() (time.Time, error)) (outcome, error) {
	deadline := time.Now().Add(timeout)
	for _, c := range clients {
		c.t.arm(r)
	}
	defer func() {
		for _, c := range clients {
			c.t.arm(nil)
		}
	}()
	t0, err := trigger()
	if err != nil {
		return outcome{}, err
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-r.done:
	case <-timer.C:
	case <-ctx.Done():
		return outcome{}, ctx.Err()
	}
	return collect(clients, r, t0), nil
}

// collect reads the clients' tallies for r, started at t0.
func collect(clients []*client, r *round, t0 time.Time) outcome {
	o := outcome{Expected: len(clients) * r.handles}
	var first, last time.Time
	for _, c := range clients {
		c.t.mu.Lock()
		o.Delivered += c.t.got
		o.Duplicates += c.t.dup
		o.Other += c.t.other
		if !c.t.first.IsZero() && (first.IsZero() || c.t.first.Before(first)) {
			first = c.t.first
		}
		if c.t.last.After(last) {
			last = c.t.last
		}
		c.t.mu.Unlock()
	}
	o.Missing = o.Expected - o.Delivered
	o.Complete = o.Missing == 0
	if !first.IsZero() {
		o.First = first.Sub(t0)
		o.Duration = last.Sub(t0)
	}
	return o
}
