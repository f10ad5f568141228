package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/leftovers/leftoverstest"
)

func TestASecondKeeperIsRefusedUntilTheFirstLetsGo(t *testing.T) {
	dir := t.TempDir()
	if _, held := keeperOf(dir); held {
		t.Fatal("a fresh directory reads as kept")
	}
	release, err := lockKeeper(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid, held := keeperOf(dir); !held || pid != os.Getpid() {
		t.Fatalf("keeperOf = %d, %v; want this process (%d), held", pid, held, os.Getpid())
	}
	// flock locks belong to open files, so a second lock from this same process conflicts
	// as one from another process would.
	if _, err := lockKeeper(dir); err == nil || !strings.Contains(err.Error(), "already starting or running") || !strings.Contains(err.Error(), "make down") {
		t.Fatalf("second keeper: got %v, want a refusal naming `make down`", err)
	}
	release()
	if _, held := keeperOf(dir); held {
		t.Error("the directory still reads as kept after release")
	}
	again, err := lockKeeper(dir)
	if err != nil {
		t.Fatalf("a new keeper after the first let go: %v", err)
	}
	again()
}

func TestDownAfterACrashStopsWhatIsLeftAndClearsTheState(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("ASM_CONFORMANCE_CACHE", cache)
	dir := t.TempDir()

	if err := cleanUpAfterKeeper(dir); err == nil || !strings.Contains(err.Error(), "nothing to stop") {
		t.Fatalf("empty directory: got %v, want nothing to stop", err)
	}

	// A crashed keeper's remains: its state file, etcd's data and a component still
	// running (its environment names dir).
	for name, content := range map[string]string{stateFile: `{"pid": 999999, "kubeconfig": "x"}`, "etcd/member": "data"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, exited := leftoverstest.StartComponent(t, filepath.Join(cache, "bin", "kwok-0.0.0", "kwok"),
		[]string{"KUBECONFIG=" + filepath.Join(dir, "kubeconfig")})

	if err := cleanUpAfterKeeper(dir); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil {
		t.Error("the left component exited cleanly by itself; want it stopped by a signal")
	}
	for _, gone := range []string{stateFile, "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still there after down (%v)", gone, err)
		}
	}
}
