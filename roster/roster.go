// Package roster is the logic of US 8,103,736 without XML or SQL: accounts
// (the patent's user IDs) that own handle names, the on-line flag, the status
// flag and whether notification is allowed, stored once per account and
// shared by all of its handles, and the contacts subscribed to each handle.
//
// A Service keeps in-memory indexes (handle → account, account → handles,
// handle → subscribers) in step with a storage.Store, so probes and fan-out
// never need a storage round trip. What subscribers may see of an account is
// its View; whenever the View changes, the Service hands the account to its
// Outbox, which brings every subscriber of every handle up to date through a
// Sender.
package roster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"presenced/storage"
)

// Errors returned by the Service. The component maps them to XMPP errors.
var (
	ErrHandleTaken   = errors.New("roster: handle name is taken")
	ErrHandleOwned   = errors.New("roster: handle is already the account's own")
	ErrHandleLimit   = errors.New("roster: handle limit reached")
	ErrUnknownHandle = errors.New("roster: unknown handle")
	ErrNotOwner      = errors.New("roster: handle belongs to another account")
	ErrBadStatus     = errors.New("roster: unknown status")
	ErrNoAccount     = errors.New("roster: no such account")
	ErrStopping      = errors.New("roster: stopping")
)

// Instruction is an explicit status instruction from the owner (the patent's
// status setting), as opposed to the status derived from client presence.
type Instruction string

// The instructions. Hide forbids notification; the others set the status
// flag and lift hiding. Visible lifts hiding and keeps the status derived
// from the owner's client presence (XEP-0186 <visible/>).
const (
	InstructAway      Instruction = "away"
	InstructBusy      Instruction = "busy"
	InstructUndefined Instruction = "undefined"
	InstructHide      Instruction = "hiding"
	InstructVisible   Instruction = "visible"
)

// OwnerPresence is one presence of one of the owner's resources.
type OwnerPresence struct {
	// Resource is the resourcepart of the sender; may be empty.
	Resource string
	// Available is false for type='unavailable'.
	Available bool
	// Status is derived from <show/>: none or chat → undefined, away or xa →
	// away, dnd → busy.
	Status storage.Status
	// Text is the <status/> text.
	Text string
	// Priority is the resource's <priority/>.
	Priority int
	// Hide is set when the presence asks for invisibility (an <invisible/>
	// child or type='invisible'): notification stops being allowed.
	Hide bool
}

// View is what a subscriber may see of an account. Hiding and off-line
// accounts have the same View: not available, no status, no text, and the
// moment they stopped being visible.
type View struct {
	Available bool
	Status    storage.Status // meaningful only when Available
	Text      string         // meaningful only when Available
	Since     time.Time      // when Available last changed
}

// ViewOf returns what subscribers may see of an account with flags f.
func ViewOf(f storage.Flags) View {
	if !f.Online || f.Hiding {
		return View{Since: f.Since}
	}
	return View{Available: true, Status: f.Status, Text: f.StatusText, Since: f.Since}
}

// resource is an available resource of an owner. It lives only in memory:
// after a restart or reconnect the owners are probed again.
type resource struct {
	priority int
	status   storage.Status
	text     string
	seq      uint64 // larger is more recent
	stale    bool   // not yet confirmed since the last (re)connection
}

type account struct {
	jid       string
	flags     storage.Flags
	handles   map[string]struct{}
	resources map[string]*resource
	// client is the status the owner's clients last reported (that of the
	// top resource), or "" when unknown, as after a restart. An explicit
	// status ends when it changes.
	client storage.Status
	// gate is held by the Outbox while it sends one stanza for this account
	// and by a state change while it replaces the flags, so no stanza built
	// from an old View can leave after the new View was set.
	gate sync.Mutex
}

// sub is one subscription with what was last sent to that contact.
type sub struct {
	sent  View
	valid bool // sent holds what the contact last received from us
}

// Service is the roster logic. Its methods are safe for concurrent use.
type Service struct {
	store      storage.Store
	maxHandles int
	now        func() time.Time
	out        *Outbox

	// change serialises state changes, including their storage writes, so
	// that memory and storage move in the same order.
	change sync.Mutex
	// stopping is set by Stop: every change but an unsubscription and
	// GoOffline is then refused. Guarded by change.
	stopping bool

	mu       sync.Mutex
	accounts map[string]*account        // guarded by mu; by bare JID
	handles  map[string]string          // guarded by mu; handle → account JID
	subs     map[string]map[string]*sub // guarded by mu; handle → contact → state
	seq      uint64                     // guarded by mu
	// resyncing is set between MarkStale and DropStale, while the owners'
	// servers answer the probes: passes that would show an account are held
	// until DropStale, so subscribers are told the settled state once.
	resyncing bool // guarded by mu
}

// Options configure a Service.
type Options struct {
	// MaxHandles is the number of handles an account may hold; 0 means 64.
	MaxHandles int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// DefaultMaxHandles is the patent's number of handle names per user ID.
const DefaultMaxHandles = 64

// New loads the durable state from store and returns a Service. Accounts
// start with no resources, so they are off-line until their owners are
// probed; their hiding flag and status are kept.
func New(ctx context.Context, store storage.Store, opts Options) (*Service, error) {
	snap, err := store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("roster: load: %w", err)
	}
	s := &Service{
		store:      store,
		maxHandles: opts.MaxHandles,
		now:        opts.Now,
		accounts:   make(map[string]*account, len(snap.Accounts)),
		handles:    make(map[string]string, len(snap.Handles)),
		subs:       make(map[string]map[string]*sub, len(snap.Handles)),
	}
	if s.maxHandles <= 0 {
		s.maxHandles = DefaultMaxHandles
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.out = newOutbox(s)
	for _, a := range snap.Accounts {
		acct := s.newAccountLocked(a.JID)
		acct.flags = a.Flags
		if acct.flags.Online {
			// Nobody vouches for the old on-line flag any more: the owner is
			// probed again after connecting. An account that was visible
			// stopped being visible now (after a crash, nothing withdrew it);
			// a hiding one keeps the moment it went hiding.
			if !acct.flags.Hiding {
				acct.flags.Since = s.now()
			}
			acct.flags.Online = false
		}
	}
	for _, h := range snap.Handles {
		acct := s.accounts[h.Account]
		if acct == nil {
			acct = s.newAccountLocked(h.Account)
		}
		acct.handles[h.Name] = struct{}{}
		s.handles[h.Name] = h.Account
		s.subs[h.Name] = make(map[string]*sub)
	}
	for _, sb := range snap.Subscriptions {
		if m := s.subs[sb.Handle]; m != nil {
			m[sb.Contact] = &sub{}
		}
	}
	return s, nil
}

// Outbox returns the Service's outbox, which must be started with Run to
// deliver notifications.
func (s *Service) Outbox() *Outbox { return s.out }

// MaxHandles returns the number of handles an account may hold.
func (s *Service) MaxHandles() int { return s.maxHandles }

func (s *Service) newAccountLocked(jid string) *account {
	a := &account{
		jid:       jid,
		flags:     storage.Flags{Status: storage.StatusUndefined},
		handles:   make(map[string]struct{}),
		resources: make(map[string]*resource),
	}
	s.accounts[jid] = a
	return a
}

// IsOwner reports whether jid (a bare JID) is an account.
func (s *Service) IsOwner(jid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts[jid] != nil
}

// OwnerOf returns the account that holds handle.
func (s *Service) OwnerOf(handle string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, ok := s.handles[handle]
	return owner, ok
}

// Owners returns every account's bare JID, sorted.
func (s *Service) Owners() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.accounts))
	for j := range s.accounts {
		out = append(out, j)
	}
	sort.Strings(out)
	return out
}

// Handles returns the account's handles, sorted.
func (s *Service) Handles(owner string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	return sortedKeys(a.handles)
}

// Flags returns the account's flags and whether the account exists.
func (s *Service) Flags(owner string) (storage.Flags, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[owner]
	if a == nil {
		return storage.Flags{}, false
	}
	return a.flags, true
}

// ViewOfHandle returns what subscribers of handle may see, and whether the
// handle exists.
func (s *Service) ViewOfHandle(handle string) (View, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner, ok := s.handles[handle]
	if !ok {
		return View{}, false
	}
	return ViewOf(s.accounts[owner].flags), true
}

// IsSubscribed reports whether contact (a bare JID) is subscribed to handle.
func (s *Service) IsSubscribed(handle, contact string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[handle][contact]
	return ok
}

// HasResource reports whether resource of owner is known to be available
// and has been confirmed since the last (re)connection.
func (s *Service) HasResource(owner, resource string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[owner]
	if a == nil {
		return false
	}
	r := a.resources[resource]
	return r != nil && !r.stale
}

// AddHandle gives handle (already prepared) to owner, creating the account
// on first use. A handle the owner already holds changes nothing and
// returns ErrHandleOwned.
func (s *Service) AddHandle(ctx context.Context, owner, handle string) error {
	if err := s.lockChange(); err != nil {
		return err
	}
	defer s.change.Unlock()
	if o, ok := s.OwnerOf(handle); ok && o == owner {
		return ErrHandleOwned
	}
	now := s.now()
	_, err := s.store.AddHandle(ctx, owner, handle, s.maxHandles, now)
	switch {
	case errors.Is(err, storage.ErrExists):
		return ErrHandleTaken
	case errors.Is(err, storage.ErrLimit):
		return ErrHandleLimit
	case err != nil:
		return fmt.Errorf("roster: add handle: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[owner]
	if a == nil {
		a = s.newAccountLocked(owner)
		a.flags.Since = now
	}
	a.handles[handle] = struct{}{}
	s.handles[handle] = owner
	s.subs[handle] = make(map[string]*sub)
	return nil
}

// RemoveHandle takes handle from owner. Its subscribers are told the handle
// is unavailable and their subscription is cancelled.
func (s *Service) RemoveHandle(ctx context.Context, owner, handle string) error {
	if err := s.lockChange(); err != nil {
		return err
	}
	defer s.change.Unlock()
	err := s.store.RemoveHandle(ctx, owner, handle)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return ErrUnknownHandle
	case errors.Is(err, storage.ErrNotOwner):
		return ErrNotOwner
	case err != nil:
		return fmt.Errorf("roster: remove handle: %w", err)
	}
	s.mu.Lock()
	a := s.accounts[owner]
	var contacts []string
	for c := range s.subs[handle] {
		contacts = append(contacts, c)
	}
	sort.Strings(contacts)
	delete(s.subs, handle)
	delete(s.handles, handle)
	if a != nil {
		delete(a.handles, handle)
	}
	s.mu.Unlock()
	if len(contacts) > 0 {
		s.out.removed(owner, handle, contacts)
	}
	return nil
}

// Subscribe records that contact subscribes to handle. The caller then
// approves the subscription and calls Probe to send the current presence,
// so that the approval arrives first.
func (s *Service) Subscribe(ctx context.Context, handle, contact string) error {
	if err := s.lockChange(); err != nil {
		return err
	}
	defer s.change.Unlock()
	s.mu.Lock()
	_, known := s.handles[handle]
	_, already := s.subs[handle][contact]
	s.mu.Unlock()
	if !known {
		return ErrUnknownHandle
	}
	if !already {
		err := s.store.AddSubscription(ctx, handle, contact)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrUnknownHandle
		}
		if err != nil {
			return fmt.Errorf("roster: subscribe: %w", err)
		}
		s.mu.Lock()
		if m := s.subs[handle]; m != nil {
			m[contact] = &sub{}
		}
		s.mu.Unlock()
	}
	return nil
}

// Unsubscribe forgets that contact subscribes to handle and reports
// whether it did. The contact's server has already ended the subscription
// (RFC 6121 §3.3), so it ends in memory even if storage fails; the error is
// returned for logging. It waits for a notification of the handle that is
// being sent, so nothing from the handle follows the caller's answer.
func (s *Service) Unsubscribe(ctx context.Context, handle, contact string) (bool, error) {
	s.change.Lock()
	defer s.change.Unlock()
	s.mu.Lock()
	_, ok := s.subs[handle][contact]
	a := s.accounts[s.handles[handle]]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	err := s.store.RemoveSubscription(ctx, handle, contact)
	if err != nil {
		err = fmt.Errorf("roster: unsubscribe: %w", err)
	}
	if a != nil {
		a.gate.Lock()
		defer a.gate.Unlock()
	}
	s.mu.Lock()
	delete(s.subs[handle], contact)
	s.mu.Unlock()
	return true, err
}

// Probe answers a presence probe from contact to handle: a subscriber gets
// the current presence through the outbox and Probe reports true; anyone
// else gets nothing here and Probe reports false.
func (s *Service) Probe(handle, contact string) bool {
	s.mu.Lock()
	_, ok := s.subs[handle][contact]
	s.mu.Unlock()
	if ok {
		s.out.one(handle, contact)
	}
	return ok
}

// OwnerPresence applies one presence of one of owner's resources. Presences
// of JIDs that are not accounts are ignored.
func (s *Service) OwnerPresence(ctx context.Context, owner string, p OwnerPresence) error {
	if err := s.lockChange(); err != nil {
		return err
	}
	defer s.change.Unlock()
	s.mu.Lock()
	a := s.accounts[owner]
	if a == nil {
		s.mu.Unlock()
		return nil
	}
	f := a.flags
	if p.Available {
		s.seq++
		a.resources[p.Resource] = &resource{priority: p.Priority, status: p.Status, text: p.Text, seq: s.seq}
	} else {
		delete(a.resources, p.Resource)
	}
	// The owner's clients changing their own status ends an explicit
	// status; repeating it (a reconnect, an answer to a probe) does not.
	if top := topResource(a); top != nil {
		if a.client != "" && top.status != a.client {
			f.Explicit = false
		}
		a.client = top.status
	}
	f = s.derivedFrom(a, f)
	if p.Hide {
		f.Hiding = true
	}
	s.mu.Unlock()
	// A presence is not acknowledged to anybody, so the new state holds in
	// memory even when storage fails; the next change writes it again.
	return s.commit(ctx, a, f, true, time.Time{})
}

// Instruct applies an explicit instruction for every handle of owner. It
// returns ErrNoAccount if owner holds no account (one is created by adding
// a handle). On error nothing changed.
func (s *Service) Instruct(ctx context.Context, owner string, in Instruction) error {
	if err := s.lockChange(); err != nil {
		return err
	}
	defer s.change.Unlock()
	s.mu.Lock()
	a := s.accounts[owner]
	if a == nil {
		s.mu.Unlock()
		return ErrNoAccount
	}
	f := a.flags
	switch in {
	case InstructHide:
		f.Hiding = true
	case InstructVisible:
		f.Hiding = false
		f.Explicit = false
		f = s.derivedFrom(a, f)
	case InstructAway, InstructBusy, InstructUndefined:
		f.Hiding = false
		f.Status = storage.Status(in)
		f.Explicit = true
	default:
		s.mu.Unlock()
		return ErrBadStatus
	}
	s.mu.Unlock()
	return s.commit(ctx, a, f, false, time.Time{})
}

// derivedFrom returns f with the on-line flag, status and text taken from
// a's resources: on-line while any resource is available, the status of the
// highest-priority one (ties to the most recent) unless an explicit status
// holds. With no resource the status is kept.
func (s *Service) derivedFrom(a *account, f storage.Flags) storage.Flags {
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

// commit stores f as a's flags and publishes the change. Since moves to at
// (the zero time: now) when the account's visibility changes. If
// keepOnError, a storage failure still updates memory (the error is
// returned for logging).
func (s *Service) commit(ctx context.Context, a *account, f storage.Flags, keepOnError bool, at time.Time) error {
	s.mu.Lock()
	old := a.flags
	s.mu.Unlock()
	if ViewOf(old).Available != ViewOf(f).Available || f.Since.IsZero() {
		if at.IsZero() {
			at = s.now() // only here: most changes keep their Since
		}
		f.Since = at
	}
	if f == old {
		return nil
	}
	err := s.store.SetFlags(ctx, a.jid, f)
	if err != nil {
		err = fmt.Errorf("roster: set flags: %w", err)
		if !keepOnError {
			return err
		}
	}
	a.gate.Lock()
	s.mu.Lock()
	a.flags = f
	changed := ViewOf(old) != ViewOf(f)
	// While resyncing, showing an account waits for DropStale; hiding it or
	// taking it off-line never waits.
	hold := s.resyncing && ViewOf(f).Available
	s.mu.Unlock()
	a.gate.Unlock()
	if changed && !hold {
		s.out.account(a.jid)
	}
	return err
}

// MarkStale marks every known resource as unconfirmed. It is called when the
// connection to the XMPP server is (re)established, before the owners are
// probed: resources that answer the probe are confirmed by OwnerPresence;
// DropStale then removes the others.
func (s *Service) MarkStale() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resyncing = true
	// What the subscribers last received over an earlier connection is not
	// known any more: everything sent from now on counts.
	for _, m := range s.subs {
		for _, st := range m {
			st.valid = false
		}
	}
	for _, a := range s.accounts {
		for _, r := range a.resources {
			r.stale = true
		}
	}
}

// DropStale removes resources not confirmed since MarkStale, updates the
// flags, and queues a pass for every account, which tells every subscriber
// not yet told since MarkStale the current state: after a (re)connection
// every subscriber hears it once.
func (s *Service) DropStale(ctx context.Context) error {
	s.mu.Lock()
	s.resyncing = false
	s.mu.Unlock()
	err := s.dropResources(ctx, func(r *resource) bool { return r.stale }, time.Time{})
	for _, owner := range s.Owners() {
		s.out.account(owner)
	}
	s.out.unpark()
	return err
}

// dropResources removes, account by account, the resources for which drop
// is true and commits the resulting flags as of at (the zero time: now). A
// storage failure does not stop it; the first error is returned.
func (s *Service) dropResources(ctx context.Context, drop func(*resource) bool, at time.Time) error {
	var firstErr error
	for _, owner := range s.Owners() {
		s.change.Lock()
		s.mu.Lock()
		a := s.accounts[owner]
		for res, r := range a.resources {
			if drop(r) {
				delete(a.resources, res)
			}
		}
		f := s.derivedFrom(a, a.flags)
		s.mu.Unlock()
		err := s.commit(ctx, a, f, true, at)
		s.change.Unlock()
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
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
// no longer vouch for any handle: the notices of removed handles not yet
// sent, which it takes from the outbox, and, for every handle, the
// subscribers that may see it as available (last sent an available
// presence, or not told anything since a reconnect, so a change to hiding
// or off-line not yet sent is covered too). A visible account is withdrawn
// as of at, the moment GoOffline then stores; a hidden or off-line one with
// its own View. It is called once the outbox has stopped.
func (s *Service) Withdrawals(at time.Time) []Withdrawal {
	var out []Withdrawal
	for _, j := range s.out.takeRemovals() {
		s.mu.Lock()
		v := s.goneViewLocked(s.accounts[j.owner], at)
		var contacts []string
		for _, c := range j.contacts {
			// The handle was added again and c subscribed anew: nothing
			// to withdraw (as in the outbox).
			if _, again := s.subs[j.key][c]; !again {
				contacts = append(contacts, c)
			}
		}
		s.mu.Unlock()
		if len(contacts) > 0 {
			out = append(out, Withdrawal{Handle: j.key, Contacts: contacts, View: v, Removed: true})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// No sorting: the order does not matter, and at shutdown every
	// millisecond spent before the first withdrawal counts.
	for h, m := range s.subs {
		var contacts []string
		for c, st := range m {
			if !st.valid || st.sent.Available {
				contacts = append(contacts, c)
			}
		}
		if len(contacts) > 0 {
			out = append(out, Withdrawal{Handle: h, Contacts: contacts, View: s.goneViewLocked(s.accounts[s.handles[h]], at)})
		}
	}
	return out
}

// GoneView returns the unavailable presence that tells a subscriber of
// handle that it no longer sees the handle, as when it unsubscribed. See
// goneViewLocked.
func (s *Service) GoneView(handle string) View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.goneViewLocked(s.accounts[s.handles[handle]], s.now())
}

// goneView is GoneView for a handle of owner that may no longer exist.
func (s *Service) goneView(owner string) View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.goneViewLocked(s.accounts[owner], s.now())
}

// goneViewLocked returns the View that withdraws a handle of a (can be
// nil): a's own View while it is hidden or off-line, so the stamp is the one
// its subscribers already have (a fresh one would tell them that a hiding
// owner is active), else unavailable as of at.
func (s *Service) goneViewLocked(a *account, at time.Time) View {
	if a != nil {
		if v := ViewOf(a.flags); !v.Available {
			return v
		}
	}
	return View{Since: at}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lockChange takes the change lock for a change, or returns ErrStopping,
// without the lock, once Stop was called.
func (s *Service) lockChange() error {
	s.change.Lock()
	if s.stopping {
		s.change.Unlock()
		return ErrStopping
	}
	return nil
}

// Stop ends changes for good, at shutdown, before the component takes the
// Withdrawals: from then on every change but an unsubscription (which the
// contact's server has made already) and GoOffline returns ErrStopping, so
// that what is withdrawn and what GoOffline stores are one state. A change
// under way finishes first.
func (s *Service) Stop() {
	s.change.Lock()
	defer s.change.Unlock()
	s.stopping = true
}

// GoOffline forgets every resource and stores every account as off-line;
// those that were visible stopped being visible at at. It is called at
// shutdown, after the component sent the Withdrawals of the same moment;
// the outbox is no longer running.
func (s *Service) GoOffline(ctx context.Context, at time.Time) error {
	return s.dropResources(ctx, func(*resource) bool { return true }, at)
}
