package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"mellium.im/xmpp/jid"

	"presenced/component"
	"presenced/roster"
	"presenced/storage"
)

// Environment variables that may hold secrets instead of the file.
const (
	envSecret = "PRESENCED_COMPONENT_SECRET"
	envDSN    = "PRESENCED_STORAGE_DSN"
)

// Config is presenced's configuration file.
type Config struct {
	Component ComponentConfig `toml:"component"`
	Storage   StorageConfig   `toml:"storage"`
	Accounts  AccountsConfig  `toml:"accounts"`
	Limits    LimitsConfig    `toml:"limits"`
	HTTP      HTTPConfig      `toml:"http"`
	Log       LogConfig       `toml:"log"`
}

// ComponentConfig is the [component] table.
type ComponentConfig struct {
	Domain      string `toml:"domain"`
	Server      string `toml:"server"`
	Secret      string `toml:"secret"`
	Resource    string `toml:"resource"`
	ResyncDelay string `toml:"resync_delay"`
	MaxBackoff  string `toml:"max_backoff"`

	resyncDelay, maxBackoff time.Duration
}

// StorageConfig is the [storage] table.
type StorageConfig struct {
	Driver string `toml:"driver"`
	DSN    string `toml:"dsn"`
}

// AccountsConfig is the [accounts] table.
type AccountsConfig struct {
	MaxHandles    int      `toml:"max_handles"`
	Subscriptions string   `toml:"subscriptions"`
	OwnerDomains  []string `toml:"owner_domains"`
	Quarantine    string   `toml:"quarantine"`
	Reserved      []string `toml:"reserved"`
	MaxAccounts   int      `toml:"max_accounts"`

	quarantine time.Duration
}

// LimitsConfig is the [limits] table: what one remote sender or account
// may make presenced hold.
type LimitsConfig struct {
	Resources            int `toml:"resources"`
	StatusText           int `toml:"status_text"`
	SubscribersPerHandle int `toml:"subscribers_per_handle"`
	PendingPerHandle     int `toml:"pending_per_handle"`
	BlockedPerAccount    int `toml:"blocked_per_account"`
	CommandSessions      int `toml:"command_sessions"`
}

// defaultReserved are the names no account may take unless the file says
// otherwise: those people expect to reach an operator, and the service's
// own name.
var defaultReserved = []string{"admin", "administrator", "root", "postmaster", "hostmaster",
	"webmaster", "abuse", "security", "support", "noreply", "presence"}

// HTTPConfig is the [http] table: the web side (status icons, health).
type HTTPConfig struct {
	// Listen is host:port; empty (the default) turns the web side off.
	Listen string `toml:"listen"`
	// Icons is a folder with available.svg, away.svg, busy.svg and
	// offline.svg, in place of the embedded icons.
	Icons string `toml:"icons"`
	// MetricsListen is host:port for /metrics; empty turns metrics off.
	// Never a public address: the counters tell which names exist.
	MetricsListen string `toml:"metrics_listen"`
	// TrustedProxies are the addresses or CIDR prefixes of reverse
	// proxies in front of listen, whose X-Forwarded-For names the client.
	TrustedProxies []string `toml:"trusted_proxies"`

	trusted []netip.Prefix
}

// LogConfig is the [log] table.
type LogConfig struct {
	Level    string `toml:"level"`
	TraceXML bool   `toml:"trace_xml"`

	level slog.Level
}

// Defaults returns the configuration that a file overrides.
func Defaults() Config {
	return Config{
		Component: ComponentConfig{Resource: component.DefaultResource, ResyncDelay: "3s", MaxBackoff: "30s"},
		Storage:   StorageConfig{Driver: storage.DriverSQLite},
		Accounts: AccountsConfig{
			MaxHandles:    roster.DefaultMaxHandles,
			Subscriptions: string(storage.PolicyAsk),
			Quarantine:    "720h",
			Reserved:      slices.Clone(defaultReserved),
		},
		Limits: LimitsConfig{
			Resources:            roster.DefaultMaxResources,
			StatusText:           component.DefaultMaxStatusText,
			SubscribersPerHandle: roster.DefaultMaxSubscribers,
			PendingPerHandle:     roster.DefaultMaxPending,
			BlockedPerAccount:    roster.DefaultMaxBlocked,
			CommandSessions:      component.DefaultMaxCommandSessions,
		},
		Log: LogConfig{Level: "info"},
	}
}

// LoadConfig reads the file at path over Defaults, takes secrets from the
// environment where the file leaves them out, and validates the result.
// Errors name the offending key.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	md, err := toml.DecodeFile(path, &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	if cfg.Component.Secret == "" {
		cfg.Component.Secret = getenv(envSecret)
	}
	if cfg.Storage.DSN == "" {
		cfg.Storage.DSN = getenv(envDSN)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch d := c.Component.Domain; {
	case d == "":
		bad("component.domain", "missing (the component's JID, e.g. \"presence.example.org\")")
	default:
		j, err := jid.Parse(d)
		if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
			bad("component.domain", "%q is not a domain name", d)
		}
	}
	if r := c.Component.Resource; r == "" {
		bad("component.resource", "empty (the resource of the handles' full JIDs, e.g. %q)", component.DefaultResource)
	} else if _, err := jid.New("", "example.org", r); err != nil {
		bad("component.resource", "%q is not a valid resourcepart", r)
	}
	if c.Component.Server == "" {
		bad("component.server", "missing (host:port of the XMPP server's component listener)")
	} else if _, port, err := net.SplitHostPort(c.Component.Server); err != nil || port == "" {
		bad("component.server", "%q is not host:port", c.Component.Server)
	}
	if c.Component.Secret == "" {
		bad("component.secret", "missing (set it in the file or in %s)", envSecret)
	}
	var err error
	if c.Component.resyncDelay, err = time.ParseDuration(c.Component.ResyncDelay); err != nil || c.Component.resyncDelay < 0 {
		bad("component.resync_delay", "%q is not a duration such as \"3s\"", c.Component.ResyncDelay)
	}
	if c.Component.maxBackoff, err = time.ParseDuration(c.Component.MaxBackoff); err != nil || c.Component.maxBackoff < time.Second {
		bad("component.max_backoff", "%q is not a duration of at least 1s", c.Component.MaxBackoff)
	}
	switch c.Storage.Driver {
	case storage.DriverSQLite:
		if c.Storage.DSN == "" {
			c.Storage.DSN = "presence.db"
		}
	case storage.DriverPostgres:
		if c.Storage.DSN == "" {
			bad("storage.dsn", "missing (a postgres:// URL, or set %s)", envDSN)
		} else if !strings.HasPrefix(c.Storage.DSN, "postgres://") && !strings.HasPrefix(c.Storage.DSN, "postgresql://") {
			bad("storage.dsn", "must be a postgres:// URL for the postgres driver")
		}
	default:
		bad("storage.driver", "unknown driver %q (use \"sqlite\" or \"postgres\")", c.Storage.Driver)
	}
	if m := c.Accounts.MaxHandles; m < 1 || m > 10000 {
		bad("accounts.max_handles", "%d is out of range 1..10000", m)
	}
	c.validateAccounts(bad)
	c.validateLimits(bad)
	for key, l := range map[string]string{"http.listen": c.HTTP.Listen, "http.metrics_listen": c.HTTP.MetricsListen} {
		if l == "" {
			continue
		}
		_, port, err := net.SplitHostPort(l)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
			bad(key, "%q is not host:port, such as \"127.0.0.1:8080\"", l)
		}
	}
	if l, ml := c.HTTP.Listen, c.HTTP.MetricsListen; l != "" && ml != "" && sameSocket(l, ml) {
		bad("http.metrics_listen", "%q is http.listen (%q) too: metrics need an address of their own", ml, l)
	}
	c.HTTP.trusted = nil
	for _, p := range c.HTTP.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			bad("http.trusted_proxies", "%q is neither an IP address nor a CIDR prefix, such as \"127.0.0.1\" or \"10.0.0.0/8\"", p)
			continue
		}
		c.HTTP.trusted = append(c.HTTP.trusted, pfx)
	}
	if d := c.HTTP.Icons; d != "" {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			bad("http.icons", "%q is not a folder", d)
		}
	}
	if err := c.Log.level.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// sameSocket reports whether two host:port addresses would take the same
// socket: the same port (not 0), and hosts that are equal, or one of them the
// unspecified address (every address), or localhost and a loopback
// address. It looks nothing up: a name it cannot tell apart is left to
// the listen, which fails.
func sameSocket(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" { // port 0: each gets a port of its own
		return false
	}
	ipa, erra := netip.ParseAddr(ha)
	ipb, errb := netip.ParseAddr(hb)
	switch {
	case ha == "" || hb == "" || (erra == nil && ipa.IsUnspecified()) || (errb == nil && ipb.IsUnspecified()):
		return true
	case erra == nil && errb == nil:
		return ipa.Unmap() == ipb.Unmap()
	case strings.EqualFold(ha, "localhost"):
		return errb == nil && ipb.IsLoopback() || strings.EqualFold(hb, "localhost")
	case strings.EqualFold(hb, "localhost"):
		return erra == nil && ipa.IsLoopback()
	}
	return strings.EqualFold(ha, hb)
}

// parsePrefix reads an IP address (as its own prefix) or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *Config) validateAccounts(bad func(key, format string, args ...any)) {
	a := &c.Accounts
	if p := storage.Policy(a.Subscriptions); !p.Valid() {
		bad("accounts.subscriptions", "%q is neither \"ask\" nor \"open\"", a.Subscriptions)
	}
	if a.OwnerDomains == nil && c.Component.Domain != "" {
		a.OwnerDomains = []string{component.ParentDomain(strings.ToLower(c.Component.Domain))}
	}
	if len(a.OwnerDomains) == 0 {
		bad("accounts.owner_domains", "empty: no one could own a handle (use [\"*\"] for anyone)")
	}
	for i, d := range a.OwnerDomains {
		if d == "*" {
			continue
		}
		j, err := jid.Parse(d)
		if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
			bad("accounts.owner_domains", "%q is not a domain name", d)
			continue
		}
		a.OwnerDomains[i] = j.Domainpart()
	}
	var err error
	if a.quarantine, err = time.ParseDuration(a.Quarantine); err != nil || a.quarantine < 0 {
		bad("accounts.quarantine", "%q is not a duration such as \"720h\"", a.Quarantine)
	}
	for i, name := range a.Reserved {
		j, err := jid.New(name, "example.org", "")
		if err != nil || j.Localpart() == "" {
			bad("accounts.reserved", "%q is not a valid handle name", name)
			continue
		}
		a.Reserved[i] = j.Localpart()
	}
	if a.MaxAccounts < 0 {
		bad("accounts.max_accounts", "%d is negative (0 means no limit)", a.MaxAccounts)
	}
}

func (c *Config) validateLimits(bad func(key, format string, args ...any)) {
	for _, l := range []struct {
		key       string
		v, lo, hi int
	}{
		{"limits.resources", c.Limits.Resources, 1, 1000},
		{"limits.status_text", c.Limits.StatusText, 1, 65536},
		{"limits.subscribers_per_handle", c.Limits.SubscribersPerHandle, 1, 10000000},
		{"limits.pending_per_handle", c.Limits.PendingPerHandle, 1, 100000},
		{"limits.blocked_per_account", c.Limits.BlockedPerAccount, 1, 1000000},
		{"limits.command_sessions", c.Limits.CommandSessions, 1, 1000},
	} {
		if l.v < l.lo || l.v > l.hi {
			bad(l.key, "%d is out of range %d..%d", l.v, l.lo, l.hi)
		}
	}
}

// readable reports whether the config file exists, for a friendlier error.
func readable(path string) error {
	_, err := os.Stat(path)
	return err
}
