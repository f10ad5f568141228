package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/process"
	"github.com/aks-istio-conformance/conformance/harness/profile"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/targets"
	"github.com/aks-istio-conformance/conformance/harness/timing"
)

// A cluster left running by `make up` is kept by one process, the keeper (`asm-conformance
// serve`, started in the background by `up`): it owns every component as a child (they die
// with it), runs what the local target needs while it lives (the kwok bridge that makes
// istiod's pods reachable through the API server, istiod's CRI logs, the MeshConfig
// webhook) and stops them in order when `make down` sends it SIGTERM.

// keeperState is what `up`, `down` and a second `up` read: written once the cluster is up.
type keeperState struct {
	PID        int            `json:"pid"`
	Kubeconfig string         `json:"kubeconfig"`
	Phases     []timing.Phase `json:"phases"`
}

const stateFile = "state.json"

func readState(dir string) (keeperState, bool) {
	var s keeperState
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil || json.Unmarshal(data, &s) != nil || s.PID == 0 {
		return s, false
	}
	return s, true
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	revisions := fs.String("revisions", profile.Default, "comma-separated revisions to enable")
	dir := fs.String("dir", filepath.Join("reports", "up"), "state, PKI, kubeconfig and component logs")
	wait := fs.Duration("timeout", 10*time.Minute, "how long bring-up may take")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	// The keeper's lock, not the state file, says whether one runs: the state file is
	// written only once the cluster is up, and outlives a crashed keeper (keeperlock.go).
	if pid, held := keeperOf(abs); held {
		return alreadyKept(abs, pid)
	}
	if stopped, hadState, err := clearRemains(abs); err != nil {
		return fmt.Errorf("clear what an earlier keeper left in %s: %w", abs, err)
	} else if hadState || len(stopped) > 0 {
		fmt.Printf("cleared what a crashed keeper left in %s (%d components, its state, etcd's data)\n", abs, len(stopped))
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(abs, "keeper.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "serve", "-revisions="+*revisions, "-dir="+abs)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: it outlives this command and the terminal's Ctrl-C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the keeper: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(*wait)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if s, ok := readState(abs); ok {
			for _, p := range s.Phases {
				fmt.Printf("  %-40s %6.2fs\n", p.Name, p.Seconds)
			}
			fmt.Printf("local target is up (keeper pid %d; logs in %s/logs). Use it with:\n  export KUBECONFIG=%s\nStop it with `make down`.\n",
				s.PID, abs, s.Kubeconfig)
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("bring-up failed (%v); the end of %s:\n%s", err, logPath, process.Tail(logPath, 20))
		case <-deadline.C:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("bring-up did not finish within %s (-timeout); stopped it; see %s", *wait, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("interrupted; the keeper was told to stop everything it started")
		case <-tick.C:
		}
	}
}

// serve is the keeper: it brings the local target up, writes the state file, and holds the
// cluster until SIGTERM or SIGINT, then stops it in order.
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	revisions := fs.String("revisions", profile.Default, "comma-separated revisions to enable")
	dir := fs.String("dir", filepath.Join("reports", "up"), "state, PKI, kubeconfig and component logs")
	_ = fs.Parse(args)
	release, err := lockKeeper(*dir)
	if err != nil {
		return err
	}
	defer release()
	t, err := targets.Open(ctx, target.Options{Name: "local", Revisions: strings.Split(*revisions, ","), WorkDir: *dir})
	if err != nil {
		return err
	}
	defer os.Remove(filepath.Join(*dir, stateFile))
	data, err := json.MarshalIndent(keeperState{PID: os.Getpid(), Kubeconfig: t.KubeconfigPath(), Phases: t.Phases()}, "", "  ")
	if err != nil {
		return errors.Join(err, t.Close(context.Background()))
	}
	if err := os.WriteFile(filepath.Join(*dir, stateFile), data, 0o644); err != nil {
		return errors.Join(err, t.Close(context.Background()))
	}
	fmt.Println("up; waiting for SIGTERM")
	<-ctx.Done()
	fmt.Println("stopping")
	return t.Close(context.Background())
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", filepath.Join("reports", "up"), "the directory `up` used")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	pid, held := keeperOf(abs)
	if !held {
		return cleanUpAfterKeeper(abs)
	}
	if pid <= 0 { // locked, its PID not yet written: signalling 0 would signal this group
		return fmt.Errorf("the keeper of %s is just starting (no PID in %s yet): run `make down` again", abs, keeperLockFile)
	}
	// The keeper stops its components in order (also when it is still bringing them up);
	// SIGKILL is the last resort (its children then die with it, by the kernel's
	// parent-death signal).
	if err := process.StopPID(pid, 90*time.Second); err != nil {
		return fmt.Errorf("stop keeper pid %d: %w", pid, err)
	}
	_ = os.Remove(filepath.Join(abs, stateFile))
	fmt.Println("local target stopped")
	return nil
}
