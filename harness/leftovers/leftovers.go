// Package leftovers finds the processes a conformance run or `make up` left behind: local
// target components (etcd, kube-apiserver, ..., kwok, istiod) still running after what
// started them is gone, and suite binaries that did not exit. A component is recognised by
// two facts together: it runs an executable from the binaries cache, and it refers to the
// run's directory (an argument, its environment or its working directory), which every
// component does (data, certificates, kubeconfig, logs). Neither alone is enough: another
// run uses the same binaries, and a user's shell may sit in the directory.
//
// It reads Linux's /proc, as the local target itself is Linux-only.
package leftovers

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

	"github.com/aks-istio-conformance/conformance/harness/process"
)

// Process is one process left behind.
type Process struct {
	PID int
	// Start is when it started, in clock ticks after boot (/proc/<pid>/stat field 22): a
	// PID with its start time names one process, even after the PID is reused.
	Start uint64
	Exe   string
	// Why says how it was tied to the directory.
	Why string
}

func (p Process) String() string {
	return fmt.Sprintf("pid %d (%s): %s", p.PID, p.Exe, p.Why)
}

// Find lists the live processes, other than this one, that run an executable under binDir
// or a Go test binary (*.test), and refer to dir.
func Find(dir, binDir string) ([]Process, error) {
	return find("/proc", dir, binDir)
}

func find(proc, dir, binDir string) ([]Process, error) {
	dir, binDir = filepath.Clean(dir), filepath.Clean(binDir)
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("list processes (%s): %w", proc, err)
	}
	var found []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		p, ok := inspect(proc, pid)
		if !ok {
			continue // gone meanwhile, a kernel thread, or not ours to read
		}
		kind := ""
		switch {
		case strings.HasPrefix(p.Exe, binDir+string(filepath.Separator)):
			kind = "runs a cached binary"
		case strings.HasSuffix(p.Exe, ".test"):
			kind = "is a Go test binary"
		default:
			continue
		}
		if where := refersTo(proc, pid, dir); where != "" {
			p.Why = kind + " and has " + dir + " in its " + where
			found = append(found, p)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].PID < found[j].PID })
	return found, nil
}

// inspect reads a live process's executable and start time; ok is false for a process
// that is gone or a zombie (it runs nothing any more, its parent has only to reap it).
func inspect(proc string, pid int) (Process, bool) {
	base := filepath.Join(proc, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(base, "stat"))
	if err != nil {
		return Process{}, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the fields
	// are counted from the last ')'.
	end := strings.LastIndexByte(string(stat), ')')
	if end < 0 {
		return Process{}, false
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return Process{}, false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return Process{}, false
	}
	exe, err := os.Readlink(filepath.Join(base, "exe"))
	if err != nil {
		return Process{}, false
	}
	// A binary rebuilt since the process started shows as "<path> (deleted)".
	return Process{PID: pid, Start: start, Exe: strings.TrimSuffix(exe, " (deleted)")}, true
}

// refersTo names where a process mentions dir: "arguments", "environment" or "working
// directory"; "" when it does not.
func refersTo(proc string, pid int, dir string) string {
	base := filepath.Join(proc, strconv.Itoa(pid))
	if data, err := os.ReadFile(filepath.Join(base, "cmdline")); err == nil && anyMentions(data, dir) {
		return "arguments"
	}
	if data, err := os.ReadFile(filepath.Join(base, "environ")); err == nil && anyMentions(data, dir) {
		return "environment"
	}
	if cwd, err := os.Readlink(filepath.Join(base, "cwd")); err == nil && mentions(cwd, dir) {
		return "working directory"
	}
	return ""
}

// anyMentions checks each NUL-separated string of a /proc file.
func anyMentions(data []byte, dir string) bool {
	for _, s := range strings.Split(string(data), "\x00") {
		if mentions(s, dir) {
			return true
		}
	}
	return false
}

// mentions reports whether s contains the path dir as a whole path: reports/up matches
// "--data-dir=reports/up/etcd" but not "reports/up2".
func mentions(s, dir string) bool {
	for i := strings.Index(s, dir); i >= 0; {
		if after := i + len(dir); after == len(s) || strings.ContainsRune("/:,;= ", rune(s[after])) {
			return true
		}
		next := strings.Index(s[i+1:], dir)
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return false
}

// OwnedBy reports whether pid is a live process that refers to dir, which is how a PID
// recorded earlier is checked before it is signalled: after a reboot the same number may
// belong to anyone.
func OwnedBy(pid int, dir string) bool {
	if _, ok := inspect("/proc", pid); !ok {
		return false
	}
	return refersTo("/proc", pid, filepath.Clean(dir)) != ""
}

// Alive reports whether p is still running (same PID, same start time).
func Alive(p Process) bool {
	now, ok := inspect("/proc", p.PID)
	return ok && now.Start == p.Start
}

// Stop ends p: SIGTERM to the process group it leads (the harness starts every component
// as a group leader), SIGKILL after grace. A process that leads no group was not started
// by the harness's process package and has no graceful stop to honour: it is killed.
func Stop(p Process, grace time.Duration) error {
	if !Alive(p) {
		return nil
	}
	pgid, err := syscall.Getpgid(p.PID)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err == nil && pgid == p.PID {
		return process.StopPID(p.PID, grace)
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p, err)
	}
	return nil
}
