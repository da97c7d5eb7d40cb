// Package logonce keeps remote senders from filling the log: a message a
// sender can cause again and again (a stanza over the limits, a limit
// reached, a write that failed while storage is down) is logged once per
// key and period, with the count of those left out since.
//
// A Limiter is not safe for concurrent use: presenced's engine goroutine
// owns its limiters, like the rest of its state.
package logonce

import (
	"context"
	"log/slog"
	"time"
)

// maxKeys bounds the keys a Limiter remembers; past it, it forgets them
// all (and so may log each once more).
const maxKeys = 4096

// Limiter remembers, per key, when it last allowed a message.
type Limiter struct {
	every time.Duration
	keys  map[string]*seen
}

type seen struct {
	at      time.Time
	dropped int
}

// New returns a Limiter that allows a key once per period every.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, keys: make(map[string]*seen)}
}

// Allow reports whether a message of key may be logged at now, and how
// many of its messages were left out since the last one logged.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, dropped int) {
	s := l.keys[key]
	if s != nil && now.Sub(s.at) < l.every {
		s.dropped++
		return false, 0
	}
	if s == nil {
		if len(l.keys) >= maxKeys {
			clear(l.keys)
		}
		s = &seen{}
		l.keys[key] = s
	}
	dropped = s.dropped
	s.at, s.dropped = now, 0
	return true, dropped
}

// Log logs msg with args at level on log if key is allowed at now, adding
// the count of its messages left out since the last one.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, now time.Time, key, msg string, args ...any) {
	ok, dropped := l.Allow(key, now)
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "repeated", dropped)
	}
	log.Log(context.Background(), level, msg, args...)
}
