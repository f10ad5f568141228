// Package process runs the local target's components (etcd, the Kubernetes control plane,
// kwok, istiod) as child processes: each in its own process group, its output in a log
// file, killed by the kernel if the harness itself dies (unless started detached for
// `make up`), and stopped with SIGTERM, a deadline, then SIGKILL.
package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one component to run.
type Spec struct {
	Name    string   // used in errors and as the log's name
	Path    string   // executable
	Args    []string // arguments
	Env     []string // added to a minimal environment (PATH, HOME)
	Dir     string   // working directory; empty means the harness's
	LogPath string   // stdout and stderr go here
	// Detached processes outlive the harness (make up); the others die with it.
	Detached bool
	// CRILog writes the log in the container runtime's format (`<RFC3339Nano time>
	// <stream> F <line>`), which kubelet-side readers such as kwok's Logs parse, so
	// `kubectl logs` shows it. Not for detached processes: the harness formats it.
	CRILog bool
}

// Process is a running component.
type Process struct {
	Spec
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Start launches a component. It does not wait for readiness: see WaitReady.
func Start(spec Spec) (*Process, error) {
	logFile, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", spec.Name, err)
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, spec.Env...)
	cri := &criLog{w: logFile}
	if spec.CRILog && !spec.Detached {
		cmd.Stdout, cmd.Stderr = cri.stream("stdout"), cri.stream("stderr")
	} else {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !spec.Detached {
		// The kernel kills the child when the harness dies, even by SIGKILL.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: start %s: %w", spec.Name, spec.Path, err)
	}
	p := &Process{Spec: spec, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait() // returns once the child's output was copied into the pipes
		cri.close()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// PID of the process (and of its process group).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// WaitReady polls check until it succeeds, the process exits, or the timeout passes. The
// error carries the end of the component's log, which is where the cause usually is.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := 50 * time.Millisecond
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up (%v); last lines of %s:\n%s", p.Name, p.err, p.LogPath, Tail(p.LogPath, 15))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (last check: %v); last lines of %s:\n%s", p.Name, timeout, last, p.LogPath, Tail(p.LogPath, 15))
		case <-time.After(interval):
			interval = min(interval*2, time.Second)
		}
	}
}

// Stop sends SIGTERM to the process group and SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("%s did not stop within %s after SIGTERM; killed", p.Name, grace)
	}
}

// StopPID stops a detached component of an earlier run by its process group id, as
// `make down` does: SIGTERM, then SIGKILL after grace. A group that is gone is not an error.
func StopPID(pid int, grace time.Duration) error {
	if err := syscall.Kill(-pid, syscall.SIGTERM); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // polling a foreign process: there is nothing to wait on
	}
	return syscall.Kill(-pid, syscall.SIGKILL)
}

// criLog formats a child's output streams in CRI format into w: one pipe per stream, and
// one goroutine each that writes whole lines under a shared lock. close ends them and
// returns once every line is written (call it after the child exited).
type criLog struct {
	mu      sync.Mutex
	w       io.Writer
	writers []*io.PipeWriter
	wg      sync.WaitGroup
}

func (c *criLog) stream(name string) io.Writer {
	pr, pw := io.Pipe()
	c.writers = append(c.writers, pw)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			fmt.Fprintf(c.w, "%s %s F %s\n", time.Now().UTC().Format(time.RFC3339Nano), name, sc.Text())
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr) // after an over-long line: keep the child unblocked
	}()
	return pw
}

func (c *criLog) close() {
	for _, w := range c.writers {
		_ = w.Close()
	}
	c.wg.Wait()
}

// Tail returns the last n lines of a log file.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
