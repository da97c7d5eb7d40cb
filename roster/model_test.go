package roster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"presenced/storage"
)

// recorder is a Sender that remembers the last thing each contact received
// from each handle, and checks every send against the reference model at the
// moment it is made.
type recorder struct {
	t     *rapid.T
	m     *model
	last  map[[2]string]View // handle, contact → last presence
	unsub map[[2]string]bool // handle, contact → got unsubscribed
	sent  int
}

func (r *recorder) Presence(ctx context.Context, handle, contact string, v View) error {
	r.sent++
	key := [2]string{handle, contact}
	if !r.m.subscribed(handle, contact) && !r.m.removedSubs[key] {
		r.t.Fatalf("presence %+v from %s reached non-subscriber %s", v, handle, contact)
	}
	owner, ok := r.m.handles[handle]
	if !ok {
		owner = r.m.removedFrom[handle]
	}
	if v.Available && (!ok || !r.m.visible(owner)) {
		r.t.Fatalf("available presence %+v left for handle %s of an account that is hiding or off-line", v, handle)
	}
	// The clock ticks at every reading, so a fresh stamp always differs.
	if last, seen := r.last[key]; seen && !v.Available && !last.Available && !r.m.visible(owner) && !v.Since.Equal(last.Since) {
		r.t.Fatalf("handle %s of a hiding or off-line account sent %s an unavailable stamped %v, after %v: a fresh stamp shows activity",
			handle, contact, v.Since, last.Since)
	}
	r.last[key] = v
	return nil
}

func (r *recorder) Unsubscribed(ctx context.Context, handle, contact string) error {
	key := [2]string{handle, contact}
	if !r.m.removedSubs[key] {
		r.t.Fatalf("unsubscribed from %s to %s, which had no subscription removed", handle, contact)
	}
	r.unsub[key] = true
	return nil
}

// model is the reference: the flags the patent describes, written as
// plainly as possible.
type model struct {
	handles     map[string]string          // handle → owner
	subs        map[[2]string]bool         // handle, contact
	removedSubs map[[2]string]bool         // subscriptions ended by a handle removal
	removedFrom map[string]string          // removed handle → the owner it had
	resources   map[string][]modelResource // owner → available resources, oldest first
	hiding      map[string]bool
	accounts    map[string]bool           // owners that added a handle once
	explicit    map[string]storage.Status // explicit status in force, if any
	client      map[string]storage.Status // status the clients last reported; "" unknown
	policy      map[string]storage.Policy // handle → its policy
	requests    map[string][]string       // handle → pending requests, oldest first
}

// Bounds the model runs the roster with, small enough to be reached.
const (
	modelMaxPending     = 2
	modelMaxSubscribers = 2
)

func (m *model) subscribers(h string) int {
	n := 0
	for k := range m.subs {
		if k[0] == h {
			n++
		}
	}
	return n
}

func (m *model) dropRequest(h, c string) bool {
	rs := m.requests[h]
	for i, x := range rs {
		if x == c {
			m.requests[h] = append(rs[:i:i], rs[i+1:]...)
			return true
		}
	}
	return false
}

// removeHandle records the removal of h, whose notices follow.
func (m *model) removeHandle(h, o string) {
	delete(m.handles, h)
	delete(m.requests, h)
	m.removedFrom[h] = o
	for k := range m.subs {
		if k[0] == h {
			delete(m.subs, k)
			m.removedSubs[k] = true
		}
	}
}

type modelResource struct {
	name     string
	priority int
	status   storage.Status
	text     string
}

func (m *model) subscribed(handle, contact string) bool { return m.subs[[2]string{handle, contact}] }

func (m *model) visible(owner string) bool {
	return len(m.resources[owner]) > 0 && !m.hiding[owner]
}

// view is what the model says subscribers of owner's handles see.
func (m *model) top(owner string) (modelResource, bool) {
	var top modelResource
	found := false
	for _, r := range m.resources[owner] { // later is more recent: >= keeps the newest tie
		if !found || r.priority >= top.priority {
			top, found = r, true
		}
	}
	return top, found
}

// clientSpoke applies the rule for explicit statuses after a presence of
// the owner's clients: it ends when the top resource's status differs from
// the one they last reported.
func (m *model) clientSpoke(owner string) {
	top, ok := m.top(owner)
	if !ok {
		return
	}
	if c := m.client[owner]; c != "" && c != top.status {
		m.explicit[owner] = ""
	}
	m.client[owner] = top.status
}

func (m *model) view(owner string) View {
	if !m.visible(owner) {
		return View{}
	}
	top, _ := m.top(owner)
	st := top.status
	if e := m.explicit[owner]; e != "" {
		st = e
	}
	return View{Available: true, Status: st, Text: top.text}
}

func (m *model) setResource(owner string, r modelResource) {
	m.dropResource(owner, r.name)
	m.resources[owner] = append(m.resources[owner], r)
}

func (m *model) dropResource(owner, name string) {
	rs := m.resources[owner]
	for i, x := range rs {
		if x.name == name {
			m.resources[owner] = append(rs[:i:i], rs[i+1:]...)
			return
		}
	}
}

var (
	modelOwners   = []string{"alice@example.org", "bob@example.org"}
	modelContacts = []string{"carol@example.net", "dave@example.net", "erin@example.com"}
	modelHandles  = []string{"h1", "h2", "h3", "h4"}
	modelRes      = []string{"phone", "desktop", "web"}
	modelStatuses = []storage.Status{storage.StatusUndefined, storage.StatusAway, storage.StatusBusy}
)

// TestModel drives the roster with random sequences of log-ins, log-offs,
// resource churn, show changes, hiding, unhiding, subscriptions, handle
// removals and restarts, and checks it against the reference model: no
// available presence ever leaves for a hiding or off-line account, no
// presence reaches a non-subscriber, and after every step every
// subscriber's last view equals the model's.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		store := newMemStore()
		m := &model{
			handles: map[string]string{}, subs: map[[2]string]bool{}, removedSubs: map[[2]string]bool{}, removedFrom: map[string]string{},
			resources: map[string][]modelResource{}, hiding: map[string]bool{},
			accounts: map[string]bool{}, explicit: map[string]storage.Status{}, client: map[string]storage.Status{},
			policy: map[string]storage.Policy{}, requests: map[string][]string{},
		}
		rec := &recorder{t: rt, m: m, last: map[[2]string]View{}, unsub: map[[2]string]bool{}}
		var ticks atomic.Int64
		clock := func() time.Time {
			return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(ticks.Add(1)) * time.Second)
		}
		opts := Options{MaxHandles: 3, Now: clock, MaxPending: modelMaxPending, MaxSubscribers: modelMaxSubscribers}
		svc, err := newSync(New(ctx, store, opts))
		if err != nil {
			rt.Fatal(err)
		}
		flush := func() {
			if err := svc.Outbox().Flush(ctx, rec); err != nil {
				rt.Fatal(err)
			}
			clear(m.removedSubs)
			clear(m.removedFrom)
		}

		ownerGen := rapid.SampledFrom(modelOwners)
		contactGen := rapid.SampledFrom(modelContacts)
		handleGen := rapid.SampledFrom(modelHandles)
		resGen := rapid.SampledFrom(modelRes)
		statusGen := rapid.SampledFrom(modelStatuses)

		rt.Repeat(map[string]func(*rapid.T){
			"addHandle": func(t *rapid.T) {
				o, h := ownerGen.Draw(t, "owner"), handleGen.Draw(t, "handle")
				policy := rapid.SampledFrom([]storage.Policy{storage.PolicyAsk, storage.PolicyOpen}).Draw(t, "policy")
				err := svc.AddHandleWith(ctx, o, h, policy)
				holder, taken := m.handles[h]
				n := 0
				for _, x := range m.handles {
					if x == o {
						n++
					}
				}
				switch {
				case taken && holder == o:
					if err != ErrHandleOwned {
						t.Fatalf("AddHandle(%s, %s) of its own handle = %v, want ErrHandleOwned", o, h, err)
					}
				case taken:
					if err != ErrHandleTaken {
						t.Fatalf("AddHandle(%s, %s) = %v, want ErrHandleTaken", o, h, err)
					}
				case n >= 3:
					if err != ErrHandleLimit {
						t.Fatalf("AddHandle(%s, %s) = %v, want ErrHandleLimit", o, h, err)
					}
				default:
					if err != nil {
						t.Fatalf("AddHandle(%s, %s) = %v", o, h, err)
					}
					m.handles[h] = o
					m.accounts[o] = true
					m.policy[h] = policy
				}
			},
			"removeHandle": func(t *rapid.T) {
				o, h := ownerGen.Draw(t, "owner"), handleGen.Draw(t, "handle")
				err := svc.RemoveHandle(ctx, o, h)
				owner, exists := m.handles[h]
				switch {
				case !exists:
					if err != ErrUnknownHandle {
						t.Fatalf("RemoveHandle(%s, %s) = %v, want ErrUnknownHandle", o, h, err)
					}
				case owner != o:
					if err != ErrNotOwner {
						t.Fatalf("RemoveHandle(%s, %s) = %v, want ErrNotOwner", o, h, err)
					}
				default:
					if err != nil {
						t.Fatal(err)
					}
					m.removeHandle(h, o)
				}
				flush()
				for k := range rec.last {
					if k[0] == h && exists && owner == o {
						if rec.last[k].Available || !rec.unsub[k] {
							t.Fatalf("after removing %s, %s last saw %+v (unsubscribed: %v)", h, k[1], rec.last[k], rec.unsub[k])
						}
						delete(rec.last, k)
						delete(rec.unsub, k)
					}
				}
			},
			"subscribe": func(t *rapid.T) {
				c, h := contactGen.Draw(t, "contact"), handleGen.Draw(t, "handle")
				out, err := svc.SubscribeOutcome(ctx, h, c)
				want, wantErr := m.subscribeOutcome(h, c)
				if out != want || !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
					t.Fatalf("Subscribe(%s, %s) = %v, %v; want %v, %v", h, c, out, err, want, wantErr)
				}
				switch {
				case out == Approved:
					m.subs[[2]string{h, c}] = true
					svc.Probe(h, c) // the component sends the presence after 'subscribed'
				case out == Requested:
					m.requests[h] = append(m.requests[h], c)
				}
			},
			"approve": func(t *rapid.T) {
				o, h, c := ownerGen.Draw(t, "owner"), handleGen.Draw(t, "handle"), contactGen.Draw(t, "contact")
				err := svc.Approve(ctx, o, h, c)
				switch want := m.decideErr(o, h, c); {
				case want != nil:
					if !errors.Is(err, want) {
						t.Fatalf("Approve(%s, %s, %s) = %v, want %v", o, h, c, err, want)
					}
				case m.subscribers(h) >= modelMaxSubscribers:
					if !errors.Is(err, ErrSubscriberLimit) {
						t.Fatalf("Approve(%s, %s, %s) at the limit = %v, want ErrSubscriberLimit", o, h, c, err)
					}
				default:
					if err != nil {
						t.Fatal(err)
					}
					m.dropRequest(h, c)
					m.subs[[2]string{h, c}] = true
					svc.Probe(h, c)
				}
			},
			"deny": func(t *rapid.T) {
				o, h, c := ownerGen.Draw(t, "owner"), handleGen.Draw(t, "handle"), contactGen.Draw(t, "contact")
				err := svc.Deny(ctx, o, h, c)
				want := m.decideErr(o, h, c)
				if !errors.Is(err, want) || (want == nil && err != nil) {
					t.Fatalf("Deny(%s, %s, %s) = %v, want %v", o, h, c, err, want)
				}
				if want == nil {
					m.dropRequest(h, c)
				}
			},
			"outage": func(t *rapid.T) {
				// Storage fails for one change: what takes effect at once
				// holds (ErrNotStored) and is stored later; anything else
				// is refused and changes nothing.
				o, h, c := ownerGen.Draw(t, "owner"), handleGen.Draw(t, "handle"), contactGen.Draw(t, "contact")
				what := rapid.SampledFrom([]string{"hide", "away", "unsubscribe", "deny", "remove", "subscribe", "approve"}).Draw(t, "change")
				store.setDown(true)
				defer store.setDown(false)
				m.outage(t, svc, what, o, h, c)
				flush()
				for k := range rec.last {
					if !m.subs[k] {
						delete(rec.last, k)
						delete(rec.unsub, k)
					}
				}
			},
			"unsubscribe": func(t *rapid.T) {
				c, h := contactGen.Draw(t, "contact"), handleGen.Draw(t, "handle")
				was, err := svc.Unsubscribe(ctx, h, c)
				if err != nil {
					t.Fatal(err)
				}
				if was != m.subscribed(h, c) {
					t.Fatalf("Unsubscribe(%s, %s) = %v, model says %v", h, c, was, m.subscribed(h, c))
				}
				delete(m.subs, [2]string{h, c})
				m.dropRequest(h, c) // a contact withdraws its request so
				delete(rec.last, [2]string{h, c})
			},
			"probe": func(t *rapid.T) {
				c, h := contactGen.Draw(t, "contact"), handleGen.Draw(t, "handle")
				before := rec.sent
				got := svc.Probe(h, c)
				if got != m.subscribed(h, c) {
					t.Fatalf("Probe(%s, %s) = %v, want %v", h, c, got, m.subscribed(h, c))
				}
				flush()
				if got && rec.sent != before+1 {
					t.Fatalf("Probe(%s, %s) by a subscriber sent %d stanzas, want 1", h, c, rec.sent-before)
				}
			},
			"available": func(t *rapid.T) {
				o := ownerGen.Draw(t, "owner")
				r := modelResource{
					name:     resGen.Draw(t, "resource"),
					priority: rapid.IntRange(-1, 2).Draw(t, "priority"),
					status:   statusGen.Draw(t, "status"),
					text:     rapid.SampledFrom([]string{"", "at lunch", "in a meeting"}).Draw(t, "text"),
				}
				hide := rapid.IntRange(0, 9).Draw(t, "invisibleChild") == 0
				err := svc.OwnerPresence(ctx, o, OwnerPresence{Resource: r.name, Available: true, Status: r.status, Text: r.text, Priority: r.priority, Hide: hide})
				if err != nil {
					t.Fatal(err)
				}
				if svc.IsOwner(o) != m.accounts[o] {
					t.Fatalf("IsOwner(%s) = %v, want %v", o, svc.IsOwner(o), m.accounts[o])
				}
				if m.accounts[o] {
					m.setResource(o, r)
					m.clientSpoke(o)
					if hide {
						m.hiding[o] = true
					}
				}
			},
			"unavailable": func(t *rapid.T) {
				o, res := ownerGen.Draw(t, "owner"), resGen.Draw(t, "resource")
				if err := svc.OwnerPresence(ctx, o, OwnerPresence{Resource: res}); err != nil {
					t.Fatal(err)
				}
				if m.accounts[o] {
					m.dropResource(o, res)
					m.clientSpoke(o)
				}
			},
			"instruct": func(t *rapid.T) {
				o := ownerGen.Draw(t, "owner")
				in := rapid.SampledFrom([]Instruction{InstructAway, InstructBusy, InstructUndefined, InstructHide, InstructVisible}).Draw(t, "instruction")
				err := svc.Instruct(ctx, o, in)
				if !m.accounts[o] {
					if err != ErrNoAccount {
						t.Fatalf("Instruct(%s) without an account = %v, want ErrNoAccount", o, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				switch in {
				case InstructHide:
					m.hiding[o] = true
				case InstructVisible:
					m.hiding[o] = false
					m.explicit[o] = ""
				default:
					m.hiding[o] = false
					m.explicit[o] = storage.Status(in)
				}
			},
			"restart": func(t *rapid.T) {
				flush()
				// Shutdown: the component withdraws every visible handle.
				at := clock()
				for _, w := range svc.Withdrawals(at) {
					for _, c := range w.Contacts {
						_ = rec.Presence(ctx, w.Handle, c, w.View)
					}
				}
				if err := svc.GoOffline(ctx, at, true); err != nil {
					t.Fatal(err)
				}
				svc, err = newSync(New(ctx, store, opts))
				if err != nil {
					t.Fatal(err)
				}
				// The owners answer no probe: they went off-line meanwhile.
				// What their clients last reported is forgotten.
				clear(m.resources)
				clear(m.client)
				svc.MarkStale()
				if err := svc.DropStale(ctx); err != nil {
					t.Fatal(err)
				}
			},
			"": func(t *rapid.T) {
				flush()
				checkViews(t, m, rec)
				checkRequests(t, m, svc)
			},
		})
	})
}

// subscribeOutcome is what the model says becomes of a request.
func (m *model) subscribeOutcome(h, c string) (SubscribeOutcome, error) {
	switch {
	case m.handles[h] == "":
		return Ignored, ErrUnknownHandle
	case m.subscribed(h, c):
		return Approved, nil
	case m.policy[h] == storage.PolicyOpen && m.subscribers(h) >= modelMaxSubscribers:
		return Ignored, ErrSubscriberLimit
	case m.policy[h] == storage.PolicyOpen:
		return Approved, nil
	case slices.Contains(m.requests[h], c) || len(m.requests[h]) >= modelMaxPending:
		return Ignored, nil
	}
	return Requested, nil
}

// decideErr is the error the model expects of a decision on c's request.
func (m *model) decideErr(o, h, c string) error {
	switch {
	case m.handles[h] != o:
		return ErrUnknownHandle
	case !slices.Contains(m.requests[h], c):
		return ErrNotPending
	}
	return nil
}

// outage makes one change while storage fails and checks it against the
// model: hiding, an unsubscription, a denial and a removal hold at once
// (ErrNotStored); the rest is refused and changes nothing.
func (m *model) outage(t *rapid.T, svc *syncService, what, o, h, c string) {
	ctx := context.Background()
	notStored := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrNotStored) {
			t.Fatalf("%s with storage down = %v, want ErrNotStored", what, err)
		}
	}
	refused := func(err error) {
		t.Helper()
		if err == nil || errors.Is(err, ErrNotStored) {
			t.Fatalf("%s with storage down = %v, want refused", what, err)
		}
	}
	switch what {
	case "hide", "away":
		in := InstructHide
		if what == "away" {
			in = InstructAway
		}
		err := svc.Instruct(ctx, o, in)
		switch {
		case !m.accounts[o]:
			if err != ErrNoAccount {
				t.Fatalf("Instruct(%s) without an account = %v", o, err)
			}
		case in == InstructHide && m.hiding[o]:
			// It changes nothing; it waits for a write still to be made,
			// if any, which fails now.
			if err != nil && !errors.Is(err, ErrNotStored) {
				t.Fatalf("hiding again with storage down = %v, want nil or ErrNotStored", err)
			}
		case in == InstructHide:
			notStored(err)
			m.hiding[o] = true
		case !m.hiding[o] && m.explicit[o] == storage.StatusAway:
			// It changes nothing: acknowledged, or refused with a write
			// still to be made; the views tell whether anything changed.
			if errors.Is(err, ErrNotStored) {
				t.Fatalf("away again with storage down = %v", err)
			}
		default:
			refused(err)
		}
	case "unsubscribe":
		was, err := svc.Unsubscribe(ctx, h, c)
		if was != m.subscribed(h, c) {
			t.Fatalf("Unsubscribe(%s, %s) = %v, model says %v", h, c, was, m.subscribed(h, c))
		}
		if was {
			notStored(err)
		}
		delete(m.subs, [2]string{h, c})
		m.dropRequest(h, c)
	case "deny":
		err := svc.Deny(ctx, o, h, c)
		if want := m.decideErr(o, h, c); want != nil {
			if !errors.Is(err, want) {
				t.Fatalf("Deny(%s, %s, %s) = %v, want %v", o, h, c, err, want)
			}
			return
		}
		notStored(err)
		m.dropRequest(h, c)
	case "remove":
		err := svc.RemoveHandle(ctx, o, h)
		if m.handles[h] != o {
			if err == nil || errors.Is(err, ErrNotStored) {
				t.Fatalf("RemoveHandle(%s, %s) of a handle not its own = %v", o, h, err)
			}
			return
		}
		notStored(err)
		m.removeHandle(h, o)
	case "subscribe":
		out, err := svc.SubscribeOutcome(ctx, h, c)
		want, wantErr := m.subscribeOutcome(h, c)
		if want == Approved && m.subscribed(h, c) || want == Ignored {
			if out != want || !errors.Is(err, wantErr) {
				t.Fatalf("Subscribe(%s, %s) with storage down = %v, %v; want %v, %v", h, c, out, err, want, wantErr)
			}
			return
		}
		if out != Ignored {
			t.Fatalf("Subscribe(%s, %s) with storage down = %v, want Ignored", h, c, out)
		}
		refused(err)
	case "approve":
		err := svc.Approve(ctx, o, h, c)
		if want := m.decideErr(o, h, c); want != nil {
			if !errors.Is(err, want) {
				t.Fatalf("Approve(%s, %s, %s) = %v, want %v", o, h, c, err, want)
			}
			return
		}
		if m.subscribers(h) < modelMaxSubscribers {
			refused(err) // the request stays pending
		}
	}
}

// checkRequests compares every account's pending requests with the
// model's.
func checkRequests(t *rapid.T, m *model, svc *syncService) {
	for _, o := range modelOwners {
		var want []string
		for _, h := range modelHandles {
			if m.handles[h] == o {
				for _, c := range m.requests[h] {
					want = append(want, h+" "+c)
				}
			}
		}
		var got []string
		for _, r := range svc.Requests(o) {
			got = append(got, r.Handle+" "+r.Contact)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("requests of %s = %v, want %v", o, got, want)
		}
	}
}

func checkViews(t *rapid.T, m *model, rec *recorder) {
	keys := make([][2]string, 0, len(m.subs))
	for k := range m.subs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	for _, k := range keys {
		want := m.view(m.handles[k[0]])
		got, ok := rec.last[k]
		if !ok {
			t.Fatalf("subscriber %s of %s never received a presence; want %+v", k[1], k[0], want)
		}
		got.Since = want.Since
		if got != want {
			t.Fatalf("subscriber %s of %s last saw %+v, want %+v", k[1], k[0], got, want)
		}
	}
}
