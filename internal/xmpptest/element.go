package xmpptest

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

const (
	nsStream = "http://etherx.jabber.org/streams"
	nsXML    = "http://www.w3.org/XML/1998/namespace"
)

// Element is one XML element as received, with its namespace resolved.
type Element struct {
	// Name holds the namespace URI (not a prefix) and the local name.
	Name xml.Name
	// Attrs holds the attributes, namespace declarations excluded.
	Attrs []xml.Attr
	// Children holds the child elements in document order.
	Children []*Element
	// Text is the concatenated character data directly inside the element,
	// untrimmed.
	Text string

	seq uint64 // order of arrival of a top-level stanza on its client; 0 otherwise
}

// Seq tells the order in which a Client received its top-level stanzas:
// of two stanzas of one client, the one received first has the smaller
// Seq. It is 0 for elements that no Client received as a stanza.
func (e *Element) Seq() uint64 {
	if e == nil {
		return 0
	}
	return e.seq
}

// Attr returns the value of the attribute with this local name, or "".
func (e *Element) Attr(local string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attrs {
		if a.Name.Local == local && a.Name.Space != "xmlns" {
			return a.Value
		}
	}
	return ""
}

// Child returns the first child with this local name, whatever its
// namespace, or nil.
func (e *Element) Child(local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Name.Local == local {
			return c
		}
	}
	return nil
}

// ChildNS returns the first child with this namespace and local name, or nil.
func (e *Element) ChildNS(space, local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Name.Space == space && c.Name.Local == local {
			return c
		}
	}
	return nil
}

// ChildText returns the trimmed text of the first child with this local
// name, or "" when there is none.
func (e *Element) ChildText(local string) string {
	if c := e.Child(local); c != nil {
		return strings.TrimSpace(c.Text)
	}
	return ""
}

// String serialises the element back to XML, for failure messages. The
// result is equivalent to what was received, not byte for byte the same.
func (e *Element) String() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	e.write(&b, "jabber:client")
	return b.String()
}

func (e *Element) write(b *strings.Builder, parentNS string) {
	b.WriteString("<")
	b.WriteString(e.Name.Local)
	if e.Name.Space != parentNS {
		fmt.Fprintf(b, " xmlns='%s'", Escape(e.Name.Space))
	}
	prefixes := 0
	for _, a := range e.Attrs {
		switch a.Name.Space {
		case "":
			fmt.Fprintf(b, " %s='%s'", a.Name.Local, Escape(a.Value))
		case nsXML:
			fmt.Fprintf(b, " xml:%s='%s'", a.Name.Local, Escape(a.Value))
		default:
			prefixes++
			fmt.Fprintf(b, " xmlns:a%d='%s' a%d:%s='%s'", prefixes, Escape(a.Name.Space),
				prefixes, a.Name.Local, Escape(a.Value))
		}
	}
	if len(e.Children) == 0 && e.Text == "" {
		b.WriteString("/>")
		return
	}
	b.WriteString(">")
	b.WriteString(Escape(e.Text))
	for _, c := range e.Children {
		c.write(b, e.Name.Space)
	}
	fmt.Fprintf(b, "</%s>", e.Name.Local)
}

// Escape escapes s for use in XML text or in a quoted attribute value.
func Escape(s string) string {
	var b strings.Builder
	if err := xml.EscapeText(&b, []byte(s)); err != nil {
		panic(err) // a strings.Builder does not fail
	}
	return b.String()
}

// decodeElement reads the rest of the element that start opened.
func decodeElement(d *xml.Decoder, start xml.StartElement) (*Element, error) {
	e := &Element{Name: start.Name}
	for _, a := range start.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		e.Attrs = append(e.Attrs, a)
	}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			c, err := decodeElement(d, tok)
			if err != nil {
				return nil, err
			}
			e.Children = append(e.Children, c)
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			e.Text = text.String()
			return e, nil
		}
	}
}

// errStreamEnd reports that the server closed its stream.
var errStreamEnd = fmt.Errorf("xmpptest: server closed the stream")

// nextTop reads the next top-level item of a stream: a whole element, or
// the stream header itself (returned without children).
func nextTop(d *xml.Decoder) (*Element, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Space == nsStream && tok.Name.Local == "stream" {
				return &Element{Name: tok.Name, Attrs: tok.Copy().Attr}, nil
			}
			return decodeElement(d, tok)
		case xml.EndElement:
			return nil, errStreamEnd
		}
	}
}
