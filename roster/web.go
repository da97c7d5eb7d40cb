package roster

import (
	"errors"
	"fmt"

	"presenced/storage"
)

// The web side (FIG. 8 and 9): an owner may make a handle public on the
// web, where anyone may see its status, as one of four words and nothing
// more. What the web shows is derived from the same View the handle's
// subscribers see, in one place (webStatus), and pushed to a WebSink from
// the engine at the moments the XMPP fan-out is decided, so the two
// cannot disagree.

// WebStatus is what the web shows of a handle.
type WebStatus string

// The web statuses. A hiding or off-line account, a hidden handle, a
// handle that is not public and a name nobody holds are all WebOffline.
const (
	WebAvailable WebStatus = "available"
	WebAway      WebStatus = "away"
	WebBusy      WebStatus = "busy"
	WebOffline   WebStatus = "offline"
)

// WebStatusOf returns the web status of a View.
func WebStatusOf(v View) WebStatus {
	switch {
	case !v.Available:
		return WebOffline
	case v.Status == storage.StatusAway:
		return WebAway
	case v.Status == storage.StatusBusy:
		return WebBusy
	}
	return WebAvailable
}

// WebSink receives the web status of the public handles as it changes.
// Its method is called on the engine goroutine and must not block.
type WebSink interface {
	// WebChanged says that handle is now shown as st (WebOffline also
	// when it stopped being public or was removed).
	WebChanged(handle string, st WebStatus)
}

// SetWebSink sets where web statuses go. It must be called before Run.
func (s *Service) SetWebSink(w WebSink) { s.web = w }

// webStatus is what the web shows of h: offline unless h is public and
// not hidden, and the component is connected with its resync settled
// (before, the owners' presence is not known: failing closed, the web
// shows them off-line), else what its subscribers see.
func (s *Service) webStatus(h *handle) WebStatus {
	if h == nil || !h.web || h.hidden || !s.online || s.resyncing {
		return WebOffline
	}
	return WebStatusOf(ViewOf(h.owner.flags))
}

// tellWeb tells the sink what the web shows of h now.
func (s *Service) tellWeb(h *handle) {
	if s.web != nil && h.web {
		s.web.WebChanged(h.name, s.webStatus(h))
	}
}

// tellWebAccount tells the sink of every public handle of a.
func (s *Service) tellWebAccount(a *account) {
	if s.web == nil {
		return
	}
	for _, h := range a.handles {
		s.tellWeb(h)
	}
}

// tellWebAll tells the sink of every public handle, as the connection
// comes and goes.
func (s *Service) tellWebAll() {
	if s.web == nil {
		return
	}
	for _, h := range s.handles {
		s.tellWeb(h)
	}
}

// SetWeb makes owner's handles named public on the web, or not. Taking a
// handle off the web takes effect at once and is written until stored;
// making it public, once stored. A name that is not owner's changes
// nothing of any of them and fails with ErrUnknownHandle.
func (s *Service) SetWeb(owner string, names []string, public bool, done func(error)) {
	done = orNop(done)
	if s.stopping && public {
		done(ErrStopping)
		return
	}
	hs, err := s.ownedHandles(owner, names)
	if err != nil {
		done(err)
		return
	}
	eachJoined(hs, done, func(h *handle, done func(error)) { s.setWeb(h, public, done) })
}

func (s *Service) setWeb(h *handle, public bool, done func(error)) {
	if h.web == public && h.webbing == 0 {
		done(nil)
		return
	}
	op := storage.Op{Kind: storage.OpSetWeb, Account: h.owner.jid, Handle: h.name, Web: public}
	if !public {
		if h.web {
			h.web = false
			if s.web != nil {
				s.web.WebChanged(h.name, WebOffline)
			}
		}
		h.webGen++
		s.commits.add(&entry{op: op, must: true, apply: func(err error) {
			if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrNotOwner) {
				err = nil // removed meanwhile: nothing is left to show
			}
			if err != nil {
				err = fmt.Errorf("roster: web off: %w", err)
			}
			done(err)
		}})
		return
	}
	h.webbing++
	gen := h.webGen
	s.commits.add(&entry{op: op, apply: func(err error) {
		h.webbing--
		switch {
		case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrNotOwner):
			err = ErrUnknownHandle
		case err != nil:
			err = fmt.Errorf("roster: web on: %w", err)
		case s.handles[h.name] == h && gen == h.webGen:
			h.web = true
			s.tellWeb(h)
		}
		done(err)
	}})
}
