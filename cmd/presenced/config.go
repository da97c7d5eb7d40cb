package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
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
	MaxHandles int `toml:"max_handles"`
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
		Accounts:  AccountsConfig{MaxHandles: roster.DefaultMaxHandles},
		Log:       LogConfig{Level: "info"},
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
	if err := c.Log.level.UnmarshalText([]byte(c.Log.Level)); err != nil {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// readable reports whether the config file exists, for a friendlier error.
func readable(path string) error {
	_, err := os.Stat(path)
	return err
}
