package component

import (
	"encoding/xml"
	"errors"
	"io"
	"unicode/utf8"
)

// Namespaces used by the component.
const (
	nsStanzas  = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsDiscoInf = "http://jabber.org/protocol/disco#info"
	nsDiscoIt  = "http://jabber.org/protocol/disco#items"
	nsCommands = "http://jabber.org/protocol/commands"
	nsData     = "jabber:x:data"
	nsPing     = "urn:xmpp:ping"
	nsVersion  = "jabber:iq:version"
	nsLast     = "jabber:iq:last"
	nsDelay    = "urn:xmpp:delay"
	nsInvis0   = "urn:xmpp:invisible:0"
	nsInvis1   = "urn:xmpp:invisible:1"
)

// Limits on what a peer may send in one stanza. The XMPP server has its own
// limit; these keep one stanza from costing the component much.
const (
	maxStanzaTokens = 4096
	maxStanzaDepth  = 16
	maxTextBytes    = 64 << 10
)

var errTooBig = errors.New("component: stanza exceeds limits")

// node is a parsed element: small, complete and owned by the component, so
// the engine handles it away from the live stream.
type node struct {
	name     xml.Name
	attr     []xml.Attr
	children []*node
	text     string
}

// readNode reads the element that start opened from r, to its end.
func readNode(r xml.TokenReader, start xml.StartElement) (*node, error) {
	root := &node{name: start.Name, attr: start.Copy().Attr}
	stack := []*node{root}
	var tokens, textBytes int
	var tooBig bool
	for len(stack) > 0 {
		tok, err := r.Token()
		if err == io.EOF && tok == nil {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil && tok == nil {
			return nil, err
		}
		tokens++
		if tokens > maxStanzaTokens {
			tooBig = true
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) >= maxStanzaDepth {
				tooBig = true
			}
			n := &node{name: t.Name, attr: t.Copy().Attr}
			if !tooBig {
				top.children = append(top.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			textBytes += len(t)
			if textBytes > maxTextBytes {
				tooBig = true
			}
			if !tooBig {
				top.text += string(t)
			}
		}
	}
	if tooBig {
		return root, errTooBig
	}
	return root, nil
}

func (n *node) get(local string) string {
	for _, a := range n.attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// ns returns the element's namespace.
func (n *node) ns() string { return n.name.Space }

// child returns the first child named local in namespace space ("" matches
// any namespace).
func (n *node) child(space, local string) *node {
	for _, c := range n.children {
		if c.name.Local == local && (space == "" || c.name.Space == space) {
			return c
		}
	}
	return nil
}

// firstChild returns the first child element, if any.
func (n *node) firstChild() *node {
	if len(n.children) == 0 {
		return nil
	}
	return n.children[0]
}

// el builds an element for output. Attributes come in name, value pairs;
// pairs with an empty value are left out.
func el(name xml.Name, attrs ...string) *node {
	n := &node{name: name}
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i+1] == "" {
			continue
		}
		n.attr = append(n.attr, xml.Attr{Name: xml.Name{Local: attrs[i]}, Value: attrs[i+1]})
	}
	return n
}

// presence builds a presence stanza of type typ ("" for available).
func presence(typ, from, to string) *node {
	return el(local("presence"), "type", typ, "from", from, "to", to)
}

func local(name string) xml.Name     { return xml.Name{Local: name} }
func qname(space, l string) xml.Name { return xml.Name{Space: space, Local: l} }

// add appends children and returns n.
func (n *node) add(children ...*node) *node {
	for _, c := range children {
		if c != nil {
			n.children = append(n.children, c)
		}
	}
	return n
}

// withText sets the text and returns n.
func (n *node) withText(s string) *node {
	n.text = s
	return n
}

// nsStream is the namespace of the stanzas on a component stream
// (XEP-0114); elements in it, or in none, are written without a
// declaration.
const nsStream = "jabber:component:accept"

// appendXML appends the element, serialised, to b and returns the result.
// The component writes its own bytes rather than going through an
// encoder: presenced writes a wave of stanzas in a few large writes (see
// output.go). The element's
// namespace is declared where it differs from its parent's; children
// without one inherit it.
func (n *node) appendXML(b []byte) []byte { return n.appendIn(b, nsStream) }

func (n *node) appendIn(b []byte, parentNS string) []byte {
	b = append(b, '<')
	b = append(b, n.name.Local...)
	ns := parentNS
	if n.name.Space != "" && n.name.Space != parentNS {
		ns = n.name.Space
		b = append(b, " xmlns='"...)
		b = appendEscaped(b, ns, true)
		b = append(b, '\'')
	}
	for _, a := range n.attr {
		switch {
		case a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns"):
			// The namespace is in the name; a parsed xmlns attribute would
			// declare it twice.
			continue
		case a.Name.Space == "xml" || a.Name.Space == xmlNS:
			b = append(b, " xml:"...)
		case a.Name.Space != "":
			continue // the component writes no other prefixed attribute
		default:
			b = append(b, ' ')
		}
		b = append(b, a.Name.Local...)
		b = append(b, "='"...)
		b = appendEscaped(b, a.Value, true)
		b = append(b, '\'')
	}
	if n.text == "" && len(n.children) == 0 {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	b = appendEscaped(b, n.text, false)
	for _, c := range n.children {
		b = c.appendIn(b, ns)
	}
	b = append(b, "</"...)
	b = append(b, n.name.Local...)
	return append(b, '>')
}

// xmlNS is the namespace bound to the xml prefix.
const xmlNS = "http://www.w3.org/XML/1998/namespace"

// appendEscaped appends s as XML character data, or as an attribute value
// in single quotes if attr. Characters XML 1.0 does not allow, and bytes
// that are not UTF-8, become U+FFFD, as encoding/xml does.
func appendEscaped(b []byte, s string, attr bool) []byte {
	last := 0
	for i := 0; i < len(s); {
		if c := s[i]; c >= 0x20 && c < utf8.RuneSelf && !needsEscape[c] {
			i++ // the common case: printable ASCII that stands for itself
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		var esc string
		switch {
		case r == '&':
			esc = "&amp;"
		case r == '<':
			esc = "&lt;"
		case r == '>':
			esc = "&gt;"
		case attr && r == '\'':
			esc = "&apos;"
		case attr && r == '"':
			esc = "&quot;"
		case attr && r == '\n':
			esc = "&#xA;"
		case attr && r == '\r':
			esc = "&#xD;"
		case attr && r == '\t':
			esc = "&#x9;"
		case r == '\r':
			esc = "&#xD;" // a raw CR would be read back as LF
		case !isXMLChar(r) || (r == utf8.RuneError && w == 1):
			esc = "\uFFFD"
		default:
			i += w
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		i += w
		last = i
	}
	return append(b, s[last:]...)
}

// needsEscape marks the printable ASCII bytes that appendEscaped may
// replace.
var needsEscape = [utf8.RuneSelf]bool{'&': true, '<': true, '>': true, '\'': true, '"': true}

// isXMLChar reports whether r may appear in an XML 1.0 document.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// String renders the element for logs and tests.
func (n *node) String() string { return string(n.appendXML(nil)) }
