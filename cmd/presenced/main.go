// Command presenced is a presence server for XMPP: an external component
// (XEP-0114) that gives each account up to 64 handle names sharing one
// on-line flag, one status flag and one "notification allowed" flag.
//
// Usage:
//
//	presenced -config presenced.toml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"presenced/component"
	"presenced/metrics"
	"presenced/roster"
	"presenced/storage"
	"presenced/web"
)

// version is set at link time (-ldflags "-X main.version=…"), or else
// taken from the build information (versionOf).
var version = "dev"

// stdout is where -version prints.
var stdout io.Writer = os.Stdout

func main() {
	// A daemon whose log reader went away (a closed pipe) must go on
	// serving and still withdraw its handles at shutdown: Go would
	// otherwise end the process at the first log line written to the pipe.
	// Writes then fail with EPIPE, which the logger ignores.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "presenced:", err)
		os.Exit(1)
	}
}

// run wires configuration, storage, the roster and the component, and runs
// until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "presenced.toml", "path of the configuration file")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	version := versionOf(version)
	if *showVersion {
		fmt.Fprintln(stdout, "presenced", version)
		return nil
	}
	if err := readable(*path); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg, err := LoadConfig(*path, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Log.level}))

	// One active instance per database: a second one waits here, not
	// connected to the XMPP server, and loads the state only once it
	// holds the database (when the first one stops or dies).
	store, err := storage.OpenWith(ctx, cfg.Storage.Driver, cfg.Storage.DSN, storage.Options{
		Waiting: func() {
			log.Warn("another presenced holds the database; waiting for the database lock (standby)", "driver", cfg.Storage.Driver)
		},
		Log: log.With("part", "storage"),
	})
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("storage open; database lock acquired", "driver", cfg.Storage.Driver)

	// The metrics are served on an address of their own, when there is
	// one (web.NewOps says why).
	var m *metrics.Metrics
	var observe func(time.Duration, error)
	if cfg.HTTP.MetricsListen != "" {
		m = metrics.New()
		observe = m.ObserveCommit
	}
	r, err := roster.New(ctx, store, roster.Options{
		MaxHandles:     cfg.Accounts.MaxHandles,
		Log:            log.With("part", "roster"),
		Policy:         storage.Policy(cfg.Accounts.Subscriptions),
		Reserved:       cfg.Accounts.Reserved,
		Quarantine:     cfg.Accounts.quarantine,
		MaxAccounts:    cfg.Accounts.MaxAccounts,
		MaxResources:   cfg.Limits.Resources,
		MaxSubscribers: cfg.Limits.SubscribersPerHandle,
		MaxPending:     cfg.Limits.PendingPerHandle,
		MaxBlocked:     cfg.Limits.BlockedPerAccount,
		ObserveCommit:  observe,
	})
	if err != nil {
		return err
	}
	comp, err := component.New(component.Config{
		Domain:             cfg.Component.Domain,
		Server:             cfg.Component.Server,
		Secret:             cfg.Component.Secret,
		Resource:           cfg.Component.Resource,
		ResyncDelay:        cfg.Component.resyncDelay,
		MaxBackoff:         cfg.Component.maxBackoff,
		Version:            version,
		TraceXML:           cfg.Log.TraceXML,
		OwnerDomains:       cfg.Accounts.OwnerDomains,
		MaxStatusText:      cfg.Limits.StatusText,
		MaxCommandSessions: cfg.Limits.CommandSessions,
	}, r, log.With("part", "component"))
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-store.Lost():
			comp.Abandon()
		case <-ctx.Done():
		}
	}()
	// The HTTP side failing (its address held by something else, for
	// one) stops the daemon, which was asked to serve it.
	serving, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	webDone, err := startWeb(serving, cfg.HTTP, r, comp, m, fail, log.With("part", "web"))
	if err != nil {
		return err
	}
	defer webDone()
	log.Info("presenced starting", "version", version, "domain", cfg.Component.Domain, "server", cfg.Component.Server)
	if err := comp.Run(serving); errors.Is(err, component.ErrAbandoned) {
		log.Error("another presenced took over the database; stopped serving")
		return errors.New("another presenced took over the database")
	} else if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if cause := context.Cause(serving); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	log.Info("presenced stopped")
	return nil
}

// startWeb starts the HTTP side if [http] listen is set; the function it
// returns stops it and waits. Its statuses come from the roster's engine
// (roster.WebSink), set before the engine runs. It serves m at /metrics,
// if m is set. If either fails once started, it calls fail.
func startWeb(ctx context.Context, cfg HTTPConfig, r *roster.Service, comp *component.Component, m *metrics.Metrics, fail func(error), log *slog.Logger) (func(), error) {
	var runs []func(context.Context) error
	streams := func() int { return 0 }
	if cfg.Listen != "" {
		st := web.NewStatuses()
		r.SetWebSink(st)
		srv, err := web.New(web.Config{Listen: cfg.Listen, Icons: cfg.Icons, Ready: comp.Ready, Prepare: comp.PrepareHandle, TrustedProxies: cfg.trusted}, st, log)
		if err != nil {
			return nil, err
		}
		// Listening now: a daemon that cannot serve what it was asked
		// to does not start (but for an address in use: see Listen).
		if err := srv.Listen(); errors.Is(err, web.ErrInUse) {
			log.Warn("HTTP address in use; taking it once free, or stopping if it stays in use", "addr", cfg.Listen)
		} else if err != nil {
			return nil, err
		}
		streams = srv.Streams
		runs = append(runs, srv.Run)
	}
	if m != nil {
		m.Watch(metrics.Sources{Roster: r, Component: comp, WebStreams: streams})
		ops, err := web.NewOps(cfg.MetricsListen, m.Handler(), log)
		if err != nil {
			return nil, err
		}
		runs = append(runs, ops.Run)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(wctx)
			switch {
			case err != nil && wctx.Err() == nil:
				log.Error("HTTP side stopped; stopping", "err", err)
				fail(err)
			case err != nil:
				log.Warn("HTTP side shut down", "err", err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }, nil
}

// versionOf returns v if it was set at link time, else the module's
// version from the build information, or the VCS revision it was built
// from (with "+dirty" for uncommitted changes).
func versionOf(v string) string {
	if v != "dev" {
		return v
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	return versionFrom(info, v)
}

// versionFrom is versionOf's reading of info; v if it tells nothing.
func versionFrom(info *debug.BuildInfo, v string) string {
	if mv := info.Main.Version; mv != "" && mv != "(devel)" {
		return mv
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return v
	}
	return "dev-" + rev + dirty
}
