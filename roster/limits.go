package roster

import (
	"log/slog"
	"time"

	"presenced/storage"
)

// limits are the bounds of what accounts and remote senders may make the
// Service hold. Each is checked before anything is queued, so a refusal
// changes nothing.
type limits struct {
	handles     int // per account
	resources   int // per account
	subscribers int // per handle
	pending     int // pending requests per handle
	blocked     int // blocked contacts per account
	accounts    int // 0: no bound
	policy      storage.Policy
	reserved    map[string]bool
	quarantine  time.Duration
}

func limitsOf(o Options) limits {
	l := limits{
		handles:     orDefault(o.MaxHandles, DefaultMaxHandles),
		resources:   orDefault(o.MaxResources, DefaultMaxResources),
		subscribers: orDefault(o.MaxSubscribers, DefaultMaxSubscribers),
		pending:     orDefault(o.MaxPending, DefaultMaxPending),
		blocked:     orDefault(o.MaxBlocked, DefaultMaxBlocked),
		accounts:    max(0, o.MaxAccounts),
		policy:      o.Policy,
		reserved:    make(map[string]bool, len(o.Reserved)),
		quarantine:  max(0, o.Quarantine),
	}
	if !l.policy.Valid() {
		l.policy = storage.PolicyAsk
	}
	for _, n := range o.Reserved {
		l.reserved[n] = true
	}
	return l
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// removedName is who removed a name, and when: until the quarantine has
// passed, only that account may take the name again, so that the
// subscribers it had do not find a stranger behind it.
type removedName struct {
	account string
	at      time.Time
}

// quarantine puts name, which owner removed at now, out of reach of the
// other accounts. The names whose quarantine has passed are forgotten
// whenever the map has doubled since the last sweep, so it holds about the
// names removed within one quarantine.
func (s *Service) quarantine(name, owner string, now time.Time) {
	if s.limits.quarantine <= 0 {
		return
	}
	s.removed[name] = removedName{account: owner, at: now}
	if len(s.removed) < 2*s.removedSwept {
		return
	}
	for n, r := range s.removed {
		if now.Sub(r.at) >= s.limits.quarantine {
			delete(s.removed, n)
		}
	}
	s.removedSwept = max(len(s.removed), 64)
}

// quarantined reports whether name is out of reach of owner now.
func (s *Service) quarantined(name, owner string, now time.Time) bool {
	r, ok := s.removed[name]
	if !ok {
		return false
	}
	if now.Sub(r.at) >= s.limits.quarantine {
		delete(s.removed, name)
		return false
	}
	return r.account != owner
}

// refuse logs msg with args at most once a minute per key (logonce), so
// that a sender repeating a refusal cannot fill the log.
func (s *Service) refuse(key, msg string, args ...any) {
	s.refusals.Log(s.log, slog.LevelWarn, s.now(), key, msg, args...)
}
