package alone

import (
	"bytes"
	"errors"
	"io"
)

// Kinds of token returned by Scanner.Next.
const (
	// KindHeader is the stream header's start tag (<stream:stream …>).
	KindHeader = iota + 1
	// KindElement is one whole top-level element of the stream (a stanza,
	// a handshake, a stream error).
	KindElement
	// KindEnd is the stream's closing tag.
	KindEnd
)

// maxElement bounds one element, so that a stream without closing tags
// cannot grow the buffer without end.
const maxElement = 1 << 20

// Scanner splits an XMPP stream into its header, its top-level elements and
// its end, without building trees: it only follows tags and quotes. It
// assumes well-formed input; it does not check names of closing tags.
type Scanner struct {
	r        io.Reader
	buf      []byte
	start    int // first byte not returned yet
	end      int // end of valid data in buf
	inStream bool
}

// NewScanner returns a Scanner reading r.
func NewScanner(r io.Reader) *Scanner {
	return &Scanner{r: r, buf: make([]byte, 64<<10)}
}

// Next returns the next token's kind and bytes. The bytes are valid until
// the next call. It returns io.EOF (or the read error) when the input ends.
func (s *Scanner) Next() (int, []byte, error) {
	for {
		if kind, a, b, ok := s.split(); ok {
			s.start = b
			return kind, s.buf[a:b], nil
		}
		if err := s.fill(); err != nil {
			return 0, nil, err
		}
	}
}

// fill reads more input, moving the unread bytes to the front of the buffer
// or growing it when needed.
func (s *Scanner) fill() error {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:s.end])
		s.start, s.end = 0, n
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= maxElement {
			return errors.New("scanner: element larger than 1 MiB")
		}
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// split looks for one complete token in buf[start:end]. It returns its kind
// and bounds, or ok false if more input is needed.
func (s *Scanner) split() (kind, a, b int, ok bool) {
	p := s.buf[:s.end]
	i := s.start
	depth := 0
	first := -1
	for {
		j := bytes.IndexByte(p[i:], '<')
		if j < 0 {
			if depth == 0 {
				s.start = s.end // text between elements: whitespace keepalives
			}
			return 0, 0, 0, false
		}
		i += j
		if depth == 0 && first < 0 {
			s.start = i // drop text before the element
			first = i
		}
		t, ok := tagEnd(p, i)
		if !ok {
			return 0, 0, 0, false
		}
		switch {
		case p[i+1] == '?' || p[i+1] == '!':
			// XML declaration or comment at top level: skip it.
			if depth == 0 {
				first = -1
				s.start = t
			}
		case p[i+1] == '/':
			depth--
			if depth < 0 {
				return KindEnd, i, t, true
			}
			if depth == 0 {
				return KindElement, first, t, true
			}
		case p[t-2] == '/':
			if depth == 0 {
				return KindElement, first, t, true
			}
		default:
			if !s.inStream {
				s.inStream = true
				return KindHeader, i, t, true
			}
			depth++
		}
		i = t
	}
}

// tagEnd returns the index just past the '>' that ends the tag starting at
// p[i] == '<', skipping quoted attribute values; ok false if the tag is not
// complete yet. Comments end at "-->".
func tagEnd(p []byte, i int) (int, bool) {
	if bytes.HasPrefix(p[i:], []byte("<!--")) {
		k := bytes.Index(p[i+4:], []byte("-->"))
		if k < 0 {
			return 0, false
		}
		return i + 4 + k + 3, true
	}
	var quote byte
	for k := i + 1; k < len(p); k++ {
		c := p[k]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '>':
			return k + 1, true
		}
	}
	return 0, false
}

// elemName returns the element's qualified name (e.g. "presence").
func elemName(el []byte) []byte {
	if len(el) < 2 || el[0] != '<' {
		return nil
	}
	for k := 1; k < len(el); k++ {
		switch el[k] {
		case ' ', '\t', '\r', '\n', '/', '>':
			return el[1:k]
		}
	}
	return el[1:]
}

// attr returns the value of the attribute name in the element's start tag,
// or nil if there is none. Values are returned as written (no entity
// decoding): the JIDs the harness deals with have no entities.
func attr(el []byte, name string) []byte {
	t, ok := tagEnd(el, 0)
	if !ok {
		t = len(el)
	}
	tag := el[:t]
	for k := 0; k < len(tag); {
		j := bytes.Index(tag[k:], []byte(name))
		if j < 0 {
			return nil
		}
		k += j
		e := k + len(name)
		if k > 0 && isSpace(tag[k-1]) && e+1 < len(tag) && tag[e] == '=' && (tag[e+1] == '\'' || tag[e+1] == '"') {
			q := tag[e+1]
			v := tag[e+2:]
			if z := bytes.IndexByte(v, q); z >= 0 {
				return v[:z]
			}
			return nil
		}
		k = e
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// childText returns the text of the first child <name>…</name> of el, or
// nil if it has none. Only children without attributes are found, which is
// how <show/> is written.
func childText(el []byte, name string) []byte {
	open := "<" + name + ">"
	k := bytes.Index(el, []byte(open))
	if k < 0 {
		return nil
	}
	v := el[k+len(open):]
	z := bytes.Index(v, []byte("</"+name+">"))
	if z < 0 {
		return nil
	}
	return v[:z]
}

// bare returns the JID without its resource.
func bare(j []byte) []byte {
	if k := bytes.IndexByte(j, '/'); k >= 0 {
		return j[:k]
	}
	return j
}

// jidIndex parses JIDs of the form <prefix><N>@<domain>[/resource] and
// returns N; ok false if j is not of that form or N is out of [0, limit).
func jidIndex(j []byte, prefix byte, domain string, limit int) (int, bool) {
	j = bare(j)
	if len(j) < 3 || j[0] != prefix {
		return 0, false
	}
	n, k := 0, 1
	for ; k < len(j) && j[k] >= '0' && j[k] <= '9'; k++ {
		n = n*10 + int(j[k]-'0')
		if n >= limit {
			return 0, false
		}
	}
	if k == 1 || k >= len(j) || j[k] != '@' || string(j[k+1:]) != domain {
		return 0, false
	}
	return n, true
}
