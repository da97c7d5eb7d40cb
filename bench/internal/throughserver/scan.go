package throughserver

import (
	"bytes"
	"errors"
	"strconv"
)

// The clients and the null component read XML with a byte scanner: it
// splits a stream into top-level elements and reads a few attributes and the
// <show/> text without building trees, so that the harness is never the
// bottleneck. It understands what XMPP servers send: start, end and
// empty-element tags with quoted attribute values (which may hold '>'),
// character data and the XML declaration. Comments, CDATA sections and
// processing instructions other than the declaration are not used by XMPP
// (RFC 6120 §11.1) and are treated as errors.

// errBadXML reports input the scanner does not understand.
var errBadXML = errors.New("throughserver: malformed or unsupported XML")

// Element kinds returned by nextElement.
const (
	kindStanza = iota // a complete top-level element (stanza or nonza)
	kindHeader        // the opening <stream:stream ...> tag
	kindClose         // </stream:stream>
)

// nextElement finds the first top-level unit in b, skipping leading
// whitespace and XML declarations. It returns the unit (from its '<' to its
// end), its kind and how many bytes of b it consumed; n == 0 with a nil error
// means b holds no complete unit yet.
func nextElement(b []byte) (el []byte, kind int, n int, err error) {
	i := 0
	for {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i == len(b) {
			return nil, 0, 0, nil
		}
		if b[i] != '<' {
			return nil, 0, 0, errBadXML
		}
		if i+1 < len(b) && b[i+1] == '?' {
			j := bytes.Index(b[i:], []byte("?>"))
			if j < 0 {
				return nil, 0, 0, nil
			}
			i += j + 2
			continue
		}
		break
	}
	start := i
	depth := 0
	for {
		end, closing, empty, err := scanTag(b, i)
		if err != nil || end == 0 {
			return nil, 0, 0, err
		}
		tag := b[i:end]
		switch {
		case closing:
			depth--
		case !empty:
			depth++
		}
		if i == start && !empty && !closing && isStreamTag(tag) {
			return tag, kindHeader, end, nil
		}
		if depth < 0 {
			if isStreamTag(tag) {
				return tag, kindClose, end, nil
			}
			return nil, 0, 0, errBadXML
		}
		if depth == 0 {
			return b[start:end], kindStanza, end, nil
		}
		// Character data up to the next tag.
		j := bytes.IndexByte(b[end:], '<')
		if j < 0 {
			return nil, 0, 0, nil
		}
		i = end + j
	}
}

// scanTag reads the tag that starts at b[i] == '<'. It returns the index
// just past its '>' (0 if b ends first), whether it is an end tag and
// whether it is an empty-element tag.
func scanTag(b []byte, i int) (end int, closing, empty bool, err error) {
	if i+1 >= len(b) {
		return 0, false, false, nil
	}
	switch b[i+1] {
	case '/':
		closing = true
	case '!', '?':
		return 0, false, false, errBadXML
	}
	var quote byte
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '<':
			return 0, false, false, errBadXML
		case c == '>':
			return j + 1, closing, b[j-1] == '/', nil
		}
	}
	return 0, false, false, nil
}

// isStreamTag reports whether tag is <stream:stream ...> or
// </stream:stream>, under any prefix.
func isStreamTag(tag []byte) bool {
	name := tagName(tag)
	if k := bytes.IndexByte(name, ':'); k >= 0 {
		name = name[k+1:]
	}
	return string(name) == "stream"
}

// tagName returns the qualified name of the tag or element that el starts
// with ("presence", "stream:features", …).
func tagName(el []byte) []byte {
	i := 1
	if len(el) > 1 && el[1] == '/' {
		i = 2
	}
	j := i
	for j < len(el) && !isSpace(el[j]) && el[j] != '>' && el[j] != '/' {
		j++
	}
	return el[i:j]
}

// attr returns the value of the attribute named name in the first tag of el,
// nil if it has none. Values are returned as written (entities are not
// expanded: the JIDs and types the harness reads have none).
func attr(el []byte, name string) []byte {
	i := 1 + len(tagName(el))
	for i < len(el) {
		for i < len(el) && isSpace(el[i]) {
			i++
		}
		if i >= len(el) || el[i] == '>' || el[i] == '/' {
			return nil
		}
		k := i
		for i < len(el) && el[i] != '=' && !isSpace(el[i]) && el[i] != '>' {
			i++
		}
		key := el[k:i]
		for i < len(el) && (isSpace(el[i]) || el[i] == '=') {
			i++
		}
		if i >= len(el) || (el[i] != '\'' && el[i] != '"') {
			return nil
		}
		q := el[i]
		j := bytes.IndexByte(el[i+1:], q)
		if j < 0 {
			return nil
		}
		val := el[i+1 : i+1+j]
		if string(key) == name {
			return val
		}
		i += j + 2
	}
	return nil
}

// childText returns the character data of the first child element named
// name (unprefixed, any attributes) in el, nil if there is none. An empty
// element gives an empty, non-nil slice.
func childText(el []byte, name string) []byte {
	// Skip the element's own start tag.
	end, _, empty, err := scanTag(el, 0)
	if err != nil || end == 0 || empty {
		return nil
	}
	for i := end; ; {
		j := bytes.IndexByte(el[i:], '<')
		if j < 0 {
			return nil
		}
		i += j
		e, closing, empty, err := scanTag(el, i)
		if err != nil || e == 0 {
			return nil
		}
		if !closing && string(tagName(el[i:e])) == name {
			if empty {
				return el[e:e]
			}
			k := bytes.IndexByte(el[e:], '<')
			if k < 0 {
				return nil
			}
			return bytes.TrimSpace(el[e : e+k])
		}
		i = e
	}
}

// handleIndex parses a JID of the form "h<N>@domain" or "h<N>@domain/res"
// and returns N, or -1 if jid is not a handle of domain.
func handleIndex(jid []byte, domain string) int {
	if len(jid) < 2 || jid[0] != 'h' {
		return -1
	}
	at := bytes.IndexByte(jid, '@')
	if at < 2 {
		return -1
	}
	rest := jid[at+1:]
	if k := bytes.IndexByte(rest, '/'); k >= 0 {
		rest = rest[:k]
	}
	if string(rest) != domain {
		return -1
	}
	n := 0
	for _, c := range jid[1:at] {
		if c < '0' || c > '9' || n > 1<<24 {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// userIndex parses "u<N>@host" (with or without a resource) and returns N,
// or -1.
func userIndex(jid []byte) int {
	if len(jid) < 2 || jid[0] != 'u' {
		return -1
	}
	at := bytes.IndexByte(jid, '@')
	if at < 2 {
		return -1
	}
	n, err := strconv.Atoi(string(jid[1:at]))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
