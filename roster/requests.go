package roster

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"presenced/storage"
)

// Subscription requests to ask handles wait for the owner's decision.
// They are stored, so they survive restarts; each handle holds at most
// limits.pending of them, and a contact has at most one per handle.

// Request is a pending subscription request.
type Request struct {
	Handle, Contact string
	At              time.Time
}

// request records contact's request to h; done tells Requested once it is
// stored, Ignored otherwise.
func (s *Service) request(h *handle, contact string, done func(SubscribeOutcome, error)) {
	key := pendingKey{h, contact}
	if s.requesting[key].live() || h.hasRequest(contact) {
		done(Ignored, nil) // one request per contact: the owner was told
		return
	}
	if s.requesting.full(key) {
		s.holdBack(s.requesting, key, done)
		return
	}
	if len(h.requests)+h.asking >= s.limits.pending {
		s.refuse("pending:"+h.name, "subscription request dropped: the handle has as many pending requests as it may", "handle", h.name, "limit", s.limits.pending)
		done(Ignored, nil)
		return
	}
	rw := s.requesting.start(key)
	h.asking++
	now := s.now()
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpAddRequest, Handle: h.name, Contact: contact, Now: now},
		apply: func(err error) {
			h.asking--
			cancelled, again := s.requesting.end(key, rw, err == nil)
			defer again()
			switch {
			case errors.Is(err, storage.ErrNotFound):
				done(Ignored, ErrUnknownHandle)
			case err != nil:
				done(Ignored, fmt.Errorf("roster: store request: %w", err))
			case cancelled || s.handles[h.name] != h:
				// Withdrawn, or the handle removed, meanwhile: the
				// removal queued after this took the row away.
				done(Ignored, nil)
			default:
				s.addRequest(h, request{contact: contact, at: now})
				done(Requested, nil)
			}
		},
	})
}

func (h *handle) hasRequest(contact string) bool { return h.requestIndex(contact) >= 0 }

func (h *handle) requestIndex(contact string) int {
	return slices.IndexFunc(h.requests, func(r request) bool { return r.contact == contact })
}

// dropRequest withdraws contact's request to h, if any, at once; its
// deletion is stored until it is (or until the request's own write, on its
// way, has failed: then there is nothing to delete).
func (s *Service) dropRequest(h *handle, contact string) {
	onWay := s.requesting[pendingKey{h, contact}].cancel()
	i := h.requestIndex(contact)
	if i < 0 && onWay == nil {
		return
	}
	e := &entry{
		op:   storage.Op{Kind: storage.OpRemoveRequest, Handle: h.name, Contact: contact},
		must: true,
		apply: func(err error) {
			if err != nil {
				s.refuse("store:withdrawn-request", "withdrawn requests not stored yet; retrying", "err", err)
			}
		},
	}
	if i >= 0 {
		s.deleteRequest(h, i)
	} else {
		e.skip = onWay.moot
	}
	s.commits.add(e)
}

// Requests returns the requests pending for owner's handles, in handle
// order, then oldest first.
func (s *Service) Requests(owner string) []Request {
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	var out []Request
	for _, h := range a.handles {
		for _, r := range h.requests {
			out = append(out, Request{Handle: h.name, Contact: r.contact, At: r.at})
		}
	}
	return out
}

// pendingRequest returns owner's handle name and the index of contact's
// request to it, or an error.
func (s *Service) pendingRequest(owner, name, contact string) (*handle, int, error) {
	h := s.handles[name]
	if h == nil || h.owner.jid != owner {
		return nil, 0, ErrUnknownHandle
	}
	i := h.requestIndex(contact)
	if i < 0 || s.pendingSubs[pendingKey{h, contact}].live() {
		return nil, 0, ErrNotPending // none, or being approved
	}
	return h, i, nil
}

// Approve approves contact's request to owner's handle: the subscription
// is stored, and done(nil) runs once it is; the caller then approves it
// to the contact and calls Probe. On error the request is still pending
// (unless it was not: ErrNotPending, ErrUnknownHandle, or withdrawn
// meanwhile).
func (s *Service) Approve(owner, name, contact string, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	h, _, err := s.pendingRequest(owner, name, contact)
	if err != nil {
		done(err)
		return
	}
	// The request stays pending until the subscription is stored, which
	// deletes it in storage too (Answers); meanwhile it cannot be decided
	// again (pendingRequest).
	s.storeSubscription(h, contact, true, func(err error) {
		if i := h.requestIndex(contact); err == nil && i >= 0 {
			s.deleteRequest(h, i)
		}
		done(err)
	})
}

// Deny denies contact's request to owner's handle. It takes effect at
// once (the caller tells the contact at once); stored is told the outcome
// of the write (ErrNotStored when it is being written again).
func (s *Service) Deny(owner, name, contact string, stored func(error)) error {
	if s.stopping {
		return ErrStopping
	}
	h, i, err := s.pendingRequest(owner, name, contact)
	if err != nil {
		return err
	}
	s.deleteRequest(h, i)
	stored = orNop(stored)
	s.commits.add(&entry{
		op:   storage.Op{Kind: storage.OpRemoveRequest, Handle: name, Contact: contact},
		must: true,
		apply: func(err error) {
			if err != nil {
				err = fmt.Errorf("roster: deny: %w", err)
			}
			stored(err)
		},
	})
	return nil
}
