// Package targets opens the target a run asks for. It is the only package that knows the
// implementations; scenarios see target.Target.
package targets

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aks-istio-conformance/conformance/harness/addon/azure"
	"github.com/aks-istio-conformance/conformance/harness/target"
	"github.com/aks-istio-conformance/conformance/harness/target/aks"
	"github.com/aks-istio-conformance/conformance/harness/target/kind"
	"github.com/aks-istio-conformance/conformance/harness/target/local"
)

// Names of the targets, in the order help texts list them.
var Names = []string{"local", "kind", "aks"}

// Default is local: it needs no container engine and no cloud account. kind becomes the
// default where a container engine runs once its implementation lands.
func Default() string { return "local" }

// Open brings up (local) or connects to (kind, aks) the named target.
func Open(ctx context.Context, opts target.Options) (target.Target, error) {
	if opts.Name == "" {
		opts.Name = Default()
	}
	switch opts.Name {
	case "local":
		return local.Open(ctx, opts)
	case "kind":
		return kind.Open(ctx, opts)
	case "aks":
		ops, err := azure.FromFlags(opts.AzureSubscription, opts.AzureResourceGroup, opts.AzureCluster)
		if errors.Is(err, azure.ErrNotConfigured) {
			return aks.Open(ctx, opts, nil) // no add-on operations: those specs are skipped
		}
		if err != nil {
			return nil, err
		}
		return aks.Open(ctx, opts, ops)
	default:
		return nil, fmt.Errorf("unknown target %q (flag --target or ASM_TARGET): choose one of %s", opts.Name, strings.Join(Names, ", "))
	}
}
