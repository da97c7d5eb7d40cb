package throughserver

import (
	"strings"
	"testing"
	"time"
)

// units splits s completely with nextElement, failing on error or leftover.
func units(t *testing.T, s string) (els []string, kinds []int) {
	t.Helper()
	b := []byte(s)
	for len(b) > 0 {
		el, kind, n, err := nextElement(b)
		if err != nil {
			t.Fatalf("nextElement(%q): %v", b, err)
		}
		if n == 0 {
			if strings.TrimSpace(string(b)) != "" {
				t.Fatalf("incomplete leftover %q", b)
			}
			break
		}
		els, kinds = append(els, string(el)), append(kinds, kind)
		b = b[n:]
	}
	return els, kinds
}

func TestNextElementSplitsAStream(t *testing.T) {
	stream := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='x1'>" +
		"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind></stream:features>\n" +
		"<presence from='h3@presence.localhost/presenced' to='u1@localhost'><show>away</show><c xmlns='caps' ver='a&gt;b'/></presence>" +
		"<presence from='h4@presence.localhost' type='unavailable'/>" +
		"<message to='x' note='a>b'><body>1 &lt; 2</body></message>" +
		"</stream:stream>"
	els, kinds := units(t, stream)
	wantKinds := []int{kindHeader, kindStanza, kindStanza, kindStanza, kindStanza, kindClose}
	if len(kinds) != len(wantKinds) {
		t.Fatalf("got %d units %q, want %d", len(kinds), els, len(wantKinds))
	}
	for i := range kinds {
		if kinds[i] != wantKinds[i] {
			t.Errorf("unit %d %q: kind %d, want %d", i, els[i], kinds[i], wantKinds[i])
		}
	}
	if !strings.HasPrefix(els[1], "<stream:features>") || !strings.HasSuffix(els[1], "</stream:features>") {
		t.Errorf("features split wrongly: %q", els[1])
	}
	if els[4] != "<message to='x' note='a>b'><body>1 &lt; 2</body></message>" {
		t.Errorf("a '>' inside a quoted attribute broke the split: %q", els[4])
	}
	if got := string(attr([]byte(els[0]), "id")); got != "x1" {
		t.Errorf("header id = %q", got)
	}
}

func TestNextElementWaitsForMore(t *testing.T) {
	full := "<presence from='h1@presence.localhost'><show>dnd</show></presence>"
	for i := 1; i < len(full); i++ {
		_, _, n, err := nextElement([]byte(full[:i]))
		if err != nil || n != 0 {
			t.Fatalf("prefix %q: n=%d err=%v, want 0, nil", full[:i], n, err)
		}
	}
	el, kind, n, err := nextElement([]byte("  " + full + "<iq"))
	if err != nil || n != len(full)+2 || kind != kindStanza || string(el) != full {
		t.Fatalf("got %q kind %d n %d err %v", el, kind, n, err)
	}
}

func TestNextElementRejectsJunk(t *testing.T) {
	for _, s := range []string{"hello", "<!-- c --><a/>", "<a><![CDATA[x]]></a>", "<a><b</a>"} {
		if _, _, _, err := nextElement([]byte(s)); err == nil {
			t.Errorf("nextElement(%q): no error", s)
		}
	}
}

func TestAttrAndChildText(t *testing.T) {
	el := []byte(`<presence xml:from='no' from="h7@presence.localhost/presenced" to='u2@localhost' type=''><status>x</status><show xmlns='jabber:client'> away </show></presence>`)
	if got := string(attr(el, "from")); got != "h7@presence.localhost/presenced" {
		t.Errorf("from = %q (must not match xml:from)", got)
	}
	if got := attr(el, "type"); got == nil || len(got) != 0 {
		t.Errorf("type = %q, want empty non-nil", got)
	}
	if got := attr(el, "id"); got != nil {
		t.Errorf("id = %q, want nil", got)
	}
	if got := string(childText(el, "show")); got != "away" {
		t.Errorf("show = %q", got)
	}
	if got := childText([]byte("<presence from='a'/>"), "show"); got != nil {
		t.Errorf("show of an empty element = %q", got)
	}
	if got := childText([]byte("<presence><c node='show'/></presence>"), "show"); got != nil {
		t.Errorf("show found in an attribute value: %q", got)
	}
	if got := string(tagName([]byte("</stream:stream>"))); got != "stream:stream" {
		t.Errorf("tagName = %q", got)
	}
}

func TestHandleAndUserIndex(t *testing.T) {
	tests := []struct {
		jid  string
		want int
	}{
		{"h0@presence.localhost", 0},
		{"h63@presence.localhost/presenced", 63},
		{"h12@other.localhost", -1},
		{"x1@presence.localhost", -1},
		{"h@presence.localhost", -1},
		{"h1a@presence.localhost", -1},
		{"presence.localhost", -1},
	}
	for _, tt := range tests {
		if got := handleIndex([]byte(tt.jid), componentDomain); got != tt.want {
			t.Errorf("handleIndex(%q) = %d, want %d", tt.jid, got, tt.want)
		}
	}
	if got := userIndex([]byte("u199@localhost/bench")); got != 199 {
		t.Errorf("userIndex = %d", got)
	}
	if got := userIndex([]byte("owner@localhost")); got != -1 {
		t.Errorf("userIndex(owner) = %d", got)
	}
}

func TestTallyCountsEachHandleOnce(t *testing.T) {
	r := newRound(modeShow, "dnd", 3, 1)
	var tl tally
	tl.arm(r)
	now := time.Now()
	dnd, away := []byte("dnd"), []byte("away")
	tl.count(0, nil, dnd, now)
	tl.count(0, nil, dnd, now.Add(time.Millisecond))  // duplicate
	tl.count(1, nil, away, now.Add(time.Millisecond)) // stale show
	tl.count(9, nil, dnd, now)                        // not a handle of the round
	tl.count(1, []byte("unavailable"), dnd, now)      // wrong type
	select {
	case <-r.done:
		t.Fatal("round done with handles missing")
	default:
	}
	tl.count(2, nil, dnd, now.Add(2*time.Millisecond))
	tl.count(1, nil, dnd, now.Add(3*time.Millisecond))
	select {
	case <-r.done:
	default:
		t.Fatal("round not done with every handle counted")
	}
	if tl.got != 3 || tl.dup != 1 || tl.other != 3 {
		t.Errorf("got %d dup %d other %d, want 3 1 3", tl.got, tl.dup, tl.other)
	}
	c := &client{}
	c.t.r, c.t.seen, c.t.got, c.t.dup, c.t.first, c.t.last = r, tl.seen, tl.got, tl.dup, tl.first, tl.last
	o := collect([]*client{c}, r, now.Add(-time.Millisecond))
	if !o.Complete || o.Expected != 3 || o.Delivered != 3 || o.Duplicates != 1 ||
		o.First != time.Millisecond || o.Duration != 4*time.Millisecond {
		t.Errorf("collect = %+v", o)
	}
}

func TestWaveIsHandleMajor(t *testing.T) {
	w := renderWave(componentDomain, userHost, 3, 2, "away", "")
	if n := len(w.off) - 1; n != 6 {
		t.Fatalf("%d stanzas, want 6", n)
	}
	want := "<presence from='h2@presence.localhost/presenced' to='u1@localhost'><show>away</show></presence>"
	if got := string(w.stanza(2, 1, 2)); got != want {
		t.Errorf("stanza(2,1) = %q, want %q", got, want)
	}
	if got := string(w.data[w.off[1]:w.off[2]]); !strings.Contains(got, "from='h0@") || !strings.Contains(got, "to='u1@") {
		t.Errorf("second stanza %q is not h0→u1", got)
	}
	if got := string(renderWave(componentDomain, userHost, 1, 1, "dnd", capsLike).data); got !=
		"<presence from='h0@presence.localhost/presenced' to='u0@localhost'><show>dnd</show>"+capsLike+"</presence>" {
		t.Errorf("wave with caps = %q", got)
	}
	// Every stanza parses back with the scanner.
	els, _ := units(t, string(w.data))
	for _, el := range els {
		if handleIndex(attr([]byte(el), "from"), componentDomain) < 0 || string(childText([]byte(el), "show")) != "away" {
			t.Errorf("stanza %q does not parse back", el)
		}
	}
}

// BenchmarkScanPresence measures the clients' cost per presence: split,
// from, type and show.
func BenchmarkScanPresence(b *testing.B) {
	w := renderWave(componentDomain, userHost, 64, 16, "away", capsLike)
	b.SetBytes(int64(len(w.data)))
	b.ReportAllocs()
	for b.Loop() {
		buf := w.data
		for len(buf) > 0 {
			el, _, n, err := nextElement(buf)
			if err != nil || n == 0 {
				b.Fatal(err)
			}
			_ = handleIndex(attr(el, "from"), componentDomain)
			_ = attr(el, "type")
			_ = childText(el, "show")
			buf = buf[n:]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(len(w.off)-1)), "ns/presence")
}
