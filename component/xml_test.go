package component

import (
	"encoding/xml"
	"strings"
	"testing"
)

// TestAppendXMLRoundTrip: what appendXML writes parses back, with
// encoding/xml as a server's parser would, to the same names, namespaces,
// attributes and text; characters XML cannot carry come back as U+FFFD.
func TestAppendXMLRoundTrip(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{`<&>'"`, `<&>'"`},
		{"tab\tnewline\ncr\rend", "tab\tnewline\ncr\rend"},
		{"ünïcode ☃ 𝄞", "ünïcode ☃ 𝄞"},
		{"nul\x00 bell\x07", "nul\uFFFD bell\uFFFD"},
		{"bad utf-8 \xff\xfe", "bad utf-8 \uFFFD\uFFFD"},
		{"noncharacter \uFFFE", "noncharacter \uFFFD"},
	}
	for _, tt := range tests {
		n := el(local("presence"), "from", tt.in, "to", "b@example.net").add(
			el(local("status")).withText(tt.in),
			el(qname(nsDelay, "delay"), "stamp", "x").add(el(local("inner"))),
		)
		d := xml.NewDecoder(strings.NewReader("<stream xmlns='" + nsStream + "'>" + string(n.appendXML(nil)) + "</stream>"))
		var root struct {
			Presence struct {
				XMLName xml.Name `xml:"jabber:component:accept presence"`
				From    string   `xml:"from,attr"`
				Status  string   `xml:"jabber:component:accept status"`
				Delay   struct {
					XMLName xml.Name
					Inner   *struct{} `xml:"urn:xmpp:delay inner"`
				} `xml:"urn:xmpp:delay delay"`
			} `xml:"jabber:component:accept presence"`
		}
		if err := d.Decode(&root); err != nil {
			t.Fatalf("appendXML of %q does not parse: %v\n%s", tt.in, err, n.appendXML(nil))
		}
		p := root.Presence
		if p.From != tt.want || p.Status != tt.want {
			t.Errorf("appendXML of %q read back as attribute %q and text %q, want %q", tt.in, p.From, p.Status, tt.want)
		}
		if p.Delay.XMLName.Space != nsDelay || p.Delay.Inner == nil {
			t.Errorf("appendXML of %q: the namespaced child read back as %+v", tt.in, p.Delay)
		}
	}
}
