package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func noEnv(string) string { return "" }

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "presenced.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExampleConfigLoads keeps config.example.toml in step with the code.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("../../config.example.toml", noEnv)
	if err != nil {
		t.Fatalf("LoadConfig(config.example.toml) = %v", err)
	}
	if cfg.Component.Domain != "presence.example.org" || cfg.Storage.Driver != "sqlite" || cfg.Accounts.MaxHandles != 64 {
		t.Fatalf("LoadConfig(config.example.toml) = %+v", cfg)
	}
}

const minimal = `
[component]
domain = "presence.example.org"
server = "127.0.0.1:5347"
secret = "s"
`

func TestConfigDefaultsAndEnv(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.Driver != "sqlite" || cfg.Storage.DSN != "presence.db" || cfg.Accounts.MaxHandles != 64 || cfg.Component.resyncDelay.String() != "3s" ||
		cfg.Component.Resource != "presenced" {
		t.Fatalf("defaults = %+v", cfg)
	}
	env := map[string]string{envSecret: "from-env", envDSN: "postgres://u:p@127.0.0.1/db"}
	cfg, err = LoadConfig(writeConfig(t, `
[component]
domain = "presence.example.org"
server = "127.0.0.1:5347"
[storage]
driver = "postgres"
`), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Component.Secret != "from-env" || cfg.Storage.DSN != env[envDSN] {
		t.Fatalf("environment not used: %+v", cfg)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, body, key string
	}{
		{"missing domain", `[component]
server = "127.0.0.1:5347"
secret = "s"`, "component.domain"},
		{"missing server", `[component]
domain = "p.example.org"
secret = "s"`, "component.server"},
		{"missing secret", `[component]
domain = "p.example.org"
server = "127.0.0.1:5347"`, "component.secret"},
		{"bad domain", strings.Replace(minimal, `"presence.example.org"`, `"user@host"`, 1), "component.domain"},
		{"bad server", strings.Replace(minimal, `"127.0.0.1:5347"`, `"localhost"`, 1), "component.server"},
		{"unknown key", minimal + "colour = \"blue\"\n", "component.colour"},
		{"unknown table", minimal + "[extra]\nx = 1\n", "extra"},
		{"unknown driver", minimal + "[storage]\ndriver = \"mysql\"\n", "storage.driver"},
		{"postgres without dsn", minimal + "[storage]\ndriver = \"postgres\"\n", "storage.dsn"},
		{"bad max handles", minimal + "[accounts]\nmax_handles = 0\n", "accounts.max_handles"},
		{"bad level", minimal + "[log]\nlevel = \"loud\"\n", "log.level"},
		{"bad duration", strings.Replace(minimal, `secret = "s"`, "secret = \"s\"\nresync_delay = \"soon\"", 1), "component.resync_delay"},
		{"empty resource", strings.Replace(minimal, `secret = "s"`, "secret = \"s\"\nresource = \"\"", 1), "component.resource"},
		{"bad resource", strings.Replace(minimal, `secret = "s"`, "secret = \"s\"\nresource = \""+strings.Repeat("r", 1024)+"\"", 1), "component.resource"},
		{"wrong type", minimal + "[accounts]\nmax_handles = \"many\"\n", "max_handles"},
		{"bad policy", minimal + "[accounts]\nsubscriptions = \"maybe\"\n", "accounts.subscriptions"},
		{"no owner domains", minimal + "[accounts]\nowner_domains = []\n", "accounts.owner_domains"},
		{"bad owner domain", minimal + "[accounts]\nowner_domains = [\"a@b\"]\n", "accounts.owner_domains"},
		{"bad quarantine", minimal + "[accounts]\nquarantine = \"a month\"\n", "accounts.quarantine"},
		{"bad reserved", minimal + "[accounts]\nreserved = [\"two words\"]\n", "accounts.reserved"},
		{"negative max accounts", minimal + "[accounts]\nmax_accounts = -1\n", "accounts.max_accounts"},
		{"no resources", minimal + "[limits]\nresources = 0\n", "limits.resources"},
		{"huge status text", minimal + "[limits]\nstatus_text = 1000000\n", "limits.status_text"},
		{"no pending", minimal + "[limits]\npending_per_handle = 0\n", "limits.pending_per_handle"},
		{"no subscribers", minimal + "[limits]\nsubscribers_per_handle = 0\n", "limits.subscribers_per_handle"},
		{"no sessions", minimal + "[limits]\ncommand_sessions = 0\n", "limits.command_sessions"},
		{"unknown limit", minimal + "[limits]\nstanzas = 5\n", "limits.stanzas"},
		{"bad listen", minimal + "[http]\nlisten = \"8080\"\n", "http.listen"},
		{"bad metrics listen", minimal + "[http]\nmetrics_listen = \"127.0.0.1:http\"\n", "http.metrics_listen"},
		{"metrics on listen", minimal + "[http]\nlisten = \"127.0.0.1:8080\"\nmetrics_listen = \"127.0.0.1:8080\"\n", "http.metrics_listen"},
		{"metrics on listen, spelt otherwise", minimal + "[http]\nlisten = \":9464\"\nmetrics_listen = \"localhost:9464\"\n", "http.metrics_listen"},
		{"icons not a folder", minimal + "[http]\nicons = \"/nonexistent/icons\"\n", "http.icons"},
		{"bad trusted proxy", minimal + "[http]\ntrusted_proxies = [\"127.0.0.1\", \"localhost\"]\n", "http.trusted_proxies"},
		{"bad trusted prefix", minimal + "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "http.trusted_proxies"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, c.body), noEnv)
			if err == nil || !strings.Contains(err.Error(), c.key) {
				t.Fatalf("LoadConfig = %v, want an error naming %s", err, c.key)
			}
		})
	}
}

func TestSecretsNotInErrors(t *testing.T) {
	_, err := LoadConfig(writeConfig(t, `[component]
domain = "p.example.org"
server = "127.0.0.1:5347"
secret = "hunter2"
[storage]
driver = "postgres"
dsn = "mysql://root:hunter2@db"
`), noEnv)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("LoadConfig = %v, want an error without the secret", err)
	}
}

// TestSafetyDefaults: the defaults of [accounts] and [limits], the owner
// domain derived from the component's, and names prepared as handles are.
func TestSafetyDefaults(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	a, l := cfg.Accounts, cfg.Limits
	if a.Subscriptions != "ask" || strings.Join(a.OwnerDomains, ",") != "example.org" || a.quarantine.String() != "720h0m0s" ||
		len(a.Reserved) != 11 || a.MaxAccounts != 0 {
		t.Fatalf("[accounts] defaults = %+v", a)
	}
	if l.Resources != 16 || l.StatusText != 512 || l.SubscribersPerHandle != 100000 || l.PendingPerHandle != 100 || l.CommandSessions != 8 {
		t.Fatalf("[limits] defaults = %+v", l)
	}
	cfg, err = LoadConfig(writeConfig(t, minimal+"[accounts]\nowner_domains = [\"Example.ORG\", \"*\"]\nreserved = [\"Boss\"]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Accounts.OwnerDomains, ",") != "example.org,*" || strings.Join(cfg.Accounts.Reserved, ",") != "boss" {
		t.Fatalf("owner_domains %v, reserved %v: want them prepared", cfg.Accounts.OwnerDomains, cfg.Accounts.Reserved)
	}
}

func TestTrustedProxies(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, minimal+"[http]\ntrusted_proxies = [\"127.0.0.1\", \"::1\", \"10.1.2.3/8\", \"::ffff:192.0.2.1\"]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.HTTP.trusted {
		got = append(got, p.String())
	}
	if want := "127.0.0.1/32 ::1/128 10.0.0.0/8 192.0.2.1/32"; strings.Join(got, " ") != want {
		t.Fatalf("trusted = %v, want %s", got, want)
	}
}

func TestSameSocket(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:9464", false},
		{"localhost:9464", "127.0.0.1:9464", true},
		{"127.0.0.1:9464", "localhost:9464", true},
		{"localhost:9464", "[::1]:9464", true},
		{":8080", "127.0.0.1:8080", true},
		{"0.0.0.0:8080", "192.0.2.1:8080", true},
		{"192.0.2.1:8080", "[::]:8080", true},
		{"192.0.2.1:8080", "192.0.2.2:8080", false},
		{"[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", true},
		{"web.example.org:8080", "WEB.example.org:8080", true},
		{"web.example.org:8080", "127.0.0.1:8080", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
	} {
		if got := sameSocket(tc.a, tc.b); got != tc.want {
			t.Errorf("sameSocket(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestPortZeroListens: port 0 (any free port) is valid for both HTTP
// addresses, and no clash between them: each gets a port of its own.
func TestPortZeroListens(t *testing.T) {
	if _, err := LoadConfig(writeConfig(t, minimal+"[http]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n"), noEnv); err != nil {
		t.Fatal(err)
	}
}
