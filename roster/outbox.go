package roster

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
)

// Sender delivers notifications. The component implements it with presence
// stanzas; tests implement it with a recorder.
type Sender interface {
	// Presence sends v to contact as the presence of handle.
	Presence(ctx context.Context, handle, contact string, v View) error
	// Unsubscribed tells contact that its subscription to handle has ended.
	Unsubscribed(ctx context.Context, handle, contact string) error
}

type jobKind int

const (
	jobAccount  jobKind = iota // bring every subscriber of the account up to date
	jobOne                     // send the current presence of handle to contact
	jobRemoved                 // handle was removed: unavailable, then unsubscribed
	jobContinue                // the rest of an account's pass
)

// fanOutSlice is how many stanzas one account's pass sends before it goes
// to the back of the queue, so that one account with 64 handles × 1,000
// subscribers does not hold up the notifications of every other account.
const fanOutSlice = 256

// target is one subscription an account's pass visits.
type target struct{ handle, contact string }

type job struct {
	kind     jobKind
	key      string // account JID or handle
	owner    string // jobRemoved: the account that held the handle
	contact  string
	contacts []string
	targets  []target // jobContinue: what is left of the pass
}

// Outbox is the single writer of notifications. State changes queue work
// here without blocking; Run drains the queue and sends through a Sender.
//
// The queue is bounded by the state it describes, not by the rate of
// changes: at most one pending pass per account and one pending answer per
// subscription, plus the subscribers of removed handles. A pass always sends
// the View current at the moment of sending and skips subscribers that
// already have it, so bursts of changes coalesce and no stale presence
// leaves after a newer one.
type Outbox struct {
	s *Service

	mu      sync.Mutex
	queue   []*job              // guarded by mu
	working int                 // guarded by mu; jobs taken but not finished
	pending map[string]struct{} // guarded by mu; dedupe keys of queued jobs
	// cont holds the queued continuation of each account's pass, at most
	// one per account: a new pass refreshes it instead of starting another.
	cont map[string]*job // guarded by mu
	// parked holds removal notices whose sending failed; they go out
	// again after the next connection, or at shutdown.
	parked []*job // guarded by mu
	wake   chan struct{}
}

func newOutbox(s *Service) *Outbox {
	return &Outbox{s: s, pending: make(map[string]struct{}), cont: make(map[string]*job), wake: make(chan struct{}, 1)}
}

func (o *Outbox) push(j *job, dedupe string) {
	o.mu.Lock()
	if dedupe != "" {
		if _, ok := o.pending[dedupe]; ok {
			o.mu.Unlock()
			return
		}
		o.pending[dedupe] = struct{}{}
	}
	o.queue = append(o.queue, j)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *Outbox) account(jid string) {
	o.push(&job{kind: jobAccount, key: jid}, "a\x00"+jid)
}

func (o *Outbox) one(handle, contact string) {
	o.push(&job{kind: jobOne, key: handle, contact: contact}, "o\x00"+handle+"\x00"+contact)
}

func (o *Outbox) removed(owner, handle string, contacts []string) {
	o.push(&job{kind: jobRemoved, key: handle, owner: owner, contacts: contacts}, "")
}

func (o *Outbox) park(j *job) {
	o.mu.Lock()
	o.parked = append(o.parked, j)
	o.mu.Unlock()
}

// unpark queues the parked removal notices again.
func (o *Outbox) unpark() {
	o.mu.Lock()
	parked := o.parked
	o.parked = nil
	o.mu.Unlock()
	for _, j := range parked {
		o.push(j, "")
	}
}

// takeRemovals returns the removal notices still to be sent, queued or
// parked, and forgets them. It is used at shutdown, once the outbox has
// stopped.
func (o *Outbox) takeRemovals() []*job {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := append(o.removeLocked(isRemoval), o.parked...)
	o.parked = nil
	return out
}

func isRemoval(j *job) bool { return j.kind == jobRemoved }

// removeLocked takes the queued jobs for which take is true out of the
// queue, in order, and returns them.
func (o *Outbox) removeLocked(take func(*job) bool) []*job {
	var taken []*job
	kept := o.queue[:0]
	for _, j := range o.queue {
		if take(j) {
			taken = append(taken, j)
		} else {
			kept = append(kept, j)
		}
	}
	clear(o.queue[len(kept):])
	o.queue = kept
	return taken
}

// Len returns the number of jobs queued or being sent.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue) + o.working
}

func (o *Outbox) done() {
	o.mu.Lock()
	o.working--
	o.mu.Unlock()
}

// Discard drops the queued jobs that the next connection's full resend
// makes again; it is used when the connection is lost. The notices of
// removed handles are kept: their subscriptions are gone, so no resend
// could rebuild them.
func (o *Outbox) Discard() {
	o.mu.Lock()
	o.removeLocked(func(j *job) bool { return !isRemoval(j) })
	clear(o.pending)
	clear(o.cont)
	o.mu.Unlock()
}

func (o *Outbox) next() (*job, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) == 0 {
		return nil, false
	}
	j := o.queue[0]
	o.working++
	o.queue[0] = nil
	o.queue = o.queue[1:]
	switch j.kind {
	case jobContinue:
		delete(o.cont, j.key)
	case jobAccount:
		delete(o.pending, "a\x00"+j.key)
	case jobOne:
		delete(o.pending, "o\x00"+j.key+"\x00"+j.contact)
	}
	return j, true
}

// Run sends queued notifications through snd until ctx ends. A send error
// is logged and the job dropped, since the sender's connection is gone and
// the next connection resends everything, except a removal notice, which
// is parked until then.
func (o *Outbox) Run(ctx context.Context, snd Sender, log *slog.Logger) {
	for {
		for {
			j, ok := o.next()
			if !ok {
				break
			}
			err := o.do(ctx, snd, j)
			o.done()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("notification not sent", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		}
	}
}

// Flush sends every queued notification through snd and returns when the
// queue is empty or a send fails. Tests use it instead of Run.
func (o *Outbox) Flush(ctx context.Context, snd Sender) error {
	for {
		j, ok := o.next()
		if !ok {
			return nil
		}
		err := o.do(ctx, snd, j)
		o.done()
		if err != nil {
			return err
		}
	}
}

func (o *Outbox) do(ctx context.Context, snd Sender, j *job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("roster: panic in outbox: %v\n%s", r, debug.Stack())
		}
	}()
	switch j.kind {
	case jobAccount:
		targets := o.s.targets(j.key)
		o.mu.Lock()
		c := o.cont[j.key]
		if c != nil {
			// A pass is under way: give it the fresh list. Subscribers it
			// already brought up to date are skipped cheaply.
			c.targets = targets
		}
		o.mu.Unlock()
		if c != nil {
			return nil
		}
		return o.fanOut(ctx, snd, j.key, targets)
	case jobContinue:
		return o.fanOut(ctx, snd, j.key, j.targets)
	case jobOne:
		_, err := o.sync(ctx, snd, j.key, j.contact, true)
		return err
	case jobRemoved:
		for i, c := range j.contacts {
			if o.s.IsSubscribed(j.key, c) {
				continue // the handle was added again and c subscribed anew
			}
			err := snd.Presence(ctx, j.key, c, o.s.goneView(j.owner))
			if err == nil {
				err = snd.Unsubscribed(ctx, j.key, c)
			}
			if err != nil {
				// Nothing could rebuild this notice: keep what is left.
				o.park(&job{kind: jobRemoved, key: j.key, owner: j.owner, contacts: j.contacts[i:]})
				return err
			}
		}
	}
	return nil
}

// fanOut brings the targets of an account's pass up to date, at most
// fanOutSlice stanzas at a time; the rest goes to the back of the queue.
// A change made meanwhile queues a new pass, which skips the subscribers
// that are already up to date.
func (o *Outbox) fanOut(ctx context.Context, snd Sender, account string, targets []target) error {
	sent := 0
	for i, tg := range targets {
		if sent == fanOutSlice {
			c := &job{kind: jobContinue, key: account, targets: targets[i:]}
			o.mu.Lock()
			o.cont[account] = c
			o.mu.Unlock()
			o.push(c, "")
			return nil
		}
		did, err := o.sync(ctx, snd, tg.handle, tg.contact, false)
		if err != nil {
			return err
		}
		if did {
			sent++
		}
	}
	return nil
}

// sync sends contact the current View of handle unless it already has it
// (or force is set), and reports whether it sent. The account's gate is
// held while sending, so a state change waits for this one stanza and the
// next pass carries the new View.
func (o *Outbox) sync(ctx context.Context, snd Sender, handle, contact string, force bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s := o.s
	s.mu.Lock()
	owner, ok := s.handles[handle]
	if !ok {
		s.mu.Unlock()
		return false, nil
	}
	a := s.accounts[owner]
	s.mu.Unlock()

	a.gate.Lock()
	defer a.gate.Unlock()
	s.mu.Lock()
	st := s.subs[handle][contact]
	if st == nil || s.handles[handle] != owner {
		s.mu.Unlock()
		return false, nil
	}
	v := ViewOf(a.flags)
	if !force && st.valid && st.sent == v {
		s.mu.Unlock()
		return false, nil
	}
	st.sent, st.valid = v, true
	s.mu.Unlock()
	if err := snd.Presence(ctx, handle, contact, v); err != nil {
		s.mu.Lock()
		st.valid = false
		s.mu.Unlock()
		return false, err
	}
	return true, nil
}

// targets lists every subscription of every handle of account. The order
// does not matter: every pass visits them all.
func (s *Service) targets(account string) []target {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[account]
	if a == nil {
		return nil
	}
	n := 0
	for h := range a.handles {
		n += len(s.subs[h])
	}
	out := make([]target, 0, n)
	for h := range a.handles {
		for c := range s.subs[h] {
			out = append(out, target{h, c})
		}
	}
	return out
}
