// Package targets opens the target a run asks for. It is the only package that knows the
// implementations; scenarios see target.Target.
package targets

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/aks-istio-conformance/conformance/harness/target"
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
		hint := "no container engine was found, so it could not run here anyway"
		if _, err := exec.LookPath("docker"); err == nil {
			hint = "a docker client is present, but the kind target has not been built yet"
		}
		return nil, fmt.Errorf("target kind is not available yet (%s): use --target=local", hint)
	case "aks":
		return nil, fmt.Errorf("target aks is not available yet: use --target=local")
	default:
		return nil, fmt.Errorf("unknown target %q (flag --target or ASM_TARGET): choose one of %s", opts.Name, strings.Join(Names, ", "))
	}
}
