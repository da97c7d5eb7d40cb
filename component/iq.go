package component

import (
	"errors"
	"runtime"
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
	if typ != "get" && typ != "set" {
		w.refuse(n, condBadRequest("An IQ must be of type get or set."))
		return
	}
	if len(n.children) != 1 {
		w.refuse(n, condBadRequest("An IQ request must have exactly one child element."))
		return
	}
	if n.get("id") == "" {
		w.refuse(n, condBadRequest("An IQ must have an id."))
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

// result answers request n with a result carrying payload (can be nil).
func (w *replier) result(n *node, payload *node) {
	w.write(el(local("iq"), "type", "result", "id", n.get("id"), "from", n.get("to"), "to", n.get("from")).add(payload))
}

// What the component's JID answers to disco#info.
var componentInfo = newDiscoInfo("component", "presence", "presenced",
	nsDiscoInf, nsDiscoIt, nsCommands, nsPing, nsVersion, nsInvis0)

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
		w.result(n, el(qname(nsVersion, "query")).add(
			el(local("name")).withText("presenced"),
			el(local("version")).withText(c.cfg.Version),
			el(local("os")).withText(runtime.GOOS),
		))
	case typ == "set" && q.ns() == nsCommands && q.name.Local == "command":
		c.handleCommand(w, n, a, q)
	case typ == "set" && q.ns() == nsInvis0 && (q.name.Local == "invisible" || q.name.Local == "visible"):
		c.invisibleIQ(w, n, a, q)
	default:
		w.refuse(n, condServiceUnavailable())
	}
}

// invisibleIQ is XEP-0186 sent to the component's JID: <invisible/> hides
// every handle of the account; <visible/> lifts hiding.
func (c *Component) invisibleIQ(w *replier, n *node, a address, q *node) {
	if a.from.local == "" {
		w.refuse(n, condNotAllowed("Only user accounts can hide."))
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
			res.add(el(local("item"), "jid", c.domain.String(), "node", cmd.node, "name", cmd.name))
		}
	default:
		w.refuse(n, condItemNotFound("No such node."))
		return
	}
	w.result(n, res)
}

// handleIQToHandle answers disco#info, ping and last activity on a handle
// JID. The answers depend only on whether the handle exists and whether the
// requester subscribes to it, never on whether the owner is off-line or
// hiding: last activity reports the moment the handle stopped being visible,
// which for a hiding account is the moment it went hiding.
func (c *Component) handleIQToHandle(w *replier, n *node, a address, typ string, q *node) {
	v, exists := c.roster.ViewOfHandle(a.handle)
	if !exists {
		w.refuse(n, condItemNotFound("No such handle."))
		return
	}
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
		if !c.roster.IsSubscribed(a.handle, a.bare) {
			w.refuse(n, condForbidden("Only subscribers may ask for last activity."))
			return
		}
		secs := int64(0)
		if !v.Available {
			secs = max(0, int64(time.Since(v.Since)/time.Second))
		}
		w.result(n, el(qname(nsLast, "query"), "seconds", strconv.FormatInt(secs, 10)))
	default:
		w.refuse(n, condServiceUnavailable())
	}
}
