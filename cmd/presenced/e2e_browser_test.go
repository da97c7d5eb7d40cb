package main

// The end-to-end scenario of issue 10 in a real browser: headless Chromium
// (Debian's chromium, which scripts/test.sh installs) shows /list, and the
// page follows the owner's changes through /events without a reload. The
// browser is driven over the Chrome DevTools Protocol by the small
// WebSocket client below, so the tests need no new module.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"presenced/internal/testenv"
)

// liveWait bounds how long the page may take to follow a change.
const liveWait = 5 * time.Second

func testWebListInBrowser(w *world) {
	t := w.t
	br := startBrowser(t)
	a, b := randomName("weba"), randomName("webb")
	alice, _ := w.owner("webbrowser", a)
	w.mustChatPrefix(alice, "add "+b+" open", "Added the handle ")
	w.mustChatPrefix(alice, "web "+a+" on", "Public on the web: ")
	w.mustChatPrefix(alice, "web "+b+" on", "Public on the web: ")
	w.webStatusIs(a, "available", "public, the owner on-line")
	w.webStatusIs(b, "available", "public, the owner on-line")

	streams := w.webStreams()
	br.navigate(w.web + "/list?h=" + a + "," + b)
	shot := func() {
		name := "list-" + strings.NewReplacer("/", "-", " ", "-").Replace(w.srv.Name+"-"+w.backend.name) + ".png"
		br.screenshot(filepath.Join(artifactDir(t), name))
	}
	br.listsAre(pageLists{On: []string{a + ":available", b + ":available"}}, "the page as served", shot)
	// A mark that a reload would wipe out.
	br.eval(`window.e2eMark = "loaded once"; true`)
	// The page's stream is open before the owner moves, so the change
	// reaches it as a live event, not in the first events of a late stream.
	deadline := time.Now().Add(wait)
	for w.webStreams() <= streams {
		if time.Now().After(deadline) {
			t.Fatalf("the page opened no /events stream: presenced_web_streams stays %d", streams)
		}
		time.Sleep(20 * time.Millisecond)
	}

	alice.MustSend(t, `<presence><show>away</show></presence>`)
	w.mustChatPrefix(alice, "hide "+b, "Hidden: ")
	br.listsAre(pageLists{On: []string{a + ":away"}, Off: []string{b + ":offline"}}, "after the owner went away and hid "+b, shot)
	if got := br.eval(`String(window.e2eMark)`); got != `"loaded once"` {
		t.Fatalf("the page was reloaded: its mark is %s", got)
	}
	shot()

	// Fail closed: once presenced is gone, nothing vouches for alice, and
	// the open page shows every handle off-line. When presenced is back,
	// the page's stream opens again by itself and shows the truth.
	w.d.stop()
	br.listsAre(pageLists{Off: []string{a + ":offline", b + ":offline"}}, "with presenced stopped", shot)
	w.d = startDaemon(t, w.parent, w.cfg)
	br.listsAreWithin(wait, pageLists{On: []string{a + ":away"}, Off: []string{b + ":offline"}}, "with presenced back", shot)
	if got := br.eval(`String(window.e2eMark)`); got != `"loaded once"` {
		t.Fatalf("the page was reloaded: its mark is %s", got)
	}
}

// webStreams reads presenced_web_streams from /metrics.
func (w *world) webStreams() int {
	w.t.Helper()
	body := ""
	if resp, err := http.Get(w.metrics); err != nil {
		w.t.Fatalf("GET %s: %v", w.metrics, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "presenced_web_streams "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				w.t.Fatalf("/metrics: %q: %v", line, err)
			}
			return int(n)
		}
	}
	w.t.Fatalf("/metrics has no presenced_web_streams:\n%s", body)
	return 0
}

// artifactDir is where the test keeps what a person should look at:
// $PRESENCED_ARTIFACTS (scripts/test.sh sets it and prints it), else a
// folder of this test's own.
func artifactDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("PRESENCED_ARTIFACTS")
	if d == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// pageLists is what #online and #offline hold: "NAME:STATUS" per entry,
// from each li's data-handle and data-status, in the page's order.
type pageLists struct {
	On  []string `json:"on"`
	Off []string `json:"off"`
}

func (l pageLists) String() string {
	return fmt.Sprintf("online %q, offline %q", l.On, l.Off)
}

const readLists = `JSON.stringify(document.readyState !== "complete" ? null : {
  on: [...document.querySelectorAll('#online li')].map(e => e.dataset.handle + ':' + e.dataset.status),
  off: [...document.querySelectorAll('#offline li')].map(e => e.dataset.handle + ':' + e.dataset.status)})`

// listsAre polls the page, without reloading it, until its lists are want;
// after liveWait it calls failed (a screenshot) and fails the test.
func (br *browser) listsAre(want pageLists, desc string, failed func()) {
	br.t.Helper()
	br.listsAreWithin(liveWait, want, desc, failed)
}

// listsAreWithin is listsAre with a wait of its own (a daemon that starts
// again, and the browser's own wait before it opens a stream again).
func (br *browser) listsAreWithin(wait time.Duration, want pageLists, desc string, failed func()) {
	br.t.Helper()
	deadline := time.Now().Add(wait)
	var got pageLists
	last := "page not loaded"
	for {
		var s string
		if err := json.Unmarshal([]byte(br.eval(readLists)), &s); err != nil {
			br.t.Fatalf("reading the lists: %v", err)
		}
		if s != "null" {
			got = pageLists{}
			if err := json.Unmarshal([]byte(s), &got); err != nil {
				br.t.Fatalf("reading the lists: %q: %v", s, err)
			}
			if slices.Equal(got.On, want.On) && slices.Equal(got.Off, want.Off) {
				return
			}
			last = got.String()
		}
		if time.Now().After(deadline) {
			failed()
			br.t.Fatalf("%s: the page shows %s after %v, want %s", desc, last, wait, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// browser is a headless Chromium and a DevTools connection to its page.
type browser struct {
	t  *testing.T
	ws *wsConn
	id int
}

var devToolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts headless Chromium with a fresh profile and connects
// to its page; a cleanup kills it and removes the profile, pass or fail.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(testenv.EnvVar) != "" {
			t.Fatalf("no chromium on PATH (%v): scripts/test.sh installs Debian's chromium; by hand: apt-get install chromium", err)
		}
		t.Skip("no chromium on PATH")
	}
	profile, err := os.MkdirTemp("", "presenced-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd := exec.Command(chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--window-size=640,360",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "about:blank")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers die with it
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		os.RemoveAll(profile)
		t.Fatalf("starting chromium: %v", err)
	}
	br := &browser{t: t}
	t.Cleanup(func() {
		if br.ws != nil {
			br.ws.Close()
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if err := os.RemoveAll(profile); err != nil {
			t.Errorf("removing chromium's profile: %v", err)
		}
		if t.Failed() {
			t.Logf("chromium's output:\n%s", stderr.String())
		}
	})

	var wsURL string
	deadline := time.Now().Add(wait)
	for {
		if m := devToolsLine.FindStringSubmatch(stderr.String()); m != nil {
			wsURL = m[1]
			break
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("chromium printed no DevTools address:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatalf("DevTools address %q: %v", wsURL, err)
	}
	page := br.pageTarget(u.Host, deadline)
	if br.ws, err = dialWebSocket(page); err != nil {
		t.Fatalf("connecting to chromium's page %s: %v", page, err)
	}
	br.call("Page.enable", nil)
	return br
}

// pageTarget returns the WebSocket address of the browser's page.
func (br *browser) pageTarget(host string, deadline time.Time) string {
	br.t.Helper()
	for {
		var targets []struct {
			Type, URL            string
			WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
		}
		resp, err := http.Get("http://" + host + "/json/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				return tg.WebSocketDebuggerURL
			}
		}
		if time.Now().After(deadline) {
			br.t.Fatalf("chromium lists no page at http://%s/json/list (%v): %+v", host, err, targets)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends one DevTools command and returns its result, skipping the
// events that come meanwhile.
func (br *browser) call(method string, params any) json.RawMessage {
	br.t.Helper()
	br.id++
	msg, err := json.Marshal(struct {
		ID     int    `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params,omitempty"`
	}{br.id, method, params})
	if err != nil {
		br.t.Fatal(err)
	}
	if err := br.ws.SetDeadline(time.Now().Add(wait)); err != nil {
		br.t.Fatal(err)
	}
	if err := br.ws.WriteText(msg); err != nil {
		br.t.Fatalf("DevTools %s: %v", method, err)
	}
	for {
		in, err := br.ws.ReadMessage()
		if err != nil {
			br.t.Fatalf("DevTools %s: %v", method, err)
		}
		var r struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(in, &r); err != nil {
			br.t.Fatalf("DevTools %s: %v in %.200q", method, err, in)
		}
		if r.ID != br.id {
			continue // an event, or the answer to nothing we wait for
		}
		if r.Error != nil {
			br.t.Fatalf("DevTools %s: error %d: %s", method, r.Error.Code, r.Error.Message)
		}
		return r.Result
	}
}

func (br *browser) navigate(u string) {
	br.t.Helper()
	var r struct {
		ErrorText string `json:"errorText"`
	}
	if err := json.Unmarshal(br.call("Page.navigate", map[string]string{"url": u}), &r); err != nil {
		br.t.Fatal(err)
	}
	if r.ErrorText != "" {
		br.t.Fatalf("navigating to %s: %s", u, r.ErrorText)
	}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (br *browser) eval(expr string) string {
	br.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(br.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &r); err != nil {
		br.t.Fatal(err)
	}
	if r.ExceptionDetails != nil {
		br.t.Fatalf("evaluating %q: %v", expr, r.ExceptionDetails)
	}
	return string(r.Result.Value)
}

// screenshot writes a PNG of the page to path.
func (br *browser) screenshot(path string) {
	br.t.Helper()
	var r struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	if err := json.Unmarshal(br.call("Page.captureScreenshot", map[string]string{"format": "png"}), &r); err != nil {
		br.t.Fatal(err)
	}
	if err := os.WriteFile(path, r.Data, 0o644); err != nil {
		br.t.Fatal(err)
	}
	br.t.Logf("screenshot of the page: %s", path)
}

// wsConn is the client side of a WebSocket (RFC 6455), just enough for
// DevTools: text messages out, text messages in, pings answered.
type wsConn struct {
	net.Conn
	r *bufio.Reader
}

func dialWebSocket(addr string) (*wsConn, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("%s: only ws:// is supported", addr)
	}
	c, err := net.DialTimeout("tcp", u.Host, wait)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(wait))
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		c.Close()
		return nil, err
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		c.Close()
		return nil, fmt.Errorf("WebSocket handshake refused: %s", resp.Status)
	}
	return &wsConn{Conn: c, r: br}, nil
}

const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

// writeFrame sends one final, masked frame, as a client must.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xFFFF:
		hdr = append(hdr, 0x80|126)
		hdr = be.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = be.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	buf := append(hdr, payload...)
	for i := range payload {
		buf[len(hdr)+i] ^= mask[i%4]
	}
	_, err := c.Write(buf)
	return err
}

func (c *wsConn) WriteText(p []byte) error { return c.writeFrame(wsText, p) }

// ReadMessage returns the next text message, its fragments joined.
func (c *wsConn) ReadMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0F
		n := uint64(h[1] & 0x7F)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return nil, err
			}
			n = uint64(be.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return nil, err
			}
			n = be.BigEndian.Uint64(b[:])
		}
		var mask []byte
		if h[1]&0x80 != 0 {
			mask = make([]byte, 4)
			if _, err := io.ReadFull(c.r, mask); err != nil {
				return nil, err
			}
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("WebSocket frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.r, p); err != nil {
			return nil, err
		}
		if mask != nil {
			for i := range p {
				p[i] ^= mask[i%4]
			}
		}
		switch op {
		case wsPing:
			if err := c.writeFrame(wsPong, p); err != nil {
				return nil, err
			}
			continue
		case wsPong:
			continue
		case wsClose:
			return nil, errors.New("WebSocket closed by the browser")
		case wsText, wsContinuation:
			msg = append(msg, p...)
			if fin {
				return msg, nil
			}
		default:
			return nil, fmt.Errorf("WebSocket frame of opcode %d", op)
		}
	}
}
