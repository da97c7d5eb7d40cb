package roster

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"presenced/storage"
)

// The changes. Each decides at once, from memory, whether it is allowed,
// queues its storage write in the pending batch and returns; it takes
// effect in memory, and done runs, once the batch committed. So nothing a
// subscriber is sent and no acknowledgement depends on a change that could
// still be lost. done may be nil; it runs on the engine goroutine.

// AddHandle gives handle (already prepared) to owner, creating the account
// on first use. A handle the owner already holds changes nothing and
// fails with ErrHandleOwned.
func (s *Service) AddHandle(owner, name string, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	if h := s.handles[name]; h != nil && h.owner.jid == owner {
		done(ErrHandleOwned)
		return
	}
	if r, ok := s.reservedNames[name]; ok && r == owner {
		// The same add is on its way and could still fail: decide again
		// once it is settled.
		s.AfterCommit(func() { s.AddHandle(owner, name, done) })
		return
	}
	if _, ok := s.reservedNames[name]; ok || s.handles[name] != nil {
		done(ErrHandleTaken)
		return
	}
	// Until the write commits, the name is reserved and counts towards
	// the owner's limit; the account is made in memory once it commits.
	held := 0
	if a := s.accounts[owner]; a != nil {
		held = len(a.handles)
	}
	if held+s.adding[owner] >= s.maxHandles {
		done(ErrHandleLimit)
		return
	}
	s.adding[owner]++
	s.reservedNames[name] = owner
	now := s.now()
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpAddHandle, Account: owner, Handle: name, Max: s.maxHandles, Now: now},
		apply: func(err error) {
			delete(s.reservedNames, name)
			if s.adding[owner]--; s.adding[owner] == 0 {
				delete(s.adding, owner)
			}
			switch {
			case errors.Is(err, storage.ErrExists):
				err = ErrHandleTaken
			case errors.Is(err, storage.ErrLimit):
				err = ErrHandleLimit
			case err != nil:
				err = fmt.Errorf("roster: add handle: %w", err)
			default:
				a := s.accounts[owner]
				if a == nil {
					a = s.newAccount(owner)
					a.flags.Since, a.want.Since = now, now
				}
				s.addHandleLocal(a, name)
			}
			done(err)
		},
	})
}

// RemoveHandle takes handle from owner. Its subscribers are told the handle
// is unavailable and their subscription is cancelled.
func (s *Service) RemoveHandle(owner, name string, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	h := s.handles[name]
	switch {
	case h == nil:
		done(ErrUnknownHandle)
		return
	case h.removing:
		// A removal is on its way and could still fail: decide again once
		// it is settled.
		s.AfterCommit(func() { s.RemoveHandle(owner, name, done) })
		return
	case h.owner.jid != owner:
		done(ErrNotOwner)
		return
	}
	h.removing = true
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpRemoveHandle, Account: owner, Handle: name},
		apply: func(err error) {
			h.removing = false
			switch {
			case errors.Is(err, storage.ErrNotFound):
				err = ErrUnknownHandle
			case errors.Is(err, storage.ErrNotOwner):
				err = ErrNotOwner
			case err != nil:
				err = fmt.Errorf("roster: remove handle: %w", err)
			default:
				s.dropHandle(h)
			}
			done(err)
		},
	})
}

// dropHandle forgets h and queues the notices of its removal.
func (s *Service) dropHandle(h *handle) {
	a := h.owner
	if i := slices.Index(a.handles, h); i >= 0 {
		a.handles = slices.Delete(a.handles, i, i+1)
	}
	delete(s.handles, h.name)
	if len(h.subs) == 0 {
		return
	}
	contacts := make([]string, len(h.subs))
	for i, sb := range h.subs {
		contacts[i] = s.contacts.name(sb.contact)
		s.contacts.unref(sb.contact)
	}
	h.subs = nil
	s.notes.removed(&removal{handle: h.name, owner: a, contacts: contacts})
}

// Subscribe records that contact subscribes to handle. Once it is stored,
// done(nil) runs; the caller then approves the subscription and calls
// Probe to send the current presence, so that the approval arrives first.
func (s *Service) Subscribe(name, contact string, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	h := s.handles[name]
	switch {
	case h == nil:
		done(ErrUnknownHandle)
		return
	case h.removing:
		// The handle's removal is on its way and could still fail:
		// decide again once it is settled.
		s.AfterCommit(func() { s.Subscribe(name, contact, done) })
		return
	}
	if _, ok := s.findSub(h, contact); ok {
		done(nil)
		return
	}
	key := pendingKey{h, contact}
	p := s.pendingSubs[key]
	if p == nil {
		p = &pendingSub{}
		s.pendingSubs[key] = p
	}
	p.n++
	p.cancelled = false
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpAddSubscription, Handle: name, Contact: contact},
		apply: func(err error) {
			if p.n--; p.n == 0 {
				delete(s.pendingSubs, key)
			}
			switch {
			case err == nil && p.cancelled:
				// Unsubscribed before this was stored; the removal,
				// queued after it, took the row away again.
			case errors.Is(err, storage.ErrNotFound):
				err = ErrUnknownHandle
			case err != nil:
				err = fmt.Errorf("roster: subscribe: %w", err)
			case s.handles[name] != h:
				// Removed meanwhile, after the write was queued: the
				// removal, committed after it, took the row away too.
				err = ErrUnknownHandle
			default:
				s.addSub(h, contact)
			}
			done(err)
		},
	})
}

// pendingKey names a subscription being stored.
type pendingKey struct {
	h       *handle
	contact string
}

// pendingSub counts the writes of one subscription on their way, and
// whether an unsubscription came after them.
type pendingSub struct {
	n         int
	cancelled bool
}

// SubscribePending reports whether a subscription of contact to handle is
// being stored: its presence follows once it is, so a probe meanwhile is
// not answered.
func (s *Service) SubscribePending(handle, contact string) bool {
	h := s.handles[handle]
	return h != nil && s.pendingSubs[pendingKey{h, contact}] != nil
}

// addSub adds contact to h's subscribers unless it is one already.
func (s *Service) addSub(h *handle, contact string) {
	if _, ok := s.findSub(h, contact); ok {
		return
	}
	id := s.contacts.ref(contact)
	i, _ := findID(h.subs, id)
	h.subs = append(h.subs, sub{})
	copy(h.subs[i+1:], h.subs[i:])
	h.subs[i] = sub{contact: id}
}

// Unsubscribe forgets that contact subscribes to handle. It ends in
// memory at once, so nothing more from the handle is sent to the contact,
// whose server has already ended the subscription (RFC 6121 §3.3); done
// runs once the removal is stored, with whether there was a subscription
// and the storage error if any (memory does not wait for storage then).
// Unlike the other changes it is taken while stopping.
func (s *Service) Unsubscribe(name, contact string, done func(was bool, err error)) {
	if done == nil {
		done = func(bool, error) {}
	}
	h := s.handles[name]
	if h == nil {
		done(false, nil)
		return
	}
	i, ok := s.findSub(h, contact)
	p := s.pendingSubs[pendingKey{h, contact}]
	switch {
	case ok:
		s.contacts.unref(h.subs[i].contact)
		h.subs = append(h.subs[:i], h.subs[i+1:]...)
	case p != nil:
		p.cancelled = true // a subscription on its way must not take effect
	default:
		done(false, nil)
		return
	}
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpRemoveSubscription, Handle: name, Contact: contact},
		apply: func(err error) {
			if err != nil {
				err = fmt.Errorf("roster: unsubscribe: %w", err)
			}
			done(true, err)
		},
	})
}

// OwnerPresence applies one presence of one of owner's resources. Presences
// of JIDs that are not accounts are ignored. A presence is acknowledged to
// nobody, so the flags it decides hold in memory even if they cannot be
// stored; the failure is logged. It fails only with ErrStopping.
func (s *Service) OwnerPresence(owner string, p OwnerPresence) error {
	if s.stopping {
		return ErrStopping
	}
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	if p.Available {
		s.seq++
		a.resources[p.Resource] = &resource{priority: p.Priority, status: p.Status, text: p.Text, seq: s.seq}
	} else {
		delete(a.resources, p.Resource)
	}
	// The owner's clients changing their own status ends an explicit
	// status; repeating it (a reconnect, an answer to a probe) does not.
	st := flagStep{at: s.now(), hide: p.Hide}
	if top := topResource(a); top != nil {
		st.endExplicit = a.client != "" && top.status != a.client
		a.client = top.status
	}
	s.setFlags(a, st)
	return nil
}

// Instruct applies an explicit instruction for every handle of owner. It
// fails with ErrNoAccount if owner holds no account (one is created by
// adding a handle). On error nothing changed.
func (s *Service) Instruct(owner string, in Instruction, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	a := s.accounts[owner]
	if a == nil {
		done(ErrNoAccount)
		return
	}
	switch in {
	case InstructHide, InstructVisible, InstructAway, InstructBusy, InstructUndefined:
	default:
		done(ErrBadStatus)
		return
	}
	s.setFlags(a, flagStep{at: s.now(), in: in, done: done})
}

// flagStep is one decided change of an account's flags, kept until it is
// stored: a refused instruction is then taken out and the steps around it
// applied again, so that a refusal undoes the instruction alone.
type flagStep struct {
	at time.Time   // when it was decided: the Since of a change of visibility
	in Instruction // an instruction; "" for the owner's presence
	// For a presence: the client changed its own status (which ends an
	// explicit one); the presence asked for invisibility.
	endExplicit, hide bool
	// done is an instruction's callback; a presence may have one too,
	// told of a storage failure that memory did not wait for.
	done func(error)
}

// apply returns f changed by st, with a's resources as they are now.
func (st flagStep) apply(a *account, f storage.Flags) storage.Flags {
	prev := f
	switch st.in {
	case "":
		if st.endExplicit {
			f.Explicit = false
		}
		f = derivedFrom(a, f)
		if st.hide {
			f.Hiding = true
		}
	case InstructHide:
		f.Hiding = true
	case InstructVisible:
		f.Hiding = false
		f.Explicit = false
		f = derivedFrom(a, f)
	default:
		f.Hiding = false
		f.Status = storage.Status(st.in)
		f.Explicit = true
	}
	if ViewOf(prev).Available != ViewOf(f).Available || f.Since.IsZero() {
		f.Since = st.at
	}
	return f
}

// setFlags decides st for a. Its write joins the account's entry in the
// pending batch if there is one, which writes the flags last decided:
// changes made while a transaction commits coalesce into one row write.
// An instruction's callback runs once its write committed, even when it
// changes nothing, if a write is on its way: that write could still fail.
func (s *Service) setFlags(a *account, st flagStep) {
	f := st.apply(a, a.want)
	if f == a.want && a.flagsOp == nil && a.writing == nil {
		if st.done != nil {
			st.done(nil)
		}
		return
	}
	a.want = f
	e := a.flagsOp
	if e == nil {
		e = &entry{acct: a}
		e.apply = func(err error) { s.flagsStored(e, err) }
		a.flagsOp = e
		s.commits.add(e)
	}
	e.steps = append(e.steps, st)
}

// flagsStored is the end of a flags write. Stored, the flags it wrote
// become the account's. Refused, its instructions fail and its presence
// steps hold all the same, in memory; the changes decided since are
// applied again on top.
func (s *Service) flagsStored(e *entry, err error) {
	a := e.acct
	a.writing = nil
	if err == nil {
		s.setCommitted(a, e.op.Flags)
		for _, st := range e.steps {
			if st.done != nil {
				st.done(nil)
			}
		}
		return
	}
	err = fmt.Errorf("roster: set flags: %w", err)
	f := a.flags
	kept := false
	for _, st := range e.steps {
		if st.in != "" {
			st.done(err)
			continue
		}
		f = st.apply(a, f)
		kept = true
		if st.done != nil {
			st.done(err)
		}
	}
	if kept {
		s.log.Error("flags not stored; kept in memory", "account", a.jid, "err", err)
	}
	s.setCommitted(a, f)
	a.want = f
	if later := a.flagsOp; later != nil {
		for _, st := range later.steps {
			a.want = st.apply(a, a.want)
		}
	}
}

// setCommitted makes f a's flags, and what subscribers see follows.
func (s *Service) setCommitted(a *account, f storage.Flags) {
	old := ViewOf(a.flags)
	a.flags = f
	if ViewOf(f) != old {
		a.view++
		// While resyncing, showing an account waits for DropStale; hiding
		// it or taking it off-line never waits.
		if !s.resyncing || !ViewOf(f).Available {
			s.notes.account(a)
		}
	}
}

// derivedFrom returns f with the on-line flag, status and text taken from
// a's resources: on-line while any resource is available, the status of the
// highest-priority one (ties to the most recent) unless an explicit status
// holds. With no resource the status is kept.
func derivedFrom(a *account, f storage.Flags) storage.Flags {
	top := topResource(a)
	f.Online = top != nil
	if top != nil {
		if !f.Explicit {
			f.Status = top.status
		}
		f.StatusText = top.text
	}
	return f
}

// topResource returns a's highest-priority resource, ties to the most
// recent, or nil.
func topResource(a *account) *resource {
	var top *resource
	for _, r := range a.resources {
		if top == nil || r.priority > top.priority || (r.priority == top.priority && r.seq > top.seq) {
			top = r
		}
	}
	return top
}

// AfterCommit runs f once every change made so far is stored (or failed).
func (s *Service) AfterCommit(f func()) {
	s.commits.add(&entry{apply: func(error) { f() }})
}

func orNop(done func(error)) func(error) {
	if done == nil {
		return func(error) {}
	}
	return done
}
