package component

import (
	"errors"
	"fmt"
	"strings"

	"mellium.im/xmpp/jid"

	"presenced/roster"
	"presenced/storage"
)

// The owner's control beyond the status: who follows a handle, dropping
// one follower, blocking a contact, and hiding one handle. These are
// ad-hoc commands; the chat commands (chat.go) run the same functions.

// maxListed and maxListedBytes bound the JIDs one answer lists, so that
// an answer stays a stanza every server carries (a handle may have
// 100,000 subscribers, and a JID may be 3 KiB long).
const (
	maxListed      = 1000
	maxListedBytes = 48 << 10
)

// handleChoice is a required list-single of owner's handles.
func handleChoice(c *Component, owner, name, label string) *node {
	return handlesField(c, owner, "list-single", name, label)
}

// handlesField is a required field of type typ (list-single or
// list-multi) whose options are owner's handles.
func handlesField(c *Component, owner, typ, name, label string) *node {
	f := required(field(typ, name, label))
	for _, h := range c.roster.Handles(owner) {
		f.add(option(h, h))
	}
	return f
}

// prepareContact checks a contact's JID and returns it bare.
func prepareContact(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", refusal(condBadRequest("Give the contact's address (name@example.org)."))
	}
	j, err := jid.Parse(v)
	if err != nil {
		return "", refusal(condJIDMalformed(fmt.Sprintf("%q is not a valid address.", clip(v))))
	}
	return j.Bare().String(), nil
}

// listed is the first of some (of total in all) that fit in an answer,
// and a note on what was left out.
func listed(some []string, total int) ([]string, string) {
	n, size := 0, 0
	for n < len(some) && n < maxListed && size+len(some[n]) <= maxListedBytes {
		size += len(some[n])
		n++
	}
	if n == total {
		return some, ""
	}
	return some[:n], fmt.Sprintf(" %d of them are listed.", n)
}

// plural is "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func subscribersForm(c *Component, owner string) *node {
	return dataForm("form", "Subscribers", "Choose a handle to list the contacts who see it.",
		handleChoice(c, owner, "handle", "Handle"))
}

// listSubscribers lists the subscribers of one handle.
func listSubscribers(c *Component, owner string, f formValues, done commandDone) {
	h, err := prepareHandle(c, f.single("handle"))
	if err != nil {
		done("", nil, err)
		return
	}
	subs, total, err := c.roster.Subscribers(owner, h, maxListed)
	if err != nil {
		done("", nil, refusal(noSuchHandle(h)))
		return
	}
	shown, more := listed(subs, total)
	note := fmt.Sprintf("%s has %s.%s", c.handleBare(h), plural(total, "subscriber", "subscribers"), more)
	done(note, dataForm("result", "Subscribers of "+c.handleBare(h), "", field("jid-multi", "subscribers", "Subscribers", shown...)), nil)
}

// notOwned is the refusal of a change to names, one of which is not
// owner's (any more): it names the first such.
func (c *Component) notOwned(owner string, names []string) stanzaError {
	for _, h := range names {
		if o, ok := c.roster.OwnerOf(h); !ok || o != owner {
			return noSuchHandle(h)
		}
	}
	return condItemNotFound("One of those handles is not yours any more.")
}

// noSuchHandle answers a handle that is not the owner's: the same whether
// it is another account's or nobody's.
func noSuchHandle(h string) stanzaError {
	return condItemNotFound(fmt.Sprintf("You have no handle named %q.", h))
}

func removeSubscriberForm(c *Component, owner string) *node {
	return dataForm("form", "Remove a subscriber",
		"The contact sees the handle go off-line and loses the subscription. It can ask again; block it to stop that.",
		handleChoice(c, owner, "handle", "Handle"), required(field("jid-single", "contact", "Contact")))
}

// removeSubscriber ends a contact's subscription to one handle, or, with
// no handle given (the chat command's kick CONTACT), to every handle of
// the owner's it subscribes to.
func removeSubscriber(c *Component, owner string, f formValues, done commandDone) {
	contact, err := prepareContact(f.single("contact"))
	if err != nil {
		done("", nil, err)
		return
	}
	var handles []string
	if v := f.single("handle"); v != "" {
		h, err := prepareHandle(c, v)
		if err != nil {
			done("", nil, err)
			return
		}
		handles = []string{h}
	} else {
		for _, h := range c.roster.Handles(owner) {
			if c.roster.IsSubscribed(h, contact) {
				handles = append(handles, h)
			}
		}
		if len(handles) == 0 {
			done("", nil, refusal(condItemNotFound(fmt.Sprintf("%s subscribes to none of your handles.", contact))))
			return
		}
	}
	// Decided at once, for every handle, before anything is sent.
	all := &joinedNote{left: len(handles), done: done, note: func(names string) string {
		return fmt.Sprintf("Removed %s from the subscribers of %s: they were told that the subscription ended.", contact, names)
	}}
	for _, h := range handles {
		v, err := c.roster.Kick(owner, h, contact, func(err error) { all.one(err) })
		switch {
		case errors.Is(err, roster.ErrUnknownHandle):
			done("", nil, refusal(noSuchHandle(h)))
			return
		case errors.Is(err, roster.ErrNotSubscribed):
			done("", nil, refusal(condItemNotFound(fmt.Sprintf("%s does not subscribe to %s.", contact, c.handleBare(h)))))
			return
		}
		// RFC 6121 §3.2.1: the contact sees the handle go, then learns
		// that the subscription ended.
		c.out.Presence(h, contact, v)
		c.out.Unsubscribed(h, contact)
		all.names = append(all.names, c.handleBare(h))
	}
}

// joinedNote completes a command once each of its changes is stored: with
// note of the names when all are (not stored yet holds, and is said), or
// with the first failure.
type joinedNote struct {
	left  int
	names []string
	note  func(names string) string
	saved bool
	err   error
	done  commandDone
}

func (j *joinedNote) one(err error) {
	switch {
	case errors.Is(err, roster.ErrNotStored):
		j.saved = true
	case err != nil && j.err == nil:
		j.err = err
	}
	if j.left--; j.left > 0 {
		return
	}
	if j.err != nil {
		j.done("", nil, j.err)
		return
	}
	note := j.note(strings.Join(j.names, ", "))
	if j.saved {
		note += " " + notStoredYet
	}
	j.done(note, nil, nil)
}

func blockForm(c *Component, owner string) *node {
	return dataForm("form", "Block a contact",
		"A blocked contact sees all of your handles off-line, whatever your status, and its requests are dropped without telling you. Its subscriptions stay, so unblocking it shows it your status again.",
		required(field("jid-single", "contact", "Contact")))
}

func block(c *Component, owner string, f formValues, done commandDone) {
	contact, err := prepareContact(f.single("contact"))
	if err != nil {
		done("", nil, err)
		return
	}
	if contact == owner {
		done("", nil, refusal(condBadRequest("You cannot block yourself.")))
		return
	}
	c.roster.Block(owner, contact, func(err error) {
		note := fmt.Sprintf("Blocked %s: all of your handles appear off-line to them, and their requests are dropped.", contact)
		switch {
		case errors.Is(err, roster.ErrAlreadyBlocked):
			done(fmt.Sprintf("%s was blocked already; nothing changed.", contact), nil, nil)
		case errors.Is(err, roster.ErrNoAccount):
			done("", nil, refusal(errNoAccount))
		case errors.Is(err, roster.ErrBlockLimit):
			done("", nil, refusal(condNotAllowed("Your block list is full; unblock someone first.")))
		default:
			c.held(done, note, err, "block", "owner", owner)
		}
	})
}

func unblockForm(c *Component, owner string) *node {
	return dataForm("form", "Unblock a contact",
		"The contact sees your status again on the handles it subscribes to.",
		required(field("jid-single", "contact", "Contact")))
}

func unblock(c *Component, owner string, f formValues, done commandDone) {
	contact, err := prepareContact(f.single("contact"))
	if err != nil {
		done("", nil, err)
		return
	}
	c.roster.Unblock(owner, contact, func(err error) {
		switch {
		case errors.Is(err, roster.ErrNoAccount):
			done("", nil, refusal(errNoAccount))
		case errors.Is(err, roster.ErrNotBlocked):
			done("", nil, refusal(condItemNotFound(fmt.Sprintf("%s is not blocked.", contact))))
		case err != nil:
			done("", nil, err)
		default:
			done(fmt.Sprintf("Unblocked %s: they see your status again on the handles they subscribe to.", contact), nil, nil)
		}
	})
}

func listBlockedForm(c *Component, owner string) *node {
	return dataForm("form", "Blocked contacts", "Complete to list the contacts you block.")
}

func listBlocked(c *Component, owner string, f formValues, done commandDone) {
	all := c.roster.Blocked(owner)
	shown, more := listed(all, len(all))
	note := fmt.Sprintf("You block %s.%s", plural(len(all), "contact", "contacts"), more)
	if len(all) == 0 {
		note = "You block nobody."
	}
	done(note, dataForm("result", "Blocked contacts", "", field("jid-multi", "blocked", "Blocked", shown...)), nil)
}

// visibilityOptions are the choices of set-visibility.
var visibilityOptions = []struct{ value, label string }{
	{"shown", "Shown: it follows my status"},
	{"hidden", "Hidden: it appears off-line to all of its subscribers"},
}

func visibilityForm(c *Component, owner string) *node {
	hf := handlesField(c, owner, "list-multi", "handles", "Handles")
	vf := required(field("list-single", "visibility", "Visibility"))
	for _, o := range visibilityOptions {
		vf.add(option(o.label, o.value))
	}
	return dataForm("form", "Hide or show handles",
		"A hidden handle appears off-line to all of its subscribers while your other handles follow your status.", hf, vf)
}

// chosenHandles returns the handles of a form's list-multi field
// "handles", prepared, and their bare JIDs; at least one.
func chosenHandles(c *Component, f formValues) (names, bare []string, err error) {
	for _, raw := range f["handles"] {
		h, err := prepareHandle(c, raw)
		if err != nil {
			return nil, nil, err
		}
		names = append(names, h)
		bare = append(bare, c.handleBare(h))
	}
	if len(names) == 0 {
		return nil, nil, refusal(condBadRequest("Choose at least one handle."))
	}
	return names, bare, nil
}

func setVisibility(c *Component, owner string, f formValues, done commandDone) {
	v := strings.TrimSpace(f.single("visibility"))
	if v != "shown" && v != "hidden" {
		done("", nil, refusal(condBadRequest(`Choose the visibility: "shown" or "hidden".`)))
		return
	}
	names, bare, err := chosenHandles(c, f)
	if err != nil {
		done("", nil, err)
		return
	}
	hidden := v == "hidden"
	c.roster.SetVisibility(owner, names, hidden, func(err error) {
		list := strings.Join(bare, ", ")
		note := fmt.Sprintf("Shown: %s. It follows your status again.", list)
		if hidden {
			note = fmt.Sprintf("Hidden: %s. It appears off-line to all of its subscribers; your other handles follow your status.", list)
		}
		if errors.Is(err, roster.ErrUnknownHandle) {
			err = refusal(c.notOwned(owner, names))
		}
		c.held(done, note, err, "visibility", "owner", owner)
	})
}

// webOptions are the choices of set-web.
var webOptions = []struct{ value, label string }{
	{"public", "Public: anyone may see its status on the web"},
	{"off", "Off: the web shows it off-line"},
}

func webForm(c *Component, owner string) *node {
	hf := handlesField(c, owner, "list-multi", "handles", "Handles")
	wf := required(field("list-single", "web", "On the web"))
	for _, o := range webOptions {
		wf.add(option(o.label, o.value))
	}
	return dataForm("form", "Show handles on the web",
		"A public handle's status (available, away, busy or off-line, nothing more) can be shown on web pages; hiding, a hidden handle and a handle that is not public all show off-line.", hf, wf)
}

func setWeb(c *Component, owner string, f formValues, done commandDone) {
	v := strings.TrimSpace(f.single("web"))
	if v != "public" && v != "off" {
		done("", nil, refusal(condBadRequest(`Choose "public" or "off".`)))
		return
	}
	names, bare, err := chosenHandles(c, f)
	if err != nil {
		done("", nil, err)
		return
	}
	public := v == "public"
	c.roster.SetWeb(owner, names, public, func(err error) {
		list := strings.Join(bare, ", ")
		note := fmt.Sprintf("Off the web: %s. The web shows it off-line.", list)
		if public {
			note = fmt.Sprintf("Public on the web: %s. Its status can be shown on web pages.", list)
		}
		if errors.Is(err, roster.ErrUnknownHandle) {
			err = refusal(c.notOwned(owner, names))
		}
		c.held(done, note, err, "web", "owner", owner)
	})
}

// policyWords says what a handle's policy does.
func policyWords(p storage.Policy) string {
	if p == storage.PolicyOpen {
		return "approves everyone"
	}
	return "asks you about each request"
}

// statusWords says what the owner's status is, and what subscribers see.
func statusWords(c *Component, owner string) string {
	fl, ok := c.roster.Flags(owner)
	switch {
	case !ok:
		return "You hold no handles yet: send \"add NAME\" to add one."
	case fl.Hiding:
		return "You are hiding: all of your handles appear off-line."
	}
	words := string(fl.Status)
	for _, o := range statusOptions {
		if o.value == words {
			words = o.words
		}
	}
	if !fl.Online {
		return fmt.Sprintf("Your status is %s, but none of your clients is on-line: your handles appear off-line.", words)
	}
	return fmt.Sprintf("Your status is %s.", words)
}

// statusReport is the account's status and each handle's visibility,
// policy, subscribers and requests, one line each.
func statusReport(c *Component, owner string) string {
	var b strings.Builder
	b.WriteString(statusWords(c, owner))
	for _, h := range c.roster.HandleInfos(owner) {
		vis := "shown"
		if h.Hidden {
			vis = "hidden (appears off-line)"
		}
		fmt.Fprintf(&b, "\n%s: %s, %s, %s", c.handleBare(h.Name), vis, policyWords(h.Policy), plural(h.Subscribers, "subscriber", "subscribers"))
		if h.Web {
			b.WriteString(", public on the web")
		}
		if h.Requests > 0 {
			fmt.Fprintf(&b, ", %s waiting", plural(h.Requests, "request", "requests"))
		}
	}
	if n := len(c.roster.Blocked(owner)); n > 0 {
		fmt.Fprintf(&b, "\nYou block %s.", plural(n, "contact", "contacts"))
	}
	return b.String()
}
