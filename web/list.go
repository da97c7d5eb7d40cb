package web

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"presenced/roster"
)

// listCSS is the style sheet of /list. Each icon is in it once, as a data:
// URL chosen by the entry's data-status, so the page's script swaps an
// icon by changing one attribute; an icon drawn as an image runs no
// script of its own, even one from an operator's icons folder.
func listCSS(icons map[roster.WebStatus]icon) template.CSS {
	var b strings.Builder
	b.WriteString(`body{font:16px/1.5 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}` +
		`h1{font-size:1.25em;margin:0 0 .5em}` +
		`h2{font-size:1em;margin:1em 0 .25em;color:#555}` +
		`ul{list-style:none;margin:0;padding:0}` +
		`ul:empty::after{content:"none";color:#757575}` +
		`li{display:flex;align-items:center;gap:.5em;padding:.1em 0;overflow-wrap:anywhere}` +
		`#offline li{color:#757575}` +
		`.icon{flex:none;display:inline-block;width:16px;height:16px;background:no-repeat center/contain}`)
	for _, st := range statuses {
		fmt.Fprintf(&b, `li[data-status=%s] .icon{background-image:url("data:image/svg+xml;base64,%s")}`,
			st, base64.StdEncoding.EncodeToString(icons[st].body))
	}
	return template.CSS(b.String())
}

// The page: FIG. 8's two lists, on-line handles then off-line ones. Its
// script follows /events and moves each entry to the list it belongs in,
// at its place in the order asked. An entry's markup depends on the name
// and its web status only, so a hidden handle and a name nobody holds
// differ by their names alone.
var listPage = template.Must(template.New("list").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Status</title>
<style nonce="{{.Nonce}}">{{.CSS}}</style>
</head>
<body>
<h1>Status</h1>
<h2>On-line</h2>
<ul id="online">{{range .Online}}{{template "entry" .}}{{end}}</ul>
<h2>Off-line</h2>
<ul id="offline">{{range .Offline}}{{template "entry" .}}{{end}}</ul>
<script nonce="{{.Nonce}}">
(function () {
  "use strict";
  var names = {{.Names}};
  var lists = {on: document.getElementById("online"), off: document.getElementById("offline")};
  var items = new Map(), order = new Map();
  names.forEach(function (n, i) { order.set(n, i); });
  document.querySelectorAll("li[data-handle]").forEach(function (li) { items.set(li.dataset.handle, li); });
  if (!window.EventSource || names.length === 0) { return; }
  function place(li, st) {
    var ul = st === "offline" ? lists.off : lists.on, i = order.get(li.dataset.handle), at = null;
    for (var c = ul.firstElementChild; c; c = c.nextElementSibling) {
      if (c !== li && order.get(c.dataset.handle) > i) { at = c; break; }
    }
    if (li.parentNode !== ul || li.nextElementSibling !== at) { ul.insertBefore(li, at); }
  }
  function show(li, st) {
    li.dataset.status = st;
    li.querySelector(".icon").setAttribute("aria-label", st);
    place(li, st);
  }
  function offline() {
    items.forEach(function (li) { if (li.dataset.status !== "offline") { show(li, "offline"); } });
  }
  var url = "/events?h=" + names.map(encodeURIComponent).join(",");
  var es = null, heard = 0;
  function follow() {
    es = new EventSource(url);
    heard = performance.now();
    es.onopen = function () { heard = performance.now(); };
    es.addEventListener("ping", function () { heard = performance.now(); });
    es.onmessage = function (e) {
      heard = performance.now();
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      var li = items.get(d.handle);
      if (li && typeof d.status === "string") { show(li, d.status); }
    };
    // Without its stream the page cannot vouch for any status: every
    // entry is off-line until the stream is back, whose first events say
    // the truth again. The browser tries again by itself, but not after
    // an answer other than 200 (503 when the server is full): then the
    // page does, later.
    es.onerror = function () {
      offline();
      if (es.readyState === EventSource.CLOSED) { setTimeout(follow, 5000 + Math.random() * 10000); }
    };
  }
  // A stream that says nothing, not even the ping it sends every
  // keepAlive, or that never opens, is dead though the browser has not
  // noticed (its server's host gone without a word): off-line, and a new
  // stream. (A closed one has its new stream on the way.) The clock is
  // the page's own, which the wall clock's steps do not move.
  setInterval(function () {
    if (es && es.readyState !== EventSource.CLOSED && performance.now() - heard > {{.Silence}}) {
      es.close();
      offline();
      follow();
    }
  }, 5000);
  follow();
})();
</script>
</body>
</html>
{{define "entry"}}<li data-handle="{{.Name}}" data-status="{{.Status}}"><span class="icon" role="img" aria-label="{{.Status}}"></span><span class="name">{{.Name}}</span></li>{{end}}`))

type listEntry struct {
	Name   string
	Status roster.WebStatus
}

// list answers /list?h=NAME,NAME,…: the page above, with the statuses of
// now; it then follows /events by itself.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	asked, why := names(r)
	if why != "" {
		http.Error(w, why, http.StatusBadRequest)
		return
	}
	var on, off []listEntry
	for _, n := range asked {
		st := roster.WebOffline
		if h := s.prepare(n); h != "" {
			st = s.statuses.Get(h)
		}
		if st == roster.WebOffline {
			off = append(off, listEntry{n, st})
		} else {
			on = append(on, listEntry{n, st})
		}
	}
	nonce := rand.Text()
	var body bytes.Buffer
	if err := listPage.Execute(&body, struct {
		Nonce           string
		CSS             template.CSS
		Names           []string
		Online, Offline []listEntry
		Silence         int64 // ms: two pings missed, and some
	}{nonce, s.listCSS, asked, on, off, (2*s.keepAlive + 10*time.Second).Milliseconds()}); err != nil {
		s.log.Error("web: /list", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	// Nothing but this response's own style and script, the icons it
	// carries as data: URLs and its stream. The page may be framed: it
	// is made to sit on a team page, and holds nothing to click.
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+
		"'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'")
	hd.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(body.Bytes())
}
