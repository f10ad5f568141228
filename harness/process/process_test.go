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
