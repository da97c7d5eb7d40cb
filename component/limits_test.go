package component

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

type countingHandler struct{ warns *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestTooBigLoggedOnce: a stranger's stanzas over the limits (about 100
// bytes each) are each refused, but logged once, not once per stanza.
func TestTooBigLoggedOnce(t *testing.T) {
	tc := startTestComponent(t, "")
	var warns atomic.Int64
	done := make(chan struct{})
	tc.r.Do(func() { tc.c.log = slog.New(countingHandler{&warns}); close(done) })
	<-done
	deep := strings.Repeat("<a>", maxStanzaDepth+1) + strings.Repeat("</a>", maxStanzaDepth+1)
	const n = 200
	for i := 0; i < n; i++ {
		tc.send(`<message from='mallory@evil.example/x' to='nobody@%s'>%s</message>`, testDomain, deep)
	}
	if err := waitEmpty(tc.r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		tc.expect("policy-violation", isStanza("message", "error", "", "mallory@evil.example/x"))
	}
	if w := warns.Load(); w > 1 {
		t.Fatalf("%d warn lines for %d over-limit stanzas from one stranger, want 1", w, n)
	}
}

// TestBadPriorityUnavailableCounts: an owner's unavailable presence with an
// out-of-range <priority/> still takes the resource off-line (neither show
// nor priority matters to it), like an over-size one.
func TestBadPriorityUnavailableCounts(t *testing.T) {
	tc, h := setupSubscribed(t)
	tc.send(`<presence from='%s/pc' to='%s'/>`, alice, testDomain)
	tc.expect("available", func(n *node) bool { return isPresenceOf(full(h), carol)(n) && n.get("type") == "" })
	tc.send(`<presence type='unavailable' from='%s/pc' to='%s'><priority>500</priority></presence>`, alice, testDomain)
	if p := tc.expect("the handle off-line", isPresenceOf(full(h), carol)); p.get("type") != "unavailable" {
		t.Fatalf("after an unavailable with a bad priority: %s", p)
	}
	tc.expectNone(quiet, "an error for an unavailable presence", isStanza("presence", "error", "", alice+"/pc"))
}

// TestOwnerToldOnce: one stranger repeating subscribe and unsubscribe to
// an ask handle gets its owner one chat message, not one per cycle, and
// many strangers at once get the owner at most toldPerHour an hour; the
// requests are listed all the same.
func TestOwnerToldOnce(t *testing.T) {
	tc := startTestComponent(t, "")
	h := addAsk(t, tc, "ask")
	isTold := isStanza("message", "chat", testDomain, alice)
	for i := 0; i < 20; i++ {
		tc.send(`<presence type='subscribe' from='mallory@evil.example' to='%s'/>`, h)
		tc.send(`<presence type='unsubscribe' from='mallory@evil.example' to='%s'/>`, h)
	}
	tc.send(`<presence type='subscribe' from='mallory@evil.example' to='%s'/>`, h)
	tc.expect("the owner told", isTold)
	tc.expectNone(quiet, "the owner told again of the same request", isTold)
	if _, values := requestOptions(t, tc); fmt.Sprint(values) != "[ask mallory@evil.example]" {
		t.Fatalf("requests = %v, want mallory's", values)
	}
	for i := 0; i < toldPerHour+10; i++ {
		tc.send(`<presence type='subscribe' from='m%d@evil.example' to='%s'/>`, i, h)
	}
	for i := 0; i < toldPerHour-1; i++ {
		tc.expect("the owner told of another request", isTold)
	}
	tc.expectNone(quiet, "more messages in an hour than toldPerHour", isTold)
}

// TestIQWithoutIDNeverAnswered: an IQ without an id is dropped, also when
// its 'to' is of another domain or when it is over the limits.
func TestIQWithoutIDNeverAnswered(t *testing.T) {
	tc := startTestComponent(t, "")
	tc.send(`<iq type='get' from='%s/pc' to='x@elsewhere.example'><ping xmlns='%s'/></iq>`, alice, nsPing)
	deep := strings.Repeat("<a>", maxStanzaDepth+1) + strings.Repeat("</a>", maxStanzaDepth+1)
	tc.send(`<iq type='get' from='%s/pc' to='%s'>%s</iq>`, alice, testDomain, deep)
	tc.expectNone(quiet, "an answer to an IQ without an id", isStanza("iq", "error", "", alice+"/pc"))
}

// TestCommandSessionsOfOthersStay: one user cycling resources holds no
// more sessions than the bound, so it cannot push other users' out.
func TestCommandSessionsOfOthersStay(t *testing.T) {
	tc := startTestComponent(t, "")
	sid := tc.execute(t, alice+"/pc", "add-handle")
	const n = 200
	for i := 0; i < n; i++ {
		tc.send(`<iq type='set' id='e%d' from='%s/r%d' to='%s'><command xmlns='%s' node='list-handles' action='execute'/></iq>`, i, bob, i, testDomain, nsCommands)
	}
	tc.expect("the last execute answered", isReplyTo(fmt.Sprintf("e%d", n-1)))
	held := make(chan int)
	tc.r.Do(func() { held <- len(tc.c.cmds.sessions) })
	if got := <-held; got > DefaultMaxCommandSessions+1 {
		t.Fatalf("%d sessions held after %d from one user's resources, want at most %d and alice's", got, n, DefaultMaxCommandSessions)
	}
	wantCompleted(t, tc.complete(t, alice+"/pc", "add-handle", sid, map[string]string{"handle": "a"}))
}
