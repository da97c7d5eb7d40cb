package component

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"presenced/roster"
	"presenced/storage"
)

// Ad-hoc commands (XEP-0050). Every command has two stages: execute returns
// a form; submitting it with action 'complete' does the work and completes
// with a note saying what happened. A refused request is answered with an
// IQ error carrying a text that says why (never with a completed command):
// bad-request, jid-malformed, conflict, not-allowed, item-not-found, or
// internal-server-error when the service failed; nothing changes then.

const (
	// commandSessionTTL is how long a command waits for its form.
	commandSessionTTL = 10 * time.Minute
	// maxCommandSessions bounds the sessions kept in memory, all requesters
	// together; the oldest are forgotten first.
	maxCommandSessions = 10000
	// maxFieldBytes bounds one submitted field value.
	maxFieldBytes = 4096
)

type command struct {
	node, name string
	// form returns the form of the first stage.
	form func(c *Component, owner string) *node
	// complete does the work with the submitted values and calls done with
	// the note text and an optional result form, or the error, once the
	// work is stored: a completed command promises that it is kept.
	complete func(c *Component, owner string, f formValues, done commandDone)
	// nothing, if set, returns a note when there is nothing to do: the
	// command then completes at once, with no form.
	nothing func(c *Component, owner string) string
}

var commandList = []*command{
	{node: "add-handle", name: "Add a handle", form: addHandleForm, complete: addHandle},
	{node: "remove-handle", name: "Remove a handle", form: removeHandleForm, complete: removeHandle},
	{node: "list-handles", name: "List my handles", form: listHandlesForm, complete: listHandles},
	{node: "set-status", name: "Set my status", form: setStatusForm, complete: setStatus},
	{node: "requests", name: "Subscription requests", form: requestsForm, complete: decideRequests, nothing: noRequests},
	{node: "subscribers", name: "List the subscribers of a handle", form: subscribersForm, complete: listSubscribers},
	{node: "remove-subscriber", name: "Remove a subscriber", form: removeSubscriberForm, complete: removeSubscriber},
	{node: "block", name: "Block a contact", form: blockForm, complete: block},
	{node: "unblock", name: "Unblock a contact", form: unblockForm, complete: unblock},
	{node: "list-blocked", name: "List blocked contacts", form: listBlockedForm, complete: listBlocked},
	{node: "set-visibility", name: "Hide or show handles", form: visibilityForm, complete: setVisibility},
	{node: "set-web", name: "Show handles on the web", form: webForm, complete: setWeb},
}

func commandByNode(node string) *command {
	for _, c := range commandList {
		if c.node == node {
			return c
		}
	}
	return nil
}

// commandDone is how a command reports its outcome.
type commandDone func(note string, result *node, err error)

// userError is a refusal the user caused; its stanza error is sent as is.
type userError struct{ e stanzaError }

func (u userError) Error() string { return u.e.cond + ": " + u.e.text }

func refusal(e stanzaError) error { return userError{e} }

// handleCommand runs one step of a command.
func (c *Component) handleCommand(w *replier, n *node, a address, q *node) {
	cmd := commandByNode(q.get("node"))
	if cmd == nil {
		w.refuse(n, condItemNotFound("No such command."))
		return
	}
	if !c.mayOwn(a.from) {
		w.refuse(n, errNotOwnerDomain)
		return
	}
	action := q.get("action")
	sid := q.get("sessionid")
	requester := a.from.String()
	switch action {
	case "", "execute", "complete", "cancel":
	case "next", "prev":
		w.refuse(n, commandError("bad-action", "This command has one form; use complete."))
		return
	default:
		w.refuse(n, commandError("malformed-action", "Unknown action."))
		return
	}
	submitted := q.child(nsData, "x")
	if sid == "" {
		if action == "cancel" {
			w.refuse(n, commandError("bad-sessionid", "There is no command session to cancel."))
			return
		}
		if action == "complete" && submitted != nil {
			// A client that fills the form in without asking for it first.
			c.completeCommand(w, n, cmd, a.bare, "", submitted)
			return
		}
		if cmd.nothing != nil {
			if note := cmd.nothing(c, a.bare); note != "" {
				w.result(n, el(qname(nsCommands, "command"), "node", cmd.node, "sessionid", newSessionID(), "status", "completed").add(
					el(local("note"), "type", "info").withText(note)))
				return
			}
		}
		sid = c.cmds.open(cmd.node, requester)
		w.result(n, el(qname(nsCommands, "command"), "node", cmd.node, "sessionid", sid, "status", "executing").add(
			el(local("actions"), "execute", "complete").add(el(local("complete"))),
			cmd.form(c, a.bare),
		))
		return
	}
	if !c.cmds.valid(sid, cmd.node, requester) {
		w.refuse(n, commandError("bad-sessionid", "The command session is unknown or has expired; start the command again."))
		return
	}
	if action == "cancel" || (submitted != nil && submitted.get("type") == "cancel") {
		// XEP-0004 §3.1: a form of type cancel cancels, as the action does.
		c.cmds.end(sid)
		w.result(n, el(qname(nsCommands, "command"), "node", cmd.node, "sessionid", sid, "status", "canceled"))
		return
	}
	if submitted == nil {
		w.refuse(n, condBadRequest("The command needs its form filled in."))
		return
	}
	c.cmds.setBusy(sid, true)
	c.completeCommand(w, n, cmd, a.bare, sid, submitted)
}

// completeCommand does the work of a submitted form and answers once it is
// stored. A completed command ends its session; a refused step keeps it,
// so the user can correct the form.
func (c *Component) completeCommand(w *replier, n *node, cmd *command, owner, sid string, x *node) {
	if t := x.get("type"); t != "submit" {
		if sid != "" {
			c.cmds.setBusy(sid, false)
		}
		w.refuse(n, condBadRequest("The form must be submitted (type 'submit')."))
		return
	}
	done := func(note string, result *node, err error) {
		if err != nil && sid != "" {
			c.cmds.setBusy(sid, false) // refused: the form may be corrected
		}
		var ue userError
		switch {
		case errors.As(err, &ue):
			w.refuse(n, ue.e)
			return
		case err != nil:
			c.refuseFailure(w, n, err, "command failed", "command", cmd.node, "owner", owner)
			return
		}
		c.log.Info("command completed", "command", cmd.node, "owner", owner)
		if sid == "" {
			sid = newSessionID()
		} else {
			c.cmds.end(sid)
		}
		w.result(n, el(qname(nsCommands, "command"), "node", cmd.node, "sessionid", sid, "status", "completed").add(
			el(local("note"), "type", "info").withText(note),
			result,
		))
	}
	f, err := parseForm(x, specOf(cmd.form(c, owner)))
	if err != nil {
		done("", nil, err)
		return
	}
	cmd.complete(c, owner, f, done)
}

// formSpec is what parseForm checks a submitted form against, taken from
// the form the command gives now: the fields that take one value, and the
// options of the list-multi fields by label.
type formSpec struct {
	single map[string]bool
	labels map[string]map[string]string // field → label → value
}

func specOf(form *node) formSpec {
	spec := formSpec{single: map[string]bool{}, labels: map[string]map[string]string{}}
	for _, f := range form.children {
		name := f.get("var")
		switch f.get("type") {
		case "list-single", "text-single", "jid-single", "boolean", "text-private", "hidden":
			spec.single[name] = true
		case "list-multi":
			byLabel := map[string]string{}
			for _, o := range f.children {
				if v := o.child("", "value"); o.name.Local == "option" && v != nil && o.get("label") != "" {
					byLabel[o.get("label")] = v.text
				}
			}
			spec.labels[name] = byLabel
		}
	}
	return spec
}

// formValues are the values of a submitted form, by field name.
type formValues map[string][]string

func (f formValues) single(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseForm reads the values of a submitted form: a single-value field
// may have one value only, and in a list-multi field the label of an
// option stands for its value. (Gajim 1.7.3, Debian 12's, submits the
// labels of the options chosen: ListMutliTreeView._set_values in
// gajim/gtk/dataform.py reads the tooltip column, which holds the label;
// later Gajim sends the values.)
func parseForm(x *node, spec formSpec) (formValues, error) {
	f := formValues{}
	for _, field := range x.children {
		if field.name.Local != "field" {
			continue
		}
		name := field.get("var")
		for _, v := range field.children {
			if v.name.Local != "value" {
				continue
			}
			if len(v.text) > maxFieldBytes {
				return nil, refusal(condBadRequest(fmt.Sprintf("The value of field %q is too long (at most %d bytes).", clip(name), maxFieldBytes)))
			}
			if spec.single[name] && len(f[name]) > 0 {
				return nil, refusal(condBadRequest(fmt.Sprintf("The field %q takes one value.", clip(name))))
			}
			value := v.text
			if real, ok := spec.labels[name][value]; ok {
				value = real
			}
			f[name] = append(f[name], value)
		}
	}
	return f, nil
}

// Form building.

func dataForm(typ, title, instructions string, fields ...*node) *node {
	x := el(qname(nsData, "x"), "type", typ)
	if title != "" {
		x.add(el(local("title")).withText(title))
	}
	if instructions != "" {
		x.add(el(local("instructions")).withText(instructions))
	}
	return x.add(fields...)
}

func field(typ, name, label string, values ...string) *node {
	f := el(local("field"), "type", typ, "var", name, "label", label)
	for _, v := range values {
		f.add(el(local("value")).withText(v))
	}
	return f
}

func required(f *node) *node { return f.add(el(local("required"))) }

// policyOptions are the choices of add-handle's subscriptions field.
var policyOptions = []struct {
	value storage.Policy
	label string
}{
	{storage.PolicyAsk, "Ask me about every request"},
	{storage.PolicyOpen, "Approve everyone (public)"},
}

func addHandleForm(c *Component, owner string) *node {
	pf := field("list-single", "subscriptions", "Who may subscribe", string(c.roster.DefaultPolicy()))
	for _, o := range policyOptions {
		pf.add(option(o.label, string(o.value)))
	}
	return dataForm("form", "Add a handle",
		fmt.Sprintf("Choose a handle name. Your contacts add name@%s to their rosters. You may hold up to %d handles.", c.domain, c.roster.MaxHandles()),
		required(field("text-single", "handle", "Handle name")), pf)
}

func option(label, value string) *node {
	return el(local("option"), "label", label).add(el(local("value")).withText(value))
}

func removeHandleForm(c *Component, owner string) *node {
	return dataForm("form", "Remove a handle", "Its subscribers will see it go off-line and lose their subscription.",
		handleChoice(c, owner, "handle", "Handle to remove"))
}

func listHandlesForm(c *Component, owner string) *node {
	return dataForm("form", "List my handles", "Complete to list the handles of your account.")
}

// statusOptions are the choices of set-status: the value sent, the label
// shown in the form, and the words every other text uses for it.
var statusOptions = []struct{ value, label, words string }{
	{"undefined", "Available (no particular status)", "available"},
	{"away", "Away", "away"},
	{"busy", "Busy (do not disturb)", "busy"},
	{"hiding", "Hiding (appear off-line to everyone)", "hiding"},
	{"visible", "Visible (the status my clients show)", "visible"},
}

// statusChoices lists the statuses in the user's words, for error texts,
// with the value to send where it differs from the words.
var statusChoices = func() string {
	var b strings.Builder
	for i, o := range statusOptions {
		switch {
		case i == len(statusOptions)-1:
			b.WriteString(" or ")
		case i > 0:
			b.WriteString(", ")
		}
		b.WriteString(o.words)
		if o.words != o.value {
			fmt.Fprintf(&b, " (value %q)", o.value)
		}
	}
	return b.String()
}()

func setStatusForm(c *Component, owner string) *node {
	current := "undefined"
	if f, ok := c.roster.Flags(owner); ok {
		current = string(f.Status)
		if f.Hiding {
			current = "hiding"
		}
	}
	fl := required(field("list-single", "status", "Status", current))
	for _, o := range statusOptions {
		fl.add(option(o.label, o.value))
	}
	return dataForm("form", "Set my status", "One status for all of your handles.", fl)
}

// prepareHandle checks a handle name and returns its prepared form.
func prepareHandle(c *Component, name string) (string, error) {
	if name == "" {
		return "", refusal(condBadRequest("The handle name is empty."))
	}
	j, err := jid.New(name, c.domain.Domainpart(), "")
	if err != nil || j.Localpart() == "" {
		return "", refusal(condJIDMalformed(fmt.Sprintf(
			"%q is not a valid handle name: it must be a valid XMPP localpart of at most 1023 bytes, without spaces or any of @ / : ' \" & < >.", clip(name))))
	}
	return j.Localpart(), nil
}

// clip shortens a value for quoting in an error text.
func clip(s string) string {
	if len(s) > 64 {
		return truncate(s, 64) + "…"
	}
	return s
}

func addHandle(c *Component, owner string, f formValues, done commandDone) {
	h, err := prepareHandle(c, f.single("handle"))
	if err != nil {
		done("", nil, err)
		return
	}
	policy := storage.Policy(strings.TrimSpace(f.single("subscriptions")))
	if policy != "" && !policy.Valid() {
		done("", nil, refusal(condBadRequest(fmt.Sprintf("Unknown choice %q for who may subscribe: choose %q or %q.", clip(string(policy)), storage.PolicyAsk, storage.PolicyOpen))))
		return
	}
	c.roster.AddHandle(owner, h, policy, func(err error) {
		switch {
		case errors.Is(err, roster.ErrHandleOwned):
			done(fmt.Sprintf("The handle %s is already yours; nothing changed.", c.handleBare(h)), nil, nil)
			return
		case errors.Is(err, roster.ErrHandleTaken), errors.Is(err, roster.ErrQuarantined):
			// The same answer: that a name was removed lately (and its
			// subscribers may still ask for it) is no one else's business.
			err = refusal(condConflict(fmt.Sprintf("The handle name %q is already taken.", h)))
		case errors.Is(err, roster.ErrReserved):
			err = refusal(condNotAllowed(fmt.Sprintf("The handle name %q is reserved.", h)))
		case errors.Is(err, roster.ErrHandleLimit):
			err = refusal(condNotAllowed(fmt.Sprintf("You already hold %d handles, the most an account may hold.", c.roster.MaxHandles())))
		case errors.Is(err, roster.ErrAccountLimit):
			err = refusal(condNotAllowed("This service holds as many accounts as it may; no new account can be made."))
		}
		if err != nil {
			done("", nil, err)
			return
		}
		note := fmt.Sprintf("Added the handle %s: your contacts can now add it to their rosters.", c.handleBare(h))
		if p, _ := c.roster.Policy(h); p == storage.PolicyAsk {
			note += " You approve each of them (the command \"Subscription requests\", or the chat command \"requests\")."
		} else {
			note += " Anyone who asks sees your status."
		}
		if fl, _ := c.roster.Flags(owner); fl.Online {
			note += " It follows your status."
		} else {
			note += fmt.Sprintf(" So that it follows your status, %s now asks to see your presence: accept that request."+
				" (If you accepted it before, your server answers for you and you see no request.)", c.domain)
		}
		done(note, nil, nil)
		// Then ask the owner for their presence, so that their server
		// forwards it. Asking again is harmless: a server whose user already
		// approved answers by itself (RFC 6121 §3.1.3), and one who
		// declined before is asked once more by the act of adding a handle.
		c.askOwnerPresence(owner)
	})
}

// askOwnerPresence sends the component's subscription request to a new
// owner, with a <status/> that says why.
func (c *Component) askOwnerPresence(owner string) {
	c.out.write(presence("subscribe", c.domainStr, owner).add(el(local("status")).withText(fmt.Sprintf(
		"Please accept: %s needs to see your presence so that your handles show your status to their subscribers.", c.domain))))
}

func removeHandle(c *Component, owner string, f formValues, done commandDone) {
	h, err := prepareHandle(c, f.single("handle"))
	if err != nil {
		done("", nil, err)
		return
	}
	c.roster.RemoveHandle(owner, h, func(err error) {
		if errors.Is(err, roster.ErrUnknownHandle) || errors.Is(err, roster.ErrNotOwner) {
			// The same answer either way: another account's handle is
			// none of this one's business.
			err = refusal(noSuchHandle(h))
		}
		c.held(done, fmt.Sprintf("Removed the handle %s.", c.handleBare(h)), err, "handle removal", "owner", owner, "handle", h)
	})
}

func listHandles(c *Component, owner string, f formValues, done commandDone) {
	hs := c.roster.Handles(owner)
	note := fmt.Sprintf("You hold %d handles.", len(hs))
	switch len(hs) {
	case 0:
		note = "You hold no handles."
	case 1:
		note = "You hold 1 handle."
	}
	done(note, dataForm("result", "Your handles", "", field("text-multi", "handles", "Handles", hs...)), nil)
}

func setStatus(c *Component, owner string, f formValues, done commandDone) {
	v := strings.TrimSpace(f.single("status"))
	words := ""
	for _, o := range statusOptions {
		if o.value == v {
			words = o.words
		}
	}
	switch {
	case v == "":
		done("", nil, refusal(condBadRequest("Choose a status: "+statusChoices+".")))
		return
	case words == "":
		done("", nil, refusal(condBadRequest(fmt.Sprintf("Unknown status %q: choose %s.", clip(v), statusChoices))))
		return
	}
	in := roster.Instruction(v)
	c.roster.Instruct(owner, in, func(err error) {
		switch {
		case errors.Is(err, roster.ErrNoAccount):
			done("", nil, refusal(errNoAccount))
			return
		case in == roster.InstructHide && errors.Is(err, roster.ErrNotStored):
			c.notStored("hiding not stored yet; retrying", "owner", owner, "err", err)
			done("You are hiding: all of your handles appear off-line. "+notStoredYet, nil, nil)
			return
		case err != nil:
			done("", nil, err)
			return
		}
		switch in {
		case roster.InstructHide:
			done("You are hiding: all of your handles appear off-line.", nil, nil)
			return
		case roster.InstructVisible:
			done("You are visible again, with the status your clients show. "+statusWords(c, owner), nil, nil)
			return
		}
		note := fmt.Sprintf("Your status is now %s on all of your handles.", words)
		if fl, _ := c.roster.Flags(owner); !fl.Online {
			note += " They show it while one of your clients is on-line; until then they appear off-line."
		}
		done(note, nil, nil)
	})
}

// notStoredYet ends the note of a change that holds at once but could
// not be stored yet.
const notStoredYet = "It could not be stored yet (not stored yet): presenced keeps trying, and it holds meanwhile."

// DefaultMaxCommandSessions is how many command sessions one user (bare
// JID) may have open by default.
const DefaultMaxCommandSessions = 8

// commandSessions are the command sessions waiting for their form. They
// belong to the engine goroutine, like every other piece of state.
type commandSessions struct {
	sessions map[string]commandSession
	order    []string // oldest first; may hold ended ids
	// byRequester lists each user's (bare JID's) open sessions, oldest
	// first, whatever the resource; perRequester bounds them, so that one
	// user cycling resources cannot push everyone else's sessions out.
	byRequester  map[string][]string
	perRequester int
}

type commandSession struct {
	node, requester string
	expires         time.Time
	busy            bool
}

func newCommandSessions(perRequester int) *commandSessions {
	return &commandSessions{
		sessions:     make(map[string]commandSession),
		byRequester:  make(map[string][]string),
		perRequester: perRequester,
	}
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// open opens a session for requester. Expired sessions go first, then,
// past the bounds, the oldest of all and the requester's own oldest.
func (s *commandSessions) open(node, requester string) string {
	now := time.Now()
	for len(s.order) > 0 {
		old, ok := s.sessions[s.order[0]]
		if ok && len(s.sessions) < maxCommandSessions && now.Before(old.expires) {
			break
		}
		s.end(s.order[0])
		s.order = s.order[1:]
	}
	user := bareOf(requester)
	for len(s.byRequester[user]) >= s.perRequester {
		s.end(s.byRequester[user][0])
	}
	id := newSessionID()
	s.sessions[id] = commandSession{node: node, requester: requester, expires: now.Add(commandSessionTTL)}
	s.order = append(s.order, id)
	s.byRequester[user] = append(s.byRequester[user], id)
	if len(s.order) > 2*len(s.sessions)+16 {
		// Ended sessions leave their ids behind; drop them.
		live := s.order[:0]
		for _, id := range s.order {
			if _, ok := s.sessions[id]; ok {
				live = append(live, id)
			}
		}
		clear(s.order[len(live):])
		s.order = live
	}
	return id
}

// valid reports whether the session exists, is for node and requester, and
// has not expired.
func (s *commandSessions) valid(id, node, requester string) bool {
	cs, ok := s.sessions[id]
	return ok && !cs.busy && cs.node == node && cs.requester == requester && time.Now().Before(cs.expires)
}

// setBusy marks the session as being completed (its work not yet stored),
// when no other step may use it, or not any more.
func (s *commandSessions) setBusy(id string, busy bool) {
	if cs, ok := s.sessions[id]; ok {
		cs.busy = busy
		s.sessions[id] = cs
	}
}

// end forgets the session.
func (s *commandSessions) end(id string) {
	cs, ok := s.sessions[id]
	if !ok {
		return
	}
	delete(s.sessions, id)
	user := bareOf(cs.requester)
	ids := s.byRequester[user]
	if i := slices.Index(ids, id); i >= 0 {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(s.byRequester, user)
	} else {
		s.byRequester[user] = ids
	}
}

// bareOf is the bare JID of a full JID in its string form.
func bareOf(j string) string {
	bare, _, _ := strings.Cut(j, "/")
	return bare
}
