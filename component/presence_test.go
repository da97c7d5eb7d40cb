package component

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"presenced/roster"
	"presenced/storage"
)

// quiet is how long a negative check waits for a stanza that must not come.
const quiet = 200 * time.Millisecond

// full is the full JID from which handle JID h sends its presence.
func full(h string) string { return h + "/" + DefaultResource }

func isPresenceOf(from, to string) func(*node) bool {
	return func(n *node) bool {
		return n.name.Local == "presence" && n.get("from") == from && n.get("to") == to &&
			(n.get("type") == "" || n.get("type") == "unavailable")
	}
}

// setup gives alice the handle "al" and carol a subscription to it.
func setupSubscribed(t *testing.T) (*testComponent, string) {
	t.Helper()
	return setupSubscribedDB(t, "")
}

func setupSubscribedDB(t *testing.T, db string) (*testComponent, string) {
	t.Helper()
	tc := startTestComponent(t, db)
	wantCompleted(t, tc.run(t, alice+"/pc", "add-handle", map[string]string{"handle": "al"}))
	h := "al@" + testDomain
	tc.send(`<presence type='subscribe' from='%s' to='%s'/>`, carol, h)
	tc.expect("subscribed", isStanza("presence", "subscribed", h, carol))
	p := tc.expect("initial presence", isPresenceOf(full(h), carol))
	if p.get("type") != "unavailable" {
		t.Fatalf("initial presence of an off-line owner: %s", p)
	}
	return tc, h
}

func TestOwnerPresenceFansOut(t *testing.T) {
	tc, h := setupSubscribed(t)
	cases := []struct {
		name, in, wantType, wantShow string
	}{
		{"available", `<presence from='%s/pc' to='%s'><status>hi</status></presence>`, "", ""},
		{"away", `<presence from='%s/pc' to='%s'><show>away</show></presence>`, "", "away"},
		{"dnd", `<presence from='%s/pc' to='%s'><show>dnd</show></presence>`, "", "dnd"},
		{"xa", `<presence from='%s/pc' to='%s'><show>xa</show></presence>`, "", "away"},
		{"chat", `<presence from='%s/pc' to='%s'><show>chat</show></presence>`, "", ""},
		{"unavailable", `<presence type='unavailable' from='%s/pc' to='%s'/>`, "unavailable", ""},
	}
	for _, c := range cases {
		tc.send(c.in, alice, testDomain)
		p := tc.expect(c.name, isPresenceOf(full(h), carol))
		show := ""
		if s := p.child("", "show"); s != nil {
			show = s.text
		}
		if p.get("type") != c.wantType || show != c.wantShow {
			t.Fatalf("%s: subscriber got %s, want type %q show %q", c.name, p, c.wantType, c.wantShow)
		}
	}
	// Directed to the handle counts too; to someone else's handle it does not.
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, h)
	tc.expect("directed presence", isPresenceOf(full(h), carol))
	tc.send(`<presence from='%s/pc' to='%s'/>`, bob, h)
	tc.expectNone(quiet, "effect of a non-owner's presence", isPresenceOf(full(h), carol))
}

func TestNothingSentWhenNothingVisibleChanged(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'><show>away</show></presence>`, alice, testDomain)
	tc.expect("away", isPresenceOf(full(h), carol))
	tc.send(`<presence from='%s/pc' to='%s'><show>away</show><priority>1</priority></presence>`, alice, testDomain)
	tc.expectNone(quiet, "repeat of an unchanged presence", isPresenceOf(full(h), carol))
}

// TestHidingLooksOffline checks that a hiding account answers probes, last
// activity, disco and ping exactly as an off-line one, and leaks nothing
// while the client's presence changes underneath.
func TestHidingLooksOffline(t *testing.T) {
	tc, h := setupSubscribed(t)
	probe := func() *node {
		tc.send(`<presence type='probe' from='%s' to='%s'/>`, carol, h)
		return tc.expect("probe answer", isPresenceOf(full(h), carol))
	}
	offline := probe()

	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	if p := tc.expect("online", isPresenceOf(full(h), carol)); p.get("type") != "" {
		t.Fatalf("online: %s", p)
	}
	id := nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><invisible xmlns='%s'/></iq>`, id, alice, testDomain, nsInvis0)
	if r := tc.expect("invisible result", isReplyTo(id)); r.get("type") != "result" {
		t.Fatalf("invisible: %s", r)
	}
	hidden := tc.expect("going hiding", isPresenceOf(full(h), carol))
	if hidden.get("type") != "unavailable" {
		t.Fatalf("going hiding: %s", hidden)
	}
	// Client churn while hiding reveals nothing.
	for _, in := range []string{
		`<presence from='%s/pc' to='%s'><show>away</show></presence>`,
		`<presence from='%s/phone' to='%s'><show>dnd</show><priority>5</priority></presence>`,
		`<presence type='unavailable' from='%s/phone' to='%s'/>`,
		`<presence from='%s/pc' to='%s'/>`,
	} {
		tc.send(in, alice, testDomain)
	}
	tc.expectNone(quiet, "presence while hiding", isPresenceOf(full(h), carol))
	whileHiding := probe()
	if shape(whileHiding) != shape(offline) {
		t.Fatalf("probe while hiding\n%s\ndiffers in shape from off-line\n%s", whileHiding, offline)
	}
	if whileHiding.get("type") != "unavailable" || strings.Contains(whileHiding.String(), "show") || strings.Contains(whileHiding.String(), "status") {
		t.Fatalf("probe while hiding leaks: %s", whileHiding)
	}
	if got, want := whileHiding.child(nsDelay, "delay").get("stamp"), hidden.child(nsDelay, "delay").get("stamp"); got != want {
		t.Fatalf("delay while hiding = %s, want the moment it went hiding %s", got, want)
	}
	// A probe by a non-subscriber learns only 'unsubscribed', whatever the state.
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, bob, h)
	tc.expect("unsubscribed to a non-subscriber", isStanza("presence", "unsubscribed", h, bob))
	tc.expectNone(quiet, "presence to a non-subscriber", func(n *node) bool { return n.get("to") == bob && n.get("type") != "unsubscribed" })

	// Visible again: the status underneath shows.
	id = nextID()
	tc.send(`<iq type='set' id='%s' from='%s/pc' to='%s'><visible xmlns='%s'/></iq>`, id, alice, testDomain, nsInvis0)
	tc.expect("visible result", isReplyTo(id))
	if p := tc.expect("visible again", isPresenceOf(full(h), carol)); p.get("type") != "" {
		t.Fatalf("visible: %s", p)
	}
}

// shape renders a stanza without attribute values, to compare structure.
func shape(n *node) string {
	var b strings.Builder
	b.WriteString("<" + n.name.Space + " " + n.name.Local)
	for _, a := range n.attr {
		b.WriteString(" " + a.Name.Local)
		if a.Name.Local == "type" {
			b.WriteString("=" + a.Value)
		}
	}
	b.WriteString(">")
	for _, c := range n.children {
		b.WriteString(shape(c))
	}
	return b.String()
}

func TestHidingIsStickyAcrossRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	tc, h := setupSubscribedDB(t, db)
	tc.send(`<presence type='invisible' from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expectNone(quiet, "available presence after raw invisible", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	tc.stop()

	tc2 := startTestComponent(t, db)
	tc2.expect("probe of the owner after start", isStanza("presence", "probe", testDomain, alice))
	// The owner's server answers the probe: still on-line.
	tc2.send(`<presence from='%s/pc' to='%s'><show>away</show></presence>`, alice, testDomain)
	p := tc2.expect("resync presence", isPresenceOf(full(h), carol))
	if p.get("type") != "unavailable" {
		t.Fatalf("after restart a hiding account showed %s", p)
	}
	tc2.expectNone(quiet, "available presence while hiding after restart", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
}

func TestUnsubscribeAndUnknownHandle(t *testing.T) {
	tc, h := setupSubscribed(t)
	// A name nobody holds answers nothing, like an ask handle, so that a
	// stranger cannot tell which names exist.
	tc.send(`<presence type='subscribe' from='%s' to='nobody@%s'/>`, bob, testDomain)
	tc.expectNone(quiet, "an answer for an unknown handle", func(n *node) bool { return n.get("from") == "nobody@"+testDomain })
	tc.send(`<presence type='unsubscribe' from='%s' to='%s'/>`, carol, h)
	tc.expect("unavailable after unsubscribe", isPresenceOf(full(h), carol))
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expectNone(quiet, "presence to a former subscriber", isPresenceOf(full(h), carol))
	tc.send(`<presence type='probe' from='%s' to='%s'/>`, carol, h)
	tc.expect("unsubscribed to a former subscriber", isStanza("presence", "unsubscribed", h, carol))
}

func TestRemoveHandleTellsSubscribers(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("online", isPresenceOf(full(h), carol))
	wantCompleted(t, tc.run(t, alice+"/pc", "remove-handle", map[string]string{"handle": "al"}))
	if p := tc.expect("unavailable on removal", isPresenceOf(full(h), carol)); p.get("type") != "unavailable" {
		t.Fatalf("removal: %s", p)
	}
	tc.expect("unsubscribed on removal", isStanza("presence", "unsubscribed", h, carol))
}

func TestShutdownWithdrawsVisibleHandles(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("online", isPresenceOf(full(h), carol))
	tc.cancel()
	if p := tc.expect("unavailable at shutdown", isPresenceOf(full(h), carol)); p.get("type") != "unavailable" {
		t.Fatalf("shutdown: %s", p)
	}
}

func TestLastActivityAndHandleIQs(t *testing.T) {
	tc, h := setupSubscribed(t)
	last := func(from string) *node {
		id := nextID()
		tc.send(`<iq type='get' id='%s' from='%s/x' to='%s'><query xmlns='%s'/></iq>`, id, from, h, nsLast)
		return tc.expect("last activity", isReplyTo(id))
	}
	if r := last(carol); r.get("type") != "result" || r.child(nsLast, "query") == nil {
		t.Fatalf("last activity for a subscriber: %s", r)
	}
	// A non-subscriber gets service-unavailable for every IQ, as for a
	// name nobody holds; the owner and subscribers get answers.
	for _, q := range []string{`<query xmlns='` + nsLast + `'/>`, `<query xmlns='` + nsDiscoInf + `'/>`, `<ping xmlns='` + nsPing + `'/>`} {
		for _, to := range []string{h, "nobody@" + testDomain} {
			id := nextID()
			tc.send(`<iq type='get' id='%s' from='%s/x' to='%s'>%s</iq>`, id, bob, to, q)
			if r := tc.expect("handle iq", isReplyTo(id)); errorCondition(r) != "service-unavailable" || r.child("", "error").child(nsStanzas, "text") != nil {
				t.Fatalf("%s to %s from a stranger: %s", q, to, r)
			}
		}
		for _, from := range []string{carol, alice} {
			id := nextID()
			tc.send(`<iq type='get' id='%s' from='%s/x' to='%s'>%s</iq>`, id, from, h, q)
			if r := tc.expect("handle iq", isReplyTo(id)); r.get("type") != "result" {
				t.Fatalf("%s on a handle from %s: %s", q, from, r)
			}
		}
	}
}

// TestAppendViewRendersViewStanza: the fast path that writes most of
// presenced's stanzas writes exactly what viewStanza builds, for every
// kind of View, with text that needs escaping.
func TestAppendViewRendersViewStanza(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := New(Config{Domain: testDomain, Server: "127.0.0.1:1", Secret: "x"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 5, 4, 3, 2, 1, 0, time.FixedZone("x", 3600))
	for _, v := range []roster.View{
		{Since: since},
		{Available: true, Status: storage.StatusUndefined},
		{Available: true, Status: storage.StatusAway, Text: "at <lunch> & 'back' \"soon\"\r\n"},
		{Available: true, Status: storage.StatusBusy, Text: "ünïcode \u0001 \uFFFE"},
	} {
		for _, h := range []string{"h", "o'neil"} {
			want := c.viewStanza(h, "carol@example.net", v).String()
			if got := string(c.appendView(nil, h, "carol@example.net", v)); got != want {
				t.Errorf("appendView(%q, %+v) =\n%s\nwant (viewStanza)\n%s", h, v, got, want)
			}
		}
	}
}

// viewStanza builds, as a tree, the presence appendView renders: the
// reference it is tested against. It renders v as the presence of handle
// for contact, from the
// handle's full JID. Hiding and off-line accounts render identically: an
// unavailable presence whose <delay/> is the moment the account stopped
// being visible. Available presence carries the handles' capabilities
// (XEP-0115), the same for every handle and every status.
func (c *Component) viewStanza(handle, contact string, v roster.View) *node {
	from := c.handleFull(handle)
	if !v.Available {
		return presence("unavailable", from, contact).add(
			el(qname(nsDelay, "delay"), "from", c.domainStr, "stamp", stamp(v.Since)))
	}
	p := presence("", from, contact)
	switch v.Status {
	case "away":
		p.add(el(local("show")).withText("away"))
	case "busy":
		p.add(el(local("show")).withText("dnd"))
	}
	if v.Text != "" {
		p.add(el(local("status")).withText(v.Text))
	}
	return p.add(c.handleCaps)
}

// handleFull is the full JID of handle, from which its presence comes.
func (c *Component) handleFull(handle string) string {
	return handle + c.fullSuffix
}

func stamp(t time.Time) string {
	return t.UTC().Format(stampLayout)
}
