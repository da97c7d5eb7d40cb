package roster

import (
	"slices"
	"sync/atomic"
	"time"
)

// Counts are gauges of a Service's state, for monitoring.
type Counts struct {
	Accounts      int // accounts
	Handles       int // handles
	Subscriptions int // subscriptions, over every handle
	Pending       int // subscription requests waiting for their owners
	Queued        int // fan-out jobs queued (an account's pass, or a removed handle's notices)
}

// counts are the atomics behind Counts: the engine updates them as the
// state changes, any goroutine reads them. Nothing walks the state to
// count it.
type counts struct {
	accounts, handles, subs, pending, queued atomic.Int64
}

// Counts returns the gauges of the Service's state. It may be called from
// any goroutine; the numbers are each current, not a snapshot together.
// Queued is the queue as the engine last went round its loop (Run).
func (s *Service) Counts() Counts {
	c := &s.counts
	return Counts{
		Accounts:      int(c.accounts.Load()),
		Handles:       int(c.handles.Load()),
		Subscriptions: int(c.subs.Load()),
		Pending:       int(c.pending.Load()),
		Queued:        int(c.queued.Load()),
	}
}

// countQueue publishes the length of the fan-out queue, if it changed.
func (s *Service) countQueue() {
	if q := int64(len(s.notes.queue)); q != s.counts.queued.Load() {
		s.counts.queued.Store(q)
	}
}

// addRequest appends a pending request to h.
func (s *Service) addRequest(h *handle, r request) {
	h.requests = append(h.requests, r)
	s.counts.pending.Add(1)
}

// deleteRequest deletes h's pending request i.
func (s *Service) deleteRequest(h *handle, i int) {
	h.requests = slices.Delete(h.requests, i, i+1)
	s.counts.pending.Add(-1)
}

// observeCommit reports one transaction to Options.ObserveCommit.
func (s *Service) observeCommit(began time.Time, err error) {
	if s.observe != nil {
		s.observe(time.Since(began), err)
	}
}
