package xmpptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"presenced/internal/testenv"
)

const wait = 10 * time.Second

func parse(t *testing.T, raw string) *Element {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(
		"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" + raw))
	if _, err := nextTop(d); err != nil {
		t.Fatalf("stream header: %v", err)
	}
	e, err := nextTop(d)
	if err != nil {
		t.Fatalf("nextTop(%s) error: %v", raw, err)
	}
	return e
}

func TestElement(t *testing.T) {
	raw := `<presence from='a@localhost/r' to="h@presence.localhost" xml:lang='en'>` +
		`<show>away</show><status>out &amp; about</status>` +
		`<x xmlns='urn:example' xmlns:p='urn:p' p:k='v'><y/></x></presence>`
	e := parse(t, raw)
	if e.Name != (xml.Name{Space: "jabber:client", Local: "presence"}) {
		t.Errorf("Name = %v, want jabber:client presence", e.Name)
	}
	if got := e.Attr("from"); got != "a@localhost/r" {
		t.Errorf("Attr(from) = %q, want a@localhost/r", got)
	}
	if got := e.Attr("lang"); got != "en" {
		t.Errorf("Attr(lang) = %q, want en", got)
	}
	if got := e.ChildText("status"); got != "out & about" {
		t.Errorf("ChildText(status) = %q, want %q", got, "out & about")
	}
	if e.ChildNS("urn:example", "x") == nil || e.ChildNS("jabber:client", "x") != nil {
		t.Errorf("ChildNS finds x in the wrong namespace: %v", e)
	}
	if got := e.Child("x").Attr("k"); got != "v" {
		t.Errorf("x Attr(k) = %q, want v", got)
	}
	if e.Child("nope") != nil || e.Child("nope").Child("deeper") != nil || e.Child("nope").Attr("a") != "" {
		t.Errorf("missing children should be nil and nil-safe")
	}
	// String must re-parse to the same element.
	again := parse(t, e.String())
	if again.String() != e.String() {
		t.Errorf("String() does not round-trip:\n%s\n%s", e, again)
	}
}

func TestMatchers(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		match Matcher
		want  bool
	}{
		{"available bare", `<presence from='a@localhost/r'/>`, IsPresence("a@localhost", ""), true},
		{"available full", `<presence from='a@localhost/r'/>`, IsPresence("a@localhost/r", ""), true},
		{"other resource", `<presence from='a@localhost/r'/>`, IsPresence("a@localhost/s", ""), false},
		{"domain case", `<presence from='a@LocalHost/r'/>`, IsPresence("a@localhost", ""), true},
		{"type differs", `<presence from='a@localhost' type='unavailable'/>`, IsPresence("a@localhost", ""), false},
		{"subscribe", `<presence from='a@localhost' type='subscribe'/>`, IsPresence("a@localhost", "subscribe"), true},
		{"any sender", `<presence from='b@localhost' type='probe'/>`, IsPresence("", "probe"), true},
		{"show", `<presence from='h@p'><show>dnd</show></presence>`, IsAvailable("h@p", "dnd"), true},
		{"no show", `<presence from='h@p'><show>dnd</show></presence>`, IsAvailable("h@p", ""), false},
		{"body", `<message from='a@l/r'><body>hi</body></message>`, IsMessageBody("a@l", "hi"), true},
		{"error message", `<message from='a@l' type='error'/>`, IsMessage("a@l"), false},
		{"iq reply", `<iq type='result' id='x1'/>`, IsIQReply("x1"), true},
		{"iq request", `<iq type='get' id='x1'/>`, IsIQReply("x1"), false},
		{"roster push", `<iq type='set' id='p'><query xmlns='jabber:iq:roster'/></iq>`, IsIQ("", "set", "jabber:iq:roster"), true},
		{"error condition", `<iq type='error' from='c' id='1'><error type='cancel'>` +
			`<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, IsError("c", "item-not-found"), true},
		{"has child", `<presence><x xmlns='vcard-temp:x:update'/></presence>`, HasChild("vcard-temp:x:update", "x"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.match(parse(t, tt.raw)); got != tt.want {
				t.Errorf("match(%s) = %v, want %v", tt.raw, got, tt.want)
			}
		})
	}
}

func randomName(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// newUser registers a fresh account and logs it in; the session closes
// when the test ends.
func newUser(t *testing.T, srv testenv.Server, prefix string) (*Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	user, pass := randomName(t, prefix), randomName(t, "pw")
	if err := Register(ctx, srv.C2S, srv.Domain, user, pass); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctx, srv.C2S, srv.Domain, user, pass, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close %s: %v", c.JID(), err)
		}
	})
	return c, pass
}

func TestAgainstServers(t *testing.T) {
	env := testenv.Load(t)
	for _, srv := range env.Servers {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			srv.Shared(t) // not while a test in another package restarts it
			testClient(t, srv)
		})
	}
}

func testClient(t *testing.T, srv testenv.Server) {
	alice, alicePass := newUser(t, srv, "alice")
	bob, _ := newUser(t, srv, "bob")
	if want := alice.Bare() + "/test"; alice.JID() != want {
		t.Errorf("JID() = %q, want %q", alice.JID(), want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	user := strings.SplitN(alice.Bare(), "@", 2)[0]
	if err := Register(ctx, srv.C2S, srv.Domain, user, "other"); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Errorf("Register(existing user) = %v, want a conflict", err)
	}
	if c, err := Dial(ctx, srv.C2S, srv.Domain, user, alicePass+"x", "bad"); err == nil {
		_ = c.Close()
		t.Errorf("Dial(wrong password) succeeded")
	}

	if q := alice.FetchRoster(t); len(q.Children) != 0 {
		t.Errorf("roster of a new user = %v, want empty", q)
	}
	bob.FetchRoster(t)

	// A message to the full JID needs no presence.
	alice.MustSend(t, "<message type='chat' to='"+Escape(bob.JID())+"'><body>full</body></message>")
	full := bob.Expect(t, wait, "message to the full JID", IsMessageBody(alice.Bare(), "full"))

	// Subscription: alice asks, bob approves, alice gets subscribed, bob's
	// presence and a roster push.
	bob.MustSend(t, "<presence/>")
	alice.MustSend(t, "<presence/>")
	alice.MustSend(t, "<presence type='subscribe' to='"+Escape(bob.Bare())+"'/>")
	bob.Expect(t, wait, "subscription request", IsPresence(alice.Bare(), "subscribe"))
	bob.MustSend(t, "<presence type='subscribed' to='"+Escape(alice.Bare())+"'/>")
	alice.Expect(t, wait, "subscription approval", IsPresence(bob.Bare(), "subscribed"))
	alice.Expect(t, wait, "bob's presence", IsPresence(bob.JID(), ""))
	push := alice.Expect(t, wait, "roster push", IsIQ("", "set", nsRoster))
	alice.MustSend(t, "<iq type='result' id='"+Escape(push.Attr("id"))+"'/>")
	item := alice.FetchRoster(t).Child("item")
	if item.Attr("jid") != bob.Bare() || item.Attr("subscription") != "to" {
		t.Errorf("alice's roster item = %v, want jid %s subscription to", item, bob.Bare())
	}

	// Bob now has an available resource: a message to his bare JID reaches it.
	alice.MustSend(t, "<message type='chat' to='"+Escape(bob.Bare())+"'><body>bare</body></message>")
	bare := bob.Expect(t, wait, "message to the bare JID", IsMessageBody(alice.JID(), "bare"))
	if full.Seq() == 0 || full.Seq() >= bare.Seq() {
		t.Errorf("Seq() of the first message = %d, of the second %d: want 0 < first < second", full.Seq(), bare.Seq())
	}

	if reply := alice.IQ(t, wait, "get", srv.Domain, "<ping xmlns='urn:xmpp:ping'/>"); reply.Attr("type") != "result" {
		t.Errorf("ping %s = %v, want a result", srv.Domain, reply)
	}
	if reply := alice.TryIQ(wait, "get", srv.Domain, "<ping xmlns='urn:xmpp:ping'/>"); reply.Attr("type") != "result" {
		t.Errorf("TryIQ(ping %s) = %v, want a result", srv.Domain, reply)
	}
	if e := alice.Await(200*time.Millisecond, IsMessage(bob.Bare())); e != nil {
		t.Errorf("Await(message from bob) = %v, want nil: bob sent none", e)
	}
	alice.ExpectNone(t, 200*time.Millisecond, "message from bob", IsMessage(bob.Bare()))
	alice.Drain()
	if n := len(alice.Backlog()); n != 0 {
		t.Errorf("after Drain, Backlog has %d stanzas", n)
	}
}
