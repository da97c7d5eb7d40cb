package component

import (
	"errors"
	"strconv"
	"time"

	"presenced/roster"
)

func (c *Component) handleIQ(w *replier, n *node) {
	typ := n.get("type")
	if typ == "result" || typ == "error" {
		return // the component sends no IQ requests of its own
	}
	a, ok := c.parseAddress(w, n)
	if !ok {
		return
	}
	if n.get("id") == "" {
		// An answer could not be matched to the request (RFC 6120
		// §8.1.3): drop it.
		c.log.Debug("IQ without an id dropped", "from", a.from.String())
		return
	}
	if a.handle != "" && !c.knowsHandle(a) {
		// A stranger learns nothing of a handle, not even that it
		// exists: the same answer as for a name nobody holds, whatever
		// the IQ.
		w.refuse(n, condServiceUnavailable())
		return
	}
	if typ != "get" && typ != "set" {
		w.refuse(n, condBadRequest("An IQ must be of type get or set."))
		return
	}
	if len(n.children) != 1 {
		w.refuse(n, condBadRequest("An IQ request must have exactly one child element."))
		return
	}
	q := n.firstChild()
	switch {
	case a.resource != "" && a.resource != c.cfg.Resource:
		// The one resource of the component and of every handle answers as
		// the bare JID does; any other is absent, whatever the state.
		w.refuse(n, condServiceUnavailable())
	case a.handle != "":
		c.handleIQToHandle(w, n, a, typ, q)
	default:
		c.handleIQToComponent(w, n, a, typ, q)
	}
}

// knowsHandle reports whether the sender may learn anything of the handle
// it addressed: it is its owner or one of its subscribers.
func (c *Component) knowsHandle(a address) bool {
	if owner, ok := c.roster.OwnerOf(a.handle); ok && owner == a.bare {
		return true
	}
	return c.roster.IsSubscribed(a.handle, a.bare)
}

// result answers request n with a result carrying payload (can be nil).
func (w *replier) result(n *node, payload *node) {
	w.write(el(local("iq"), "type", "result", "id", n.get("id"), "from", n.get("to"), "to", n.get("from")).add(payload))
}

// What the component's JID answers to disco#info.
var componentInfo = newDiscoInfo("component", "presence", "presenced",
	nsDiscoInf, nsDiscoIt, nsCommands, nsPing, nsVersion, nsInvis0, nsInvis1)

// What every handle's JID answers to disco#info, whatever its owner's state.
var handleInfo = newDiscoInfo("account", "registered", "", nsDiscoInf, nsPing, nsLast)

func (c *Component) handleIQToComponent(w *replier, n *node, a address, typ string, q *node) {
	switch {
	case typ == "get" && q.ns() == nsDiscoInf && q.name.Local == "query":
		c.discoInfo(w, n, q)
	case typ == "get" && q.ns() == nsDiscoIt && q.name.Local == "query":
		c.discoItems(w, n, q)
	case typ == "get" && q.ns() == nsPing && q.name.Local == "ping":
		w.result(n, nil)
	case typ == "get" && q.ns() == nsVersion && q.name.Local == "query":
		// XEP-0092 §3: the operating system is optional, and telling it
		// helps only an attacker.
		w.result(n, el(qname(nsVersion, "query")).add(
			el(local("name")).withText("presenced"),
			el(local("version")).withText(c.cfg.Version),
		))
	case typ == "set" && q.ns() == nsCommands && q.name.Local == "command":
		c.handleCommand(w, n, a, q)
	case typ == "set" && (q.ns() == nsInvis0 || q.ns() == nsInvis1) && (q.name.Local == "invisible" || q.name.Local == "visible"):
		c.invisibleIQ(w, n, a, q)
	default:
		w.refuse(n, condServiceUnavailable())
	}
}

// invisibleIQ is XEP-0186 sent to the component's JID: <invisible/> hides
// every handle of the account; <visible/> lifts hiding.
func (c *Component) invisibleIQ(w *replier, n *node, a address, q *node) {
	if !c.mayOwn(a.from) {
		w.refuse(n, errNotOwnerDomain)
		return
	}
	in := roster.InstructVisible
	if q.name.Local == "invisible" {
		in = roster.InstructHide
	}
	// The answer promises the change is kept: it waits for the commit.
	c.roster.Instruct(a.bare, in, func(err error) {
		switch {
		case errors.Is(err, roster.ErrNoAccount):
			w.refuse(n, errNoAccount)
		case errors.Is(err, roster.ErrNotStored):
			// Hiding holds at once, and is stored as soon as storage
			// works again: the owner is invisible, as asked.
			c.notStored("hiding not stored yet; retrying", "owner", a.bare, "err", err)
			w.result(n, nil)
		case err != nil:
			c.refuseFailure(w, n, err, "invisible command failed", "owner", a.bare)
		default:
			w.result(n, nil)
		}
	})
}

func (c *Component) discoInfo(w *replier, n *node, q *node) {
	node := q.get("node")
	if componentInfo.answersNode(c.capsNode, node) {
		w.result(n, componentInfo.query(node))
		return
	}
	res := el(qname(nsDiscoInf, "query"), "node", node)
	switch {
	case node == nsCommands:
		res.add(el(local("identity"), "category", "automation", "type", "command-list", "name", "Commands"))
	case commandByNode(node) != nil:
		res.add(el(local("identity"), "category", "automation", "type", "command-node", "name", commandByNode(node).name))
		res.add(el(local("feature"), "var", nsCommands), el(local("feature"), "var", nsData))
	default:
		w.refuse(n, condItemNotFound("No such node."))
		return
	}
	w.result(n, res)
}

func (c *Component) discoItems(w *replier, n *node, q *node) {
	node := q.get("node")
	res := el(qname(nsDiscoIt, "query"), "node", node)
	switch node {
	case "":
	case nsCommands:
		for _, cmd := range commandList {
			res.add(el(local("item"), "jid", c.domainStr, "node", cmd.node, "name", cmd.name))
		}
	default:
		w.refuse(n, condItemNotFound("No such node."))
		return
	}
	w.result(n, res)
}

// handleIQToHandle answers disco#info, ping and last activity on a handle
// JID, to its owner and its subscribers (handleIQ answers no one else).
// The answers never depend on whether the owner is off-line or hiding: last activity reports the moment the handle stopped being visible,
// which for a hiding account is the moment it went hiding.
func (c *Component) handleIQToHandle(w *replier, n *node, a address, typ string, q *node) {
	v, _ := c.roster.ViewFor(a.handle, a.bare) // it exists: knowsHandle
	switch {
	case typ == "get" && q.ns() == nsDiscoInf && q.name.Local == "query":
		if !handleInfo.answersNode(c.capsNode, q.get("node")) {
			w.refuse(n, condItemNotFound("No such node."))
			return
		}
		w.result(n, handleInfo.query(q.get("node")))
	case typ == "get" && q.ns() == nsPing && q.name.Local == "ping":
		w.result(n, nil)
	case typ == "get" && q.ns() == nsLast && q.name.Local == "query":
		secs := int64(0)
		if !v.Available {
			secs = max(0, int64(time.Since(v.Since)/time.Second))
		}
		w.result(n, el(qname(nsLast, "query"), "seconds", strconv.FormatInt(secs, 10)))
	default:
		w.refuse(n, condServiceUnavailable())
	}
}
