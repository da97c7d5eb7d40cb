package web

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"presenced/roster"
)

var entryRE = regexp.MustCompile(`<li data-handle="([^"]*)" data-status="([a-z]+)">`)

// lists returns the entries of #online and #offline as handle=status.
func lists(t *testing.T, body string) (on, off []string) {
	t.Helper()
	i, j := strings.Index(body, `<ul id="online">`), strings.Index(body, `<ul id="offline">`)
	if i < 0 || j < i {
		t.Fatalf("no #online before #offline:\n%s", body)
	}
	for _, m := range entryRE.FindAllStringSubmatch(body[i:j], -1) {
		on = append(on, m[1]+"="+m[2])
	}
	for _, m := range entryRE.FindAllStringSubmatch(body[j:], -1) {
		off = append(off, m[1]+"="+m[2])
	}
	return on, off
}

func TestListOnlineThenOfflineEscaped(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	st.WebChanged("<script>x", roster.WebBusy)
	st.WebChanged("alice", roster.WebAway)
	st.WebChanged("carol", roster.WebAvailable)
	q := url.QueryEscape("nobody,<script>x,alice,bad@x,carol")
	code, h, body := get(t, s, "/list?h="+q)
	if code != 200 || h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("%d %v", code, h)
	}
	on, off := lists(t, body)
	if strings.Join(on, " ") != "&lt;script&gt;x=busy alice=away carol=available" || strings.Join(off, " ") != "nobody=offline bad@x=offline" {
		t.Fatalf("on-line %v, off-line %v", on, off)
	}
	// The hostile name is text everywhere: in the markup and in the
	// script's list of names.
	if strings.Contains(body, "<script>x") || !strings.Contains(body, `<span class="name">&lt;script&gt;x</span>`) || !strings.Contains(body, `"\u003cscript\u003ex"`) {
		t.Fatalf("escaping:\n%s", body)
	}
	// A strict policy, with this response's nonce on the style and the
	// script, and nothing from elsewhere.
	m := regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9]+)'`).FindStringSubmatch(h.Get("Content-Security-Policy"))
	if m == nil || !strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'none';") {
		t.Fatalf("CSP: %q", h.Get("Content-Security-Policy"))
	}
	if strings.Count(body, `nonce="`+m[1]+`"`) != 2 || strings.Count(body, "<script") != 1 || strings.Count(body, "<style") != 1 {
		t.Fatalf("nonce %s not on the one script and style:\n%s", m[1], body)
	}
	for _, bad := range []string{"http:", "https:", "src=", "href=", " style=", " on"} {
		if strings.Contains(body, bad) {
			t.Fatalf("page holds %q", bad)
		}
	}
	// Every icon is there, once, for the script to swap by status.
	for _, w := range statuses {
		if strings.Count(body, "li[data-status="+string(w)+"] .icon{background-image:url(\"data:image/svg+xml;base64,") != 1 {
			t.Fatalf("no icon for %s", w)
		}
	}
	if !strings.Contains(body, `var url = "/events?h="`) || !strings.Contains(body, `new EventSource(url)`) {
		t.Fatal("no stream")
	}
	_, h2, _ := get(t, s, "/list?h="+q)
	if h2.Get("Content-Security-Policy") == h.Get("Content-Security-Policy") {
		t.Fatal("the nonce does not change")
	}
}

func TestListHiddenLikeUnknown(t *testing.T) {
	s, st, _ := newTestServer(t, "")
	st.WebChanged("hidden", roster.WebAway)
	st.WebChanged("hidden", roster.WebOffline)
	st.WebChanged("alice", roster.WebAvailable)
	nonce := regexp.MustCompile(`nonce-[A-Za-z0-9]+|nonce="[A-Za-z0-9]+"`)
	page := func(name string) string {
		code, h, body := get(t, s, "/list?h=alice,"+name)
		if code != 200 {
			t.Fatalf("%s: %d", name, code)
		}
		var hs []string
		for k, v := range h {
			hs = append(hs, k+": "+strings.Join(v, ","))
		}
		sort.Strings(hs)
		all := strings.Join(hs, "\n") + "\n\n" + body
		return strings.ReplaceAll(nonce.ReplaceAllString(all, "NONCE"), name, "NAME")
	}
	hidden, nobody := page("hidden"), page("nobody")
	if hidden != nobody {
		t.Fatalf("a hidden handle and an unknown name differ:\n%s\n----\n%s", hidden, nobody)
	}
	if _, off := lists(t, hidden); len(off) != 1 || off[0] != "NAME=offline" {
		t.Fatalf("off-line: %v", off)
	}
}
