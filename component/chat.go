package component

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Chat commands: for clients that show no ad-hoc commands (Dino, many
// mobile and web clients), a message to the component's JID is a command
// and the answer is a chat message, as Slidge and biboumi do. Each chat
// command runs the ad-hoc command of the same job (its complete function,
// with the values the words give), so both front ends have the same
// rules, limits, errors and texts.

const (
	// maxChatReply bounds one answer; a longer one is cut at a line.
	maxChatReply = 32 << 10
	// chatAnswersPerMinute bounds the answers one user (bare JID) gets a
	// minute: past it, chat commands are ignored until the minute is
	// over, so that an auto-responder on an owner domain, answering each
	// answer, cannot keep presenced answering it forever.
	chatAnswersPerMinute = 30
	// maxChatSenders bounds the users whose answers are counted; while it
	// is full of users counted within the minute, new ones get no answer.
	maxChatSenders = 10000
	// shownFor is how long approve N and deny N refer to the list that
	// requests last showed.
	shownFor = 15 * time.Minute
)

// chatAllowance counts the answers each user got this minute. It belongs
// to the engine goroutine.
type chatAllowance struct {
	users map[string]*minute
	// swept is when users was last swept: while it is full, at most once
	// a second, so that a flood of new senders costs no scan each.
	swept time.Time
}

type minute struct {
	since time.Time
	n     int
}

// allow reports whether user may be answered now, and counts it if so.
// An account (owner) is counted even while the map is full of others, so
// that a flood of new senders cannot silence the owners (the accounts are
// few, and made by hand).
func (ca *chatAllowance) allow(user string, owner bool, now time.Time) bool {
	if ca.users == nil {
		ca.users = make(map[string]*minute)
	}
	m := ca.users[user]
	if m == nil || now.Sub(m.since) >= time.Minute {
		if m == nil && !owner && len(ca.users) >= maxChatSenders {
			if now.Sub(ca.swept) >= time.Second {
				ca.swept = now
				for u, old := range ca.users {
					if now.Sub(old.since) >= time.Minute {
						delete(ca.users, u)
					}
				}
			}
			if len(ca.users) >= maxChatSenders {
				return false
			}
		}
		m = &minute{since: now}
		ca.users[user] = m
	}
	if m.n >= chatAnswersPerMinute {
		return false
	}
	m.n++
	return true
}

// shownList is what requests last showed an owner, and when.
type shownList struct {
	values []string
	at     time.Time
}

// chatCommand is one word of the chat front end.
type chatCommand struct {
	word, usage, help string
	// run does the work, like a command's complete.
	run func(c *Component, owner string, args []string, done commandDone)
}

// chatCommands are the chat commands, in the order help lists them. The
// list is filled in by init, since help refers to it.
var chatCommands []*chatCommand

func init() {
	own := func(word, usage, help string, run func(*Component, string, []string, commandDone)) *chatCommand {
		return &chatCommand{word: word, usage: usage, help: help, run: run}
	}
	chatCommands = []*chatCommand{
		own("help", "help", "this list", chatHelp),
		own("status", "status [away|busy|hiding|undefined|visible]", "show your status and your handles, or set your status on all of them", chatStatus),
		via("handles", "handles", "list your handles", "list-handles", 0, 0, nil),
		via("add", "add NAME [open]", "add a handle (open: approve everyone; else you decide on each request)", "add-handle", 1, 2, addArgs),
		via("remove", "remove NAME", "remove a handle", "remove-handle", 1, 1, handleArg("handle")),
		own("requests", "requests", "list the subscription requests waiting, numbered", chatRequests),
		own("approve", "approve N… | approve CONTACT [HANDLE]", "approve requests", chatDecide("approve")),
		own("deny", "deny N… | deny CONTACT [HANDLE]", "deny requests", chatDecide("deny")),
		own("subscribers", "subscribers [HANDLE]", "list who subscribes to a handle (or to each)", chatSubscribers),
		via("kick", "kick CONTACT [HANDLE]", "end a contact's subscription to a handle (or to all of yours)", "remove-subscriber", 1, 2, kickArgs),
		via("block", "block CONTACT", "all of your handles appear off-line to the contact, whatever your status", "block", 1, 1, contactArg),
		via("unblock", "unblock CONTACT", "lift a block", "unblock", 1, 1, contactArg),
		via("blocked", "blocked", "list the contacts you block", "list-blocked", 0, 0, nil),
		via("hide", "hide HANDLE…", "these handles appear off-line to all of their subscribers", "set-visibility", 1, -1, visibilityArgs("hidden")),
		via("show", "show HANDLE…", "these handles follow your status again", "set-visibility", 1, -1, visibilityArgs("shown")),
		via("web", "web HANDLE on|off", "show the handle's status on web pages, or not", "set-web", 2, 2, webArgs),
	}
}

func chatByWord(word string) *chatCommand {
	for _, ch := range chatCommands {
		if ch.word == word {
			return ch
		}
	}
	return nil
}

// chatMessage handles a message with a body from a user who may own
// handles: the body is a command, answered to the sender's full JID.
func (c *Component) chatMessage(a address, n *node, body string) {
	if !c.chatAnswers.allow(a.bare, c.roster.IsOwner(a.bare), time.Now()) {
		c.logs.Log(c.log, slog.LevelWarn, time.Now(), "chat-allowance", "chat commands ignored: too many from one user this minute", "user", a.bare)
		return
	}
	reply := func(text string) { c.out.write(c.chatReply(a.from.String(), n, text)) }
	tooLong := `Error: The message is too long for a command. Send "help" for the list of commands.`
	if len(body) > maxFieldBytes {
		reply(tooLong) // not split: what a sender sent is not worked on
		return
	}
	words := strings.Fields(body)
	switch {
	case len(words) == 0:
		reply(`Send "help" for the list of commands.`)
		return
	case len(words) > 2*c.roster.MaxHandles()+2:
		reply(tooLong)
		return
	}
	word := strings.ToLower(words[0])
	ch := chatByWord(word)
	if ch == nil {
		reply(fmt.Sprintf(`Error: Unknown command %q. Send "help" for the list of commands.`, clip(words[0])))
		return
	}
	ch.run(c, a.bare, words[1:], func(note string, result *node, err error) {
		reply(c.chatText(ch, a.bare, note, result, err))
	})
}

// chatReply is the chat message that answers n with text, in n's thread
// (RFC 6121 §5.2.5).
func (c *Component) chatReply(to string, n *node, text string) *node {
	if len(text) > maxChatReply {
		cut := strings.LastIndexByte(text[:maxChatReply], '\n')
		if cut < 0 {
			cut = maxChatReply
		}
		text = truncate(text, cut) + "\n… (cut: the ad-hoc command lists more)"
	}
	m := el(local("message"), "type", "chat", "from", c.domainStr, "to", to).add(el(local("body")).withText(text))
	if th := stanzaChild(n, "thread"); th != nil && len(th.text) <= 256 {
		m.add(el(local("thread")).withText(th.text))
	}
	return m
}

// stanzaChild returns n's first child named local in the stanza's own
// namespace, or nil.
func stanzaChild(n *node, local string) *node {
	for _, ch := range n.children {
		if ch.name.Local == local && isStanzaNS(ch.ns()) {
			return ch
		}
	}
	return nil
}

func isStanzaNS(ns string) bool {
	return ns == "" || ns == "jabber:component:accept" || ns == "jabber:client" || ns == "jabber:server"
}

// chatText renders a command's outcome as the text of a chat answer: the
// note and the values of the result form, one per line, or the error's
// text.
func (c *Component) chatText(ch *chatCommand, owner, note string, result *node, err error) string {
	if err != nil {
		var ue userError
		if errors.As(err, &ue) {
			return "Error: " + ue.e.text
		}
		return "Error: " + c.failure(err, "chat command failed", "command", ch.word, "owner", owner).text
	}
	var b strings.Builder
	b.WriteString(note)
	if result != nil {
		for _, f := range result.children {
			if f.name.Local != "field" {
				continue
			}
			for _, v := range f.children {
				if v.name.Local == "value" {
					b.WriteString("\n")
					b.WriteString(v.text)
				}
			}
		}
	}
	return b.String()
}

// via is a chat command that runs the ad-hoc command node with the
// values that values makes of from min to max words (max < 0: any
// number).
func via(word, usage, help, node string, min, max int, values func(c *Component, owner string, args []string) formValues) *chatCommand {
	ch := &chatCommand{word: word, usage: usage, help: help}
	ch.run = func(c *Component, owner string, args []string, done commandDone) {
		if len(args) < min || (max >= 0 && len(args) > max) {
			done("", nil, refusal(condBadRequest("Usage: "+ch.usage)))
			return
		}
		f := formValues{}
		if values != nil {
			f = values(c, owner, args)
		}
		commandByNode(node).complete(c, owner, f, done)
	}
	return ch
}

// handleName takes a handle given as a name or as its JID.
func (c *Component) handleName(v string) string {
	if name, domain, ok := strings.Cut(v, "@"); ok && strings.EqualFold(domain, c.domainStr) {
		return name
	}
	return v
}

func handleArg(name string) func(*Component, string, []string) formValues {
	return func(c *Component, _ string, args []string) formValues {
		return formValues{name: {c.handleName(args[0])}}
	}
}

func addArgs(c *Component, _ string, args []string) formValues {
	f := formValues{"handle": {c.handleName(args[0])}}
	if len(args) > 1 {
		f["subscriptions"] = []string{strings.ToLower(args[1])}
	}
	return f
}

func contactArg(_ *Component, _ string, args []string) formValues {
	return formValues{"contact": {args[0]}}
}

func kickArgs(c *Component, _ string, args []string) formValues {
	f := formValues{"contact": {args[0]}}
	if len(args) > 1 {
		f["handle"] = []string{c.handleName(args[1])}
	}
	return f
}

func visibilityArgs(v string) func(*Component, string, []string) formValues {
	return func(c *Component, _ string, args []string) formValues {
		f := formValues{"visibility": {v}}
		for _, a := range args {
			f["handles"] = append(f["handles"], c.handleName(a))
		}
		return f
	}
}

func webArgs(c *Component, _ string, args []string) formValues {
	v := strings.ToLower(args[1])
	if v == "on" {
		v = "public" // anything else but "off" is refused by set-web, with its text
	}
	return formValues{"handles": {c.handleName(args[0])}, "web": {v}}
}

func chatHelp(c *Component, owner string, args []string, done commandDone) {
	var b strings.Builder
	fmt.Fprintf(&b, "Commands (send one per message; the words may be in any case):")
	for _, ch := range chatCommands {
		fmt.Fprintf(&b, "\n%s: %s", ch.usage, ch.help)
	}
	fmt.Fprintf(&b, "\nThe same commands are ad-hoc commands of %s, for clients that show them.", c.domainStr)
	done(b.String(), nil, nil)
}

// chatStatus shows the status, or sets it as set-status does.
func chatStatus(c *Component, owner string, args []string, done commandDone) {
	switch len(args) {
	case 0:
		done(statusReport(c, owner), nil, nil)
		return
	case 1:
	default:
		done("", nil, refusal(condBadRequest("Usage: "+chatByWord("status").usage)))
		return
	}
	v := strings.ToLower(args[0])
	for _, o := range statusOptions {
		if v == o.words {
			v = o.value // "available" is "undefined"
		}
	}
	commandByNode("set-status").complete(c, owner, formValues{"status": {v}}, done)
}

// chatRequests lists the requests waiting, numbered; approve N and deny N
// refer to the list last shown.
func chatRequests(c *Component, owner string, args []string, done commandDone) {
	rs := c.roster.Requests(owner)
	now := time.Now()
	for o, l := range c.chatShown {
		if now.Sub(l.at) >= shownFor {
			delete(c.chatShown, o)
		}
	}
	if len(rs) == 0 {
		delete(c.chatShown, owner)
		done(noRequests(c, owner), nil, nil)
		return
	}
	// Numbered only as far as the answer shows them: "approve N" acts on
	// what the owner saw, and what is kept for it is bounded so.
	const answer = `
Answer with "approve N" or "deny N" (several numbers may follow), or "approve CONTACT".`
	more := func(n int) string {
		return fmt.Sprintf("\n%d more are waiting: decide on these, then send \"requests\" again.", n)
	}
	room := maxChatReply - len(answer) - len(more(len(rs)))
	var values []string
	var b strings.Builder
	fmt.Fprintf(&b, "%s waiting:", plural(len(rs), "subscription request is", "subscription requests are"))
	for i, r := range rs {
		line := fmt.Sprintf("\n%d. %s", i+1, c.requestLabel(r.Handle, r.Contact))
		if b.Len()+len(line) > room {
			b.WriteString(more(len(rs) - i))
			break
		}
		b.WriteString(line)
		values = append(values, requestValue(r.Handle, r.Contact))
	}
	b.WriteString(answer)
	c.chatShown[owner] = shownList{values: values, at: now}
	done(b.String(), nil, nil)
}

// chatDecide approves or denies requests by number, or by contact (and
// handle), through the requests command.
func chatDecide(decision string) func(*Component, string, []string, commandDone) {
	return func(c *Component, owner string, args []string, done commandDone) {
		usage := refusal(condBadRequest("Usage: " + chatByWord(decision).usage))
		if len(args) == 0 {
			done("", nil, usage)
			return
		}
		var values []string
		if _, err := strconv.Atoi(args[0]); err == nil {
			var shown []string
			if l, ok := c.chatShown[owner]; ok && time.Since(l.at) < shownFor {
				shown = l.values
			}
			for _, a := range args {
				i, err := strconv.Atoi(a)
				if err != nil || i < 1 || i > len(shown) {
					done("", nil, refusal(condItemNotFound(fmt.Sprintf(`There is no request number %s: send "requests" for the list.`, clip(a)))))
					return
				}
				values = append(values, shown[i-1])
			}
		} else {
			if len(args) > 2 {
				done("", nil, usage)
				return
			}
			contact, err := prepareContact(args[0])
			if err != nil {
				done("", nil, err)
				return
			}
			handle := ""
			if len(args) == 2 {
				handle = c.handleName(args[1])
			}
			for _, r := range c.roster.Requests(owner) {
				if r.Contact == contact && (handle == "" || r.Handle == handle) {
					values = append(values, requestValue(r.Handle, r.Contact))
				}
			}
			if len(values) == 0 {
				done("", nil, refusal(condItemNotFound(fmt.Sprintf(`No request from %s is waiting: send "requests" for the list.`, contact))))
				return
			}
		}
		commandByNode("requests").complete(c, owner, formValues{"requests": values, "decision": {decision}}, done)
	}
}

// chatSubscribers lists the subscribers of one handle through the
// subscribers command, or of each handle.
func chatSubscribers(c *Component, owner string, args []string, done commandDone) {
	cmd := commandByNode("subscribers")
	switch len(args) {
	case 1:
		cmd.complete(c, owner, formValues{"handle": {c.handleName(args[0])}}, done)
		return
	case 0:
	default:
		done("", nil, refusal(condBadRequest("Usage: "+chatByWord("subscribers").usage)))
		return
	}
	hs := c.roster.Handles(owner)
	if len(hs) == 0 {
		done("You hold no handles.", nil, nil)
		return
	}
	// The command answers at once: it reads memory only. Every handle is
	// named with its count; its list follows while the answer holds it
	// with room left for the counts still to come.
	ch := chatByWord("subscribers")
	full := make([]string, len(hs))
	short := make([]string, len(hs))
	rest := 0
	for i, h := range hs {
		cmd.complete(c, owner, formValues{"handle": {h}}, func(note string, result *node, err error) {
			full[i] = c.chatText(ch, owner, note, result, err)
			short[i] = c.chatText(ch, owner, note, nil, err)
		})
		rest += len(short[i]) + 1
	}
	var b strings.Builder
	for i := range hs {
		rest -= len(short[i]) + 1
		line := full[i]
		if b.Len()+len(line)+1+rest > maxChatReply {
			line = short[i]
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(line)
	}
	done(b.String(), nil, nil)
}
