package roster

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"presenced/storage"
)

// The owner's control beyond the account's flags: blocking a contact (the
// patent's "whether notification is allowed", per contact) and hiding one
// handle. Both withhold the account from someone: a blocked contact sees
// every handle of the account, and every subscriber of a hidden handle
// sees that handle, exactly as when the account is off-line. Withholding
// takes effect at once and is written until stored, like hiding the
// account; lifting it takes effect once stored, like showing it.
//
// A withheld subscriber is left with one unavailable presence whose stamp
// never moves while it is withheld: the moment it stopped seeing the
// account, or the moment the account stopped being visible if that was
// earlier. So nothing the owner does afterwards (coming on-line, going
// away, going off-line again) reaches it, not even as a new <delay/>
// stamp.

// Errors of the owner's control.
var (
	// ErrNotSubscribed: the contact does not subscribe to the handle.
	ErrNotSubscribed = errors.New("roster: not a subscriber")
	// ErrNotBlocked: the account does not block the contact.
	ErrNotBlocked = errors.New("roster: contact is not blocked")
	// ErrBlockLimit: the account blocks as many contacts as it may.
	ErrBlockLimit = errors.New("roster: block list is full")
	// ErrAlreadyBlocked: the account blocks the contact already; nothing
	// changed.
	ErrAlreadyBlocked = errors.New("roster: contact is blocked already")
)

// withheldCode is sub.sent once a withheld subscriber was sent the
// unavailable presence it is left with. sentCode is never 1: views are
// counted from 1, so its codes are at least 2. A subscription holds it
// only while it is withheld: whatever lifts a withholding sets it to what
// the subscriber has then (lifts.settle, visibleAgain), so the fan-out skips it
// without asking why.
const withheldCode = 1

// withheld reports whether the contact numbered id may not see h, and the
// stamp it is left with. A contact is withheld while the handle is hidden
// or the owner blocks it, and, once those are lifted, while the account is
// not visible but the contact keeps a stamp other than the account's
// (handle.kept). Its stamp is the one it kept, else that of the block or
// of the hiding, the earlier when both apply (the earlier is the one it
// was sent: each is the moment it stopped seeing the account, or the
// account's own earlier Since).
func (s *Service) withheld(h *handle, id uint32) (time.Time, bool) {
	since, blocked := h.owner.blocked[id]
	kept, isKept := h.kept[id]
	switch {
	case isKept && (h.hidden || blocked || !ViewOf(h.owner.flags).Available):
		return kept, true
	case h.hidden && blocked && since.Before(h.hiddenSince):
		return since, true
	case h.hidden:
		return h.hiddenSince, true
	}
	return since, blocked
}

// withheldIf is withheld where mayWithhold (h.mayWithhold, taken once
// for a walk of h's subscribers) says that anything may withhold: on a
// walk of every subscription, it spares the lookups where nothing can.
func (s *Service) withheldIf(mayWithhold bool, h *handle, id uint32) (time.Time, bool) {
	if !mayWithhold {
		return time.Time{}, false
	}
	return s.withheld(h, id)
}

// reason reports whether h is hidden or its owner blocks the contact
// numbered id: what withholds it for as long as it lasts.
func (h *handle) reason(id uint32) bool {
	_, blocked := h.owner.blocked[id]
	return h.hidden || blocked
}

// viewFor returns what the contact numbered id sees of h, and the code
// of sub.sent once it was sent that.
func (s *Service) viewFor(h *handle, id uint32) (View, uint32) {
	if since, ok := s.withheld(h, id); ok {
		return View{Since: since}, withheldCode
	}
	return ViewOf(h.owner.flags), h.owner.sentCode()
}

// ViewFor returns what contact (a bare JID) sees of handle, and whether
// the handle exists: off-line while the handle is hidden or the owner
// blocks the contact, else the account's View.
func (s *Service) ViewFor(handle, contact string) (View, bool) {
	h := s.handles[handle]
	if h == nil {
		return View{}, false
	}
	// A blocked contact is interned as long as it is blocked.
	if id, ok := s.contacts.lookup(contact); ok {
		v, _ := s.viewFor(h, id)
		return v, true
	}
	return s.publicView(h), true
}

// publicView is what anyone not blocked sees of h.
func (s *Service) publicView(h *handle) View {
	if h.hidden {
		return View{Since: h.hiddenSince}
	}
	return ViewOf(h.owner.flags)
}

// GoneView returns the unavailable presence that tells contact it no
// longer sees handle, as when its subscription ends: the one it is left
// with when withheld, else the account's own while hidden or off-line (a
// fresh stamp would tell that a hiding owner is active), else unavailable
// as of now.
func (s *Service) GoneView(handle, contact string) View {
	if v, ok := s.ViewFor(handle, contact); ok && !v.Available {
		return v // withheld, or the account's own while hidden or off-line
	}
	return View{Since: s.now()}
}

// leave brings the subscription sb of h up to what it sees now, at once,
// when that withholds the account: it is sent the unavailable presence it
// is left with, unless it has it already (it was sent the account's View,
// unavailable, whose stamp is the same: sending it again would show that
// the owner did something).
func (s *Service) leave(h *handle, sb *sub) {
	since, ok := s.withheld(h, sb.contact)
	if !ok || sb.sent == withheldCode {
		return
	}
	a := h.owner
	if sb.sent != a.sentCode() || ViewOf(a.flags).Available {
		s.out.Presence(h.name, s.contacts.name(sb.contact), View{Since: since})
	}
	sb.sent = withheldCode
}

// lifting is one subscription whose reason to be withheld is being lifted:
// the stamp it had before the change, for settle. (Had it not been sent
// it since the last connection, it has it from before.)
type lifting struct {
	h   *handle
	id  uint32
	had time.Time
}

// lifts gathers the subscriptions of one lift and the stamps they keep.
type lifts struct {
	list []lifting
	keep map[*handle]map[time.Time][]string // the OpKeep writes, by stamp
}

// before records sb of h as it is before the lift.
func (l *lifts) before(s *Service, h *handle, sb *sub) {
	if had, ok := s.withheld(h, sb.contact); ok {
		l.list = append(l.list, lifting{h: h, id: sb.contact, had: had})
	}
}

// settle brings each subscription up to the lift, once made in memory: one
// still withheld, by the other reason or because the account is not
// visible, keeps the stamp it has when the rules would give another (so no
// lift ever sends a withheld contact a new stamp, nor shows that the owner
// did something); one that sees the account, visible, is shown it by the
// pass; one left with the account's own unavailable has it already.
func (l *lifts) settle(s *Service) {
	for _, lf := range l.list {
		h := lf.h
		i, ok := findID(h.subs, lf.id)
		if !ok {
			continue
		}
		sb := &h.subs[i]
		a := h.owner
		_, isKept := h.kept[lf.id]
		v := ViewOf(a.flags)
		switch since, withheld := s.withheld(h, lf.id); {
		case isKept && (withheld || v.Available):
			if !withheld { // nothing withholds it any more: the pass shows it
				l.unkeep(s, h, lf.id)
				sb.sent = 0
			}
		case withheld && !since.Equal(lf.had):
			l.add(h, lf.id, lf.had, s)
		case withheld:
		case v.Available:
			sb.sent = 0
		case v.Since.Equal(lf.had):
			if sb.sent == withheldCode { // told since the last connection
				sb.sent = a.sentCode() // has the account's unavailable already
			}
		default:
			l.add(h, lf.id, lf.had, s) // waits for the account to be visible
		}
	}
	for h, byStamp := range l.keep {
		for since, contacts := range byStamp {
			s.storeKept(h, contacts, since)
		}
	}
}

// add makes the contact numbered id keep since on h, at once.
func (l *lifts) add(h *handle, id uint32, since time.Time, s *Service) {
	if h.kept == nil {
		h.kept = make(map[uint32]time.Time)
	}
	h.kept[id] = since
	if l.keep == nil {
		l.keep = make(map[*handle]map[time.Time][]string)
	}
	if l.keep[h] == nil {
		l.keep[h] = make(map[time.Time][]string)
	}
	l.keep[h][since] = append(l.keep[h][since], s.contacts.name(id))
}

func (l *lifts) unkeep(s *Service, h *handle, id uint32) {
	delete(h.kept, id)
	s.storeUnkept(h, []string{s.contacts.name(id)})
}

// storeKept stores that contacts keep since on h. It is written until
// stored, like a block: it only ever shows less.
func (s *Service) storeKept(h *handle, contacts []string, since time.Time) {
	s.commits.add(&entry{
		op:   storage.Op{Kind: storage.OpKeep, Handle: h.name, Contacts: contacts, Now: since},
		must: true,
		apply: func(err error) {
			if err != nil {
				s.refuse("store:kept", "kept stamps not stored yet; retrying", "err", err)
			}
		},
	})
}

// storeUnkept forgets kept stamps in storage. It is written until stored
// (after the keeps it undoes, which go first): a kept stamp left on record
// would be sent after a restart to a subscriber that saw the account
// since, an older stamp than the one it has.
func (s *Service) storeUnkept(h *handle, contacts []string) {
	s.commits.add(&entry{
		op:   storage.Op{Kind: storage.OpUnkeep, Handle: h.name, Contacts: contacts},
		must: true,
		apply: func(err error) {
			if err != nil {
				s.refuse("store:unkept", "kept stamps not forgotten", "err", err)
			}
		},
	})
}

// visibleAgain is called when a's View has become available: the
// subscribers that kept a stamp with nothing left to withhold them are
// shown the account by the pass.
func (s *Service) visibleAgain(a *account) {
	for _, h := range a.handles {
		var gone []string
		for id := range h.kept {
			if h.reason(id) {
				continue
			}
			delete(h.kept, id)
			gone = append(gone, s.contacts.name(id))
			if i, ok := findID(h.subs, id); ok {
				h.subs[i].sent = 0
			}
		}
		if len(gone) > 0 {
			s.storeUnkept(h, gone)
		}
	}
}

// showAgain queues the pass that brings the subscribers of a up to date
// once something no longer withholds a from them, unless a resync is
// under way: DropStale queues every account then, once settled.
func (s *Service) showAgain(a *account) {
	if !s.resyncing {
		s.notes.account(a)
	}
}

// Block makes owner's account withhold every handle from contact (a bare
// JID), at once: its subscriptions stay, but it is sent unavailable and
// nothing more, its probes are answered as off-line, its pending requests
// are dropped and its new ones ignored, without telling the owner. done
// runs once the block is stored (ErrNotStored when it is being written
// again; it holds meanwhile), or at once with ErrAlreadyBlocked. Blocking
// is taken while stopping too: it only ever shows less.
func (s *Service) Block(owner, contact string, done func(error)) {
	done = orNop(done)
	a := s.accounts[owner]
	if a == nil {
		done(ErrNoAccount)
		return
	}
	id, known := s.contacts.lookup(contact)
	p := a.unblocking[contact]
	if p != nil {
		// An unblock is on its way: this block, stored after it, wins.
		p.gen++
	}
	if _, ok := a.blocked[id]; known && ok {
		if p == nil {
			done(ErrAlreadyBlocked)
			return
		}
		s.storeBlock(a, contact, a.blocked[id], done)
		return
	}
	if len(a.blocked) >= s.limits.blocked {
		done(ErrBlockLimit)
		return
	}
	since := s.goneView(a).Since
	id = s.contacts.ref(contact)
	if a.blocked == nil {
		a.blocked = make(map[uint32]time.Time)
	}
	a.blocked[id] = since
	for _, h := range a.handles {
		// The block's write deletes the requests in storage.
		s.requesting[pendingKey{h, contact}].cancel()
		if i := h.requestIndex(contact); i >= 0 {
			s.deleteRequest(h, i)
		}
		if i, ok := findID(h.subs, id); ok {
			s.leave(h, &h.subs[i])
		}
	}
	s.storeBlock(a, contact, since, done)
}

func (s *Service) storeBlock(a *account, contact string, since time.Time, done func(error)) {
	s.commits.add(&entry{
		op:   storage.Op{Kind: storage.OpBlock, Account: a.jid, Contact: contact, Now: since},
		must: true,
		apply: func(err error) {
			if err != nil {
				err = fmt.Errorf("roster: block: %w", err)
			}
			done(err)
		},
	})
}

// Unblock lifts owner's block of contact once it is stored: the contact
// then sees the account's current state. A block decided meanwhile wins.
func (s *Service) Unblock(owner, contact string, done func(error)) {
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
	id, known := s.contacts.lookup(contact)
	if _, ok := a.blocked[id]; !known || !ok {
		done(ErrNotBlocked)
		return
	}
	if a.unblocking == nil {
		a.unblocking = make(map[string]*unblocks)
	}
	p := a.unblocking[contact]
	if p == nil {
		p = &unblocks{}
		a.unblocking[contact] = p
	}
	p.n++
	gen := p.gen
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpUnblock, Account: owner, Contact: contact},
		apply: func(err error) {
			if p.n--; p.n == 0 {
				delete(a.unblocking, contact)
			}
			if err != nil {
				done(fmt.Errorf("roster: unblock: %w", err))
				return
			}
			// The contact's number may have changed meanwhile (unblocked
			// and blocked again): look it up again.
			id, known := s.contacts.lookup(contact)
			if _, ok := a.blocked[id]; known && ok && gen == p.gen {
				s.unblocked(a, id)
			}
			done(nil)
		},
	})
}

// unblocks are the unblocks of one contact on their way: how many, and
// how many blocks were decided since the first (an unblock decided before
// the last block does not take effect). They are kept by JID: a contact's
// number is given to another once nothing uses it.
type unblocks struct {
	n   int
	gen uint64
}

// unblocked lifts the block of the contact numbered id, stored.
func (s *Service) unblocked(a *account, id uint32) {
	var l lifts
	for _, h := range a.handles {
		if i, ok := findID(h.subs, id); ok {
			l.before(s, h, &h.subs[i])
		}
	}
	delete(a.blocked, id)
	l.settle(s)
	s.contacts.unref(id)
	s.showAgain(a)
}

// Blocked returns the contacts owner blocks, sorted.
func (s *Service) Blocked(owner string) []string {
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	out := make([]string, 0, len(a.blocked))
	for id := range a.blocked {
		out = append(out, s.contacts.name(id))
	}
	sort.Strings(out)
	return out
}

// blocks reports whether a blocks contact.
func (a *account) blocks(s *Service, contact string) bool {
	id, ok := s.contacts.lookup(contact)
	if !ok {
		return false
	}
	_, ok = a.blocked[id]
	return ok
}

// SetVisibility hides or shows owner's handles named: a hidden handle
// looks off-line to all of its subscribers, whatever the account's state,
// while the account's other handles go on following it. Hiding takes
// effect at once (and is taken while stopping); showing, once stored. A
// name that is not owner's changes nothing of any of them and fails with
// ErrUnknownHandle. done runs once every change is stored (ErrNotStored
// when a hiding is being written again; it holds meanwhile).
func (s *Service) SetVisibility(owner string, names []string, hidden bool, done func(error)) {
	done = orNop(done)
	if s.stopping && !hidden {
		done(ErrStopping)
		return
	}
	hs, err := s.ownedHandles(owner, names)
	if err != nil {
		done(err)
		return
	}
	eachJoined(hs, done, func(h *handle, done func(error)) {
		if hidden {
			s.hide(h, done)
		} else {
			s.show(h, done)
		}
	})
}

// ownedHandles returns owner's handles named, each once (a name given
// twice is one change, not two writes), or ErrUnknownHandle if a name is
// not owner's.
func (s *Service) ownedHandles(owner string, names []string) ([]*handle, error) {
	hs := make([]*handle, 0, len(names))
	for _, n := range names {
		h := s.handles[n]
		if h == nil || h.owner.jid != owner {
			return nil, ErrUnknownHandle
		}
		if !slices.Contains(hs, h) {
			hs = append(hs, h)
		}
	}
	return hs, nil
}

// eachJoined runs f for each of hs, and done once every one of them is
// done, with the worst of their errors (joined).
func eachJoined(hs []*handle, done func(error), f func(h *handle, done func(error))) {
	all := &joined{left: len(hs) + 1, done: done}
	for _, h := range hs {
		f(h, all.one)
	}
	all.one(nil)
}

// joined calls done once every one of left callbacks ran, with the worst
// of their errors: a failure over not stored yet over none.
type joined struct {
	left int
	err  error
	done func(error)
}

func (j *joined) one(err error) {
	if err != nil && (j.err == nil || errors.Is(j.err, ErrNotStored)) {
		j.err = err
	}
	if j.left--; j.left == 0 {
		j.done(j.err)
	}
}

// hide hides h at once and stores it.
func (s *Service) hide(h *handle, done func(error)) {
	if h.hidden && h.showing == 0 {
		done(nil)
		return
	}
	h.hideGen++
	if !h.hidden {
		a := h.owner
		h.hidden, h.hiddenSince = true, s.goneView(a).Since
		s.tellWeb(h)
		// The subscribers with the account's View, unavailable, have the
		// hidden one already (leave); the others are sent it by a pass,
		// which sends nothing else while a resync is under way.
		code := a.sentCode()
		for i := range h.subs {
			if sb := &h.subs[i]; sb.sent == code && code&1 == 0 {
				sb.sent = withheldCode
			}
		}
		s.notes.withhold(a)
	}
	s.commits.add(&entry{
		op:   storage.Op{Kind: storage.OpSetVisibility, Account: h.owner.jid, Handle: h.name, Hidden: true, Now: h.hiddenSince},
		must: true,
		apply: func(err error) {
			if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrNotOwner) {
				err = nil // removed meanwhile: nothing is left to hide
			}
			if err != nil {
				err = fmt.Errorf("roster: hide handle: %w", err)
			}
			done(err)
		},
	})
}

// show shows h once stored, unless a hiding decided meanwhile wins.
func (s *Service) show(h *handle, done func(error)) {
	if !h.hidden {
		done(nil)
		return
	}
	h.showing++
	gen := h.hideGen
	s.commits.add(&entry{
		op: storage.Op{Kind: storage.OpSetVisibility, Account: h.owner.jid, Handle: h.name, Hidden: false},
		apply: func(err error) {
			h.showing--
			switch {
			case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrNotOwner):
				err = ErrUnknownHandle
			case err != nil:
				err = fmt.Errorf("roster: show handle: %w", err)
			case s.handles[h.name] == h && h.hidden && gen == h.hideGen:
				s.unhide(h)
			}
			done(err)
		},
	})
}

// unhide shows h, stored.
func (s *Service) unhide(h *handle) {
	var l lifts
	for i := range h.subs {
		l.before(s, h, &h.subs[i])
	}
	h.hidden = false
	l.settle(s)
	s.showAgain(h.owner)
	s.tellWeb(h)
}

// HandleInfo is what the owner may know of one of their handles.
type HandleInfo struct {
	Name        string
	Policy      storage.Policy
	Hidden      bool
	Web         bool // public on the web
	Subscribers int
	Requests    int
}

// HandleInfos describes owner's handles, sorted by name.
func (s *Service) HandleInfos(owner string) []HandleInfo {
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	out := make([]HandleInfo, len(a.handles))
	for i, h := range a.handles {
		out[i] = HandleInfo{Name: h.name, Policy: h.policy, Hidden: h.hidden, Web: h.web, Subscribers: len(h.subs), Requests: len(h.requests)}
	}
	return out
}

// Subscribers returns up to max subscribers of owner's handle (all of
// them if max <= 0), sorted, and how many it has; a handle that is not
// owner's fails with ErrUnknownHandle. Past max, which ones are listed is
// not specified: a handle may have 100,000, and the engine must not sort
// them all for one answer.
func (s *Service) Subscribers(owner, name string, max int) ([]string, int, error) {
	h := s.handles[name]
	if h == nil || h.owner.jid != owner {
		return nil, 0, ErrUnknownHandle
	}
	n := len(h.subs)
	if max > 0 {
		n = min(n, max)
	}
	out := make([]string, n)
	for i, sb := range h.subs[:n] {
		out[i] = s.contacts.name(sb.contact)
	}
	sort.Strings(out)
	return out, len(h.subs), nil
}

// Kick ends contact's subscription to owner's handle, at once: it returns
// the unavailable presence the component sends it, before unsubscribed
// (RFC 6121 §3.2.1). done runs once the removal is stored (ErrNotStored
// when it is being written again). A handle that is not owner's fails
// with ErrUnknownHandle, a contact that does not subscribe with
// ErrNotSubscribed; nothing changes then. Like an unsubscription, it is
// taken while stopping.
func (s *Service) Kick(owner, name, contact string, done func(error)) (View, error) {
	done = orNop(done)
	h := s.handles[name]
	if h == nil || h.owner.jid != owner {
		return View{}, ErrUnknownHandle
	}
	_, ok := s.findSub(h, contact)
	if !ok && !s.pendingSubs[pendingKey{h, contact}].live() {
		return View{}, ErrNotSubscribed
	}
	v := s.GoneView(name, contact)
	s.Unsubscribe(name, contact, func(_ bool, err error) {
		if err != nil {
			err = fmt.Errorf("roster: remove subscriber: %w", err)
		}
		done(err)
	})
	return v, nil
}
