package main

// End-to-end scenarios of issue 9, the owner's control: chat commands (a
// message to the component's JID), per-contact blocking, per-handle
// visibility, and the subscribers of a handle with the removal of one.
// They run in every world after those of issue 8 (e2e_safety_test.go),
// through the same real servers and clients.
//
// Time: negative checks share one wait (expectNone), or need none when an
// answer the component sends later has come (it answers in order); users
// are few; afterStamp sleeps only what a fresh stamp needs to differ; and
// one clean restart serves both the blocking and the hidden handle checks
// (testBlocking). The stranger's chat command is checked in
// testOwnerDomains, whose daemon excludes the test users from owning.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"presenced/internal/xmpptest"
)

var controlScenarios = []scenario{
	{"ChatCommands", testChatCommands},
	{"SubscribersAndKick", testSubscribersAndKick},
	{"HandleVisibility", testHandleVisibility},
	{"Blocking", testBlocking},
}

// chatWords are the words of the chat front end, each of which help lists.
var chatWords = []string{"help", "status", "handles", "add", "remove", "requests", "approve", "deny",
	"subscribers", "kick", "block", "unblock", "blocked", "hide", "show"}

// controlNodes are the ad-hoc commands issue 9 added.
var controlNodes = []string{"subscribers", "remove-subscriber", "block", "unblock", "list-blocked", "set-visibility"}

// isRequestNotice matches the chat message that tells an owner of a
// subscription request (tellOwner), which is no answer to a command.
func isRequestNotice(e *xmpptest.Element) bool {
	return strings.Contains(e.ChildText("body"), " asks to see the presence of your handle ")
}

// isChatReply matches an answer of the component to a chat command: a
// chat message from the component's bare JID (chatMessage checks that it
// goes to the sender's full JID).
func (w *world) isChatReply() xmpptest.Matcher {
	return func(e *xmpptest.Element) bool {
		return e.Name.Local == "message" && e.Attr("type") == "chat" && strings.EqualFold(e.Attr("from"), w.domain) &&
			!isRequestNotice(e)
	}
}

// chatMessage sends text as a message of type typ ("" for none) to the
// component and returns the body of its answer, after checking the
// answer's type and addresses.
func (w *world) chatMessage(c *xmpptest.Client, typ, text string) string {
	w.t.Helper()
	ta := ""
	if typ != "" {
		ta = fmt.Sprintf(" type='%s'", typ)
	}
	c.MustSend(w.t, fmt.Sprintf(`<message%s to='%s'><body>%s</body></message>`, ta, w.domain, xmpptest.Escape(text)))
	m := c.Expect(w.t, wait, fmt.Sprintf("the answer to the chat command %q", text), w.isChatReply())
	if !strings.EqualFold(m.Attr("to"), c.JID()) {
		w.t.Fatalf("the answer to %q goes to %q, want the sender's full JID %s: %s", text, m.Attr("to"), c.JID(), m)
	}
	if m.Child("body") == nil {
		w.t.Fatalf("the answer to %q has no body: %s", text, m)
	}
	return m.ChildText("body")
}

// chat sends a chat command and returns the answer's text.
func (w *world) chat(c *xmpptest.Client, text string) string {
	w.t.Helper()
	return w.chatMessage(c, "chat", text)
}

// mustChat sends a chat command and checks that the answer is want.
func (w *world) mustChat(c *xmpptest.Client, text, want string) {
	w.t.Helper()
	if got := w.chat(c, text); got != want {
		w.t.Fatalf("chat %q: answer %q, want %q", text, got, want)
	}
}

// mustChatPrefix sends a chat command and checks that the answer starts
// with want; it returns the answer.
func (w *world) mustChatPrefix(c *xmpptest.Client, text, want string) string {
	w.t.Helper()
	got := w.chat(c, text)
	if !strings.HasPrefix(got, want) {
		w.t.Fatalf("chat %q: answer %q, want it to start with %q", text, got, want)
	}
	return got
}

// refusalText runs an ad-hoc command that must be refused with cond and
// returns the error's text.
func (w *world) refusalText(c *xmpptest.Client, node string, fields map[string]string, cond string) string {
	w.t.Helper()
	r := w.command(c, node, fields)
	if r.Attr("type") != "error" || xmpptest.StanzaErrorCondition(r) != cond {
		w.t.Fatalf("%s %v: got %s, want error %s", node, fields, r, cond)
	}
	text := r.Child("error").ChildText("text")
	if text == "" {
		w.t.Fatalf("%s %v: error without a text: %s", node, fields, r)
	}
	return text
}

// submitRefused submits fields to a session of node and returns the
// error's text, which must be of condition cond.
func (w *world) submitRefused(c *xmpptest.Client, node, fields, cond string) string {
	w.t.Helper()
	r := w.submit(c, node, w.executing(c, node), "complete", "submit", fields)
	if r.Attr("type") != "error" || xmpptest.StanzaErrorCondition(r) != cond {
		w.t.Fatalf("%s %s: got %s, want error %s", node, fields, r, cond)
	}
	text := r.Child("error").ChildText("text")
	if text == "" {
		w.t.Fatalf("%s %s: error without a text: %s", node, fields, r)
	}
	return text
}

// mustChatRefusal checks that a chat command is refused with the text of
// the ad-hoc command's error.
func (w *world) mustChatRefusal(c *xmpptest.Client, text, adhocText string) {
	w.t.Helper()
	w.mustChat(c, text, "Error: "+adhocText)
}

// commandForm executes node and returns its form, after checking that the
// command waits for it with a complete action.
func (w *world) commandForm(c *xmpptest.Client, node string) *xmpptest.Element {
	w.t.Helper()
	r := c.IQ(w.t, wait, "set", w.domain, fmt.Sprintf(`<command xmlns='%s' node='%s' action='execute'/>`, nsCommands, node))
	cmd := r.ChildNS(nsCommands, "command")
	x := cmd.ChildNS(nsData, "x")
	if r.Attr("type") != "result" || cmd.Attr("status") != "executing" || x == nil || x.Attr("type") != "form" {
		w.t.Fatalf("execute %s: %s, want a form", node, r)
	}
	if a := cmd.Child("actions"); a == nil || a.Child("complete") == nil {
		w.t.Fatalf("execute %s: no complete action: %s", node, r)
	}
	return x
}

// mustField returns the form's field name, which must be of type typ.
func (w *world) mustField(x *xmpptest.Element, name, typ string) *xmpptest.Element {
	w.t.Helper()
	f := formField(x, name)
	if f == nil || f.Attr("type") != typ {
		w.t.Fatalf("form without a %s field %q: %s", typ, name, x)
	}
	return f
}

// fieldValues lists the values of a field.
func fieldValues(f *xmpptest.Element) []string {
	var vs []string
	if f == nil {
		return nil
	}
	for _, v := range f.Children {
		if v.Name.Local == "value" {
			vs = append(vs, strings.TrimSpace(v.Text))
		}
	}
	return vs
}

// resultValues checks that a completed command holds a result form with
// a field name of type typ, and returns its values.
func (w *world) resultValues(cmd *xmpptest.Element, name, typ string) []string {
	w.t.Helper()
	x := cmd.ChildNS(nsData, "x")
	if x == nil || x.Attr("type") != "result" {
		w.t.Fatalf("completed without a result form: %s", cmd)
	}
	return fieldValues(w.mustField(x, name, typ))
}

// delayStamp returns the XEP-0203 stamp of an unavailable presence.
func (w *world) delayStamp(p *xmpptest.Element) string {
	w.t.Helper()
	d := p.ChildNS("urn:xmpp:delay", "delay")
	if d == nil || d.Attr("stamp") == "" {
		w.t.Fatalf("unavailable presence without a <delay/> stamp: %s", p)
	}
	return d.Attr("stamp")
}

// expectOffline waits for the next presence of hj, which must be
// unavailable with the stamp want ("" for any), and returns its stamp.
func (w *world) expectOffline(c *xmpptest.Client, hj, want, desc string) (*xmpptest.Element, string) {
	w.t.Helper()
	p := w.expectView(c, hj, "unavailable", "", desc)
	got := w.delayStamp(p)
	if want != "" && got != want {
		w.t.Fatalf("%s: stamped %s, want %s, the moment it stopped seeing the account: %s", desc, got, want, p)
	}
	return p, got
}

// tellsMore matches a presence from hj other than an unavailable one with
// the stamp it is left with: any other would tell that something
// happened.
func tellsMore(hj, stamp string) xmpptest.Matcher {
	return func(e *xmpptest.Element) bool {
		if e.Name.Local != "presence" || !strings.EqualFold(xmpptest.Bare(e.Attr("from")), hj) {
			return false
		}
		d := e.ChildNS("urn:xmpp:delay", "delay")
		return e.Attr("type") != "unavailable" || d == nil || d.Attr("stamp") != stamp ||
			e.Child("show") != nil || e.Child("status") != nil
	}
}

// claimRepeats claims the unavailable presences from hj with the stamp c
// is left with (a restart may send it again, which tells nothing) and
// returns how many there were.
func claimRepeats(c *xmpptest.Client, hj, stamp string) int {
	same := func(e *xmpptest.Element) bool { return isHandlePresence(hj)(e) && !tellsMore(hj, stamp)(e) }
	n := 0
	for c.Await(0, same) != nil {
		n++
	}
	return n
}

// expectShownAgain waits until c, withheld from the account since an
// unavailable presence stamped stamp, sees hj available with show, and
// checks that meanwhile it was sent nothing but that presence again (as a
// restart may), and nothing after. It returns how many repeats it got.
func (w *world) expectShownAgain(c *xmpptest.Client, hj, stamp, show, desc string) int {
	w.t.Helper()
	p := c.Expect(w.t, wait, desc, xmpptest.And(isHandlePresence(hj), func(e *xmpptest.Element) bool { return e.Attr("type") == "" }))
	checkFullJID(w.t, p, hj)
	if p.ChildText("show") != show {
		w.t.Fatalf("%s: got %s, want show %q", desc, p, show)
	}
	for _, e := range c.Backlog() {
		if tellsMore(hj, stamp)(e) || (isHandlePresence(hj)(e) && e.Seq() > p.Seq()) {
			w.t.Fatalf("%s: %s was sent, besides %s:\n%s", desc, c.Bare(), p, e)
		}
	}
	return claimRepeats(c, hj, stamp)
}

// expectIdle checks that the last activity c is told of hj is that of an
// account off-line for a second at least (afterStamp waited): not that of
// the on-line account.
func (w *world) expectIdle(c *xmpptest.Client, hj, who string) {
	w.t.Helper()
	r := c.IQ(w.t, wait, "get", hj, `<query xmlns='jabber:iq:last'/>`)
	q := r.ChildNS("jabber:iq:last", "query")
	if secs, err := strconv.Atoi(q.Attr("seconds")); r.Attr("type") != "result" || err != nil || secs < 1 {
		w.t.Fatalf("last activity of %s for %s: %s, want a result of 1 second or more, as off-line", hj, who, r)
	}
}

// afterStamp waits, if need be, until a fresh stamp would differ from one
// taken at since: stamps have whole seconds.
func afterStamp(since time.Time) {
	if d := 1100*time.Millisecond - time.Since(since); d > 0 {
		time.Sleep(d)
	}
}

// relogin closes c and logs its user in again with another resource, on-line:
// its server probes the handles it subscribes to.
func (w *world) relogin(c *xmpptest.Client) *xmpptest.Client {
	w.t.Helper()
	name, _, _ := strings.Cut(c.Bare(), "@")
	c.Close()
	c2 := w.login(name, "again")
	c2.MustSend(w.t, `<presence/>`)
	return c2
}

// subscribeOpen makes c subscribe to the open handle hj and returns the
// presence it is shown.
func (w *world) subscribeOpen(c *xmpptest.Client, hj string) *xmpptest.Element {
	w.t.Helper()
	w.sendSubscribe(c, hj)
	return w.expectApproved(c, hj)
}

// addHandle adds an open or ask handle to the owner c's account.
func (w *world) addHandle(c *xmpptest.Client, h, policy string) {
	w.t.Helper()
	w.mustComplete(c, "add-handle", map[string]string{"handle": h, "subscriptions": policy})
}

// statusLines sends the chat command status and returns the line of each
// handle after checking that the first line is about the status and every
// other line but the block count names a handle.
func (w *world) statusLines(c *xmpptest.Client) map[string]string {
	w.t.Helper()
	lines := strings.Split(w.chat(c, "status"), "\n")
	if !strings.HasPrefix(lines[0], "Your status is ") && !strings.HasPrefix(lines[0], "You are ") {
		w.t.Fatalf("status: first line %q does not say what the status is", lines[0])
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "You block ") {
			continue
		}
		hj, rest, ok := strings.Cut(l, ": ")
		if !ok || !strings.HasSuffix(hj, "@"+w.domain) {
			w.t.Fatalf("status: line %q names no handle JID", l)
		}
		out[hj] = rest
	}
	return out
}

// testChatCommands: the chat front end answers the owner's commands in
// chat messages to the sender's full JID, with the ad-hoc commands' rules
// and texts, and answers nothing to what is no command.
func testChatCommands(w *world) {
	t := w.t
	h, ha, ho := randomName("ch"), randomName("cha"), randomName("cho")
	hj, haj, hoj := w.handleJID(h), w.handleJID(ha), w.handleJID(ho)
	alice, _ := w.owner("alice", h)
	bob, _ := w.subscriber("bob", h)

	// The new ad-hoc commands are listed.
	r := alice.IQ(t, wait, "get", w.domain, `<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>`)
	listed := map[string]bool{}
	for _, it := range children(r.ChildNS("http://jabber.org/protocol/disco#items", "query")) {
		listed[it.Attr("node")] = it.Attr("jid") == w.domain
	}
	for _, n := range controlNodes {
		if !listed[n] {
			t.Errorf("command %s not listed: %s", n, r)
		}
	}

	// help, in any case, lists every word, one usage line each.
	help := w.chat(alice, "HeLp")
	for _, word := range chatWords {
		found := false
		for _, l := range strings.Split(help, "\n") {
			found = found || strings.HasPrefix(l, word+" ") || strings.HasPrefix(l, word+":")
		}
		if !found {
			t.Errorf("help lists no line for %q:\n%s", word, help)
		}
	}
	w.mustChat(alice, "frobnicate now", `Error: Unknown command "frobnicate". Send "help" for the list of commands.`)
	// A message of type normal, or of no type, is a command too.
	handles := w.chatMessage(alice, "normal", "handles")
	if handles != "You hold 1 handle.\n"+h {
		t.Fatalf("handles: %q, want the one handle %s", handles, h)
	}
	if got := w.chatMessage(alice, "", "HANDLES"); got != handles {
		t.Fatalf("handles in a message without a type: %q, want %q", got, handles)
	}

	// add (NAME or NAME@DOMAIN; ask unless open), remove.
	w.mustChatPrefix(alice, "add "+strings.ToUpper(ha)+"@"+w.domain, "Added the handle "+haj+":")
	w.mustChatPrefix(alice, "ADD "+ho+" OPEN", "Added the handle "+hoj+":")
	if p := w.policyOf(alice, ha); p != "asks you about each request" {
		t.Fatalf("a handle added without open: %s, want it to ask", p)
	}
	if p := w.policyOf(alice, ho); p != "approves everyone" {
		t.Fatalf("a handle added with open: %s, want it to approve everyone", p)
	}
	if got := w.chat(alice, "handles"); !sameSet(strings.Split(got, "\n")[1:], []string{h, ha, ho}) {
		t.Fatalf("handles after adding two: %q", got)
	}
	w.mustChat(alice, "remove "+hoj, "Removed the handle "+hoj+".")
	w.mustChatRefusal(alice, "remove "+ho, w.refusalText(alice, "remove-handle", map[string]string{"handle": ho}, "item-not-found"))
	w.mustChatRefusal(alice, "add a@b", w.refusalText(alice, "add-handle", map[string]string{"handle": "a@b"}, "jid-malformed"))

	// status: the account's status, then one line per handle.
	lines := w.statusLines(alice)
	if len(lines) != 2 || !strings.HasPrefix(lines[hj], "shown") || !strings.HasPrefix(lines[haj], "shown") {
		t.Fatalf("status lists %q, want %s and %s shown", lines, hj, haj)
	}
	// status WORD sets the status as set-status does, with its note.
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.expectView(bob, hj, "", "dnd", "the client's own dnd")
	away := w.chat(alice, "STATUS Away")
	w.expectView(bob, hj, "", "away", "status away")
	if note := w.mustComplete(alice, "set-status", map[string]string{"status": "away"}).ChildText("note"); note != away {
		t.Fatalf("status away answered %q, set-status away %q", away, note)
	}
	w.mustChat(alice, "status hiding", "You are hiding: all of your handles appear off-line.")
	w.expectView(bob, hj, "unavailable", "", "status hiding")
	// "visible" (a new set-status option): the status the clients show.
	if opts := optionValues(w.mustField(w.commandForm(alice, "set-status"), "status", "list-single")); !slices.Contains(opts, "visible") {
		t.Fatalf("set-status offers %q, want visible among them", opts)
	}
	w.mustChatPrefix(alice, "status visible", "You are visible again")
	w.expectView(bob, hj, "", "dnd", "status visible: the client's dnd")
	w.mustChat(alice, "status busy", "Your status is now busy on all of your handles.")
	w.mustChat(alice, "status undefined", "Your status is now available on all of your handles.")
	w.expectView(bob, hj, "", "", "status undefined")
	w.mustComplete(alice, "set-status", map[string]string{"status": "hiding"})
	w.expectView(bob, hj, "unavailable", "", "set-status hiding")
	w.mustComplete(alice, "set-status", map[string]string{"status": "visible"})
	w.expectView(bob, hj, "", "dnd", "set-status visible: the client's dnd")
	w.mustChatRefusal(alice, "status asleep", w.refusalText(alice, "set-status", map[string]string{"status": "asleep"}, "bad-request"))

	// requests, numbered; approve N, deny CONTACT HANDLE.
	carol, dave := w.contact("carol"), w.contact("dave")
	for _, c := range []*xmpptest.Client{carol, dave} {
		w.sendSubscribe(c, haj)
		alice.Expect(t, wait, "the owner told of a request", w.isRequestMessage(c.Bare(), haj))
	}
	// numbers runs requests, which must list the two contacts' requests
	// to haj, and returns the number of each.
	numbers := func(a, b *xmpptest.Client) map[string]string {
		t.Helper()
		list := strings.Split(w.chat(alice, "requests"), "\n")
		if list[0] != "2 subscription requests are waiting:" {
			t.Fatalf("requests: first line %q", list[0])
		}
		number := map[string]string{}
		for _, l := range list[1:] {
			n, label, ok := strings.Cut(l, ". ")
			if _, err := strconv.Atoi(n); !ok || err != nil {
				continue
			}
			contact, rest, _ := strings.Cut(label, " ")
			if rest != "wants to see "+haj {
				t.Fatalf("requests: line %q, want \"N. CONTACT wants to see %s\"", l, haj)
			}
			number[contact] = n
		}
		if len(number) != 2 || number[a.Bare()] == "" || number[b.Bare()] == "" {
			t.Fatalf("requests lists %v, want %s's and %s's:\n%s", number, a.Bare(), b.Bare(), strings.Join(list, "\n"))
		}
		return number
	}
	number := numbers(carol, dave)
	w.mustChat(alice, "approve "+number[carol.Bare()], fmt.Sprintf("Approved: %s for %s.", carol.Bare(), haj))
	if p := w.expectApproved(carol, haj); p.Attr("type") != "" || p.ChildText("show") != "dnd" {
		t.Fatalf("approved by chat, carol sees %s, want the owner busy", p)
	}
	w.mustChat(alice, "Deny "+dave.Bare()+" "+ha, fmt.Sprintf("Denied: %s for %s.", dave.Bare(), haj))
	dave.Expect(t, wait, "unsubscribed after a denial by chat", fromBareHandle(haj, "unsubscribed"))
	// deny N, and approve CONTACT with no handle (its requests to every
	// handle).
	erin, frank := w.contact("erin"), w.contact("frank")
	for _, c := range []*xmpptest.Client{erin, frank} {
		w.sendSubscribe(c, haj)
		alice.Expect(t, wait, "the owner told of a request", w.isRequestMessage(c.Bare(), haj))
	}
	number = numbers(erin, frank)
	w.mustChat(alice, "deny "+number[erin.Bare()], fmt.Sprintf("Denied: %s for %s.", erin.Bare(), haj))
	erin.Expect(t, wait, "unsubscribed after a denial by number", fromBareHandle(haj, "unsubscribed"))
	w.mustChat(alice, "APPROVE "+frank.Bare(), fmt.Sprintf("Approved: %s for %s.", frank.Bare(), haj))
	w.expectApproved(frank, haj)
	w.mustChat(alice, "requests", "No subscription requests are waiting.")
	w.mustList(alice)
	w.mustChatPrefix(alice, "approve 1", "Error: ")

	// No answer to an error, a headline, or a message without a body.
	alice.MustSend(t, fmt.Sprintf(`<message type='error' to='%s'><body>help</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, w.domain))
	alice.MustSend(t, fmt.Sprintf(`<message type='headline' to='%s'><body>help</body></message>`, w.domain))
	alice.MustSend(t, fmt.Sprintf(`<message type='chat' to='%s'><active xmlns='http://jabber.org/protocol/chatstates'/></message>`, w.domain))
	// The component answers in order: an answer to any of those would
	// come before the answer to the next command.
	w.mustChat(alice, "blocked", "You block nobody.")
	alice.ExpectNone(t, 0, "an answer to an error, a headline or a message without a body", func(e *xmpptest.Element) bool {
		return e.Name.Local == "message" && strings.EqualFold(xmpptest.Bare(e.Attr("from")), w.domain) && !isRequestNotice(e)
	})
}

// children lists the children of e, or nothing when e is nil.
func children(e *xmpptest.Element) []*xmpptest.Element {
	if e == nil {
		return nil
	}
	return e.Children
}

// policyOf returns the policy words of handle h in the chat status.
func (w *world) policyOf(c *xmpptest.Client, h string) string {
	w.t.Helper()
	l, ok := w.statusLines(c)[w.handleJID(h)]
	if !ok {
		w.t.Fatalf("status does not list %s", w.handleJID(h))
	}
	parts := strings.Split(l, ", ")
	if len(parts) < 2 {
		w.t.Fatalf("status line of %s: %q, want visibility, policy, subscribers", h, l)
	}
	return parts[1]
}

// testSubscribersAndKick: the owner lists who subscribes to a handle and
// ends one subscription (ad-hoc remove-subscriber, chat kick): the
// contact sees the handle go off-line, then learns that the subscription
// ended, and sees nothing more. Another account's handle and an unknown
// one are refused alike.
func testSubscribersAndKick(w *world) {
	t := w.t
	h, h2, m := randomName("sk"), randomName("sk2"), randomName("skm")
	hj, hj2 := w.handleJID(h), w.handleJID(h2)
	alice, _ := w.owner("alice", h)
	w.addHandle(alice, h2, "open")
	mallory, _ := w.user("mallory")
	w.addHandle(mallory, m, "open")
	bob, _ := w.subscriber("bob", h)
	w.subscribeOpen(bob, hj2)
	carol, _ := w.subscriber("carol", h)

	// subscribers: a choice of the owner's handles, then a jid-multi.
	f := w.mustField(w.commandForm(alice, "subscribers"), "handle", "list-single")
	if got := optionValues(f); !sameSet(got, []string{h, h2}) {
		t.Fatalf("subscribers offers %q, want the owner's handles %s and %s", got, h, h2)
	}
	cmd := w.mustComplete(alice, "subscribers", map[string]string{"handle": h})
	if got := w.resultValues(cmd, "subscribers", "jid-multi"); !sameSet(got, []string{bob.Bare(), carol.Bare()}) {
		t.Fatalf("subscribers of %s: %q, want bob and carol: %s", h, got, cmd)
	}
	if note := cmd.ChildText("note"); note != hj+" has 2 subscribers." {
		t.Fatalf("subscribers note %q", note)
	}
	sorted := []string{bob.Bare(), carol.Bare()}
	slices.Sort(sorted)
	w.mustChat(alice, "subscribers "+hj, hj+" has 2 subscribers.\n"+strings.Join(sorted, "\n"))
	all := w.chat(alice, "subscribers")
	for _, want := range []string{hj + " has 2 subscribers.\n" + strings.Join(sorted, "\n"), hj2 + " has 1 subscriber.\n" + bob.Bare()} {
		if !strings.Contains(all, want) {
			t.Fatalf("subscribers of every handle: %q, want it to hold %q", all, want)
		}
	}
	// Another account's handle and an unknown one: the same refusal.
	unknown := randomName("skx")
	other := w.refusalText(alice, "subscribers", map[string]string{"handle": m}, "item-not-found")
	none := w.refusalText(alice, "subscribers", map[string]string{"handle": unknown}, "item-not-found")
	if strings.ReplaceAll(other, m, "X") != strings.ReplaceAll(none, unknown, "X") {
		t.Fatalf("subscribers tells another account's handle from an unknown one: %q, %q", other, none)
	}
	w.mustChatRefusal(alice, "subscribers "+m, other)

	// remove-subscriber: a handle, a contact.
	x := w.commandForm(alice, "remove-subscriber")
	if got := optionValues(w.mustField(x, "handle", "list-single")); !sameSet(got, []string{h, h2}) {
		t.Fatalf("remove-subscriber offers %q, want the owner's handles", got)
	}
	w.mustField(x, "contact", "jid-single")
	for _, bad := range []struct {
		fields map[string]string
		cond   string
	}{
		{map[string]string{"handle": m, "contact": bob.Bare()}, "item-not-found"},
		{map[string]string{"handle": h2, "contact": carol.Bare()}, "item-not-found"}, // not subscribed
		{map[string]string{"handle": h, "contact": "a@b@c"}, "jid-malformed"},
	} {
		w.mustRefuse(alice, "remove-subscriber", bad.fields, bad.cond)
	}
	note := w.mustComplete(alice, "remove-subscriber", map[string]string{"handle": h, "contact": carol.Bare()}).ChildText("note")
	if !strings.HasPrefix(note, "Removed "+carol.Bare()+" from the subscribers of "+hj) {
		t.Fatalf("remove-subscriber note %q", note)
	}
	w.expectKicked(carol, hj)
	w.mustRefuse(alice, "remove-subscriber", map[string]string{"handle": h, "contact": carol.Bare()}, "item-not-found")

	// kick CONTACT HANDLE, then kick CONTACT: from every handle left.
	w.mustChatPrefix(alice, "kick "+bob.Bare()+" "+h2, "Removed "+bob.Bare()+" from the subscribers of "+hj2+":")
	w.expectKicked(bob, hj2)
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(bob, hj, "", "away", "bob still subscribes to the other handle")
	w.mustChatPrefix(alice, "KICK "+bob.Bare(), "Removed "+bob.Bare()+" from the subscribers of "+hj+":")
	w.expectKicked(bob, hj)
	w.mustChat(alice, "kick "+bob.Bare(), "Error: "+bob.Bare()+" subscribes to none of your handles.")
	w.mustChat(alice, "subscribers "+h, hj+" has 0 subscribers.")
	if got := w.resultValues(w.mustComplete(alice, "subscribers", map[string]string{"handle": h2}), "subscribers", "jid-multi"); len(got) != 0 {
		t.Fatalf("subscribers of %s after the kick: %q", h2, got)
	}
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.expectNone(
		absence{bob, "presence after being kicked", anyPresenceFrom(hj)},
		absence{bob, "presence after being kicked", anyPresenceFrom(hj2)},
		absence{carol, "presence after being removed", anyPresenceFrom(hj)},
	)
	for _, c := range []*xmpptest.Client{bob, carol} {
		if r := c.IQ(t, wait, "get", hj, `<query xmlns='jabber:iq:last'/>`); xmpptest.StanzaErrorCondition(r) != "service-unavailable" {
			t.Fatalf("a removed subscriber still subscribes: last activity for %s: %s", c.Bare(), r)
		}
	}
}

// expectKicked checks what a removed subscriber gets: unavailable with a
// stamp from the handle's full JID, then unsubscribed from its bare JID.
func (w *world) expectKicked(c *xmpptest.Client, hj string) {
	w.t.Helper()
	p, _ := w.expectOffline(c, hj, "", "unavailable from "+hj+" on removal")
	u := c.Expect(w.t, wait, "unsubscribed from "+hj+" on removal", fromBareHandle(hj, "unsubscribed"))
	if u.Seq() < p.Seq() {
		w.t.Fatalf("%s: unsubscribed came before unavailable:\n%s\n%s", c.Bare(), u, p)
	}
}

// testHandleVisibility: a hidden handle looks off-line to all of its
// subscribers, exactly like an off-line account and with a stamp that
// never moves, while the account's other handles follow its status;
// showing it shows the current state. (That it holds across a restart is
// checked in testBlocking, which restarts the daemon once for both.)
func testHandleVisibility(w *world) {
	t := w.t
	h1, h2, h3, m := randomName("vis"), randomName("vis2"), randomName("vis3"), randomName("vism")
	hj1, hj2, hj3 := w.handleJID(h1), w.handleJID(h2), w.handleJID(h3)
	alice, _ := w.owner("alice", h1)
	w.addHandle(alice, h2, "open")
	w.addHandle(alice, h3, "open")
	mallory, _ := w.user("mallory")
	w.addHandle(mallory, m, "open")
	bob, _ := w.subscriber("bob", h1)
	w.subscribeOpen(bob, hj2)
	w.subscribeOpen(bob, hj3)
	hideOrShow := func(visibility string, handles ...string) string {
		t.Helper()
		r := w.submit(alice, "set-visibility", w.executing(alice, "set-visibility"), "complete", "submit",
			fieldXML("handles", handles...)+fieldXML("visibility", visibility))
		return mustBeCompleted(w, r, fmt.Sprintf("set-visibility %s %v", visibility, handles)).ChildText("note")
	}

	// set-visibility: handles (list-multi of the owner's), visibility.
	x := w.commandForm(alice, "set-visibility")
	if got := optionValues(w.mustField(x, "handles", "list-multi")); !sameSet(got, []string{h1, h2, h3}) {
		t.Fatalf("set-visibility offers the handles %q, want %s, %s and %s", got, h1, h2, h3)
	}
	if got := optionValues(w.mustField(x, "visibility", "list-single")); !sameSet(got, []string{"shown", "hidden"}) {
		t.Fatalf("set-visibility offers the visibilities %q, want shown and hidden", got)
	}
	if note := hideOrShow("hidden", h1); !strings.HasPrefix(note, "Hidden: "+hj1+".") {
		t.Fatalf("set-visibility hidden: note %q", note)
	}
	hidden, s1 := w.expectOffline(bob, hj1, "", "the handle hidden")
	lines := w.statusLines(alice)
	if !strings.HasPrefix(lines[hj1], "hidden (appears off-line)") || !strings.HasPrefix(lines[hj2], "shown") {
		t.Fatalf("status after hiding %s: %q", h1, lines)
	}

	// The other handles follow every change; the hidden one shows none.
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(bob, hj2, "", "away", "another handle follows away")
	w.expectView(bob, hj3, "", "away", "another handle follows away")
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.expectView(bob, hj2, "", "dnd", "another handle follows dnd")
	w.expectView(bob, hj3, "", "dnd", "another handle follows dnd")
	alice.MustSend(t, `<presence type='unavailable'/>`)
	offline, off := w.expectOffline(bob, hj2, "", "another handle follows off-line")
	w.expectOffline(bob, hj3, off, "another handle follows off-line")
	if shape(hidden) != shape(offline) {
		t.Fatalf("a hidden handle looks different from an off-line one:\n%s\n%s", hidden, offline)
	}
	// Hidden while the account is off-line: nothing to send; it keeps the
	// off-line stamp when the owner comes back.
	offAt := time.Now()
	hideOrShow("hidden", h2)
	alice.MustSend(t, `<presence/>`)
	w.expectView(bob, hj3, "", "", "another handle follows on-line")
	w.mustComplete(alice, "set-status", map[string]string{"status": "hiding"})
	w.expectView(bob, hj3, "unavailable", "", "another handle follows hiding")
	w.mustComplete(alice, "set-status", map[string]string{"status": "visible"})
	w.expectView(bob, hj3, "", "", "another handle follows visible")
	// Probes of the hidden handles: off-line, stamped when they stopped
	// showing the account.
	afterStamp(offAt)
	bob.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj1))
	bob.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj2))
	w.expectOffline(bob, hj1, s1, "the hidden handle's answer to a probe")
	w.expectOffline(bob, hj2, off, "the answer to a probe of the handle hidden while off-line")
	w.expectIdle(bob, hj1, "a subscriber of a hidden handle")
	// The component's stanzas to bob come in order: what the owner's
	// changes made it send came before the answers to the probes.
	bob.ExpectNone(t, 0, "a change of the owner on a hidden handle", anyPresenceFrom(hj1))
	bob.ExpectNone(t, 0, "a change of the owner on a hidden handle", anyPresenceFrom(hj2))

	// show (chat, by JID; ad-hoc): the current state at once.
	w.mustChat(alice, "show "+strings.ToUpper(hj1), "Shown: "+hj1+". It follows your status again.")
	w.expectView(bob, hj1, "", "", "the handle shown again")
	if note := hideOrShow("shown", h2); note != "Shown: "+hj2+". It follows your status again." {
		t.Fatalf("set-visibility shown: note %q", note)
	}
	w.expectView(bob, hj2, "", "", "the handle hidden while off-line shown again")

	// Several at once: hide (chat), show (ad-hoc).
	w.mustChatPrefix(alice, "hide "+h1+" "+h2, "Hidden: "+hj1+", "+hj2+".")
	_, both := w.expectOffline(bob, hj1, "", "hidden with another")
	w.expectOffline(bob, hj2, both, "hidden with another")
	w.mustChatPrefix(alice, "hide "+h2, "Hidden: "+hj2+".") // already: nothing changes
	hideOrShow("shown", h1, h2)
	w.expectView(bob, hj1, "", "", "shown with another")
	w.expectView(bob, hj2, "", "", "shown with another")

	// Shown while the owner hides: its subscribers are sent nothing (a new
	// stamp then would tell them that the owner is active) and keep the
	// hidden handle's stamp; they see the owner once visible again.
	w.mustChatPrefix(alice, "hide "+h1, "Hidden: "+hj1+".")
	_, hidAt := w.expectOffline(bob, hj1, "", "hidden while visible")
	afterStamp(time.Now())
	w.mustChat(alice, "status hiding", "You are hiding: all of your handles appear off-line.")
	_, hidingAt := w.expectOffline(bob, hj2, "", "the owner hiding")
	w.expectOffline(bob, hj3, hidingAt, "the owner hiding")
	if hidingAt == hidAt {
		t.Fatalf("the handle hidden and the owner hiding a second apart are both stamped %s", hidAt)
	}
	afterStamp(time.Now())
	w.mustChatPrefix(alice, "show "+h1, "Shown: "+hj1+".")
	bob.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj1))
	// The answer to the probe is the first presence from hj1 since: had
	// showing it sent one, it would have come first.
	w.expectOffline(bob, hj1, hidAt, "a handle shown while the owner hides, probed")
	w.mustChatPrefix(alice, "status visible", "You are visible again")
	w.expectView(bob, hj1, "", "", "shown while hiding, the owner visible again")
	w.expectView(bob, hj2, "", "", "the owner visible again")
	w.expectView(bob, hj3, "", "", "the owner visible again")

	// Refusals change nothing: a bad visibility, another account's handle
	// or an unknown one (the same text), even beside one's own.
	w.submitRefused(alice, "set-visibility", fieldXML("handles", h1)+fieldXML("visibility", "invisible"), "bad-request")
	unknown := randomName("visx")
	other := w.submitRefused(alice, "set-visibility", fieldXML("handles", h1, m)+fieldXML("visibility", "hidden"), "item-not-found")
	none := w.submitRefused(alice, "set-visibility", fieldXML("handles", unknown)+fieldXML("visibility", "hidden"), "item-not-found")
	if strings.ReplaceAll(other, m, "X") != strings.ReplaceAll(none, unknown, "X") {
		t.Fatalf("set-visibility tells another account's handle from an unknown one: %q, %q", other, none)
	}
	w.mustChatRefusal(alice, "hide "+m, other)
	w.expectNone(
		absence{bob, "a change after refused set-visibility", anyPresenceFrom(hj1)},
		absence{bob, "a change after refused set-visibility", anyPresenceFrom(hj2)},
		absence{bob, "a change after refused set-visibility", anyPresenceFrom(hj3)},
	)
}

// testBlocking: a blocked contact sees every handle of the account
// exactly as off-line, whatever the account does: at once, in answer to
// its probes, across a restart and its reconnection, with the stamp of
// the moment it stopped seeing the account; its new requests are dropped
// unheard; its subscriptions stay, and unblocking shows it the current
// state. The same restart checks that a hidden handle stays hidden.
func testBlocking(w *world) {
	t := w.t
	h, h2, ha, hv := randomName("bl"), randomName("bl2"), randomName("bla"), randomName("blv")
	hj, hj2, haj, hvj := w.handleJID(h), w.handleJID(h2), w.handleJID(ha), w.handleJID(hv)
	alice, _ := w.owner("alice", h)
	w.addHandle(alice, h2, "open")
	w.addHandle(alice, ha, "ask")
	w.addHandle(alice, hv, "open")
	bob, _ := w.subscriber("bob", h) // to be blocked
	w.subscribeOpen(bob, hj2)
	carol, _ := w.subscriber("carol", h) // sees every change
	frank, _ := w.subscriber("frank", h) // blocked while the account is off-line
	erin, _ := w.subscriber("erin", hv)  // subscribes to the hidden handle
	dave := w.contact("dave")            // asks while bob is blocked

	w.mustField(w.commandForm(alice, "block"), "contact", "jid-single")
	blockedAt := time.Now()
	note := w.mustComplete(alice, "block", map[string]string{"contact": bob.Bare()}).ChildText("note")
	if !strings.HasPrefix(note, "Blocked "+bob.Bare()+":") {
		t.Fatalf("block: note %q", note)
	}
	blocked, stamp := w.expectOffline(bob, hj, "", "off-line at once when blocked")
	w.expectOffline(bob, hj2, stamp, "the other handle off-line at once when blocked")
	w.mustChat(alice, "block "+bob.Bare(), bob.Bare()+" was blocked already; nothing changed.")
	cmd := w.mustComplete(alice, "list-blocked", nil)
	if got := w.resultValues(cmd, "blocked", "jid-multi"); !slices.Equal(got, []string{bob.Bare()}) || cmd.ChildText("note") != "You block 1 contact." {
		t.Fatalf("list-blocked: %s, want bob alone", cmd)
	}
	w.mustChat(alice, "blocked", "You block 1 contact.\n"+bob.Bare())
	w.mustChatPrefix(alice, "hide "+hv, "Hidden: "+hvj+".")
	_, hvStamp := w.expectOffline(erin, hvj, "", "the hidden handle off-line")
	if subs := w.chat(alice, "subscribers "+h); !slices.Contains(strings.Split(subs, "\n"), bob.Bare()) {
		t.Fatalf("a blocked contact lost its subscription: %q", subs)
	}

	// Every change of the owner: carol sees it, bob nothing.
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(carol, hj, "", "away", "away")
	w.expectView(frank, hj, "", "away", "away")
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.expectView(carol, hj, "", "dnd", "dnd")
	w.expectView(frank, hj, "", "dnd", "dnd")
	alice.MustSend(t, `<presence type='unavailable'/>`)
	offline, _ := w.expectOffline(carol, hj, "", "off-line")
	if shape(blocked) != shape(offline) {
		t.Fatalf("blocked looks different from off-line:\n%s\n%s", blocked, offline)
	}
	_, frankStamp := w.expectOffline(frank, hj, "", "off-line")
	// frank has the unavailable presence blocking leaves him with: he is
	// sent nothing.
	w.mustComplete(alice, "block", map[string]string{"contact": frank.Bare()})
	alice.MustSend(t, `<presence/>`)
	w.expectView(carol, hj, "", "", "on-line again")
	w.mustComplete(alice, "set-status", map[string]string{"status": "hiding"})
	w.expectView(carol, hj, "unavailable", "", "hiding")
	w.mustComplete(alice, "set-status", map[string]string{"status": "visible"})
	w.expectView(carol, hj, "", "", "visible again")
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(carol, hj, "", "away", "away again")

	// A blocked contact's request is dropped unheard; another's is told.
	w.sendSubscribe(bob, haj)
	w.sendSubscribe(dave, haj)
	alice.Expect(t, wait, "the owner told of dave's request", w.isRequestMessage(dave.Bare(), haj))
	// A probe after a reconnection: the stamp of the block.
	afterStamp(blockedAt)
	bob2 := w.relogin(bob)
	w.expectOffline(bob2, hj, stamp, "probe answer after reconnecting, blocked")
	w.expectOffline(bob2, hj2, stamp, "probe answer after reconnecting, blocked")
	w.expectIdle(bob2, hj, "a blocked subscriber")
	w.expectNone(
		absence{bob, "a change of a blocking owner", anyPresenceFrom(hj)},
		absence{bob, "a change of a blocking owner", anyPresenceFrom(hj2)},
		absence{bob2, "more than off-line for a blocked contact", tellsMore(hj, stamp)},
		absence{bob2, "more than off-line for a blocked contact", tellsMore(hj2, stamp)},
		absence{bob, "an answer to a blocked contact's request", anyPresenceFrom(haj)},
		absence{frank, "a change of a blocking owner", anyPresenceFrom(hj)},
		absence{erin, "a change of the owner on a hidden handle", anyPresenceFrom(hvj)},
		absence{alice, "a message about a blocked contact's request", w.isRequestMessage(bob.Bare(), haj)},
	)
	w.mustChat(alice, "requests", fmt.Sprintf("1 subscription request is waiting:\n1. %s wants to see %s\n%s",
		dave.Bare(), haj, `Answer with "approve N" or "deny N" (several numbers may follow), or "approve CONTACT".`))
	w.mustList(alice, requestValue(ha, dave.Bare()))

	// Across a clean restart: blocked and hidden stay, stamps and all.
	w.d.stop()
	w.expectView(carol, hj, "unavailable", "", "withdrawn at shutdown")
	w.d = startDaemon(t, w.parent, w.cfg)
	w.expectView(carol, hj, "", "away", "back after the restart")
	frank2 := w.relogin(frank)
	w.expectOffline(frank2, hj, frankStamp, "probe answer after a restart, blocked while off-line")
	erin.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hvj))
	w.expectOffline(erin, hvj, hvStamp, "probe answer after a restart, hidden")

	// Unblocking: the current state at once. (Until then, after the
	// restart, nothing but the same unavailable presence: checked as each
	// is shown the account again.)
	w.mustField(w.commandForm(alice, "unblock"), "contact", "jid-single")
	note = w.mustComplete(alice, "unblock", map[string]string{"contact": bob.Bare()}).ChildText("note")
	if !strings.HasPrefix(note, "Unblocked "+bob.Bare()+":") {
		t.Fatalf("unblock: note %q", note)
	}
	repeats := w.expectShownAgain(bob2, hj, stamp, "away", "unblocked")
	repeats += w.expectShownAgain(bob2, hj2, stamp, "away", "unblocked")
	notBlocked := w.refusalText(alice, "unblock", map[string]string{"contact": bob.Bare()}, "item-not-found")
	if want := bob.Bare() + " is not blocked."; notBlocked != want {
		t.Fatalf("unblock of one not blocked: text %q, want %q", notBlocked, want)
	}
	w.mustChatRefusal(alice, "unblock "+bob.Bare(), notBlocked)
	w.mustChat(alice, "blocked", "You block 1 contact.\n"+frank.Bare())
	w.mustChatPrefix(alice, "UNBLOCK "+frank.Bare(), "Unblocked "+frank.Bare()+":")
	frankRepeats := w.expectShownAgain(frank2, hj, frankStamp, "away", "unblocked by chat")
	w.mustChat(alice, "blocked", "You block nobody.")
	cmd = w.mustComplete(alice, "list-blocked", nil)
	if got := w.resultValues(cmd, "blocked", "jid-multi"); len(got) != 0 || cmd.ChildText("note") != "You block nobody." {
		t.Fatalf("list-blocked after unblocking: %s", cmd)
	}
	w.mustChat(alice, "show "+hv, "Shown: "+hvj+". It follows your status again.")
	erinRepeats := w.expectShownAgain(erin, hvj, hvStamp, "away", "the hidden handle shown after a restart")
	t.Logf("after the restart, the same unavailable presence again: %d to bob, %d to frank, %d to erin", repeats, frankRepeats, erinRepeats)
	w.mustChatRefusal(alice, "block a@b@c", w.refusalText(alice, "block", map[string]string{"contact": "a@b@c"}, "jid-malformed"))
	alice.MustSend(t, `<presence><show>dnd</show></presence>`)
	w.expectView(bob2, hj, "", "dnd", "unblocked: every change again")
	w.expectView(frank2, hj, "", "dnd", "unblocked: every change again")
}
