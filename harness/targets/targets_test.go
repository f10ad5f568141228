package targets

import (
	"context"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/target"
)

func TestOpenRejectsUnknownAndUnbuiltTargetsWithTheFix(t *testing.T) {
	for name, want := range map[string]string{
		"minikube": "unknown target \"minikube\"",
		"kind":     "not available yet",
		"aks":      "not available yet",
	} {
		_, err := Open(context.Background(), target.Options{Name: name, Revisions: []string{"asm-1-28"}, WorkDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "local") {
			t.Errorf("target %s: got %v, want an error containing %q that names the local target", name, err, want)
		}
	}
}
