package component

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"presenced/roster"
	"presenced/storage"
)

// Safety on the open federation: owner consent, strangers learning
// nothing, who may own what, limits and bad input.

const dave = "dave@example.net"

// addAsk makes alice own the ask handle name and returns its JID.
func addAsk(t *testing.T, tc *testComponent, name string) string {
	t.Helper()
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": name, "subscriptions": "ask"}))
	tc.reset()
	return name + "@" + testDomain
}

// requestOptions executes the requests command and returns its session and
// the values of its options.
func requestOptions(t *testing.T, tc *testComponent) (string, []string) {
	t.Helper()
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='requests' action='execute'/></iq>`, id, alice, testDomain, nsCommands)
	r := tc.expect("requests", isReplyTo(id))
	cmd := r.child(nsCommands, "command")
	if cmd == nil || cmd.get("status") != "executing" {
		t.Fatalf("requests: got %s, want a form", r)
	}
	var values []string
	for _, f := range cmd.child(nsData, "x").children {
		if f.get("var") != "requests" {
			continue
		}
		if f.get("type") != "list-multi" {
			t.Fatalf("field requests is %q, want list-multi: %s", f.get("type"), r)
		}
		for _, o := range f.children {
			if o.name.Local == "option" {
				values = append(values, o.child("", "value").text)
			}
		}
	}
	return cmd.get("sessionid"), values
}

// decide submits the requests form with one decision on values.
func decide(tc *testComponent, sid, decision string, values ...string) *node {
	var v strings.Builder
	for _, x := range values {
		fmt.Fprintf(&v, "<value>%s</value>", x)
	}
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='requests' sessionid='%s' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='requests'>%s</field><field var='decision'><value>%s</value></field></x></command></iq>`,
		id, alice, testDomain, nsCommands, sid, v.String(), decision)
	return tc.expect("decision", isReplyTo(id))
}

func TestAskHandleWaitsForTheOwner(t *testing.T) {
	tc := startTestComponent(t, "")
	h := addAsk(t, tc, "ask")
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h)
	msg := tc.expect("the owner told", isStanza("message", "chat", testDomain, alice))
	if body := msg.child("", "body").text; !strings.Contains(body, carol) || !strings.Contains(body, h) {
		t.Fatalf("the owner's message does not name the contact and the handle: %s", msg)
	}
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h) // again
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, dave, h)
	tc.expect("the owner told of dave", func(n *node) bool {
		return isStanza("message", "chat", testDomain, alice)(n) && strings.Contains(n.child("", "body").text, dave)
	})
	tc.expectNone(quiet, "an answer to a pending request", func(n *node) bool { return n.get("from") == h || n.get("from") == full(h) })
	tc.expectNone(0, "a second message for a repeated request", isStanza("message", "chat", testDomain, alice))
	// A probe from someone whose request waits is a stranger's.
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, carol, h)
	tc.expect("unsubscribed to a pending requester", isStanza("presence", "unsubscribed", h, carol))

	sid, values := requestOptions(t, tc)
	if want := "[ask " + carol + " ask " + dave + "]"; fmt.Sprint(values) != want {
		t.Fatalf("requests = %v, want %s", values, want)
	}
	note := wantCompleted(t, decide(tc, sid, "approve", "ask "+carol)).child("", "note").text
	if !strings.Contains(note, carol) {
		t.Fatalf("approval note %q does not name the contact", note)
	}
	tc.expect("subscribed", isStanza("presence", "subscribed", h, carol))
	tc.expect("the handle's presence", isPresenceOf(full(h), carol))

	sid, values = requestOptions(t, tc)
	if fmt.Sprint(values) != "[ask "+dave+"]" {
		t.Fatalf("requests after approving carol = %v", values)
	}
	wantCompleted(t, decide(tc, sid, "deny", "ask "+dave))
	tc.expect("unsubscribed", isStanza("presence", "unsubscribed", h, dave))
	tc.expectNone(quiet, "presence to a denied contact", isPresenceOf(full(h), dave))

	// Nothing pending: the command completes at once.
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='requests' action='execute'/></iq>`, id, alice, testDomain, nsCommands)
	wantCompleted(t, tc.expect("requests with none pending", isReplyTo(id)))
}

func TestRequestsSurviveRestartAndWithdrawal(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	tc := startTestComponent(t, db)
	h := addAsk(t, tc, "ask")
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h)
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, dave, h)
	tc.expect("the owner told", isStanza("message", "chat", testDomain, alice))
	tc.expect("the owner told again", isStanza("message", "chat", testDomain, alice))
	tc.send(`<presence type='unsubscribe' from='%s' to='%s'/>`, dave, h) // dave withdraws
	if err := waitEmpty(tc.r); err != nil {
		t.Fatal(err)
	}
	tc.stop()
	tc = startTestComponent(t, db)
	if _, values := requestOptions(t, tc); fmt.Sprint(values) != "[ask "+carol+"]" {
		t.Fatalf("requests after a restart = %v, want carol's only", values)
	}
}

func TestStrangersLearnNothing(t *testing.T) {
	tc := startTestComponent(t, "")
	h := addAsk(t, tc, "real")
	unknown := "nobody@" + testDomain
	answers := func(to string) []string {
		var out []string
		for _, q := range []string{
			`<iq type='get' id='ID' from='` + bob + `/x' to='TO'><query xmlns='` + nsDiscoInf + `'/></iq>`,
			`<iq type='get' id='ID' from='` + bob + `/x' to='TO/` + DefaultResource + `'><ping xmlns='` + nsPing + `'/></iq>`,
			`<iq type='get' id='ID' from='` + bob + `/x' to='TO/other'><query xmlns='` + nsLast + `'/></iq>`,
			`<iq type='set' id='ID' from='` + bob + `/x' to='TO'><query xmlns='urn:example:whatever'/></iq>`,
			`<iq type='get' id='ID' from='` + bob + `/x' to='TO'/>`,
			`<iq type='get' id='ID' from='` + bob + `/x' to='TO'><query xmlns='` + nsVersion + `'/></iq>`,
			`<message id='ID' from='` + bob + `/x' to='TO'><body>hi</body></message>`,
			`<presence type='probe' id='ID' from='` + bob + `' to='TO'/>`,
		} {
			id := nextID()
			tc.send("%s", strings.NewReplacer("ID", id, "TO", to).Replace(q))
			r := tc.expect("an answer to a stranger", func(n *node) bool { return n.get("id") == id || isStanza("presence", "unsubscribed", to, bob)(n) })
			if r.name.Local != "presence" && errorCondition(r) != "service-unavailable" {
				t.Errorf("a stranger got %s, want service-unavailable", r)
			}
			// The addresses and the id differ; nothing else may.
			var kept []xml.Attr
			for _, a := range r.attr {
				if a.Name.Local != "from" && a.Name.Local != "to" && a.Name.Local != "id" {
					kept = append(kept, a)
				}
			}
			r.attr = kept
			out = append(out, r.String())
		}
		return out
	}
	real, none := answers(h), answers(unknown)
	for i := range real {
		if real[i] != none[i] {
			t.Errorf("a stranger tells the handle from an unknown name:\n%s\n%s", real[i], none[i])
		}
	}
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, bob, unknown)
	tc.expectNone(quiet, "an answer to a subscription to an unknown name", func(n *node) bool { return n.get("to") == bob })
}

func TestWhoMayOwn(t *testing.T) {
	tc := startComponentWith(t, newFakeServer(t), "", func(o *roster.Options, c *Config) {
		o.Reserved = []string{"admin"}
		o.Quarantine = time.Hour
		o.MaxAccounts = 2
	})
	// A user of another domain, even one ending like an owner domain.
	for _, stranger := range []string{"eve@other.org/pc", "eve@sub.example.org/pc"} {
		id := nextID()
		tc.send(`<iq type='set' id='%s' from='%s' to='%s'><command xmlns='%s' node='add-handle' action='execute'/></iq>`, id, stranger, testDomain, nsCommands)
		wantError(t, tc.expect("a command from a stranger", isReplyTo(id)), "forbidden")
		id = nextID()
		tc.send(`<iq type='set' id='%s' from='%s' to='%s'><invisible xmlns='urn:xmpp:invisible:0'/></iq>`, id, stranger, testDomain)
		wantError(t, tc.expect("XEP-0186 from a stranger", isReplyTo(id)), "forbidden")
	}
	wantError(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "Admin"}), "not-allowed")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "q"}))
	wantCompleted(t, tc.run(t, alice+"/pc", "remove-handle", map[string]string{"handle": "q"}))
	wantError(t, tc.run(t, bob+"/pc", "add-handle", map[string]string{"handle": "q"}), "conflict")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "q"}))
	// Two accounts at most: alice and bob.
	wantCompleted(t, tc.run(t, bob+"/pc", "add-handle", map[string]string{"handle": "b"}))
	wantError(t, tc.run(t, "zed@example.org/pc", "add-handle", map[string]string{"handle": "z"}), "not-allowed")
}

func TestBadOwnerPresenceChangesNothing(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	for _, p := range []string{`<show>sleeping</show>`, `<priority>abc</priority>`, `<priority>999</priority>`} {
		tc.send(`<presence from='%s/pc' to='%s'><show>dnd</show>%s</presence>`, alice, testDomain, p)
		if r := tc.expect("presence error", isStanza("presence", "error", "", alice+"/pc")); errorCondition(r) != "bad-request" {
			t.Fatalf("%s: %s", p, r)
		}
	}
	tc.expectNone(quiet, "a change from a refused presence", isPresenceOf(full(h), carol))
}

func TestTooBigUnavailableTakesTheResourceOffline(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	tc.send(`<presence type='unavailable' from='%s/pc' to='%s'><status>%s</status></presence>`, alice, testDomain, strings.Repeat("x", maxTextBytes+1))
	p := tc.expect("unavailable", isPresenceOf(full(h), carol))
	if p.get("type") != "unavailable" {
		t.Fatalf("after a too big unavailable: %s", p)
	}
}

func TestStatusTextIsBounded(t *testing.T) {
	tc, h := setupSubscribed(t)
	long := strings.Repeat("é", 400) // 800 bytes
	tc.send(`<presence from='%s/pc' to='%s'><status>%s</status></presence>`, alice, testDomain, long)
	p := tc.expect("available", isPresenceOf(full(h), carol))
	if got := p.child("", "status").text; len(got) > DefaultMaxStatusText || !strings.HasPrefix(long, got) || got == "" {
		t.Fatalf("status text of %d bytes shown as %d bytes (%q…)", len(long), len(got), truncate(got, 10))
	}
}

func TestIQWithoutIDDropped(t *testing.T) {
	tc := startTestComponent(t, "")
	tc.send(`<iq type='get' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, alice, testDomain, nsPing)
	tc.expectNone(quiet, "an answer to an IQ without an id", isStanza("iq", "", "", alice+"/pc"))
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	if r := tc.expect("ping", isReplyTo(id)); r.get("type") != "result" {
		t.Fatalf("ping: %s", r)
	}
}

func TestInvisibleOne(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	for _, q := range []struct{ el, typ string }{{"invisible", "unavailable"}, {"visible", ""}} {
		id := nextID()
		tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><%s xmlns='urn:xmpp:invisible:1'/></iq>`, id, alice, testDomain, q.el)
		if r := tc.expect(q.el, isReplyTo(id)); r.get("type") != "result" {
			t.Fatalf("%s: %s", q.el, r)
		}
		if p := tc.expect("presence after "+q.el, isPresenceOf(full(h), carol)); p.get("type") != q.typ {
			t.Fatalf("after %s: %s", q.el, p)
		}
	}
}

func TestUnsubscribedFromAContactIgnored(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence type='unsubscribed' from='%s' to='%s'/>`, carol, h)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	if p := tc.expect("presence", isPresenceOf(full(h), carol)); p.get("type") != "" {
		t.Fatalf("after the contact's unsubscribed: %s", p)
	}
}

func TestFormCancelAndSingleValues(t *testing.T) {
	tc := startTestComponent(t, "")
	sid := tc.execute(t, alice+"/pc", "add-handle")
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='add-handle' sessionid='%s' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='handle'><value>a</value><value>b</value></field></x></command></iq>`,
		id, alice, testDomain, nsCommands, sid)
	wantError(t, tc.expect("two values", isReplyTo(id)), "bad-request")
	if hs := handlesOf(tc.r, alice); len(hs) != 0 {
		t.Fatalf("handles %v after a refused form", hs)
	}
	id = nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='add-handle' sessionid='%s' action='complete'><x xmlns='jabber:x:data' type='cancel'/></command></iq>`,
		id, alice, testDomain, nsCommands, sid)
	if r := tc.expect("cancel", isReplyTo(id)); r.get("type") != "result" || r.child(nsCommands, "command").get("status") != "canceled" {
		t.Fatalf("a form of type cancel: %s", r)
	}
	wantError(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "a"}), "bad-request")
}

// TestCommandSessionsPerUser: one user's sessions are bounded whatever the
// resources they come from; the oldest goes; another user keeps theirs.
func TestCommandSessionsPerUser(t *testing.T) {
	tc := startTestComponent(t, "")
	bobs := tc.execute(t, bob+"/pc", "add-handle")
	var first []string
	for i := 0; i <= DefaultMaxCommandSessions; i++ {
		first = append(first, tc.execute(t, fmt.Sprintf("%s/r%d", alice, i), "add-handle"))
	}
	wantError(t, tc.complete(t, alice+"/r0", "add-handle", first[0], map[string]string{"handle": "a"}), "bad-request")
	wantCompleted(t, tc.complete(t, alice+"/r1", "add-handle", first[1], map[string]string{"handle": "a"}))
	wantCompleted(t, tc.complete(t, bob+"/pc", "add-handle", bobs, map[string]string{"handle": "b"}))
}

func TestResourcesBounded(t *testing.T) {
	tc, h := setupSubscribed(t)
	for i := 0; i < roster.DefaultMaxResources; i++ {
		tc.send(`<presence from='%s/r%d' to='%s'><priority>-1</priority></presence>`, alice, i, testDomain)
	}
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	// One more resource, of higher priority, changes nothing.
	tc.send(`<presence from='%s/extra' to='%s'><show>dnd</show><priority>5</priority></presence>`, alice, testDomain)
	tc.expectNone(quiet, "a change from a resource over the limit", isPresenceOf(full(h), carol))
	if f, _ := flagsOf(tc.r, alice); f.Status != storage.StatusUndefined {
		t.Fatalf("flags %+v after a resource over the limit", f)
	}
}

// TestRequestsChosenByLabel: Gajim 1.7.3 submits the labels of the chosen
// options of a list-multi field; they stand for the values.
func TestRequestsChosenByLabel(t *testing.T) {
	tc := startTestComponent(t, "")
	h := addAsk(t, tc, "ask")
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h)
	tc.expect("the owner told", isStanza("message", "chat", testDomain, alice))
	sid, _ := requestOptions(t, tc)
	wantCompleted(t, decide(tc, sid, "approve", tc.c.requestLabel("ask", carol)))
	tc.expect("subscribed", isStanza("presence", "subscribed", h, carol))
}
