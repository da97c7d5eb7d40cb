package component

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"presenced/roster"
	"presenced/storage"
)

// DefaultMaxStatusText is the longest <status/> text kept by default;
// longer texts are cut at a character boundary.
const DefaultMaxStatusText = 512

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
	case "unsubscribe":
		c.unsubscribe(a)
	case "unsubscribed":
		// It would cancel a subscription of the handle to the contact,
		// and handles subscribe to nobody (RFC 6121 §3.2): nothing to do.
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
	p, err := c.parseOwnerPresence(n)
	if err != nil && p.Available {
		// RFC 6120 §8.3.3.1: a malformed presence changes nothing. (An
		// unavailable one counts all the same: neither its show nor its
		// priority matters, and the resource is gone.)
		w.refuse(n, *err)
		return
	}
	p.Resource = a.from.resource
	if p.Available && !c.roster.HasResource(a.bare, p.Resource) {
		w.write(c.selfPresenceFor(a.bare, a.from.String()))
	}
	if err := c.roster.OwnerPresence(a.bare, p); err != nil {
		c.logFailure(err, "owner presence not taken", "owner", a.bare)
	}
}

// tooBigUnavailable takes the sender's resource off-line when an owner's
// unavailable presence went over the limits: its children were not kept,
// and none of them matters to an unavailable presence.
func (c *Component) tooBigUnavailable(w *replier, n *node) {
	a, ok := c.parseAddress(w, n)
	if !ok || !c.isOwnerInput(a) {
		return
	}
	if err := c.roster.OwnerPresence(a.bare, roster.OwnerPresence{Resource: a.from.resource, Status: storage.StatusUndefined}); err != nil {
		c.logFailure(err, "owner presence not taken", "owner", a.bare)
	}
}

// parseOwnerPresence reads show, status, priority and an invisible
// child. An unknown <show/> or a <priority/> that is not an integer from
// -128 to 127 (RFC 6121 §4.7.2) is refused.
func (c *Component) parseOwnerPresence(n *node) (roster.OwnerPresence, *stanzaError) {
	p := roster.OwnerPresence{Available: n.get("type") == "", Status: storage.StatusUndefined}
	for _, ch := range n.children {
		if !isStanzaNS(ch.ns()) {
			if ch.name.Local == "invisible" && (ch.ns() == nsInvis0 || ch.ns() == nsInvis1) {
				p.Hide = p.Available
			}
			continue
		}
		switch ch.name.Local {
		case "show":
			st, ok := statusOfShow(strings.TrimSpace(ch.text))
			if !ok {
				e := condBadRequest("<show/> must be away, chat, dnd or xa.")
				return p, &e
			}
			p.Status = st
		case "status":
			// A copy: the kept text must not hold the stanza's memory.
			p.Text = strings.Clone(truncate(ch.text, c.cfg.MaxStatusText))
		case "priority":
			v, err := strconv.Atoi(strings.TrimSpace(ch.text))
			if err != nil || v < -128 || v > 127 {
				e := condBadRequest("<priority/> must be an integer from -128 to 127.")
				return p, &e
			}
			p.Priority = v
		}
	}
	return p, nil
}

func statusOfShow(show string) (storage.Status, bool) {
	switch show {
	case "away", "xa":
		return storage.StatusAway, true
	case "dnd":
		return storage.StatusBusy, true
	case "chat":
		return storage.StatusUndefined, true
	}
	return "", false
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
	c.out.Unsubscribed(a.handle, a.bare)
}

// subscribe approves subscriptions to the component and hands those to
// handles to the roster: an open handle approves once stored; an ask
// handle's owner is told, and the contact hears nothing until the owner
// decides. A name that does not exist answers nothing either, so that a
// stranger cannot tell it from an ask handle.
func (c *Component) subscribe(w *replier, n *node, a address) {
	if a.handle == "" {
		w.write(presence("subscribed", c.domainStr, a.bare))
		w.write(c.selfPresenceFor(a.bare, a.bare))
		return
	}
	c.roster.Subscribe(a.handle, a.bare, func(out roster.SubscribeOutcome, err error) {
		switch {
		case errors.Is(err, roster.ErrUnknownHandle), errors.Is(err, roster.ErrSubscriberLimit):
		case err != nil:
			if p, _ := c.roster.Policy(a.handle); p == storage.PolicyOpen {
				// An open handle is public: it may say that it failed.
				c.refuseFailure(w, n, err, "subscription not stored", "handle", a.handle, "contact", a.bare)
				return
			}
			c.logFailure(err, "subscription request not stored", "handle", a.handle, "contact", a.bare)
		case out == roster.Approved:
			c.approved(a.handle, a.bare)
		case out == roster.Requested:
			c.tellOwner(a.handle, a.bare)
		}
	})
}

// approved tells contact that its subscription to handle is approved,
// from the bare handle JID, then sends the current presence: one output,
// in order.
func (c *Component) approved(handle, contact string) {
	c.out.write(presence("subscribed", c.handleBare(handle), contact))
	c.roster.Probe(handle, contact)
}

// tellOwner sends the owner of handle one chat message about contact's
// request, unless the owner was told of it lately, or of too many.
func (c *Component) tellOwner(handle, contact string) {
	owner, ok := c.roster.OwnerOf(handle)
	if !ok || !c.told.tell(owner, handle, contact, time.Now()) {
		return
	}
	body := fmt.Sprintf("%s asks to see the presence of your handle %s. To answer, send \"requests\" here, or run the command %q (%s) of %s.",
		contact, c.handleBare(handle), commandByNode("requests").name, "requests", c.domainStr)
	c.out.write(el(local("message"), "type", "chat", "from", c.domainStr, "to", owner).add(el(local("body")).withText(body)))
}

func (c *Component) unsubscribe(a address) {
	if a.handle == "" {
		return
	}
	// What the contact is left with, decided before the subscription ends:
	// after, its kept stamp and the handle itself may be gone, and a later
	// stamp would show that the owner did something since.
	gone := c.roster.GoneView(a.handle, a.bare)
	c.roster.Unsubscribe(a.handle, a.bare, func(was bool, err error) {
		if err != nil {
			// The subscription ended in memory all the same: the contact's
			// server has ended it, nothing more is sent to the contact,
			// and the engine stores it until it is.
			c.logFailure(err, "unsubscription not stored yet", "handle", a.handle, "contact", a.bare)
		}
		if was {
			// RFC 6121 §3.3.3: the contact no longer sees the handle. While
			// the owner hides, the stamp is the one the contact already has.
			c.out.Presence(a.handle, a.bare, gone)
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

// handleMessage takes a message to the component's JID from a user who
// may own handles as a chat command (chat.go). Handles receive no
// messages, whatever their state, and neither does the component from
// anyone else: service-unavailable, the same for everyone. Nothing from
// the component's own domain is answered, nor any error or headline
// (RFC 6121 §5.2.2), so no two services can answer each other forever.
func (c *Component) handleMessage(w *replier, n *node) {
	a, ok := c.parseAddress(w, n)
	if !ok {
		return
	}
	typ := n.get("type")
	switch {
	case a.from.domain == c.domainStr, typ == "error", typ == "headline":
		return
	case a.handle == "" && (typ == "" || typ == "chat" || typ == "normal") && c.mayOwn(a.from):
		if body := stanzaChild(n, "body"); body != nil {
			c.chatMessage(a, n, body.text)
		}
		// Without a body (a chat state, a receipt) there is nothing to
		// answer.
		return
	}
	w.refuse(n, condServiceUnavailable())
}
