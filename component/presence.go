package component

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"presenced/roster"
	"presenced/storage"
)

// maxStatusText is the longest <status/> text kept; longer texts are cut at
// a character boundary.
const maxStatusText = 1024

// address is the parsed 'from' and 'to' of a stanza addressed to the
// component's domain.
type address struct {
	from     addr
	bare     string // from, bare
	handle   string // localpart of 'to'; empty when addressed to the component
	resource string // resourcepart of 'to', if any
}

// parseAddress checks the stanza's addresses. It refuses a stanza that is
// not addressed to this component's domain or has a malformed address.
func (c *Component) parseAddress(w *replier, n *node) (address, bool) {
	from, err := parseAddr(n.get("from"))
	if err != nil {
		c.log.Debug("stanza without a valid from dropped", "from", n.get("from"))
		return address{}, false
	}
	to, err := parseAddr(n.get("to"))
	if err != nil {
		w.refuse(n, condJIDMalformed("The 'to' address is not a valid JID."))
		return address{}, false
	}
	if to.domain != c.domainStr {
		w.refuse(n, condServiceUnavailable())
		return address{}, false
	}
	return address{
		from:     from,
		bare:     from.bare(),
		handle:   to.local,
		resource: to.resource,
	}, true
}

func (c *Component) handlePresence(w *replier, n *node) {
	a, ok := c.parseAddress(w, n)
	if !ok {
		return
	}
	switch typ := n.get("type"); typ {
	case "", "unavailable":
		c.ownerPresence(w, a, n)
	case "invisible":
		// Servers refuse this type, but a stanza test may send it straight
		// to the component: it hides, like XEP-0186 <invisible/>.
		if c.isOwnerInput(a) {
			c.instruct(a.bare, roster.InstructHide)
		}
	case "probe":
		c.probe(w, a)
	case "subscribe":
		c.subscribe(w, n, a)
	case "unsubscribe", "unsubscribed":
		c.unsubscribe(w, a, typ)
	case "subscribed":
		if a.handle == "" && c.roster.IsOwner(a.bare) {
			c.log.Info("owner approved the component's subscription", "owner", a.bare)
			w.write(c.selfPresenceFor(a.bare, a.bare))
		}
	case "error":
		c.log.Debug("presence error received", "from", a.from.String())
	default:
		w.refuse(n, condBadRequest("Unknown presence type."))
	}
}

// isOwnerInput reports whether a presence counts as the owner's: sent by an
// account to the component's JID or to one of its own handles.
func (c *Component) isOwnerInput(a address) bool {
	if !c.roster.IsOwner(a.bare) {
		return false
	}
	if a.handle == "" {
		return true
	}
	owner, ok := c.roster.OwnerOf(a.handle)
	return ok && owner == a.bare
}

// ownerPresence maps a client presence to the flags (the patent's FIG. 6).
// A client that comes on-line is shown the component on-line: its server
// does not probe the component unless the owner subscribed to it too.
func (c *Component) ownerPresence(w *replier, a address, n *node) {
	if !c.isOwnerInput(a) {
		return
	}
	p := parseOwnerPresence(n)
	p.Resource = a.from.resource
	if p.Available && !c.roster.HasResource(a.bare, p.Resource) {
		w.write(c.selfPresenceFor(a.bare, a.from.String()))
	}
	if err := c.roster.OwnerPresence(a.bare, p); err != nil {
		c.logFailure(err, "owner presence not taken", "owner", a.bare)
	}
}

// parseOwnerPresence reads show, status, priority and an invisible child.
func parseOwnerPresence(n *node) roster.OwnerPresence {
	p := roster.OwnerPresence{Available: n.get("type") == "", Status: storage.StatusUndefined}
	for _, ch := range n.children {
		if ch.ns() != "" && ch.ns() != "jabber:component:accept" && ch.ns() != "jabber:client" && ch.ns() != "jabber:server" {
			if ch.name.Local == "invisible" && (ch.ns() == nsInvis0 || ch.ns() == nsInvis1) {
				p.Hide = p.Available
			}
			continue
		}
		switch ch.name.Local {
		case "show":
			p.Status = statusOfShow(strings.TrimSpace(ch.text))
		case "status":
			p.Text = truncate(ch.text, maxStatusText)
		case "priority":
			if v, err := strconv.Atoi(strings.TrimSpace(ch.text)); err == nil {
				p.Priority = max(-128, min(127, v))
			}
		}
	}
	return p
}

func statusOfShow(show string) storage.Status {
	switch show {
	case "away", "xa":
		return storage.StatusAway
	case "dnd":
		return storage.StatusBusy
	}
	return storage.StatusUndefined
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// probe answers a probe: the component is available to its owners (it
// withdraws itself from them alone at shutdown); a
// handle's subscribers get its presence, from memory; anyone else,
// and any probe of an unknown handle, gets unsubscribed (RFC 6121 §4.3.2).
func (c *Component) probe(w *replier, a address) {
	if a.handle == "" {
		w.write(c.selfPresenceFor(a.bare, a.from.String()))
		return
	}
	if c.roster.Probe(a.handle, a.bare) {
		return
	}
	if c.roster.SubscribePending(a.handle, a.bare) {
		return // 'subscribed' and the presence follow once it is stored
	}
	w.write(presence("unsubscribed", c.handleBare(a.handle), a.bare))
}

// subscribe approves subscriptions to the component and to existing
// handles, the latter once stored; an owner who subscribes to the
// component is shown it on-line.
func (c *Component) subscribe(w *replier, n *node, a address) {
	if a.handle == "" {
		w.write(presence("subscribed", c.domain.String(), a.bare))
		w.write(c.selfPresenceFor(a.bare, a.bare))
		return
	}
	from := c.handleBare(a.handle)
	c.roster.Subscribe(a.handle, a.bare, func(err error) {
		switch {
		case errors.Is(err, roster.ErrUnknownHandle):
			w.write(presence("unsubscribed", from, a.bare))
			return
		case err != nil:
			c.refuseFailure(w, n, err, "subscription not stored", "handle", a.handle, "contact", a.bare)
			return
		}
		// One output, in order: 'subscribed' before the presence.
		w.write(presence("subscribed", from, a.bare))
		c.roster.Probe(a.handle, a.bare)
	})
}

func (c *Component) unsubscribe(w *replier, a address, typ string) {
	if a.handle == "" {
		return
	}
	c.roster.Unsubscribe(a.handle, a.bare, func(was bool, err error) {
		if err != nil {
			// The subscription ended in memory all the same: the contact's
			// server has ended it, and nothing more is sent to the contact.
			c.log.Error("unsubscription not stored", "handle", a.handle, "contact", a.bare, "err", err)
		}
		if was && typ == "unsubscribe" {
			// RFC 6121 §3.3.3: the contact no longer sees the handle. While
			// the owner hides, the stamp is the one the contact already has.
			c.out.Presence(a.handle, a.bare, c.roster.GoneView(a.handle))
		}
	})
}

// instruct applies an instruction that has no reply (a presence).
func (c *Component) instruct(owner string, in roster.Instruction) {
	c.roster.Instruct(owner, in, func(err error) {
		if err != nil {
			c.logFailure(err, "instruction not stored", "owner", owner)
		}
	})
}

func (c *Component) handleMessage(w *replier, n *node) {
	if _, ok := c.parseAddress(w, n); !ok {
		return
	}
	// Handles receive no messages, whatever their state.
	w.refuse(n, condServiceUnavailable())
}
