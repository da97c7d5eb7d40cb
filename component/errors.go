package component

import (
	"errors"
	"log/slog"
	"time"

	"presenced/roster"
)

// stanzaError is an RFC 6120 §8.3 stanza error with a human-readable text.
type stanzaError struct {
	typ   string // cancel, modify, auth, wait
	cond  string // defined condition
	text  string // shown to the user; generic for internal failures
	extra *node  // application-specific condition, can be nil
}

func (e stanzaError) node() *node {
	n := el(local("error"), "type", e.typ)
	n.add(el(qname(nsStanzas, e.cond)))
	if e.text != "" {
		n.add(el(qname(nsStanzas, "text")).withText(e.text))
	}
	return n.add(e.extra)
}

func condBadRequest(text string) stanzaError { return stanzaError{"modify", "bad-request", text, nil} }
func condJIDMalformed(text string) stanzaError {
	return stanzaError{"modify", "jid-malformed", text, nil}
}
func condConflict(text string) stanzaError   { return stanzaError{"cancel", "conflict", text, nil} }
func condNotAllowed(text string) stanzaError { return stanzaError{"cancel", "not-allowed", text, nil} }
func condItemNotFound(text string) stanzaError {
	return stanzaError{"cancel", "item-not-found", text, nil}
}
func condPolicy(text string) stanzaError { return stanzaError{"modify", "policy-violation", text, nil} }
func condServiceUnavailable() stanzaError {
	return stanzaError{"cancel", "service-unavailable", "", nil}
}

// errNoAccount answers an instruction from someone who holds no handle.
var errNoAccount = stanzaError{"cancel", "item-not-found", "You have never added a handle here: add one first.", nil}

// errNotOwnerDomain answers a user who may not own handles here.
var errNotOwnerDomain = stanzaError{"auth", "forbidden", "Only users of the domains this service serves may own handles here.", nil}

// condStopping answers a change asked for while presenced shuts down.
func condStopping() stanzaError {
	return stanzaError{"wait", "service-unavailable", "The service is restarting; nothing was changed. Please try again in a moment.", nil}
}

// condInternal is what the peer sees when storage or anything unexpected
// fails; the detail goes to the log only.
func condInternal() stanzaError {
	return stanzaError{"wait", "internal-server-error", "The service could not complete the request; nothing was changed. Please try again later.", nil}
}

// commandError adds an XEP-0050 application condition to a bad-request.
func commandError(appCond, text string) stanzaError {
	return stanzaError{"modify", "bad-request", text, el(qname(nsCommands, appCond))}
}

// refuseFailure answers n when a change failed through no fault of the
// sender: presenced is stopping (nothing changed; try again in a moment),
// or anything else, which is logged with msg and args and answered as an
// internal failure.
func (c *Component) refuseFailure(w *replier, n *node, err error, msg string, args ...any) {
	w.refuse(n, c.failure(err, msg, args...))
}

// failure is the stanza error that tells the sender of a change that it
// failed through no fault of theirs, and logs it (see refuseFailure).
func (c *Component) failure(err error, msg string, args ...any) stanzaError {
	c.logFailure(err, msg, args...)
	if errors.Is(err, roster.ErrStopping) {
		return condStopping()
	}
	return condInternal()
}

// notStored logs a change that holds but could not be stored yet, at most
// once a minute per kind: while storage fails, an owner repeating a
// command must not fill the log.
func (c *Component) notStored(msg string, args ...any) {
	c.logs.Log(c.log, slog.LevelError, time.Now(), "not-stored:"+msg, msg, args...)
}

// held answers a change that takes effect before it is stored (the
// roster says ErrNotStored only of those): note once stored; note and
// notStoredYet while it holds but is not stored yet (what is logged, at
// most once a minute); else err.
func (c *Component) held(done commandDone, note string, err error, what string, args ...any) {
	switch {
	case err == nil:
		done(note, nil, nil)
	case errors.Is(err, roster.ErrNotStored):
		c.notStored(what+" not stored yet; retrying", append(args, "err", err)...)
		done(note+" "+notStoredYet, nil, nil)
	default:
		done("", nil, err)
	}
}

// logFailure logs a change that failed and has nobody to answer (a
// presence): at debug level while presenced stops, else as an error.
func (c *Component) logFailure(err error, msg string, args ...any) {
	if errors.Is(err, roster.ErrStopping) {
		c.log.Debug(msg+" (stopping)", args...)
		return
	}
	// While storage fails, every stanza may fail so: log it once a minute.
	c.logs.Log(c.log, slog.LevelError, time.Now(), "failure:"+msg, msg, append(args, "err", err)...)
}
