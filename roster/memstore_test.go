package roster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"presenced/storage"
)

// memStore is a small in-memory storage.Store for unit tests. The real
// backends are tested by the storage conformance suite and end to end.
type memStore struct {
	mu       sync.Mutex
	accounts map[string]storage.Flags
	handles  map[string]string
	subs     map[[2]string]bool
	policies map[string]storage.Policy
	requests map[[2]string]time.Time      // handle, contact → when asked
	notices  map[[2]string]storage.Notice // handle, contact → notice
	removed  map[string]storage.RemovedName
	hidden   map[string]time.Time    // handle → hidden since
	blocked  map[[2]string]time.Time // account, contact → since
	kept     map[[2]string]time.Time // handle, contact → since
	web      map[string]bool         // public handles
	down     bool                    // every call fails, as with a database that is down
	writes   int                     // number of rows written by successful calls
	applies  int                     // number of successful transactions of Apply
	pings    int                     // number of calls of Ping, failed or not
	// gate, if set, is received from before each Apply runs, so a test
	// can hold a transaction "in commit".
	gate chan struct{}
}

var errDown = errors.New("memstore: database is down")

func newMemStore() *memStore {
	return &memStore{accounts: map[string]storage.Flags{}, handles: map[string]string{}, subs: map[[2]string]bool{},
		policies: map[string]storage.Policy{}, requests: map[[2]string]time.Time{}, notices: map[[2]string]storage.Notice{},
		removed: map[string]storage.RemovedName{}, hidden: map[string]time.Time{}, blocked: map[[2]string]time.Time{}, kept: map[[2]string]time.Time{}, web: map[string]bool{}}
}

func (m *memStore) Load(ctx context.Context) (*storage.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, errDown
	}
	snap := &storage.Snapshot{}
	for j, f := range m.accounts {
		snap.Accounts = append(snap.Accounts, storage.Account{JID: j, Flags: f})
	}
	for h, a := range m.handles {
		p := m.policies[h]
		if p == "" {
			p = storage.PolicyAsk
		}
		hs, hidden := m.hidden[h]
		snap.Handles = append(snap.Handles, storage.Handle{Name: h, Account: a, Policy: p, Hidden: hidden, HiddenSince: hs, Web: m.web[h]})
	}
	for k, since := range m.blocked {
		snap.Blocked = append(snap.Blocked, storage.Block{Account: k[0], Contact: k[1], Since: since})
	}
	for k, since := range m.kept {
		snap.Kept = append(snap.Kept, storage.Kept{Handle: k[0], Contact: k[1], Since: since})
	}
	for k, at := range m.requests {
		snap.Requests = append(snap.Requests, storage.Request{Handle: k[0], Contact: k[1], At: at})
	}
	sort.Slice(snap.Requests, func(i, j int) bool {
		a, b := snap.Requests[i], snap.Requests[j]
		if a.Handle != b.Handle {
			return a.Handle < b.Handle
		}
		return a.At.Before(b.At)
	})
	for _, n := range m.notices {
		snap.Notices = append(snap.Notices, n)
	}
	sort.Slice(snap.Notices, func(i, j int) bool {
		a, b := snap.Notices[i], snap.Notices[j]
		return a.Handle < b.Handle || (a.Handle == b.Handle && a.Contact < b.Contact)
	})
	for _, r := range m.removed {
		snap.Removed = append(snap.Removed, r)
	}
	for k := range m.subs {
		snap.Subscriptions = append(snap.Subscriptions, storage.Subscription{Handle: k[0], Contact: k[1]})
	}
	sort.Slice(snap.Accounts, func(i, j int) bool { return snap.Accounts[i].JID < snap.Accounts[j].JID })
	return snap, nil
}

func (m *memStore) AddHandle(ctx context.Context, account, handle string, max int, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addHandleLocked(account, handle, max, now)
}

func (m *memStore) addHandleLocked(account, handle string, max int, now time.Time) (bool, error) {
	if m.down {
		return false, errDown
	}
	if _, ok := m.handles[handle]; ok {
		return false, storage.ErrExists
	}
	n := 0
	for _, a := range m.handles {
		if a == account {
			n++
		}
	}
	if n >= max {
		return false, storage.ErrLimit
	}
	_, had := m.accounts[account]
	if !had {
		m.accounts[account] = storage.Flags{Status: storage.StatusUndefined, Since: now}
	}
	m.handles[handle] = account
	m.writes++
	return !had, nil
}

func (m *memStore) RemoveHandle(ctx context.Context, account, handle string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeHandleLocked(storage.Op{Account: account, Handle: handle})
}

// removeHandleLocked removes handle, stamping its notices as the
// backends do (storage.OpRemoveHandle): op.Stamp, but for the contacts
// listed with their own.
func (m *memStore) removeHandleLocked(op storage.Op) error {
	account, handle := op.Account, op.Handle
	if m.down {
		return errDown
	}
	a, ok := m.handles[handle]
	if !ok {
		return storage.ErrNotFound
	}
	if a != account {
		return storage.ErrNotOwner
	}
	delete(m.handles, handle)
	delete(m.policies, handle)
	delete(m.hidden, handle)
	delete(m.web, handle)
	for k := range m.subs {
		if k[0] == handle {
			delete(m.subs, k)
			delete(m.kept, k)
			since := op.Stamp
			for i, c := range op.Contacts {
				if c == k[1] {
					since = op.Stamps[i]
				}
			}
			m.notices[k] = storage.Notice{Handle: handle, Account: account, Contact: k[1], Since: since}
		}
	}
	for k := range m.requests {
		if k[0] == handle {
			delete(m.requests, k)
		}
	}
	m.writes++
	return nil
}

func (m *memStore) Handles(ctx context.Context, account string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, errDown
	}
	var out []string
	for h, a := range m.handles {
		if a == account {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *memStore) Account(ctx context.Context, account string) (storage.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return storage.Account{}, errDown
	}
	f, ok := m.accounts[account]
	if !ok {
		return storage.Account{}, storage.ErrNotFound
	}
	return storage.Account{JID: account, Flags: f}, nil
}

func (m *memStore) SetFlags(ctx context.Context, account string, f storage.Flags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setFlagsLocked(account, f)
}

func (m *memStore) setFlagsLocked(account string, f storage.Flags) error {
	if m.down {
		return errDown
	}
	m.accounts[account] = f
	m.writes++
	return nil
}

func (m *memStore) AddSubscription(ctx context.Context, handle, contact string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addSubscriptionLocked(handle, contact)
}

func (m *memStore) addSubscriptionLocked(handle, contact string) error {
	if m.down {
		return errDown
	}
	if _, ok := m.handles[handle]; !ok {
		return storage.ErrNotFound
	}
	m.subs[[2]string{handle, contact}] = true
	m.writes++
	return nil
}

func (m *memStore) RemoveSubscription(ctx context.Context, handle, contact string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.removeSubscriptionLocked(handle, contact)
}

func (m *memStore) removeSubscriptionLocked(handle, contact string) error {
	if m.down {
		return errDown
	}
	delete(m.subs, [2]string{handle, contact})
	delete(m.kept, [2]string{handle, contact})
	m.writes++
	return nil
}

// Apply runs the ops as one transaction: on the first failure the state
// is put back as it was. Each op counts as one write; applies counts the
// transactions.
func (m *memStore) Apply(ctx context.Context, ops []storage.Op) error {
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	if gate != nil {
		<-gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	if m.down {
		return errDown
	}
	// A single op checks before it changes anything: only a longer batch
	// needs a copy to go back to.
	var saved memState
	if len(ops) > 1 {
		saved = m.save()
	}
	for i, op := range ops {
		if err := m.applyLocked(op); err != nil {
			if len(ops) > 1 {
				m.restore(saved)
			}
			return &storage.OpError{Index: i, Err: err}
		}
	}
	m.applies++
	return nil
}

// applyLocked applies one op.
func (m *memStore) applyLocked(op storage.Op) error {
	switch op.Kind {
	case storage.OpAddHandle:
		_, err := m.addHandleLocked(op.Account, op.Handle, op.Max, op.Now)
		if err == nil {
			m.policies[op.Handle] = op.Policy
			delete(m.removed, op.Handle)
		}
		return err
	case storage.OpRemoveHandle:
		err := m.removeHandleLocked(op)
		if err == nil {
			m.removed[op.Handle] = storage.RemovedName{Name: op.Handle, Account: op.Account, At: op.Now}
		}
		return err
	case storage.OpSetFlags:
		return m.setFlagsLocked(op.Account, op.Flags)
	case storage.OpAddSubscription:
		err := m.addSubscriptionLocked(op.Handle, op.Contact)
		if err == nil && op.Answers {
			delete(m.requests, [2]string{op.Handle, op.Contact})
		}
		return err
	case storage.OpRemoveSubscription:
		return m.removeSubscriptionLocked(op.Handle, op.Contact)
	case storage.OpAddRequest:
		if _, ok := m.handles[op.Handle]; !ok {
			return storage.ErrNotFound
		}
		k := [2]string{op.Handle, op.Contact}
		if _, ok := m.requests[k]; !ok {
			m.requests[k] = op.Now
		}
	case storage.OpRemoveRequest:
		delete(m.requests, [2]string{op.Handle, op.Contact})
	case storage.OpNoticesSent:
		for _, c := range op.Contacts {
			delete(m.notices, [2]string{op.Handle, c})
		}
	case storage.OpSetPolicy:
		if err := m.checkOwnerLocked(op.Account, op.Handle); err != nil {
			return err
		}
		m.policies[op.Handle] = op.Policy
	case storage.OpSetVisibility:
		if err := m.checkOwnerLocked(op.Account, op.Handle); err != nil {
			return err
		}
		if op.Hidden {
			m.hidden[op.Handle] = op.Now
		} else {
			delete(m.hidden, op.Handle)
		}
	case storage.OpBlock:
		if _, ok := m.accounts[op.Account]; !ok {
			return storage.ErrNotFound
		}
		k := [2]string{op.Account, op.Contact}
		if _, ok := m.blocked[k]; !ok {
			m.blocked[k] = op.Now
		}
		for r := range m.requests {
			if r[1] == op.Contact && m.handles[r[0]] == op.Account {
				delete(m.requests, r)
			}
		}
	case storage.OpUnblock:
		delete(m.blocked, [2]string{op.Account, op.Contact})
	case storage.OpSetWeb:
		if err := m.checkOwnerLocked(op.Account, op.Handle); err != nil {
			return err
		}
		if op.Web {
			m.web[op.Handle] = true
		} else {
			delete(m.web, op.Handle)
		}
	case storage.OpKeep:
		for _, c := range op.Contacts {
			if k := [2]string{op.Handle, c}; m.subs[k] {
				m.kept[k] = op.Now
			}
		}
	case storage.OpUnkeep:
		for _, c := range op.Contacts {
			delete(m.kept, [2]string{op.Handle, c})
		}
	default:
		return fmt.Errorf("memstore: unknown op %v", op.Kind)
	}
	m.writes++
	return nil
}

// memState is a copy of a memStore's state, to go back to.
type memState struct {
	accounts map[string]storage.Flags
	handles  map[string]string
	subs     map[[2]string]bool
	policies map[string]storage.Policy
	requests map[[2]string]time.Time
	notices  map[[2]string]storage.Notice
	removed  map[string]storage.RemovedName
	hidden   map[string]time.Time
	blocked  map[[2]string]time.Time
	kept     map[[2]string]time.Time
	web      map[string]bool
	writes   int
}

// checkOwnerLocked is the rule of the real stores (sqliteCheckOwner):
// the handle must exist (ErrNotFound) and be account's (ErrNotOwner).
func (m *memStore) checkOwnerLocked(account, handle string) error {
	a, ok := m.handles[handle]
	switch {
	case !ok:
		return storage.ErrNotFound
	case a != account:
		return storage.ErrNotOwner
	}
	return nil
}

func (m *memStore) save() memState {
	return memState{maps.Clone(m.accounts), maps.Clone(m.handles), maps.Clone(m.subs), maps.Clone(m.policies),
		maps.Clone(m.requests), maps.Clone(m.notices), maps.Clone(m.removed), maps.Clone(m.hidden), maps.Clone(m.blocked), maps.Clone(m.kept), maps.Clone(m.web), m.writes}
}

func (m *memStore) restore(st memState) {
	m.accounts, m.handles, m.subs, m.policies = st.accounts, st.handles, st.subs, st.policies
	m.requests, m.notices, m.removed, m.writes = st.requests, st.notices, st.removed, st.writes
	m.hidden, m.blocked, m.kept, m.web = st.hidden, st.blocked, st.kept, st.web
}

func (m *memStore) Lost() <-chan struct{} { return nil }

// Ping fails while the store is down. It writes nothing and does not wait
// for the gate: it is no transaction.
func (m *memStore) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pings++
	if m.down {
		return errDown
	}
	return ctx.Err()
}

func (m *memStore) Close() error { return nil }

func (m *memStore) setDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

func (m *memStore) writeCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

func (m *memStore) pingCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pings
}

func (m *memStore) applyCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applies
}
