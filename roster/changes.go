package roster

import (
	"errors"
	"fmt"
	"log/slog"
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
// on first use, with the subscription policy given ("" for the default).
// A handle the owner already holds changes nothing and fails with
// ErrHandleOwned.
func (s *Service) AddHandle(owner, name string, policy storage.Policy, done func(error)) {
	done = orNop(done)
	if s.stopping {
		done(ErrStopping)
		return
	}
	if policy == "" {
		policy = s.limits.policy
	}
	if h := s.handles[name]; h != nil && h.owner.jid == owner {
		done(ErrHandleOwned)
		return
	}
	if r, ok := s.reservedNames[name]; ok && r == owner {
		// The same add is on its way and could still fail: decide again
		// once it is settled.
		s.AfterCommit(func() { s.AddHandle(owner, name, policy, done) })
		return
	}
	now := s.now()
	if err := s.mayAdd(owner, name, now); err != nil {
		done(err)
		return
	}
	s.adding[owner]++
	s.reservedNames[name] = owner
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpAddHandle, Account: owner, Handle: name, Policy: policy, Max: s.limits.handles, Now: now},
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
				delete(s.removed, name)
				s.addHandleLocal(a, name, policy)
			}
			done(err)
		},
	})
}

// mayAdd decides, from memory, whether owner may take name now. A name
// being added counts as taken, and towards its owner's limit.
func (s *Service) mayAdd(owner, name string, now time.Time) error {
	switch {
	case s.limits.reserved[name]:
		return ErrReserved
	case s.reservedNames[name] != "" || s.handles[name] != nil:
		return ErrHandleTaken
	case s.quarantined(name, owner, now):
		return ErrQuarantined
	}
	a := s.accounts[owner]
	held := 0
	if a != nil {
		held = len(a.handles)
	}
	if held+s.adding[owner] >= s.limits.handles {
		return ErrHandleLimit
	}
	if a == nil && s.adding[owner] == 0 && s.limits.accounts > 0 && s.accountsSoon() >= s.limits.accounts {
		return ErrAccountLimit
	}
	return nil
}

// accountsSoon counts the accounts, those being created included.
func (s *Service) accountsSoon() int {
	n := len(s.accounts)
	for owner := range s.adding {
		if s.accounts[owner] == nil {
			n++
		}
	}
	return n
}

// RemoveHandle takes handle from owner. It takes effect at once: the
// handle is gone from memory, its subscribers are sent unavailable and
// unsubscribed, and its name is quarantined. The removal (with the notices
// owed, until they are written) is stored; if that fails, done gets
// ErrNotStored and the engine stores it again until it is. A handle that
// is not owner's fails with ErrUnknownHandle or ErrNotOwner.
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
	case h.owner.jid != owner:
		done(ErrNotOwner)
		return
	}
	now := s.now()
	// The stamp of the notices: each withheld subscriber's own, else the
	// account's gone View's. Storage is given them as memory has them (its
	// rows may be ahead, a show or an unblock committed before the
	// removal in one batch): the common one, and those that differ.
	stamp := s.goneView(h.owner).Since
	if h.hidden {
		stamp = h.hiddenSince
	}
	op := storage.Op{Kind: storage.OpRemoveHandle, Account: owner, Handle: name, Now: now, Stamp: stamp}
	// (A hidden handle's subscribers are all withheld: its stamp is none's
	// default.)
	if rm := s.dropHandle(h, stamp); rm != nil {
		for i, since := range rm.since {
			if !since.Equal(stamp) {
				op.Contacts = append(op.Contacts, rm.contacts[i])
				op.Stamps = append(op.Stamps, since)
			}
		}
	}
	s.quarantine(name, owner, now)
	s.commits.add(&entry{
		op:   op,
		must: true,
		apply: func(err error) {
			if errors.Is(err, storage.ErrNotFound) {
				err = nil // not on record: removed all the same
			}
			if err != nil {
				err = fmt.Errorf("roster: remove handle: %w", err)
			}
			done(err)
		},
	})
}

// dropHandle forgets h, its requests with it, and queues the notices of
// its removal, stamped stamp unless the subscriber is withheld; it returns
// them, or nil if h had no subscribers.
func (s *Service) dropHandle(h *handle, stamp time.Time) *removal {
	a := h.owner
	if i := slices.Index(a.handles, h); i >= 0 {
		a.handles = slices.Delete(a.handles, i, i+1)
	}
	delete(s.handles, h.name)
	s.counts.handles.Store(int64(len(s.handles)))
	s.counts.pending.Add(-int64(len(h.requests)))
	h.requests = nil
	if h.web && s.web != nil {
		s.web.WebChanged(h.name, WebOffline)
	}
	if len(h.subs) == 0 {
		return nil
	}
	rm := &removal{handle: h.name, owner: a, contacts: make([]string, len(h.subs)), since: make([]time.Time, len(h.subs))}
	mayWithhold := h.mayWithhold()
	for i, sb := range h.subs {
		rm.contacts[i] = s.contacts.name(sb.contact)
		rm.since[i] = stamp
		if since, ok := s.withheldIf(mayWithhold, h, sb.contact); ok {
			rm.since[i] = since
		}
		s.contacts.unref(sb.contact)
	}
	s.counts.subs.Add(-int64(len(h.subs)))
	h.subs = nil
	h.kept = nil
	s.notes.removed(rm)
	return rm
}

// SubscribeOutcome is what became of a subscription request.
type SubscribeOutcome int

const (
	// Ignored: nothing to answer. The handle does not exist, or the
	// request is pending already, or a limit dropped it, or it could not
	// be stored.
	Ignored SubscribeOutcome = iota
	// Approved: the contact is a subscriber. The caller approves the
	// subscription and calls Probe to send the current presence, so that
	// the approval arrives first.
	Approved
	// Requested: the request waits for the owner, who is to be told.
	Requested
)

// Subscribe handles a subscription request from contact to handle. To an
// open handle it is stored as a subscription; to an ask handle, as a
// request that waits for the owner (Approve, Deny). A contact who is a
// subscriber already is Approved again at once.
func (s *Service) Subscribe(name, contact string, done func(SubscribeOutcome, error)) {
	if done == nil {
		done = func(SubscribeOutcome, error) {}
	}
	if s.stopping {
		done(Ignored, ErrStopping)
		return
	}
	h := s.handles[name]
	if h == nil {
		done(Ignored, ErrUnknownHandle)
		return
	}
	if _, ok := s.findSub(h, contact); ok {
		done(Approved, nil)
		return
	}
	key := pendingKey{h, contact}
	if s.pendingSubs[key].live() {
		// Asked again while the subscription is being stored: the answer
		// of that write is the answer (one write, one approval, whatever
		// a sender repeats).
		done(Ignored, nil)
		return
	}
	if s.pendingSubs.full(key) {
		s.holdBack(s.pendingSubs, key, done)
		return
	}
	if h.policy == storage.PolicyAsk && h.owner.blocks(s, contact) {
		// Dropped, and the owner is not told. (To an open handle, a
		// blocked contact subscribes as anyone does, and sees it
		// off-line: refusing it alone would tell it that it is blocked.)
		done(Ignored, nil)
		return
	}
	if h.policy == storage.PolicyOpen {
		s.storeSubscription(h, contact, false, func(err error) {
			if err != nil {
				done(Ignored, err)
				return
			}
			done(Approved, nil)
		})
		return
	}
	s.request(h, contact, done)
}

// storeSubscription stores contact as a subscriber of h and adds it in
// memory once stored; done gets the error, if any. answers says that it
// answers the contact's request, which goes with it.
func (s *Service) storeSubscription(h *handle, contact string, answers bool, done func(error)) {
	key := pendingKey{h, contact}
	if s.pendingSubs[key] == nil && len(h.subs)+h.storing >= s.limits.subscribers {
		s.refuse("subscribers:"+h.name, "subscription refused: the handle has as many subscribers as it may", "handle", h.name, "limit", s.limits.subscribers)
		done(ErrSubscriberLimit)
		return
	}
	rw := s.pendingSubs.start(key)
	h.storing++
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpAddSubscription, Handle: h.name, Contact: contact, Answers: answers},
		apply: func(err error) {
			h.storing--
			cancelled, again := s.pendingSubs.end(key, rw, err == nil)
			defer again()
			switch {
			case err == nil && cancelled:
				// Unsubscribed before this was stored; the removal,
				// queued after it, took the row away again.
				err = ErrUnknownHandle
			case errors.Is(err, storage.ErrNotFound):
				err = ErrUnknownHandle
			case err != nil:
				err = fmt.Errorf("roster: subscribe: %w", err)
			case s.handles[h.name] != h:
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

// holdBack holds contact's subscribe (key) back until the writes of its
// row in m have ended, and then decides it again: a contact repeating
// subscribe and unsubscribe while storage commits starts no more writes
// of the row than maxWritesOnWay, and what it asked for last is done.
func (s *Service) holdBack(m writesOnWay, key pendingKey, done func(SubscribeOutcome, error)) {
	h := key.h
	m.holdBack(key, func() {
		if s.handles[h.name] != h {
			done(Ignored, ErrUnknownHandle) // removed meanwhile
			return
		}
		s.Subscribe(h.name, key.contact, done)
	}, func() { done(Ignored, nil) })
}

// pendingKey names a subscription or request being stored.
type pendingKey struct {
	h       *handle
	contact string
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
	s.counts.subs.Add(1)
}

// Unsubscribe forgets that contact subscribes to handle, or asks to. It
// ends in memory at once, so nothing more from the handle is sent to the
// contact, whose server has already ended the subscription (RFC 6121
// §3.3); done runs once the removal is stored, with whether there was a
// subscription and the storage error if any: ErrNotStored when memory went
// on without it, and the engine writes it again until it is stored. Unlike
// the other changes it is taken while stopping.
func (s *Service) Unsubscribe(name, contact string, done func(was bool, err error)) {
	if done == nil {
		done = func(bool, error) {}
	}
	h := s.handles[name]
	if h == nil {
		done(false, nil)
		return
	}
	s.dropRequest(h, contact)
	i, ok := s.findSub(h, contact)
	// A subscription on its way must not take effect.
	onWay := s.pendingSubs[pendingKey{h, contact}].cancel()
	if ok {
		delete(h.kept, h.subs[i].contact) // storage's goes with the row
		s.contacts.unref(h.subs[i].contact)
		h.subs = append(h.subs[:i], h.subs[i+1:]...)
		s.counts.subs.Add(-1)
	} else if onWay == nil {
		done(false, nil)
		return
	}
	e := &entry{
		op:   storage.Op{Kind: storage.OpRemoveSubscription, Handle: name, Contact: contact},
		must: true,
		apply: func(err error) {
			if err != nil {
				err = fmt.Errorf("roster: unsubscribe: %w", err)
			}
			done(true, err)
		},
	}
	if !ok {
		// No row but those on their way: nothing to remove if they fail.
		e.skip = onWay.moot
	}
	s.commits.add(e)
}

// OwnerPresence applies one presence of one of owner's resources. Presences
// of JIDs that are not accounts are ignored. A presence is acknowledged to
// nobody, so the flags it decides hold in memory even if they cannot be
// stored; the failure is logged. It fails only with ErrStopping (but a
// presence that hides is taken while stopping, as far as hiding goes).
func (s *Service) OwnerPresence(owner string, p OwnerPresence) error {
	a := s.accounts[owner]
	switch {
	case a == nil:
		return nil
	case s.stopping && p.Hide:
		// Hiding is taken whenever it comes: it only ever shows less.
		s.setFlags(a, flagStep{at: s.now(), hide: true})
		return nil
	case s.stopping:
		return ErrStopping
	}
	if p.Available {
		if a.resources[p.Resource] == nil && len(a.resources) >= s.limits.resources {
			s.refuse("resources:"+owner, "presence ignored: the account has as many resources as it may", "owner", owner, "limit", s.limits.resources)
			if p.Hide {
				// Its resource does not count, its hiding does.
				s.setFlags(a, flagStep{at: s.now(), hide: true})
			}
			return nil
		}
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
// adding a handle). On error nothing changed. While stopping, only hiding
// is taken.
func (s *Service) Instruct(owner string, in Instruction, done func(error)) {
	done = orNop(done)
	if s.stopping && in != InstructHide {
		// Hiding is taken while stopping too: it only ever shows less.
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
// Flags that hide the account (or take it off-line) show at once, before
// they are stored: privacy does not wait for storage.
func (s *Service) setFlags(a *account, st flagStep) {
	f := st.apply(a, a.want)
	if f == a.want && a.flagsOp == nil && a.writing == nil {
		if st.done != nil {
			st.done(nil)
		}
		return
	}
	e := a.flagsOp
	if e == nil {
		e = s.flagsEntry(a)
		s.commits.add(e)
	}
	if !s.addStep(e, st) {
		st.done(ErrBusy)
		return
	}
	a.want = f
	if !ViewOf(f).Available && ViewOf(a.flags).Available {
		s.setCommitted(a, f)
	}
}

// maxSteps bounds the instructions waiting in one account's flags write,
// so that an owner's client sending them faster than storage commits
// cannot grow memory.
const maxSteps = 64

// addStep adds st to the steps of e and reports whether it could. A
// presence step without a callback merges into one at the end: replaying
// either derives the flags from the resources as they are then, so one
// does for both (the first's moment is kept: an earlier stamp shows no
// activity). Past maxSteps an instruction is refused, but hiding becomes
// such a presence step: hiding is never refused (its caller learns that
// it is not stored yet).
func (s *Service) addStep(e *entry, st flagStep) bool {
	if n := len(e.steps); n >= maxSteps && st.in != "" {
		if st.in != InstructHide {
			return false
		}
		done := st.done
		st = flagStep{at: st.at, hide: true}
		defer done(fmt.Errorf("%w: %d changes wait to be stored", ErrNotStored, n))
	}
	if n := len(e.steps); n > 0 && st.in == "" && st.done == nil {
		if last := &e.steps[n-1]; last.in == "" && last.done == nil {
			last.endExplicit = last.endExplicit || st.endExplicit
			last.hide = last.hide || st.hide
			return true
		}
	}
	e.steps = append(e.steps, st)
	return true
}

// flagsEntry makes the pending write of a's flags.
func (s *Service) flagsEntry(a *account) *entry {
	e := &entry{acct: a}
	e.apply = func(err error) { s.flagsStored(e, err) }
	a.flagsOp = e
	return e
}

// shown returns the flags subscribers may see once stored are on record:
// the flags last decided when they hide the account, which never wait,
// else stored.
func shown(a *account, stored storage.Flags) storage.Flags {
	if !ViewOf(a.want).Available {
		return a.want
	}
	return stored
}

// flagsStored is the end of a flags write. Stored, the flags it wrote
// become the account's. Refused, its instructions fail, except hiding,
// which holds in memory (told ErrNotStored), as do its presence steps; the
// changes decided since are applied again on top, and the flags are
// written again later, until they are stored.
func (s *Service) flagsStored(e *entry, err error) {
	a := e.acct
	a.writing = nil
	if err == nil {
		s.setCommitted(a, shown(a, e.op.Flags))
		for _, st := range e.steps {
			if st.done != nil {
				st.done(nil)
			}
		}
		return
	}
	err = fmt.Errorf("roster: set flags: %w", err)
	kept := fmt.Errorf("%w: %w", ErrNotStored, err)
	f := a.flags
	for _, st := range e.steps {
		if st.in != "" && st.in != InstructHide {
			st.done(err)
			continue
		}
		f = st.apply(a, f)
		if st.done != nil {
			st.done(kept)
		}
	}
	// Once a minute at most: while storage is down, every account's
	// every change ends here.
	s.refusals.Log(s.log, slog.LevelError, s.now(), "store:flags", "flags not stored; kept in memory and written again later", "account", a.jid, "err", err)
	a.want = f
	if later := a.flagsOp; later != nil {
		for _, st := range later.steps {
			a.want = st.apply(a, a.want)
		}
	} else if !errors.Is(err, storage.ErrNotActive) {
		s.commits.retry(s.flagsEntry(a))
	}
	s.setCommitted(a, shown(a, f))
}

// setCommitted makes f a's flags, and what subscribers see follows.
func (s *Service) setCommitted(a *account, f storage.Flags) {
	old := ViewOf(a.flags)
	a.flags = f
	if ViewOf(f) != old {
		a.view++
		// Only a View that became available lifts kept stamps: while the
		// account is visible, every stamp kept has a reason.
		if ViewOf(f).Available && !old.Available {
			s.visibleAgain(a)
		}
		s.tellWebAccount(a)
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
