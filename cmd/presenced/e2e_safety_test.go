package main

// End-to-end scenarios of issue 8, "safe on the open federation": owners
// approve who sees them, strangers learn nothing, names and owners are
// restricted, limits hold, privacy fails closed, one database has one
// active instance with a standby, and bad input changes nothing. They run
// in every world after the older scenarios (e2e_test.go), through the same
// real servers and clients.
//
// Time: every world runs every scenario, so negative checks share one wait
// (expectNone), users are few, and only the scenarios that need their own
// configuration stop the world's daemon (useSpecialDaemon).

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"presenced/internal/testenv"
	"presenced/internal/xmpptest"
)

const (
	nsCommands = "http://jabber.org/protocol/commands"
	nsData     = "jabber:x:data"
	// takeover is the longest a standby may take, from the kill of the
	// active instance to its answer to a subscriber's probe (issue 8).
	takeover = 5 * time.Second
	// storeRetry is how long the tests allow presenced, once storage is
	// back, to store what it could not store during an outage ("a few
	// seconds").
	storeRetry = 3 * time.Second
)

var safetyScenarios = []scenario{
	{"OwnerConsent", testOwnerConsent},
	{"StrangersLearnNothing", testStrangers},
	{"ReservedAndQuarantinedNames", testNames},
	{"BadInput", testBadInput},
	{"DefaultLimits", testDefaultLimits},
	{"RemovalNoticesSurviveKill", testRemovalNotices},
	{"FailClosed", testFailClosed},
	{"Standby", testStandby},
	{"OwnerDomains", testOwnerDomains},
	{"Limits", testLimits},
	{"StorageFault", testStorageFault},
}

// ------------------------------------------------------------- helpers --

// absence is one negative check for expectNone.
type absence struct {
	c     *xmpptest.Client
	desc  string
	match xmpptest.Matcher
}

// expectNone waits quiet once, then checks that no client received a
// stanza its check forbids, counting those received before the call: one
// wait for several negative checks.
func (w *world) expectNone(checks ...absence) {
	w.t.Helper()
	time.Sleep(quiet)
	for _, a := range checks {
		a.c.ExpectNone(w.t, 0, a.desc, a.match)
	}
}

// anyPresenceFrom matches every presence whose sender's bare JID is j.
func anyPresenceFrom(j string) xmpptest.Matcher {
	return func(e *xmpptest.Element) bool {
		return e.Name.Local == "presence" && strings.EqualFold(xmpptest.Bare(e.Attr("from")), j)
	}
}

// fromBareHandle matches a presence of type typ from the bare JID hj
// exactly: subscription answers come from the bare JID (RFC 6121 §3).
func fromBareHandle(hj, typ string) xmpptest.Matcher {
	return xmpptest.And(xmpptest.IsPresence(hj, typ), fromExactly(hj))
}

// isMessageError matches an error message from j's bare JID.
func isMessageError(j string) xmpptest.Matcher {
	return func(e *xmpptest.Element) bool {
		return e.Name.Local == "message" && e.Attr("type") == "error" && strings.EqualFold(xmpptest.Bare(e.Attr("from")), j)
	}
}

// contact is a fresh user who is on-line.
func (w *world) contact(prefix string) *xmpptest.Client {
	w.t.Helper()
	c, _ := w.user(prefix)
	c.MustSend(w.t, `<presence/>`)
	return c
}

func (w *world) sendSubscribe(c *xmpptest.Client, hj string) {
	w.t.Helper()
	c.MustSend(w.t, fmt.Sprintf(`<presence type='subscribe' to='%s'/>`, hj))
}

// isRequestMessage matches the chat message in which the component (its
// bare JID) tells an owner that contact asks to see the handle hj.
func (w *world) isRequestMessage(contact, hj string) xmpptest.Matcher {
	return func(e *xmpptest.Element) bool {
		body := strings.ToLower(e.ChildText("body"))
		return e.Name.Local == "message" && e.Attr("type") == "chat" && strings.EqualFold(e.Attr("from"), w.domain) &&
			strings.Contains(body, strings.ToLower(contact)) && strings.Contains(body, strings.ToLower(hj))
	}
}

// requestValue names a pending request in the requests form.
func requestValue(handle, contact string) string { return handle + " " + contact }

func fieldXML(name string, values ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<field var='%s'>`, xmpptest.Escape(name))
	for _, v := range values {
		fmt.Fprintf(&b, `<value>%s</value>`, xmpptest.Escape(v))
	}
	b.WriteString(`</field>`)
	return b.String()
}

// executing executes a command and returns its session, failing unless
// the command waits for its form.
func (w *world) executing(c *xmpptest.Client, node string) string {
	w.t.Helper()
	r := c.IQ(w.t, wait, "set", w.domain, fmt.Sprintf(`<command xmlns='%s' node='%s' action='execute'/>`, nsCommands, node))
	cmd := r.ChildNS(nsCommands, "command")
	if r.Attr("type") != "result" || cmd.Attr("status") != "executing" || cmd.Attr("sessionid") == "" {
		w.t.Fatalf("execute %s: %s, want a session waiting for its form", node, r)
	}
	return cmd.Attr("sessionid")
}

// submit sends a form of type formType holding fields to a command
// session, with action ("" for none), and returns the reply.
func (w *world) submit(c *xmpptest.Client, node, sid, action, formType, fields string) *xmpptest.Element {
	w.t.Helper()
	a := ""
	if action != "" {
		a = fmt.Sprintf(" action='%s'", action)
	}
	return c.IQ(w.t, wait, "set", w.domain, fmt.Sprintf(
		`<command xmlns='%s' node='%s' sessionid='%s'%s><x xmlns='%s' type='%s'>%s</x></command>`,
		nsCommands, node, sid, a, nsData, formType, fields))
}

// isBadSession reports whether r refuses a step of an unknown command
// session (XEP-0050 bad-sessionid).
func isBadSession(r *xmpptest.Element) bool {
	return r.Attr("type") == "error" && r.Child("error").ChildNS(nsCommands, "bad-sessionid") != nil
}

func mustBeCompleted(w *world, r *xmpptest.Element, what string) *xmpptest.Element {
	w.t.Helper()
	cmd := r.ChildNS(nsCommands, "command")
	if r.Attr("type") != "result" || cmd.Attr("status") != "completed" || cmd.ChildText("note") == "" {
		w.t.Fatalf("%s: got %s, want completed with a note", what, r)
	}
	return cmd
}

func formField(x *xmpptest.Element, name string) *xmpptest.Element {
	if x == nil {
		return nil
	}
	for _, f := range x.Children {
		if f.Name.Local == "field" && f.Attr("var") == name {
			return f
		}
	}
	return nil
}

// optionValues lists the values of a field's options, untrimmed.
func optionValues(f *xmpptest.Element) []string {
	var vs []string
	if f == nil {
		return nil
	}
	for _, o := range f.Children {
		if o.Name.Local == "option" {
			v := ""
			if val := o.Child("value"); val != nil {
				v = val.Text
			}
			vs = append(vs, v)
		}
	}
	return vs
}

// pendingRequests executes the requests command for owner c and returns
// its session and the values of its request options, after checking the
// form; when nothing is pending the command must complete at once with a
// note, and pendingRequests returns "" and nothing.
func (w *world) pendingRequests(c *xmpptest.Client) (string, []string) {
	w.t.Helper()
	r := c.IQ(w.t, wait, "set", w.domain, fmt.Sprintf(`<command xmlns='%s' node='requests' action='execute'/>`, nsCommands))
	cmd := r.ChildNS(nsCommands, "command")
	switch {
	case r.Attr("type") != "result" || cmd == nil:
		w.t.Fatalf("execute requests: %s", r)
	case cmd.Attr("status") == "completed":
		if cmd.ChildText("note") == "" {
			w.t.Fatalf("requests completed without a note: %s", r)
		}
		return "", nil
	case cmd.Attr("status") != "executing" || cmd.Attr("sessionid") == "":
		w.t.Fatalf("execute requests: %s, want executing or completed", r)
	}
	x := cmd.ChildNS(nsData, "x")
	reqs, dec := formField(x, "requests"), formField(x, "decision")
	if reqs == nil || reqs.Attr("type") != "list-multi" {
		w.t.Fatalf("requests form without a list-multi field 'requests': %s", r)
	}
	if got := optionValues(dec); dec == nil || dec.Attr("type") != "list-single" || !sameSet(got, []string{"approve", "deny"}) {
		w.t.Fatalf("requests form: field 'decision' must be list-single with options approve and deny: %s", r)
	}
	if a := cmd.Child("actions"); a == nil || a.Child("complete") == nil {
		w.t.Fatalf("requests form without a complete action: %s", r)
	}
	return cmd.Attr("sessionid"), optionValues(reqs)
}

// decide submits a decision on requests and checks that it completed.
func (w *world) decide(c *xmpptest.Client, sid, decision string, requests ...string) {
	w.t.Helper()
	r := w.submit(c, "requests", sid, "complete", "submit", fieldXML("requests", requests...)+fieldXML("decision", decision))
	mustBeCompleted(w, r, fmt.Sprintf("requests: %s %v", decision, requests))
}

// mustList checks the pending requests of owner c and returns the form's
// session ("" when nothing is pending, as want must then be).
func (w *world) mustList(c *xmpptest.Client, want ...string) string {
	w.t.Helper()
	sid, got := w.pendingRequests(c)
	if !sameSet(got, want) {
		w.t.Fatalf("requests lists %q, want %q", got, want)
	}
	return sid
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// expectApproved checks what an approved contact gets: subscribed from the
// bare handle JID, then the handle's presence from its full JID. It
// returns the presence.
func (w *world) expectApproved(c *xmpptest.Client, hj string) *xmpptest.Element {
	w.t.Helper()
	sub := c.Expect(w.t, wait, "subscribed from "+hj, fromBareHandle(hj, "subscribed"))
	p := c.Expect(w.t, wait, "the presence of "+hj+" after approval", isHandlePresence(hj))
	checkFullJID(w.t, p, hj)
	if p.Seq() < sub.Seq() {
		w.t.Fatalf("%s: the presence of %s came before subscribed:\n%s\n%s", c.JID(), hj, p, sub)
	}
	return p
}

// sameRefusal checks that got and ref are the same error, of condition
// cond: same shape, same texts. A stranger must not tell them apart.
func sameRefusal(w *world, desc string, got, ref *xmpptest.Element, cond string) {
	w.t.Helper()
	for _, e := range []*xmpptest.Element{got, ref} {
		if e.Attr("type") != "error" || xmpptest.StanzaErrorCondition(e) != cond {
			w.t.Fatalf("%s: got %s, want error %s", desc, e, cond)
		}
	}
	if shape(got) != shape(ref) || got.Child("error").ChildText("text") != ref.Child("error").ChildText("text") {
		w.t.Fatalf("%s: an existing handle and an unknown name answer differently:\n%s\n%s", desc, got, ref)
	}
}

// connectedLines counts the log lines saying the daemon connected to the
// XMPP server ("not connected …; retrying" is not one).
func connectedLines(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "connected to the XMPP server") && !strings.Contains(l, "not connected") {
			n++
		}
	}
	return n
}

// waitConnected waits until d logged that it connected, and returns when.
func (w *world) waitConnected(d *daemon, timeout time.Duration) time.Time {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for connectedLines(d.out.String()) == 0 {
		if time.Now().After(deadline) {
			w.t.Fatalf("presenced did not connect within %v:\n%s", timeout, d.out.String())
		}
		select {
		case <-d.done:
			w.t.Fatalf("presenced exited before connecting:\n%s", d.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return time.Now()
}

// launchStandby starts a second presenced on the world's database and
// waits until it says that it waits for the database lock. Unless the
// scenario made it the world's daemon by then, it is killed when the
// scenario ends, so that it cannot take over behind the next scenario.
func (w *world) launchStandby() *daemon {
	w.t.Helper()
	d := launchDaemon(w.t, w.parent, w.cfg)
	w.t.Cleanup(func() {
		if w.d != d {
			d.kill()
		}
	})
	d.waitLog("waiting for the database lock", 1)
	return d
}

// trySetStatus runs set-status without failing the test, for loops that
// meet a daemon going down: it reports whether the command completed,
// that is, whether the change is acknowledged.
func (w *world) trySetStatus(c *xmpptest.Client, status string, timeout time.Duration) bool {
	r := c.TryIQ(timeout, "set", w.domain, fmt.Sprintf(`<command xmlns='%s' node='set-status' action='execute'/>`, nsCommands))
	cmd := r.ChildNS(nsCommands, "command")
	if r.Attr("type") != "result" || cmd.Attr("status") != "executing" {
		return false
	}
	r = c.TryIQ(timeout, "set", w.domain, fmt.Sprintf(
		`<command xmlns='%s' node='set-status' sessionid='%s' action='complete'><x xmlns='%s' type='submit'>%s</x></command>`,
		nsCommands, cmd.Attr("sessionid"), nsData, fieldXML("status", status)))
	return r.Attr("type") == "result" && r.ChildNS(nsCommands, "command").Attr("status") == "completed"
}

// awaitStorage waits until presenced stores changes again after an
// outage: until an add-handle (which needs storage) completes.
func (w *world) awaitStorage(c *xmpptest.Client) {
	w.t.Helper()
	h := randomName("back")
	deadline := time.Now().Add(wait)
	for {
		r := w.command(c, "add-handle", map[string]string{"handle": h, "subscriptions": "open"})
		if cmd := r.ChildNS(nsCommands, "command"); r.Attr("type") == "result" && cmd.Attr("status") == "completed" {
			return
		}
		if xmpptest.StanzaErrorCondition(r) != "internal-server-error" || time.Now().After(deadline) {
			w.t.Fatalf("storage is back, but add-handle still gets %s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freshBackend is an empty database of the world's kind, for a daemon of
// a scenario's own.
func (w *world) freshBackend() backend {
	w.t.Helper()
	if w.backend.driver == "postgres" {
		return backend{"postgres", "postgres", testenv.NewPostgresDB(w.t, w.env.Postgres)}
	}
	return backend{"sqlite", "sqlite", filepath.Join(w.t.TempDir(), "special.db")}
}

// useSpecialDaemon runs, for the rest of the scenario, a daemon of its
// own configuration (the world's plus extra TOML) and storage b instead
// of the world's. Prosody accepts one component connection per domain, so
// the world's daemon stops first and starts again when the scenario ends.
// Meanwhile w.d, w.cfg and w.parent are the special daemon's, so that the
// scenario restarts it as others restart the world's.
func (w *world) useSpecialDaemon(b backend, extra string) {
	t := w.t
	t.Helper()
	cfg, parent := w.cfg, w.parent
	w.d.stop()
	// Registered before the special daemon's own cleanup, this runs after
	// it: the special daemon has stopped by then.
	t.Cleanup(func() {
		w.cfg, w.parent = cfg, parent
		w.d = startDaemon(t, parent, cfg)
		w.d.t = parent
	})
	w.cfg, w.parent = writeDaemonConfig(t, w.srv, b, extra), t
	w.d = startDaemon(t, t, w.cfg)
}

// adminConn connects to the administrative database of the shared
// PostgreSQL cluster for the rest of the scenario.
func (w *world) adminConn() *pgx.Conn {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, err := pgx.Connect(ctx, w.env.Postgres)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// databaseName is the name of the world's PostgreSQL database.
func (w *world) databaseName() string {
	w.t.Helper()
	u, err := url.Parse(w.backend.dsn)
	if err != nil {
		w.t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// databaseOutage returns functions that take the world's PostgreSQL
// database away from presenced (new connections refused, its sessions
// ended) and give it back; it comes back when the scenario ends anyway.
func (w *world) databaseOutage() (down, up func()) {
	t := w.t
	admin := w.adminConn()
	db := pgx.Identifier{w.databaseName()}
	allow := func(on bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %v", db.Sanitize(), on)); err != nil {
			t.Fatal(err)
		}
		if !on {
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS true", db.Sanitize()))
	})
	return func() { allow(false) }, func() { allow(true) }
}

// lockHolders lists the PostgreSQL server processes that hold an advisory
// lock on the world's database.
func (w *world) lockHolders(admin *pgx.Conn) []int32 {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	rows, err := admin.Query(ctx, `SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1`, w.databaseName())
	if err != nil {
		w.t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		w.t.Fatal(err)
	}
	return pids
}

// ----------------------------------------------------------- scenarios --

// testOwnerConsent: a request to an "ask" handle (the default policy)
// waits for the owner, who is told once and decides with the requests
// command; pending requests survive a restart.
func testOwnerConsent(w *world) {
	t := w.t
	h := randomName("ask")
	hj := w.handleJID(h)
	alice, _ := w.ownerWith("alice", h, "") // no subscriptions field: the default, ask
	w.mustRefuse(alice, "add-handle", map[string]string{"handle": randomName("pol"), "subscriptions": "maybe"}, "bad-request")

	bob, carol, dave, frank := w.contact("bob"), w.contact("carol"), w.contact("dave"), w.contact("frank")
	w.sendSubscribe(bob, hj)
	alice.Expect(t, wait, "the owner told of bob's request", w.isRequestMessage(bob.Bare(), hj))
	w.sendSubscribe(bob, hj) // a repeated request adds nothing
	for _, c := range []*xmpptest.Client{carol, dave, frank} {
		w.sendSubscribe(c, hj)
		alice.Expect(t, wait, "the owner told of a request", w.isRequestMessage(c.Bare(), hj))
	}
	// A contact who takes the request back before the owner decides.
	frank.MustSend(t, fmt.Sprintf(`<presence type='unsubscribe' to='%s'/>`, hj))
	w.expectNone(
		absence{bob, "an answer before the owner decides", anyPresenceFrom(hj)},
		absence{carol, "an answer before the owner decides", anyPresenceFrom(hj)},
		absence{dave, "an answer before the owner decides", anyPresenceFrom(hj)},
		absence{alice, "a second message for a repeated request", w.isRequestMessage(bob.Bare(), hj)},
	)

	sid := w.mustList(alice, requestValue(h, bob.Bare()), requestValue(h, carol.Bare()), requestValue(h, dave.Bare()))
	w.decide(alice, sid, "approve", requestValue(h, bob.Bare()), requestValue(h, carol.Bare()))
	for _, c := range []*xmpptest.Client{bob, carol} {
		if p := w.expectApproved(c, hj); p.Attr("type") != "" {
			t.Fatalf("after approval the handle of an on-line owner shows %s", p)
		}
	}
	sid = w.mustList(alice, requestValue(h, dave.Bare()))
	w.decide(alice, sid, "deny", requestValue(h, dave.Bare()))
	dave.Expect(t, wait, "unsubscribed from the bare handle JID after a denial", fromBareHandle(hj, "unsubscribed"))
	w.mustList(alice) // nothing pending: completes at once

	// A contact's unsubscribed (ending a subscription of the handle to the
	// contact, which does not exist) is ignored. (Prosody does not pass it
	// on for a roster item of subscription "to"; ejabberd does.)
	bob.MustSend(t, fmt.Sprintf(`<presence type='unsubscribed' to='%s'/>`, hj))
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(bob, hj, "", "away", "a subscriber who sent unsubscribed still sees the owner")
	w.expectView(carol, hj, "", "away", "the other approved subscriber sees the owner")
	if r := bob.IQ(t, wait, "get", hj, `<query xmlns='jabber:iq:last'/>`); r.Attr("type") != "result" {
		t.Fatalf("last activity for a subscriber who sent unsubscribed: %s", r)
	}

	// Pending requests survive a restart.
	erin := w.contact("erin")
	w.sendSubscribe(erin, hj)
	alice.Expect(t, wait, "the owner told of erin's request", w.isRequestMessage(erin.Bare(), hj))
	w.d.stop()
	w.d = startDaemon(t, w.parent, w.cfg)
	sid = w.mustList(alice, requestValue(h, erin.Bare()))
	w.decide(alice, sid, "approve", requestValue(h, erin.Bare()))
	if p := w.expectApproved(erin, hj); p.Attr("type") != "" || p.ChildText("show") != "away" {
		t.Fatalf("approved after a restart, erin sees %s, want the owner away", p)
	}
	w.expectNone(
		absence{dave, "presence after a denial", isHandlePresence(hj)},
		absence{frank, "presence after taking the request back", isHandlePresence(hj)},
	)
}

// testStrangers: for someone who neither owns nor subscribes to a handle,
// the handle and a name that does not exist answer alike, to every IQ, a
// message, a subscription request and a probe; its owner and subscribers
// get the same answers whether the account is off-line or hiding.
func testStrangers(w *world) {
	t := w.t
	h := randomName("priv")
	hj := w.handleJID(h)
	alice, _ := w.ownerWith("alice", h, "ask")
	nobody := w.handleJID(randomName("none"))
	eve := w.contact("eve")

	payloads := []struct{ typ, xml string }{
		{"get", `<query xmlns='http://jabber.org/protocol/disco#info'/>`},
		{"get", `<query xmlns='http://jabber.org/protocol/disco#items'/>`},
		{"get", `<ping xmlns='urn:xmpp:ping'/>`},
		{"get", `<query xmlns='jabber:iq:last'/>`},
		{"get", `<query xmlns='jabber:iq:version'/>`},
		{"get", `<query xmlns='urn:example:unknown'/>`},
		{"set", `<query xmlns='urn:example:unknown'/>`},
		{"set", `<command xmlns='http://jabber.org/protocol/commands' node='set-status' action='execute'/>`},
	}
	for _, p := range payloads {
		for _, res := range []string{"", "/" + resource, "/elsewhere"} {
			got := eve.IQ(t, wait, p.typ, hj+res, p.xml)
			ref := eve.IQ(t, wait, p.typ, nobody+res, p.xml)
			sameRefusal(w, fmt.Sprintf("a stranger's iq %s %s to handle%s", p.typ, p.xml, res), got, ref, "service-unavailable")
		}
	}
	eve.MustSend(t, fmt.Sprintf(`<message type='chat' to='%s'><body>hello</body></message>`, hj))
	eve.MustSend(t, fmt.Sprintf(`<message type='chat' to='%s'><body>hello</body></message>`, nobody))
	sameRefusal(w, "a stranger's message",
		eve.Expect(t, wait, "the error answering a message to the handle", isMessageError(hj)),
		eve.Expect(t, wait, "the error answering a message to an unknown name", isMessageError(nobody)),
		"service-unavailable")

	// A request to an ask handle and one to an unknown name: no answer.
	w.sendSubscribe(eve, hj)
	w.sendSubscribe(eve, nobody)
	alice.Expect(t, wait, "the owner told of eve's request", w.isRequestMessage(eve.Bare(), hj))
	w.expectNone(
		absence{eve, "an answer to a request to an ask handle", anyPresenceFrom(hj)},
		absence{eve, "an answer to a request to an unknown name", anyPresenceFrom(nobody)},
	)
	// Probes: unsubscribed from the bare JID, alike. (Eve's server passes
	// an unsubscribed on to her because her requests are pending.)
	eve.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj))
	eve.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, nobody))
	got := eve.Expect(t, wait, "unsubscribed answering a stranger's probe of the handle", fromBareHandle(hj, "unsubscribed"))
	ref := eve.Expect(t, wait, "unsubscribed answering a stranger's probe of an unknown name", fromBareHandle(nobody, "unsubscribed"))
	if shape(got) != shape(ref) {
		t.Fatalf("probe answers differ:\n%s\n%s", got, ref)
	}

	// The owner and a subscriber: disco#info, ping and last activity, the
	// same whether the owner is off-line or hiding.
	bob := w.contact("bob")
	w.sendSubscribe(bob, hj)
	alice.Expect(t, wait, "the owner told of bob's request", w.isRequestMessage(bob.Bare(), hj))
	sid := w.mustList(alice, requestValue(h, eve.Bare()), requestValue(h, bob.Bare()))
	w.decide(alice, sid, "approve", requestValue(h, bob.Bare()))
	w.expectApproved(bob, hj)
	queries := []string{
		`<query xmlns='http://jabber.org/protocol/disco#info'/>`,
		`<ping xmlns='urn:xmpp:ping'/>`,
		`<query xmlns='jabber:iq:last'/>`,
	}
	answers := func(state string) []string {
		t.Helper()
		var shapes []string
		for _, c := range []*xmpptest.Client{alice, bob} {
			for _, q := range queries {
				r := c.IQ(t, wait, "get", hj, q)
				if r.Attr("type") != "result" {
					t.Fatalf("%s while the owner is %s: %s asked %s and got %s", hj, state, c.Bare(), q, r)
				}
				shapes = append(shapes, shape(r))
			}
		}
		return shapes
	}
	alice.MustSend(t, `<presence type='unavailable'/>`)
	w.expectView(bob, hj, "unavailable", "", "the owner off-line")
	offline := answers("off-line")
	alice.MustSend(t, `<presence/>`)
	w.expectView(bob, hj, "", "", "the owner back")
	w.mustComplete(alice, "set-status", map[string]string{"status": "hiding"})
	w.expectView(bob, hj, "unavailable", "", "the owner hiding")
	if hiding := answers("hiding"); !slices.Equal(offline, hiding) {
		t.Fatalf("the answers tell hiding from off-line:\noff-line: %q\nhiding:   %q", offline, hiding)
	}
}

// testNames: reserved names are refused in any case; a removed name is
// kept for the account that removed it.
func testNames(w *world) {
	t := w.t
	alice, _ := w.user("alice")
	bob, _ := w.user("bob")
	for _, name := range []string{"Admin", "ADMINISTRATOR", "root", "PostMaster", "hostmaster", "Webmaster",
		"abuse", "security", "Support", "noreply", "Presence"} {
		w.mustRefuse(alice, "add-handle", map[string]string{"handle": name, "subscriptions": "open"}, "not-allowed")
	}
	q := randomName("q")
	w.mustComplete(alice, "add-handle", map[string]string{"handle": q, "subscriptions": "open"})
	w.mustComplete(alice, "remove-handle", map[string]string{"handle": q})
	w.mustRefuse(bob, "add-handle", map[string]string{"handle": q, "subscriptions": "open"}, "conflict")
	w.mustRefuse(bob, "add-handle", map[string]string{"handle": strings.ToUpper(q), "subscriptions": "open"}, "conflict")
	w.mustComplete(alice, "add-handle", map[string]string{"handle": q, "subscriptions": "open"})
	if listed := w.mustComplete(alice, "list-handles", nil).String(); !strings.Contains(listed, q) {
		t.Fatalf("the name taken back is not listed: %s", listed)
	}
}

// testBadInput: wrong forms, presences and IQs get a clear error (or, for
// an IQ without an id, nothing) and change nothing.
func testBadInput(w *world) {
	t := w.t
	h := randomName("bad")
	hj := w.handleJID(h)
	alice, _ := w.owner("alice", h)
	bob, _ := w.subscriber("bob", h)

	// An unavailable presence over the stanza size limit still takes the
	// only resource off-line.
	alice.MustSend(t, `<presence type='unavailable'><status>`+strings.Repeat("z", 100<<10)+`</status></presence>`)
	w.expectView(bob, hj, "unavailable", "", "off-line after an oversized unavailable presence")
	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.expectView(bob, hj, "", "away", "the owner back, away")

	// A form of type cancel cancels the session, whatever it holds.
	for _, action := range []string{"complete", ""} {
		sid := w.executing(alice, "set-status")
		r := w.submit(alice, "set-status", sid, action, "cancel", fieldXML("status", "hiding"))
		if cmd := r.ChildNS(nsCommands, "command"); r.Attr("type") != "result" || cmd.Attr("status") != "canceled" {
			t.Fatalf("a cancel form with action %q: %s, want status canceled", action, r)
		}
		if r := w.submit(alice, "set-status", sid, "complete", "submit", fieldXML("status", "hiding")); !isBadSession(r) {
			t.Fatalf("the session canceled by a cancel form still takes a form: %s", r)
		}
	}
	// Two values in a list-single field.
	sid := w.executing(alice, "set-status")
	r := w.submit(alice, "set-status", sid, "complete", "submit", fieldXML("status", "hiding", "busy"))
	if r.Attr("type") != "error" || xmpptest.StanzaErrorCondition(r) != "bad-request" {
		t.Fatalf("two values in a list-single field: %s, want bad-request", r)
	}
	// Invalid show and priority.
	for _, p := range []string{
		`<presence><show>sleeping</show></presence>`,
		`<presence><priority>abc</priority></presence>`,
		`<presence><priority>999</priority></presence>`,
	} {
		alice.MustSend(t, p)
		e := alice.Expect(t, wait, "a presence error for "+p, func(e *xmpptest.Element) bool {
			return e.Name.Local == "presence" && e.Attr("type") == "error"
		})
		if xmpptest.StanzaErrorCondition(e) != "bad-request" {
			t.Fatalf("%s: got %s, want a bad-request error", p, e)
		}
		switch from := e.Attr("from"); {
		case strings.EqualFold(from, w.domain):
		case from == "" || strings.EqualFold(from, w.srv.Domain) || strings.EqualFold(xmpptest.Bare(from), alice.Bare()):
			// ejabberd checks <show/> and <priority/> itself: the stanza
			// never reaches presenced.
			t.Logf("%s refused %s itself: %s", w.srv.Name, p, e)
		default:
			t.Fatalf("%s: the error comes from %q: %s", p, from, e)
		}
	}
	// An IQ without an id gets no answer. The servers answer an IQ that
	// lacks the attribute themselves, so this one has it empty.
	alice.MustSend(t, fmt.Sprintf(`<iq type='get' id='' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, w.domain))
	w.expectNone(
		absence{bob, "a change after canceled forms, a two-valued field and invalid presences", isHandlePresence(hj)},
		absence{alice, "an answer to an IQ without an id", func(e *xmpptest.Element) bool {
			return e.Name.Local == "iq" && e.Attr("id") == "" && strings.EqualFold(xmpptest.Bare(e.Attr("from")), w.domain)
		}},
	)
	if r := alice.IQ(t, wait, "get", w.domain, `<ping xmlns='urn:xmpp:ping'/>`); r.Attr("type") != "result" {
		t.Fatalf("ping after an IQ without an id: %s", r)
	}

	// XEP-0186 in urn:xmpp:invisible:1 works like :0.
	if r := alice.IQ(t, wait, "set", w.domain, `<invisible xmlns='urn:xmpp:invisible:1'/>`); r.Attr("type") != "result" {
		t.Fatalf("invisible:1: %s", r)
	}
	w.expectView(bob, hj, "unavailable", "", "invisible in urn:xmpp:invisible:1")
	if r := alice.IQ(t, wait, "set", w.domain, `<visible xmlns='urn:xmpp:invisible:1'/>`); r.Attr("type") != "result" {
		t.Fatalf("visible:1: %s", r)
	}
	w.expectView(bob, hj, "", "away", "visible in urn:xmpp:invisible:1")
}

// testDefaultLimits: the default limits that a test can reach cheaply:
// 512 bytes of status text, 8 command sessions per user (bare JID,
// whatever the resource).
func testDefaultLimits(w *world) {
	t := w.t
	h := randomName("lim")
	hj := w.handleJID(h)
	alice, aliceName := w.owner("alice", h)
	bob, _ := w.subscriber("bob", h)

	// 2000 bytes, where byte 512 falls inside a three-byte character.
	text := "a" + strings.Repeat("€", 666) + "z"
	alice.MustSend(t, `<presence><show>away</show><status>`+text+`</status></presence>`)
	got := w.expectView(bob, hj, "", "away", "a 2000-byte status").ChildText("status")
	if len(got) > 512 || len(got) <= 512-utf8.UTFMax || !utf8.ValidString(got) || !strings.HasPrefix(text, got) {
		t.Fatalf("a 2000-byte status reached a subscriber as %d bytes (valid UTF-8: %v, a prefix: %v), want its first 512 bytes or less, cut between characters",
			len(got), utf8.ValidString(got), strings.HasPrefix(text, got))
	}

	// Command sessions: the oldest of a user's nine goes, and a ninth from
	// another resource of the same user pushes out the next oldest (a user
	// cycling resources cannot open more); another user keeps theirs.
	other := w.executing(bob, "list-handles")
	var sids []string
	for i := 0; i < 9; i++ {
		sids = append(sids, w.executing(alice, "list-handles"))
	}
	phone := w.login(aliceName, "phone")
	onPhone := w.executing(phone, "list-handles")
	for _, sid := range sids[:2] {
		if r := w.submit(alice, "list-handles", sid, "complete", "submit", ""); !isBadSession(r) {
			t.Fatalf("one of the two oldest of ten command sessions of one user is still open: %s", r)
		}
	}
	for _, s := range []struct {
		c   *xmpptest.Client
		sid string
	}{{alice, sids[2]}, {alice, sids[8]}, {phone, onPhone}, {bob, other}} {
		mustBeCompleted(w, w.submit(s.c, "list-handles", s.sid, "complete", "submit", ""), "a command session within the limit")
	}
}

// testRemovalNotices: the notices owed to a removed handle's subscribers
// are stored with the removal, so a kill -9 right after remove-handle
// completed loses none.
func testRemovalNotices(w *world) {
	t := w.t
	h := randomName("gone")
	hj := w.handleJID(h)
	alice, _ := w.owner("alice", h)
	var subs []*xmpptest.Client
	for _, p := range []string{"bob", "carol", "dave"} {
		c, _ := w.subscriber(p, h)
		subs = append(subs, c)
	}
	w.mustComplete(alice, "remove-handle", map[string]string{"handle": h})
	w.d.kill()
	w.d = startDaemon(t, w.parent, w.cfg)
	var none []absence
	for _, c := range subs {
		w.expectView(c, hj, "unavailable", "", "unavailable from the removed handle")
		c.Expect(t, wait, "unsubscribed from the removed handle", fromBareHandle(hj, "unsubscribed"))
		// The notices may come twice (before the kill and after the
		// restart); the handle must not come back.
		none = append(none, absence{c, "the removed handle available after the restart", xmpptest.IsPresence(hj, "")})
	}
	w.expectNone(none...)
}

// testFailClosed: during a storage outage hiding holds at once and is
// stored once storage is back; an unsubscription ends at once and for
// good; a command that needs storage is refused.
func testFailClosed(w *world) {
	t := w.t
	if w.backend.driver != "postgres" {
		t.Skip("the SQLite store is a local file; there is no server to go down")
	}
	h := randomName("fc")
	hj := w.handleJID(h)
	alice, _ := w.owner("alice", h)
	bob, _ := w.subscriber("bob", h)
	carol, _ := w.subscriber("carol", h)
	h2 := randomName("fc2") // hidden by XEP-0186, another route
	hj2 := w.handleJID(h2)
	dave, _ := w.owner("dave", h2)
	erin, _ := w.subscriber("erin", h2)
	down, up := w.databaseOutage()

	down()
	note := w.mustComplete(alice, "set-status", map[string]string{"status": "hiding"}).ChildText("note")
	if !strings.Contains(note, "not stored yet") {
		t.Fatalf("hiding during a storage outage: note %q, want it to say \"not stored yet\"", note)
	}
	w.expectView(bob, hj, "unavailable", "", "hiding during the outage")
	w.expectView(carol, hj, "unavailable", "", "hiding during the outage")
	// An IQ cannot say "not stored yet"; its answer is not checked, its
	// effect is.
	dave.IQ(t, wait, "set", w.domain, `<invisible xmlns='urn:xmpp:invisible:0'/>`)
	w.expectView(erin, hj2, "unavailable", "", "XEP-0186 invisible during the outage")
	alice.MustSend(t, `<presence><show>dnd</show><status>am I hidden?</status></presence>`)
	carol.MustSend(t, fmt.Sprintf(`<presence type='unsubscribe' to='%s'/>`, hj))
	w.expectView(carol, hj, "unavailable", "", "the answer to unsubscribing during the outage")
	w.mustRefuse(alice, "add-handle", map[string]string{"handle": randomName("x"), "subscriptions": "open"}, "internal-server-error")

	up()
	w.awaitStorage(alice)
	time.Sleep(storeRetry)
	w.d.kill()
	w.d = startDaemon(t, w.parent, w.cfg)
	w.expectView(bob, hj, "unavailable", "", "still hiding after the outage, a kill -9 and a restart")
	w.expectView(erin, hj2, "unavailable", "", "still invisible after the outage, a kill -9 and a restart")
	w.expectNone(
		absence{bob, "the hiding account available", xmpptest.IsPresence(hj, "")},
		absence{erin, "the invisible account available", xmpptest.IsPresence(hj2, "")},
		absence{carol, "presence after unsubscribing during the outage", isHandlePresence(hj)},
	)
	if r := carol.IQ(t, wait, "get", hj, `<query xmlns='jabber:iq:last'/>`); xmpptest.StanzaErrorCondition(r) != "service-unavailable" {
		t.Fatalf("the unsubscription made during the outage came back: last activity for carol: %s", r)
	}
	if r := bob.IQ(t, wait, "get", hj, `<query xmlns='jabber:iq:last'/>`); r.Attr("type") != "result" {
		t.Fatalf("last activity for a subscriber: %s", r)
	}
}

// testStandby: a second presenced on the same database waits; killed with
// kill -9 while its owner changes status in a loop, the active one is
// replaced within 5 s with every change it acknowledged; a clean stop
// hands over too; and (PostgreSQL) an instance that lost the lock to
// another exits.
func testStandby(w *world) {
	t := w.t
	h := randomName("sb")
	hj := w.handleJID(h)
	alice, _ := w.owner("alice", h)
	bob, _ := w.subscriber("bob", h)

	standby := w.launchStandby()
	first := w.d
	type killEvent struct {
		at     time.Time
		before string // the standby's log just before the kill
	}
	killed := make(chan killEvent, 1)
	go func() {
		time.Sleep(800 * time.Millisecond)
		before := standby.out.String()
		_ = first.cmd.Process.Kill()
		killed <- killEvent{time.Now(), before}
	}()
	statuses := []struct{ value, show string }{{"away", "away"}, {"busy", "dnd"}, {"undefined", ""}}
	acked, inFlight, n := -1, -1, 0
	var k killEvent
loop:
	for i := 0; ; i++ {
		select {
		case k = <-killed:
			break loop
		default:
		}
		s := i % len(statuses)
		if !w.trySetStatus(alice, statuses[s].value, 2*time.Second) {
			inFlight = s // sent and not acknowledged: it may have been stored
			k = <-killed
			break loop
		}
		acked, n = s, n+1
	}
	<-first.done
	w.d = standby
	if connectedLines(k.before) != 0 {
		t.Fatalf("the standby connected to the XMPP server while the first instance ran:\n%s", k.before)
	}
	if acked < 0 || n < 3 {
		t.Fatalf("only %d status changes acknowledged before the kill", n)
	}
	connected := w.waitConnected(standby, wait)
	bob.Drain()
	bob.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj))
	p := bob.Expect(t, wait, "the standby's answer to a probe", isHandlePresence(hj))
	answered := time.Since(k.at)
	checkFullJID(t, p, hj)
	// The standby asks the owners' servers for their presence when it
	// connects, as after any restart: a probe answered before the owner's
	// presence came back says unavailable, and the resync that follows
	// shows the owner. Both must come within the takeover time.
	first0 := p
	if p.Attr("type") == "unavailable" {
		p = bob.Expect(t, wait, "the standby showing the owner once it knows the owner is on-line", isHandlePresence(hj))
		checkFullJID(t, p, hj)
	}
	settled := time.Since(k.at)
	t.Logf("standby: connected %v, answered a probe %v and showed the owner %v after kill -9 (%d changes acknowledged before; first answer %s)",
		connected.Sub(k.at).Round(time.Millisecond), answered.Round(time.Millisecond), settled.Round(time.Millisecond), n, first0)
	if settled > takeover {
		t.Errorf("the standby showed the owner %v after the kill (its first answer to a probe came after %v), want at most %v", settled, answered, takeover)
	}
	show := p.ChildText("show")
	if p.Attr("type") != "" || (show != statuses[acked].show && (inFlight < 0 || show != statuses[inFlight].show)) {
		t.Fatalf("the standby shows %s; the last change acknowledged was %q", p, statuses[acked].value)
	}
	standby.waitLog("resynchronised subscribers", 1)

	// A clean stop hands over too.
	second := w.launchStandby()
	if out := second.out.String(); connectedLines(out) != 0 {
		t.Fatalf("the second standby connected while the active instance ran:\n%s", out)
	}
	stopped := time.Now()
	w.d.stop()
	w.d = second
	w.expectView(bob, hj, "unavailable", "", "withdrawn at the clean stop")
	second.waitLog("resynchronised subscribers", 1)
	t.Logf("standby: took over %v after a clean stop", time.Since(stopped).Round(time.Millisecond))
	w.expectView(bob, hj, "", show, "shown again by the standby after a clean stop")

	if w.backend.driver != "postgres" {
		t.Log("SQLite: the lock is the file's; no test takes it from a running instance")
		return
	}
	// The active instance loses its lock (its session ends) while frozen;
	// a standby takes it; the old one, thawed, must stop serving.
	third := w.launchStandby()
	admin := w.adminConn()
	holders := w.lockHolders(admin)
	if len(holders) != 1 {
		t.Fatalf("%d sessions hold an advisory lock on the database (%v), want the active instance's one", len(holders), holders)
	}
	active := w.d
	pid := active.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		if w.d != active {
			active.kill() // it should have exited by itself
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", holders[0]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		if hs := w.lockHolders(admin); len(hs) == 1 && hs[0] != holders[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no other instance took the lock once the active one lost it:\n%s", third.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	w.d = third
	active.t = t
	if code := active.exited(30 * time.Second); code == 0 {
		t.Fatalf("the instance that lost the lock exited with 0, want non-zero:\n%s", active.out.String())
	}
	if !strings.Contains(active.out.String(), "another presenced took over the database") {
		t.Fatalf("the instance that lost the lock did not say so:\n%s", active.out.String())
	}
	// The new instance serves: it answers a probe, shows the owner's
	// status, and completes a command that needs storage. ejabberd (unlike
	// Prosody) accepts the new instance's component stream while the old
	// one still holds its own, and may route the owner's answer to the new
	// instance's first probe to the old one, which drops it: the owner may
	// show off-line for a moment, until the second probe after the resync
	// is answered.
	third.waitLog("resynchronised subscribers", 1)
	bob.Drain()
	bob.MustSend(t, fmt.Sprintf(`<presence type='probe' to='%s'/>`, hj))
	answer := bob.Expect(t, wait, "the new instance's answer to a probe", isHandlePresence(hj))
	checkFullJID(t, answer, hj)
	for answer.Attr("type") != "" || answer.ChildText("show") != show {
		answer = bob.Expect(t, wait, "the owner's status shown by the new instance", isHandlePresence(hj))
	}
	w.mustComplete(alice, "add-handle", map[string]string{"handle": randomName("after"), "subscriptions": "open"})
}

// testOwnerDomains: a user of a domain not in owner_domains is refused
// every command with forbidden.
func testOwnerDomains(w *world) {
	t := w.t
	w.useSpecialDaemon(w.freshBackend(), "[accounts]\nowner_domains = [\"example.org\"]\n")
	alice, _ := w.user("alice") // a user of localhost: a stranger here
	for _, c := range []struct {
		node   string
		fields string
	}{
		{"add-handle", fieldXML("handle", randomName("f")) + fieldXML("subscriptions", "open")},
		{"remove-handle", fieldXML("handle", randomName("f"))},
		{"list-handles", ""},
		{"set-status", fieldXML("status", "away")},
		{"requests", fieldXML("decision", "approve")},
	} {
		r := alice.IQ(t, wait, "set", w.domain, fmt.Sprintf(`<command xmlns='%s' node='%s' action='execute'/>`, nsCommands, c.node))
		if cmd := r.ChildNS(nsCommands, "command"); r.Attr("type") == "result" && cmd.Attr("status") == "executing" {
			r = w.submit(alice, c.node, cmd.Attr("sessionid"), "complete", "submit", c.fields)
		}
		if r.Attr("type") != "error" || xmpptest.StanzaErrorCondition(r) != "forbidden" || r.Child("error").ChildText("text") == "" {
			t.Fatalf("%s by a user of a domain not in owner_domains: %s, want forbidden with a text", c.node, r)
		}
	}
	if r := alice.IQ(t, wait, "get", w.domain, `<ping xmlns='urn:xmpp:ping'/>`); r.Attr("type") != "result" {
		t.Fatalf("ping: %s", r)
	}
	// Issue 9: a chat command from a user who may not own handles gets no
	// answer but the error that a message to a handle gets.
	alice.MustSend(t, `<presence/>`)
	nobody := w.handleJID(randomName("none"))
	alice.MustSend(t, fmt.Sprintf(`<message type='chat' to='%s'><body>help</body></message>`, w.domain))
	alice.MustSend(t, fmt.Sprintf(`<message type='chat' to='%s'><body>help</body></message>`, nobody))
	sameRefusal(w, "a chat command from a user who may not own handles",
		alice.Expect(t, wait, "the error answering a chat command", isMessageError(w.domain)),
		alice.Expect(t, wait, "the error answering a message to a handle", isMessageError(nobody)),
		"service-unavailable")
	// The component answers in order: any answer to the chat command came
	// before the error for the message to the handle.
	alice.ExpectNone(t, 0, "an answer to a chat command from a user who may not own handles", xmpptest.IsMessage(w.domain))
}

// limitsTOML sets limits small enough to reach in a test.
const limitsTOML = `
[accounts]
max_accounts = 2

[limits]
resources = 2
pending_per_handle = 2
subscribers_per_handle = 2
`

// testLimits: max_accounts, and per account and per handle the resources,
// subscribers and pending requests kept.
func testLimits(w *world) {
	t := w.t
	w.useSpecialDaemon(w.freshBackend(), limitsTOML)
	ho, ha := randomName("open"), randomName("ask")
	hoj, haj := w.handleJID(ho), w.handleJID(ha)
	alice, aliceName := w.owner("alice", ho) // account 1
	w.mustComplete(alice, "add-handle", map[string]string{"handle": ha, "subscriptions": "ask"})
	bob, _ := w.user("bob")
	w.mustComplete(bob, "add-handle", map[string]string{"handle": randomName("b"), "subscriptions": "open"}) // account 2
	carol, _ := w.user("carol")
	w.mustRefuse(carol, "add-handle", map[string]string{"handle": randomName("c"), "subscriptions": "open"}, "not-allowed")

	s1, _ := w.subscriber("s1", ho)
	w.subscriber("s2", ho)
	s3 := w.contact("s3")
	w.sendSubscribe(s3, hoj) // one subscriber too many
	p1, p2, p3 := w.contact("p1"), w.contact("p2"), w.contact("p3")
	for _, p := range []*xmpptest.Client{p1, p2} {
		w.sendSubscribe(p, haj)
		alice.Expect(t, wait, "the owner told of a request", w.isRequestMessage(p.Bare(), haj))
	}
	w.sendSubscribe(p3, haj) // one pending request too many

	phone := w.login(aliceName, "phone")
	phone.MustSend(t, `<presence><show>away</show><priority>5</priority></presence>`)
	w.expectView(s1, hoj, "", "away", "the second resource, away, has the higher priority")
	tab := w.login(aliceName, "tab") // a third resource: beyond the limit
	tab.MustSend(t, `<presence><show>dnd</show><priority>10</priority></presence>`)
	w.expectNone(
		absence{s1, "a change made by a third resource", isHandlePresence(hoj)},
		absence{s3, "subscribed beyond subscribers_per_handle", xmpptest.IsPresence(hoj, "subscribed")},
		absence{s3, "presence beyond subscribers_per_handle", xmpptest.IsPresence(hoj, "")},
		absence{alice, "a message for a request beyond pending_per_handle", w.isRequestMessage(p3.Bare(), haj)},
		absence{p3, "an answer to a request beyond pending_per_handle", anyPresenceFrom(haj)},
	)
	if r := s3.IQ(t, wait, "get", hoj, `<query xmlns='jabber:iq:last'/>`); xmpptest.StanzaErrorCondition(r) != "service-unavailable" {
		t.Fatalf("a subscriber beyond subscribers_per_handle was taken: last activity: %s", r)
	}
	w.mustList(alice, requestValue(ha, p1.Bare()), requestValue(ha, p2.Bare()))
}

// faultCell is one owner's part of the storage fault test: an open handle
// with a subscriber who stays and one who leaves, a contact who
// subscribes, and an ask handle that a contact asks to see.
type faultCell struct {
	owner                     *xmpptest.Client
	h, a, hj, aj              string
	stay, leave, newbie, asks *xmpptest.Client
	note                      string // the hiding command's note
}

// testStorageFault: PostgreSQL (a cluster of the test's own) stops and
// starts again during a burst of hides, unsubscriptions and subscription
// requests: nothing acknowledged is lost and no hiding account shows
// available to anyone, during the outage or after a restart.
func testStorageFault(w *world) {
	t := w.t
	if w.backend.driver != "postgres" {
		t.Skip("the SQLite store is a local file; there is no server to go down")
	}
	cluster := testenv.NewPostgresCluster(t)
	w.useSpecialDaemon(backend{"postgres", "postgres", cluster.DSN()}, "")
	cells := make([]*faultCell, 5)
	for i := range cells {
		c := &faultCell{h: randomName("f"), a: randomName("fa")}
		c.hj, c.aj = w.handleJID(c.h), w.handleJID(c.a)
		c.owner, _ = w.owner(fmt.Sprintf("o%d", i), c.h)
		w.mustComplete(c.owner, "add-handle", map[string]string{"handle": c.a, "subscriptions": "ask"})
		c.stay, _ = w.subscriber("stay", c.h)
		c.leave, _ = w.subscriber("leave", c.h)
		c.newbie, c.asks = w.contact("new"), w.contact("asks")
		cells[i] = c
	}
	// One cell's burst: hiding first (always acknowledged, stored or not),
	// then requests that the component answers by itself.
	burst := func(c *faultCell) {
		c.note = w.mustComplete(c.owner, "set-status", map[string]string{"status": "hiding"}).ChildText("note")
		c.owner.MustSend(t, `<presence><show>chat</show><status>am I hidden?</status></presence>`)
		c.leave.MustSend(t, fmt.Sprintf(`<presence type='unsubscribe' to='%s'/>`, c.hj))
		w.sendSubscribe(c.newbie, c.hj)
		w.sendSubscribe(c.asks, c.aj)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	burst(cells[0]) // storage up: the requests are answered
	cells[0].newbie.Expect(t, wait, "subscribed while storage works", fromBareHandle(cells[0].hj, "subscribed"))
	cells[0].owner.Expect(t, wait, "the owner told of a request while storage works", w.isRequestMessage(cells[0].asks.Bare(), cells[0].aj))
	stopped := make(chan error, 1)
	go func() { stopped <- cluster.Stop() }()
	burst(cells[1]) // while it stops
	must(<-stopped)
	burst(cells[2]) // storage down
	started := make(chan error, 1)
	go func() { started <- cluster.Start() }()
	burst(cells[3]) // while it starts
	must(<-started)
	burst(cells[4]) // storage back; presenced may not know yet
	if !strings.Contains(cells[2].note, "not stored yet") {
		t.Fatalf("hiding while PostgreSQL was down: note %q, want it to say \"not stored yet\"", cells[2].note)
	}
	for _, c := range cells {
		w.expectView(c.stay, c.hj, "unavailable", "", "hiding")
		w.expectView(c.leave, c.hj, "unavailable", "", "hiding, or the answer to unsubscribing")
	}

	w.awaitStorage(cells[0].owner)
	time.Sleep(storeRetry)
	// What was acknowledged: a subscription answered with subscribed, a
	// request the owner was told of.
	subscribed := make([]bool, len(cells))
	told := make([]bool, len(cells))
	subscribed[0], told[0] = true, true // claimed above
	for i, c := range cells[1:] {
		subscribed[i+1] = slices.ContainsFunc(c.newbie.Backlog(), fromBareHandle(c.hj, "subscribed"))
		told[i+1] = slices.ContainsFunc(c.owner.Backlog(), w.isRequestMessage(c.asks.Bare(), c.aj))
	}
	w.d.kill()
	w.d = startDaemon(t, w.parent, w.cfg)

	var none []absence
	for _, c := range cells {
		w.expectView(c.stay, c.hj, "unavailable", "", "still hiding after a kill -9 and a restart")
		for _, s := range []*xmpptest.Client{c.stay, c.leave, c.newbie} {
			none = append(none, absence{s, "the hiding account available", xmpptest.IsPresence(c.hj, "")})
		}
	}
	w.expectNone(none...)
	for i, c := range cells {
		if r := c.leave.IQ(t, wait, "get", c.hj, `<query xmlns='jabber:iq:last'/>`); xmpptest.StanzaErrorCondition(r) != "service-unavailable" {
			t.Errorf("burst %d: an unsubscription came back after the restart: last activity for %s: %s", i, c.leave.Bare(), r)
		}
		if r := c.stay.IQ(t, wait, "get", c.hj, `<query xmlns='jabber:iq:last'/>`); r.Attr("type") != "result" {
			t.Errorf("burst %d: a subscription was lost: last activity for %s: %s", i, c.stay.Bare(), r)
		}
		if subscribed[i] {
			if r := c.newbie.IQ(t, wait, "get", c.hj, `<query xmlns='jabber:iq:last'/>`); r.Attr("type") != "result" {
				t.Errorf("burst %d: a subscription acknowledged with subscribed was lost: last activity for %s: %s", i, c.newbie.Bare(), r)
			}
		}
		if told[i] {
			if _, got := w.pendingRequests(c.owner); !slices.Contains(got, requestValue(c.a, c.asks.Bare())) {
				t.Errorf("burst %d: the request the owner was told of was lost: requests lists %q", i, got)
			}
		}
	}
	t.Logf("bursts 0-4: subscriptions acknowledged %v, requests told to the owner %v", subscribed, told)
}
