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
	down     bool // every call fails, as with a database that is down
	writes   int  // number of rows written by successful calls
	applies  int  // number of successful transactions of Apply
	// gate, if set, is received from before each Apply runs, so a test
	// can hold a transaction "in commit".
	gate chan struct{}
}

var errDown = errors.New("memstore: database is down")

func newMemStore() *memStore {
	return &memStore{accounts: map[string]storage.Flags{}, handles: map[string]string{}, subs: map[[2]string]bool{}}
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
		snap.Handles = append(snap.Handles, storage.Handle{Name: h, Account: a})
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
	return m.removeHandleLocked(account, handle)
}

func (m *memStore) removeHandleLocked(account, handle string) error {
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
	for k := range m.subs {
		if k[0] == handle {
			delete(m.subs, k)
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
	accounts, handles, subs, writes := m.accounts, m.handles, m.subs, m.writes
	if len(ops) > 1 {
		accounts, handles, subs = maps.Clone(m.accounts), maps.Clone(m.handles), maps.Clone(m.subs)
	}
	for i, op := range ops {
		var err error
		switch op.Kind {
		case storage.OpAddHandle:
			_, err = m.addHandleLocked(op.Account, op.Handle, op.Max, op.Now)
		case storage.OpRemoveHandle:
			err = m.removeHandleLocked(op.Account, op.Handle)
		case storage.OpSetFlags:
			err = m.setFlagsLocked(op.Account, op.Flags)
		case storage.OpAddSubscription:
			err = m.addSubscriptionLocked(op.Handle, op.Contact)
		case storage.OpRemoveSubscription:
			err = m.removeSubscriptionLocked(op.Handle, op.Contact)
		default:
			err = fmt.Errorf("memstore: unknown op %v", op.Kind)
		}
		if err != nil && len(ops) > 1 {
			m.accounts, m.handles, m.subs, m.writes = accounts, handles, subs, writes
			return &storage.OpError{Index: i, Err: err}
		}
		if err != nil {
			return &storage.OpError{Index: i, Err: err}
		}
	}
	m.applies++
	return nil
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

func (m *memStore) applyCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applies
}
