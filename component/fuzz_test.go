package component

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"mellium.im/xmpp/jid"

	"presenced/roster"
	"presenced/storage"
)

// offlineComponent is a component that is never connected, with a SQLite
// store of its own and its engine running, for feeding stanzas straight to
// its handler. Its output goes to a buffer.
type offlineComponent struct {
	c   *Component
	r   *roster.Service
	out *lockedBuffer
}

// lockedBuffer is a bytes.Buffer shared by the writer and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) take() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := bytes.Clone(b.buf.Bytes())
	b.buf.Reset()
	return out
}

func newOfflineComponent(f *testing.F, maxHandles int) *offlineComponent {
	ctx := context.Background()
	store, err := storage.OpenSQLite(ctx, filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	r, err := roster.New(ctx, store, roster.Options{MaxHandles: maxHandles, Policy: storage.PolicyOpen})
	if err != nil {
		f.Fatal(err)
	}
	c, err := New(Config{Domain: testDomain, Server: "127.0.0.1:1", Secret: "x", OwnerDomains: []string{"example.org"}}, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	go r.Run()
	o := &offlineComponent{c: c, r: r, out: &lockedBuffer{}}
	w := newWriter(o.out)
	go w.run()
	r.Do(func() { c.out.attach(w) })
	f.Cleanup(func() {
		r.Do(c.out.detach)
		<-w.done
		r.Stop()
	})
	return o
}

// handle dispatches n on the engine, waits until the engine is idle, and
// returns the tokens of everything the component wrote meanwhile.
func (o *offlineComponent) handle(t *testing.T, n *node, tooBig error) []xml.Token {
	t.Helper()
	o.r.Do(func() { o.c.dispatch(&replier{c: o.c}, n, tooBig) })
	if err := waitEmpty(o.r); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	o.r.Do(func() {
		o.c.out.drain()
		o.r.Discard() // forget the fan-out nothing will send
		close(done)
	})
	<-done
	return replyTokens(t, o.out.take())
}

// replyTokens parses what the component wrote, as a server would read it
// inside its stream.
func replyTokens(t *testing.T, b []byte) []xml.Token {
	t.Helper()
	d := xml.NewDecoder(io.MultiReader(strings.NewReader("<stream xmlns='jabber:component:accept'>"), bytes.NewReader(b), strings.NewReader("</stream>")))
	var toks []xml.Token
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the component wrote XML that does not parse: %v\n%s", err, b)
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
		// Leave the stream element out.
		if _, ok := tok.(xml.StartElement); ok && depth == 1 {
			continue
		}
		if _, ok := tok.(xml.EndElement); ok && depth == 0 {
			continue
		}
		toks = append(toks, xml.CopyToken(tok))
	}
	return toks
}

// FuzzStanza feeds arbitrary stanzas to the component's handler. It must
// never panic, and every reply must be a well-formed stanza with 'from' on
// the component's domain and a 'to'.
func FuzzStanza(f *testing.F) {
	seeds := []string{
		`<presence from='alice@example.org/pc' to='presence.test'><show>away</show><status>x</status><priority>5</priority></presence>`,
		`<presence from='alice@example.org/pc' to='presence.test'><invisible xmlns='urn:xmpp:invisible:1'/></presence>`,
		`<presence type='invisible' from='alice@example.org/pc' to='presence.test'/>`,
		`<presence type='unavailable' from='alice@example.org/pc' to='h@presence.test'/>`,
		`<presence type='subscribe' from='carol@example.net' to='h@presence.test'/>`,
		`<presence type='probe' from='carol@example.net/x' to='h@presence.test'/>`,
		`<presence type='unsubscribe' from='carol@example.net' to='h@presence.test'/>`,
		`<presence type='bogus' from='carol@example.net' to='h@presence.test'/>`,
		`<iq type='set' id='1' from='alice@example.org/pc' to='presence.test'><command xmlns='http://jabber.org/protocol/commands' node='add-handle' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='handle'><value>h</value></field></x></command></iq>`,
		`<iq type='set' id='2' from='alice@example.org/pc' to='presence.test'><command xmlns='http://jabber.org/protocol/commands' node='set-status' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='status'><value>hiding</value></field></x></command></iq>`,
		`<iq type='set' id='3' from='alice@example.org/pc' to='presence.test'><command xmlns='http://jabber.org/protocol/commands' node='remove-handle' sessionid='zz' action='complete'/></iq>`,
		`<iq type='set' id='4' from='alice@example.org/pc' to='presence.test'><invisible xmlns='urn:xmpp:invisible:0'/></iq>`,
		`<iq type='get' id='5' from='carol@example.net/x' to='h@presence.test'><query xmlns='jabber:iq:last'/></iq>`,
		`<iq type='get' id='6' from='carol@example.net/x' to='presence.test'><query xmlns='http://jabber.org/protocol/disco#info' node='add-handle'/></iq>`,
		`<iq type='get' id='7' from='carol@example.net/x' to='h@presence.test/r'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='get' id='8' from='@@' to='presence.test'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<message from='carol@example.net/x' to='h@presence.test'><body>hi</body></message>`,
		`<iq/>`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	o := newOfflineComponent(f, 0)
	f.Fuzz(func(t *testing.T, raw string) {
		d := xml.NewDecoder(strings.NewReader(raw))
		var start xml.StartElement
		for {
			tok, err := d.Token()
			if err != nil {
				return
			}
			if st, ok := tok.(xml.StartElement); ok {
				start = st
				break
			}
		}
		n, err := readNode(d, start)
		if err != nil && err != errTooBig {
			return
		}
		checkReplies(t, o.handle(t, n, err))
	})
}

func checkReplies(t *testing.T, toks []xml.Token) {
	depth := 0
	for _, tok := range toks {
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				var from, to string
				for _, a := range el.Attr {
					switch a.Name.Local {
					case "from":
						from = a.Value
					case "to":
						to = a.Value
					}
				}
				fj, err := jid.Parse(from)
				if to == "" || err != nil || fj.Domainpart() != testDomain {
					t.Fatalf("reply <%s> from %q to %q: every stanza needs a 'from' on the component's domain and a 'to'", el.Name.Local, from, to)
				}
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Fatalf("unbalanced reply tokens")
	}
}

// FuzzAddHandle submits arbitrary handle names. Every answer is either a
// completed command, after which the handle is a valid localpart that the
// owner holds, or an error with a text, after which nothing changed.
func FuzzAddHandle(f *testing.F) {
	for _, s := range []string{"alice", "Alice", "two words", "a@b", "ünïcode", "", " ", "a/b", strings.Repeat("x", 1024), "\u0000", "ＡＢＣ", "a\u200bb"} {
		f.Add(s)
	}
	o := newOfflineComponent(f, 10000)
	r := o.r
	const owner = "fuzz@example.org"
	f.Fuzz(func(t *testing.T, name string) {
		before := len(handlesOf(r, owner))
		held := false
		if j, err := jid.New(name, testDomain, ""); err == nil {
			held = slices.Contains(handlesOf(r, owner), j.Localpart())
		}
		iq := el(local("iq"), "type", "set", "id", "f1", "from", owner+"/r", "to", testDomain).add(
			el(qname(nsCommands, "command"), "node", "add-handle", "action", "complete").add(
				el(qname(nsData, "x"), "type", "submit").add(
					el(local("field"), "var", "handle").add(el(local("value")).withText(name)))))
		toks := o.handle(t, iq, nil)
		checkReplies(t, toks)
		d := xml.NewTokenDecoder(&sliceReader{toks: toks})
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("no reply for %q", name)
		}
		reply, err := readNode(d, tok.(xml.StartElement))
		if err != nil {
			t.Fatal(err)
		}
		after := len(handlesOf(r, owner))
		switch reply.get("type") {
		case "result":
			want := before + 1
			if held {
				want = before // already the owner's: nothing changes
			}
			if after != want {
				t.Fatalf("add-handle %q completed but the owner has %d handles, had %d (held already: %v)", name, after, before, held)
			}
			if _, err := jid.New(name, testDomain, ""); err != nil {
				t.Fatalf("add-handle accepted %q, which is not a valid localpart: %v", name, err)
			}
		case "error":
			if after != before {
				t.Fatalf("add-handle %q refused but the handles changed", name)
			}
			if e := reply.child("", "error"); e == nil || e.child(nsStanzas, "text") == nil {
				t.Fatalf("refusal without a text: %s", reply)
			}
		default:
			t.Fatalf("unexpected reply %s", reply)
		}
	})
}

// handlesOf asks the engine for owner's handles.
func handlesOf(r *roster.Service, owner string) []string {
	got := make(chan []string, 1)
	r.Do(func() { got <- r.Handles(owner) })
	return <-got
}

// sliceReader replays tokens.
type sliceReader struct {
	toks []xml.Token
	i    int
}

func (r *sliceReader) Token() (xml.Token, error) {
	if r.i >= len(r.toks) {
		return nil, io.EOF
	}
	t := r.toks[r.i]
	r.i++
	return t, nil
}
