// Package roster is the logic of US 8,103,736 without XML or SQL: accounts
// (the patent's user IDs) that own handle names, the on-line flag, the status
// flag and whether notification is allowed, stored once per account and
// shared by all of its handles, and the contacts subscribed to each handle.
//
// A Service is owned by one goroutine, the engine, started with Run. Every
// other goroutine hands it work with Do; nothing else touches its state, so
// the state needs no lock. Changes are made durable by group commit: the
// changes decided while one transaction commits go together in the next
// one, and a change takes effect in memory, where probes and fan-out read
// it, only once its transaction committed. What subscribers may see of an
// account is its View; when the View changes, the engine brings every
// subscriber of every handle up to date through a Sender, a bounded slice
// at a time, so one account's wave never holds the others up for long.
//
// Methods of a Service other than New, SetSender, Run, Do and Shutdown must
// be called on the engine goroutine, from a function given to Do or from a
// callback the Service runs.
package roster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"presenced/internal/logonce"
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
	// ErrReserved: the name is one no account may take.
	ErrReserved = errors.New("roster: handle name is reserved")
	// ErrQuarantined: another account removed the name recently.
	ErrQuarantined = errors.New("roster: handle name was removed recently")
	// ErrAccountLimit: presenced holds as many accounts as it may.
	ErrAccountLimit = errors.New("roster: account limit reached")
	// ErrNotPending: there is no such subscription request (any more).
	ErrNotPending = errors.New("roster: no such subscription request")
	// ErrSubscriberLimit: the handle has as many subscribers as it may.
	ErrSubscriberLimit = errors.New("roster: subscriber limit reached")
	// ErrBusy: too many changes of the account wait to be stored; nothing
	// changed.
	ErrBusy = errors.New("roster: too many changes wait to be stored; try again")
	// ErrNotStored is what a change that takes effect at once (hiding,
	// an unsubscription, a denial, a handle removal) reports when its
	// first write failed: it holds in memory, and the engine writes it
	// again until it is stored. errors.Is finds the cause too.
	ErrNotStored = errors.New("roster: not stored yet; retrying")
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

// Sender delivers what the engine sends. The component implements it by
// rendering stanzas into its output buffer; tests implement it with a
// recorder. Its methods are called on the engine goroutine only and must
// not block for long: the component's writer goroutine does the network
// I/O.
type Sender interface {
	// Presence sends v to contact as the presence of handle.
	Presence(handle, contact string, v View)
	// Unsubscribed tells contact that its subscription to handle has ended.
	Unsubscribed(handle, contact string)
	// Flush is called when the engine has nothing more to send for now.
	Flush()
	// Mark returns a number that Written reaches once everything sent so
	// far has been written to the connection.
	Mark() uint64
	// Written returns the highest Mark whose stanzas were all written.
	Written() uint64
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
	jid string
	// flags are the committed flags: what subscribers see and probes are
	// answered from. want are the flags last decided, which equal flags
	// unless a write is on its way.
	flags, want storage.Flags
	// view counts the changes of ViewOf(flags), from 1; a subscription
	// records the view it was last sent (see sub.sent).
	view      uint32
	handles   []*handle // sorted by name
	resources map[string]*resource
	// client is the status the owner's clients last reported (that of the
	// top resource), or "" when unknown, as after a restart. An explicit
	// status ends when it changes.
	client storage.Status
	// flagsOp is the entry of the pending batch that writes want, if any;
	// writing is the one in the transaction in flight.
	flagsOp, writing *entry
	// pass is the fan-out pass under way or queued, if any.
	pass *pass
	// blocked are the contacts the owner blocks (interned, so that a
	// blocked contact keeps its number), each with the stamp it is left
	// with; unblocking holds the unblocks of each on their way, so that a
	// block decided meanwhile wins (control.go).
	blocked    map[uint32]time.Time
	unblocking map[string]*unblocks
}

// handle is a handle name with its subscribers and the requests waiting
// for its owner.
type handle struct {
	name   string
	owner  *account
	subs   []sub // sorted by contact
	policy storage.Policy
	// requests are the pending subscription requests, oldest first, at
	// most limits.pending.
	requests []request
	// storing and asking count the subscriptions and the requests of h
	// being stored.
	storing, asking int
	// hidden is set while the owner hides h from all of its subscribers;
	// hiddenSince is the stamp they are left with. showing counts the
	// shows on their way, and hideGen the hidings decided, so that a
	// hiding decided while a show is on its way wins (control.go).
	hidden      bool
	hiddenSince time.Time
	showing     int
	hideGen     uint64
	// kept are the stamps some subscribers keep, by contact number: those
	// a lift (an unblock, a show) would otherwise have sent a new stamp
	// while still withheld or while the account is not visible
	// (control.go). Nil unless needed.
	kept map[uint32]time.Time
	// web is set while the handle is public on the web; webbing counts
	// the web-on writes on their way, and webGen the web-offs decided, so
	// that an off decided meanwhile wins (web.go).
	web     bool
	webbing int
	webGen  uint64
}

// request is a pending subscription request.
type request struct {
	contact string
	at      time.Time
}

// sub is one subscription, stored compactly: the interned contact and what
// it was last sent, as view<<1 | 1 if that view was available; 0 means
// not known (nothing sent since the last connection).
type sub struct {
	contact uint32
	sent    uint32
}

// sentCode is what sub.sent holds once a subscriber has the View of a.
func (a *account) sentCode() uint32 {
	c := a.view << 1
	if ViewOf(a.flags).Available {
		c |= 1
	}
	return c
}

// Service is the roster logic. See the package comment for who may call
// what.
type Service struct {
	store  storage.Store
	limits limits
	now    func() time.Time
	log    *slog.Logger
	out    Sender
	web    WebSink // nil: no web side
	// health is what is known of storage (StorageOK), shared with the
	// health loop and read from any goroutine; healthEvery is how often
	// the loop looks (defaultHealthEvery; tests shorten it before Run).
	health      health
	healthEvery time.Duration
	// refusals remembers which refusals were logged lately, so that a
	// sender repeating one cannot fill the log.
	refusals *logonce.Limiter

	accounts map[string]*account
	handles  map[string]*handle
	// reservedNames are the names of handles being added, with the
	// account adding each; adding counts them by account.
	reservedNames map[string]string
	adding        map[string]int
	contacts      interner
	// pendingSubs and requesting are the subscriptions and the requests
	// being stored.
	pendingSubs writesOnWay
	requesting  writesOnWay
	// removed are the names removed, by whom and when, for the
	// quarantine; entries past it are dropped as they are met.
	removed map[string]removedName
	// removedSwept is the size of removed after its last sweep.
	removedSwept int
	seq          uint64
	// epoch counts the connections (MarkStale): what a resync settles
	// after its connection ended is not told to anyone.
	epoch uint64

	// resyncing is set between MarkStale and DropStale, while the owners'
	// servers answer the probes: passes that would show an account are held
	// until DropStale, so subscribers are told the settled state once.
	resyncing bool
	// stopping is set by Shutdown: every change but an unsubscription is
	// then refused.
	stopping bool
	// online is set between MarkStale and Discard, while connected: only
	// then does fan-out run.
	online bool

	commits committer
	notes   notifier
	eng     engine
	// counts are the gauges of the state (Counts), and observe the
	// Options' ObserveCommit; both are read from other goroutines.
	counts  counts
	observe func(time.Duration, error)
}

// Options configure a Service.
type Options struct {
	// MaxHandles is the number of handles an account may hold; 0 means 64.
	MaxHandles int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Log receives what the engine cannot report to a caller; nil
	// discards it.
	Log *slog.Logger
	// Policy is the subscription policy of a handle added without one;
	// "" means storage.PolicyAsk.
	Policy storage.Policy
	// Reserved are prepared names that no account may take.
	Reserved []string
	// Quarantine is how long a removed name stays out of reach of the
	// other accounts; 0 means not at all.
	Quarantine time.Duration
	// MaxAccounts bounds the accounts; 0 means no bound.
	MaxAccounts int
	// MaxResources bounds the resources kept per account; 0 means
	// DefaultMaxResources.
	MaxResources int
	// MaxSubscribers bounds the subscribers of one handle; 0 means
	// DefaultMaxSubscribers.
	MaxSubscribers int
	// MaxPending bounds the pending subscription requests of one handle;
	// 0 means DefaultMaxPending.
	MaxPending int
	// MaxBlocked bounds the contacts one account may block; 0 means
	// DefaultMaxBlocked.
	MaxBlocked int
	// ObserveCommit, if set, is told the duration and the outcome of
	// every transaction (Store.Apply) the Service runs, on the goroutine
	// that ran it; it must be quick and safe for concurrent use.
	ObserveCommit func(d time.Duration, err error)
}

// Defaults of Options.
const (
	// DefaultMaxHandles is the patent's number of handle names per user
	// ID.
	DefaultMaxHandles     = 64
	DefaultMaxResources   = 16
	DefaultMaxSubscribers = 100000
	DefaultMaxPending     = 100
	DefaultMaxBlocked     = 10000
)

// New loads the durable state from store and returns a Service. Accounts
// start with no resources, so they are off-line until their owners are
// probed; their hiding flag and status are kept.
func New(ctx context.Context, store storage.Store, opts Options) (*Service, error) {
	began := time.Now()
	snap, err := store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("roster: load: %w", err)
	}
	s := &Service{
		store:         store,
		limits:        limitsOf(opts),
		now:           opts.Now,
		log:           opts.Log,
		out:           discard{},
		accounts:      make(map[string]*account, len(snap.Accounts)),
		handles:       make(map[string]*handle, len(snap.Handles)),
		reservedNames: make(map[string]string),
		adding:        make(map[string]int),
		contacts:      newInterner(),
		pendingSubs:   make(writesOnWay),
		requesting:    make(writesOnWay),
		removed:       make(map[string]removedName, len(snap.Removed)),
		refusals:      logonce.New(time.Minute),
		observe:       opts.ObserveCommit,
		healthEvery:   defaultHealthEvery,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.eng.init()
	s.health.record(began, true) // the load is the first observation
	s.load(snap)
	// The snapshot is garbage now, and at a million subscriptions it was
	// most of the heap: give its pages back rather than keep them resident.
	snap = nil
	debug.FreeOSMemory()
	return s, nil
}

func (s *Service) load(snap *storage.Snapshot) {
	// The accounts visible on record: their subscribers saw them since any
	// stamp kept without a reason to withhold (the flags that hid them
	// were stored before the keep, and the unkeep may not have been).
	wasVisible := make(map[*account]bool)
	for _, a := range snap.Accounts {
		acct := s.newAccount(a.JID)
		acct.flags = a.Flags
		wasVisible[acct] = ViewOf(a.Flags).Available
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
		acct.want = acct.flags
	}
	for _, h := range snap.Handles {
		acct := s.accounts[h.Account]
		if acct == nil {
			acct = s.newAccount(h.Account)
		}
		hd := s.addHandleLocal(acct, h.Name, h.Policy)
		hd.hidden, hd.hiddenSince, hd.web = h.Hidden, h.HiddenSince, h.Web
	}
	for _, b := range snap.Blocked {
		if acct := s.accounts[b.Account]; acct != nil {
			if acct.blocked == nil {
				acct.blocked = make(map[uint32]time.Time)
			}
			acct.blocked[s.contacts.ref(b.Contact)] = b.Since
		}
	}
	for _, r := range snap.Requests {
		if h := s.handles[r.Handle]; h != nil {
			s.addRequest(h, request{contact: r.Contact, at: r.At})
		}
	}
	for _, r := range snap.Removed {
		if s.now().Sub(r.At) < s.limits.quarantine {
			s.removed[r.Name] = removedName{account: r.Account, at: r.At}
		}
	}
	s.loadNotices(snap.Notices)
	var cur *handle
	for _, sb := range snap.Subscriptions {
		if cur == nil || cur.name != sb.Handle {
			cur = s.handles[sb.Handle]
			if cur == nil {
				continue
			}
		}
		cur.subs = append(cur.subs, sub{contact: s.contacts.ref(sb.Contact)})
		s.counts.subs.Add(1)
	}
	for _, h := range s.handles {
		slices.SortFunc(h.subs, func(a, b sub) int { return cmp.Compare(a.contact, b.contact) })
		h.subs = slices.Clip(h.subs)
	}
	for _, k := range snap.Kept {
		h := s.handles[k.Handle]
		id, ok := s.contacts.lookup(k.Contact)
		if h == nil || !ok {
			continue
		}
		if _, ok := findID(h.subs, id); !ok {
			continue
		}
		if wasVisible[h.owner] && !h.reason(id) {
			s.storeUnkept(h, []string{k.Contact})
			continue
		}
		if h.kept == nil {
			h.kept = make(map[uint32]time.Time)
		}
		h.kept[id] = k.Since
	}
}

// SetSender sets where the engine sends presence. It must be called before
// Run.
func (s *Service) SetSender(out Sender) { s.out = out }

// MaxHandles returns the number of handles an account may hold.
func (s *Service) MaxHandles() int { return s.limits.handles }

func (s *Service) newAccount(jid string) *account {
	a := &account{
		jid:       jid,
		flags:     storage.Flags{Status: storage.StatusUndefined},
		view:      1,
		resources: make(map[string]*resource),
	}
	a.want = a.flags
	s.accounts[jid] = a
	s.counts.accounts.Store(int64(len(s.accounts)))
	return a
}

// addHandleLocal gives a handle named name to a in memory.
func (s *Service) addHandleLocal(a *account, name string, policy storage.Policy) *handle {
	h := &handle{name: name, owner: a, policy: policy}
	i, _ := slices.BinarySearchFunc(a.handles, name, func(h *handle, n string) int { return cmp.Compare(h.name, n) })
	a.handles = slices.Insert(a.handles, i, h)
	s.handles[name] = h
	s.counts.handles.Store(int64(len(s.handles)))
	return h
}

// IsOwner reports whether jid (a bare JID) is an account.
func (s *Service) IsOwner(jid string) bool { return s.accounts[jid] != nil }

// OwnerOf returns the account that holds handle.
func (s *Service) OwnerOf(handle string) (string, bool) {
	h := s.handles[handle]
	if h == nil {
		return "", false
	}
	return h.owner.jid, true
}

// Owners returns every account's bare JID, sorted.
func (s *Service) Owners() []string {
	out := make([]string, 0, len(s.accounts))
	for j := range s.accounts {
		out = append(out, j)
	}
	sort.Strings(out)
	return out
}

// Handles returns the account's handles, sorted.
func (s *Service) Handles(owner string) []string {
	a := s.accounts[owner]
	if a == nil {
		return nil
	}
	out := make([]string, len(a.handles))
	for i, h := range a.handles {
		out[i] = h.name
	}
	return out
}

// Flags returns the account's committed flags and whether the account
// exists.
func (s *Service) Flags(owner string) (storage.Flags, bool) {
	a := s.accounts[owner]
	if a == nil {
		return storage.Flags{}, false
	}
	return a.flags, true
}

// Policy returns the subscription policy of handle, and whether it
// exists.
func (s *Service) Policy(handle string) (storage.Policy, bool) {
	h := s.handles[handle]
	if h == nil {
		return "", false
	}
	return h.policy, true
}

// DefaultPolicy returns the policy of a handle added without one.
func (s *Service) DefaultPolicy() storage.Policy { return s.limits.policy }

// IsSubscribed reports whether contact (a bare JID) is subscribed to handle.
func (s *Service) IsSubscribed(handle, contact string) bool {
	h := s.handles[handle]
	if h == nil {
		return false
	}
	_, ok := s.findSub(h, contact)
	return ok
}

// findSub returns the index of contact's subscription in h.subs.
func (s *Service) findSub(h *handle, contact string) (int, bool) {
	id, ok := s.contacts.lookup(contact)
	if !ok {
		return 0, false
	}
	return findID(h.subs, id)
}

func findID(subs []sub, id uint32) (int, bool) {
	return slices.BinarySearchFunc(subs, id, func(s sub, id uint32) int { return cmp.Compare(s.contact, id) })
}

// HasResource reports whether resource of owner is known to be available
// and has been confirmed since the last (re)connection.
func (s *Service) HasResource(owner, resource string) bool {
	a := s.accounts[owner]
	if a == nil {
		return false
	}
	r := a.resources[resource]
	return r != nil && !r.stale
}

// Probe answers a presence probe from contact to handle: a subscriber is
// sent the current presence at once and Probe reports true; anyone else
// gets nothing here and Probe reports false.
func (s *Service) Probe(handle, contact string) bool {
	h := s.handles[handle]
	if h == nil {
		return false
	}
	i, ok := s.findSub(h, contact)
	if !ok {
		return false
	}
	v, code := s.viewFor(h, h.subs[i].contact)
	s.out.Presence(h.name, contact, v)
	h.subs[i].sent = code
	return true
}

// interner gives each contact JID a small number, so that a subscription
// is eight bytes whatever the length of the JID. Numbers no subscription
// uses any more are given out again.
type interner struct {
	ids   map[string]uint32
	names []string
	refs  []uint32
	free  []uint32
}

func newInterner() interner { return interner{ids: make(map[string]uint32)} }

func (in *interner) lookup(name string) (uint32, bool) {
	id, ok := in.ids[name]
	return id, ok
}

// ref returns name's number and counts one more use of it.
func (in *interner) ref(name string) uint32 {
	if id, ok := in.ids[name]; ok {
		in.refs[id]++
		return id
	}
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
		in.names[id], in.refs[id] = name, 1
	} else {
		id = uint32(len(in.names))
		in.names = append(in.names, name)
		in.refs = append(in.refs, 1)
	}
	in.ids[name] = id
	return id
}

// unref counts one use of id less, forgetting the name at none.
func (in *interner) unref(id uint32) {
	in.refs[id]--
	if in.refs[id] == 0 {
		delete(in.ids, in.names[id])
		in.names[id] = ""
		in.free = append(in.free, id)
	}
}

func (in *interner) name(id uint32) string { return in.names[id] }

// discard is the Sender of a Service that has none yet.
type discard struct{}

func (discard) Presence(string, string, View) {}
func (discard) Unsubscribed(string, string)   {}
func (discard) Flush()                        {}
func (discard) Mark() uint64                  { return 0 }
func (discard) Written() uint64               { return 0 }
