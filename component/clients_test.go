package component

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"presenced/roster"
	"presenced/storage"
)

// xep0115Ver computes the XEP-0115 §5.1 verification string of a disco#info
// answer by hand, independently of the code under test: identities sorted
// as category/type/lang/name, then the sorted features, each followed by <.
func xep0115Ver(t *testing.T, q *node) string {
	t.Helper()
	var idents, feats []string
	for _, c := range q.children {
		switch c.name.Local {
		case "identity":
			idents = append(idents, c.get("category")+"/"+c.get("type")+"/"+c.get("xml:lang")+"/"+c.get("name")+"<")
		case "feature":
			feats = append(feats, c.get("var")+"<")
		}
	}
	if len(idents) == 0 {
		t.Fatalf("disco#info without an identity: %s", q)
	}
	sort.Strings(idents)
	sort.Strings(feats)
	sum := sha1.Sum([]byte(strings.Join(idents, "") + strings.Join(feats, "")))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// discoInfoOf asks to for disco#info at node as from.
func (tc *testComponent) discoInfoOf(from, to, node string) *node {
	id := nextID()
	nodeAttr := ""
	if node != "" {
		nodeAttr = " node='" + node + "'"
	}
	tc.send(`<iq type='get' id='%s' from='%s' to='%s'><query xmlns='%s'%s/></iq>`, id, from, to, nsDiscoInf, nodeAttr)
	return tc.expect("disco#info of "+to, isReplyTo(id))
}

// checkCaps checks that presence p advertises capabilities that the
// sender's full JID confirms, as Gajim checks them: a disco#info for
// node#ver whose answer echoes the node and hashes to ver.
func checkCaps(t *testing.T, tc *testComponent, p *node, asker string) {
	t.Helper()
	c := p.child(nsCaps, "c")
	if c == nil || c.get("hash") != "sha-1" || c.get("node") == "" || c.get("ver") == "" {
		t.Fatalf("available presence without XEP-0115 caps: %s", p)
	}
	node := c.get("node") + "#" + c.get("ver")
	r := tc.discoInfoOf(asker, p.get("from"), node)
	q := r.child(nsDiscoInf, "query")
	if r.get("type") != "result" || q == nil || q.get("node") != node {
		t.Fatalf("disco#info of %s for %s: %s", p.get("from"), node, r)
	}
	if got := xep0115Ver(t, q); got != c.get("ver") {
		t.Fatalf("caps ver %s, but the disco#info answer hashes to %s: %s", c.get("ver"), got, q)
	}
	// The plain request answers the same features.
	plain := tc.discoInfoOf(asker, p.get("from"), "").child(nsDiscoInf, "query")
	if plain == nil || xep0115Ver(t, plain) != c.get("ver") {
		t.Fatalf("plain disco#info of %s differs from the caps: %s", p.get("from"), plain)
	}
}

const nsCaps = "http://jabber.org/protocol/caps"

// TestHandlePresenceFromFullJID: every presence of a handle comes from one
// full JID, in every state; subscription answers come from the bare JID;
// available presence carries caps that the full JID answers.
func TestHandlePresenceFromFullJID(t *testing.T) {
	tc, h := setupSubscribed(t) // checks the first presence is from full(h)
	tc.send(`<presence from='%s/pc' to='%s'><show>away</show></presence>`, alice, testDomain)
	p := tc.expect("away", isPresenceOf(full(h), carol))
	checkCaps(t, tc, p, carol+"/x")

	// IQs to the handle's one resource answer like the handle; any other
	// resource is absent.
	for _, to := range []string{h, full(h)} {
		id := nextID()
		tc.send(`<iq type='get' id='%s' from='%s/x' to='%s'><ping xmlns='%s'/></iq>`, id, carol, to, nsPing)
		if r := tc.expect("ping "+to, isReplyTo(id)); r.get("type") != "result" || r.get("from") != to {
			t.Fatalf("ping %s: %s", to, r)
		}
	}
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/x' to='%s/other'><ping xmlns='%s'/></iq>`, id, carol, h, nsPing)
	if r := tc.expect("ping other resource", isReplyTo(id)); errorCondition(r) != "service-unavailable" {
		t.Fatalf("ping of another resource: %s", r)
	}

	// Off-line and hiding: both from the same full JID, without caps.
	tc.send(`<presence type='unavailable' from='%s/pc' to='%s'/>`, alice, testDomain)
	off := tc.expect("off-line", isPresenceOf(full(h), carol))
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("on-line", isPresenceOf(full(h), carol))
	tc.send(`<presence type='invisible' from='%s/pc' to='%s'/>`, alice, testDomain)
	hid := tc.expect("hiding", isPresenceOf(full(h), carol))
	for _, u := range []*node{off, hid} {
		if u.get("type") != "unavailable" || u.child(nsCaps, "c") != nil {
			t.Fatalf("unavailable presence %s, want no caps", u)
		}
	}
	if shape(off) != shape(hid) {
		t.Fatalf("hiding %s looks different from off-line %s", hid, off)
	}
	// A probe by a stranger is answered from the bare JID.
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, bob, h)
	tc.expect("unsubscribed from the bare JID", isStanza("presence", "unsubscribed", h, bob))
}

// TestComponentPresenceForOwners: the component shows on-line to its owners
// from its own full JID: when an owner approves its request or subscribes
// to it, when it is probed, when an owner's client comes on-line, and after
// connecting; it shows off-line at shutdown.
func TestComponentPresenceForOwners(t *testing.T) {
	tc := startTestComponent(t, "")
	self := testDomain + "/" + DefaultResource
	r := tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "al"})
	note := wantCompleted(t, r).child("", "note").text
	if !strings.Contains(note, "asks to see your presence") {
		t.Fatalf("add-handle note %q does not say that a subscription request follows", note)
	}
	req := tc.expect("subscription request", isStanza("presence", "subscribe", testDomain, alice))
	if st := req.child("", "status"); st == nil || strings.TrimSpace(st.text) == "" {
		t.Fatalf("subscription request without a <status/> saying why: %s", req)
	}

	tc.send(`<presence type='subscribed' from='%s' to='%s'/>`, alice, testDomain)
	p := tc.expect("component presence after approval", isStanza("presence", "", self, alice))
	checkCaps(t, tc, p, alice+"/pc")
	// A stranger's 'subscribed' gets nothing.
	tc.send(`<presence type='subscribed' from='%s' to='%s'/>`, bob, testDomain)
	tc.expectNone(quiet, "component presence for a stranger's subscribed", isStanza("presence", "", self, bob))

	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, alice, testDomain)
	tc.expect("subscribed from the bare component JID", isStanza("presence", "subscribed", testDomain, alice))
	tc.expect("component presence after subscribing", isStanza("presence", "", self, alice))
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, alice, testDomain)
	tc.expect("probe answer", isStanza("presence", "", self, alice))
	// Anyone else is approved but not shown the component on-line: it could
	// not withdraw that at shutdown.
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, bob, testDomain)
	tc.expect("subscribed for a stranger", isStanza("presence", "subscribed", testDomain, bob))
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, bob, testDomain)
	tc.expect("probe answer for a stranger", isStanza("presence", "unavailable", self, bob))
	tc.expectNone(quiet, "the component on-line for a stranger", isStanza("presence", "", self, bob))

	// A client coming on-line is shown the component, once.
	tc.send(`<presence from='%s/phone' to='%s'/>`, alice, testDomain)
	tc.expect("component presence for a new client", isStanza("presence", "", self, alice+"/phone"))
	tc.send(`<presence from='%s/phone' to='%s'><show>away</show></presence>`, alice, testDomain)
	tc.expectNone(quiet, "component presence repeated for a known client", isStanza("presence", "", self, alice+"/phone"))

	// The IQs a client sends to the component's full JID are answered.
	id := nextID()
	tc.send(`<iq type='get' id='%s' from='%s/pc' to='%s'><query xmlns='%s' node='%s'/></iq>`, id, alice, self, nsDiscoIt, nsCommands)
	if r := tc.expect("commands at the full JID", isReplyTo(id)); r.get("type") != "result" {
		t.Fatalf("disco#items at %s: %s", self, r)
	}

	// Reconnect: shown again, then probed.
	tc.reset()
	tc.dropConnection()
	tc.expect("component presence after reconnecting", isStanza("presence", "", self, alice))
	tc.expect("probe after reconnecting", isStanza("presence", "probe", testDomain, alice))
	// A client that comes back under the same resource is shown it again.
	tc.send(`<presence from='%s/phone' to='%s'/>`, alice, testDomain)
	tc.expect("component presence for a client back after the reconnect", isStanza("presence", "", self, alice+"/phone"))
	tc.cancel()
	tc.expect("component off-line at shutdown", isStanza("presence", "unavailable", self, alice))
}

// TestWithdrawalWhileHidingKeepsTheStamp: while the owner hides, the
// unavailable presence that answers an unsubscription or a removal carries
// the stamp the subscriber already has, not a fresh one.
func TestWithdrawalWhileHidingKeepsTheStamp(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, bob, h)
	tc.expect("bob subscribed", isStanza("presence", "subscribed", h, bob))
	tc.expect("bob's first presence", isPresenceOf(full(h), bob))
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("on-line for carol", isPresenceOf(full(h), carol))
	tc.expect("on-line for bob", isPresenceOf(full(h), bob))
	tc.send(`<presence type='invisible' from='%s/pc' to='%s'/>`, alice, testDomain)
	hid := tc.expect("hiding", isPresenceOf(full(h), carol)).child(nsDelay, "delay").get("stamp")
	tc.expect("hiding for bob", isPresenceOf(full(h), bob))
	// Stamps have whole seconds: wait so that a fresh one would differ.
	time.Sleep(1100 * time.Millisecond)

	tc.send(`<presence type='unsubscribe' from='%s' to='%s'/>`, bob, h)
	if got := tc.expect("unavailable after unsubscribe", isPresenceOf(full(h), bob)).child(nsDelay, "delay").get("stamp"); got != hid {
		t.Fatalf("unsubscribing while hiding stamped %s, want the moment of hiding %s", got, hid)
	}
	wantCompleted(t, tc.run(t, alice+"/pc", "remove-handle", map[string]string{"handle": "al"}))
	if got := tc.expect("unavailable on removal", isPresenceOf(full(h), carol)).child(nsDelay, "delay").get("stamp"); got != hid {
		t.Fatalf("removing while hiding stamped %s, want the moment of hiding %s", got, hid)
	}
	tc.expect("unsubscribed from the bare JID", isStanza("presence", "unsubscribed", h, carol))
}

// TestTextsSpeakTheUsersWords: set-status answers with the words of its
// form, never the option value "undefined".
func TestTextsSpeakTheUsersWords(t *testing.T) {
	tc := startTestComponent(t, "")
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "al"}))
	note := wantCompleted(t, tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "undefined"})).child("", "note").text
	if strings.Contains(note, "undefined") || !strings.Contains(note, "available") {
		t.Fatalf("set-status undefined: note %q, want it in the form's words (available)", note)
	}
	r := tc.run(t, alice+"/pc", "set-status", map[string]string{"status": "asleep"})
	wantError(t, r, "bad-request")
	if text := r.child("", "error").child(nsStanzas, "text").text; !strings.Contains(text, "available") {
		t.Fatalf("unknown status: error text %q does not name the choices in the form's words", text)
	}
}

// TestConfiguredResource: the configured resource is the one every handle
// presence and the component's own presence come from; a resource that is
// not a valid resourcepart is refused at start.
func TestConfiguredResource(t *testing.T) {
	ctx := context.Background()
	store, err := storage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	r, err := roster.New(ctx, store, roster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := New(Config{Domain: testDomain, Server: "127.0.0.1:1", Secret: "x", Resource: "status"}, r, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*node{
		c.viewStanza("h", carol, roster.View{Available: true}),
		c.viewStanza("h", carol, roster.View{Since: time.Now()}),
	} {
		if got, want := p.get("from"), "h@"+testDomain+"/status"; got != want {
			t.Fatalf("handle presence from %q, want %q: %s", got, want, p)
		}
	}
	if got, want := c.selfPresence("", alice).get("from"), testDomain+"/status"; got != want {
		t.Fatalf("component presence from %q, want %q", got, want)
	}
	if _, err := New(Config{Domain: testDomain, Resource: strings.Repeat("r", 1024)}, r, log); err == nil {
		t.Fatal("New accepted a resource of 1024 bytes")
	}
}

// TestComponentOffLineOnceStopping: once shutdown has begun withdrawing,
// nothing shows the component on-line again, not even to an owner.
func TestComponentOffLineOnceStopping(t *testing.T) {
	tc := startTestComponent(t, "")
	self := testDomain + "/" + DefaultResource
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "al"}))
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, alice, testDomain)
	tc.expect("on-line to an owner", isStanza("presence", "", self, alice))
	tc.c.stopping.Store(true)
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, alice, testDomain)
	tc.expect("off-line to an owner once stopping", isStanza("presence", "unavailable", self, alice))
	tc.send(`<presence from='%s/phone' to='%s'/>`, alice, testDomain)
	tc.expect("off-line to a new client once stopping", isStanza("presence", "unavailable", self, alice+"/phone"))
	tc.expectNone(quiet, "the component on-line once stopping", isStanza("presence", "", self, ""))
}
