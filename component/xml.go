package component

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
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
// handlers never decode from the live stream (mellium issue #197).
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

// TokenReader returns the element as a token stream.
func (n *node) TokenReader() xml.TokenReader {
	var toks []xml.Token
	n.appendTokens(&toks)
	return &sliceReader{toks: toks}
}

func (n *node) appendTokens(toks *[]xml.Token) {
	attrs := make([]xml.Attr, 0, len(n.attr))
	for _, a := range n.attr {
		// The namespace is in the name; a parsed xmlns attribute would
		// declare it twice.
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		attrs = append(attrs, a)
	}
	start := xml.StartElement{Name: n.name, Attr: attrs}
	*toks = append(*toks, start)
	if n.text != "" {
		*toks = append(*toks, xml.CharData(n.text))
	}
	for _, c := range n.children {
		c.appendTokens(toks)
	}
	*toks = append(*toks, start.End())
}

// String renders the element for logs and tests.
func (n *node) String() string {
	var b strings.Builder
	e := xml.NewEncoder(&b)
	r := n.TokenReader()
	for {
		tok, err := r.Token()
		if err != nil {
			break
		}
		_ = e.EncodeToken(tok)
	}
	_ = e.Flush()
	return b.String()
}

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
