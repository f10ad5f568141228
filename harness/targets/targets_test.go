package targets

import (
	"context"
	"strings"
	"testing"

	"github.com/aks-istio-conformance/conformance/harness/target"
)

func TestOpenRejectsBadTargetsInOneLineWithTheFix(t *testing.T) {
	for _, c := range []struct {
		opts target.Options
		want []string
	}{
		{target.Options{Name: "minikube"}, []string{`unknown target "minikube"`, "local"}},
		{target.Options{Name: "aks"}, []string{"needs a cluster", "-kubeconfig"}},
		{target.Options{Name: "aks", Kubeconfig: "/nonexistent/kubeconfig"}, []string{"/nonexistent/kubeconfig", "-kubeconfig"}},
		{target.Options{Name: "aks", Kubeconfig: "x", AzureSubscription: "not-a-guid"}, []string{"-azure-"}},
	} {
		c.opts.Revisions, c.opts.WorkDir = []string{"asm-1-28"}, t.TempDir()
		_, err := Open(context.Background(), c.opts)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: got %v, want an error containing %q", c.opts, err, w)
			}
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: error %q is not one line", c.opts, err)
		}
	}
}
