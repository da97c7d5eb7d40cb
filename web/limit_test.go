package web

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	c := clients{trusted: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
	}}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct IPv4", "192.0.2.7:4000", nil, "192.0.2.7/32"},
		{"a stranger's header is ignored", "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7/32"},
		{"IPv6 counts by its /64", "[2001:db8:1:2:3:4:5:6]:4000", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6 is IPv4", "[::ffff:192.0.2.7]:4000", nil, "192.0.2.7/32"},
		{"through the proxy", "127.0.0.1:4000", []string{"198.51.100.1"}, "198.51.100.1/32"},
		{"what the client wrote is left of what the proxy saw", "127.0.0.1:4000", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1/32"},
		{"past a chain of trusted proxies", "127.0.0.1:4000", []string{"198.51.100.1, 10.1.2.3", "10.0.0.1"}, "198.51.100.1/32"},
		{"through the proxy, IPv6", "127.0.0.1:4000", []string{"2001:db8::1"}, "2001:db8::/64"},
		{"the proxy with no header is the client", "127.0.0.1:4000", nil, "127.0.0.1/32"},
		{"garbage in the header stops the walk", "127.0.0.1:4000", []string{"198.51.100.1, junk"}, "127.0.0.1/32"},
		{"only trusted proxies: the last one", "127.0.0.1:4000", []string{"10.0.0.2"}, "10.0.0.2/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/events?h=a", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := c.key(r); got != netip.MustParsePrefix(tc.want) {
				t.Fatalf("key = %v, want %s", got, tc.want)
			}
		})
	}
}

// TestOneIPv6NetworkIsOneClient: addresses of one /64 share the bound.
func TestOneIPv6NetworkIsOneClient(t *testing.T) {
	var c clients
	for i := 0; i < maxStreamsPerClient; i++ {
		r := httptest.NewRequest("GET", "/events?h=a", nil)
		r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), 4000).String()
		if _, ok := c.take(r); !ok {
			t.Fatalf("stream %d refused", i+1)
		}
	}
	r := httptest.NewRequest("GET", "/events?h=a", nil)
	r.RemoteAddr = "[2001:db8::ff]:4000"
	if _, ok := c.take(r); ok {
		t.Fatal("another address of the same /64 took a stream past the bound")
	}
	r.RemoteAddr = "[2001:db8:0:1::ff]:4000"
	if _, ok := c.take(r); !ok {
		t.Fatal("another /64 refused")
	}
}
