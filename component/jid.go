package component

import (
	"errors"
	"strings"

	"mellium.im/xmpp/jid"
)

// addr is a JID as the component uses it: its three parts, prepared.
type addr struct {
	local, domain, resource string
}

// bare returns the bare JID.
func (a addr) bare() string {
	if a.local == "" {
		return a.domain
	}
	return a.local + "@" + a.domain
}

// String returns the full JID.
func (a addr) String() string {
	if a.resource == "" {
		return a.bare()
	}
	return a.bare() + "/" + a.resource
}

var errEmptyJID = errors.New("component: empty JID")

// parseAddr parses and prepares a JID as mellium's jid.Parse does (RFC
// 7622). Every stanza carries two JIDs and the PRECIS profiles cost more
// than the rest of handling a probe, so a JID whose parts those profiles
// would leave as they are is taken as it is: printable ASCII, a localpart
// without upper case or the characters RFC 7622 forbids there, a domain of
// lower-case letter-digit-hyphen labels, a resource without spaces. Any
// other JID goes through jid.Parse. FuzzParseAddr holds the two to the
// same answers.
func parseAddr(s string) (addr, error) {
	if a, ok := simpleAddr(s); ok {
		return a, nil
	}
	if s == "" {
		return addr{}, errEmptyJID
	}
	j, err := jid.Parse(s)
	if err != nil {
		return addr{}, err
	}
	return addr{local: j.Localpart(), domain: j.Domainpart(), resource: j.Resourcepart()}, nil
}

// maxPart is the longest localpart, domainpart or resourcepart, in bytes
// (RFC 7622 §3).
const maxPart = 1023

// simpleAddr is the fast path of parseAddr.
func simpleAddr(s string) (addr, bool) {
	rest, res, hasRes := strings.Cut(s, "/")
	local, domain, hasAt := strings.Cut(rest, "@")
	if !hasAt {
		local, domain = "", rest
	}
	if hasAt && !simpleLocal(local) || !simpleDomain(domain) || hasRes && !simpleResource(res) {
		return addr{}, false
	}
	return addr{local: local, domain: domain, resource: res}, true
}

func simpleLocal(s string) bool {
	if s == "" || len(s) > maxPart {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c >= 'A' && c <= 'Z' || strings.IndexByte(`"&'/:<>@`, c) >= 0 {
			return false
		}
	}
	return true
}

func simpleDomain(s string) bool {
	if s == "" || len(s) > maxPart {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			len(label) >= 4 && label[2] == '-' && label[3] == '-' { // xn-- and the like: IDNA
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func simpleResource(s string) bool {
	if s == "" || len(s) > maxPart {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
