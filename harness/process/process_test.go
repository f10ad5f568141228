package process

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWaitReadyReportsAnEarlyExitWithTheLog(t *testing.T) {
	p, err := Start(Spec{Name: "broken", Path: "/bin/sh", Args: []string{"-c", "echo bind: address already in use; exit 3"},
		LogPath: filepath.Join(t.TempDir(), "broken.log")})
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(context.Background(), 10*time.Second, func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("got %v, want the exit and the log's last line", err)
	}
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	p, err := Start(Spec{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo ready; while :; do sleep 1; done"},
		LogPath: filepath.Join(t.TempDir(), "stubborn.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(context.Background(), 10*time.Second, func(context.Context) error {
		if strings.Contains(Tail(p.LogPath, 1), "ready") {
			return nil
		}
		return errors.New("no output yet")
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("got %v, want a note that it was killed", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("process still running after Stop")
	}
}

func TestCRILogWritesEveryLineInTheRuntimeFormat(t *testing.T) {
	p, err := Start(Spec{Name: "talker", Path: "/bin/sh", Args: []string{"-c", "echo to-out; echo to-err >&2"},
		LogPath: filepath.Join(t.TempDir(), "talker.log"), CRILog: true})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	lines := strings.Split(strings.TrimSpace(Tail(p.LogPath, 10)), "\n")
	got := map[string]bool{}
	for _, l := range lines {
		f := strings.SplitN(strings.TrimSpace(l), " ", 4)
		if len(f) != 4 || f[2] != "F" {
			t.Fatalf("line %q is not <time> <stream> F <text>", l)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Errorf("line %q: time: %v", l, err)
		}
		got[f[1]+" "+f[3]] = true
	}
	if !got["stdout to-out"] || !got["stderr to-err"] {
		t.Errorf("lines %q: want stdout to-out and stderr to-err", lines)
	}
}
