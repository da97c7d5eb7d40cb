package component

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The chat front end and the owner's control (blocking, visibility,
// subscribers), with the fake server.

// chat sends body from from to the component and returns the text of the
// chat answer.
func chat(t *testing.T, tc *testComponent, from, body string) string {
	t.Helper()
	tc.send(`<message type='chat' from='%s' to='%s'><body>%s</body></message>`, from, testDomain, escapeText(body))
	r := tc.expect("a chat answer to "+body, isStanza("message", "chat", testDomain, from))
	return r.child("", "body").text
}

func escapeText(s string) string { return string(appendEscaped(nil, s, false)) }

func wantText(t *testing.T, what, got string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(got, p) {
			t.Fatalf("%s: %q does not say %q", what, got, p)
		}
	}
}

func TestChatCommands(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/phone"
	help := chat(t, tc, me, "help")
	for _, ch := range chatCommands {
		wantText(t, "help", help, ch.usage)
	}
	got := chat(t, tc, me, "frobnicate now")
	if got != `Error: Unknown command "frobnicate". Send "help" for the list of commands.` {
		t.Fatalf("unknown word: %q", got)
	}
	wantText(t, "status before any handle", chat(t, tc, me, "status"), "no handles")
	wantText(t, "add", chat(t, tc, me, "ADD Work open"), "Added the handle work@"+testDomain)
	wantText(t, "add twice", chat(t, tc, me, "add work"), "already yours")
	wantText(t, "add as a JID", chat(t, tc, me, "add home@"+testDomain), "Added the handle home@")
	wantText(t, "bad name", chat(t, tc, me, "add a@b@c"), "Error: ", "not a valid handle name")
	wantText(t, "usage", chat(t, tc, me, "add"), "Error: Usage: add NAME")
	wantText(t, "handles", chat(t, tc, me, "handles"), "2 handles", "\nhome", "\nwork")
	wantText(t, "status away", chat(t, tc, me, "Status AWAY"), "now away")
	wantText(t, "bad status", chat(t, tc, me, "status sleepy"), "Error: Unknown status")
	wantText(t, "hide", chat(t, tc, me, "hide work"), "Hidden: work@"+testDomain)
	report := chat(t, tc, me, "status")
	wantText(t, "status", report, "away", "work@"+testDomain+": hidden", "home@"+testDomain+": shown", "approves everyone")
	wantText(t, "show", chat(t, tc, me, "show work@"+testDomain), "Shown: work@")
	wantText(t, "hide another's", chat(t, tc, me, "hide nobody"), `Error: You have no handle named "nobody".`)
	wantText(t, "remove", chat(t, tc, me, "remove home"), "Removed the handle home@")
	wantText(t, "blocked", chat(t, tc, me, "blocked"), "You block nobody.")

	// The answer keeps the thread.
	tc.send(`<message type='chat' from='%s' to='%s'><thread>t-1</thread><body>handles</body></message>`, me, testDomain)
	r := tc.expect("an answer in the thread", isStanza("message", "chat", testDomain, me))
	if th := r.child("", "thread"); th == nil || th.text != "t-1" {
		t.Fatalf("the answer left the thread: %s", r)
	}
}

func TestChatAnswersNoLoopAndNoStranger(t *testing.T) {
	tc := startTestComponent(t, "")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "h", "subscriptions": "open"}))
	tc.reset()
	h := "h@" + testDomain
	for _, m := range []string{
		`<message type='error' from='` + alice + `/pc' to='` + testDomain + `'><body>help</body></message>`,
		`<message type='headline' from='` + alice + `/pc' to='` + testDomain + `'><body>help</body></message>`,
		`<message type='chat' from='` + alice + `/pc' to='` + testDomain + `'><active xmlns='http://jabber.org/protocol/chatstates'/></message>`,
		`<message type='chat' from='` + h + `/x' to='` + testDomain + `'><body>help</body></message>`,
		`<message type='chat' from='` + testDomain + `' to='` + testDomain + `'><body>help</body></message>`,
	} {
		tc.send("%s", m)
	}
	tc.expectNone(quiet, "an answer to an error, a headline, a chat state or the component's own domain", func(n *node) bool { return n.name.Local == "message" })
	// A stranger (carol is of a domain that may not own handles) gets the
	// error any message to a handle gets, and no chat answer.
	for _, to := range []string{testDomain, h} {
		id := nextID()
		tc.send(`<message type='chat' id='%s' from='%s/x' to='%s'><body>help</body></message>`, id, carol, to)
		r := tc.expect("an answer to a stranger", func(n *node) bool { return n.get("id") == id })
		if r.get("type") != "error" || errorCondition(r) != "service-unavailable" || r.child("", "body") != nil {
			t.Fatalf("a stranger's message to %s got %s, want a bare service-unavailable", to, r)
		}
	}
	tc.expectNone(quiet, "a chat answer to a stranger", isStanza("message", "chat", testDomain, carol+"/x"))
}

func TestChatRequestsNumbered(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	h := addAsk(t, tc, "ask")
	wantText(t, "no requests", chat(t, tc, me, "requests"), "No subscription requests")
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h)
	told := tc.expect("the owner told", isStanza("message", "chat", testDomain, alice))
	wantText(t, "the request message", told.child("", "body").text, `send "requests" here`)
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, "dave@example.net", h)
	tc.expect("the owner told of dave", isStanza("message", "chat", testDomain, alice))
	list := chat(t, tc, me, "requests")
	wantText(t, "requests", list, "2 subscription requests are waiting", "1. "+carol+" wants to see "+h, "2. dave@example.net wants to see "+h)
	wantText(t, "approve 2", chat(t, tc, me, "approve 2"), "Approved: dave@example.net for "+h)
	tc.expect("subscribed", isStanza("presence", "subscribed", h, "dave@example.net"))
	wantText(t, "approve 2 again", chat(t, tc, me, "approve 2"), "Not pending any more: dave@example.net")
	wantText(t, "approve 9", chat(t, tc, me, "approve 9"), "Error: There is no request number 9")
	wantText(t, "deny by contact", chat(t, tc, me, "deny "+carol+" ask"), "Denied: "+carol)
	tc.expect("unsubscribed", isStanza("presence", "unsubscribed", h, carol))
	wantText(t, "deny none", chat(t, tc, me, "deny "+carol), "Error: No request from "+carol)
}

// openWithSubscriber makes alice own the open handle name, on-line, with
// contact subscribed and told its presence; it returns the handle's JID.
func openWithSubscriber(t *testing.T, tc *testComponent, name, contact string) string {
	t.Helper()
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": name, "subscriptions": "open"}))
	h := name + "@" + testDomain
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, contact, h)
	tc.expect("subscribed", isStanza("presence", "subscribed", h, contact))
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), contact)(n) && n.get("type") == "" })
	return h
}

func stampOf(t *testing.T, p *node) string {
	t.Helper()
	d := p.child(nsDelay, "delay")
	if p.get("type") != "unavailable" || d == nil || d.get("stamp") == "" {
		t.Fatalf("want an unavailable presence with a stamp: %s", p)
	}
	return d.get("stamp")
}

func TestBlockWithholdsEveryHandle(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	h1 := openWithSubscriber(t, tc, "one", carol)
	h2 := "two@" + testDomain
	wantCompleted(t, tc.run(t, me, "add-handle", map[string]string{"handle": "two", "subscriptions": "open"}))
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h2)
	tc.expect("subscribed to two", isStanza("presence", "subscribed", h2, carol))
	tc.expect("two available", isPresenceOf(full(h2), carol))

	wantText(t, "block", chat(t, tc, me, "block "+carol+"/laptop"), "Blocked "+carol+":")
	s1 := stampOf(t, tc.expect("one withheld", isPresenceOf(full(h1), carol)))
	s2 := stampOf(t, tc.expect("two withheld", isPresenceOf(full(h2), carol)))
	wantText(t, "block again", chat(t, tc, me, "block "+carol), "blocked already")
	wantText(t, "blocked", chat(t, tc, me, "blocked"), "You block 1 contact.", "\n"+carol)

	// Nothing the owner does reaches carol any more.
	tc.send(`<presence from='%s/pc' to='%s'><show>away</show></presence>`, alice, testDomain)
	tc.send(`<presence type='unavailable' from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expectNone(quiet, "a change reaching a blocked contact", isPresenceOf(full(h1), carol))
	// Its probe is answered as off-line, with the same stamp.
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, carol, h1)
	if got := stampOf(t, tc.expect("probe answer", isPresenceOf(full(h1), carol))); got != s1 {
		t.Fatalf("a probe answered a blocked contact with stamp %s, it was left with %s", got, s1)
	}
	_ = s2

	wantText(t, "unblock", chat(t, tc, me, "unblock "+carol), "Unblocked "+carol)
	tc.expect("one shown again", func(n *node) bool { return isPresenceOf(full(h1), carol)(n) && n.get("type") == "" })
	tc.expect("two shown again", func(n *node) bool { return isPresenceOf(full(h2), carol)(n) && n.get("type") == "" })
	wantText(t, "unblock again", chat(t, tc, me, "unblock "+carol), "Error: "+carol+" is not blocked.")
}

func TestHiddenHandleAndKick(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	h1 := openWithSubscriber(t, tc, "one", carol)
	wantCompleted(t, tc.run(t, me, "add-handle", map[string]string{"handle": "two", "subscriptions": "open"}))
	h2 := "two@" + testDomain
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h2)
	tc.expect("two available", isPresenceOf(full(h2), carol))

	r := tc.run(t, me, "set-visibility", map[string]string{"handles": "one", "visibility": "hidden"})
	wantText(t, "set-visibility", wantCompleted(t, r).child("", "note").text, "Hidden: "+h1)
	stampOf(t, tc.expect("one hidden", isPresenceOf(full(h1), carol)))
	tc.send(`<presence from='%s/pc' to='%s'><show>dnd</show></presence>`, alice, testDomain)
	tc.expect("two follows", func(n *node) bool {
		return isPresenceOf(full(h2), carol)(n) && n.child("", "show") != nil && n.child("", "show").text == "dnd"
	})
	tc.expectNone(quiet, "a hidden handle following the status", isPresenceOf(full(h1), carol))

	r = tc.run(t, me, "subscribers", map[string]string{"handle": "one"})
	cmd := wantCompleted(t, r)
	if f := cmd.child(nsData, "x"); f == nil || !strings.Contains(f.String(), "<value>"+carol+"</value>") {
		t.Fatalf("subscribers lists no %s: %s", carol, r)
	}
	wantText(t, "subscribers", chat(t, tc, me, "subscribers"), h1+" has 1 subscriber.", h2+" has 1 subscriber.")
	wantText(t, "kick", chat(t, tc, me, "kick "+carol+" two"), "Removed "+carol+" from the subscribers of "+h2)
	tc.expect("kicked: unavailable", func(n *node) bool { return isPresenceOf(full(h2), carol)(n) && n.get("type") == "unavailable" })
	tc.expect("kicked: unsubscribed", isStanza("presence", "unsubscribed", h2, carol))
	wantText(t, "kick again", chat(t, tc, me, "kick "+carol+" two"), "Error: "+carol+" does not subscribe to "+h2)
	wantError(t, tc.run(t, me, "remove-subscriber", map[string]string{"handle": "nobody", "contact": carol}), "item-not-found")
	wantError(t, tc.run(t, me, "block", map[string]string{"contact": "a@b@c"}), "jid-malformed")
	wantError(t, tc.run(t, me, "set-visibility", map[string]string{"handles": "one", "visibility": "sometimes"}), "bad-request")
}

func TestChatAnswersBounded(t *testing.T) {
	tc := startTestComponent(t, "")
	me := bob + "/bot"
	for i := 0; i < chatAnswersPerMinute; i++ {
		chat(t, tc, me, "hi")
	}
	// An auto-responder answering each answer gets no more this minute,
	// whatever the resource.
	tc.send(`<message type='chat' from='%s' to='%s'><body>hi</body></message>`, bob+"/other", testDomain)
	tc.expectNone(quiet, "an answer past the allowance", isStanza("message", "chat", testDomain, ""))
	// Others are answered.
	wantText(t, "another user", chat(t, tc, alice+"/pc", "help"), "Commands")
}

func TestListsBounded(t *testing.T) {
	many := make([]string, 3*maxListed)
	for i := range many {
		many[i] = "c" + strings.Repeat("x", 10) + "@example.net"
	}
	if got, note := listed(many[:maxListed], len(many)); len(got) != maxListed || note != " 1000 of them are listed." {
		t.Fatalf("listed 1000 of 3000: %d, %q", len(got), note)
	}
	long := []string{strings.Repeat("a", 30<<10) + "@x", strings.Repeat("b", 30<<10) + "@x"}
	if got, note := listed(long, 2); len(got) != 1 || note == "" {
		t.Fatalf("two JIDs of 30 KiB: listed %d, %q; want one, and a note", len(got), note)
	}
	if got, note := listed(many[:3], 3); len(got) != 3 || note != "" {
		t.Fatalf("all listed: %d, %q", len(got), note)
	}
}

// TestUnsubscribeKeepsTheKeptStamp: a subscriber that kept its stamp (a
// handle shown while the owner hides) is told of its own unsubscription
// with that stamp, not with the account's later one.
func TestUnsubscribeKeepsTheKeptStamp(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	h := openWithSubscriber(t, tc, "one", carol)
	wantText(t, "hide", chat(t, tc, me, "hide one"), "Hidden: ")
	kept := stampOf(t, tc.expect("hidden", isPresenceOf(full(h), carol)))
	time.Sleep(1100 * time.Millisecond) // a stamp of another second
	wantText(t, "hiding", chat(t, tc, me, "status hiding"), "You are hiding")
	wantText(t, "show", chat(t, tc, me, "show one"), "Shown: ")
	tc.expectNone(quiet, "a presence to carol when the handle is shown while hiding", isPresenceOf(full(h), carol))
	tc.send(`<presence type='unsubscribe' from='%s' to='%s'/>`, carol, h)
	if got := stampOf(t, tc.expect("the unsubscription's unavailable", isPresenceOf(full(h), carol))); got != kept {
		t.Fatalf("carol unsubscribed is stamped %s, she kept %s", got, kept)
	}
}

// TestChatSubscribersCountsEveryHandle: "subscribers" with no handle names
// every handle with its count, even when the first handle's list alone is
// longer than one answer holds.
func TestChatSubscribersCountsEveryHandle(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	wantText(t, "add a", chat(t, tc, me, "add a open"), "Added")
	wantText(t, "add b", chat(t, tc, me, "add b open"), "Added")
	for i := 0; i < 700; i++ {
		tc.send(`<presence type='subscribe' from='%s' to='a@%s'/>`, fmt.Sprintf("contact%03d-%s@example.net", i, strings.Repeat("x", 40)), testDomain)
	}
	tc.send(`<presence type='subscribe' from='%s' to='b@%s'/>`, carol, testDomain)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := make(chan int, 2)
		tc.r.Do(func() {
			_, a, _ := tc.r.Subscribers(alice, "a", 0)
			_, b, _ := tc.r.Subscribers(alice, "b", 0)
			n <- a + b
		})
		if got := <-n; got == 701 {
			break
		} else if time.Now().After(end) {
			t.Fatalf("%d subscribers, not 701", got)
		}
	}
	got := chat(t, tc, me, "subscribers")
	if len(got) > maxChatReply {
		t.Errorf("the answer holds %d bytes, more than %d", len(got), maxChatReply)
	}
	for _, want := range []string{"a@" + testDomain + " has 700 subscribers", "b@" + testDomain + " has 1 subscriber"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in the answer (%d bytes)", want, len(got))
		}
	}
}

// TestChatRequestsNumberedAsShown: "requests" numbers only the requests
// its answer shows, and "approve N" takes no number it did not show.
func TestChatRequestsNumberedAsShown(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	h := addAsk(t, tc, "ask")
	for i := 0; i < 100; i++ {
		tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, fmt.Sprintf("c%03d-%s@example.net", i, strings.Repeat("y", 400)), h)
	}
	waitRequests(t, tc, alice, 100)
	list := chat(t, tc, me, "requests")
	shown := strings.Count(list, " wants to see ")
	if shown == 0 || shown >= 100 || strings.Contains(list, "(cut") {
		t.Fatalf("%d of 100 requests shown (cut: %v), want some, in one answer", shown, strings.Contains(list, "(cut"))
	}
	if !strings.Contains(list, fmt.Sprintf("%d more are waiting", 100-shown)) {
		t.Errorf("the answer does not say how many more wait:\n%s", list[len(list)-300:])
	}
	if got := chat(t, tc, me, fmt.Sprintf("approve %d", shown+1)); !strings.HasPrefix(got, "Error: There is no request number") {
		t.Errorf("approve %d (not shown): %.80q", shown+1, got)
	}
	if got := chat(t, tc, me, fmt.Sprintf("approve %d", shown)); !strings.HasPrefix(got, "Approved") {
		t.Errorf("approve %d (shown): %.80q", shown, got)
	}
}

// TestRequestsFormBounded: the ad-hoc requests form lists at most what one
// answer holds, and says how many more wait.
func TestRequestsFormBounded(t *testing.T) {
	tc := startTestComponent(t, "")
	h := addAsk(t, tc, "ask")
	for i := 0; i < 100; i++ {
		tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, fmt.Sprintf("c%03d-%s@example.net", i, strings.Repeat("y", 800)), h)
	}
	waitRequests(t, tc, alice, 100)
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s' to='%s'><command xmlns='%s' node='requests' action='execute'/></iq>`, id, alice+"/pc", testDomain, nsCommands)
	form := tc.expect("execute reply "+id, isReplyTo(id)).child(nsCommands, "command").child(nsData, "x")
	options, size := 0, 0
	for _, f := range form.children {
		for _, o := range f.children {
			if o.name.Local == "option" && f.get("var") == "requests" {
				options++
				size += len(o.get("label")) + len(o.child("", "value").text)
			}
		}
	}
	if options == 0 || options >= 100 || size > maxListedBytes {
		t.Fatalf("%d options (%d bytes) of 100 requests, want fewer within %d bytes", options, size, maxListedBytes)
	}
	if text := form.child("", "instructions").text; !strings.Contains(text, fmt.Sprintf("%d more are waiting", 100-options)) {
		t.Fatalf("instructions: %q", text)
	}
}

// waitRequests waits until owner has n requests waiting: stanzas sent are
// read by the component in their own time.
func waitRequests(t *testing.T, tc *testComponent, owner string, n int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := make(chan int, 1)
		tc.r.Do(func() { got <- len(tc.r.Requests(owner)) })
		if k := <-got; k == n {
			return
		} else if time.Now().After(end) {
			t.Fatalf("%d requests waiting, not %d", k, n)
		}
	}
}
