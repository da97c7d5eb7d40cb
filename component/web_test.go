package component

import "testing"

// The web switch per handle, in both front ends (the web side itself is
// package web).

func TestSetWebBothFrontEnds(t *testing.T) {
	tc := startTestComponent(t, "")
	me := alice + "/pc"
	wantCompleted(t, tc.run(t, me, "add-handle", map[string]string{"handle": "h", "subscriptions": "open"}))
	tc.reset()
	r := tc.run(t, me, "set-web", map[string]string{"handles": "h", "web": "public"})
	wantText(t, "set-web public", wantCompleted(t, r).child("", "note").text, "Public on the web: h@"+testDomain)
	wantText(t, "status", chat(t, tc, me, "status"), "h@"+testDomain+": shown, approves everyone, 0 subscribers, public on the web")
	wantText(t, "web off", chat(t, tc, me, "web h off"), "Off the web: h@"+testDomain)
	wantText(t, "web on", chat(t, tc, me, "WEB h@"+testDomain+" ON"), "Public on the web: h@")
	wantText(t, "web sometimes", chat(t, tc, me, "web h sometimes"), `Error: Choose "public" or "off".`)
	wantText(t, "web usage", chat(t, tc, me, "web h"), "Error: Usage: web HANDLE on|off")
	wantText(t, "another's", chat(t, tc, me, "web nobody on"), `Error: You have no handle named "nobody".`)
	wantError(t, tc.run(t, me, "set-web", map[string]string{"handles": "h", "web": "maybe"}), "bad-request")
}
