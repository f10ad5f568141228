package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/leftovers"
)

// The keeper of a directory holds an exclusive flock on <dir>/keeper.lock for its whole
// life, its PID written inside. The kernel releases the lock when the keeper ends, however
// it ends (SIGKILL, the OOM killer, a reboot), so:
//   - a second `make up` is refused while the first is still bringing the cluster up, when
//     there is no state file yet;
//   - two keepers can never share a directory, even when two `make up` race;
//   - `make down` never signals a PID from a stale state file, which after a reboot may
//     belong to anyone.
const keeperLockFile = "keeper.lock"

// lockKeeper takes the directory for this process, or says who holds it.
func lockKeeper(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, keeperLockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("keeper lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, alreadyKept(dir, pidIn(f.Name()))
		}
		return nil, fmt.Errorf("keeper lock %s: %w", f.Name(), err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

func alreadyKept(dir string, pid int) error {
	return fmt.Errorf("a local target is already starting or running from %s (keeper pid %d): use it, or run `make down` first", dir, pid)
}

// keeperOf reports the PID of the keeper holding dir; held is false when none does. It
// only tests the lock (a shared lock is refused while the keeper holds its exclusive one).
func keeperOf(dir string) (pid int, held bool) {
	f, err := os.Open(filepath.Join(dir, keeperLockFile))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		return 0, false // closing the file drops this probe's lock
	}
	return pidIn(f.Name()), true
}

func pidIn(lockPath string) int {
	data, _ := os.ReadFile(lockPath)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// clearRemains removes what a keeper that is gone left in dir (it crashed, was killed, or
// the machine rebooted): components that outlived it, its state file and etcd's data. Its
// components normally died with it (the kernel's parent-death signal), but one can outlive
// it (started by a `make up` from before the keeper, which detached them): they are found
// by their cached binary and the directory, and stopped, etcd last as the target's own
// stop does. etcd's data must go even when nothing runs: a new cluster started on it
// inherits the old one's pods and fails its bring-up waiting for them. Call it only when
// no keeper holds dir.
func clearRemains(dir string) (stopped []leftovers.Process, hadState bool, err error) {
	left, err := componentsOf(dir)
	if err != nil {
		return nil, false, err
	}
	sort.SliceStable(left, func(i, j int) bool {
		return filepath.Base(left[i].Exe) != "etcd" && filepath.Base(left[j].Exe) == "etcd"
	})
	var errs []error
	for _, p := range left {
		errs = append(errs, leftovers.Stop(p, 15*time.Second))
	}
	hadState = os.Remove(filepath.Join(dir, stateFile)) == nil
	errs = append(errs, os.RemoveAll(filepath.Join(dir, "etcd")))
	return left, hadState, errors.Join(errs...)
}

// cleanUpAfterKeeper is `make down` when no keeper holds the directory.
func cleanUpAfterKeeper(dir string) error {
	stopped, hadState, err := clearRemains(dir)
	for _, p := range stopped {
		fmt.Printf("stopped %s\n", p)
	}
	if err == nil && len(stopped) == 0 && !hadState {
		return fmt.Errorf("no local target is running from %s (no keeper holds %s, no component of it runs): nothing to stop", dir, keeperLockFile)
	}
	fmt.Printf("no keeper was running from %s (it crashed or was killed): stopped %d components it left, removed its state\n", dir, len(stopped))
	return err
}
