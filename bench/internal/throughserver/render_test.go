package throughserver

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"presenced/storage"
)

func TestProsodyRosterRendering(t *testing.T) {
	got := prosodyRoster([]rosterItem{{jid: "h0@presence.localhost", subscription: "to"}, {jid: `q"x`, subscription: "from"}})
	want := `return {
	[false] = {
		["version"] = 1;
		["pending"] = {};
	};
	["h0@presence.localhost"] = {
		["groups"] = {};
		["subscription"] = "to";
	};
	["q\"x"] = {
		["groups"] = {};
		["subscription"] = "from";
	};
};
`
	if got != want {
		t.Errorf("prosodyRoster =\n%s\nwant\n%s", got, want)
	}
	if got := prosodyAccount(`p\w`); got != "return {\n\t[\"password\"] = \"p\\\\w\";\n};\n" {
		t.Errorf("prosodyAccount = %q", got)
	}
	if got := prosodyFileName("u1.x@y"); got != "u1%2ex%40y" {
		t.Errorf("prosodyFileName = %q", got)
	}
}

// TestProsodyFilesLoadInLua loads the rendered files with the Lua that runs
// Prosody, when it is installed, and checks what Prosody would read.
func TestProsodyFilesLoadInLua(t *testing.T) {
	lua, err := exec.LookPath("lua5.4")
	if err != nil {
		t.Skip("lua5.4 not installed")
	}
	dir := t.TempDir()
	roster := filepath.Join(dir, "roster.dat")
	items := []rosterItem{{jid: handleJID(0), subscription: "to"}, {jid: handleJID(1), subscription: "to"}}
	if err := os.WriteFile(roster, []byte(prosodyRoster(items)), 0o644); err != nil {
		t.Fatal(err)
	}
	account := filepath.Join(dir, "account.dat")
	if err := os.WriteFile(account, []byte(prosodyAccount("pw-u0")), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `local r = dofile(arg[1]); local a = dofile(arg[2]); local n = 0
for k, v in pairs(r) do if k then n = n + 1; assert(v.subscription == "to") end end
assert(r[false].version == 1 and next(r[false].pending) == nil)
print(n, r["h1@presence.localhost"].subscription, a.password)`
	sf := filepath.Join(dir, "check.lua")
	if err := os.WriteFile(sf, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(lua, sf, roster, account).CombinedOutput()
	if err != nil {
		t.Fatalf("lua: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "2\tto\tpw-u0" {
		t.Errorf("lua read %q", got)
	}
}

func TestProsodyConfigNamesEverything(t *testing.T) {
	cfg := prosodyConfig("/d", ports{c2s: 5222, component: 5347}, "s3cret", "generational")
	for _, want := range []string{`c2s_ports = { 5222 }`, `component_ports = { 5347 }`, `Component "presence.localhost"`,
		`component_secret = "s3cret"`, `gc = { mode = "generational" }`, `data_path = "/d/data"`, `VirtualHost "localhost"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(prosodyConfig("/d", ports{}, "s", ""), "gc =") {
		t.Error("an empty -prosody-gc still writes a gc line")
	}
}

func TestPresencedConfigHasNoResourceKey(t *testing.T) {
	var cfg map[string]map[string]any
	if _, err := toml.Decode(presencedConfig("127.0.0.1:1", "sec", "/d/p.db", 64), &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg["component"]
	if c["domain"] != componentDomain || c["server"] != "127.0.0.1:1" || c["secret"] != "sec" || c["resync_delay"] != "500ms" {
		t.Errorf("component table = %v", c)
	}
	if _, ok := c["resource"]; ok {
		t.Error("the config has component.resource, which older builds reject")
	}
	if cfg["storage"]["dsn"] != "/d/p.db" || cfg["accounts"] != nil {
		t.Errorf("storage %v, accounts %v", cfg["storage"], cfg["accounts"])
	}
	if _, err := toml.Decode(presencedConfig("127.0.0.1:1", "sec", "/d/p.db", 100), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["accounts"]["max_handles"] != int64(100) {
		t.Errorf("accounts = %v, want max_handles 100", cfg["accounts"])
	}
}

func TestPrefillDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	if err := prefillDB(t.Context(), path, 3, 2); err != nil {
		t.Fatal(err)
	}
	// Open it the way presenced does and read the snapshot back.
	st, err := openForTest(t, path)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := st.Handles(t.Context(), ownerJID)
	if err != nil || len(hs) != 2 {
		t.Fatalf("handles %v, %v", hs, err)
	}
	snap, err := st.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := countSubscriptions(snap); n != 6 {
		t.Errorf("%d subscriptions, want 6", n)
	}
}

func TestReportMaths(t *testing.T) {
	round := func(delivered int, d time.Duration) outcome {
		return outcome{Expected: delivered, Delivered: delivered, Duration: d, First: d / 10, Complete: true}
	}
	turns := []turnResult{
		{Side: sidePresenced, Pair: 0, Rounds: []outcome{round(1000, 100*time.Millisecond), round(1000, 50*time.Millisecond), round(1000, 200*time.Millisecond)},
			RoundsCPU: cpuUse{Server: 120 * time.Millisecond, Component: 30 * time.Millisecond}},
		{Side: sideNull, Pair: 0, Rounds: []outcome{round(1000, 50*time.Millisecond)},
			RoundsCPU: cpuUse{Server: 90 * time.Millisecond}},
		{Side: sidePresenced, Pair: 1, Rounds: []outcome{round(1000, 40*time.Millisecond)}},
		{Side: sideNull, Pair: 1, Rounds: []outcome{round(1000, 20*time.Millisecond)}},
	}
	rows := summarizeRows(turns)
	byName := map[string]row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	rt := byName["fan-out rate"]
	// Pair 0: presenced median 10,000/s vs null 20,000/s; pair 1: 25,000 vs 50,000.
	if len(rt.Ratios) != 2 || rt.Ratios[0] != 0.5 || rt.Ratios[1] != 0.5 || rt.Ratio.Median != 0.5 {
		t.Errorf("rate ratios %v (%+v), want [0.5 0.5]", rt.Ratios, rt.Ratio)
	}
	// All four rounds: 10,000, 20,000, 5,000 and 25,000 stanzas/s.
	if rt.Presenced.Median != 15000 || rt.Presenced.Min != 5000 || rt.Presenced.Max != 25000 || rt.PresencedN != 4 {
		t.Errorf("presenced rate %+v n=%d", rt.Presenced, rt.PresencedN)
	}
	cpu := byName["server CPU per 1k"]
	// 120 ms over 3,000 stanzas = 40 ms/1k; 90 ms over 1,000 = 90; pair 1
	// has no CPU and gives 0/0 ratios, which are dropped.
	if cpu.Presenced.Max != 40 || cpu.Null.Max != 90 || len(cpu.Ratios) != 1 || math.Abs(cpu.Ratios[0]-40.0/90) > 1e-12 {
		t.Errorf("server CPU row %+v", cpu)
	}
	if comp := byName["component CPU per 1k"]; len(comp.Ratios) != 0 {
		t.Errorf("component ratio with a null CPU of 0: %v", comp.Ratios)
	}
	if got := perThousand(time.Second, 0); !math.IsNaN(got) {
		t.Errorf("perThousand(1s, 0) = %v, want NaN", got)
	}
	for in, want := range map[float64]string{24650: "24,650", 1234567: "1,234,567", 0.456: "0.46", 37.61: "37.6", 512.4: "512", -2500: "-2,500"} {
		if got := num(in); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
}

func openForTest(t *testing.T, path string) (storage.Store, error) {
	st, err := storage.OpenSQLite(t.Context(), path)
	if err == nil {
		t.Cleanup(func() { st.Close() })
	}
	return st, err
}

func countSubscriptions(s *storage.Snapshot) int { return len(s.Subscriptions) }
