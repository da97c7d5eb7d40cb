package component

import (
	"crypto/sha1"

	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/disco/info"
)

// discoInfo is what one kind of address answers to disco#info: the
// component's JID, or every handle's JID. The same value renders the
// disco#info answer and the XEP-0115 capabilities that available presence
// carries, so the two cannot disagree.
type discoInfo struct {
	category, typ, name string
	features            []string
	// ver is the XEP-0115 verification string of the identity and features.
	ver string
}

func newDiscoInfo(category, typ, name string, features ...string) discoInfo {
	d := discoInfo{category: category, typ: typ, name: name, features: features}
	// mellium computes the XEP-0115 §5.1 string; it sorts the slices it is
	// given, so it gets its own copies.
	in := disco.Info{Identity: []info.Identity{{Category: category, Type: typ, Name: name}}}
	for _, f := range features {
		in.Features = append(in.Features, info.Feature{Var: f})
	}
	d.ver = in.Hash(sha1.New())
	return d
}

// capsNode is the XEP-0115 node of domain. It names the service, as an
// xmpp: URI (RFC 5122), since presenced has no web site of its own.
func capsNode(domain string) string { return "xmpp:" + domain }

// caps is the <c/> element that advertises d under node in available
// presence. The component builds it once and shares it, read-only.
func (d discoInfo) caps(node string) *node {
	return el(qname(disco.NSCaps, "c"), "hash", "sha-1", "node", node, "ver", d.ver)
}

// answersNode reports whether a disco#info request for node is one that d
// answers: the plain request, or the XEP-0115 §6.2 request for
// capsNode#ver.
func (d discoInfo) answersNode(capsNode, node string) bool {
	return node == "" || node == capsNode+"#"+d.ver
}

// query renders the disco#info answer for node (echoed, as XEP-0115 wants).
func (d discoInfo) query(node string) *node {
	q := el(qname(nsDiscoInf, "query"), "node", node)
	q.add(el(local("identity"), "category", d.category, "type", d.typ, "name", d.name))
	for _, f := range d.features {
		q.add(el(local("feature"), "var", f))
	}
	return q
}
