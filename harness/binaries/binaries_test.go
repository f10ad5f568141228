package binaries

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPathReportsMissingAndCorruptBinaries(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("ASM_CONFORMANCE_CACHE", cache)

	_, err := Path(Etcd, "etcd")
	if err == nil || !strings.Contains(err.Error(), "not built") || !strings.Contains(err.Error(), "make binaries") {
		t.Fatalf("missing binary: got %v, want an error naming `make binaries`", err)
	}

	dir := filepath.Join(cache, "bin", Etcd)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte("#!/bin/sh\n")
	sum := sha256.Sum256(content)
	if err := os.WriteFile(filepath.Join(dir, "etcd"), content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etcd.sha256"), []byte(hex.EncodeToString(sum[:])+"  etcd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := Path(Etcd, "etcd"); err != nil || p != filepath.Join(dir, "etcd") {
		t.Fatalf("intact binary: got %q, %v", p, err)
	}

	if err := os.WriteFile(filepath.Join(dir, "etcd"), []byte("truncated"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Path(Etcd, "etcd"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt binary: got %v, want an error saying it is corrupt", err)
	}
}

func TestToolchainsExistInTheRepository(t *testing.T) {
	for _, tc := range []string{Kubernetes, Etcd, Kwok} {
		if _, err := os.Stat(filepath.Join("..", "..", "scripts", "toolchain", tc, "go.mod")); err != nil {
			t.Errorf("toolchain %s has no pinned module under scripts/toolchain: %v", tc, err)
		}
	}
}

// The build script and the harness must agree on what each toolchain holds: the harness
// looks these names up in the cache the script fills (Istio's as IstioBinaries; the
// control plane's in harness/target/local).
func TestBuildScriptBuildsWhatTheHarnessReads(t *testing.T) {
	want := map[string][]string{
		Etcd:       {"etcd"},
		Kubernetes: {"kube-apiserver", "kube-controller-manager", "kube-scheduler", Kubectl},
		Kwok:       {"kwok", "kwok-stages", "kwok-crds"},
	}
	istio, err := filepath.Glob(filepath.Join("..", "..", "scripts", "toolchain", "istio-*"))
	if err != nil || len(istio) == 0 {
		t.Fatalf("no Istio toolchain under scripts/toolchain (%v)", err)
	}
	for _, dir := range istio {
		want[filepath.Base(dir)] = IstioBinaries
	}
	for tc, names := range want {
		out, err := exec.Command(filepath.Join("..", "..", "scripts", "build-binaries.sh"), "--list", tc).CombinedOutput()
		if err != nil {
			t.Fatalf("build-binaries.sh --list %s: %v\n%s", tc, err, out)
		}
		var paths []string
		for _, b := range names {
			paths = append(paths, tc+"/"+b)
		}
		if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(paths, " ") {
			t.Errorf("build-binaries.sh --list %s = %v, want %v", tc, got, paths)
		}
	}
}
