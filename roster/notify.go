package roster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"presenced/storage"
)

// fanOutSlice is how many stanzas one job sends before it goes to the back
// of the queue, so that one account with 64 handles × 1,000 subscribers
// holds another account's change up by at most this many stanzas for
// every job queued before it. visitSlice bounds the subscribers a slice
// looks at, most of whom may be up to date already.
const (
	fanOutSlice = 256
	visitSlice  = 8 * fanOutSlice
)

// notifier holds the fan-out work. It is bounded by the state, not by the
// rate of changes: at most one pass per account, and the subscribers of
// removed handles.
type notifier struct {
	queue []job
	// parked holds removal notices that may not have gone out, when the
	// connection was lost; they go out after the next connection, or at
	// shutdown.
	parked []*removal
	// inflight holds removal notices handed to the Sender and not yet
	// written to the connection, oldest first.
	inflight []inflight
	// withdrawn holds the removal notices Withdrawals handed out.
	withdrawn []*removal
}

type job struct {
	pass *pass    // an account's pass, or
	rm   *removal // the notices of a removed handle
}

// pass brings every subscriber of every handle of an account up to the
// account's current View. Its cursor (a handle name and a contact number)
// survives handles and subscriptions coming and going meanwhile.
type pass struct {
	a      *account
	handle string // resume at the first handle at or after this name
	next   uint32 // and, in it, at the first contact numbered at least next
	// withholdOnly is set for a pass that only leaves the withheld
	// subscribers with their unavailable presence (a hidden handle), and
	// so may run while a resync holds back what would show the account.
	withholdOnly bool
}

// removal is the notices owed to the subscribers of a removed handle:
// unavailable, then unsubscribed. since holds the stamp of each
// contact's unavailable; a zero one (a notice stored before stamps were)
// is the account's gone View when sent.
type removal struct {
	handle   string
	owner    *account
	contacts []string
	since    []time.Time
}

type inflight struct {
	rm   *removal
	mark uint64
}

func (n *notifier) busy() bool { return len(n.queue) > 0 }

// account queues a pass for a; a pass already queued starts over, so it
// carries the View current when it reaches each subscriber.
func (n *notifier) account(a *account) {
	if a.pass != nil {
		a.pass.handle, a.pass.next = "", 0
		a.pass.withholdOnly = false
		return
	}
	a.pass = &pass{a: a}
	n.queue = append(n.queue, job{pass: a.pass})
}

// withhold queues a pass that leaves the withheld subscribers of a with
// their unavailable presence; a pass already queued starts over.
func (n *notifier) withhold(a *account) {
	if a.pass != nil {
		a.pass.handle, a.pass.next = "", 0
		return
	}
	a.pass = &pass{a: a, withholdOnly: true}
	n.queue = append(n.queue, job{pass: a.pass})
}

func (n *notifier) removed(rm *removal) {
	n.queue = append(n.queue, job{rm: rm})
}

// pump does one job's slice of work and puts what is left of it at the
// back of the queue.
func (s *Service) pump() {
	n := &s.notes
	j := n.queue[0]
	n.queue[0] = job{}
	n.queue = n.queue[1:]
	if len(n.queue) == 0 {
		n.queue = nil // let the array go
	}
	more := false
	if j.pass != nil {
		more = s.passSlice(j.pass)
		if !more {
			j.pass.a.pass = nil
		}
	} else {
		more = s.removalSlice(j.rm)
	}
	if more {
		n.queue = append(n.queue, j)
	}
	s.confirm()
}

// passSlice sends one slice of p and reports whether more is left.
func (s *Service) passSlice(p *pass) bool {
	a := p.a
	code := a.sentCode()
	v := ViewOf(a.flags)
	sent, visited := 0, 0
	hi, _ := slices.BinarySearchFunc(a.handles, p.handle, func(h *handle, n string) int { return cmp.Compare(h.name, n) })
	for ; hi < len(a.handles); hi++ {
		h := a.handles[hi]
		mayWithhold := h.mayWithhold()
		start := 0
		if h.name == p.handle {
			start, _ = findID(h.subs, p.next)
		}
		for i := start; i < len(h.subs); i++ {
			if sent == fanOutSlice || visited == visitSlice {
				p.handle, p.next = h.name, h.subs[i].contact
				return true
			}
			visited++
			sb := &h.subs[i]
			if sb.sent == withheldCode {
				continue // withheld still, and it has its unavailable
			}
			if sb.sent == code && !h.hidden {
				// Up to date, and not withheld: a withheld subscriber
				// holds withheldCode or a code from an earlier View,
				// but on a hidden handle between hide and its pass.
				continue
			}
			if since, ok := s.withheldIf(mayWithhold, h, sb.contact); ok {
				s.out.Presence(h.name, s.contacts.name(sb.contact), View{Since: since})
				sb.sent = withheldCode
				sent++
				continue
			}
			if sb.sent == code || p.withholdOnly {
				continue
			}
			s.out.Presence(h.name, s.contacts.name(sb.contact), v)
			sb.sent = code
			sent++
		}
	}
	return false
}

// mayWithhold reports whether anything may withhold h from a subscriber,
// so that only then is each one asked why (withheld): the common case
// asks nothing more of a subscriber.
func (h *handle) mayWithhold() bool {
	return h.hidden || len(h.kept) > 0 || len(h.owner.blocked) > 0
}

// removalSlice sends one slice of the notices of rm and reports whether
// more is left. A contact that subscribed again to a handle of the same
// name (added again since) is skipped: nothing is withdrawn from it.
func (s *Service) removalSlice(rm *removal) bool {
	n := min(len(rm.contacts), fanOutSlice)
	part := &removal{handle: rm.handle, owner: rm.owner, contacts: rm.contacts[:n], since: rm.since[:n]}
	now := s.now()
	for i, c := range part.contacts {
		if s.IsSubscribed(rm.handle, c) {
			continue
		}
		s.out.Presence(rm.handle, c, rm.view(i, now))
		s.out.Unsubscribed(rm.handle, c)
	}
	s.notes.inflight = append(s.notes.inflight, inflight{rm: part, mark: s.out.Mark()})
	rm.contacts, rm.since = rm.contacts[n:], rm.since[n:]
	return len(rm.contacts) > 0
}

// view is the unavailable presence the i-th contact of rm is sent, at.
func (rm *removal) view(i int, at time.Time) View {
	if !rm.since[i].IsZero() {
		return View{Since: rm.since[i]}
	}
	return goneViewOf(rm.owner, at)
}

// confirm forgets the removal notices that have been written, and
// queues their deletion from storage.
func (s *Service) confirm() {
	n := &s.notes
	w := s.out.Written()
	i := 0
	for i < len(n.inflight) && n.inflight[i].mark <= w {
		s.noticesSent(n.inflight[i].rm)
		i++
	}
	if i > 0 {
		clear(n.inflight[:i])
		n.inflight = n.inflight[i:]
	}
}

// noticesSent queues the deletion of the stored notices of rm, which were
// written: the removal, made before, is stored before it.
func (s *Service) noticesSent(rm *removal) {
	s.commits.add(&entry{op: noticesSentOp(rm), must: true, apply: func(error) {}})
}

func noticesSentOp(rm *removal) storage.Op {
	return storage.Op{Kind: storage.OpNoticesSent, Handle: rm.handle, Contacts: rm.contacts}
}

// loadNotices parks the notices that storage says are owed, from removals
// whose notices were not all written before the last stop: they go out
// after the first resync.
func (s *Service) loadNotices(notices []storage.Notice) {
	var cur *removal
	for _, nt := range notices {
		if cur == nil || cur.handle != nt.Handle {
			cur = &removal{handle: nt.Handle, owner: s.accounts[nt.Account]}
			s.notes.parked = append(s.notes.parked, cur)
		}
		cur.contacts = append(cur.contacts, nt.Contact)
		cur.since = append(cur.since, nt.Since)
	}
}

// Discard drops the fan-out work that the next connection's resync does
// again; it is called when the connection is lost. The removal notices
// that may not have been written are parked: their subscriptions are gone,
// so no resync could rebuild them.
func (s *Service) Discard() {
	s.online = false
	s.tellWebAll()
	s.confirm()
	n := &s.notes
	for _, f := range n.inflight {
		n.parked = append(n.parked, f.rm)
	}
	n.inflight = nil
	for _, j := range n.queue {
		if j.rm != nil {
			n.parked = append(n.parked, j.rm)
		} else {
			j.pass.a.pass = nil
		}
	}
	n.queue = nil
}

// MarkStale is called when the connection to the XMPP server is
// (re)established, before the owners are probed. What subscribers were
// told over an earlier connection no longer counts, and every known
// resource becomes unconfirmed: those that answer the probe are confirmed
// by OwnerPresence; DropStale then removes the others.
func (s *Service) MarkStale() {
	// The web shows every handle off-line already, and goes on doing so
	// while resyncing: the connection lost told it (Discard), or nothing
	// was shown before the first connection. Only a reconnection without
	// a Discard would have something to take back.
	shown := s.online && !s.resyncing
	s.epoch++
	s.online = true
	s.resyncing = true
	if shown {
		s.tellWebAll()
	}
	// A pass queued while disconnected (a write that committed meanwhile)
	// would show the account before its owner answered the probe: the
	// resync queues every account again once settled.
	n := &s.notes
	n.queue = slices.DeleteFunc(n.queue, func(j job) bool {
		if j.pass != nil {
			j.pass.a.pass = nil
		}
		return j.pass != nil
	})
	for _, h := range s.handles {
		for i := range h.subs {
			h.subs[i].sent = 0
		}
	}
	for _, a := range s.accounts {
		for _, r := range a.resources {
			r.stale = true
		}
	}
}

// DropStale removes the resources not confirmed since MarkStale and
// settles the flags; once they are stored, it queues a pass for every
// account, which tells every subscriber not yet told since MarkStale the
// current state, sends the parked removal notices, and calls done; unless
// the connection ended meanwhile.
func (s *Service) DropStale(done func()) {
	s.resyncing = false
	for _, a := range s.accounts {
		for res, r := range a.resources {
			if r.stale {
				delete(a.resources, res)
			}
		}
		s.setFlags(a, flagStep{at: s.now()})
	}
	epoch := s.epoch
	s.AfterCommit(func() {
		if s.epoch != epoch || !s.online {
			return // its connection ended meanwhile: the next one resyncs
		}
		for _, owner := range s.Owners() {
			s.notes.account(s.accounts[owner])
		}
		s.tellWebAll()
		for _, rm := range s.notes.parked {
			s.notes.removed(rm)
		}
		s.notes.parked = nil
		if done != nil {
			done()
		}
	})
}

// Withdrawal is what withdraws one handle from its subscribers: View, which
// is never available, goes to each of Contacts, followed by unsubscribed
// when the handle was removed.
type Withdrawal struct {
	Handle   string
	Contacts []string
	View     View
	Removed  bool
}

// Withdrawals returns what the component must send at shutdown, when it can
// no longer vouch for any handle: the removal notices not known to be
// written, which it takes, and, for every handle, the subscribers that may
// see it as available (last sent an available presence, or anything but
// the current View, or nothing since a reconnect, so a change to hiding or
// off-line not yet sent is covered too). A visible account is withdrawn as
// of at, the moment GoOffline then stores; a hidden or off-line one with
// its own View. It is called once everything sent was written.
func (s *Service) Withdrawals(at time.Time) []Withdrawal {
	// Nothing vouches for any handle from now on: the web shows them
	// off-line before the first withdrawal goes out, not after the drain.
	s.unvouch()
	var out []Withdrawal
	s.confirm()
	n := &s.notes
	rms := n.parked
	for _, f := range n.inflight {
		rms = append(rms, f.rm)
	}
	for _, j := range n.queue {
		if j.rm != nil {
			rms = append(rms, j.rm)
		}
	}
	n.parked, n.inflight = nil, nil
	n.queue = slices.DeleteFunc(n.queue, func(j job) bool { return j.rm != nil })
	n.withdrawn = rms
	for _, rm := range rms {
		g := withdrawals{handle: rm.handle, removed: true}
		for i, c := range rm.contacts {
			// The handle was added again and c subscribed anew: nothing
			// to withdraw.
			if !s.IsSubscribed(rm.handle, c) {
				g.add(c, rm.view(i, at))
			}
		}
		out = g.appendTo(out)
	}
	// No sorting: the order does not matter, and at shutdown every
	// millisecond spent before the first withdrawal counts.
	for _, h := range s.handles {
		code := h.owner.sentCode()
		g := withdrawals{handle: h.name}
		gone := goneViewOf(h.owner, at)
		mayWithhold := h.mayWithhold()
		for _, sb := range h.subs {
			if since, ok := s.withheldIf(mayWithhold, h, sb.contact); ok {
				// Left with its unavailable presence, unless not told it
				// since the last connection.
				if sb.sent != withheldCode {
					g.add(s.contacts.name(sb.contact), View{Since: since})
				}
				continue
			}
			if sb.sent != code || code&1 == 1 { // code is never 0
				g.add(s.contacts.name(sb.contact), gone)
			}
		}
		out = g.appendTo(out)
	}
	return out
}

// withdrawals gathers the Withdrawals of one handle, one per View.
type withdrawals struct {
	handle  string
	removed bool
	list    []Withdrawal
	index   map[View]int
}

func (g *withdrawals) add(contact string, v View) {
	if i, ok := g.index[v]; ok {
		g.list[i].Contacts = append(g.list[i].Contacts, contact)
		return
	}
	if g.index == nil {
		g.index = make(map[View]int)
	}
	g.index[v] = len(g.list)
	g.list = append(g.list, Withdrawal{Handle: g.handle, Contacts: []string{contact}, View: v, Removed: g.removed})
}

func (g *withdrawals) appendTo(out []Withdrawal) []Withdrawal { return append(out, g.list...) }

// unvouch takes the component off-line for the web: every public handle
// is shown off-line, once (while off-line, the web shows them so already).
func (s *Service) unvouch() {
	if s.online {
		s.online = false
		s.tellWebAll()
	}
}

func (s *Service) goneView(a *account) View { return goneViewOf(a, s.now()) }

// goneViewOf returns the View that withdraws a handle of a (can be nil):
// a's own View while it is hidden or off-line, so the stamp is the one its
// subscribers already have (a fresh one would tell them that a hiding
// owner is active), else unavailable as of at.
func goneViewOf(a *account, at time.Time) View {
	if a != nil {
		if v := ViewOf(a.flags); !v.Available {
			return v
		}
	}
	return View{Since: at}
}

// GoOffline forgets every resource and stores every account as off-line;
// those that were visible stopped being visible at at. It is called at
// shutdown, once nothing is committing, after the component sent the
// Withdrawals of the same moment; written says whether they were all
// written, so that the removal notices among them are owed no more. It
// writes synchronously, in one transaction, with the changes that failed
// to be stored before, which are tried a last time, after what is
// pending.
func (s *Service) GoOffline(ctx context.Context, at time.Time, written bool) error {
	// Nothing vouches for any handle any more (Withdrawals said so
	// already, unless it was not called): the web shows them off-line,
	// whatever becomes of the writes below.
	s.unvouch()
	// What the withdrawals queued (their notices written) goes first.
	s.settle(ctx)
	var ops []storage.Op
	unstored := make(map[*account]bool)
	for _, e := range s.commits.again {
		switch {
		case e.skip != nil && e.skip():
		case e.acct != nil:
			unstored[e.acct] = true // written below, as off-line
		case e.op.Kind != 0:
			ops = append(ops, e.op)
		}
	}
	if written {
		for _, rm := range s.notes.withdrawn {
			ops = append(ops, noticesSentOp(rm))
		}
	}
	var changed []*account
	for _, a := range s.accounts {
		clear(a.resources)
		f := flagStep{at: at}.apply(a, a.want)
		if f == a.flags && f == a.want && !unstored[a] {
			continue
		}
		a.want = f
		changed = append(changed, a)
		ops = append(ops, storage.Op{Kind: storage.OpSetFlags, Account: a.jid, Flags: f})
	}
	// A transaction like any other: no ping starts while it is under way.
	var err error
	s.health.committing(len(ops), func() {
		began := time.Now()
		err = s.store.Apply(ctx, ops)
		s.observeCommit(began, err)
	})
	if err != nil {
		return fmt.Errorf("roster: go off-line: %w", err)
	}
	s.commits.again = nil
	s.notes.withdrawn = nil
	for _, a := range changed {
		if ViewOf(a.flags) != ViewOf(a.want) {
			a.view++
		}
		a.flags = a.want
	}
	return nil
}
