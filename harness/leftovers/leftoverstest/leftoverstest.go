// Package leftoverstest starts stand-ins for local target components in tests: a copy of
// sleep(1) installed at a cached binary's path, so that /proc shows a process running from
// the binaries cache, as a real etcd or kwok would.
package leftoverstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// StartComponent runs a stand-in at exe (created, with its directories) with env, in a
// process group of its own as the harness starts components, for at most 5 minutes. The
// returned channel yields its exit once it is reaped; the test's cleanup kills it.
func StartComponent(t testing.TB, exe string, env []string) (*exec.Cmd, <-chan error) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) to stand in for a component")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "300")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	// Reaping it matters: a stopped child that is not waited for lingers as a zombie.
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, exited
}
