package roster

import (
	"context"
	"fmt"

	"presenced/storage"
)

// The tests drive a Service without its engine goroutine: syncService
// gives every change the synchronous form the tests read best in. Each
// call makes the change, commits everything pending as Run's committer
// would, and returns what the change's callback was given. Everything the
// Service sends is held, as in the component's output buffer, until Flush
// delivers it, in order, to a legacySender.

// legacySender is what tests implement to watch the stanzas.
type legacySender interface {
	Presence(ctx context.Context, handle, contact string, v View) error
	Unsubscribed(ctx context.Context, handle, contact string) error
}

type syncService struct {
	*Service
	out *heldOutput
}

func newSync(s *Service, err error) (*syncService, error) {
	if err != nil {
		return nil, err
	}
	out := &heldOutput{}
	s.SetSender(out)
	return &syncService{Service: s, out: out}, nil
}

func (s *syncService) wait(ctx context.Context, f func(done func(error))) error {
	var got error
	called := false
	f(func(err error) { got, called = err, true })
	s.settle(ctx)
	if !called {
		panic("roster test: a change did not complete after settle")
	}
	return got
}

func (s *syncService) AddHandle(ctx context.Context, owner, h string) error {
	return s.wait(ctx, func(done func(error)) { s.Service.AddHandle(owner, h, storage.PolicyOpen, done) })
}

func (s *syncService) AddHandleWith(ctx context.Context, owner, h string, p storage.Policy) error {
	return s.wait(ctx, func(done func(error)) { s.Service.AddHandle(owner, h, p, done) })
}

// SubscribeOutcome subscribes and returns what became of the request.
func (s *syncService) SubscribeOutcome(ctx context.Context, h, contact string) (SubscribeOutcome, error) {
	var out SubscribeOutcome
	err := s.wait(ctx, func(done func(error)) {
		s.Service.Subscribe(h, contact, func(o SubscribeOutcome, err error) { out = o; done(err) })
	})
	return out, err
}

func (s *syncService) Approve(ctx context.Context, owner, h, contact string) error {
	return s.wait(ctx, func(done func(error)) { s.Service.Approve(owner, h, contact, done) })
}

// Deny returns Deny's own error, or else the outcome of its write.
func (s *syncService) Deny(ctx context.Context, owner, h, contact string) error {
	return s.wait(ctx, func(done func(error)) {
		if err := s.Service.Deny(owner, h, contact, done); err != nil {
			done(err)
		}
	})
}

func (s *syncService) RemoveHandle(ctx context.Context, owner, h string) error {
	return s.wait(ctx, func(done func(error)) { s.Service.RemoveHandle(owner, h, done) })
}

func (s *syncService) Subscribe(ctx context.Context, h, contact string) error {
	return s.wait(ctx, func(done func(error)) {
		s.Service.Subscribe(h, contact, func(_ SubscribeOutcome, err error) { done(err) })
	})
}

func (s *syncService) Instruct(ctx context.Context, owner string, in Instruction) error {
	return s.wait(ctx, func(done func(error)) { s.Service.Instruct(owner, in, done) })
}

func (s *syncService) Unsubscribe(ctx context.Context, h, contact string) (bool, error) {
	var was bool
	err := s.wait(ctx, func(done func(error)) {
		s.Service.Unsubscribe(h, contact, func(w bool, err error) { was = w; done(err) })
	})
	return was, err
}

// OwnerPresence returns the storage error that the Service logs, if any.
func (s *syncService) OwnerPresence(ctx context.Context, owner string, p OwnerPresence) error {
	if err := s.Service.OwnerPresence(owner, p); err != nil {
		return err
	}
	var err error
	s.AfterCommitErr(func(e error) { err = e }, owner)
	s.settle(ctx)
	return err
}

// AfterCommitErr reports, once committed, the error of the pending flags
// write of owner, if one is pending.
func (s *syncService) AfterCommitErr(f func(error), owner string) {
	if a := s.accounts[owner]; a != nil && a.flagsOp != nil {
		// A presence step that changes nothing, carrying the callback.
		a.flagsOp.steps = append(a.flagsOp.steps, flagStep{at: s.now(), done: f})
	}
}

func (s *syncService) DropStale(ctx context.Context) error {
	done := false
	s.Service.DropStale(func() { done = true })
	s.settle(ctx)
	if !done {
		return fmt.Errorf("DropStale did not finish")
	}
	return nil
}

// Freeze refuses changes as Shutdown does.
func (s *syncService) Freeze() { s.stopping = true }

func (s *syncService) Outbox() syncOutbox { return syncOutbox{s} }

type syncOutbox struct{ s *syncService }

// Flush delivers what was sent, then does every fan-out job, delivering as
// it goes. A failing sender stands for a lost connection: what follows the
// failure is not written, and the Service is told the connection is gone.
func (o syncOutbox) Flush(ctx context.Context, snd legacySender) error {
	s := o.s
	for {
		if err := s.out.deliver(ctx, snd); err != nil {
			s.Discard()
			s.out.held = nil
			return err
		}
		if !s.notes.busy() {
			return nil
		}
		s.pump()
	}
}

func (o syncOutbox) Len() int { return len(o.s.notes.queue) }

func (o syncOutbox) Discard() { o.s.Discard() }

// heldOutput is the Sender of a syncService.
type heldOutput struct {
	held    []heldStanza
	mark    uint64 // stanzas sent
	written uint64 // stanzas delivered
}

type heldStanza struct {
	handle, contact string
	v               View
	unsubscribed    bool
}

func (h *heldOutput) Presence(handle, contact string, v View) {
	h.held = append(h.held, heldStanza{handle: handle, contact: contact, v: v})
	h.mark++
}

func (h *heldOutput) Unsubscribed(handle, contact string) {
	h.held = append(h.held, heldStanza{handle: handle, contact: contact, unsubscribed: true})
	h.mark++
}

func (h *heldOutput) Flush()          {}
func (h *heldOutput) Mark() uint64    { return h.mark }
func (h *heldOutput) Written() uint64 { return h.written }

func (h *heldOutput) deliver(ctx context.Context, snd legacySender) error {
	for len(h.held) > 0 {
		st := h.held[0]
		var err error
		if st.unsubscribed {
			err = snd.Unsubscribed(ctx, st.handle, st.contact)
		} else {
			err = snd.Presence(ctx, st.handle, st.contact, st.v)
		}
		if err != nil {
			return err
		}
		h.held = h.held[1:]
		h.written++
	}
	return nil
}
