package component

import (
	"errors"
	"fmt"
	"strings"

	"presenced/roster"
)

// The requests command: the owner approves or denies the subscription
// requests waiting for their ask handles.

func noRequests(c *Component, owner string) string {
	if len(c.roster.Requests(owner)) == 0 {
		return "No subscription requests are waiting."
	}
	return ""
}

// requestValue is how a request is named in the form: the handle name,
// one space, the contact's bare JID (neither holds a space).
func requestValue(handle, contact string) string { return handle + " " + contact }

// requestLabel is how a request is shown in the form.
func (c *Component) requestLabel(handle, contact string) string {
	return fmt.Sprintf("%s wants to see %s", contact, c.handleBare(handle))
}

// requestsForm lists the requests waiting, as many as one answer holds
// (maxListed, maxListedBytes: strangers make them, up to 100 per handle).
func requestsForm(c *Component, owner string) *node {
	rf := required(field("list-multi", "requests", "Requests"))
	rs := c.roster.Requests(owner)
	shown, size := 0, 0
	for _, r := range rs {
		label, value := c.requestLabel(r.Handle, r.Contact), requestValue(r.Handle, r.Contact)
		if shown == maxListed || size+len(label)+len(value) > maxListedBytes {
			break
		}
		rf.add(option(label, value))
		shown++
		size += len(label) + len(value)
	}
	df := required(field("list-single", "decision", "Decision"))
	df.add(option("Approve: they see the handle's status", "approve"), option("Deny", "deny"))
	text := "Choose requests, then approve or deny them. Denied contacts are told no."
	if shown < len(rs) {
		text += fmt.Sprintf(" %d more are waiting: decide on these, then run the command again.", len(rs)-shown)
	}
	return dataForm("form", "Subscription requests", text, rf, df)
}

// decided gathers the outcomes of one submitted requests form, to say in
// one note what was done once every decision has its outcome.
type decided struct {
	decision                         string
	left                             int
	done                             commandDone
	ok, gone, limited, failed, saved []string
	err                              error
}

func (d *decided) add(what string, err error) {
	switch {
	case err == nil:
		d.ok = append(d.ok, what)
	case errors.Is(err, roster.ErrNotStored):
		d.ok = append(d.ok, what)
		d.saved = append(d.saved, what)
	case errors.Is(err, roster.ErrNotPending), errors.Is(err, roster.ErrUnknownHandle):
		d.gone = append(d.gone, what)
	case errors.Is(err, roster.ErrSubscriberLimit):
		d.limited = append(d.limited, what)
	default:
		d.failed = append(d.failed, what)
		d.err = err
	}
	if d.left--; d.left == 0 {
		d.finish()
	}
}

func (d *decided) finish() {
	if len(d.ok) == 0 && len(d.gone) == 0 && len(d.limited) == 0 && d.err != nil {
		d.done("", nil, d.err) // nothing changed
		return
	}
	var b strings.Builder
	verb := "Approved"
	if d.decision == "deny" {
		verb = "Denied"
	}
	list := func(head string, items []string) {
		if len(items) > 0 {
			fmt.Fprintf(&b, "%s: %s. ", head, strings.Join(items, ", "))
		}
	}
	list(verb, d.ok)
	list("Not pending any more", d.gone)
	list("Not approved: the handle has as many subscribers as it may", d.limited)
	list("Not done, as the service failed (try again later)", d.failed)
	if len(d.saved) > 0 {
		b.WriteString(notStoredYet)
	}
	d.done(strings.TrimSpace(b.String()), nil, nil)
}

func decideRequests(c *Component, owner string, f formValues, done commandDone) {
	decision := strings.TrimSpace(f.single("decision"))
	if decision != "approve" && decision != "deny" {
		done("", nil, refusal(condBadRequest(`Choose the decision: "approve" or "deny".`)))
		return
	}
	type choice struct{ handle, contact string }
	var chosen []choice
	seen := map[string]bool{}
	for _, v := range f["requests"] {
		h, contact, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || h == "" || contact == "" {
			done("", nil, refusal(condBadRequest(fmt.Sprintf("%q does not name a request: it must be the handle, one space, and the contact.", clip(v)))))
			return
		}
		if !seen[v] {
			seen[v] = true
			chosen = append(chosen, choice{h, contact})
		}
	}
	if len(chosen) == 0 {
		done("", nil, refusal(condBadRequest("Choose at least one request.")))
		return
	}
	d := &decided{decision: decision, left: len(chosen), done: done}
	for _, ch := range chosen {
		what := fmt.Sprintf("%s for %s", ch.contact, c.handleBare(ch.handle))
		if decision == "approve" {
			c.roster.Approve(owner, ch.handle, ch.contact, func(err error) {
				if err == nil {
					c.approved(ch.handle, ch.contact)
				}
				d.add(what, err)
			})
			continue
		}
		err := c.roster.Deny(owner, ch.handle, ch.contact, func(err error) { d.add(what, err) })
		if err != nil {
			d.add(what, err)
			continue
		}
		// The denial holds at once: the contact is told at once.
		c.out.Unsubscribed(ch.handle, ch.contact)
	}
}
