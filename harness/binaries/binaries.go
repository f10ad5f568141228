// Package binaries finds the local target's executables in the cache that
// scripts/build-binaries.sh fills: <cache>/bin/<toolchain>/<name>, with <name>.sha256 beside
// it. A toolchain is a directory under scripts/toolchain (e.g. kubernetes-1.35.4), whose
// name is the cache key. Nothing here builds: a missing or corrupt binary is an error that
// says which make target rebuilds it.
package binaries

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Toolchains of the local control plane (the Makefile's CONTROL_PLANE_TOOLCHAINS); Istio's
// come from each revision's profile.
const (
	Kubernetes = "kubernetes-1.35.4"
	Etcd       = "etcd-3.6.5"
	Kwok       = "kwok-0.8.0"
)

// Kubectl is built from the Kubernetes toolchain, for the confirm commands the suite runs
// (harness/confirm): the client matches the local target's API server.
const Kubectl = "kubectl"

// The binaries of every Istio toolchain (istio-<version>). scripts/build-binaries.sh
// builds pilot-discovery and istioctl in one `go build` (they share most packages);
// istioctl is for people pointing it at a local target (`make istioctl-path`).
const (
	PilotDiscovery = "pilot-discovery"
	Istioctl       = "istioctl"
	IstioRender    = "istio-render"
)

// IstioBinaries lists them in the order the build script reports them.
var IstioBinaries = []string{PilotDiscovery, Istioctl, IstioRender}

// CacheDir is $ASM_CONFORMANCE_CACHE, or aks-istio-conformance under the user's cache
// directory (the same rule as scripts/build-binaries.sh).
func CacheDir() (string, error) {
	if dir := os.Getenv("ASM_CONFORMANCE_CACHE"); dir != "" {
		return dir, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set ASM_CONFORMANCE_CACHE): %w", err)
	}
	return filepath.Join(base, "aks-istio-conformance"), nil
}

// BinDir is where the cached executables live: <cache>/bin, one directory per toolchain.
func BinDir() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "bin"), nil
}

// Path returns the verified path of one cached file of a toolchain. Executables are
// checked against their recorded SHA-256, so a truncated or overwritten binary is caught
// here rather than as a mysterious start-up failure.
func Path(toolchain, name string) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, toolchain, name)
	rebuild := fmt.Sprintf("run `make binaries` (or scripts/build-binaries.sh %s)", toolchain)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s of %s is not built (%s missing): %s", name, toolchain, p, rebuild)
	}
	if err := verify(p); err != nil {
		return "", fmt.Errorf("%s of %s is corrupt (%v): %s; it rebuilds what does not match", name, toolchain, err, rebuild)
	}
	return p, nil
}

// verify compares a file with the sha256sum line beside it, when there is one (data
// files such as kwok's stages have none: they are regenerated with their binary).
func verify(p string) error {
	sumFile, err := os.Open(p + ".sha256")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer sumFile.Close()
	line, _ := bufio.NewReader(sumFile).ReadString('\n')
	want, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("sha256 %s, recorded %s", got[:12], shorten(want))
	}
	return nil
}

func shorten(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "nothing"
	}
	return s
}
