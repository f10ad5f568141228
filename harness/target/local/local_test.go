package local

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/aks-istio-conformance/conformance/harness/pki"
	"github.com/aks-istio-conformance/conformance/harness/target"
)

func TestOpenWithoutBinariesSaysHowToBuildThemAndStartsNothing(t *testing.T) {
	t.Setenv("ASM_CONFORMANCE_CACHE", t.TempDir())
	dir := t.TempDir()
	_, err := Open(context.Background(), target.Options{Name: "local", Revisions: []string{"asm-1-28"}, WorkDir: dir})
	if err == nil || !strings.Contains(err.Error(), "make binaries") || !strings.Contains(err.Error(), "kube-apiserver") {
		t.Fatalf("got %v, want an error naming the missing binaries and `make binaries`", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs")); !os.IsNotExist(err) {
		t.Errorf("a start that failed its preflight wrote component logs: %v", err)
	}
}

func TestAdaptPointsWebhooksAtLoopback(t *testing.T) {
	mwc := &unstructured.Unstructured{Object: map[string]any{
		"kind": "MutatingWebhookConfiguration",
		"webhooks": []any{map[string]any{"name": "rev.namespace.sidecar-injector.istio.io", "clientConfig": map[string]any{
			"service": map[string]any{"name": "istiod-asm-1-28", "namespace": "aks-istio-system", "path": "/inject"}}}},
	}}
	r := newIstiodRuntime(t.TempDir(), "kubeconfig", pki.Files{}, nil)
	if err := r.Adapt("asm-1-28", []*unstructured.Unstructured{mwc}); err != nil {
		t.Fatal(err)
	}
	hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	cc := hooks[0].(map[string]any)["clientConfig"].(map[string]any)
	url, _ := cc["url"].(string)
	if !strings.HasPrefix(url, "https://127.0.0.1:") || !strings.HasSuffix(url, "/inject") || cc["service"] != nil {
		t.Errorf("clientConfig %v, want only a loopback url ending in /inject", cc)
	}
}
