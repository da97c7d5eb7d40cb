package xmpptest

import "strings"

// Matcher reports whether a received stanza is the one a test waits for.
type Matcher = func(*Element) bool

// jidMatches compares a stanza's from or to attribute with want: any value
// when want is "", the bare JID when want has no resource, else the full
// JID. Domain parts compare case-insensitively, as servers normalise them.
func jidMatches(want, got string) bool {
	switch {
	case want == "":
		return true
	case !strings.Contains(want, "/"):
		got = Bare(got)
	}
	return strings.EqualFold(want, got)
}

// IsPresence matches a presence from from (a bare JID matches every
// resource) with type typ, "" meaning available.
func IsPresence(from, typ string) Matcher {
	return func(e *Element) bool {
		return e.Name.Local == "presence" && e.Attr("type") == typ && jidMatches(from, e.Attr("from"))
	}
}

// IsAvailable matches an available presence from from whose <show> is show
// ("" for none, i.e. plain online).
func IsAvailable(from, show string) Matcher {
	return And(IsPresence(from, ""), func(e *Element) bool { return e.ChildText("show") == show })
}

// IsMessage matches a message (of any type but error) from from.
func IsMessage(from string) Matcher {
	return func(e *Element) bool {
		return e.Name.Local == "message" && e.Attr("type") != "error" && jidMatches(from, e.Attr("from"))
	}
}

// IsMessageBody matches a message from from whose body is body.
func IsMessageBody(from, body string) Matcher {
	return And(IsMessage(from), func(e *Element) bool { return e.ChildText("body") == body })
}

// IsIQReply matches the result or error answering the IQ with this id.
func IsIQReply(id string) Matcher {
	return func(e *Element) bool {
		if e.Name.Local != "iq" || e.Attr("id") != id {
			return false
		}
		t := e.Attr("type")
		return t == "result" || t == "error"
	}
}

// IsIQ matches a request IQ (get or set) from from whose payload has the
// namespace ns, such as a roster push.
func IsIQ(from, typ, ns string) Matcher {
	return func(e *Element) bool {
		if e.Name.Local != "iq" || e.Attr("type") != typ || !jidMatches(from, e.Attr("from")) {
			return false
		}
		for _, c := range e.Children {
			if c.Name.Space == ns {
				return true
			}
		}
		return false
	}
}

// IsError matches an error stanza of any kind from from with this defined
// condition ("" for any).
func IsError(from, condition string) Matcher {
	return func(e *Element) bool {
		return e.Attr("type") == "error" && jidMatches(from, e.Attr("from")) &&
			(condition == "" || StanzaErrorCondition(e) == condition)
	}
}

// HasChild matches a stanza with a child of namespace ns and local name
// local.
func HasChild(ns, local string) Matcher {
	return func(e *Element) bool { return e.ChildNS(ns, local) != nil }
}

// And matches when every matcher does.
func And(ms ...Matcher) Matcher {
	return func(e *Element) bool {
		for _, m := range ms {
			if !m(e) {
				return false
			}
		}
		return true
	}
}

// Any matches every stanza.
func Any(*Element) bool { return true }
