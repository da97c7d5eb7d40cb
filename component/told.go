package component

import "time"

// Telling owners of requests: a contact that withdraws its request and
// makes it again, or many contacts asking at once, must not flood the
// owner with messages. The request itself is kept and listed by the
// requests command all the same.
const (
	// toldAgainAfter is how long the same request is not told again.
	toldAgainAfter = time.Hour
	// toldPerHour bounds the messages one owner gets an hour.
	toldPerHour = 30
	// maxTold bounds the requests remembered.
	maxTold = 10000
)

// told remembers the requests the owners were told of lately, and how many
// each owner was told of this hour. It belongs to the engine goroutine.
type told struct {
	requests map[string]time.Time // owner, handle and contact → when told
	owners   map[string]*hourly
}

type hourly struct {
	since time.Time
	n     int
}

func newTold() *told {
	return &told{requests: make(map[string]time.Time), owners: make(map[string]*hourly)}
}

// tell reports whether owner is to be told of contact's request to handle
// now, and counts it if so.
func (t *told) tell(owner, handle, contact string, now time.Time) bool {
	key := owner + "\x00" + handle + "\x00" + contact
	if at, ok := t.requests[key]; ok && now.Sub(at) < toldAgainAfter {
		return false
	}
	h := t.owners[owner]
	if h == nil || now.Sub(h.since) >= time.Hour {
		h = &hourly{since: now}
		t.owners[owner] = h
	}
	if h.n >= toldPerHour {
		return false
	}
	if len(t.requests) >= maxTold {
		t.forget(now)
	}
	h.n++
	t.requests[key] = now
	return true
}

// forget drops what is old enough not to matter, or every request told
// if that is not enough; the owners' hourly counts stay (there is one per
// account), so that overflowing the requests lets no owner be told more.
func (t *told) forget(now time.Time) {
	for k, at := range t.requests {
		if now.Sub(at) >= toldAgainAfter {
			delete(t.requests, k)
		}
	}
	for k, h := range t.owners {
		if now.Sub(h.since) >= time.Hour {
			delete(t.owners, k)
		}
	}
	if len(t.requests) >= maxTold {
		clear(t.requests)
	}
}
