package component

import (
	"strings"
	"testing"

	"mellium.im/xmpp/jid"
)

// FuzzParseAddr: parseAddr gives exactly jid.Parse's answer, so the fast
// path can only skip work, never change a JID or accept a bad one.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"alice@example.org", "alice@example.org/pc", "Alice@example.org", "example.org",
		"presence.example.org/presenced", "a@b/c/d", "a@b@c", "@example.org", "a@", "a@b/",
		"a b@example.org", "a@EXAMPLE.org", "a@example.org.", "a@xn--bcher-kva.example",
		"a@-x.example", "a@x-.example", "a@[::1]", "a@127.0.0.1", "ünï@example.org",
		"a@example.org/res with space", "a@example.org/ünï", "\"a\"@example.org", "a&b@example.org",
		strings.Repeat("a", 1024) + "@example.org", "a@" + strings.Repeat("b", 64) + ".org", "",
		"o'neil@example.org", "a@b.c/\u0000", "a\tb@example.org", "a@exa_mple.org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddr(s)
		j, jerr := jid.Parse(s)
		if s == "" {
			jerr = errEmptyJID // the component refuses an empty address
		}
		if (err == nil) != (jerr == nil) {
			t.Fatalf("parseAddr(%q) error %v, jid.Parse error %v", s, err, jerr)
		}
		if err != nil {
			return
		}
		want := addr{local: j.Localpart(), domain: j.Domainpart(), resource: j.Resourcepart()}
		if got != want {
			t.Fatalf("parseAddr(%q) = %+v, jid.Parse gives %+v", s, got, want)
		}
		if got.String() != j.String() || got.bare() != j.Bare().String() {
			t.Fatalf("parseAddr(%q) renders %q (bare %q), jid.Parse %q (%q)", s, got, got.bare(), j, j.Bare())
		}
	})
}
