package alone

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// tokens runs a Scanner over input to the end and returns kind:bytes
// strings.
func tokens(t *testing.T, r io.Reader) []string {
	t.Helper()
	sc := NewScanner(r)
	var got []string
	for i := 0; i < 100; i++ {
		kind, el, err := sc.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, string(rune('0'+kind))+":"+string(el))
	}
	t.Fatal("no end after 100 tokens")
	return nil
}

const stream = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='presence.localhost'>` +
	`<handshake>abc</handshake> ` +
	`<presence from="h1@presence.localhost/presenced" to="c2@example.net"><show>away</show><c xmlns="http://jabber.org/protocol/caps" ver="a&gt;b"/></presence>` +
	"\n<!-- a comment with <tags> -->" +
	`<presence type='subscribed' from='h0@presence.localhost' to='c7@example.net'/>` +
	`<iq type='get' id='x>y' to='a@b'><query xmlns='q'><item/></query></iq>` +
	`</stream:stream>`

var want = []string{
	`1:<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='presence.localhost'>`,
	`2:<handshake>abc</handshake>`,
	`2:<presence from="h1@presence.localhost/presenced" to="c2@example.net"><show>away</show><c xmlns="http://jabber.org/protocol/caps" ver="a&gt;b"/></presence>`,
	`2:<presence type='subscribed' from='h0@presence.localhost' to='c7@example.net'/>`,
	`2:<iq type='get' id='x>y' to='a@b'><query xmlns='q'><item/></query></iq>`,
	`3:</stream:stream>`,
}

func TestScannerSplitsTopLevelElements(t *testing.T) {
	readers := map[string]io.Reader{
		"whole":       strings.NewReader(stream),
		"byte a time": iotest.OneByteReader(strings.NewReader(stream)),
		"half":        iotest.HalfReader(strings.NewReader(stream)),
	}
	for name, r := range readers {
		got := tokens(t, r)
		if len(got) != len(want) {
			t.Fatalf("%s: got %d tokens %q, want %d", name, len(got), got, len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: token %d = %q, want %q", name, i, got[i], want[i])
			}
		}
	}
}

func TestScannerGrowsForLargeElements(t *testing.T) {
	big := "<message><body>" + strings.Repeat("x", 200<<10) + "</body></message>"
	got := tokens(t, strings.NewReader("<stream:stream>"+big))
	if len(got) != 2 || got[1] != "2:"+big {
		t.Fatalf("large element not returned whole (%d tokens)", len(got))
	}
	if _, _, err := nextTwice(NewScanner(strings.NewReader("<s><a>" + strings.Repeat("y", 2<<20)))); err == nil || err == io.EOF {
		t.Fatalf("unbounded element: err = %v, want the size error", err)
	}
}

// nextTwice returns the second token.
func nextTwice(sc *Scanner) (int, []byte, error) {
	if _, _, err := sc.Next(); err != nil {
		return 0, nil, err
	}
	return sc.Next()
}

func TestAttrAndChildText(t *testing.T) {
	el := []byte(`<presence xmlns='jabber:component:accept' type="unavailable" from='h12@presence.localhost/presenced' to='c3@example.net'><delay from='x' stamp='s'/><show>dnd</show></presence>`)
	cases := map[string]string{"type": "unavailable", "from": "h12@presence.localhost/presenced", "to": "c3@example.net", "stamp": "", "xmlns": "jabber:component:accept"}
	for name, v := range cases {
		if got := string(attr(el, name)); got != v {
			t.Errorf("attr %s = %q, want %q", name, got, v)
		}
	}
	if got := string(attr([]byte(`<presence xmlns:to='n' to='a@b'/>`), "to")); got != "a@b" {
		t.Errorf("attr to after xmlns:to = %q, want a@b", got)
	}
	if got := string(childText(el, "show")); got != "dnd" {
		t.Errorf("show = %q", got)
	}
	if childText([]byte(`<presence to='a'/>`), "show") != nil {
		t.Error("show found in a presence without one")
	}
	if got := string(elemName(el)); got != "presence" {
		t.Errorf("name = %q", got)
	}
	if got := string(elemName([]byte("<handshake/>"))); got != "handshake" {
		t.Errorf("name = %q", got)
	}
}

func TestJIDIndex(t *testing.T) {
	cases := []struct {
		jid    string
		n      int
		ok     bool
		prefix byte
	}{
		{"h7@presence.localhost", 7, true, 'h'},
		{"h7@presence.localhost/presenced", 7, true, 'h'},
		{"h123@presence.localhost", 123, true, 'h'},
		{"h1000@presence.localhost", 0, false, 'h'}, // out of range
		{"h@presence.localhost", 0, false, 'h'},
		{"hx1@presence.localhost", 0, false, 'h'},
		{"h1@presence.localhost.evil", 0, false, 'h'},
		{"c19999@example.net", 19999, true, 'c'},
		{"owner@example.org", 0, false, 'c'},
		{"presence.localhost", 0, false, 'h'},
	}
	for _, c := range cases {
		dom := domain
		if c.prefix == 'c' {
			dom = contactDomain
		}
		n, ok := jidIndex([]byte(c.jid), c.prefix, dom, 20000)
		if c.prefix == 'h' {
			n, ok = jidIndex([]byte(c.jid), c.prefix, dom, 1000)
		}
		if n != c.n || ok != c.ok {
			t.Errorf("jidIndex(%q) = %d, %v; want %d, %v", c.jid, n, ok, c.n, c.ok)
		}
	}
}

func TestHandshakeDigest(t *testing.T) {
	// sha1("abc") is the FIPS 180 test vector.
	if got := handshakeDigest("ab", "c"); got != "a9993e364706816aba3e25717850c26c9cd0d89d" {
		t.Errorf("digest(ab+c) = %s, want sha1(abc)", got)
	}
}

func TestStormCountsFirstAnswers(t *testing.T) {
	s := newStorm(false, 2, 3, 10)
	for range 6 {
		s.slots <- struct{}{}
	}
	feed := func(x string) { s.stanza([]byte(x)) }
	feed(`<presence type='subscribed' from='h1@presence.localhost' to='c2@example.net'/>`)
	feed(`<presence type='subscribed' from='h1@presence.localhost' to='c2@example.net'/>`) // duplicate
	feed(`<presence from='h1@presence.localhost/presenced' to='c2@example.net' type='unavailable'/>`)
	feed(`<presence type='unsubscribed' from='h0@presence.localhost' to='c0@example.net'/>`)
	feed(`<presence from='presence.localhost' to='owner@example.org' type='probe'/>`)
	if s.answered.Load() != 2 || s.failed.Load() != 1 || s.dups.Load() != 1 || s.extra.Load() != 1 || s.other.Load() != 1 {
		t.Fatalf("answered %d failed %d dups %d extra %d other %d", s.answered.Load(), s.failed.Load(), s.dups.Load(), s.extra.Load(), s.other.Load())
	}
	if len(s.slots) != 4 {
		t.Fatalf("%d slots in use, want 4", len(s.slots))
	}
	for j := range 2 {
		for k := range 3 {
			feed(`<presence type='subscribed' from='h` + string(rune('0'+j)) + `@presence.localhost' to='c` + string(rune('0'+k)) + `@example.net'/>`)
		}
	}
	select {
	case <-s.done:
	default:
		t.Fatal("done not closed after every subscription answered")
	}
}

func TestFanoutCountsRoundShow(t *testing.T) {
	f := newFanout(1, 2)
	f.begin(1)
	f.stanza([]byte(`<presence from='h0@presence.localhost/presenced' to='c0@example.net'><show>dnd</show></presence>`))  // wrong show
	f.stanza([]byte(`<presence from='h0@presence.localhost/presenced' to='c0@example.net'><show>away</show></presence>`)) // counted
	f.stanza([]byte(`<presence from='h0@presence.localhost/presenced' to='c0@example.net'><show>away</show></presence>`)) // duplicate
	if _, n := f.current(); n != 1 || f.stray.Load() != 1 || f.dups.Load() != 1 || len(f.complete) != 0 {
		t.Fatalf("count %d stray %d dups %d", n, f.stray.Load(), f.dups.Load())
	}
	f.stanza([]byte(`<presence from='h0@presence.localhost' to='c1@example.net'><show>away</show></presence>`))
	if len(f.complete) != 1 {
		t.Fatal("round not complete")
	}
	// The next round counts the same subscriptions again.
	f.begin(2)
	if len(f.complete) != 0 {
		t.Fatal("begin left the previous round's completion")
	}
	f.stanza([]byte(`<presence from='h0@presence.localhost' to='c1@example.net'><show>dnd</show></presence>`))
	if _, n := f.current(); n != 1 || f.dups.Load() != 1 {
		t.Fatalf("round 2: count %d dups %d", n, f.dups.Load())
	}
}

func TestFanoutLateStanzaDoesNotCountInNextRound(t *testing.T) {
	f := newFanout(1, 2)
	f.begin(1)
	// A stanza of round 1 read just before the switch to round 2 is
	// tallied after it: it must not count towards round 2.
	f.begin(2)
	if f.tally(1) {
		t.Fatal("a round-1 stanza counted after the switch to round 2")
	}
	if round, n := f.current(); round != 2 || n != 0 {
		t.Fatalf("round %d count %d, want 2 and 0", round, n)
	}
	first, second := f.tally(2), f.tally(2)
	if !first || !second || len(f.complete) != 1 {
		t.Fatal("round 2 not counted to completion")
	}
}

func TestShowOfAlternates(t *testing.T) {
	got := []string{showOf(0), showOf(1), showOf(2), showOf(3)}
	if strings.Join(got, ",") != ",away,dnd,away" {
		t.Fatalf("shows %q", got)
	}
}

func TestConfigHasNoResourceKey(t *testing.T) {
	c := configText("127.0.0.1:5", "s", "sqlite", "/x/presence.db")
	if strings.Contains(c, "resource") {
		t.Fatalf("config has a resource key:\n%s", c)
	}
	for _, want := range []string{`server = "127.0.0.1:5"`, `driver = "sqlite"`, `dsn = "/x/presence.db"`, `resync_delay = "200ms"`} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %s", want)
		}
	}
}

func TestMillionContactsDistinctPerHandle(t *testing.T) {
	uses := make([]int, mContacts)
	for g := 0; g < mAccounts*mHandles; g++ {
		seen := map[int]bool{}
		for i := 0; i < mSubscribers; i++ {
			c := mContact(g, i)
			if seen[c] {
				t.Fatalf("handle %d has contact %d twice", g, c)
			}
			seen[c] = true
			uses[c]++
		}
	}
	for c, n := range uses {
		if n != mTotal/mContacts {
			t.Fatalf("contact %d used %d times, want %d", c, n, mTotal/mContacts)
		}
	}
}

func TestTailKeepsTheEnd(t *testing.T) {
	tl := &tail{max: 10}
	tl.Write([]byte("0123456789"))
	tl.Write([]byte("abc"))
	if got := string(tl.buf); got != "3456789abc" {
		t.Fatalf("tail = %q", got)
	}
	if !bytes.Contains([]byte(tl.String()), []byte("3456789abc")) {
		t.Fatal("String lacks the tail")
	}
}

func TestHandshakeDigestIsHexSHA1OfIDAndSecret(t *testing.T) {
	a, b := handshakeDigest("id1", "secret"), handshakeDigest("id2", "secret")
	if a == b || len(a) != 40 || strings.ToLower(a) != a {
		t.Fatalf("digests %q %q", a, b)
	}
}
