package component

import (
	"fmt"
	"html"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var idSeq atomic.Int64

func nextID() string { return fmt.Sprintf("id%d", idSeq.Add(1)) }

// execute starts command node for from and returns the session id, checking
// the form stage.
func (tc *testComponent) execute(t *testing.T, from, node string) string {
	t.Helper()
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s' to='%s'><command xmlns='%s' node='%s' action='execute'/></iq>`, id, from, testDomain, nsCommands, node)
	r := tc.expect("execute reply "+id, isReplyTo(id))
	cmd := r.child(nsCommands, "command")
	if r.get("type") != "result" || cmd == nil || cmd.get("status") != "executing" {
		t.Fatalf("execute %s: got %s, want an executing command", node, r)
	}
	if acts := cmd.child("", "actions"); acts == nil || acts.child("", "complete") == nil {
		t.Fatalf("execute %s: no <actions><complete/></actions> in %s", node, r)
	}
	if cmd.child(nsData, "x") == nil || cmd.child(nsData, "x").get("type") != "form" {
		t.Fatalf("execute %s: no form in %s", node, r)
	}
	if cmd.get("sessionid") == "" {
		t.Fatalf("execute %s: no sessionid in %s", node, r)
	}
	return cmd.get("sessionid")
}

// complete submits the form of a command session and returns the reply.
func (tc *testComponent) complete(t *testing.T, from, node, sid string, fields map[string]string) *node {
	t.Helper()
	var f strings.Builder
	for k, v := range fields {
		fmt.Fprintf(&f, `<field var='%s'><value>%s</value></field>`, k, html.EscapeString(v))
	}
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s' to='%s'><command xmlns='%s' node='%s' sessionid='%s' action='complete'><x xmlns='jabber:x:data' type='submit'>%s</x></command></iq>`,
		id, from, testDomain, nsCommands, node, sid, f.String())
	return tc.expect("complete reply "+id, isReplyTo(id))
}

// run executes and completes a command.
func (tc *testComponent) run(t *testing.T, from, node string, fields map[string]string) *node {
	t.Helper()
	return tc.complete(t, from, node, tc.execute(t, from, node), fields)
}

func wantCompleted(t *testing.T, r *node) *node {
	t.Helper()
	cmd := r.child(nsCommands, "command")
	if r.get("type") != "result" || cmd == nil || cmd.get("status") != "completed" || cmd.child("", "note") == nil {
		t.Fatalf("got %s, want a completed command with a note", r)
	}
	return cmd
}

func wantError(t *testing.T, r *node, cond string) {
	t.Helper()
	if r.get("type") != "error" || errorCondition(r) != cond {
		t.Fatalf("got %s, want an error %s", r, cond)
	}
	if e := r.child("", "error"); e == nil || e.child(nsStanzas, "text") == nil || e.child(nsStanzas, "text").text == "" {
		t.Fatalf("error %s carries no text: %s", cond, r)
	}
}

const (
	alice = "alice@example.org"
	bob   = "bob@example.org"
	carol = "carol@example.net"
)

func TestAddHandleAndRefusals(t *testing.T) {
	tc := startTestComponent(t, "")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "Alice.Work"}))
	// The new owner is asked for their presence.
	tc.expect("subscribe to the new owner", isStanza("presence", "subscribe", testDomain, alice))

	cases := []struct {
		name, from, handle, cond string
	}{
		{"empty", alice, "", "bad-request"},
		{"space", alice, "two words", "jid-malformed"},
		{"at sign", alice, "a@b", "jid-malformed"},
		{"slash", alice, "a/b", "jid-malformed"},
		{"colon", alice, "a:b", "jid-malformed"},
		{"quote", alice, "a'b", "jid-malformed"},
		{"double quote", alice, `a"b`, "jid-malformed"},
		{"ampersand", alice, "a&b", "jid-malformed"},
		{"angle", alice, "a<b>", "jid-malformed"},
		{"too long", alice, strings.Repeat("x", 1024), "jid-malformed"},
		{"taken, other case", bob, "alice.work", "conflict"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, tc.run(t, c.from+"/r", "add-handle", map[string]string{"handle": c.handle}), c.cond)
		})
	}
	// Adding one's own handle again, in any case, changes nothing and says so.
	again := wantCompleted(t, tc.run(t, alice+"/r", "add-handle", map[string]string{"handle": "ALICE.WORK"}))
	if note := again.child("", "note").text; !strings.Contains(note, "already yours") {
		t.Fatalf("re-adding one's own handle: note %q, want it to say the handle is already yours", note)
	}
	tc.expectNone(quiet, "a new subscription request for a handle already held", isStanza("presence", "subscribe", testDomain, alice))
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "a2"}))
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "a3"}))
	// The limit is 3 in these tests.
	wantError(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "a4"}), "not-allowed")

	cmd := wantCompleted(t, tc.run(t, alice+"/pc", "list-handles", nil))
	x := cmd.child(nsData, "x")
	if x == nil || x.get("type") != "result" {
		t.Fatalf("list-handles: no result form in %s", cmd)
	}
	var got []string
	for _, f := range x.children {
		if f.name.Local == "field" && f.get("var") == "handles" {
			for _, v := range f.children {
				got = append(got, v.text)
			}
		}
	}
	if want := []string{"a2", "a3", "alice.work"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("list-handles = %v, want %v", got, want)
	}

	// Someone else's handle is answered like a name nobody holds: what
	// other accounts hold is none of bob's business.
	wantError(t, tc.run(t, bob+"/r", "remove-handle", map[string]string{"handle": "a2"}), "item-not-found")
	wantError(t, tc.run(t, alice+"/r", "remove-handle", map[string]string{"handle": "nope"}), "item-not-found")
	wantCompleted(t, tc.run(t, alice+"/r", "remove-handle", map[string]string{"handle": "a2"}))
	if hs := handlesOf(tc.r, alice); fmt.Sprint(hs) != "[a3 alice.work]" {
		t.Fatalf("handles after removal = %v", hs)
	}
}

func TestCommandSessions(t *testing.T) {
	tc := startTestComponent(t, "")
	sid := tc.execute(t, alice+"/pc", "add-handle")
	// Another resource cannot use the session.
	wantError(t, tc.complete(t, alice+"/phone", "add-handle", sid, map[string]string{"handle": "x"}), "bad-request")
	// The session was not consumed by the refused attempt.
	wantCompleted(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "x"}))
	// A session is used once.
	wantError(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "y"}), "bad-request")

	// Cancel.
	sid = tc.execute(t, alice+"/pc", "set-status")
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='set-status' sessionid='%s' action='cancel'/></iq>`, id, alice, testDomain, nsCommands, sid)
	r := tc.expect("cancel reply", isReplyTo(id))
	if cmd := r.child(nsCommands, "command"); cmd == nil || cmd.get("status") != "canceled" {
		t.Fatalf("cancel: got %s", r)
	}

	// Unknown command and a server (no localpart) as requester.
	id = nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='no-such' action='execute'/></iq>`, id, alice, testDomain, nsCommands)
	wantError(t, tc.expect("unknown command", isReplyTo(id)), "item-not-found")
	id = nextID()
	tc.send(`<iq type='set' id='%s' from='example.org' to='%s'><command xmlns='%s' node='add-handle' action='execute'/></iq>`, id, testDomain, nsCommands)
	wantError(t, tc.expect("command from a server", isReplyTo(id)), "forbidden")

	// A bad status value.
	wantError(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "sleeping"}), "bad-request")
	wantCompleted(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "busy"}))
	if f, _ := flagsOf(tc.r, alice); f.Status != "busy" || f.Hiding {
		t.Fatalf("flags after set-status busy = %+v", f)
	}
	wantCompleted(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "hiding"}))
	if f, _ := flagsOf(tc.r, alice); !f.Hiding {
		t.Fatalf("flags after set-status hiding = %+v", f)
	}
}

func TestDiscoPingVersion(t *testing.T) {
	tc := startTestComponent(t, "")
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='%s'/></iq>`, id, alice, testDomain, nsDiscoInf)
	r := tc.expect("disco#info", isReplyTo(id))
	q := r.child(nsDiscoInf, "query")
	if q == nil || q.child("", "identity") == nil || q.child("", "identity").get("category") != "component" || q.child("", "identity").get("type") != "presence" {
		t.Fatalf("disco#info: %s", r)
	}
	feats := map[string]bool{}
	for _, c := range q.children {
		if c.name.Local == "feature" {
			feats[c.get("var")] = true
		}
	}
	for _, f := range []string{nsDiscoInf, nsDiscoIt, nsCommands, nsPing, nsVersion} {
		if !feats[f] {
			t.Errorf("disco#info lacks feature %s", f)
		}
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='%s' node='%s'/></iq>`, id, alice, testDomain, nsDiscoIt, nsCommands)
	r = tc.expect("disco#items", isReplyTo(id))
	var nodes []string
	for _, c := range r.child(nsDiscoIt, "query").children {
		nodes = append(nodes, c.get("node"))
	}
	if fmt.Sprint(nodes) != "[add-handle remove-handle list-handles set-status requests subscribers remove-subscriber block unblock list-blocked set-visibility set-web]" {
		t.Fatalf("command nodes = %v", nodes)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	if r := tc.expect("ping", isReplyTo(id)); r.get("type") != "result" || r.get("from") != testDomain || r.get("to") != alice+"/pc" {
		t.Fatalf("ping: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='%s'/></iq>`, id, alice, testDomain, nsVersion)
	if r := tc.expect("version", isReplyTo(id)); r.child(nsVersion, "query") == nil || r.child(nsVersion, "query").child("", "name").text != "presenced" {
		t.Fatalf("version: %s", r)
	}
	// Unknown payload.
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='urn:example:nope'/></iq>`, id, alice, testDomain)
	if r := tc.expect("unknown iq", isReplyTo(id)); errorCondition(r) != "service-unavailable" {
		t.Fatalf("unknown iq: %s", r)
	}
}

// TestBadInputKeepsRunning sends malformed and hostile stanzas and checks
// that each gets a clear error or is dropped, and that the component still
// answers afterwards on the same connection.
func TestBadInputKeepsRunning(t *testing.T) {
	tc := startTestComponent(t, "")
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='bad@@%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	if r := tc.expect("malformed to", isReplyTo(id)); errorCondition(r) != "jid-malformed" {
		t.Fatalf("malformed to: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'/>`, id, alice, testDomain)
	if r := tc.expect("empty iq", isReplyTo(id)); errorCondition(r) != "bad-request" {
		t.Fatalf("empty iq: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='add-handle' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='handle'><value>%s</value></field></x></command></iq>`,
		id, alice, testDomain, nsCommands, strings.Repeat("y", maxFieldBytes+1))
	if r := tc.expect("oversized field", isReplyTo(id)); errorCondition(r) != "bad-request" {
		t.Fatalf("oversized field: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='%s'>%s</query></iq>`, id, alice, testDomain, nsDiscoInf, strings.Repeat("<a/>", maxStanzaTokens))
	if r := tc.expect("huge stanza", isReplyTo(id)); errorCondition(r) != "policy-violation" {
		t.Fatalf("huge stanza: %s", r)
	}
	tc.send(`<presence from='not a jid@@' to='%s'/>`, testDomain)
	tc.send(`<message from='%s/pc' to='h@%s'><body>hi</body></message>`, carol, testDomain)
	if r := tc.expect("message error", isStanza("message", "error", "", carol+"/pc")); errorCondition(r) != "service-unavailable" {
		t.Fatalf("message: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	if r := tc.expect("ping after bad input", isReplyTo(id)); r.get("type") != "result" {
		t.Fatalf("ping after bad input: %s", r)
	}
}

// TestCompletedSurvivesRestart checks that what a completed command changed
// is there after the component restarts on the same database.
func TestCompletedSurvivesRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	tc := startTestComponent(t, db)
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "keep"}))
	wantCompleted(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "hiding"}))
	tc.stop()
	tc2 := startTestComponent(t, db)
	if hs := handlesOf(tc2.r, alice); fmt.Sprint(hs) != "[keep]" {
		t.Fatalf("handles after restart = %v", hs)
	}
	if f, _ := flagsOf(tc2.r, alice); !f.Hiding {
		t.Fatalf("hiding lost across restart: %+v", f)
	}
}

// TestReconnect drops the connection and checks the component comes back
// and probes the owners again.
func TestReconnect(t *testing.T) {
	tc := startTestComponent(t, "")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "rc"}))
	tc.reset()
	connected := tc.c.Connected()
	tc.dropConnection()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("no reconnection")
	}
	tc.expect("probe of the owner after reconnecting", isStanza("presence", "probe", testDomain, alice))
}

// TestStorageDown: with the database gone, commands get
// internal-server-error with a text, nothing changes in memory, and the
// component keeps answering; hiding fails closed: it holds at once, and
// the note says it is not stored yet.
func TestStorageDown(t *testing.T) {
	tc := startTestComponent(t, "")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "before"}))
	tc.store.Close()
	wantError(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "after"}), "internal-server-error")
	wantError(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "away"}), "internal-server-error")
	r := tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "hiding"})
	wantCompleted(t, r)
	if note := r.child(nsCommands, "command").child("", "note").text; !strings.Contains(note, "not stored yet") {
		t.Fatalf("hiding with storage down: note %q does not say it is not stored yet", note)
	}
	if f, _ := flagsOf(tc.r, alice); !f.Hiding {
		t.Fatal("hiding did not hold while storage was down")
	}
	if hs := handlesOf(tc.r, alice); fmt.Sprint(hs) != "[before]" {
		t.Fatalf("handles = %v, want [before]", hs)
	}
	id := nextID()
	tc.send(`<presence type='subscribe' id='%s' from='%s' to='before@%s'/>`, id, carol, testDomain)
	if r := tc.expect("subscribe error", isStanza("presence", "error", "", carol)); errorCondition(r) != "internal-server-error" {
		t.Fatalf("subscribe with storage down: %s", r)
	}
	id = nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><ping xmlns='%s'/></iq>`, id, alice, testDomain, nsPing)
	if r := tc.expect("ping", isReplyTo(id)); r.get("type") != "result" {
		t.Fatalf("ping with storage down: %s", r)
	}
}

// TestNoAccountNoInstruction: set-status or XEP-0186 from someone without a
// handle is refused and creates nothing; a later add-handle still asks the
// new owner for their presence.
func TestNoAccountNoInstruction(t *testing.T) {
	tc := startTestComponent(t, "")
	wantError(t, tc.run(t, bob+"/pc", "set-status", map[string]string{"status": "busy"}), "item-not-found")
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><invisible xmlns='%s'/></iq>`, id, bob, testDomain, nsInvis0)
	wantError(t, tc.expect("invisible from a stranger", isReplyTo(id)), "item-not-found")
	if isOwner(tc.r, bob) {
		t.Fatal("an instruction created an account")
	}
	wantCompleted(t, tc.run(t, bob+"/pc", "add-handle", map[string]string{"handle": "bobby"}))
	tc.expect("subscribe to the new owner", isStanza("presence", "subscribe", testDomain, bob))
}

// TestRefusedStepKeepsSession: a refused submission can be corrected in the
// same command session.
func TestRefusedStepKeepsSession(t *testing.T) {
	tc := startTestComponent(t, "")
	sid := tc.execute(t, alice+"/pc", "add-handle")
	wantError(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "no good"}), "jid-malformed")
	wantCompleted(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "good"}))
}

// TestCommandSessionsBounded: ended sessions do not pile up behind a live
// one.
func TestCommandSessionsBounded(t *testing.T) {
	s := newCommandSessions(DefaultMaxCommandSessions)
	s.open("add-handle", "a@example.org/r") // stays open
	for i := 0; i < 1000; i++ {
		s.end(s.open("set-status", "a@example.org/r"))
	}
	if len(s.order) > 100 {
		t.Fatalf("%d session ids kept for 1 live session", len(s.order))
	}
}

// TestConcurrentSendsKeepTheStream sends many stanzas from the handler and
// from other goroutines at once (each add-handle asks the owner for
// presence from a goroutine) and checks the stream survives: a write
// deadline set by one finished send must never break another.
func TestConcurrentSendsKeepTheStream(t *testing.T) {
	tc := startTestComponent(t, "")
	reconnected := tc.c.Connected()
	for i := 0; i < 300; i++ {
		id := nextID()
		tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><command xmlns='%s' node='add-handle' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='handle'><value>h%d</value></field></x></command></iq>`,
			id, fmt.Sprintf("u%d@example.org", i), testDomain, nsCommands, i)
		tc.expect("reply", isReplyTo(id))
		select {
		case <-reconnected:
			t.Fatalf("the stream broke after %d commands", i+1)
		default:
		}
	}
}
