package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// OpKind is the kind of change an Op makes.
type OpKind int

// The kinds of Op. Each of the first five does what the Store method of
// the same name does; the others have no method of their own.
const (
	OpAddHandle OpKind = iota + 1
	// OpRemoveHandle also records, with each notice it owes, the Since of
	// its unavailable notice: the stamp the subscriber was left with. That
	// is Stamp, but for the subscribers listed in Contacts, whose notice
	// takes the matching Stamps instead (a listed contact that is not a
	// subscriber is ignored; one listed twice takes its last stamp). The
	// caller knows what each subscriber was sent: storage does not look
	// at the handle's visibility or the account's blocks, which may be
	// ahead of what was sent. A zero stamp is kept as unknown. A notice
	// already owed to a subscriber for the name is not owed twice: it
	// keeps its stamp, unless the subscriber is listed and Account owes
	// it, when it takes the listed one.
	OpRemoveHandle
	OpSetFlags
	OpAddSubscription
	OpRemoveSubscription
	// OpAddRequest records the pending request of Contact to subscribe to
	// Handle, made at Now. It is idempotent (a request made again keeps its
	// first time) and fails with ErrNotFound if the handle does not exist.
	OpAddRequest
	// OpRemoveRequest forgets the request of Contact to Handle; removing
	// one that does not exist is not an error.
	OpRemoveRequest
	// OpNoticesSent forgets the notices of Handle owed to Contacts, once
	// they are sent; a missing one is not an error.
	OpNoticesSent
	// OpSetPolicy sets the Policy of Handle, which Account must own: it
	// fails with ErrNotFound if no account holds the handle and ErrNotOwner
	// if another does.
	OpSetPolicy
	// OpSetVisibility hides Handle, which Account must own, from its
	// subscribers if Hidden, since Now (a handle hidden again takes the
	// new moment), or shows it again if not. It fails with ErrNotFound if
	// no account holds the handle and ErrNotOwner if another does.
	OpSetVisibility
	// OpBlock records that Account blocks Contact, since Now, and deletes
	// the contact's pending requests to every handle of the account in the
	// same transaction, since a blocked contact's request is answered by
	// no one. It is idempotent (a contact blocked again keeps its first
	// Since) and fails with ErrNotFound if the account does not exist.
	OpBlock
	// OpUnblock forgets that Account blocks Contact; unblocking one not
	// blocked is not an error.
	OpUnblock
	// OpKeep records that each of Contacts subscribed to Handle keeps the
	// stamp Now (a stamp kept already takes the new one). A contact that
	// is not subscribed to Handle is skipped, as is every contact of an
	// unknown handle: neither is an error. The stamp goes with the
	// subscription, or its handle.
	OpKeep
	// OpUnkeep forgets the stamps kept for Contacts subscribed to Handle;
	// forgetting one not kept is not an error.
	OpUnkeep
	// OpSetWeb sets whether the status of Handle, which Account must own,
	// is public on the web, from Web. It fails with ErrNotFound if no
	// account holds the handle and ErrNotOwner if another does.
	OpSetWeb
)

func (k OpKind) String() string {
	switch k {
	case OpAddHandle:
		return "add handle"
	case OpRemoveHandle:
		return "remove handle"
	case OpSetFlags:
		return "set flags"
	case OpAddSubscription:
		return "add subscription"
	case OpRemoveSubscription:
		return "remove subscription"
	case OpAddRequest:
		return "add request"
	case OpRemoveRequest:
		return "remove request"
	case OpNoticesSent:
		return "notices sent"
	case OpSetPolicy:
		return "set policy"
	case OpSetVisibility:
		return "set visibility"
	case OpBlock:
		return "block"
	case OpUnblock:
		return "unblock"
	case OpKeep:
		return "keep"
	case OpUnkeep:
		return "unkeep"
	case OpSetWeb:
		return "set web"
	}
	return fmt.Sprintf("op %d", int(k))
}

// Op is one change of a batch given to Store.Apply. Which fields count
// depends on Kind, as the arguments of the Store method of the same name.
type Op struct {
	Kind     OpKind
	Account  string   // AddHandle, RemoveHandle, SetFlags, SetPolicy, SetVisibility, Block, Unblock, SetWeb
	Handle   string   // every kind but SetFlags, Block and Unblock
	Contact  string   // AddSubscription, RemoveSubscription, AddRequest, RemoveRequest, Block, Unblock
	Max      int      // AddHandle: the account's handle limit
	Flags    Flags    // SetFlags
	Policy   Policy   // AddHandle, SetPolicy: must be valid
	Contacts []string // NoticesSent: the contacts sent their notices; RemoveHandle, Keep, Unkeep: the subscribers concerned
	Hidden   bool     // SetVisibility: hide the handle, rather than show it
	Web      bool     // SetWeb: make the handle's status public on the web, rather than not
	// Answers is set, for AddSubscription, when the subscription answers
	// the contact's pending request (an approval), which the same
	// transaction deletes. (Only then: a subscription to an open handle
	// answers no request, and a statement less per subscription counts at
	// group commit.)
	Answers bool
	// Now is, for AddHandle, the moment a new account is off-line since;
	// for RemoveHandle, when the name was removed; for AddRequest, when
	// the request was made; for SetVisibility with Hidden, the stamp the
	// subscribers are left with; for Block, the stamp the contact is left
	// with; for Keep, the stamp kept.
	Now time.Time
	// Stamp is, for RemoveHandle, the <delay/> stamp of the unavailable
	// notices owed to the subscribers, those listed in Contacts apart
	// (see OpRemoveHandle). It is apart from Now, which is when the name
	// was removed: the stamp is when what the subscribers saw last
	// changed, as Flags.Since, and zero if unknown.
	Stamp time.Time
	// Stamps are, for RemoveHandle, the stamps of the notices owed to
	// Contacts, one each (zero if unknown): Stamps[i] is that of
	// Contacts[i]. Both have the same length or the op is refused.
	Stamps []time.Time
}

// OpError is the error of Apply when one of its ops fails: Index is that
// op's place in the batch and Err what its Store method would return (a
// sentinel, or a wrapped error when the database failed). Nothing of the
// batch was kept.
type OpError struct {
	Index int
	Err   error
}

func (e *OpError) Error() string { return fmt.Sprintf("op %d: %v", e.Index, e.Err) }

func (e *OpError) Unwrap() error { return e.Err }

// checkOp refuses an op that no backend could apply, before any SQL runs.
func checkOp(op Op) error {
	switch op.Kind {
	case OpSetFlags:
		if !op.Flags.Status.Valid() {
			return fmt.Errorf("storage: set flags: invalid status %q", op.Flags.Status)
		}
	case OpAddHandle, OpSetPolicy:
		if !op.Policy.Valid() {
			return fmt.Errorf("storage: %s: invalid policy %q", op.Kind, op.Policy)
		}
	case OpRemoveHandle:
		if len(op.Stamps) != len(op.Contacts) {
			return fmt.Errorf("storage: remove handle: %d stamps for %d contacts", len(op.Stamps), len(op.Contacts))
		}
	case OpAddSubscription, OpRemoveSubscription,
		OpAddRequest, OpRemoveRequest, OpNoticesSent,
		OpSetVisibility, OpBlock, OpUnblock, OpKeep, OpUnkeep, OpSetWeb:
	default:
		return fmt.Errorf("storage: unknown op kind %d", int(op.Kind))
	}
	return nil
}

// checkOps refuses a batch with an op no backend could apply, naming it.
func checkOps(ops []Op) error {
	for i, op := range ops {
		if err := checkOp(op); err != nil {
			return &OpError{Index: i, Err: err}
		}
	}
	return nil
}

// applyOne applies a single op through s.Apply, in its own transaction,
// and returns its error as the op's own method does.
func applyOne(ctx context.Context, s Store, op Op) error {
	err := s.Apply(ctx, []Op{op})
	var oe *OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

// applyInTx is Apply for a backend whose inTx runs a function in one
// transaction of type T, and applyAll runs the ops in it, in order, and
// returns an *OpError naming the op that fails.
func applyInTx[T any](ctx context.Context, ops []Op,
	inTx func(context.Context, func(T) error) error,
	applyAll func(context.Context, T, []Op) error,
) error {
	if len(ops) == 0 {
		return nil
	}
	if err := checkOps(ops); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	err := inTx(ctx, func(tx T) error { return applyAll(ctx, tx, ops) })
	var oe *OpError
	if err != nil && !errors.As(err, &oe) {
		return fmt.Errorf("storage: apply: %w", err)
	}
	return err
}

// applyEach returns the applyAll of applyInTx that runs each op with
// apply, one after the other, where opError maps a driver error of an op
// to what the op's own method returns.
func applyEach[T any](apply func(context.Context, T, Op) error, opError func(op string, err error) error) func(context.Context, T, []Op) error {
	return func(ctx context.Context, tx T, ops []Op) error {
		for i, op := range ops {
			if err := apply(ctx, tx, op); err != nil {
				return &OpError{Index: i, Err: opError(op.Kind.String(), err)}
			}
		}
		return nil
	}
}
