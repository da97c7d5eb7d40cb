package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// The instance lock makes sure that one process at a time serves a
// database. Two presenced on the same data would each keep their own
// in-memory state and overwrite each other's changes, and a started
// stand-by would do so as soon as it loaded: it must wait, before it reads
// anything, until the one serving stops.

// lockPollInterval is how often Open checks again whether the instance lock
// held by another process is free.
const lockPollInterval = time.Second

// waitForLock calls try until it takes the lock (true), fails or ctx ends.
// Before its first wait it calls waiting, if not nil.
func waitForLock(ctx context.Context, waiting func(), try func() (bool, error)) error {
	timer := time.NewTimer(lockPollInterval)
	defer timer.Stop()
	for first := true; ; first = false {
		ok, err := try()
		if err != nil || ok {
			return err
		}
		if first && waiting != nil {
			waiting()
		}
		timer.Reset(lockPollInterval)
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the instance lock: %w", context.Cause(ctx))
		case <-timer.C:
		}
	}
}

// lockFile opens the file at path, creating it (mode 0600) if needed, and
// takes its exclusive flock, waiting while another process holds it. The
// lock lasts as long as the returned file is open, and the kernel drops it
// when the process dies: a crash never leaves a stale lock behind, which is
// why the file itself is never deleted.
func lockFile(ctx context.Context, path string, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	err = waitForLock(ctx, waiting, func() (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("instance lock %s: %w", path, err)
	}
	return f, nil
}
